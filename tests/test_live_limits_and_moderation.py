"""Over real servers: the message limit with Redis down, deleting an image message, and
the send timeout that drops a reader who stopped reading."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from conftest import MESSAGE_ID, ROOT, Person, csrf_from, frames_to_fill, free_port, open_private_chat
from test_uploads import image_urls, picture, upload

ACK = 'hx-target="#composer"'
REFUSED = "You are sending messages too fast"
MESSAGE_RATE = 10  # CHATAPP_MESSAGE_RATE's default: 10/5second per user


@pytest.mark.databases("sqlite")
def test_the_message_limit_holds_in_process_while_redis_is_down(server_factory):
    """With the shared counter store unreachable, each process counts for itself: people
    can still talk, and the default limit still stops a flood."""
    nobody_listens = f"redis://127.0.0.1:{free_port()}/0"
    server = server_factory(REDIS_URL=nobody_listens)  # and the default message rate
    alice = Person(server, "alice").register()
    sock = alice.connect()
    for i in range(MESSAGE_RATE + 1):  # back to back: well inside one 5 s window
        sock.say(f"flood {i}")
    answers = []
    while len(answers) < MESSAGE_RATE + 1:
        frame = sock.wait_for(lambda f: ACK in f or REFUSED in f, timeout=10)
        answers.append("refused" if REFUSED in frame else "ack")
    assert answers == ["ack"] * MESSAGE_RATE + ["refused"]


@pytest.mark.databases("sqlite", "postgresql")
def test_deleting_an_image_message_takes_its_image_away(server_factory):
    """Once a moderator deletes an image message, its picture and thumbnail are gone for
    the chat's members too (404), not only its line in the chat."""
    server = server_factory()
    alice, bob, mod = (Person(server, n).register() for n in ("alice", "bob", "mod"))
    promoted = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", "create-admin", "mod"],
        cwd=ROOT, env=server.env, capture_output=True, text=True,
    )
    assert promoted.returncode == 0, promoted.stderr
    chat = open_private_chat(server, "alice", "bob")
    b = bob.connect(chat)
    assert upload(alice, chat, picture("PNG", size=(300, 200)), caption="delete me").status_code == 200
    frame = b.wait_for("delete me")
    message_id = int(MESSAGE_ID.search(frame).group(1))
    urls = image_urls(frame)
    for url in urls:
        assert bob.get(url).status_code == 200 and alice.get(url).status_code == 200

    token = csrf_from(mod.get("/admin/").text)
    response = mod.http.post(f"{server.url}/admin/messages/{message_id}/delete",
                             data={"csrf_token": token}, allow_redirects=False)
    assert response.status_code == 303
    b.wait_for(f'hx-target="#message-{message_id}"')
    for url in urls:
        for member in (alice, bob):
            assert member.get(url).status_code == 404, (member.username, url)


@pytest.mark.databases("sqlite")
def test_a_reader_who_stops_reading_is_dropped_after_the_send_timeout(server_factory):
    """A socket whose peer takes nothing for CHATAPP_SEND_TIMEOUT seconds is cut (its
    queue is large enough never to overflow); everybody else gets every message."""
    queue = 100_000
    server = server_factory(CHATAPP_SEND_TIMEOUT="2", CHATAPP_SEND_QUEUE_SIZE=str(queue),
                            CHATAPP_MESSAGE_RATE="100000/second")
    sender, reader, sleeper = (Person(server, n).register() for n in ("sender", "reader", "sleeper"))
    out, listener = sender.connect(), reader.connect()
    stuck = sleeper.connect(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    body = "z" * 3900
    # Enough to fill the stuck line's buffers (the writer then waits on it); then wait
    # past the send timeout, writing a little now and then.
    limit = frames_to_fill(stuck.ws.sock, len(body), 0)
    deadline = None
    for i in range(limit + 1000):
        out.say(f"{i} {body}")
        out.wait_for(ACK)
        listener.wait_for(f"{i} z")
        if "peer is not reading" in server.log():
            break
        if i >= limit:
            deadline = deadline or time.monotonic() + 15
            assert time.monotonic() < deadline, "the stalled socket was never dropped"
            time.sleep(0.1)  # waiting for the send timeout itself, not an acknowledgement
    else:
        raise AssertionError("the stalled socket was never dropped")
    assert "overflowed its queue" not in server.log()
    # Cut, not closed politely: what was buffered, then the end of the connection.
    assert stuck.close_code(timeout=30) is None
    out.say("after the drop")
    listener.wait_for("after the drop")
