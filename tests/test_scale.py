"""Scale-out: several server processes sharing PostgreSQL and Redis behave as one.

Each test runs real gunicorn gevent servers on its own PostgreSQL database
(chatapp_test_<random>, dropped afterwards) and its own Redis key prefix (keys
deleted afterwards); the Redis restart test runs a private redis-server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import websocket

from conftest import (
    MESSAGE_ID, ROOT, Person, Socket, base_env, free_port, need_service, open_private_chat,
)

pytestmark = [pytest.mark.databases("postgresql"), pytest.mark.postgres, pytest.mark.redis]

SHARED_REDIS = os.environ.get("CHATAPP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SNAPSHOT = 'hx-target="#messages" hx-swap="innerHTML"'
ACK = 'hx-target="#composer"'
FAST = {"CHATAPP_REGISTER_RATE": "1000/hour", "CHATAPP_MESSAGE_RATE": "1000/second"}


# -- Redis -------------------------------------------------------------------------------


def _redis_client(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        need_service(f"Redis is not reachable at {url}: {exc}")
    return client


@pytest.fixture
def redis_prefix():
    """A key and channel prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"chatapp_test_{uuid.uuid4().hex[:10]}:"
    yield prefix
    try:
        import redis

        client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
    except Exception:  # noqa: BLE001 - the service may be the thing that is missing
        pass


@pytest.fixture
def shared_redis(redis_prefix):
    """The machine's Redis (never restarted by a test)."""
    _redis_client(SHARED_REDIS).close()
    return SHARED_REDIS


class RedisServer:
    """A private, memory-only redis-server on a free port, for tests that restart Redis."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _redis_client(self.url).close()
                return self
            except BaseException:  # noqa: BLE001 - need_service raises Skipped until it is up
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own (the shared one must not be restarted)."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        need_service("redis-server is not installed")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# -- people on several servers ----------------------------------------------------------


@pytest.fixture
def crowd():
    """Make people on given servers; every socket is closed at the end."""
    made: list[Person] = []

    def register(server, *names):
        new = [Person(server, name).register() for name in names]
        made.extend(new)
        return new[0] if len(new) == 1 else new

    def on(person: Person, server) -> Person:
        """The same person (same session cookie) using another server."""
        other = Person(server, person.username)
        other.http = person.http
        made.append(other)
        return other

    register.on = on
    yield register
    for person in made:
        person.close()
        person.http.close()


def two_servers(server_factory, redis_url, redis_prefix, **env):
    """Two server processes on one database and one Redis."""
    env = {"REDIS_URL": redis_url, "CHATAPP_REDIS_PREFIX": redis_prefix, **FAST, **env}
    first = server_factory(**env)
    second = server_factory(migrate=False, **env)
    return first, second


def ids_of(sock: Socket, needle: str) -> list[int]:
    """Ids of the message articles in the frames that contain needle."""
    return [int(i) for f in sock.frames if needle in f for i in MESSAGE_ID.findall(f)]


def wait_close(sock: Socket, timeout: float = 10.0) -> int:
    """Read until the server closes the socket; return the close code."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"socket not closed within {timeout} s")
        sock.ws.settimeout(remaining)
        try:
            # control_frame: pings come back here too, so the deadline holds.
            opcode, data = sock.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
        if opcode == websocket.ABNF.OPCODE_TEXT:
            sock.frames.append(data.decode())


def stored_messages(database_url: str) -> list[tuple[int, str, str]]:
    """(id, body, client_id) of every message in the database, by id."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, body, client_id FROM messages ORDER BY id").fetchall()


def reconnect(sock: Socket, conversation_id: int = 1, person: Person | None = None) -> Socket:
    """What htmx does after a close: open the page's socket again (maybe elsewhere)."""
    sock.close()
    return (person or sock.person).connect(conversation_id)


# -- the tests ---------------------------------------------------------------------------


def test_messages_reach_people_on_another_server_once(server_factory, shared_redis,
                                                      redis_prefix, crowd):
    one, two = two_servers(server_factory, shared_redis, redis_prefix)
    alice = crowd(one, "alice")
    bob = crowd(two, "bob")
    alice_two = crowd.on(alice, two)  # alice has a second tab, on the other server
    room_one = alice.connect(1)
    room_two = alice_two.connect(1)
    bob_room = bob.connect(1)

    # Public: posted through server two, received once by alice's tab on server one.
    bob_room.say("hello from the other server")
    room_one.wait_for("hello from the other server")
    bob_room.wait_for(ACK)

    # Private: bob opens the chat with alice on server two and writes there.
    dm_id = open_private_chat(two, "bob", "alice")
    alice_dm = alice.connect(dm_id)  # alice reads it on server one
    bob_dm = bob.connect(dm_id)
    bob_dm.say("a private word")
    alice_dm.wait_for("a private word")

    # The unread badge of the private chat rises in alice's tab on each server? She is
    # viewing it on server one, so it stays read; close that tab and write again.
    alice_dm.close()

    def badge_of_dm(frame: str) -> str:
        return frame.split(f'id="badge-{dm_id}"', 1)[1][:200] if f'id="badge-{dm_id}"' in frame else ""

    # The server lets go of the closed tab a moment after the close: until then a message
    # counts as read by her. Write until one is unread, then that is the only unread one.
    deadline = time.monotonic() + 10
    for attempt in range(100):
        bob_dm.say(f"are you there? {attempt}")
        bob_dm.wait_for(ACK)
        try:
            first = room_one.wait_for(lambda f: "unread" in badge_of_dm(f), timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the closed tab still reads the chat"
    assert 'aria-label="1 unread"' in badge_of_dm(first)
    room_two.wait_for(lambda f: 'aria-label="1 unread"' in badge_of_dm(f))

    for tab in (room_one, room_two, bob_room):
        tab.drain(0.5)
    public_id = ids_of(bob_room, "hello from the other server")[0]
    assert room_one.message_ids().count(public_id) == 1
    assert room_two.message_ids().count(public_id) == 1
    private_id = ids_of(alice_dm, "a private word")[0]
    assert alice_dm.message_ids().count(private_id) == 1
    # Nobody outside the private chat saw it, and no public page shows it.
    assert private_id not in room_one.message_ids()
    assert not any("are you there?" in f for f in room_one.frames + room_two.frames)


def test_redis_restart_mid_conversation_leaves_every_page_whole(
        server_factory, own_redis, redis_prefix, database_url, crowd):
    one, two = two_servers(server_factory, own_redis.url, redis_prefix)
    alice = crowd(one, "alice")
    bob = crowd(two, "bob")
    a, b = alice.connect(1), bob.connect(1)
    a.say("before the outage")
    b.wait_for("before the outage")
    a.wait_for(ACK)

    own_redis.stop()
    # Sending still works while Redis is down: stored and acknowledged.
    a.say("during the outage, from one")
    a.wait_for(ACK)
    b.say("during the outage, from two")
    b.wait_for(ACK)
    assert len(stored_messages(database_url)) == 3

    own_redis.start()  # same port, empty
    # Each server resubscribes and asks its pages to reconnect (1012); htmx would.
    assert wait_close(a, 15) == 1012
    assert wait_close(b, 15) == 1012
    a, b = reconnect(a), reconnect(b)
    a.say("after the outage")
    b.wait_for("after the outage")
    a.wait_for(ACK)
    a.drain(0.5)
    b.drain(0.5)

    stored = [row[0] for row in stored_messages(database_url)]
    assert len(stored) == 4
    for page in (a, b):
        assert page.message_ids() == stored  # every message, once, in order


class TcpProxy:
    """A port forwarded to Redis that a test can cut (a network failure) and restore."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.open = True
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self.open = False
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_cut_off_server_makes_every_other_server_resync(server_factory, shared_redis,
                                                       redis_prefix, database_url, crowd):
    proxy = TcpProxy(int(shared_redis.rsplit(":", 1)[1].split("/")[0]))
    try:
        env = {"CHATAPP_REDIS_PREFIX": redis_prefix, **FAST}
        one = server_factory(REDIS_URL=proxy.url, **env)
        two = server_factory(migrate=False, REDIS_URL=shared_redis, **env)
        alice, bob = crowd(one, "alice"), crowd(two, "bob")
        a, b = alice.connect(1), bob.connect(1)
        a.say("all connected")
        b.wait_for("all connected")

        proxy.cut()  # server one loses Redis; server two keeps it
        a.say("said while cut off")
        a.wait_for("said while cut off")  # stored, and shown on its own server
        a.wait_for(ACK)
        proxy.restore()
        # Server one tells everyone its events went missing: bob's page reconnects.
        assert wait_close(b, 15) == 1012
        assert wait_close(a, 15) == 1012
        a, b = reconnect(a), reconnect(b)
        stored = [row[0] for row in stored_messages(database_url)]
        assert len(stored) == 2
        for page in (a, b):
            assert page.message_ids() == stored
    finally:
        proxy.close()


def _worker_pid(server) -> int:
    """The pid of the gunicorn worker under a server's master process."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    raise AssertionError("no worker process")


def test_worker_killed_loses_no_acknowledged_message(server_factory, shared_redis,
                                                     redis_prefix, database_url, crowd):
    one, two = two_servers(server_factory, shared_redis, redis_prefix)
    alice = crowd(one, "alice")
    bob = crowd(two, "bob")
    sender = alice.connect(1)
    listener = bob.connect(1)

    # Alice sends as fast as she can; acknowledgements come back in order.
    client_ids = [str(uuid.uuid4()) for _ in range(40)]
    stop = threading.Event()

    def pump():
        for i, cid in enumerate(client_ids):
            if stop.is_set():
                return
            try:
                sender.say(f"burst {i}", client_id=cid)
            except Exception:  # noqa: BLE001 - the worker is gone
                return
            time.sleep(0.01)

    acks = 0
    thread = threading.Thread(target=pump)
    thread.start()
    try:
        while acks < 10:
            frame = sender.recv(5)
            assert frame is not None, "no acknowledgements"
            acks += frame.count(ACK)
        os.kill(_worker_pid(one), signal.SIGKILL)
        while True:  # whatever was acknowledged before the line went dead
            try:
                frame = sender.recv(2)
            except Exception:  # noqa: BLE001 - connection reset
                break
            if frame is None or frame == "":
                break
            acks += frame.count(ACK)
    finally:
        stop.set()
        thread.join()
    sent = [f"burst {i}" for i in range(len(client_ids))]
    acknowledged = set(sent[:acks])
    stored = {body for _, body, _ in stored_messages(database_url)}
    assert acknowledged <= stored, "an acknowledged message was lost"

    # Her page reconnects to the other server and resends what was never acknowledged
    # (the composer still holds it, with its client id): nothing doubles.
    alice_two = crowd.on(alice, two)
    page = alice_two.connect(1)
    for i in range(acks, len(client_ids)):
        page.say(f"burst {i}", client_id=client_ids[i])
        page.wait_for(ACK)
    page.drain(0.5)
    listener.drain(0.5)
    rows = stored_messages(database_url)
    assert sorted(body for _, body, _ in rows) == sorted(sent)
    assert len({cid for _, _, cid in rows}) == len(rows) == len(client_ids)
    ids = [row[0] for row in rows]
    # The listener on the surviving server saw every message exactly once.
    assert sorted(listener.message_ids()) == ids
    assert page.message_ids()[-len(ids) + acks:] == ids[acks:]


def test_twenty_concurrent_senders_same_order_everywhere(server_factory, shared_redis,
                                                         redis_prefix, database_url, crowd):
    servers = two_servers(server_factory, shared_redis, redis_prefix)
    names = [f"sender{i:02d}" for i in range(20)]
    senders = [crowd(servers[i % 2], name) for i, name in enumerate(names)]
    listeners = [crowd(servers[0], "watcher1"), crowd(servers[1], "watcher2")]
    listen = [p.connect(1) for p in listeners]
    sockets = [p.connect(1) for p in senders]
    per_sender = 5
    barrier = threading.Barrier(len(sockets))
    failures = []

    def send(sock: Socket, name: str):
        try:
            barrier.wait(10)
            for n in range(per_sender):
                sock.say(f"{name} says {n}")
            acks = 0
            while acks < per_sender:
                frame = sock.recv(15)
                assert frame is not None, f"{name}: {acks} acknowledgements"
                acks += frame.count(ACK)
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(s, n)) for s, n in zip(sockets, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures

    rows = stored_messages(database_url)
    total = len(names) * per_sender
    assert len(rows) == total
    assert len({body for _, body, _ in rows}) == total
    stored = sorted(row[0] for row in rows)

    orders = []
    for sock in listen + sockets:
        deadline = time.monotonic() + 15
        while len(set(sock.message_ids())) < total and time.monotonic() < deadline:
            sock.recv(1)
        # Pushes after the connect snapshot, in the order they arrived.
        pushed = [int(i) for f in sock.frames if SNAPSHOT not in f for i in MESSAGE_ID.findall(f)]
        assert sorted(pushed) == stored, "a message was missed or doubled"
        orders.append(pushed)
    assert all(order == orders[0] for order in orders), "listeners disagree on the order"


# -- workers -----------------------------------------------------------------------------


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_graceful_restart_closes_sockets_with_1012_promptly(server, people, sig):
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    started = time.monotonic()
    server.process.send_signal(sig)
    assert wait_close(a, 10) == 1012
    assert wait_close(b, 10) == 1012
    assert time.monotonic() - started < 2.5, "sockets were held open"
    if sig == signal.SIGTERM:
        server.process.wait(timeout=10)
        # The sockets went at once (above); the process then exits within gunicorn's
        # graceful_timeout (5 s), plus slack for a busy machine.
        assert time.monotonic() - started < 8
    else:  # a reload: the page reconnects to the new worker and catches up
        a = reconnect(a)
        reconnect(b).say("after the reload")
        a.wait_for("after the reload")


@pytest.mark.databases("sqlite")
def test_several_workers_without_redis_refuse_to_start(server_factory):
    with pytest.raises(RuntimeError, match="server exited") as failure:
        server_factory(WEB_CONCURRENCY="2")
    assert "2 workers need REDIS_URL" in str(failure.value)


# -- PostgreSQL under gevent ---------------------------------------------------------------

GREEN_PROBE = r"""
import json, sys, time
if sys.argv[1] == "psycopg-first":
    import psycopg  # imported before gevent patches select
from gevent import monkey
monkey.patch_all()
import gevent
from sqlalchemy import text
from chatapp import create_app
from chatapp.extensions import db

app = create_app()
with app.app_context():
    db.session.execute(text("SELECT 1"))  # connect once, outside the measurement

def query():
    with app.app_context():
        db.session.execute(text("SELECT pg_sleep(0.4)"))

ticks = []
def ticker():
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        ticks.append(time.monotonic())
        gevent.sleep(0.02)

start = time.monotonic()
gevent.joinall([gevent.spawn(query) for _ in range(4)] + [gevent.spawn(ticker)], raise_error=True)
print(json.dumps({"elapsed": time.monotonic() - start,
                  "gap": max(b - a for a, b in zip(ticks, ticks[1:]))}))
"""


@pytest.mark.parametrize("order", ["patched-first", "psycopg-first"])
def test_postgres_queries_yield_to_other_greenlets(tmp_path, database_url, order):
    env = base_env(tmp_path, database_url)
    result = subprocess.run([sys.executable, "-c", GREEN_PROBE, order], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # Four 0.4 s queries at once: together (0.4 s plus connecting), not one after
    # another (1.6 s and more), and the ticker greenlet kept running meanwhile.
    assert figures["elapsed"] < 1.3, figures
    assert figures["gap"] < 0.2, figures


def test_reading_on_one_server_clears_the_badge_on_the_other(server_factory, shared_redis,
                                                             redis_prefix, crowd):
    one, two = two_servers(server_factory, shared_redis, redis_prefix)
    alice = crowd(one, "alice")
    bob = crowd(two, "bob")
    alice_two = crowd.on(alice, two)
    dm_id = open_private_chat(two, "bob", "alice")
    reading = alice.connect(dm_id)  # alice reads the chat on server one...
    elsewhere = alice_two.connect(1)  # ...and has the public room open on server two
    bob_dm = bob.connect(dm_id)
    bob_dm.say("seen at once")
    reading.wait_for("seen at once")

    def badge_of_dm(frame: str) -> str:
        return frame.split(f'id="badge-{dm_id}"', 1)[1][:120] if f'id="badge-{dm_id}"' in frame else ""

    # Server two cannot know she is reading it on server one, so its tab shows 1 for a
    # moment; the batch of saved read pointers, published as one event, clears it.
    elsewhere.wait_for(lambda f: 'aria-label="1 unread"' in badge_of_dm(f))
    cleared = elsewhere.wait_for(
        lambda f: f'id="badge-{dm_id}"' in f and "unread" not in badge_of_dm(f), timeout=10)
    assert "<title>(1)" not in cleared
