"""Edits, deletions, reactions and mentions as events: live for members, never for
anyone else, and caught up by the connect snapshot after time offline (both databases)."""

from __future__ import annotations

import re

from conftest import csrf_from, open_private_chat

FAST = {"CHATAPP_MESSAGE_RATE": "1000/second"}


def say(sock, body: str) -> int:
    """Send a message and return its id, once its push has arrived."""
    sock.say(body)
    first = body.split()[0]  # the rest may be formatted
    frame = sock.wait_for(lambda f: first in f and "<article" in f)
    return int(re.search(r'<article id="message-(\d+)"', frame).group(1))


def action(person, path: str, page: str = "/", **data):
    """POST what a page's form posts (with that page's CSRF token)."""
    token = csrf_from(person.get(page).text)
    return person.http.post(person.server.url + path, data={"csrf_token": token, **data})


def test_an_edit_reaches_every_member_live_and_no_one_else(server_factory, database_url):
    server = server_factory(**FAST)
    from conftest import Person

    alice, bob, carol = (Person(server, n).register() for n in ("alice", "bob", "carol"))
    chat = open_private_chat(server, "alice", "bob")
    a, b = alice.connect(chat), bob.connect(chat)
    c = carol.connect(1)
    mid = say(a, "a secret for bob")
    b.wait_for(f'id="message-{mid}"')

    r = action(alice, f"/messages/{mid}/edit", f"/c/{chat}", body="a *fixed* secret")
    assert r.status_code == 200
    for sock in (a, b):
        frame = sock.wait_for(lambda f: "<em>fixed</em>" in f)
        assert f'hx-target="#message-{mid}" hx-swap="outerHTML"' in frame and "(edited)" in frame
    assert action(bob, f"/messages/{mid}/reactions", f"/c/{chat}", emoji="🎉").status_code == 200
    for sock in (a, b):
        assert "Party: 1, bob" in sock.wait_for(f'id="reactions-{mid}"')
    # The stranger, in the room, hears none of it.
    c.drain(0.5)
    assert not any("secret" in f or f"message-{mid}" in f for f in c.frames)
    assert action(carol, f"/messages/{mid}/reactions", emoji="🎉").status_code == 404
    assert action(alice, f"/messages/{mid}/delete", f"/c/{chat}").status_code == 200
    for sock in (a, b):
        sock.wait_for(f'hx-target="#message-{mid}" hx-swap="delete"')
    c.drain(0.5)
    assert not any(f"message-{mid}" in f for f in c.frames)


def test_a_page_offline_during_changes_is_made_current_on_reconnect(server_factory, database_url):
    server = server_factory(**FAST)
    from conftest import Person

    alice, bob = (Person(server, n).register() for n in ("alice", "bob"))
    a = alice.connect()
    edited, gone, liked = (say(a, text) for text in ("typo hree", "oops wrong room", "nice"))
    away = bob.connect()
    away.close()  # bob's laptop sleeps
    assert action(alice, f"/messages/{edited}/edit", body="typo here").status_code == 200
    assert action(alice, f"/messages/{gone}/delete").status_code == 200
    assert action(alice, f"/messages/{liked}/reactions", emoji="❤️").status_code == 200
    back = bob.connect()  # the connect snapshot
    snapshot = back.frames[-1] if 'hx-target="#messages" hx-swap="innerHTML"' in back.frames[-1] else next(
        f for f in back.frames if 'hx-target="#messages" hx-swap="innerHTML"' in f)
    assert "typo here" in snapshot and "(edited)" in snapshot and "typo hree" not in snapshot
    assert f'id="message-{gone}"' not in snapshot
    assert "Heart: 1, alice" in snapshot
    assert back.message_ids() == [edited, liked]
    # And nothing arrives twice after it.
    assert not [f for f in back.drain(0.5) if "<article" in f]


def test_a_page_is_not_sent_changes_to_messages_it_never_loaded(server_factory, database_url):
    server = server_factory(**FAST)
    from conftest import Person

    alice, bob = (Person(server, n).register() for n in ("alice", "bob"))
    a = alice.connect()
    first = say(a, "the very first")
    for i in range(55):
        say(a, f"filler {i}")
    b = bob.connect()  # its snapshot holds the newest 50: not the first message
    assert first not in b.message_ids()
    assert action(alice, f"/messages/{first}/edit", body="the very first, edited").status_code == 200
    a.wait_for("the very first, edited")
    assert not any(f"message-{first}" in f for f in b.drain(0.7))


def test_a_mention_gives_a_live_mention_badge_and_a_deletion_takes_it_back(server_factory, database_url):
    server = server_factory(**FAST)
    from conftest import Person

    alice, bob = (Person(server, n).register() for n in ("alice", "bob"))
    chat = open_private_chat(server, "alice", "bob")
    b = bob.connect(chat)  # bob is in his chat with alice, not in the room
    a = alice.connect(1)
    mid = say(a, "lunch, @bob?")
    frame = b.wait_for('aria-label="1 mentions"')
    assert 'id="badge-1"' in frame and re.search(r"<title>\(1\) @1 ", frame)
    # Taking the message back takes the badge (and the unread count) with it.
    assert action(alice, f"/messages/{mid}/delete").status_code == 200
    frame = b.wait_for(lambda f: 'id="badge-1"' in f and "mentions" not in f)
    assert "unread" not in frame


def test_an_edit_that_names_someone_gives_them_a_mention_badge_and_one_that_stops_takes_it(
        server_factory, database_url):
    server = server_factory(**FAST)
    from conftest import Person

    alice, bob = (Person(server, n).register() for n in ("alice", "bob"))
    chat = open_private_chat(server, "alice", "bob")
    b = bob.connect(chat)
    a = alice.connect(1)
    mid = say(a, "who wants lunch?")
    b.drain(0.3)
    assert action(alice, f"/messages/{mid}/edit", body="who wants lunch, @bob?").status_code == 200
    frame = b.wait_for('aria-label="1 mentions"')
    assert 'id="badge-1"' in frame and 'aria-label="1 unread"' in frame
    assert action(alice, f"/messages/{mid}/edit", body="who wants lunch?").status_code == 200
    frame = b.wait_for(lambda f: 'id="badge-1"' in f and "mentions" not in f)
    assert 'aria-label="1 unread"' in frame
