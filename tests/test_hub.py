"""The hub's bookkeeping, in process: who gets a message, badges, sidebars, read pointers.

The hub is driven directly with stand-in sockets that record what is written to them, so
each of these runs in milliseconds; the live-server tests (test_realtime, test_private)
show the same behaviour end to end.
"""

from __future__ import annotations

import pytest
from conftest import base_env

from chatapp.realtime.client import Client, SnapshotIds
from chatapp.realtime.frames import POLICY_VIOLATION
from chatapp.realtime.hub import Hub
from chatapp.realtime.reads import ReadTracker

ROOM = 1  # the public room's id in these tests
CHAT = 2  # a private chat between users 10 and 11


class StandInSocket:
    """A kernel socket that takes every write whole and keeps it."""

    def __init__(self):
        self.written = bytearray()
        self.shut = False

    def send(self, data, flags=0):
        self.written += bytes(data)
        return len(data)

    def fileno(self):
        return -1

    def shutdown(self, how):
        self.shut = True


class StandInProtocol:
    """What Client needs of simple-websocket's wsproto connection: closing frames."""

    connection = None
    handshake = None

    def __init__(self):
        self.close_codes = []

    def send(self, event):
        self.close_codes.append(event.code)
        return b"\x88\x00"


class StandInWS:
    def __init__(self):
        self.sock = StandInSocket()
        self.ws = StandInProtocol()
        self.connected = True


def texts(client: Client) -> list[str]:
    """The text frames written to a stand-in socket, in order."""
    data, out = bytes(client.ws.sock.written), []
    while data:
        opcode, size, data = data[0], data[1] & 0x7F, data[2:]
        if size == 126:
            size, data = int.from_bytes(data[:2], "big"), data[2:]
        elif size == 127:
            size, data = int.from_bytes(data[:8], "big"), data[8:]
        if opcode == 0x81:
            out.append(data[:size].decode())
        data = data[size:]
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """An app to render pushes with, on a migrated SQLite database of its own."""
    from flask_migrate import upgrade

    from chatapp import create_app

    tmp_path = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in base_env(tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite3'}").items():
            patch.setenv(key, value)
        app = create_app({"TESTING": True})
    with app.app_context():
        upgrade()
    return app


class Recorder:
    """The hub's collaborators, recording what the hub asks of them."""

    def __init__(self):
        self.reads = []
        self.sidebars = []
        self.recounts = []
        self.counts: dict[int, int] = {}

    def on_read(self, user_ids, conversation_id, message_id):
        self.reads.append((set(user_ids), conversation_id, message_id))

    def render_sidebars(self, user_id, clients, unread):
        self.sidebars.append(user_id)
        for client in clients:
            client.push("<sidebar>")
        return {CHAT}

    def recount_unread(self, user_ids, conversation_id):
        self.recounts.append((sorted(user_ids), conversation_id))
        return self.counts


@pytest.fixture
def calls():
    return Recorder()


@pytest.fixture
def hub(app, calls):
    with app.app_context():
        yield Hub(on_read=calls.on_read, render_sidebars=calls.render_sidebars,
                  recount_unread=calls.recount_unread)


def connect(hub: Hub, user_id: int, conversation_id: int, unread=None, watermark=0) -> Client:
    """A socket of this user viewing this conversation, attached to the hub."""
    client = Client(StandInWS(), user_id, conversation_id, queue_size=8, send_timeout=1,
                    ping_interval=30, title="Public room")
    hub.attach(client, lambda: (dict(unread or {}), watermark))
    return client


def message(conversation_id, message_id, author_id, members=None) -> dict:
    return {"type": "message_created", "conversation_id": conversation_id,
            "message_id": message_id, "author_id": author_id, "member_ids": members,
            "html": f"<article id=\"message-{message_id}\"></article>"}


def test_a_message_reaches_each_viewer_once_and_readers_are_marked(hub, calls):
    alice, bob, bob_elsewhere = connect(hub, 1, ROOM), connect(hub, 2, ROOM), connect(hub, 2, CHAT)
    hub.deliver(message(ROOM, 5, author_id=1))
    assert texts(alice) == texts(bob) == ['<article id="message-5"></article>']
    # Bob reads it in one tab: not unread, so no badge in the other.
    assert texts(bob_elsewhere) == [] and hub.users[2].unread == {}
    assert calls.reads == [({2}, ROOM, 5)]  # the author has read their own message


def test_someone_not_viewing_the_room_gets_a_badge_in_each_tab(hub):
    connect(hub, 1, ROOM)
    carol_a, carol_b = connect(hub, 3, CHAT), connect(hub, 3, CHAT)
    hub.deliver(message(ROOM, 5, author_id=1))
    hub.deliver(message(ROOM, 6, author_id=1))
    assert hub.users[3].unread == {ROOM: 2}
    for tab in (carol_a, carol_b):
        assert len(texts(tab)) == 2 and 'aria-label="2 unread"' in texts(tab)[-1]
        assert "<title>(2) Public room · chatapp</title>" in texts(tab)[-1]


def test_messages_already_in_the_snapshot_are_not_sent_again(hub):
    alice = connect(hub, 1, ROOM, watermark=5)  # the snapshot's messages were counted
    alice.skip_ids = SnapshotIds([3, 5])
    for message_id in (3, 5, 7):
        hub.deliver(message(ROOM, message_id, author_id=2))
    assert texts(alice) == ['<article id="message-7"></article>']


def test_snapshot_ids_tell_old_ids_apart_compactly():
    ids = SnapshotIds([9, 2, 5])
    assert ids.newest == 9 and len(ids) == 3
    assert [i in ids for i in (2, 3, 5, 9, 10)] == [True, False, True, True, False]
    assert 1 not in SnapshotIds()


def test_messages_counted_before_the_user_connected_are_not_counted_twice(hub):
    carol = connect(hub, 3, CHAT, unread={ROOM: 4}, watermark=10)
    hub.deliver(message(ROOM, 10, author_id=1))  # already in the loaded count
    assert hub.users[3].unread == {ROOM: 4} and texts(carol) == []
    hub.deliver(message(ROOM, 11, author_id=1))
    assert hub.users[3].unread == {ROOM: 5}


def test_a_private_message_rerenders_the_sidebar_only_when_it_moves_the_chat(hub, calls):
    bob = connect(hub, 11, ROOM)
    connect(hub, 12, ROOM)  # not a member: hears nothing of it
    hub.deliver(message(CHAT, 5, author_id=10, members=[10, 11]))
    assert calls.sidebars == [11] and CHAT in hub.users[11].heads
    assert texts(bob) == ["<sidebar>"] and hub.users[11].unread == {CHAT: 1}
    # Now at the head of bob's sidebar: the next one only changes the badge.
    hub.deliver(message(CHAT, 6, author_id=10, members=[10, 11]))
    assert calls.sidebars == [11]
    assert 'aria-label="2 unread"' in texts(bob)[-1]
    assert 12 not in calls.sidebars and hub.users[12].unread == {}


def test_reading_elsewhere_clears_the_badge_in_every_tab(hub):
    tabs = [connect(hub, 3, CHAT), connect(hub, 3, CHAT)]
    hub.deliver(message(ROOM, 5, author_id=1))
    hub.deliver({"type": "conversation_read", "user_id": 3, "conversation_id": ROOM,
                 "message_id": 5})
    assert hub.users[3].unread == {ROOM: 0}
    for tab in tabs:
        assert 'class="badge"' not in texts(tab)[-1]
    before = [len(texts(t)) for t in tabs]
    hub.deliver({"type": "conversations_read", "reads": [[3, ROOM, 5], [99, ROOM, 5]]})
    assert [len(texts(t)) for t in tabs] == before  # nothing left to clear


def test_a_deleted_message_leaves_every_page_and_badges_are_recounted(hub, calls):
    viewer, carol = connect(hub, 1, ROOM), connect(hub, 3, CHAT)
    hub.deliver(message(ROOM, 5, author_id=2))
    calls.counts = {}  # the deleted message was carol's only unread one
    hub.deliver({"type": "message_deleted", "conversation_id": ROOM, "message_id": 5})
    assert 'hx-target="#message-5" hx-swap="delete"' in texts(viewer)[-1]
    assert calls.recounts == [([3], ROOM)] and hub.users[3].unread == {ROOM: 0}
    assert 'class="badge"' not in texts(carol)[-1]


def test_a_deactivated_user_loses_every_socket_and_the_hub_forgets_them(hub):
    tabs = [connect(hub, 4, ROOM), connect(hub, 4, CHAT)]
    other = connect(hub, 5, ROOM)
    hub.deliver({"type": "user_deactivated", "user_id": 4})
    assert [t.ws.ws.close_codes for t in tabs] == [[POLICY_VIOLATION]] * 2
    assert other.ws.ws.close_codes == []
    for tab in tabs:
        hub.detach(tab)
    assert 4 not in hub.users and hub.clients() == [other]
    assert hub.by_conversation[ROOM] == {other} and CHAT not in hub.by_conversation


def test_the_read_tracker_keeps_the_newest_pointer_and_saves_them_together(app):
    from chatapp.models import Conversation, Membership, User, db

    with app.app_context():
        users = [User(username=f"reader{i}", username_key=f"reader{i}", password_hash="-")
                 for i in range(3)]
        db.session.add_all(users)
        room = Conversation.public_room()
        db.session.flush()
        db.session.add_all(Membership(conversation=room, user=u) for u in users)
        db.session.commit()
        ids, room_id = [u.id for u in users], room.id
    saved = []
    reads = ReadTracker(app, on_saved=saved.append, interval=3600)
    reads.mark(ids[:2], room_id, 7)
    reads.mark(ids, room_id, 9)
    reads.mark(ids[:1], room_id, 8)  # older than what was seen: ignored
    reads.flush()
    assert saved == [{(i, room_id): 9 for i in ids}]
    with app.app_context():
        pointers = db.session.scalars(
            db.select(Membership.last_read_id).where(Membership.user_id.in_(ids))).all()
        assert pointers == [9, 9, 9]
    reads.flush()  # nothing pending: nothing written, nothing announced
    assert len(saved) == 1
