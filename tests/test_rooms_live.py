"""Rooms on a live server: who receives what over real sockets. Removal closing sockets on
another worker, 404 handshakes for non-members, no push or badge to them, Notify me with
badges and the title, renaming live, joining and leaving live in two tabs."""

from __future__ import annotations

import re
import time

import pytest
import websocket
from conftest import Person, csrf_from
from test_scale import shared_redis, redis_prefix, two_servers, wait_close  # noqa: F401

SIDEBAR = 'hx-target="#sidebar"'


def form(person: Person, path: str, data: dict, page: str = "/"):
    """Post a form as its page would (with the page's CSRF token); no redirects followed."""
    token = csrf_from(person.get(page).text)
    return person.http.post(person.server.url + path, data={"csrf_token": token, **data},
                            allow_redirects=False)


def create_room(person: Person, name: str, members_only=False, people=()) -> int:
    data = {"name": name, "people": list(people)}
    if members_only:
        data["members_only"] = "1"
    response = form(person, "/rooms/new", data, page="/rooms/new")
    assert response.status_code == 303, response.text[:500]
    return int(re.search(r"/c/(\d+)$", response.headers["Location"]).group(1))


def user_id(person: Person) -> int:
    """The person's id, from the author rule on their own chat page."""
    return int(re.search(r'data-author="(\d+)"\]', person.get("/").text).group(1))


def handshake_status(person: Person, conversation_id: int) -> int | None:
    """The HTTP status of a socket handshake that the server refuses (None: it opened)."""
    try:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{person.server.port}/ws/{conversation_id}",
            header=[f"Cookie: {person.cookie_header()}"], origin=person.server.url, timeout=10)
    except websocket.WebSocketBadStatusException as refused:
        return refused.status_code
    ws.close()
    return None


def badge_frames(sock, conversation_id: int) -> list[str]:
    return [f for f in sock.frames if f'id="badge-{conversation_id}"' in f]


def unread_in(frame: str, conversation_id: int) -> int:
    match = re.search(rf'id="badge-{conversation_id}" class="badge-slot">'
                      r'(?:<span class="badge" aria-label="(\d+) unread")?', frame)
    return int(match.group(1) or 0) if match else -1


@pytest.fixture
def fast_server(server_factory):
    return server_factory(CHATAPP_MESSAGE_RATE="1000/second")


def test_a_members_only_room_reaches_its_members_and_nobody_else(fast_server):
    ann, ben, cat = (Person(fast_server, n).register() for n in ("ann", "ben", "cat"))
    room = create_room(ann, "Leads", members_only=True, people=["ben"])
    assert handshake_status(cat, room) == 404
    cat_public, ben_public = cat.connect(1), ben.connect(1)
    in_room = ann.connect(room)
    in_room.say("secret plans")
    in_room.wait_for("secret plans")
    ben_public.wait_for(lambda f: unread_in(f, room) == 1)
    assert "<title>(1) Public room · chatapp</title>" in badge_frames(ben_public, room)[-1]
    cat_public.drain(1.0)
    assert not any("secret plans" in f or f"badge-{room}" in f for f in cat_public.frames)
    # Cat's sidebar never lists the room; its page, history and settings are absent to him.
    assert "Leads" not in "".join(cat_public.frames)
    for path in (f"/c/{room}", f"/c/{room}/messages?before=99", f"/c/{room}/settings"):
        assert cat.get(path).status_code == 404


def test_notify_me_levels_decide_badges_and_the_title(fast_server):
    ann, ben = (Person(fast_server, n).register() for n in ("ann", "ben"))
    room = create_room(ann, "Dev talk")
    assert form(ben, f"/c/{room}/join", {}, page="/rooms/").status_code == 303
    writer, ben_public = ann.connect(room), ben.connect(1)

    def say_and_settle(text):
        writer.say(text)
        writer.wait_for(text)
        ben_public.drain(0.8)

    def choose(level):
        assert form(ben, f"/c/{room}/notify", {"level": level},
                    page=f"/c/{room}/settings").status_code == 303
        ben_public.wait_for(lambda f: f'id="badge-{room}"' in f)
        ben_public.drain(0.3)

    say_and_settle("one")
    assert unread_in(badge_frames(ben_public, room)[-1], room) == 1
    assert "<title>(1) " in badge_frames(ben_public, room)[-1]
    for level in ("none", "mentions"):
        choose(level)  # nothing counts: the badge and the title's count go
        assert unread_in(badge_frames(ben_public, room)[-1], room) == 0
        assert "<title>Public room · chatapp</title>" in badge_frames(ben_public, room)[-1]
        seen = len(badge_frames(ben_public, room))
        say_and_settle(f"quiet at {level}")
        assert all(unread_in(f, room) == 0 for f in badge_frames(ben_public, room)[seen:])
    choose("all")  # nothing was lost: every unread message counts again
    assert unread_in(badge_frames(ben_public, room)[-1], room) == 3
    assert "<title>(3) Public room · chatapp</title>" in badge_frames(ben_public, room)[-1]
    say_and_settle("four")
    assert unread_in(badge_frames(ben_public, room)[-1], room) == 4


def test_renaming_shows_the_new_name_live(fast_server):
    ann, ben = (Person(fast_server, n).register() for n in ("ann", "ben"))
    room = create_room(ann, "Leads", members_only=True, people=["ben"])
    viewer, elsewhere = ann.connect(room), ben.connect(1)
    response = form(ann, f"/c/{room}/rename", {"name": "Heads"}, page=f"/c/{room}/settings")
    assert response.status_code == 303
    viewer.wait_for('<h1 id="conversation-title">Heads</h1>')
    assert any("ann renamed the room to Heads" in f for f in viewer.frames)
    elsewhere.wait_for(lambda f: SIDEBAR in f and ">Heads<" in f)


def test_joining_and_leaving_show_live_in_every_tab(fast_server):
    ann, ben = (Person(fast_server, n).register() for n in ("ann", "ben"))
    room = create_room(ann, "Dev talk")
    tabs = [ben.connect(1), ben.connect(1)]
    assert form(ben, f"/c/{room}/join", {}, page="/rooms/").status_code == 303
    for tab in tabs:
        tab.wait_for(lambda f: SIDEBAR in f and ">Dev talk<" in f)
    in_room = ben.connect(room)
    assert "ben joined" in in_room.frames[0]  # its connect snapshot
    assert form(ben, f"/c/{room}/leave", {}, page=f"/c/{room}/settings").status_code == 303
    assert in_room.close_code() == 1008  # the room's own page closes
    for tab in tabs:
        tab.wait_for(lambda f: SIDEBAR in f and ">Dev talk<" not in f)
    assert handshake_status(ben, room) == 404


@pytest.mark.databases("postgresql")
def test_removal_closes_the_removed_persons_socket_on_another_worker(
        server_factory, shared_redis, redis_prefix):  # noqa: F811
    one, two = two_servers(server_factory, shared_redis, redis_prefix)
    ann = Person(one, "ann").register()
    ben = Person(one, "ben").register()
    room = create_room(ann, "Leads", members_only=True, people=["ben"])
    ben_two = Person(two, "ben")
    ben_two.http = ben.http  # the same browser, served by the other worker
    in_room, elsewhere = ben_two.connect(room), ben_two.connect(1)
    ben_id = user_id(ben)
    response = form(ann, f"/c/{room}/members/{ben_id}/remove", {}, page=f"/c/{room}/settings")
    assert response.status_code == 303
    started = time.monotonic()
    assert wait_close(in_room) == 1008
    assert time.monotonic() - started < 5
    assert "You are no longer in this room." in in_room.frames[-1]  # said before closing
    elsewhere.wait_for(lambda f: SIDEBAR in f and ">Leads<" not in f)
    # From now on: 404 on every worker, and no push of the room reaches him.
    assert handshake_status(ben_two, room) == 404 and handshake_status(ben, room) == 404
    seen = len(elsewhere.frames)
    writer = ann.connect(room)
    writer.say("after ben left")
    writer.wait_for("after ben left")
    elsewhere.drain(1.0)
    later = elsewhere.frames[seen:]
    assert not any("after ben left" in f or f"badge-{room}" in f for f in later), later
    ben_two.close()
