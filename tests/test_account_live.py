"""Account changes on a real server: other sessions and their sockets end at once (on every
worker), a new person appears in open sidebars, a deleted image leaves the disk."""

from __future__ import annotations

import io
import re

import pytest
import requests
from PIL import Image as PILImage

from conftest import PASSWORD, Person, csrf_from
from test_security_sessions import (  # the same real-browser helpers as the logout tests
    SHARED_REDIS, close_code, handshake, log_in, redis_prefix, signed_in, still_open,
)
from test_uploads import upload

__all__ = ["redis_prefix"]  # a fixture, used by name below
pytestmark = pytest.mark.databases("sqlite")


def change_password(server, http: requests.Session, new="a fresh secret", current=PASSWORD):
    page = http.get(server.url + "/settings/").text
    return http.post(server.url + "/settings/password", allow_redirects=False, data={
        "csrf_token": csrf_from(page), "current_password": current, "new_password": new,
        "confirm_password": new})


def test_changing_the_password_ends_another_browsers_session_and_socket(server, people):
    alice = people("alice")
    laptop = log_in(server, "alice", remember=True)
    copied = laptop.cookies.get_dict()
    laptop_socket = handshake(server, copied)
    own_socket = handshake(server, alice.http.cookies.get_dict())
    assert not isinstance(laptop_socket, int) and not isinstance(own_socket, int)
    try:
        assert change_password(server, alice.http).status_code == 302
        assert close_code(laptop_socket) == 1008  # the other browser's tab closes now
        assert not signed_in(server, copied)
        assert not signed_in(server, {"remember_token": copied["remember_token"]})
        assert handshake(server, copied) == 403
        # This browser stays signed in, its socket open.
        assert still_open(own_socket)
        assert alice.get("/", allow_redirects=False).status_code == 200
    finally:
        for ws in (laptop_socket, own_socket):
            ws.shutdown()


def test_a_wrong_current_password_ends_nothing(server, people):
    alice = people("alice")
    laptop = log_in(server, "alice")
    tab = handshake(server, laptop.cookies.get_dict())
    try:
        response = change_password(server, alice.http, current="not it at all")
        assert response.status_code == 400 and "not your current password" in response.text
        assert still_open(tab) and signed_in(server, laptop.cookies.get_dict())
    finally:
        tab.shutdown()


def sessions_page(server, http) -> str:
    return http.get(server.url + "/settings/").text


def test_log_out_one_session_and_everywhere_else_close_their_sockets(server, people):
    alice = people("alice")
    phone = requests.Session()
    phone.headers["User-Agent"] = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                                   "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
                                   "Mobile/15E148 Safari/604.1")
    log_in(server, "alice", http=phone)
    tablet = log_in(server, "alice")
    phone_cookies, tablet_cookies = phone.cookies.get_dict(), tablet.cookies.get_dict()
    phone_tab, tablet_tab = handshake(server, phone_cookies), handshake(server, tablet_cookies)
    try:
        page = sessions_page(server, alice.http)
        assert "Mobile Safari 17 on iOS" in page and "127.0.0.1" in page
        action = re.search(r"Mobile Safari 17 on iOS.*?action=\"([^\"]+)\"", page, re.S).group(1)
        response = alice.http.post(server.url + action, data={"csrf_token": csrf_from(page)},
                                   allow_redirects=False)
        assert response.status_code == 302
        assert close_code(phone_tab) == 1008
        assert not signed_in(server, phone_cookies) and handshake(server, phone_cookies) == 403
        assert still_open(tablet_tab, quiet=0.3)

        page = sessions_page(server, alice.http)
        alice.http.post(server.url + "/settings/sessions/logout-others",
                        data={"csrf_token": csrf_from(page)})
        assert close_code(tablet_tab) == 1008
        assert not signed_in(server, tablet_cookies)
        assert alice.get("/", allow_redirects=False).status_code == 200
    finally:
        for ws in (phone_tab, tablet_tab):
            ws.shutdown()


@pytest.mark.databases("postgresql")
def test_a_password_change_closes_sockets_on_another_server(server_factory, redis_prefix):
    env = {"REDIS_URL": SHARED_REDIS, "CHATAPP_REDIS_PREFIX": redis_prefix}
    one = server_factory(**env)
    two = server_factory(migrate=False, **env)
    alice = Person(one, "alice").register()
    elsewhere = log_in(two, "alice")
    tab = handshake(two, elsewhere.cookies.get_dict())
    assert not isinstance(tab, int)
    try:
        assert change_password(one, alice.http).status_code == 302
        assert close_code(tab) == 1008
        assert handshake(two, elsewhere.cookies.get_dict()) == 403
    finally:
        tab.shutdown()


def test_someone_who_registers_appears_in_open_sidebars_live(server, people):
    alice = people("alice")
    sock = alice.connect(1)
    sock.drain(0.3)
    assert "newcomer" not in alice.get("/").text
    people("newcomer")
    pushed = sock.wait_for('href="/dm/newcomer"')
    assert 'id="sidebar"' in pushed


def test_a_display_name_and_avatar_show_beside_the_username_in_pushes(server, people):
    alice, bob = people("alice", "bob")
    page = alice.get("/settings/").text
    picture = io.BytesIO()
    PILImage.new("RGB", (90, 60), (10, 120, 200)).save(picture, "PNG")
    response = alice.http.post(server.url + "/settings/", allow_redirects=False, data={
        "csrf_token": csrf_from(page), "display_name": "Alice 李", "language": "en",
        "time_zone": "UTC"}, files={"avatar": ("a.png", picture.getvalue(), "image/png")})
    assert response.status_code == 302
    sock = bob.connect(1)
    alice.connect(1).say("hello")
    frame = sock.wait_for("hello")
    assert '<span class="author">alice</span> <bdi class="display-name">Alice 李</bdi>' in frame
    src = re.search(r'<img class="avatar avatar-picture" src="([^"]+)"', frame).group(1)
    served = bob.get(src)
    assert served.status_code == 200 and served.headers["Content-Type"] == "image/png"


def test_deleting_an_image_message_removes_its_files_from_disk(server, people, tmp_path):
    alice = people("alice")
    picture = io.BytesIO()
    PILImage.new("RGB", (1600, 900), (200, 10, 10)).save(picture, "PNG")
    sock = alice.connect(1)
    assert upload(alice, 1, picture.getvalue()).status_code == 200
    frame = sock.wait_for('class="image"')
    message_id = int(re.search(r'id="message-(\d+)"', frame).group(1))
    files = sorted(p for p in (tmp_path / "uploads").rglob("*.png"))
    assert len(files) == 2  # the original and its thumbnail
    page = alice.get("/").text
    response = alice.http.post(f"{server.url}/messages/{message_id}/delete",
                               data={"csrf_token": csrf_from(page)})
    assert response.status_code == 200
    sock.wait_for(f'hx-target="#message-{message_id}" hx-swap="delete"')
    assert not any(p.exists() for p in files)
