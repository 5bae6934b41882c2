"""What the pages are made of: grouped messages, day separators, names, history paging."""

import re
import uuid
from datetime import datetime, timedelta

import pytest

ARTICLE = re.compile(r'<article id="message-(\d+)" class="([^"]*)"')
T0 = datetime(2026, 11, 23, 9, 0)


def post(app, username: str, body: str, at: datetime, conversation=None) -> int:
    """Store a message at a chosen time; return its id."""
    from chatapp.models import Conversation, User, db

    with app.app_context():
        # This app context has its own session: the conversation is loaded again in it.
        conversation = (db.session.get(Conversation, conversation.id) if conversation
                        else Conversation.public_room())
        message, _ = __import__("chatapp.models", fromlist=["Message"]).Message.post(
            conversation, User.by_username(username), body, str(uuid.uuid4()),
        )
        message.created_at = at
        db.session.commit()
        return message.id


@pytest.fixture
def two(app, auth):
    """alice (logged in here) and bob, both registered."""
    auth.register("bob")
    auth.logout()
    auth.register("alice")
    return app


def classes(html: str) -> dict[int, str]:
    return {int(i): c for i, c in ARTICLE.findall(html)}


def test_consecutive_messages_by_one_author_within_minutes_are_grouped(two, client):
    first = post(two, "bob", "one", T0)
    soon = post(two, "bob", "two", T0 + timedelta(minutes=2))
    other = post(two, "alice", "three", T0 + timedelta(minutes=3))
    back = post(two, "bob", "four", T0 + timedelta(minutes=4))
    late = post(two, "bob", "five", T0 + timedelta(minutes=20))
    shown = classes(client.get("/").get_data(as_text=True))
    assert "message-continued" not in shown[first]
    assert "message-continued" in shown[soon]
    assert "message-continued" not in shown[other]
    assert "message-continued" not in shown[back]
    assert "message-continued" not in shown[late]


def test_one_day_separator_per_day_and_never_inside_a_group(two, client):
    post(two, "bob", "late at night", T0.replace(hour=23, minute=58) - timedelta(days=1))
    after_midnight = post(two, "bob", "after midnight", T0.replace(hour=0, minute=1))
    post(two, "bob", "morning", T0)
    html = client.get("/").get_data(as_text=True)
    days = re.findall(r'<h2 class="day-separator"[^>]*><time datetime="([\d-]+)">([^<]+)</time>', html)
    assert days == [("2026-11-22", "Sunday 22 November 2026"), ("2026-11-23", "Monday 23 November 2026")]
    assert "message-continued" not in classes(html)[after_midnight]


def test_pushed_html_is_the_same_for_every_viewer_and_mine_is_a_page_rule(people):
    """The frame a message goes out in is byte for byte the same on the author's socket and
    on everyone else's; "mine" styling is a rule of each person's own page."""
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    a.say("hello")
    to_alice = a.wait_for(lambda f: "<article" in f and "hello" in f)
    to_bob = b.wait_for(lambda f: "<article" in f and "hello" in f)
    assert to_alice == to_bob
    article = re.search(r'<article id="message-\d+" class="([^"]*)" data-author="(\d+)"',
                        to_bob)
    assert article and article.group(1) == "message"  # nothing that depends on the viewer
    alice_id = article.group(2)
    rule = r'<style nonce="[^"]+">\.message\[data-author="%s"\]' % alice_id
    assert re.search(rule, alice.get("/").text)  # Alice's page styles her messages ...
    assert not re.search(rule, bob.get("/").text)  # ... Bob's does not


@pytest.mark.parametrize("path", ["/", "/login/", "/register/", "/nowhere"])
def test_no_inline_style_attributes_under_the_strict_csp(two, client, auth, path):
    if path != "/":
        auth.logout()
    html = client.get(path).get_data(as_text=True)
    assert not re.search(r"\sstyle=", html)


def test_the_names_people_and_tests_find_things_by(two, client):
    html = client.get("/").get_data(as_text=True)
    assert '<nav id="sidebar" class="sidebar" aria-label="Conversations">' in html
    assert 'role="log" aria-label="Messages" aria-live="polite"' in html
    assert '<label for="composer-body" class="visually-hidden">Message</label>' in html
    assert re.search(r"<button[^>]*>.*<span[^>]*>Send</span></button>", html)
    assert re.search(r"<button type=\"submit\"[^>]*>.*<span[^>]*>Log out</span></button>", html)
    assert "No messages yet" in html  # the empty state


def test_history_pages_back_through_everything_with_no_gaps_or_repeats(two, client):
    from chatapp.models import Conversation, User, db

    with two.app_context():
        direct = Conversation.direct(User.by_username("alice"), User.by_username("bob"))
        db.session.commit()
        direct_id = direct.id
    for conversation_id, path in ((1, "/"), (direct_id, f"/c/{direct_id}")):
        with two.app_context():
            conversation = db.session.get(Conversation, conversation_id)
            ids = [
                post(two, "bob" if i % 3 else "alice", f"m{i}", T0 + timedelta(seconds=i),
                     conversation)
                for i in range(123)
            ]
        html = client.get(path).get_data(as_text=True)
        seen = [int(i) for i in ARTICLE_IDS.findall(html)]
        pages = 1
        while (more := HISTORY.search(html)) is not None:
            assert 'hx-trigger="revealed"' in more.group(0)
            html = client.get(more.group(1).replace("&amp;", "&")).get_data(as_text=True)
            seen = [int(i) for i in ARTICLE_IDS.findall(html)] + seen
            pages += 1
        assert seen == ids and pages == 3
        assert "very beginning" in html


ARTICLE_IDS = re.compile(r'<article id="message-(\d+)"')
HISTORY = re.compile(r'<div class="history-more" hx-get="([^"]+)"[^>]*>')
