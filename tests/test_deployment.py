"""Running behind a TLS reverse proxy: which client addresses the app believes."""

import pytest

from conftest import PASSWORD, csrf_from


@pytest.fixture(params=[0, 1], ids=["direct", "behind-proxy"])
def proxies(request, monkeypatch):
    """CHATAPP_TRUSTED_PROXIES for the app, with a tight failed-login limit."""
    monkeypatch.setenv("CHATAPP_TRUSTED_PROXIES", str(request.param))
    monkeypatch.setenv("CHATAPP_LOGIN_RATE", "3/minute")
    return request.param


def failed_login(client, address: str) -> int:
    token = csrf_from(client.get("/login/").get_data(as_text=True))
    return client.post(
        "/login/",
        data={"csrf_token": token, "username": "alice", "password": "not it"},
        headers={"X-Forwarded-For": address},
    ).status_code


def test_login_throttle_counts_the_client_behind_a_trusted_proxy_only(proxies, client, auth):
    auth.register("alice", PASSWORD)
    auth.logout()
    for _ in range(3):
        assert failed_login(client, "203.0.113.7") == 400
    assert failed_login(client, "203.0.113.7") == 429
    # Another client behind the same proxy has its own count; but with no trusted
    # proxy the header is the client's own claim, and forging it escapes nothing.
    assert failed_login(client, "198.51.100.20") == (400 if proxies else 429)
