"""Languages and time zones on pages: which language a person gets (their setting, else
their browser's Accept-Language, else English), times in their zone, and safe fallbacks."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import csrf_from

from chatapp import i18n

T0 = datetime(2026, 11, 22, 23, 30)  # Sunday 23:30 UTC: Monday 07:30 in Shanghai
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


def post(app, username: str, body: str, at: datetime) -> int:
    """Store a message in the public room at a chosen time; return its id."""
    from chatapp.models import Conversation, Message, User, db

    with app.app_context():
        message, _ = Message.post(Conversation.public_room(), User.by_username(username), body,
                                  str(uuid.uuid4()))
        message.created_at = at
        db.session.commit()
        return message.id


def settings(app, username: str, language=None, time_zone=None) -> None:
    """Set a person's language and time zone as the Settings page stores them."""
    from chatapp.models import User, db

    with app.app_context():
        user = User.by_username(username)
        user.language, user.time_zone = language, time_zone
        db.session.commit()


@pytest.fixture
def alice(app, auth):
    auth.register("alice")
    return app


def days(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<h2 class="day-separator"[^>]*><time datetime="([\d-]+)">([^<]+)</time>',
                      html)


# -- which language -------------------------------------------------------------------------

def test_english_is_the_default(client):
    html = client.get("/login/").get_data(as_text=True)
    assert '<html lang="en">' in html and "<h1>Log in to chatapp</h1>" in html


@pytest.mark.parametrize("header", ["zh-CN,zh;q=0.9,en;q=0.8", "zh", "zh-Hans", "zh-TW",
                                    "fr-FR, zh;q=0.5, de;q=0.3"])
def test_accept_language_picks_chinese(client, header):
    html = client.get("/login/", headers={"Accept-Language": header}).get_data(as_text=True)
    assert '<html lang="zh-Hans">' in html
    assert "<h1>登录 chatapp</h1>" in html and "用户名" in html and "保持登录" in html


@pytest.mark.parametrize("header", ["en-GB, zh;q=0.5", "fr, de", "*", "", "x" * 300,
                                    "zh;q=0, en", ";;;,,q=abc", "zh-CN;q=nonsense"])
def test_other_or_broken_headers_fall_back_to_english_or_chinese_without_error(client, header):
    response = client.get("/login/", headers={"Accept-Language": header})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    expected = "zh-Hans" if header == "zh-CN;q=nonsense" else "en"
    assert f'<html lang="{expected}">' in html or header == "zh-CN;q=nonsense"


def test_form_errors_and_flashes_come_in_the_chosen_language(client):
    html = client.get("/register/", headers=ZH).get_data(as_text=True)
    response = client.post("/register/", headers=ZH, data={
        "csrf_token": csrf_from(html), "username": "a", "password": "short", "confirm": "x"})
    text = response.get_data(as_text=True)
    assert "请使用 3 到 32 个字母" in text and "请至少使用 8 个字符" in text
    assert "两次输入的密码不一致" in text


def test_the_persons_setting_overrides_the_browser(alice, client):
    settings(alice, "alice", language="zh_Hans")
    html = client.get("/", headers={"Accept-Language": "en-US,en"}).get_data(as_text=True)
    assert '<html lang="zh-Hans">' in html and "公共房间" in html and "退出登录" in html
    settings(alice, "alice", language="en")
    html = client.get("/", headers=ZH).get_data(as_text=True)
    assert '<html lang="en">' in html and "Public room" in html and "Log out" in html


@pytest.mark.parametrize("language,time_zone", [
    ("klingon", "Mars/Olympus_Mons"), ("", ""), ("zh_Hant", "utc+8"), ("../../etc", "../../x"),
    ("EN", "Not/AZone"),
])
def test_unknown_settings_in_the_database_fall_back_safely(alice, client, language, time_zone):
    post(alice, "alice", "hello", T0)
    settings(alice, "alice", language=language, time_zone=time_zone)
    response = client.get("/", headers=ZH)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # "EN" is English written differently; anything else unknown: the browser's language.
    assert f'<html lang="{"en" if language == "EN" else "zh-Hans"}">' in html
    assert ">23:30</time>" in html  # UTC


def test_the_api_stays_english_for_programs(client):
    response = client.get("/api/v1/conversations", headers=ZH)
    assert response.status_code in (401, 403, 404)
    assert not re.search(r"[\u4e00-\u9fff]", response.get_data(as_text=True))


def test_unknown_pages_and_errors_in_chinese(client):
    response = client.get("/no/such/page", headers=ZH)
    assert response.status_code == 404
    assert "这里什么都没有" in response.get_data(as_text=True)


# -- which time zone ------------------------------------------------------------------------

def test_times_are_shown_in_the_persons_time_zone_and_machines_get_utc(alice, client):
    post(alice, "alice", "late on Sunday in London", T0)
    html = client.get("/").get_data(as_text=True)
    assert '<time datetime="2026-11-22T23:30:00Z">23:30</time>' in html
    assert days(html) == [("2026-11-22", "Sunday 22 November 2026")]
    settings(alice, "alice", time_zone="Asia/Shanghai")
    html = client.get("/").get_data(as_text=True)
    assert '<time datetime="2026-11-22T23:30:00Z">07:30</time>' in html
    assert days(html) == [("2026-11-23", "Monday 23 November 2026")]
    settings(alice, "alice", language="zh_Hans", time_zone="America/Los_Angeles")
    html = client.get("/").get_data(as_text=True)
    assert '<time datetime="2026-11-22T23:30:00Z">15:30</time>' in html
    assert days(html) == [("2026-11-22", "2026年11月22日星期日")]


def test_day_separators_follow_midnight_in_the_persons_zone(alice, client):
    # 15:30 and 16:30 UTC: the same day in London, two days in Shanghai (midnight at 16:00).
    post(alice, "alice", "before", T0.replace(hour=15))
    post(alice, "alice", "after", T0.replace(hour=17))
    assert len(days(client.get("/").get_data(as_text=True))) == 1
    settings(alice, "alice", time_zone="Asia/Shanghai")
    html = client.get("/").get_data(as_text=True)
    assert [d for d, _ in days(html)] == ["2026-11-22", "2026-11-23"]


def test_today_and_yesterday_in_both_languages(alice, client):
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    post(alice, "alice", "yesterday's", now - timedelta(days=1))
    post(alice, "alice", "today's", now)
    assert [t for _, t in days(client.get("/").get_data(as_text=True))] == ["Yesterday", "Today"]
    settings(alice, "alice", language="zh_Hans")
    assert [t for _, t in days(client.get("/").get_data(as_text=True))] == ["昨天", "今天"]


def test_day_heading_formats(app):
    with app.test_request_context("/"):
        today = datetime(2026, 12, 3).date()
        with i18n.rendering_as("zh_Hans Asia/Shanghai"):
            assert i18n.day_heading(datetime(2026, 12, 2, 17), today) == "今天"  # 01:00 on the 3rd
            assert i18n.day_heading(datetime(2026, 12, 2, 15), today) == "昨天"
            assert i18n.day_heading(datetime(2026, 11, 29, 15), today) == "2026年11月29日星期日"
            assert i18n.when(datetime(2026, 1, 1, 1, 2)) == "2026年1月1日 09:02"
        with i18n.rendering_as("en America/New_York"):
            assert i18n.day_heading(datetime(2026, 12, 3, 3), today) == "Yesterday"  # 22:00 on the 2nd
            assert i18n.when(datetime(2026, 1, 1, 1, 2)) == "2025-12-31 20:02"


def test_a_push_rendered_for_another_audience_reads_right_for_it(alice):
    from chatapp.realtime.sidebars import render_push

    message_id = post(alice, "alice", "你好", T0)
    event = {"type": "message_created", "conversation_id": 1, "message_id": message_id,
             "html": "<as posted>"}
    with alice.test_request_context("/"):
        html = render_push(event, "zh_Hans Asia/Shanghai")
        assert ">07:30</time>" in html and ">编辑<" in html and "2026年11月23日星期一" in html
        html = render_push(event, "en UTC")
        assert ">23:30</time>" in html and ">Edit<" in html and "Sunday 22 November 2026" in html
        assert render_push(dict(event, message_id=10**9), "en UTC") == "<as posted>"


@pytest.mark.parametrize("zones", [("UTC", "Asia/Shanghai"), ("Asia/Shanghai", "UTC"),
                                   ("UTC", "America/New_York"), ("Pacific/Kiritimati", "UTC"),
                                   ("America/New_York", "Asia/Kolkata")])
def test_a_push_adapted_to_another_zone_equals_a_full_rendering(alice, auth, zones):
    """Pushes in one language and several zones render once and adapt the clock, the day
    separator and the grouping: exactly what a full rendering would have made."""
    from chatapp.models import Message, db
    from chatapp.realtime.frames import Frame
    from chatapp.realtime.sidebars import _message_created, render_push

    auth.logout()
    auth.register("bob")
    moments = [T0.replace(hour=15, minute=50), T0.replace(hour=15, minute=55),  # a group
               T0.replace(hour=16, minute=5),  # after midnight in Shanghai: a new day there
               T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=1)]
    ids = [post(alice, "alice" if i != 3 else "bob", f"m{i}", at) for i, at in enumerate(moments)]
    with alice.test_request_context("/"):
        for language in ("en", "zh_Hans"):
            home, other = (f"{language} {zone}" for zone in zones)
            for message_id in ids:
                message = db.session.get(Message, message_id)
                event = {"type": "message_created", "message_id": message_id}
                with i18n.rendering_as(home):
                    first = _message_created(message, event)
                adapted = render_push(event, other, {home: Frame(first)})
                with i18n.rendering_as(other):
                    full = _message_created(message, event)
                assert adapted == full, (message_id, home, other)
            db.session.rollback()


# -- the migration --------------------------------------------------------------------------

def test_the_migration_adds_and_removes_the_columns_on_both_databases(app):
    from flask_migrate import downgrade, upgrade
    from sqlalchemy import inspect

    from chatapp.extensions import db

    def columns():
        db.session.remove()
        db.engine.dispose()
        return {c["name"] for c in inspect(db.engine).get_columns("users")}

    with app.app_context():
        assert {"language", "time_zone"} <= columns()
        db.session.execute(db.text(
            "INSERT INTO users (username, username_key, password_hash, is_admin, active, "
            "session_epoch, created_at, is_bot, language, time_zone) VALUES ('li', 'li', 'x', "
            ":f, :t, 0, :now, :f, 'zh_Hans', 'Asia/Shanghai')"),
            {"f": False, "t": True, "now": T0})
        db.session.commit()
        downgrade(revision="c4d81e6b3a20")
        assert not {"language", "time_zone"} & columns()
        upgrade()
        assert {"language", "time_zone"} <= columns()
        row = db.session.execute(db.text(
            "SELECT language, time_zone FROM users WHERE username = 'li'")).one()
        assert tuple(row) == (None, None)  # the person is kept; the choice starts over
