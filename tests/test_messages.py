"""Editing, deleting, reacting to, linking to and mentioning in messages, in process:
the one road's checks, what pages show, and who may do what (both databases)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from conftest import csrf_from

ARTICLE = re.compile(r'<article id="message-(\d+)"')
MENTION = '<a href="/dm/{}" class="mention"'


@pytest.fixture
def two(app, auth):
    """alice (logged in here) and bob, both registered."""
    auth.register("bob")
    auth.logout()
    auth.register("alice")
    return app


def post(app, username: str, body: str, conversation_id: int | None = None, ago=None) -> int:
    """Store a message through the one road; return its id."""
    from chatapp import posting
    from chatapp.models import Conversation, User, db

    with app.test_request_context():
        conversation = (db.session.get(Conversation, conversation_id) if conversation_id
                        else Conversation.public_room())
        message, _ = posting.post(conversation, User.by_username(username), body,
                                  str(uuid.uuid4()))
        if ago is not None:
            message.created_at -= ago
            db.session.commit()
        return message.id


def join(auth, *names: str) -> None:
    """Register more people, then log alice back in."""
    auth.logout()
    for name in names:
        auth.register(name)
        auth.logout()
    auth.login("alice")


def message(app, message_id: int):
    from chatapp.models import Message, db

    with app.app_context():
        found = db.session.get(Message, message_id)
        db.session.expunge(found)
        return found


def token(client, path="/") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def test_the_author_edits_within_the_window_and_it_shows_edited(two, client):
    mid = post(two, "alice", "helo *world*")
    form = client.get(f"/messages/{mid}/edit").get_data(as_text=True)
    assert 'aria-label="Edit message"' in form or ">Edit message<" in form
    r = client.post(f"/messages/{mid}/edit", data={"csrf_token": token(client), "body": "hello **world**"})
    assert r.status_code == 200, r.get_data(as_text=True)
    html = r.get_data(as_text=True)
    assert "<strong>world</strong>" in html and "(edited)" in html
    stored = message(two, mid)
    assert stored.body == "hello **world**" and stored.edited_at is not None
    page = client.get("/").get_data(as_text=True)
    assert "(edited)" in page and "<strong>world</strong>" in page


@pytest.mark.parametrize("body, status, says", [
    ("", 400, "Type a message first"),
    ("\u200b ", 400, "Type a message first"),
    ("x" * 4001, 400, "at most 4000"),
])
def test_an_edit_gets_the_same_checks_as_a_new_message(two, client, body, status, says):
    mid = post(two, "alice", "original")
    r = client.post(f"/messages/{mid}/edit", data={"csrf_token": token(client), "body": body})
    assert r.status_code == status and says in r.get_data(as_text=True)
    assert 'role="alert"' in r.get_data(as_text=True)
    assert message(two, mid).body == "original" and message(two, mid).edited_at is None


def test_no_edit_after_the_window_nor_of_someone_elses_message(two, client, auth):
    old = post(two, "alice", "long ago", ago=timedelta(minutes=16))
    r = client.post(f"/messages/{old}/edit", data={"csrf_token": token(client), "body": "new"})
    assert r.status_code == 403 and "15 minutes" in r.get_data(as_text=True)
    theirs = post(two, "bob", "bob's words")
    assert client.get(f"/messages/{theirs}/edit").status_code == 404
    r = client.post(f"/messages/{theirs}/edit", data={"csrf_token": token(client), "body": "mine now"})
    assert r.status_code == 404
    assert client.post(f"/messages/{theirs}/delete", data={"csrf_token": token(client)}).status_code == 404
    assert client.post("/messages/999999/edit", data={"csrf_token": token(client), "body": "x"}).status_code == 404
    assert message(two, old).body == "long ago" and message(two, theirs).body == "bob's words"
    assert message(two, theirs).deleted_at is None


def test_admins_never_edit_others_text(two, client, auth):
    from chatapp.models import User, db

    theirs = post(two, "bob", "bob's words")
    with two.app_context():
        User.by_username("alice").promote()
        db.session.commit()
    r = client.post(f"/messages/{theirs}/edit", data={"csrf_token": token(client), "body": "edited by admin"})
    assert r.status_code == 404 and message(two, theirs).body == "bob's words"


def test_posts_without_csrf_change_nothing(two, client):
    mid = post(two, "alice", "keep me")
    assert client.post(f"/messages/{mid}/edit", data={"body": "forged"}).status_code == 400
    assert client.post(f"/messages/{mid}/delete").status_code == 400
    assert client.post(f"/messages/{mid}/reactions", data={"emoji": "👍"}).status_code == 400
    stored = message(two, mid)
    assert stored.body == "keep me" and stored.deleted_at is None
    assert "reaction-count" not in client.get("/").get_data(as_text=True)


def test_delete_asks_first_then_the_message_is_gone_and_its_files_too(two, client, tmp_path):
    from chatapp.models import Image, Message, db

    mid = post(two, "alice", "take this back")
    confirm = client.get(f"/messages/{mid}/delete").get_data(as_text=True)
    assert "Yes, delete" in confirm and message(two, mid).deleted_at is None
    # An image message: its files leave the disk with it.
    with two.app_context():
        folder = tmp_path / "uploads" / "ab"
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(b"png")
        (folder / "x-thumb.png").write_bytes(b"png")
        image = Image(path="ab/x.png", thumb_path="ab/x-thumb.png", content_type="image/png",
                      width=1, height=1, size_bytes=3, thumb_width=1, thumb_height=1)
        db.session.get(Message, mid).image = image
        db.session.commit()
    r = client.post(f"/messages/{mid}/delete", data={"csrf_token": token(client)})
    assert r.status_code == 200
    assert message(two, mid).deleted_at is not None
    assert not (folder / "x.png").exists() and not (folder / "x-thumb.png").exists()
    assert f'id="message-{mid}"' not in client.get("/").get_data(as_text=True)
    assert client.get(f"/messages/{mid}/edit").status_code == 404


def test_reactions_toggle_and_show_who(two, client, auth):
    mid = post(two, "bob", "react to me")
    picker = client.get(f"/messages/{mid}/react").get_data(as_text=True)
    for name in ("Thumbs up", "Heart", "Joy", "Party", "Eyes", "Thanks"):
        assert f'aria-label="{name}"' in picker
    csrf = token(client)
    assert client.post(f"/messages/{mid}/reactions", data={"csrf_token": csrf, "emoji": "👍"}).status_code == 200
    page = client.get("/").get_data(as_text=True)
    assert 'aria-label="Thumbs up: 1, alice"' in page
    client.post(f"/messages/{mid}/reactions", data={"csrf_token": csrf, "emoji": "👍"})
    assert "Thumbs up:" not in client.get("/").get_data(as_text=True)
    r = client.post(f"/messages/{mid}/reactions", data={"csrf_token": csrf, "emoji": "💩"})
    assert r.status_code == 400 and "Pick one of the reactions" in r.get_data(as_text=True)
    r = client.post(f"/messages/{mid}/reactions", data={"emoji": "👍"},
                    headers={"X-CSRFToken": csrf})  # the page's hx-headers
    assert r.status_code == 200 and 'aria-label="Thumbs up: 1, alice"' in client.get("/").get_data(as_text=True)


def test_a_permalink_opens_at_the_message_with_both_ways_to_page(two, client):
    ids = [post(two, "bob", f"message {i}") for i in range(120)]
    target = ids[60]
    html = client.get(f"/c/1/@{target}").get_data(as_text=True)
    shown = [int(i) for i in ARTICLE.findall(html)]
    assert target in shown and shown == sorted(shown)
    assert shown[0] > ids[0] and shown[-1] < ids[-1]
    assert re.search(rf'<article id="message-{target}" class="[^"]*message-target[^"]*"[^>]*autofocus', html)
    assert f"before={shown[0]}" in html and f"after={shown[-1]}" in html
    newer = client.get(f"/c/1/messages/newer?after={shown[-1]}").get_data(as_text=True)
    assert [int(i) for i in ARTICLE.findall(newer)] == [i for i in ids if i > shown[-1]]
    assert "Link to this message" in html and f'href="/c/1/@{target}"' in html
    assert "hx-ws:connect" not in html  # a window in the past: no snapshot replaces it


def test_a_permalink_is_404_for_strangers_and_other_conversations(two, client, auth):
    from chatapp.models import Conversation, User, db

    join(auth, "carol")
    with two.app_context():
        chat = Conversation.direct(User.by_username("alice"), User.by_username("bob")).id
        db.session.commit()
    secret = post(two, "bob", "just for alice", chat)
    assert client.get(f"/c/{chat}/@{secret}").status_code == 200
    assert client.get(f"/c/1/@{secret}").status_code == 404  # not in that conversation
    auth.logout()
    auth.login("carol")
    for path in (f"/c/{chat}/@{secret}", f"/messages/{secret}/react", f"/messages/{secret}",
                 f"/c/{chat}/mentions?body=@b", f"/c/{chat}/messages/newer?after=1"):
        assert client.get(path).status_code == 404, path
    r = client.post(f"/messages/{secret}/reactions", data={"csrf_token": token(client), "emoji": "👍"})
    assert r.status_code == 404


def test_mentions_of_members_become_links_and_are_stored(two, client, auth):
    from chatapp.models import Mention, User, db

    join(auth, "carol")
    mid = post(two, "alice", "hi @bob and @Carol, not @nobody nor `@bob` or me@bob.example")
    html = client.get("/").get_data(as_text=True)
    assert MENTION.format("bob") in html and MENTION.format("carol") in html
    assert "@nobody" in html and "<code>@bob</code>" in html
    with two.app_context():
        names = {db.session.get(User, u).username for u in Mention.of(mid)}
    assert names == {"bob", "carol"}


def test_a_private_chat_mentions_only_its_members(two, client, auth):
    from chatapp.models import Conversation, Mention, User, db

    join(auth, "carol")
    with two.app_context():
        chat = Conversation.direct(User.by_username("alice"), User.by_username("bob")).id
        db.session.commit()
    mid = post(two, "alice", "@bob look, @carol is not here", chat)
    html = client.get(f"/c/{chat}").get_data(as_text=True)
    assert MENTION.format("bob") in html and MENTION.format("carol") not in html
    with two.app_context():
        assert [db.session.get(User, u).username for u in Mention.of(mid)] == ["bob"]


def test_mention_suggestions_match_members_and_treat_wildcards_as_text(two, client, auth):
    join(auth, "bobby", "b_x", "carl")

    def suggested(body):
        html = client.get("/c/1/mentions", query_string={"body": body}).get_data(as_text=True)
        assert 'aria-label="Suggestions"' in html
        return re.findall(r">@([^<]+)</button>", html)

    assert suggested("hi @b") == ["b_x", "bob", "bobby"]
    assert suggested("hi @bo") == ["bob", "bobby"]
    assert suggested("hi @b_") == ["b_x"]  # _ is itself, not "any one character"
    assert suggested("hi @%") == [] and suggested("hi @b%") == [] and suggested("@_") == []
    assert suggested("no mention") == [] and suggested("mail me@b") == []
    picked = client.get("/c/1/mentions/pick", query_string={"body": "hi @bo", "pick": "bobby"})
    assert 'value="hi @bobby "' in picked.get_data(as_text=True)


def test_mention_badge_counts_unread_mentions(two, client, auth):
    post(two, "alice", "hey @bob")
    post(two, "alice", "plain message")
    auth.logout()
    auth.login("bob")
    from chatapp.models import Conversation, User, db

    with two.app_context():
        chat = Conversation.direct(User.by_username("alice"), User.by_username("bob")).id
        db.session.commit()
    html = client.get(f"/c/{chat}").get_data(as_text=True)
    assert 'aria-label="1 mentions"' in html and 'aria-label="2 unread"' in html
    assert re.search(r"<title>\(2\) @1 ", html)
    client.get("/")  # reading the room clears both
    html = client.get(f"/c/{chat}").get_data(as_text=True)
    assert "mentions" not in re.sub(r"<script.*?</script>", "", html).split("</title>")[0]
    assert 'aria-label="1 mentions"' not in html


def test_retention_prunes_messages_with_their_reactions_and_mentions(two, client):
    from chatapp import posting
    from chatapp.models import Mention, Message, Reaction, User, db
    from chatapp.retention import prune

    old = post(two, "alice", "ancient news for @bob", ago=timedelta(days=40))
    new = post(two, "alice", "fresh news for @bob")
    with two.test_request_context():
        bob = User.by_username("bob")
        for mid in (old, new):
            posting.react(db.session.get(Message, mid), bob, "👀")
        assert prune(30) == (1, 0)
        assert db.session.get(Message, old) is None
        assert db.session.scalar(db.select(db.func.count(Reaction.id))) == 1
        assert [m.message_id for m in db.session.scalars(db.select(Mention))] == [new]
