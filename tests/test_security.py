"""Hostile input: what an attacker can type, send or put in a URL changes nothing."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
import websocket
from PIL import Image as PILImage
from sqlalchemy import select

from chatapp.models import User, db
from conftest import PASSWORD, csrf_from
from test_realtime import rows

HUGE = "9" * 25  # far past what a 64-bit database integer holds


@pytest.mark.parametrize(
    "username",
    [
        "alice\n",  # Python's $ also matches before a final newline
        "ali\u202ece",  # right-to-left override
        "\u0430lice",  # Cyrillic a, looks like "alice"
        "alice\x00",
    ],
)
def test_usernames_with_look_alike_or_invisible_characters_are_refused(
    client, auth, app, username
):
    auth.register("alice")
    auth.logout()
    response = auth.register(username)
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    with app.app_context():
        assert [u.username for u in db.session.scalars(select(User))] == ["alice"]


@pytest.mark.databases("sqlite")
def test_logging_in_as_nobody_takes_as_long_as_a_wrong_password(client, auth):
    auth.register("alice")
    auth.logout()

    def timed(username: str) -> float:
        start = time.perf_counter()
        assert auth.login(username, "wrong password").status_code == 400
        return time.perf_counter() - start

    timed("nobody-warmup")
    known = min(timed("alice") for _ in range(3))
    unknown = min(timed(f"nobody{i}") for i in range(3))
    # An argon2 verification is tens of milliseconds; a bare lookup is a fraction of one.
    assert unknown > 0.5 * known, (unknown, known)


@pytest.mark.databases("sqlite")
def test_over_long_login_names_cannot_dodge_the_throttle(client, auth):
    # Names are at most 32 characters; longer ones are one throttle key per prefix, so
    # megabyte-long names neither fill the counter store nor escape the limit.
    for i in range(10):
        assert auth.login("x" * 40 + str(i), "wrong password").status_code == 400
    assert auth.login("x" * 40 + "last", "wrong password").status_code == 429


@pytest.mark.databases("sqlite")
def test_failed_logins_are_throttled_per_address_across_usernames(client, auth, app):
    app.config["LOGIN_ADDRESS_RATE"] = "5/5minute"
    auth.register("alice")
    auth.logout()
    for i in range(5):
        assert auth.login(f"someone{i}", "wrong password").status_code == 400
    response = auth.login("alice", PASSWORD)  # a sixth name from the same address waits
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    # Another address is not affected.
    other = app.test_client()
    token = csrf_from(other.get("/login/").get_data(as_text=True))
    response = other.post(
        "/login/", data={"csrf_token": token, "username": "alice", "password": PASSWORD},
        environ_overrides={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert response.status_code == 302


def test_huge_ids_in_urls_are_absent_not_errors(client, auth, app):
    auth.register("alice")
    with app.app_context():
        User.by_username("alice").promote()
        db.session.commit()
    assert client.get(f"/c/{HUGE}").status_code == 404
    assert client.get(f"/images/{HUGE}").status_code == 404
    assert client.get(f"/images/{HUGE}/thumb").status_code == 404
    assert client.get(f"/admin/conversations/{HUGE}").status_code == 404
    response = client.get(f"/c/1/messages?before={HUGE}")
    assert response.status_code == 400 and "before=" in response.get_data(as_text=True)
    assert client.get("/c/1/messages?before=-3").status_code == 400
    assert client.get(f"/admin/?before={HUGE}").status_code == 200
    assert client.get(f"/admin/conversations/1?before={HUGE}").status_code == 200
    assert client.get(f"/admin/users?page={HUGE}").status_code == 200
    assert client.get(f"/admin/audit?page={HUGE}").status_code == 200


def test_nul_characters_in_names_and_searches_change_nothing(client, auth, app):
    # PostgreSQL refuses NUL in text: each of these was a server error there.
    auth.register("alice")
    response = client.get("/people?q=al%00ice")
    assert response.status_code == 200
    assert client.get("/dm/bo%00b").status_code == 404
    with app.app_context():
        User.by_username("alice").promote()
        db.session.commit()
    assert client.get("/admin/users?q=al%00").status_code == 200
    assert client.get("/admin/?q=hi%00there").status_code == 200
    auth.logout()
    response = auth.login("al\x00ice", PASSWORD)
    assert response.status_code == 400
    assert "Wrong username or password" in response.get_data(as_text=True)


def tiny_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (20, 20), (40, 90, 200)).save(out, "PNG")
    return out.getvalue()


def test_hostile_frames_get_an_error_and_the_socket_stays(people, server, database_url):
    alice = people("alice")
    sock = alice.connect(1)
    refusals = [
        ("[" * 30000, "could not be read"),  # nesting past Python's recursion limit
        ({"body": "hi", "client_id": str(uuid.uuid4()), "csrf_token": 5},
         "Your session has changed"),
        ({"body": "hi", "client_id": str(uuid.uuid4()), "csrf_token": [sock.csrf_token]},
         "Your session has changed"),
        ({"body": "hi", "client_id": 10**400, "csrf_token": sock.csrf_token},
         "could not be read"),
        ({"body": "a\x00b", "client_id": str(uuid.uuid4()), "csrf_token": sock.csrf_token},
         "cannot contain NUL characters"),
    ]
    for frame, words in refusals:
        sock.send_json(frame if isinstance(frame, str) else json.dumps(frame))
        error = sock.wait_for('id="composer-error"')
        assert words in error, error
    sock.say("still here")
    sock.wait_for("still here")
    # The image form refuses a NUL caption the same way, before storing anything.
    html = alice.get("/").text
    response = alice.http.post(
        f"{server.url}/c/1/images",
        data={"csrf_token": csrf_from(html), "client_id": str(uuid.uuid4()), "body": "x\x00"},
        files={"image": ("x.png", tiny_png(), "image/png")},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 400 and "NUL characters" in response.text
    assert rows(database_url, "SELECT body FROM messages") == [("still here",)]
    # A socket URL with an id no database holds is simply absent.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws/{HUGE}",
            header=[f"Cookie: {alice.cookie_header()}"], origin=server.url, timeout=10,
        )
    assert refused.value.status_code == 404


def test_two_people_registering_one_name_at_once_get_a_clear_answer(
    client, auth, app, monkeypatch
):
    from chatapp.auth import RegisterForm

    auth.register("alice")
    auth.logout()
    # The other request's check ran before "alice" was stored: only the database knows.
    monkeypatch.setattr(RegisterForm, "validate_username", lambda form, field: None)
    response = auth.register("ALICE")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "That username is taken" in page and 'role="alert"' in page
    with app.app_context():
        assert [u.username for u in db.session.scalars(select(User))] == ["alice"]
