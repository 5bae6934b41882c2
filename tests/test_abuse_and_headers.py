"""Page security headers, secure cookies behind a proxy, and abuse limits at their defaults.

Other tests raise the limits out of their way; these run with the values a fresh install
ships with.
"""

from __future__ import annotations

import io
import os
import re
import uuid

import pytest
from PIL import Image

from conftest import PASSWORD, AuthActions, base_env, csrf_from

REGISTER_RATE = 20  # CHATAPP_REGISTER_RATE's default: 20/hour per address
MESSAGE_RATE = 10  # CHATAPP_MESSAGE_RATE's default: 10/5second per user


@pytest.fixture
def make_app(tmp_path, database_url, monkeypatch):
    """Build in-process apps on one migrated database, with the given environment on top
    of the tests' own (a value of None removes a variable: back to its default)."""
    from flask_migrate import upgrade

    from chatapp import create_app
    from chatapp.extensions import db

    made = []

    def make(**env):
        for key in [k for k in os.environ if k.startswith("CHATAPP_") or k == "REDIS_URL"]:
            monkeypatch.delenv(key)
        for key, value in base_env(tmp_path, database_url).items():
            monkeypatch.setenv(key, value)
        for key, value in env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        app = create_app({"TESTING": True})
        with app.app_context():
            upgrade()
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


# -- page headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/login/", "/register/", "/nowhere"])
def test_pages_carry_the_security_headers(client, auth, path):
    """Every page forbids framing, sniffing and leaking its address, under a strict CSP."""
    auth.register("alice")
    if path != "/":
        auth.logout()
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["default-src"] == "'self'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    # Styles: only the stylesheet and the page's own <style> blocks carrying this
    # response's nonce.
    nonce = re.fullmatch(r"'self' 'nonce-([\w-]{16,})'", directives["style-src"]).group(1)
    for used in re.findall(r'<style nonce="([^"]*)"', response.get_data(as_text=True)):
        assert used == nonce


def test_each_page_gets_a_nonce_of_its_own(client, auth):
    """A nonce seen once (say, in a cached page) does not unlock styles on the next."""
    auth.register("alice")
    pages = [client.get("/") for _ in range(2)]
    nonces = [re.search(r"'nonce-([^']+)'", p.headers["Content-Security-Policy"]).group(1)
              for p in pages]
    assert nonces[0] != nonces[1]
    for page, nonce in zip(pages, nonces):
        assert f'<style nonce="{nonce}">' in page.get_data(as_text=True)


# -- cookies and proxies -----------------------------------------------------------------------


def _session_cookies(response) -> list[str]:
    return [c for c in response.headers.getlist("Set-Cookie")
            if c.startswith(("session=", "remember_token="))]


def test_cookies_are_secure_only_when_configured(make_app):
    """CHATAPP_SECURE_COOKIES=1 (served over HTTPS) marks the session and remember-me
    cookies Secure; without it they are not, or plain-HTTP installs could not log in."""
    for flag, secure in ((None, False), ("1", True)):
        client = make_app(CHATAPP_SECURE_COOKIES=flag).test_client()
        auth = AuthActions(client)
        auth.register(f"user{uuid.uuid4().hex[:8]}")
        auth.logout()
        response = auth.login(_last_registered(client), remember="y")
        cookies = _session_cookies(response)
        assert {c.split("=", 1)[0] for c in cookies} == {"session", "remember_token"}
        for cookie in cookies:
            assert ("; Secure" in cookie) is secure, cookie


def _last_registered(client) -> str:
    from chatapp.models import User, db

    with client.application.app_context():
        return db.session.scalars(db.select(User.username).order_by(User.id.desc())).first()


def _post_without_referrer(client, **environ):
    """A form post over what the app takes for HTTPS must come with a same-site Referer
    (CSRF protection's strict mode); the status of one that comes without."""
    token = csrf_from(client.get("/register/", **environ).get_data(as_text=True))
    return client.post("/register/", data={"csrf_token": token, "username": f"u{uuid.uuid4().hex[:10]}",
                                           "password": PASSWORD, "confirm": PASSWORD},
                       **environ).status_code


def test_the_forwarded_scheme_is_believed_only_from_trusted_proxies(make_app):
    """Behind CHATAPP_TRUSTED_PROXIES, X-Forwarded-Proto: https makes the request HTTPS
    (and HTTPS form posts need a Referer); without it, anyone could send the header and it
    is ignored."""
    https = {"headers": {"X-Forwarded-Proto": "https"}}
    untrusting = make_app().test_client()
    assert _post_without_referrer(untrusting, **https) == 302  # plain HTTP: registered
    trusting = make_app(CHATAPP_TRUSTED_PROXIES="1").test_client()
    assert _post_without_referrer(trusting, **https) == 400  # HTTPS: no Referer, refused
    assert _post_without_referrer(trusting) == 302  # the proxy said plain HTTP: as before


# -- abuse limits at their defaults ------------------------------------------------------------


def _register(client, name: str, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    token = csrf_from(client.get("/register/", headers=headers).get_data(as_text=True))
    response = client.post("/register/", headers=headers, data={
        "csrf_token": token, "username": name, "password": PASSWORD, "confirm": PASSWORD})
    client.get("/")  # drop the session: the next registration starts logged out
    client.delete_cookie("session")
    return response


def test_registration_is_limited_per_address_at_the_default(make_app):
    """20 new accounts an hour from one address; the 21st gets a 429 page that says why.
    Behind a trusted proxy the address is the forwarded one; otherwise the header that a
    client could forge to escape the limit is ignored."""
    from chatapp.models import User, db

    app = make_app(CHATAPP_REGISTER_RATE=None)
    client = app.test_client()
    for i in range(REGISTER_RATE):
        assert _register(client, f"user{i:02}", address=f"10.0.0.{i}").status_code == 302
    refused = _register(client, "one_too_many", address="10.0.1.1")
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert 'role="alert"' in page and "Too many new accounts from your address" in page
    with app.app_context():
        assert User.by_username("one_too_many") is None
        assert db.session.query(User).count() == REGISTER_RATE

    proxied = make_app(CHATAPP_REGISTER_RATE=None, CHATAPP_TRUSTED_PROXIES="1").test_client()
    for i in range(REGISTER_RATE):
        assert _register(proxied, f"proxied{i:02}", address="10.9.9.9").status_code == 302
    assert _register(proxied, "proxied_more", address="10.9.9.9").status_code == 429
    assert _register(proxied, "next_door", address="10.9.9.10").status_code == 302


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_images_count_against_the_default_message_rate(make_app):
    """Ten images in five seconds; the eleventh is refused with a clear error and stored
    nowhere."""
    from chatapp.models import Message, db

    app = make_app(CHATAPP_MESSAGE_RATE=None)
    client = app.test_client()
    AuthActions(client).register("alice")
    image = _png()

    def upload():
        html = client.get("/").get_data(as_text=True)
        client_id = re.search(r'class="composer-image".*?name="client_id" value="([^"]+)"',
                              html, re.S).group(1)
        return client.post("/c/1/images", headers={"HX-Request": "true"}, data={
            "csrf_token": csrf_from(html), "client_id": client_id, "body": "",
            "image": (io.BytesIO(image), "red.png", "image/png")})

    statuses = [upload().status_code for _ in range(MESSAGE_RATE)]
    assert statuses == [200] * MESSAGE_RATE
    refused = upload()
    assert refused.status_code == 429
    assert "too fast" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Message).count() == MESSAGE_RATE
