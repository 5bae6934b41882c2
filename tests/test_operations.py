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
