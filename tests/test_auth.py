"""Accounts: registering, logging in and out, and the protections around them."""

import pytest
from sqlalchemy import select

from chatapp.models import User, db
from conftest import PASSWORD, csrf_from


def test_register_logs_in_and_lands_in_public_room(client, auth, app):
    response = auth.register("alice")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert 'aria-label="Conversations"' in page and "Public room" in page
    with app.app_context():
        user = User.by_username("ALICE")
        assert user.username == "alice"
        # The password is stored as an argon2id hash, never as given.
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    ("username", "password", "confirm", "error"),
    [
        ("al", PASSWORD, None, "Use 3 to 32 letters"),
        ("a" * 33, PASSWORD, None, "Use 3 to 32 letters"),
        ("bad name!", PASSWORD, None, "Use 3 to 32 letters"),
        ("", PASSWORD, None, "Choose a username."),
        ("bob", "short", None, "at least 8 characters"),
        ("bob", PASSWORD, "different password", "The two passwords differ"),
    ],
)
def test_register_validation(client, auth, app, username, password, confirm, error):
    response = auth.register(username, password, confirm)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error in page and 'role="alert"' in page
    with app.app_context():
        assert db.session.scalars(select(User)).all() == []


def test_username_taken_ignoring_case(client, auth):
    auth.register("Alice")
    auth.logout()
    response = auth.register("aLiCe")
    assert response.status_code == 400
    assert "That username is taken" in response.get_data(as_text=True)


def test_login_and_logout(client, auth):
    auth.register("alice")
    auth.logout()
    assert client.get("/").status_code == 302  # logged out: sent to log in
    response = auth.login("alice")
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    response = auth.logout()
    assert response.status_code == 302 and response.headers["Location"] == "/login/"
    assert client.get("/").headers["Location"].startswith("/login/")


def test_wrong_password_is_refused_with_an_alert(client, auth):
    auth.register("alice")
    auth.logout()
    response = auth.login("alice", "wrong password")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and "Wrong username or password" in page
    assert client.get("/").status_code == 302


def test_login_is_throttled_per_username_and_address(client, auth):
    auth.register("alice")
    auth.logout()
    for _ in range(10):
        assert auth.login("alice", "wrong password").status_code == 400
    response = auth.login("alice", PASSWORD)  # even the right password waits now
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    # Another username from the same address is not affected.
    auth.register("bob")
    auth.logout()
    assert auth.login("bob").status_code == 302


def test_forged_csrf_token_is_refused(client, auth, app):
    client.get("/register/")
    response = client.post(
        "/register/",
        data={"csrf_token": "forged", "username": "mallory",
              "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    with app.app_context():
        assert User.by_username("mallory") is None


def test_logout_needs_csrf(client, auth):
    auth.register("alice")
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still logged in


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/", "https://evil.example/", "/\\evil.example",
        # Control characters: browsers drop a tab; a line break cannot go in a header.
        "/%09/evil.example/", "/c/1%0d%0aSet-Cookie:%20stolen=1",
    ],
)
def test_next_never_leaves_the_site(client, auth, target):
    auth.register("alice")
    auth.logout()
    token = csrf_from(client.get("/login/").get_data(as_text=True))
    response = client.post(
        f"/login/?next={target}",
        data={"csrf_token": token, "username": "alice", "password": PASSWORD},
    )
    assert response.headers["Location"] == "/"


def test_next_goes_back_to_a_local_page(client, auth):
    auth.register("alice")
    auth.logout()
    token = csrf_from(client.get("/login/").get_data(as_text=True))
    response = client.post(
        "/login/?next=/c/1", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/c/1"


def test_session_cookie_flags_and_keep_me_signed_in(client, auth):
    response = auth.register("alice")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    auth.logout()
    response = auth.login("alice", remember="y")
    cookies = response.headers.getlist("Set-Cookie")
    remember = [c for c in cookies if c.startswith("remember_token=")]
    assert remember and "HttpOnly" in remember[0] and "Expires=" in remember[0]


def test_a_new_session_on_login(client, auth):
    """Logging in starts a fresh session: nothing planted before it (fixation) survives."""
    auth.register("alice")
    auth.logout()
    client.get("/login/")
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    assert auth.login("alice").status_code == 302
    with client.session_transaction() as session:
        assert "_user_id" in session  # logged in ...
        assert "planted" not in session  # ... in a session that starts empty


@pytest.mark.parametrize("path", ["/", "/c/1", "/c/1/messages?before=5", "/people?q=a", "/dm/bob"])
def test_pages_need_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login/")


def test_hashing_a_password_holds_no_database_connection(app, auth, monkeypatch):
    """argon2 takes ~100 ms a login: holding a pooled connection through it, a burst of
    logins drained the pool and the rest failed with 500 (found by bench/'s chat mix)."""
    from chatapp import passwords

    auth.register("alice")
    held = []
    real = passwords._hashing

    def hashing(fn, *args):
        held.append(db.engine.pool.checkedout())
        return real(fn, *args)

    monkeypatch.setattr(passwords, "_hashing", hashing)
    with app.app_context():
        assert User.authenticate("alice", PASSWORD).username == "alice"
        assert User.authenticate("alice", "wrong password") is None
        assert User.authenticate("nobody", PASSWORD) is None
        assert len(held) >= 3 and held == [0] * len(held)


def test_hashing_leaves_the_event_loop_free_under_gevent():
    """Under gevent a hash runs in a thread: the worker's other greenlets (every socket)
    keep running meanwhile instead of stopping for the ~100 ms it takes."""
    import subprocess
    import sys

    from conftest import ROOT

    program = ROOT / "tests" / "programs" / "hash_beside_ticker.py"
    out = subprocess.run([sys.executable, str(program)], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    # Blocking the loop, the ticker could not run once during the hash.
    assert int(out.stdout) >= 3, out.stdout
