"""Settings: display name, avatar, language, time zone, password and sessions (in process)."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image as PILImage

from conftest import PASSWORD, csrf_from

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"


def user(app, name="alice"):
    from chatapp.models import User, db

    with app.app_context():
        found = User.by_username(name)
        db.session.expunge_all()
        return found


def settings_token(client) -> str:
    return csrf_from(client.get("/settings/").get_data(as_text=True))


def save(client, **fields):
    data = {"csrf_token": settings_token(client), "display_name": "", "language": "en",
            "time_zone": "UTC"}
    data.update(fields)
    return client.post("/settings/", data=data, content_type="multipart/form-data")


def png(size=(600, 300), exif=True) -> bytes:
    image = PILImage.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    if exif:
        data = PILImage.Exif()
        data[0x010F] = "SecretCamera"  # Make
        data[0x0131] = "GPS-ish secret"  # Software
        image.save(out, "JPEG", exif=data)
    else:
        image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def alice(client, auth):
    auth.register("alice")
    return client


def test_settings_page_has_every_labelled_control(alice):
    page = alice.get("/settings/").get_data(as_text=True)
    for label in ("Display name", "Avatar", "Language", "Time zone", "Current password",
                  "New password", "Confirm new password"):
        assert re.search(rf"<label[^>]*>{label}</label>", page), label
    assert ">Save</button>" in page and "中文 (简体)" in page
    assert '<optgroup label="Asia">' in page and 'value="Asia/Shanghai"' in page
    assert 'value="UTC" selected' in page  # the default until chosen
    # The chat header links here, next to Log out.
    chat = alice.get("/").get_data(as_text=True)
    assert 'href="/settings/"' in chat and ">Settings</span></a>" in chat


def test_settings_need_a_login(client):
    response = client.get("/settings/")
    assert response.status_code == 302 and "/login/" in response.headers["Location"]


def test_saving_stores_name_language_and_time_zone_and_shows_the_name(app, alice):
    response = save(alice, display_name="  Alice Liddell ", language="zh_Hans",
                    time_zone="Asia/Shanghai")
    assert response.status_code == 302
    stored = user(app)
    assert (stored.display_name, stored.language, stored.time_zone) == (
        "Alice Liddell", "zh_Hans", "Asia/Shanghai")
    chat = alice.get("/").get_data(as_text=True)
    assert '<bdi class="display-name">Alice Liddell</bdi>' in chat  # sidebar, beside the name
    # The username stays the handle.
    assert stored.username == "alice"


@pytest.mark.parametrize(("fields", "error"), [
    ({"display_name": "   "}, "at least one visible character"),
    ({"display_name": "\u200b\u200b"}, "invisible or text-direction"),
    ({"display_name": "ann\u200bie"}, "invisible or text-direction"),
    ({"display_name": "evil\u202egnp.exe"}, "invisible or text-direction"),
    ({"display_name": "\u2067rtl\u2069"}, "invisible or text-direction"),
    ({"display_name": "x" * 51}, "at most 50 characters"),
    ({"language": "fr"}, "Choose English or 中文 (简体)"),
    ({"language": ""}, "Choose English or 中文 (简体)"),
    ({"time_zone": "Mars/Olympus_Mons"}, "Choose a time zone from the list"),
    ({"time_zone": ""}, "Choose a time zone from the list"),
])
def test_bad_settings_are_refused_and_change_nothing(app, alice, fields, error):
    assert save(alice, display_name="Kept", time_zone="Europe/Paris").status_code == 302
    before = user(app)
    response = save(alice, **{"display_name": "New", "language": "zh_Hans",
                              "time_zone": "Asia/Tokyo", **fields})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and error in page
    after = user(app)
    assert (after.display_name, after.language, after.time_zone) == (
        before.display_name, before.language, before.time_zone) == ("Kept", "en", "Europe/Paris")


def test_errors_speak_the_chosen_language(app, alice):
    assert save(alice, language="zh_Hans").status_code == 302
    response = save(alice, language="zh_Hans", display_name="   ")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "显示名称" in page and "at least one visible character" not in page


def test_a_form_without_its_csrf_token_is_refused(app, alice):
    response = alice.post("/settings/", data={"display_name": "Forged", "language": "en",
                                               "time_zone": "UTC"})
    assert response.status_code == 400
    assert user(app).display_name is None
    for url in ("/settings/password", "/settings/sessions/logout-others"):
        assert alice.post(url, data={"current_password": PASSWORD, "new_password": "x" * 12,
                                     "confirm_password": "x" * 12}).status_code == 400
    assert alice.get("/").status_code == 200  # still signed in, with the old password


def test_time_zone_search_filters_on_the_server(alice):
    fragment = alice.get("/settings/time-zones?tz_q=shang&time_zone=UTC").get_data(as_text=True)
    assert 'value="Asia/Shanghai"' in fragment and '<optgroup label="Asia">' in fragment
    assert "Europe/Paris" not in fragment
    # The chosen zone stays a choice, whatever the search shows.
    assert 'value="UTC" selected' in fragment
    # Spaces stand for underscores, as people type them.
    assert "America/New_York" in alice.get("/settings/time-zones?tz_q=new york").get_data(as_text=True)
    nothing = alice.get("/settings/time-zones?tz_q=zzzz").get_data(as_text=True)
    assert "No time zone matches" in nothing


# -- the avatar ---------------------------------------------------------------------------


def test_an_avatar_is_re_encoded_square_without_metadata_and_seen_by_signed_in_people(
        app, alice, auth, tmp_path):
    response = save(alice, avatar=(io.BytesIO(png()), "me.jpg"))
    assert response.status_code == 302
    key = user(app).avatar_key
    assert key and key.startswith("avatars/") and key.endswith(".png")
    stored = (tmp_path / "uploads" / key).read_bytes()
    assert b"SecretCamera" not in stored and b"GPS-ish" not in stored
    with PILImage.open(io.BytesIO(stored)) as im:
        assert im.format == "PNG" and im.size == (256, 256) and not im.getexif()
    chat = alice.get("/").get_data(as_text=True)
    src = re.search(r'<img class="avatar avatar-picture" src="([^"]+)"', chat).group(1)
    assert alice.get(src).data == stored
    # Anybody signed in sees it (it shows beside messages); nobody signed out does.
    alice.post("/logout", data={"csrf_token": csrf_from(chat)})
    assert alice.get(src).status_code == 302
    auth.register("bob")
    served = alice.get(src)
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"


def test_a_new_avatar_replaces_the_old_file(app, alice, tmp_path):
    save(alice, avatar=(io.BytesIO(png(exif=False)), "a.png"))
    first = user(app).avatar_key
    save(alice, avatar=(io.BytesIO(png((50, 80))), "b.jpg"))
    second = user(app).avatar_key
    assert first != second and (tmp_path / "uploads" / second).exists()
    assert not (tmp_path / "uploads" / first).exists()
    save(alice, remove_avatar="1")
    assert user(app).avatar_key is None and not (tmp_path / "uploads" / second).exists()


@pytest.mark.parametrize(("payload", "error", "status"), [
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not an image", 422),
    (b"just text", "not an image", 422),
    (png(exif=False)[:200], "damaged or incomplete", 422),
])
def test_an_avatar_that_is_not_an_image_is_refused(app, alice, tmp_path, payload, error, status):
    save(alice, display_name="Kept")
    response = save(alice, display_name="Changed", avatar=(io.BytesIO(payload), "x.png"))
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and error in page
    assert user(app).avatar_key is None and user(app).display_name == "Kept"
    assert not (tmp_path / "uploads" / "avatars").exists()


def test_an_avatar_too_large_is_refused(app, alice, tmp_path):
    app.config["MAX_AVATAR_BYTES"] = 1000
    response = save(alice, avatar=(io.BytesIO(png((400, 400), exif=False) + b"\0" * 2000), "big.png"))
    assert response.status_code == 422
    assert "too large" in response.get_data(as_text=True)
    app.config["MAX_AVATAR_BYTES"] = 10**7
    app.config["MAX_CONTENT_LENGTH"] = 5000  # over the whole request limit: 413, same answer
    response = save(alice, avatar=(io.BytesIO(b"\0" * 6000), "huge.png"))
    assert response.status_code == 413 and "too large" in response.get_data(as_text=True)
    assert user(app).avatar_key is None
    assert not (tmp_path / "uploads" / "avatars").exists()


def test_an_avatar_of_too_many_pixels_is_refused(app, alice):
    app.config["MAX_IMAGE_PIXELS"] = 10_000
    response = save(alice, avatar=(io.BytesIO(png((200, 200), exif=False)), "wide.png"))
    assert response.status_code == 422 and "too large" in response.get_data(as_text=True)
    assert user(app).avatar_key is None


# -- the password -------------------------------------------------------------------------


def change(client, current=PASSWORD, new="a fresh secret", confirm=None):
    return client.post("/settings/password", data={
        "csrf_token": settings_token(client), "current_password": current,
        "new_password": new, "confirm_password": new if confirm is None else confirm})


@pytest.mark.parametrize(("current", "new", "confirm", "error"), [
    ("wrong password", "a fresh secret", None, "not your current password"),
    (PASSWORD, "alice", None, "at least 8 characters"),
    (PASSWORD, "ALICEalice"[:5], None, "at least 8 characters"),
    (PASSWORD, "short", None, "at least 8 characters"),
    (PASSWORD, "a fresh secret", "a fresh secreT", "differ"),
    ("", "a fresh secret", None, "current password"),
])
def test_bad_password_changes_change_nothing(app, alice, current, new, confirm, error):
    before = user(app).password_hash
    response = change(alice, current, new, confirm)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and error in page
    assert user(app).password_hash == before


def test_a_new_password_equal_to_the_username_is_refused(app, auth, client):
    auth.register("longname1")
    before = user(app, "longname1").password_hash
    response = change(client, new="LongName1")
    assert response.status_code == 400 and "cannot be your username" in response.get_data(as_text=True)
    assert user(app, "longname1").password_hash == before


def test_wrong_current_passwords_count_toward_the_login_throttle(app, alice):
    app.config["LOGIN_RATE"] = "3/5minute"
    for _ in range(3):
        assert change(alice, current="guess guess").status_code == 400
    # The fourth guess is refused unchecked, the right password too; so is the login form.
    response = change(alice)
    assert response.status_code == 429 and "Too many" in response.get_data(as_text=True)
    other = app.test_client()
    token = csrf_from(other.get("/login/").get_data(as_text=True))
    assert other.post("/login/", data={"csrf_token": token, "username": "alice",
                                       "password": PASSWORD}).status_code == 429


def test_changing_the_password_ends_every_other_session_and_keeps_this_one(app, alice):
    other = app.test_client()
    token = csrf_from(other.get("/login/").get_data(as_text=True))
    other.post("/login/", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
    assert other.get("/").status_code == 200
    response = change(alice)
    assert response.status_code == 302
    assert "logged out everywhere else" in alice.get("/settings/").get_data(as_text=True)
    assert alice.get("/").status_code == 200
    assert other.get("/").status_code == 302
    fresh = app.test_client()
    token = csrf_from(fresh.get("/login/").get_data(as_text=True))
    assert fresh.post("/login/", data={"csrf_token": token, "username": "alice",
                                       "password": PASSWORD}).status_code == 400
    assert fresh.post("/login/", data={"csrf_token": token, "username": "alice",
                                       "password": "a fresh secret"}).status_code == 302


# -- sessions -----------------------------------------------------------------------------


def login_as(app, ua: str, address: str = "203.0.113.7"):
    browser = app.test_client()
    environ = {"HTTP_USER_AGENT": ua, "REMOTE_ADDR": address}
    token = csrf_from(browser.get("/login/", environ_base=environ).get_data(as_text=True))
    browser.post("/login/", data={"csrf_token": token, "username": "alice", "password": PASSWORD},
                 environ_base=environ)
    return browser


def test_sessions_list_names_browser_address_and_last_seen(app, alice):
    firefox = login_as(app, FIREFOX)
    page = alice.get("/settings/").get_data(as_text=True)
    assert "Firefox 133 on Windows" in page and "203.0.113.7" in page
    assert "This browser" in page and "last seen" in page
    # The session keys are secrets: the page names sessions by a digest only.
    from chatapp.models import UserSession, db

    with app.app_context():
        keys = [s.id for s in db.session.scalars(db.select(UserSession))]
    assert len(keys) == 2 and not any(k in page for k in keys)
    assert firefox.get("/").status_code == 200


def test_logging_out_one_session_from_the_list(app, alice):
    firefox = login_as(app, FIREFOX)
    chrome = login_as(app, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "198.51.100.2")
    page = alice.get("/settings/").get_data(as_text=True)
    row = re.search(r"Firefox 133 on Windows.*?action=\"([^\"]+)\"", page, re.S).group(1)
    assert alice.post(row, data={"csrf_token": csrf_from(page)}).status_code == 302
    assert firefox.get("/").status_code == 302
    assert chrome.get("/").status_code == 200 and alice.get("/").status_code == 200
    # A made-up session handle, or this browser's own, is not found.
    assert alice.post("/settings/sessions/0123456789abcdef01234567/logout",
                      data={"csrf_token": csrf_from(page)}).status_code == 404


def test_log_out_everywhere_else(app, alice):
    others = [login_as(app, FIREFOX), login_as(app, "curl/8.0")]
    page = alice.get("/settings/").get_data(as_text=True)
    assert "Log out everywhere else" in page
    alice.post("/settings/sessions/logout-others", data={"csrf_token": csrf_from(page)})
    assert [o.get("/").status_code for o in others] == [302, 302]
    assert alice.get("/").status_code == 200
    assert "Log out everywhere else" not in alice.get("/settings/").get_data(as_text=True)


def test_last_seen_is_written_at_most_once_a_minute(app, alice):
    from datetime import timedelta

    from chatapp.models import UserSession, db

    def seen():
        with app.app_context():
            return db.session.scalar(db.select(UserSession.last_seen_at))

    first = seen()
    alice.get("/settings/")
    assert seen() == first  # within the minute: no write
    with app.app_context():
        db.session.execute(db.update(UserSession).values(last_seen_at=first - timedelta(minutes=5)))
        db.session.commit()
    alice.get("/settings/")
    assert seen() > first - timedelta(minutes=5)


def test_a_strange_user_agent_is_an_unknown_browser(app):
    from chatapp.account import describe_browser

    with app.test_request_context():
        assert describe_browser("") == "Unknown browser"
        assert describe_browser("\x00" * 600) == "Unknown browser"
        assert describe_browser(FIREFOX) == "Firefox 133 on Windows"


def test_storage_sweep_keeps_avatars_in_use(app, alice, runner, tmp_path):
    import os
    import time

    save(alice, avatar=(io.BytesIO(png(exif=False)), "a.png"))
    key = user(app).avatar_key
    root = tmp_path / "uploads"
    stray = root / "avatars" / "stray.png"
    stray.write_bytes(b"a picture nobody has any more")
    hour_ago = time.time() - 3700
    for path in (root / key, stray):
        os.utime(path, (hour_ago, hour_ago))
    done = runner.invoke(args=["storage", "sweep"])
    assert done.exit_code == 0, done.output
    assert (root / key).exists() and not stray.exists()
