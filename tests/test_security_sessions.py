"""Sessions and logins under attack: logging out ends a session everywhere, guesses are
counted before they are checked, and login fields are bounded."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websocket

from conftest import PASSWORD, Person, base_env, csrf_from, need_service

SHARED_REDIS = os.environ.get("CHATAPP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix():
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"chatapp_test_{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        need_service(f"Redis is not reachable at {SHARED_REDIS}: {exc}")
    yield prefix
    # The limiter's keys carry the prefix inside ("LIMITS:LIMITER/<prefix>limits/...").
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)
    client.close()


def log_in(server, username: str, password: str = PASSWORD, remember: bool = False,
           http: requests.Session | None = None) -> requests.Session:
    """A browser's cookie jar, logged in through the real form."""
    http = http or requests.Session()
    token = csrf_from(http.get(server.url + "/login/").text)
    data = {"csrf_token": token, "username": username, "password": password}
    if remember:
        data["remember"] = "y"
    response = http.post(server.url + "/login/", data=data, allow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return http


def log_out(server, http: requests.Session) -> None:
    """Press "Log out" on the chat page."""
    token = csrf_from(http.get(server.url + "/").text)
    response = http.post(server.url + "/logout", data={"csrf_token": token},
                         allow_redirects=False)
    assert response.status_code == 302


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def signed_in(server, cookies: dict[str, str]) -> bool:
    """Whether the chat page opens with just these cookies (a fresh browser)."""
    response = requests.get(server.url + "/", headers={"Cookie": cookie_header(cookies)},
                            allow_redirects=False)
    return response.status_code == 200


def handshake(server, cookies: dict[str, str], conversation_id: int = 1):
    """Open a socket with these cookies; the socket, or the refusal's HTTP status."""
    try:
        return websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws/{conversation_id}",
            header=[f"Cookie: {cookie_header(cookies)}"], origin=server.url, timeout=10,
        )
    except websocket.WebSocketBadStatusException as refused:
        return refused.status_code


def close_code(ws, timeout: float = 10.0) -> int | None:
    """Read until the server's close frame; its code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            frame = ws.recv_frame()
        except websocket.WebSocketTimeoutException:
            continue
        except websocket.WebSocketConnectionClosedException:
            return None
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
    raise AssertionError("the server did not close the socket")


def still_open(ws, quiet: float = 1.0) -> bool:
    """Whether the socket is still up after `quiet` seconds (frames may come meanwhile)."""
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        ws.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            frame = ws.recv_frame()
        except websocket.WebSocketTimeoutException:
            return True
        except websocket.WebSocketConnectionClosedException:
            return False
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return False
    return True


# -- 1 and 2: logging out ends the session ---------------------------------------------


def test_logging_out_forgets_keep_me_signed_in(server, people):
    people("alice")
    browser = log_in(server, "alice", remember=True)
    assert "remember_token" in browser.cookies
    log_out(server, browser)
    # The shared computer's next user opens the site with the same browser.
    assert "remember_token" not in browser.cookies  # the cookie was deleted
    response = browser.get(server.url + "/", allow_redirects=False)
    assert response.status_code == 302 and "/login/" in response.headers["Location"]


def test_cookies_and_sockets_copied_before_logout_stop_working(server, people):
    alice = people("alice")
    browser = log_in(server, "alice", remember=True)
    copied = browser.cookies.get_dict()
    session_only = {"session": copied["session"]}
    remember_only = {"remember_token": copied["remember_token"]}
    assert signed_in(server, session_only) and signed_in(server, remember_only)
    tab = handshake(server, copied)
    assert not isinstance(tab, int)
    other_device = handshake(server, alice.http.cookies.get_dict())  # alice's registration
    try:
        log_out(server, browser)
        assert close_code(tab) == 1008  # the open tab of that session is closed at once
        assert not signed_in(server, session_only)
        assert not signed_in(server, remember_only)
        assert not signed_in(server, copied)
        assert handshake(server, copied) == 403
        # Alice's other session (another device) is untouched.
        assert still_open(other_device)
        assert alice.get("/", allow_redirects=False).status_code == 200
    finally:
        for ws in (tab, other_device):
            ws.shutdown()


def test_keep_me_signed_in_survives_a_browser_restart(server, people):
    people("alice")
    browser = log_in(server, "alice", remember=True)
    remember = next(c for c in browser.cookies if c.name == "remember_token")
    # It lasts CHATAPP_SESSION_DAYS (30), not Flask-Login's default year.
    days = (remember.expires - time.time()) / 86400
    assert 29 < days <= 30, days
    # The browser restarts: the session cookie is gone, the remember cookie stays.
    restarted = {"remember_token": remember.value}
    assert signed_in(server, restarted)
    ws = handshake(server, restarted)
    assert not isinstance(ws, int)
    ws.shutdown()
    # Without "Keep me signed in", a restart logs out.
    plain = log_in(server, "alice")
    assert "remember_token" not in plain.cookies


def test_an_expired_session_is_refused(client, auth, app):
    from sqlalchemy import update

    from chatapp.models import UserSession, db, utcnow

    auth.register("alice")
    assert client.get("/").status_code == 200
    with app.app_context():
        db.session.execute(update(UserSession).values(expires_at=utcnow()))
        db.session.commit()
    assert client.get("/").status_code == 302


@pytest.mark.databases("postgresql")
def test_logout_and_deactivation_close_sockets_on_another_server(
        server_factory, redis_prefix):
    env = {"REDIS_URL": SHARED_REDIS, "CHATAPP_REDIS_PREFIX": redis_prefix}
    one = server_factory(**env)
    two = server_factory(migrate=False, **env)
    alice = Person(one, "alice").register()
    Person(one, "bob").register()
    cookies = alice.http.cookies.get_dict()
    elsewhere = handshake(two, cookies)  # the same session, on the other server
    assert not isinstance(elsewhere, int)
    log_out(one, alice.http)
    assert close_code(elsewhere) == 1008
    assert handshake(two, cookies) == 403

    # Deactivation still closes every socket of the account, on every server.
    bob = log_in(two, "bob")
    bob_socket = handshake(two, bob.cookies.get_dict())
    assert not isinstance(bob_socket, int)
    import psycopg

    with psycopg.connect(one.env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE users SET is_admin = true WHERE username = 'alice'")
    admin = log_in(one, "alice")
    users = admin.get(one.url + "/admin/users?q=bob").text
    bob_id = int(re.search(r'<tr id="user-(\d+)">\s*<td>bob', users).group(1))
    response = admin.post(f"{one.url}/admin/users/{bob_id}/deactivate",
                          data={"csrf_token": csrf_from(users)}, allow_redirects=False)
    assert response.status_code == 303
    assert close_code(bob_socket) == 1008
    for ws in (elsewhere, bob_socket):
        ws.shutdown()


# -- 4: parallel guesses are counted before they are checked ---------------------------


def burst_of_logins(server, attempts: list[tuple[str, str]]) -> list[int]:
    """Send these (username, password) logins all at once, each from its own browser."""
    browsers = []
    for _ in attempts:
        http = requests.Session()
        browsers.append((http, csrf_from(http.get(server.url + "/login/").text)))
    start = threading.Barrier(len(attempts))

    def attempt(i: int) -> int:
        http, token = browsers[i]
        username, password = attempts[i]
        start.wait()
        response = http.post(server.url + "/login/", allow_redirects=False, data={
            "csrf_token": token, "username": username, "password": password})
        http.close()
        return response.status_code

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(attempt, range(len(attempts))))


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_thirty_simultaneous_guesses_get_ten_checks(server_factory, request, store):
    env = {}
    if store == "redis":
        env = {"REDIS_URL": SHARED_REDIS,
               "CHATAPP_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    server = server_factory(**env)
    Person(server, "alice").register().close()
    statuses = burst_of_logins(server, [("alice", f"guess {i}") for i in range(30)])
    # 400: the password was checked (and wrong); 429: refused unchecked.
    assert sorted(statuses) == [400] * 10 + [429] * 20, statuses


@pytest.mark.databases("sqlite")
def test_simultaneous_guesses_across_names_get_the_address_limit(server_factory):
    server = server_factory(CHATAPP_LOGIN_RATE="1000/5minute",
                            CHATAPP_LOGIN_ADDRESS_RATE="10/5minute")
    statuses = burst_of_logins(server, [(f"name{i}", "guess") for i in range(30)])
    assert sorted(statuses) == [400] * 10 + [429] * 20, statuses


@pytest.mark.databases("sqlite")
def test_a_right_password_below_the_limit_logs_in_and_is_not_counted(server_factory):
    server = server_factory(CHATAPP_LOGIN_RATE="3/5minute")
    Person(server, "alice").register().close()
    for _ in range(2):
        assert burst_of_logins(server, [("alice", "wrong")]) == [400]
    for _ in range(3):  # right passwords give their place back
        log_out(server, log_in(server, "alice"))
    assert burst_of_logins(server, [("alice", "wrong")]) == [400]  # the third failure
    assert burst_of_logins(server, [("alice", PASSWORD)]) == [429]


# -- 8: bounded login fields, one log line per failure ---------------------------------


@pytest.mark.databases("sqlite")
def test_huge_login_fields_are_refused_unread_and_not_echoed(server_factory):
    server = server_factory(CHATAPP_LOGIN_RATE="3/5minute")
    Person(server, "alice").register().close()
    http = requests.Session()
    token = csrf_from(http.get(server.url + "/login/").text)
    name = "a" * 100_000
    response = http.post(server.url + "/login/", data={
        "csrf_token": token, "username": name, "password": "x"})
    assert response.status_code == 400
    assert "Usernames are at most 32 characters" in response.text
    assert "a" * 65 not in response.text and len(response.text) < 20_000
    for _ in range(5):  # refused before any work: no verification, nothing counted
        response = http.post(server.url + "/login/", data={
            "csrf_token": token, "username": "alice", "password": "p" * 257})
        assert response.status_code == 400
        assert "Passwords are at most 256 characters" in response.text
    assert burst_of_logins(server, [("alice", "p" * 256)]) == [400]  # 256 is still checked
    assert "Traceback" not in server.log()


@pytest.mark.databases("sqlite")
def test_a_wrong_password_logs_one_line_not_a_traceback(server):
    Person(server, "alice").register().close()
    assert burst_of_logins(server, [("alice", "wrong"), ("nobody", "wrong")]) == [400, 400]
    assert log_in(server, "alice")  # the pool still answers
    log = server.log()
    assert "Traceback" not in log and "VerifyMismatchError" not in log, log[-3000:]


# -- the socket cap under a concurrent burst -------------------------------------------


@pytest.mark.databases("postgresql")
def test_a_burst_of_handshakes_gets_exactly_the_socket_cap(server_factory):
    server = server_factory(CHATAPP_MAX_SOCKETS_PER_USER="5")
    alice = Person(server, "alice").register()
    cookies = alice.http.cookies.get_dict()
    start = threading.Barrier(20)

    def connect(_):
        start.wait()
        return handshake(server, cookies)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(connect, range(20)))
    sockets = [r for r in results if not isinstance(r, int)]
    try:
        refusals = [r for r in results if isinstance(r, int)]
        assert len(sockets) == 5 and refusals == [429] * 15, refusals
    finally:
        for ws in sockets:
            ws.close()
            ws.shutdown()
    # Closed sockets give their places back.
    deadline = time.monotonic() + 10
    while isinstance(ws := handshake(server, cookies), int):
        assert ws == 429 and time.monotonic() < deadline
        time.sleep(0.1)
    ws.shutdown()


# -- HSTS behind a TLS proxy -----------------------------------------------------------


@pytest.mark.databases("sqlite")
@pytest.mark.parametrize(
    "proxies, secure, headers, base_url, hsts",
    [
        ("1", "1", {"X-Forwarded-Proto": "https"}, "http://chat.example.org", True),
        ("1", "1", {}, "http://chat.example.org", False),
        ("0", "1", {"X-Forwarded-Proto": "https"}, "http://chat.example.org", False),
        ("0", "1", {}, "https://chat.example.org", True),
        ("1", "0", {"X-Forwarded-Proto": "https"}, "http://chat.example.org", False),
    ],
)
def test_hsts_only_on_https_with_secure_cookies(tmp_path, database_url, monkeypatch,
                                               proxies, secure, headers, base_url, hsts):
    env = base_env(tmp_path, database_url, CHATAPP_TRUSTED_PROXIES=proxies,
                   CHATAPP_SECURE_COOKIES=secure)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from chatapp import create_app

    app = create_app({"TESTING": True})
    response = app.test_client().get("/login/", headers=headers, base_url=base_url)
    assert response.status_code == 200
    header = response.headers.get("Strict-Transport-Security")
    assert (header == "max-age=31536000") if hsts else header is None, header


def test_a_socket_attaching_just_after_its_logout_is_closed():
    from chatapp.realtime.hub import Hub

    class Tab:
        """A socket whose handshake passed its check just before the logout."""

        def __init__(self, key):
            self.user_id, self.conversation_id, self.session_key = 7, 1, key
            self.audience = "en UTC"  # the language and time zone its pushes render in
            self.closed = None

        def close(self, code, reason):
            self.closed = code

    # No message reaches this hub: its collaborators are never called.
    hub = Hub(on_read=None, render_sidebars=None, recount_unread=None)
    hub.deliver({"type": "session_ended", "user_id": 7, "session_key": "ended"})
    late, other = Tab("ended"), Tab("other")
    for tab in (late, other):
        hub.attach(tab, lambda: ({}, 0))
    assert late.closed == 1008 and other.closed is None
