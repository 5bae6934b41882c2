"""Bots over HTTP against a live gevent server: curl-equivalent posts of each kind, seen
live by people; webhooks for mentions and DMs answered on loopback; a hanging webhook
that does not delay the room; SSRF refusal without the allow flag (both databases)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import requests
from PIL import Image as PILImage

from conftest import Person, open_private_chat

FAST = {"CHATAPP_MESSAGE_RATE": "1000/second", "CHATAPP_API_RATE": "1000/minute"}
LOCAL_BOTS = {**FAST, "CHATAPP_WEBHOOK_ALLOW_PRIVATE": "1", "CHATAPP_WEBHOOK_TIMEOUT": "2",
              "CHATAPP_WEBHOOK_RETRIES": "1", "CHATAPP_WEBHOOK_BACKOFF": "0.2"}


def create_bot(server, name: str, webhook: str = "") -> str:
    """A bot in the server's database (as `flask create-bot` makes it); returns its key."""
    env = {k: v for k, v in server.env.items() if k != "REDIS_URL"}
    with mock.patch.dict(os.environ, env, clear=True):
        from chatapp import create_app

        app = create_app()
    from chatapp import bots
    from chatapp.extensions import db

    with app.app_context():
        try:
            _, key = bots.create(name, webhook)
            db.session.commit()
            return key
        finally:
            db.session.remove()
            db.engine.dispose()


def api(server, key: str, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{server.url}/api/v1{path}", headers=headers, timeout=10,
                            **kwargs)


def png(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


class Receiver:
    """A bot's webhook on loopback: records what it is sent, answers as told."""

    def __init__(self):
        self.calls: list[dict] = []
        self.answers: dict[str, tuple[int, str, bytes]] = {}
        self.hang = threading.Event()  # set: /hang answers only when released
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                payload = json.loads(body)
                receiver.calls.append({"path": self.path, "payload": payload,
                                       "at": time.monotonic(), "body": body,
                                       "headers": dict(self.headers)})
                if self.path == "/hang":
                    receiver.hang.wait(30)
                status, kind, body = receiver.answers.get(
                    self.path, (200, "text/plain; charset=utf-8",
                                f"pong {payload['message']['body']}".encode()))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= count, f"webhook got {len(self.calls)} calls, not {count}"
        return self.calls

    def close(self):
        self.hang.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_posts_of_each_kind_are_pushed_live_with_the_bot_mark(server_factory, database_url):
    server = server_factory(**FAST)
    ann = Person(server, "ann").register()
    key = create_bot(server, "deploybot")
    sock = ann.connect(1)

    # curl --data-binary "deploy done" (curl's default type: form-urlencoded, read as text)
    r = api(server, key, "POST", "/conversations/1/messages", data="deploy done & dusted",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["body"] == "deploy done & dusted" and first["author"]["name"] == "deploybot"
    assert first["url"] == f"{server.url}/c/1/@{first['id']}"
    assert first["created_at"].endswith("Z")
    frame = sock.wait_for("deploy done")
    assert "deploybot" in frame and '<span class="tag">bot</span>' in frame

    r = api(server, key, "POST", "/conversations/1/messages", data="plain text".encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 201 and r.json()["body"] == "plain text"
    r = api(server, key, "POST", "/conversations/1/messages", json={"body": "from **json**"})
    assert r.status_code == 201 and r.json()["body"] == "from **json**"
    sock.wait_for("<strong>json</strong>")

    r = api(server, key, "POST", "/conversations/1/messages",
            files={"image": ("graph.png", png(), "image/png")}, data={"body": "the graph"})
    assert r.status_code == 201, r.text
    assert r.json()["image"]["width"] == 40 and r.json()["body"] == "the graph"
    frame = sock.wait_for("the graph")
    assert 'alt="Image from deploybot"' in frame

    # A text file is not an image: refused, nothing posted.
    r = api(server, key, "POST", "/conversations/1/messages",
            files={"image": ("notes.txt", b"not an image at all", "text/plain")})
    assert r.status_code == 422 and "error" in r.json()
    # The person sees the four posts, and reads them back through the API in order.
    listed = api(server, key, "GET", "/conversations/1/messages").json()["messages"]
    assert [m["body"] for m in listed] == ["deploy done & dusted", "plain text",
                                           "from **json**", "the graph"]
    assert not sock.drain(0.3) or all("not an image" not in f for f in sock.frames)


def test_mentions_and_direct_messages_reach_the_webhook_and_its_reply_is_posted(
        server_factory, database_url):
    receiver = Receiver()
    try:
        server = server_factory(**LOCAL_BOTS)
        ann, ben = Person(server, "ann").register(), Person(server, "ben").register()
        echo = create_bot(server, "echo", receiver.url + "/hook?token=abc")
        room = ann.connect(1)
        watcher = ben.connect(1)

        room.say("hello @echo how are you")
        calls = receiver.wait(1)
        call = calls[0]
        assert call["path"] == "/hook?token=abc"
        assert call["payload"]["event"] == "mention"
        assert call["payload"]["bot"]["name"] == "echo"
        assert call["payload"]["message"]["body"] == "hello @echo how are you"
        assert call["payload"]["message"]["author"]["name"] == "ann"
        assert call["payload"]["message"]["url"].startswith(f"{server.url}/c/1/@")
        # Signed as docs/api.md tells a receiver to check: HMAC-SHA256 of
        # "<timestamp>.<body>", keyed by the hex SHA-256 of the bot's own key.
        stamp = call["headers"]["X-Chatapp-Timestamp"]
        assert abs(int(stamp) - time.time()) < 60
        signing_key = hashlib.sha256(echo.encode()).hexdigest().encode()
        expected = hmac.new(signing_key, stamp.encode() + b"." + call["body"], hashlib.sha256)
        assert call["headers"]["X-Chatapp-Signature"] == "sha256=" + expected.hexdigest()
        forged = hmac.new(hashlib.sha256(b"another key").hexdigest().encode(),
                          stamp.encode() + b"." + call["body"], hashlib.sha256)
        assert call["headers"]["X-Chatapp-Signature"] != "sha256=" + forged.hexdigest()
        # The reply is posted as the bot, live, for everyone in the room.
        frame = watcher.wait_for("pong hello")
        assert "echo" in frame and '<span class="tag">bot</span>' in frame

        # A message that names nobody calls no webhook.
        room.say("nothing for bots here")
        watcher.wait_for("nothing for bots")
        time.sleep(0.5)
        assert len(receiver.calls) == 1

        # A direct message to the bot.
        dm = open_private_chat(server, "ann", "echo")
        chat = ann.connect(dm)
        chat.say("status please")
        calls = receiver.wait(2)
        assert calls[1]["payload"]["event"] == "direct_message"
        assert calls[1]["payload"]["conversation"]["id"] == dm
        chat.wait_for("pong status please")
        # The bot's own reply called no webhook (bots do not answer themselves).
        time.sleep(0.5)
        assert len(receiver.calls) == 2

        # Answers that are not plain text, or too large, are never posted.
        receiver.answers["/hook?token=abc"] = (200, "text/html", b"<h1>pong</h1>")
        chat.say("html please")
        receiver.wait(3)
        receiver.answers["/hook?token=abc"] = (200, "text/plain", b"x" * (10 * 1024 * 1024))
        chat.say("huge please")
        receiver.wait(4)
        time.sleep(1)
        said = api(server, echo, "GET", f"/conversations/{dm}/messages").json()["messages"]
        assert [m["body"] for m in said if m["author"]["name"] == "echo"] == [
            "pong status please"]  # one reply per answered message, none for HTML or 10 MB
        key = create_bot(server, "reader")
        assert api(server, key, "GET", f"/conversations/{dm}/messages").status_code == 404
    finally:
        receiver.close()


def test_a_hanging_webhook_does_not_delay_the_room(server_factory, database_url):
    receiver = Receiver()
    try:
        server = server_factory(**{**LOCAL_BOTS, "CHATAPP_WEBHOOK_TIMEOUT": "20",
                                   "CHATAPP_WEBHOOK_RETRIES": "0"})
        ann, ben = Person(server, "ann").register(), Person(server, "ben").register()
        create_bot(server, "sleepy", receiver.url + "/hang")
        sender, watcher = ann.connect(1), ben.connect(1)
        sender.say("wake up @sleepy")
        watcher.wait_for("wake up")
        receiver.wait(1)  # the webhook is now holding its request open
        delays = []
        for n in range(5):
            start = time.monotonic()
            sender.say(f"still flowing {n}")
            watcher.wait_for(f"still flowing {n}")
            delays.append(time.monotonic() - start)
        print(f"room delivery while a webhook hangs: max {max(delays) * 1000:.0f} ms")
        assert max(delays) < 1.0, delays
        # ... and the sender's socket, which posted the mention, was never held either.
        sender.wait_for("still flowing 4")
    finally:
        receiver.close()


def test_loopback_webhooks_are_refused_without_the_allow_flag(server_factory, database_url):
    receiver = Receiver()
    try:
        server = server_factory(**FAST)  # no CHATAPP_WEBHOOK_ALLOW_PRIVATE
        ann = Person(server, "ann").register()
        create_bot(server, "local", receiver.url + "/hook")
        dm = open_private_chat(server, "ann", "local")
        chat = ann.connect(dm)
        chat.say("are you there")
        chat.wait_for("are you there")
        time.sleep(1.5)
        assert receiver.calls == []
        assert "refused" in server.log() and "non-public address" in server.log()
    finally:
        receiver.close()


def test_a_bot_added_to_a_room_like_a_person_hears_its_mentions_there(server_factory,
                                                                      database_url):
    from conftest import csrf_from

    receiver = Receiver()
    try:
        server = server_factory(**LOCAL_BOTS)
        ann = Person(server, "ann").register()
        key = create_bot(server, "helper", receiver.url + "/hook")
        outsider = create_bot(server, "outsider")
        token = csrf_from(ann.get("/rooms/new").text)
        r = ann.http.post(server.url + "/rooms/new", data={
            "csrf_token": token, "name": "ops", "members_only": "1", "people": ["helper"]})
        assert r.status_code == 200, r.text[:300]
        room = int(r.url.rstrip("/").rsplit("/", 1)[-1])
        listed = api(server, key, "GET", "/conversations").json()["conversations"]
        assert {"id": room, "kind": "room", "title": "ops"}.items() <= next(
            c for c in listed if c["id"] == room).items()
        assert api(server, outsider, "GET", f"/conversations/{room}/messages").status_code == 404
        assert api(server, outsider, "POST", f"/conversations/{room}/messages",
                   data="let me in").status_code == 404
        history = api(server, key, "GET", f"/conversations/{room}/messages").json()["messages"]
        assert history and all(m["system"] for m in history)  # "ann created this room", ...
        assert not receiver.calls  # being added is not a mention

        sock = ann.connect(room)
        sock.say("@helper deploy status?")
        call = receiver.wait(1)[0]["payload"]
        assert call["event"] == "mention" and call["conversation"] == {"id": room, "title": "ops"}
        reply = sock.wait_for(lambda f: "pong" in f and "deploy status?" in f)
        assert '<span class="author">helper</span> <span class="tag">bot</span>' in reply
        r = api(server, key, "POST", f"/conversations/{room}/messages", json={"body": "all green"})
        assert r.status_code == 201 and r.json()["url"] == f"{server.url}/c/{room}/@{r.json()['id']}"
        sock.wait_for("all green")
        page = ann.get(f"/c/{room}/@{r.json()['id']}")
        assert page.status_code == 200 and "all green" in page.text
    finally:
        receiver.close()
