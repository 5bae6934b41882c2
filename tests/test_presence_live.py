"""Presence and typing on a live server, over real sockets: online and offline once per
change (not per socket), a reconnect storm inside the grace period announcing nothing,
presence across two workers through Redis, and typing frames that reach members only,
flood-limited, with forged fields refused."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import Person, open_private_chat
from test_rooms_live import create_room, user_id
from test_scale import redis_prefix, shared_redis, two_servers, SHARED_REDIS  # noqa: F401

pytestmark = pytest.mark.databases("sqlite")

FAST = {"CHATAPP_MESSAGE_RATE": "1000/second"}
TYPING = 'hx-target="#typing"'


def presence_frames(sock, who: int) -> list[str]:
    """Frames that change this person's online dots."""
    return [f for f in sock.frames if f'hx-target=".presence-{who}"' in f]


def online_in(frame: str) -> bool:
    return 'aria-label="online"' in frame


def typing(sock) -> None:
    """Send what the composer's typing trigger sends."""
    sock.send_json({"typing": "1", "csrf_token": sock.csrf_token,
                    "headers": {"HX-Request": "true"}})


@pytest.fixture
def crowd():
    """Register people on a given server: crowd(server, "ann", "ben"); closed afterwards."""
    made = []

    def make(server, *names):
        new = [Person(server, name).register() for name in names]
        made.extend(new)
        return new

    yield make
    for person in made:
        person.close()


def test_online_once_then_offline_after_the_grace_period(server_factory, crowd):
    quick_grace = server_factory(CHATAPP_PRESENCE_GRACE="1", **FAST)
    ann, ben = crowd(quick_grace, "ann", "ben")
    ann_id = user_id(ann)
    watcher = ben.connect()
    first = ann.connect()
    frame = watcher.wait_for(f".presence-{ann_id}")
    assert online_in(frame)
    # A second tab of hers changes nothing; closing one of two changes nothing.
    second = ann.connect()
    second.close()
    first.close()
    frame = watcher.wait_for(f".presence-{ann_id}", timeout=5)
    assert not online_in(frame) and "Last seen just now" in frame
    watcher.drain(1.0)
    assert [online_in(f) for f in presence_frames(watcher, ann_id)] == [True, False]
    # Her private chat's page says when she was last seen; the sidebar has no dot for her.
    page = ben.get(f"/c/{open_private_chat(quick_grace, 'ann', 'ben')}").text
    assert "Last seen just now" in page
    assert f'<span class="presence presence-{ann_id}"></span>' in page


def test_a_reconnect_storm_inside_the_grace_period_announces_nothing(server_factory, crowd):
    server = server_factory(CHATAPP_PRESENCE_GRACE="30", **FAST)
    watcher, *many = crowd(server, "watcher", *(f"person{n}" for n in range(12)))
    ids = [user_id(p) for p in many]
    watch = watcher.connect()
    sockets = [p.connect() for p in many]
    for who in ids:
        watch.wait_for(f".presence-{who}")
    watch.drain(0.5)
    before = len(watch.frames)
    # Every page reconnects, as after a deploy or a network blip.
    for sock in sockets:
        sock.close()
    for person in many:
        person.connect()
    watch.drain(1.5)
    flicker = [f for f in watch.frames[before:] if ".presence-" in f]
    assert flicker == []


def test_typing_reaches_members_only_and_clears_when_the_message_arrives(
        server_factory, crowd):
    ann, ben, carl = crowd(server_factory(**FAST), "ann", "ben", "carl")
    room = create_room(ann, "Leads", members_only=True, people=["ben"])
    ann_sock, ben_sock = ann.connect(room), ben.connect(room)
    carl_public = carl.connect()
    ann_public = ann.connect()  # her other tab, on another conversation
    typing(ann_sock)
    frame = ben_sock.wait_for(TYPING)
    assert "ann is typing…" in frame
    ann_sock.say("hello leads")
    cleared = ben_sock.wait_for(TYPING)
    assert "is typing" not in cleared
    # Carl (not a member) and the public room's pages heard nothing of it.
    for sock in (carl_public, ann_public):
        sock.drain(1.0)
        assert not [f for f in sock.frames if TYPING in f]
    # Ann never sees herself typing.
    ann_sock.drain(0.5)
    assert not [f for f in ann_sock.frames if "ann is typing" in f]


def test_typing_shows_two_names_then_several(server_factory, crowd):
    ann, ben, cyd, dee = crowd(server_factory(**FAST), "ann", "ben", "cyd", "dee")
    watcher = dee.connect()
    for person in (ann, ben):
        typing(person.connect())
    watcher.wait_for("ann and ben are typing…")
    typing(cyd.connect())
    watcher.wait_for("several people are typing…")


def test_forged_and_flooded_typing_frames_reach_nobody(server_factory, crowd):
    ann, ben = crowd(server_factory(CHATAPP_REFUSAL_RATE="5/10second", **FAST), "ann", "ben")
    ben_id = user_id(ben)
    watcher = ben.connect()
    ann_sock = ann.connect()
    watcher.wait_for(".presence-")  # she is online
    watcher.drain(0.5)
    before = len(watcher.frames)
    # A typing frame naming a conversation, or someone else: unknown fields, refused.
    for forged in ({"conversation_id": 99}, {"user_id": ben_id}, {"online": True}):
        ann_sock.send_json({"typing": "1", "csrf_token": ann_sock.csrf_token, **forged})
        assert "unexpected fields" in ann_sock.wait_for("composer-error")
    # A presence frame is not a thing a page can send.
    ann_sock.send_json({"presence": "online", "csrf_token": ann_sock.csrf_token})
    ann_sock.send_json({"typing": "1", "csrf_token": "forged"})
    # A flood: the first is shown, the rest are dropped, and the socket is closed.
    for _ in range(30):
        typing(ann_sock)
    assert ann_sock.close_code() == 1008
    watcher.drain(1.0)
    after = watcher.frames[before:]
    assert len(after) == 1 and TYPING in after[0] and "ann is typing…" in after[0]


@pytest.mark.redis
def test_presence_crosses_workers_through_redis_once_per_change(
        server_factory, shared_redis, redis_prefix, crowd):
    import redis

    first, second = two_servers(server_factory, SHARED_REDIS, redis_prefix,
                                CHATAPP_PRESENCE_GRACE="1")
    listener = redis.Redis.from_url(SHARED_REDIS).pubsub()
    listener.subscribe(redis_prefix + "events")
    ann, = crowd(first, "ann")
    ben, = crowd(second, "ben")
    ann_id = user_id(ann)
    watcher = ben.connect()  # on the second worker
    ann_first = ann.connect()  # on the first
    assert online_in(watcher.wait_for(f".presence-{ann_id}"))
    # Her tab moves to the other worker and back (a deploy): no change, no event.
    ann_moved = Person(second, "ann")
    ann_moved.login()
    other = ann_moved.connect()
    ann_first.close()
    time.sleep(1.5)  # past her grace period on the first worker
    watcher.drain(0.5)
    assert [online_in(f) for f in presence_frames(watcher, ann_id)] == [True]
    other.close()
    assert not online_in(watcher.wait_for(f".presence-{ann_id}", timeout=5))
    events = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message and message["type"] == "message":
            event = json.loads(message["data"])
            if event["type"] == "presence" and event["user_id"] == ann_id:
                events.append(event["online"])
    assert events == [True, False]
    listener.close()
    ann_moved.close()


def test_a_chinese_reader_sees_presence_and_typing_in_chinese(server_factory, crowd):
    import websocket
    from conftest import Socket, csrf_from

    server = server_factory(**FAST)
    ann, lilei = crowd(server, "ann", "lilei")
    lilei.http.headers["Accept-Language"] = "zh-CN,zh;q=0.9"
    html = lilei.get("/").text
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/ws/1", origin=server.url, timeout=10,
        header=[f"Cookie: {lilei.cookie_header()}", "Accept-Language: zh-CN,zh;q=0.9"])
    reader = Socket(lilei, ws, csrf_from(html))
    lilei.sockets.append(reader)
    reader.wait_for('hx-target="#messages"')
    typing(ann.connect())
    assert 'aria-label="在线"' in reader.wait_for(".presence-")
    assert "ann 正在输入…" in reader.wait_for(TYPING)


def test_a_change_reaches_only_pages_that_show_the_person(server_factory, crowd):
    server = server_factory(CHATAPP_PRESENCE_GRACE="1", **FAST)
    # The sidebar lists the first 20 other people by name; "zed" is the 21st for "aaron".
    aaron, *members, zed = crowd(server, "aaron", *(f"member{n:02d}" for n in range(20)), "zed")
    watcher = aaron.connect()
    zed_id, first_id = user_id(zed), user_id(members[0])
    zed_sock = zed.connect()
    members[0].connect()
    assert online_in(watcher.wait_for(f".presence-{first_id}"))
    # Once they share a private chat, its page (header and sidebar) shows zed: his going
    # offline reaches it, and not the public room's page, whose sidebar does not list him.
    chat = open_private_chat(server, "aaron", "zed")
    on_chat = aaron.connect(chat)
    zed_sock.close()
    assert not online_in(on_chat.wait_for(f".presence-{zed_id}"))
    watcher.drain(0.5)
    assert presence_frames(watcher, zed_id) == []
