"""Searching messages: what each query form finds, who may find what, escaped highlights,
bad input, paging and recent searches. In-process, on SQLite and PostgreSQL alike: the
same corpus must give the same results on both engines."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, text

from conftest import PASSWORD, AuthActions
from chatapp.models import Conversation, Membership, Message, RecentSearch, User, db

CORPUS = {
    # key: (conversation, author, text)
    "deploy": ("public", "ann", "Deployment finished at noon, all green"),
    "release": ("public", "ben", "下周发布新版本，请大家准备"),
    "script": ("public", "cat", "<script>alert('x')</script> will not run"),
    "phrase": ("public", "ann", "this is the exact phrase we want"),
    "reversed": ("public", "ben", "phrase exact, in the other order"),
    "wild": ("public", "cat", "100% done_with it"),
    "secret": ("ann-ben", "ben", "secret deployment plan for friday"),
    "hidden": ("ben-cat", "cat", "private deployment plan, just us"),
    "jp": ("public", "ann", "明日リリースします"),
}


@pytest.fixture
def world(app):
    """ann, ben and cat; the public room, ann & ben's chat and ben & cat's chat."""
    with app.app_context():
        people = {n: User.register(n, PASSWORD) for n in ("ann", "ben", "cat")}
        rooms = {
            "public": Conversation.public_room(),
            "ann-ben": Conversation.direct(people["ann"], people["ben"]),
            "ben-cat": Conversation.direct(people["ben"], people["cat"]),
        }
        ids = {}
        start = datetime(2026, 1, 1, 9, 0)
        for n, (key, (room, author, body)) in enumerate(CORPUS.items()):
            message, _ = Message.post(rooms[room], people[author], body, str(uuid.uuid4()))
            message.created_at = start + timedelta(minutes=n)
            ids[key] = message.id
        db.session.commit()
        return {"ids": ids, "rooms": {k: c.id for k, c in rooms.items()},
                "people": {k: u.id for k, u in people.items()}}


def signed_in(app, name):
    client = app.test_client()
    response = AuthActions(client).login(name)
    assert response.status_code in (302, 303)
    return client


@pytest.fixture
def ann(app, world):
    return signed_in(app, "ann")


def found(client, q, **params):
    """The ids of the messages a search lists, in order."""
    response = client.get("/search", query_string={"q": q, **params})
    assert response.status_code == 200, response.status_code
    html = response.get_data(as_text=True)
    listing = re.search(r'<ol class="search-results" aria-label="Search results">(.*?)</ol>', html, re.S)
    if listing is None:
        assert "No messages match" in html or 'role="alert"' in html or not q.strip()
        return []
    return [int(i) for i in re.findall(r'href="/c/\d+/@(\d+)"', listing.group(1))]


def keys(world, ids):
    by_id = {v: k for k, v in world["ids"].items()}
    return [by_id[i] for i in ids]


QUERY_FORMS = [
        # words in any order, each a prefix of a word
        ("deplo", ["secret", "deploy"]),
        ("plan secret", ["secret"]),
        ("PLAN Secret", ["secret"]),
        ("ployment", []),  # the middle of a word is not the start of one
        ("noon deployment", ["deploy"]),
        # an exact phrase: those words, in that order, next to each other
        ('"exact phrase"', ["phrase"]),
        ('"phrase exact"', ["reversed"]),
        ("exact phrase", ["reversed", "phrase"]),
        ('"exact phr"', []),  # a phrase's words are whole words
        # from: and in:
        ("from:ben", ["secret", "reversed", "release"]),
        ("from:@Ben deplo", ["secret"]),
        ("deplo in:public", ["deploy"]),
        ("deplo in:#public", ["deploy"]),
        ("in:ben", ["secret"]),  # ann's private chat with ben
        # Chinese and Japanese: any substring of two characters or more
        ("发布", ["release"]),
        ("下周发布新版本", ["release"]),
        ("布新", ["release"]),
        ("版本", ["release"]),
        ("发", ["release"]),
        ("发新", []),  # not next to each other
        ("新版 准备", ["release"]),
        ("リリース", ["jp"]),
        ("明日", ["jp"]),
        # symbols are not words, and SQL wildcards are plain characters
        ("100", ["wild"]),
        ("done_with", ["wild"]),
        ("with", ["wild"]),
        ("script", ["script"]),
]


def test_each_query_form_finds_what_it_says(ann, world):
    """One world for every form (building one costs seconds); each form checked by name."""
    got = {query: keys(world, found(ann, query)) for query, _ in QUERY_FORMS}
    wrong = {query: got[query] for query, expected in QUERY_FORMS if got[query] != expected}
    assert wrong == {}, "these queries found something else: " + repr(wrong)


def test_a_non_member_never_sees_a_private_chat(app, world):
    for name, visible in (("ann", ["secret", "deploy"]), ("cat", ["hidden", "deploy"]),
                          ("ben", ["hidden", "secret", "deploy"])):
        client = signed_in(app, name)
        assert keys(world, found(client, "deployment")) == visible, name
    ann = signed_in(app, "ann")
    # Naming a conversation one is not in finds nothing, as if it did not exist.
    assert found(ann, "in:cat") == found(ann, "in:nosuchroom") == []
    assert found(ann, "plan in:cat") == []


def test_a_removed_member_stops_finding_and_deleted_messages_vanish(app, world):
    ann = signed_in(app, "ann")
    assert keys(world, found(ann, "secret plan")) == ["secret"]
    with app.app_context():
        db.session.execute(delete(Membership).where(
            Membership.conversation_id == world["rooms"]["ann-ben"],
            Membership.user_id == world["people"]["ann"]))
        db.session.commit()
    assert found(ann, "secret plan") == []
    assert keys(world, found(ann, "deplo")) == ["deploy"]

    with app.app_context():
        db.session.get(Message, world["ids"]["deploy"]).soft_delete()
        db.session.commit()
    assert found(ann, "deplo") == []
    assert found(ann, "noon") == []


def test_an_edited_message_is_found_by_its_new_text_only(app, ann, world):
    with app.app_context():
        db.session.get(Message, world["ids"]["deploy"]).body = "rollback finished 回滚完成"
        db.session.commit()
    assert found(ann, "noon") == []
    assert keys(world, found(ann, "rollb")) == ["deploy"]
    assert keys(world, found(ann, "回滚")) == ["deploy"]


def test_highlights_are_escaped_text(ann, world):
    html = ann.get("/search?q=script").get_data(as_text=True)
    assert "&lt;<mark>script</mark>&gt;alert(" in html
    assert "<script>alert" not in html
    html = ann.get("/search", query_string={"q": "发布"}).get_data(as_text=True)
    assert "下周<mark>发布</mark>新版本" in html
    html = ann.get("/search", query_string={"q": "deplo noon"}).get_data(as_text=True)
    assert "<mark>Deployment</mark> finished at <mark>noon</mark>" in html
    # Each result: where, who, when, and a link to the message in its conversation.
    listing = html.split('aria-label="Search results"')[1]
    assert "Public room" in listing and ">ann<" in listing and "2026-01-01 09:00" in listing


BAD_INPUT = ["", "   ", "x" * 1000, '"', '" * NEAR : ( )', "NEAR(a b)", "deplo*", "a:b", "(", ")",
     "%", "_", "%_%", "\\", "'; DROP TABLE messages; --", "from:nobody", "from:", "in:",
     "in:#secret-room", "from:ann from:ben", "\u200b", "a\x00b", "🙂", "*" * 300]


def test_bad_input_gets_a_clear_safe_answer(ann, world):
    for query in BAD_INPUT:
        response = ann.get("/search", query_string={"q": query})
        assert response.status_code == 200, query
        html = response.get_data(as_text=True)
        if len(query) > 200:
            assert "at most 200 characters" in html, query
        if query == "from:nobody":
            assert "Nobody is called nobody" in html
        if query in ("%", "_", "(", '"'):
            assert "symbols alone match nothing" in html, query
    # A quoted query with operators finds the words, literally.
    assert found(ann, '"deployment" (plan*)') == [world["ids"]["secret"]]


def test_broken_characters_are_refused_plainly(ann):
    response = ann.get("/search?q=%ED%A0%80")
    assert response.status_code in (200, 400)
    assert "Something went wrong" not in response.get_data(as_text=True)


def test_results_come_a_page_at_a_time_newest_first(app, ann, world):
    with app.app_context():
        room = Conversation.public_room()
        author = db.session.get(User, world["people"]["ben"])
        made = [Message.post(room, author, f"standup note {n}", str(uuid.uuid4()))[0].id
                for n in range(25)]
        db.session.commit()
    first = ann.get("/search?q=standup").get_data(as_text=True)
    ids = found(ann, "standup")
    assert ids == sorted(made, reverse=True)[:20]
    older = re.search(r'href="([^"]+)">Older results', first).group(1).replace("&amp;", "&")
    html = ann.get(older).get_data(as_text=True)
    rest = [int(i) for i in re.findall(r'#message-(\d+)"|/@(\d+)"', html) for i in i if i]
    assert rest == sorted(made, reverse=True)[20:]
    assert "Older results" not in html


def test_recent_searches_are_remembered_per_person_and_cleared(app, ann, world):
    for q in ("deplo", "发布", "deplo", "from:ben"):
        ann.get("/search", query_string={"q": q})
    # A search started from another site is not put in the list.
    ann.get("/search?q=planted", headers={"Sec-Fetch-Site": "cross-site"})
    html = ann.get("/search").get_data(as_text=True)
    recent = html.split("Recent searches")[1].split("</ul>")[0]
    assert re.findall(r">([^<>]+)</a>", recent) == ["from:ben", "deplo", "发布"]
    assert "planted" not in html
    ben = signed_in(app, "ben")
    assert "Recent searches" not in ben.get("/search").get_data(as_text=True)

    from conftest import csrf_from

    assert ann.post("/search/recent/clear").status_code == 400  # no CSRF token
    token = csrf_from(html)
    response = ann.post("/search/recent/clear", data={"csrf_token": token})
    assert response.status_code == 303
    assert "Recent searches" not in ann.get("/search").get_data(as_text=True)
    with app.app_context():
        assert RecentSearch.of(world["people"]["ann"]) == []


def test_the_chat_header_has_the_search_box(ann):
    html = ann.get("/").get_data(as_text=True)
    form = re.search(r'<form class="message-search" role="search" aria-label="Search messages"[^>]*>', html)
    assert form and 'method="get"' in form.group(0) and 'action="/search"' in form.group(0)
    assert '<label for="search-q" class="visually-hidden">Search messages</label>' in html
    assert ">Search</button>" in html


def test_search_needs_a_login(client):
    assert client.get("/search?q=x").status_code in (302, 303)


def test_the_admin_console_searches_with_the_same_engine(app, world):
    with app.app_context():
        User.by_username("cat").promote()
        db.session.commit()
    cat = signed_in(app, "cat")
    html = cat.get("/admin/", query_string={"q": "发布"}).get_data(as_text=True)
    assert "下周发布新版本" in html and "Deployment finished" not in html
    html = cat.get("/admin/", query_string={"q": "deplo"}).get_data(as_text=True)
    # Everything, private chats included (as the admin console always showed).
    assert "secret deployment plan" in html and "private deployment plan" in html


def test_the_migration_indexes_messages_that_already_exist(app, ann, world):
    from flask_migrate import downgrade, upgrade

    with app.app_context():
        downgrade(revision="99e910af725f")
        upgrade()
    assert keys(world, found(ann, "发布")) == ["release"]
    assert keys(world, found(ann, "deplo")) == ["secret", "deploy"]


def test_the_index_can_be_rebuilt_from_the_command_line(app, ann, world, runner):
    with app.app_context():
        db.session.execute(text(
            "DELETE FROM message_search" if db.engine.dialect.name == "sqlite"
            else "UPDATE messages SET search_vector = NULL"))
        db.session.commit()
    assert found(ann, "发布") == []
    result = runner.invoke(args=["search", "reindex"])
    assert result.exit_code == 0 and f"Indexed {len(CORPUS)} messages." in result.output
    assert keys(world, found(ann, "发布")) == ["release"]


def test_searching_too_fast_is_refused_plainly(app, ann):
    app.config["SEARCH_RATE"] = "3/minute"
    codes = [ann.get("/search?q=deplo").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.databases("sqlite")
def test_messages_removed_outright_leave_the_sqlite_index(app, world):
    """Retention deletes rows with a Core DELETE; a trigger takes their terms along."""
    with app.app_context():
        count = "SELECT count(*) FROM message_search WHERE rowid = :id"
        assert db.session.scalar(text(count), {"id": world["ids"]["release"]}) == 1
        db.session.execute(delete(Message).where(Message.id == world["ids"]["release"]))
        db.session.commit()
        assert db.session.scalar(text(count), {"id": world["ids"]["release"]}) == 0
