"""Private chats, unread badges and finding people."""

import re
import threading
import time

import pytest
from sqlalchemy import event
from werkzeug.serving import make_server

from conftest import Person, free_port, open_private_chat, open_private_chats


def open_chat(person: Person, peer: str) -> int:
    """The private chat of a person with a peer, opened; its id."""
    return open_private_chat(person.server, person.username, peer)


def badge(frames_or_page: str, count: int) -> bool:
    return f'aria-label="{count} unread"' in frames_or_page


def no_badge(page: str, chat: int) -> bool:
    """Whether a chat's badge slot on a page is empty (no unread count at all)."""
    return f'id="badge-{chat}" class="badge-slot"></span>' in page


def eventually(check, timeout: float = 10.0):
    """Poll check() until it is true (read pointers are saved in batches); its value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "still not so after %s s" % timeout
        time.sleep(0.05)
    return value


def test_a_private_chat_reaches_its_two_members_and_nobody_else(server, people):
    alice, bob, carol = people("alice", "bob", "carol")
    chat = open_chat(alice, "bob")
    a = alice.connect(chat)
    b_room = bob.connect()
    c_room = carol.connect()
    a.say("just between us")
    a.wait_for("just between us")
    # Bob is in the public room: the chat appears in his sidebar with a badge.
    frame = b_room.wait_for(lambda f: badge(f, 1))
    assert f'id="badge-{chat}"' in frame and "just between us" not in frame
    # Bob opens it: the message is there, and new ones arrive live.
    b = bob.connect(chat)
    assert "just between us" in b.frames[-1]
    a.say("second")
    b.wait_for("second")
    # Carol received nothing of it and cannot reach it in any way.
    c_room.drain(0.7)
    assert not any("just between us" in f or f"/c/{chat}" in f for f in c_room.frames)
    assert carol.get(f"/c/{chat}").status_code == 404
    assert carol.get(f"/c/{chat}/messages?before=1000").status_code == 404
    assert carol.get("/c/999").status_code == 404  # the same answer as for no such chat
    with pytest.raises(Exception, match="404"):
        carol.connect(chat)
    assert "just between us" not in carol.get("/").text


def test_badges_survive_reloads_and_tabs_and_clear_everywhere(server, people):
    alice, bob = people("alice", "bob")
    chat = open_chat(alice, "bob")
    a = alice.connect(chat)
    tab1 = bob.connect()
    a.say("one")
    a.say("two")
    tab1.wait_for(lambda f: badge(f, 2))
    assert "<title>(2) " in tab1.frames[-1] or any("<title>(2) " in f for f in tab1.frames)
    page = bob.get("/").text  # a reload
    assert badge(page, 2) and "<title>(2) Public room" in page
    tab2 = bob.connect()  # a second tab
    assert badge(tab2.frames[-1], 2)
    # Opening the chat clears its badge in both tabs, and the title count with it.
    bob.get(f"/c/{chat}")
    for tab in (tab1, tab2):
        frame = tab.wait_for(f'id="badge-{chat}"')
        assert "unread" not in frame.split(f'id="badge-{chat}"')[1].split("</span>")[0]
        assert "<title>Public room" in frame
    assert no_badge(bob.get("/").text, chat)  # not "2 unread", nor any other count


def test_the_public_room_has_a_badge(server, people):
    alice, bob = people("alice", "bob")
    chat = open_chat(bob, "alice")
    b = bob.connect(chat)  # Bob is reading his private chat
    a = alice.connect()
    a.say("news for the room")
    frame = b.wait_for(lambda f: badge(f, 1))
    assert 'id="badge-1"' in frame and "<title>(1) alice" in frame
    assert "news for the room" not in frame
    # A message in the conversation on screen is read at once: no badge for it.
    a2 = alice.connect(chat)
    a2.say("hello bob")
    b.wait_for("hello bob")
    # Read pointers are saved in batches: once saved, a reload shows no badge for it.
    eventually(lambda: no_badge(bob.get("/").text, chat))


def test_private_chats_are_listed_by_latest_activity(server, people):
    alice, bob, carol = people("alice", "bob", "carol")
    with_bob, with_carol = open_chat(alice, "bob"), open_chat(alice, "carol")
    for chat, body in ((with_bob, "to bob"), (with_carol, "to carol")):
        sock = alice.connect(chat)
        sock.say(body)
        sock.wait_for('hx-target="#composer"')  # acknowledged: stored
    nav = alice.get("/").text.split('aria-label="Conversations"')[1]
    assert nav.index(f"/c/{with_carol}") < nav.index(f"/c/{with_bob}")


def test_a_chat_at_the_head_of_the_sidebar_gets_a_badge_not_a_new_sidebar(server, people):
    """A message that moves a chat to the head of a member's sidebar re-renders it; the
    next ones change no order, so only the badge (and the title count) is pushed."""
    alice, bob, carol = people("alice", "bob", "carol")
    with_alice, with_carol = open_chat(bob, "alice"), open_chat(bob, "carol")
    carol.connect(with_carol).say("carol first")
    a = alice.connect(with_alice)
    room = bob.connect()  # Bob's sidebar: the chat with Carol on top, then Alice's
    nav = room.frames[-1].split('aria-label="Conversations"')[1]
    assert nav.index(f"/c/{with_carol}") < nav.index(f"/c/{with_alice}")
    a.say("first")
    first = room.wait_for(lambda f: badge(f, 1) and f"badge-{with_alice}" in f)
    nav = first.split('hx-target="#sidebar"')[1]  # re-rendered: Alice's chat moved up
    assert nav.index(f"/c/{with_alice}") < nav.index(f"/c/{with_carol}")
    seen_by_alice, seen_by_bob = len(a.frames), len(room.frames)
    a.say("second")
    second = room.wait_for(lambda f: badge(f, 2))
    assert f'hx-target="#badge-{with_alice}"' in second and "<title>(3) Public room" in second
    a.wait_for("second")
    a.drain(0.5)
    room.drain(0.5)
    later = a.frames[seen_by_alice:] + room.frames[seen_by_bob:]
    assert not any('hx-target="#sidebar"' in f for f in later), "a sidebar was re-rendered"
    # What a reload shows agrees with what was pushed.
    page = bob.get("/").text
    assert badge(page, 2) and "<title>(3) Public room" in page


def test_find_people(server, people):
    alice, *_ = people("alice", "carol", "caroline", "dave")
    found = alice.get("/people?q=car").text
    assert "carol" in found and "caroline" in found and "dave" not in found
    assert "Nobody" in alice.get("/people?q=zed").text
    assert "carol" not in alice.get("/people?q=%25").text  # wildcards are literal
    assert "carol" not in alice.get("/people?q=_a").text
    assert "alice" not in alice.get("/people?q=ali").text  # not yourself


def test_the_sidebar_is_capped_on_a_large_install(app, client, auth):
    from chatapp.models import User, db

    with app.app_context():
        for i in range(60):
            db.session.add(User(username=f"user{i:03}", username_key=f"user{i:03}",
                                password_hash="x"))
        db.session.commit()
    auth.register("alice")
    page = client.get("/").get_data(as_text=True)
    assert page.count('href="/dm/user') == 20  # 60 people, 20 offered
    assert 'href="/dm/user059"' not in page
    assert "user059" in client.get("/people?q=user05").get_data(as_text=True)


# -- cost of fan-out ------------------------------------------------------------------------


class ThreadedServer:
    """The app in this process under Werkzeug's threaded server, to count its statements."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.people: list[Person] = []
        self.httpd = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        for person in self.people:
            person.close()
        self.httpd.shutdown()


def statements_for_one_message(app, listeners: int) -> int:
    """Database statements issued while one public message reaches `listeners` sockets."""
    from chatapp.extensions import db

    reads = app.extensions["chatapp.realtime"].reads
    # Read pointers are flushed here, explicitly, not by the timer at a moment of its own.
    reads.interval = 3600
    reads.flush()
    server = ThreadedServer(app)
    try:
        sender = Person(server, f"sender{listeners}").register()
        out = sender.connect()
        socks = [Person(server, f"l{listeners}-{i:03}").register().connect()
                 for i in range(listeners)]
        reads.flush()  # what connecting left to write, outside the count
        count = [0]
        with app.app_context():
            engine = db.engine

        def counter(*_):
            count[0] += 1

        event.listen(engine, "before_cursor_execute", counter)
        try:
            # What the registrations set going (newcomers in open sidebars, presence) runs
            # on its own time: count from a quiet moment, so only the message is counted.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                count[0] = 0
                time.sleep(0.5)
                if count[0] == 0:
                    break
            out.say("to everyone")
            out.wait_for('hx-target="#composer"')  # acknowledged after the fan-out
            for sock in socks:
                sock.wait_for("to everyone")
            reads.flush()  # include the batched read-pointer write
        finally:
            event.remove(engine, "before_cursor_execute", counter)
        return count[0]
    finally:
        server.stop()


def test_fan_out_cost_does_not_grow_with_recipients(app, tmp_path):
    few = statements_for_one_message(app, 3)
    many = statements_for_one_message(app, 30)
    assert few > 0
    print(f"statements for one public message: {few} with 3 listeners, {many} with 30")
    assert many <= few, (few, many)


@pytest.mark.databases("postgresql")
def test_many_private_chats_at_once_all_deliver(server_factory, database_url):
    """Forty chats writing at once on a pool of two: every message and image arrives.

    Each private message that moves a chat to the head of a member's sidebar re-renders
    it while the publisher's request still holds its database connection; delivering in a
    fresh session would want a second one, and with more concurrent publishers than the
    pool holds they all waited on each other until the pool timed out. PostgreSQL, because
    its queries yield under gevent and so the publishers overlap (sqlite3 calls never
    yield); image uploads, because they were the path that held two connections; each
    sender alternates between two chats, so that every message moves one to the head.
    """
    from sqlalchemy import create_engine, text

    from test_uploads import picture, upload

    server = server_factory(CHATAPP_MESSAGE_RATE="1000/second", CHATAPP_DB_POOL_SIZE="2")
    n = 20
    left = [Person(server, f"left{i:02}").register() for i in range(n)]
    right = [Person(server, f"right{i:02}").register() for i in range(n)]
    texts = open_private_chats(server, *((left[i].username, right[i].username)
                                         for i in range(n)))
    images = open_private_chats(server, *((left[i].username, right[(i + 1) % n].username)
                                          for i in range(n)))
    senders = [left[i].connect(texts[i]) for i in range(n)]
    listeners = {chat: right[i].connect(chat) for i, chat in enumerate(texts)}
    listeners.update({chat: right[(i + 1) % n].connect(chat) for i, chat in enumerate(images)})
    image = picture("PNG", size=(400, 300))
    failures = []

    def chat(i):
        try:
            for k in range(5):
                senders[i].say(f"line {k}")
                response = upload(left[i], images[i], image, caption=f"image {k}")
                assert response.status_code == 200, response.text[:300]
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:3]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT conversation_id, id FROM messages")).all()
    finally:
        engine.dispose()
    assert len(stored) == n * 10
    for conversation_id, listener in listeners.items():
        expected = {i for c, i in stored if c == conversation_id}
        assert len(expected) == 5
        deadline = time.monotonic() + 30
        while not expected <= set(listener.message_ids()):
            assert time.monotonic() < deadline, (expected, listener.message_ids())
            listener.recv(1)
    assert "QueuePool limit" not in server.log()
