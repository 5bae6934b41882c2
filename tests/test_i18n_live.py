"""Languages and time zones end to end: a real server, real WebSocket clients. Each person
receives a push in their own language and time zone, and the page's socket keeps the
language it connected with."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import websocket
from live import Socket, csrf_from
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.databases("sqlite")  # about the hub and the socket, not the engine

TIME = re.compile(r'<time datetime="([0-9T:.-]+)Z">([^<]+)</time>')


def choose(server, username: str, language: str | None, time_zone: str | None) -> None:
    """Store a person's language and time zone as the Settings page does."""
    url = server.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET language = :l, time_zone = :z WHERE username = :u"),
                         {"l": language, "z": time_zone, "u": username})
    finally:
        engine.dispose()


def shown_time(frame: str, body: str) -> tuple[datetime, str]:
    """The message's UTC moment (machine-readable) and the time of day shown for it."""
    assert body in frame
    moment, shown = TIME.findall(frame)[-1]
    return datetime.fromisoformat(moment).replace(tzinfo=ZoneInfo("UTC")), shown


def test_a_push_shows_each_person_their_own_time_and_language(server, people):
    ann, bob, cyd = people("ann", "bob", "cyd")
    choose(server, "ann", "zh_Hans", "Asia/Shanghai")
    choose(server, "bob", None, "America/New_York")
    ann_socket, bob_socket, cyd_socket = ann.connect(), bob.connect(), cyd.connect()
    cyd_socket.say("meeting now")
    pushes = {name: sock.wait_for("meeting now")
              for name, sock in (("ann", ann_socket), ("bob", bob_socket), ("cyd", cyd_socket))}
    for name, zone in (("ann", "Asia/Shanghai"), ("bob", "America/New_York"), ("cyd", "UTC")):
        moment, shown = shown_time(pushes[name], "meeting now")
        assert shown == moment.astimezone(ZoneInfo(zone)).strftime("%H:%M"), name
    # The same moment for machines; the words in each person's language.
    assert len({TIME.findall(p)[-1][0] for p in pushes.values()}) == 1
    assert ">编辑</button>" in pushes["ann"] and ">回应</button>" in pushes["ann"]
    assert ">Edit</button>" in pushes["bob"] and ">Edit</button>" in pushes["cyd"]
    # New York and UTC: both English, yet two groups, each with its own clock.
    assert shown_time(pushes["bob"], "meeting now")[1] != shown_time(pushes["cyd"], "meeting now")[1]


def connect_as_browser(person, accept_language: str) -> Socket:
    """Open the public room's socket as a browser does: its handshake carries the browser's
    Accept-Language, as every request of the page does."""
    person.http.headers["Accept-Language"] = accept_language
    html = person.get("/").text
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{person.server.port}/ws/1", origin=person.server.url, timeout=10,
        header=[f"Cookie: {person.cookie_header()}", f"Accept-Language: {accept_language}"])
    sock = Socket(person, ws, csrf_from(html))
    person.sockets.append(sock)
    sock.wait_for('hx-target="#messages" hx-swap="innerHTML"')
    return sock


def test_the_browsers_language_reaches_its_socket(server, people):
    ann, bob = people("ann", "bob")
    ann_socket, bob_socket = connect_as_browser(ann, "zh-CN,zh;q=0.9"), bob.connect()
    assert "公共房间" in ann_socket.frames[-1]  # the connect snapshot's sidebar
    bob_socket.say("hello ann")
    assert ">编辑</button>" in ann_socket.wait_for("hello ann")
    assert ">Edit</button>" in bob_socket.wait_for("hello ann")


def test_refusals_reach_the_sender_in_their_language(server, people):
    ann = people("ann")
    choose(server, "ann", "zh_Hans", None)
    sock = ann.connect()
    sock.say("   ")
    assert "请先输入消息。" in sock.wait_for("composer-error")
