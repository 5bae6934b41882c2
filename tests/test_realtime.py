"""The public room over real sockets: delivery, acknowledgement, refusals, slow clients."""

import json
import socket
import threading
import time
import uuid

import pytest
import websocket
from sqlalchemy import create_engine, text

from conftest import Person, frames_to_fill


def rows(database_url: str, sql: str, **params):
    """Read the test server's database directly."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def handshake_status(server, cookie: str | None, origin: str | None) -> int:
    """The HTTP status the socket handshake gets."""
    headers = [f"Cookie: {cookie}"] if cookie else []
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws/1", header=headers, origin=origin,
            suppress_origin=origin is None, timeout=5,
        )
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    ws.close()
    return 101


def test_socket_refused_without_login(server):
    assert handshake_status(server, None, server.url) == 403


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
def test_socket_refused_from_a_foreign_origin(server, people, origin):
    alice = people("alice")
    alice.get("/")
    assert handshake_status(server, alice.cookie_header(), origin) == 403
    assert handshake_status(server, alice.cookie_header(), server.url) == 101


def test_listed_origin_is_allowed(server_factory):
    server = server_factory(CHATAPP_ALLOWED_ORIGINS="https://chat.example.org")
    alice = Person(server, "alice").register()
    assert handshake_status(server, alice.cookie_header(), "https://chat.example.org") == 101
    assert handshake_status(server, alice.cookie_header(), "https://other.example.org") == 403


def test_a_message_reaches_all_three_clients_once_and_is_stored(server, people, database_url):
    alice, bob, carol = people("alice", "bob", "carol")
    sockets = [alice.connect(), bob.connect(), carol.connect()]
    sockets[1].say("hello <b>everyone</b>")
    for sock in sockets:
        frame = sock.wait_for("hello &lt;b&gt;everyone&lt;/b&gt;")
        assert "<b>everyone" not in frame  # escaped, never markup
    for sock in sockets:
        sock.drain(0.5)
        assert len(sock.message_ids()) == 1
    stored = rows(database_url, "SELECT body, author_id FROM messages")
    assert stored == [("hello <b>everyone</b>", 2)]
    # A reload shows the history.
    assert "hello &lt;b&gt;everyone&lt;/b&gt;" in carol.get("/").text


def test_the_composer_clears_only_on_acknowledgement(server, people):
    alice = people("alice")
    sock = alice.connect()
    client_id = sock.say("first")
    ack = sock.wait_for('hx-target="#composer"')
    assert 'name="client_id"' in ack and client_id not in ack
    assert 'name="body"' in ack and "first" not in ack.split('name="body"')[1]
    sock.say("")
    error = sock.wait_for('id="composer-error"')
    assert "Type a message first" in error and 'role="alert"' in error
    assert 'hx-target="#composer"' not in error  # the box keeps its text


def test_the_same_client_id_twice_makes_one_message(server, people, database_url):
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    client_id = a.say("only once")
    a.wait_for('hx-target="#composer"')
    a.say("only once", client_id=client_id)  # a resend after a lost acknowledgement
    a.wait_for('hx-target="#composer"')
    b.drain(0.7)
    assert len(b.message_ids()) == 1
    assert rows(database_url, "SELECT count(*) FROM messages") == [(1,)]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("not json at all", "could not be read"),
        ("[1, 2, 3]", "could not be read"),
        ({"body": "x" * 4001}, "at most 4000 characters; yours has 4001"),
        ({"body": "   "}, "Type a message first"),
        ({"body": "hi", "admin": True}, "unexpected fields"),
        ({"body": "hi", "csrf_token": "forged"}, "Reload the page to send messages"),
        ({"body": "hi", "client_id": "../../etc"}, "could not be read"),
    ],
)
def test_bad_frames_get_a_clear_error_and_change_nothing(server, people, database_url,
                                                           payload, error):
    alice = people("alice")
    sock = alice.connect()
    if isinstance(payload, dict):
        payload = {"client_id": str(uuid.uuid4()), "csrf_token": sock.csrf_token,
                   "headers": {}, **payload}
    sock.send_json(payload)
    frame = sock.wait_for('id="composer-error"')
    assert error in frame and 'role="alert"' in frame
    assert rows(database_url, "SELECT count(*) FROM messages") == [(0,)]
    # The socket stays usable.
    sock.say("still here")
    sock.wait_for("still here")


def test_a_flood_is_refused(server, people, database_url):
    alice = people("alice")
    sock = alice.connect()
    for i in range(15):
        sock.say(f"flood {i}")
    frame = sock.wait_for("too fast")
    assert 'role="alert"' in frame
    (count,) = rows(database_url, "SELECT count(*) FROM messages")[0]
    assert count == 10  # CHATAPP_MESSAGE_RATE default: 10 per 5 seconds


def test_an_oversized_frame_closes_the_socket_with_1009(server, people, database_url):
    alice = people("alice")
    sock = alice.connect()
    sock.say("y" * 33_000)  # just over CHATAPP_MAX_FRAME_BYTES (32768)
    assert sock.close_code() == 1009
    assert rows(database_url, "SELECT count(*) FROM messages") == [(0,)]


# About sockets, not storage; on PostgreSQL the burst's inserts take long enough that the
# server has cut the stuck line (RST) before the stuck client reads its 1013.
@pytest.mark.databases("sqlite")
def test_a_client_that_stops_reading_harms_nobody(server_factory, database_url):
    server = server_factory(CHATAPP_SEND_QUEUE_SIZE="64", CHATAPP_MESSAGE_RATE="100000/second",
                            CHATAPP_SEND_TIMEOUT="60")
    sender, fast, slow = (Person(server, n).register() for n in ("sender", "fast", "slow"))
    out, listener = sender.connect(), fast.connect()
    stuck = slow.connect(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    body = "z" * 3900
    # Enough to fill the stuck line's kernel buffers, whatever their size here, and then
    # its queue of 64: the overflow must happen within the burst.
    total = frames_to_fill(stuck.ws.sock, len(body), 64)
    received = {"out": [], "listener": []}

    def read(sock, key):
        sock.ws.settimeout(20)
        while len(received[key]) < total:
            try:
                frame = sock.ws.recv()
            except websocket.WebSocketTimeoutException:
                return
            if "<article" in frame:
                received[key].append(frame)

    readers = [threading.Thread(target=read, args=(out, "out")),
               threading.Thread(target=read, args=(listener, "listener"))]
    for t in readers:
        t.start()
    for i in range(total):
        out.send_json({"body": f"{i} {body}", "client_id": str(uuid.uuid4()),
                       "csrf_token": out.csrf_token, "headers": {}})
        if i % 50 == 0:
            time.sleep(0.02)
    for t in readers:
        t.join(timeout=60)
    assert len(received["listener"]) == total
    assert len(received["out"]) == total
    assert rows(database_url, "SELECT count(*) FROM messages") == [(total,)]
    # The stuck client, once it reads again, finds it was closed with 1013 (try again).
    assert stuck.close_code(timeout=30) == 1013
    assert "overflowed its queue" in server.log()


def test_a_reconnecting_client_ends_with_every_message_once_in_order(server, people):
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    b.say("before the drop")
    a.wait_for("before the drop")
    a.close()
    for i in range(3):
        b.say(f"while away {i}")
        b.wait_for(f"while away {i}")
    again = alice.connect()  # htmx reconnects: the snapshot brings the page up to date
    b.say("after the return")
    again.wait_for("after the return")
    b.wait_for("after the return")
    again.drain(0.5)
    ids = again.message_ids()
    assert ids == sorted(set(ids)) and len(ids) == 5
    assert ids == b.message_ids()


def test_flask_run_serves_sockets_too(server_factory):
    server = server_factory(dev=True)
    alice, bob = Person(server, "alice").register(), Person(server, "bob").register()
    a, b = alice.connect(), bob.connect()
    a.say("from the development server")
    b.wait_for("from the development server")
    a.wait_for('hx-target="#composer"')


def test_one_user_may_hold_only_so_many_sockets(server_factory):
    """Each socket costs the worker memory and fan-out work: an account past the limit
    gets 429 at the handshake; other people, and the same person after closing a tab,
    connect as before."""
    server = server_factory(CHATAPP_MAX_SOCKETS_PER_USER="2")
    alice = Person(server, "alice").register()
    bob = Person(server, "bob").register()
    first, _second = alice.connect(), alice.connect()
    assert handshake_status(server, alice.cookie_header(), server.url) == 429
    assert handshake_status(server, bob.cookie_header(), server.url) == 101
    first.ws.close()
    deadline = time.monotonic() + 5
    while handshake_status(server, alice.cookie_header(), server.url) != 101:
        assert time.monotonic() < deadline, "the closed tab still counts"
        time.sleep(0.1)
