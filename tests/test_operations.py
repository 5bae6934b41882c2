"""Running chatapp: the health probe, logs an operator's tools can read, retention."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from conftest import PASSWORD, Person, free_port

# Files, processes and HTTP: the engine matters only where a test says so.
pytestmark = pytest.mark.databases("sqlite")


def sqlite_path(server) -> Path:
    return Path(server.env["DATABASE_URL"].removeprefix("sqlite:///"))


# -- health --------------------------------------------------------------------------------


@pytest.mark.databases("sqlite", "postgresql")
def test_up_answers_ok_without_a_session_or_cookie(server):
    response = requests.get(server.url + "/up", timeout=10)
    assert response.status_code == 200
    assert response.text == "ok\n"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    # Only GET and HEAD are the probe; anything else is the app's business (405/404).
    assert requests.head(server.url + "/up", timeout=10).status_code == 200
    assert requests.post(server.url + "/up", timeout=10).status_code in (404, 405)


def test_up_is_503_naming_the_database_when_its_file_is_gone_and_ok_again_after(server):
    # Tests run as root, which chmod cannot stop; instead the file is moved away and a
    # directory takes its place, which no SQLite connection can open. The worker's pooled
    # connections still hold the moved file open: that is the case a probe must catch.
    path = sqlite_path(server)
    moved = path.with_name("moved-away.sqlite3")
    assert requests.get(server.url + "/up", timeout=10).status_code == 200
    path.rename(moved)
    path.mkdir()
    response = requests.get(server.url + "/up", timeout=10)
    assert response.status_code == 503
    assert response.text == "database unreachable\n"
    assert "Set-Cookie" not in response.headers
    assert "health check failed" in server.log() and "database:" in server.log()
    path.rmdir()
    moved.rename(path)
    assert requests.get(server.url + "/up", timeout=10).status_code == 200


def test_up_is_503_when_the_database_file_is_not_a_database(server):
    path = sqlite_path(server)
    saved = path.read_bytes()
    path.write_bytes(b"this is not an SQLite file" * 200)
    try:
        response = requests.get(server.url + "/up", timeout=10)
        assert response.status_code == 503
        assert response.text == "database unreachable\n"
    finally:
        path.write_bytes(saved)


@pytest.mark.redis
def test_up_is_503_naming_redis_when_redis_is_unreachable(server_factory):
    closed = free_port()  # nothing listens there
    server = server_factory(REDIS_URL=f"redis://127.0.0.1:{closed}/0")
    response = requests.get(server.url + "/up", timeout=10)
    assert response.status_code == 503
    assert response.text == "redis unreachable\n"
    assert f"127.0.0.1:{closed}" not in response.text  # hosts stay in the log


def test_health_probes_stay_out_of_the_access_log(server_factory):
    server = server_factory(CHATAPP_ACCESS_LOG="-")
    for _ in range(3):
        requests.get(server.url + "/up", timeout=10)
    requests.get(server.url + "/login/?after-probes", timeout=10)
    server.stop()
    log = server.log()
    assert "GET /login/?after-probes" in log
    assert "GET /up" not in log


# -- logs ----------------------------------------------------------------------------------


def wait_for_log(server, needle: str, timeout: float = 10.0) -> None:
    """Poll the server's log until a line holds needle."""
    import time

    deadline = time.monotonic() + timeout
    while needle not in server.log():
        assert time.monotonic() < deadline, f"no log line with {needle!r}:\n{server.log()[-2000:]}"
        time.sleep(0.05)


def test_json_logs_parse_carry_context_and_never_hold_secrets_or_message_text(server_factory):
    server = server_factory(CHATAPP_LOG_FORMAT="json", CHATAPP_ACCESS_LOG="-")
    body = "zebra quartz 1729 only-in-the-message"
    wrong = "not-the-password-4242"
    alice = Person(server, "alice").register()
    again = Person(server, "alice")
    assert again.login().url == server.url + "/"
    intruder = Person(server, "alice", password=wrong)
    assert intruder.login().url != server.url + "/"
    sock = alice.connect()
    sock.say(body)
    sock.wait_for('hx-target="#composer"')
    sock.close()
    wait_for_log(server, "socket closed")
    page = alice.get("/")
    request_id = page.headers["X-Request-ID"]
    secrets = [body, PASSWORD, wrong] + [c.value for c in (*alice.http.cookies, *again.http.cookies)]
    server.stop()

    text = server.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(entry, dict) for entry in lines)
    for entry in lines:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in the log"

    access = [e for e in lines if e["logger"] == "chatapp.access"]
    assert access, "no access lines"
    for entry in access:
        assert {"request_id", "route", "duration_ms", "status", "method", "path"} <= set(entry), entry
    page_line = next(e for e in access if e["request_id"] == request_id)
    assert page_line["path"] == "/" and page_line["status"] == 200
    assert isinstance(page_line["user_id"], int)
    # Health probes and gunicorn's own lines are JSON too (the access log is on here).
    assert any(e["logger"].startswith("gunicorn") for e in lines)

    opened = next(e for e in lines if e["message"].startswith("socket opened"))
    closed = next(e for e in lines if e["message"].startswith("socket closed"))
    assert opened["user_id"] == page_line["user_id"] and opened["route"] == "/ws/<int:conversation_id>"
    assert closed["close_code"] == 1000 and closed["request_id"] == opened["request_id"]
    assert opened["level"] == closed["level"] == "INFO"


def test_text_logs_are_the_default_and_requests_get_an_id(server):
    response = requests.get(server.url + "/login/", timeout=10)
    assert len(response.headers["X-Request-ID"]) == 32
    other = requests.get(server.url + "/login/", timeout=10).headers["X-Request-ID"]
    assert other != response.headers["X-Request-ID"]
    wait_for_log(server, "GET /login/ 200")
    assert not server.log().lstrip().startswith("{")


# -- retention -----------------------------------------------------------------------------


@pytest.mark.databases("sqlite", "postgresql")
def test_retention_deletes_exactly_the_messages_and_images_past_the_limit(app, runner):
    import uuid
    from datetime import timedelta

    from chatapp.extensions import db
    from chatapp.models import Conversation, Image, Message, User, utcnow

    uploads = Path(app.config["UPLOAD_DIR"])

    def image(name: str) -> Image:
        for suffix in ("", "-thumb"):
            (uploads / f"{name}{suffix}.png").write_bytes(b"an image")
        return Image(path=f"{name}.png", thumb_path=f"{name}-thumb.png", content_type="image/png",
                     width=1, height=1, size_bytes=8, thumb_width=1, thumb_height=1)

    ages = {"ancient": 400, "old": 31, "old-image": 31, "recent": 29, "recent-image": 29, "new": 0}
    with app.app_context():
        alice = User.register("alice", PASSWORD)
        db.session.commit()
        room = Conversation.public_room()
        for body, age in ages.items():
            message, _ = Message.post(room, alice, body, str(uuid.uuid4()),
                                      image=image(body) if "image" in body else None)
            message.created_at = utcnow() - timedelta(days=age)
            db.session.commit()

    def bodies() -> list[str]:
        with app.app_context():
            return list(db.session.scalars(db.select(Message.body).order_by(Message.id)))

    off = runner.invoke(args=["prune"])
    assert off.exit_code == 0 and "Retention is off" in off.output
    assert bodies() == list(ages)

    app.config["RETENTION_DAYS"] = 30
    done = runner.invoke(args=["prune"])
    assert done.exit_code == 0, done.output
    assert "Deleted 3 messages and 1 images older than 30 days" in done.output
    assert bodies() == ["recent", "recent-image", "new"]
    assert sorted(p.name for p in uploads.iterdir()) == ["recent-image-thumb.png", "recent-image.png"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Image.id))) == 1
    again = runner.invoke(args=["prune"])
    assert "Deleted 0 messages and 0 images" in again.output


# -- metrics -------------------------------------------------------------------------------


def scrape(server, **headers) -> dict[tuple[str, tuple], float]:
    """GET /metrics and return {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = requests.get(server.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text[:300]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_are_off_by_default(server):
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 404


def test_metrics_are_refused_from_an_address_not_allowed(server_factory):
    closed_to_us = server_factory(CHATAPP_METRICS="1", CHATAPP_METRICS_ALLOW="10.0.0.0/8")
    response = requests.get(closed_to_us.url + "/metrics", timeout=10)
    assert response.status_code == 403 and "chatapp_" not in response.text
    open_to_us = server_factory(CHATAPP_METRICS="1")
    assert requests.get(open_to_us.url + "/metrics", timeout=10).status_code == 200
    # Through a proxy nobody declared (CHATAPP_TRUSTED_PROXIES): loopback is the proxy's.
    proxied = requests.get(open_to_us.url + "/metrics", timeout=10,
                           headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403


def test_metrics_count_messages_refusals_and_a_1013_close_of_a_slow_client(server_factory):
    import base64
    import socket
    import time

    import websocket

    # A small backlog overflows (1013) long before a 3 s write timeout would drop the
    # socket; the timeout then ends the closing socket, which never reads its close frame.
    server = server_factory(CHATAPP_METRICS="1", CHATAPP_SEND_QUEUE_SIZE="4",
                            CHATAPP_SEND_TIMEOUT="3", CHATAPP_MESSAGE_RATE="100000/minute")
    alice, bob = Person(server, "alice").register(), Person(server, "bob").register()
    Person(server, "bob", password="wrong password here").login()
    stalled = bob.connect(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    sock = alice.connect()
    sock.say("   ")  # nothing to post: refused
    sock.wait_for('id="composer-error"')
    with pytest.raises(websocket.WebSocketBadStatusException):
        alice.connect(origin="https://evil.example")

    closed_1013 = ("chatapp_socket_closes_total", (("code", "1013"),))
    noise = base64.b64encode(os.urandom(2900)).decode()  # incompressible, under 4000 chars
    sent = 0
    deadline = time.monotonic() + 240
    while scrape(server).get(closed_1013, 0) < 1:
        assert time.monotonic() < deadline, "the stalled socket was never closed with 1013"
        # In time more than the stalled socket's kernel buffers hold.
        for i in range(50):
            sock.say(f"{sent + i} {noise}")
        for _ in range(50):
            sock.wait_for('hx-target="#composer"', timeout=30)
        sent += 50
    stalled.close()

    got = scrape(server)
    assert got[("chatapp_messages_posted_total", ())] == sent
    assert got[("chatapp_refusals_total", (("reason", "frame"),))] == 1
    assert got[("chatapp_refusals_total", (("reason", "handshake_forbidden"),))] == 1
    assert got[("chatapp_login_failures_total", ())] == 1
    assert got[closed_1013] == 1
    assert got[("chatapp_socket_connects_total", ())] == 2
    assert got[("chatapp_sockets_open", ())] == 1  # alice's is still open
    assert got[("chatapp_message_post_seconds_count", ())] == sent
    assert got[("chatapp_backplane_lag_seconds_count", ())] == sent
    assert got[("chatapp_message_deliveries_total", ())] >= sent
    assert got[("chatapp_http_request_seconds_count", (("method", "POST"), ("route", "/login/")))] == 1
    assert ("chatapp_db_pool_in_use", ()) in got
    assert "socket closed: code 1013" in server.log()  # the log says who closed, and why


@pytest.mark.redis
def test_metrics_of_every_gunicorn_worker_are_summed(server_factory):
    import time
    import uuid

    server = server_factory(CHATAPP_METRICS="1", CHATAPP_LOG_FORMAT="json", WEB_CONCURRENCY="2",
                            REDIS_URL="redis://127.0.0.1:6379/0",
                            CHATAPP_REDIS_PREFIX=f"test-{uuid.uuid4().hex[:8]}:")

    def login_lines():
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [e for e in lines if e["logger"] == "chatapp.access" and e["path"] == "/login/"]

    deadline = time.monotonic() + 60
    while len({e["pid"] for e in login_lines()}) < 2:  # each worker has served some
        assert time.monotonic() < deadline, "one worker took every request"
        for _ in range(10):
            requests.get(server.url + "/login/", timeout=10, headers={"Connection": "close"})
    served = len(login_lines())
    got = scrape(server)  # from one worker, whichever answers
    assert got[("chatapp_http_request_seconds_count", (("method", "GET"), ("route", "/login/")))] == served


@pytest.mark.databases("sqlite", "postgresql")
def test_a_database_error_in_the_log_does_not_carry_message_text(app):
    import uuid

    from sqlalchemy.exc import IntegrityError

    from chatapp.extensions import db
    from chatapp.models import Conversation, Message, User

    body = "a private sentence 5521"
    with app.app_context():
        alice = User.register("alice", PASSWORD)
        db.session.commit()
        client_id = str(uuid.uuid4())
        Message.post(Conversation.public_room(), alice, "first", client_id)
        duplicate = Message(conversation_id=1, author_id=alice.id, body=body, client_id=client_id)
        db.session.add(duplicate)
        with pytest.raises(IntegrityError) as failure:
            db.session.flush()
        db.session.rollback()
    assert body not in str(failure.value)
