"""Settings in a real browser (Debian's Chromium through Playwright): choosing 中文 turns the
page and header into Chinese, the time zone search narrows the list, sessions log out."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_browser import (  # noqa: F401
    PHONE, chat_server, chatters, expect, no_horizontal_scroll, serious_axe_violations,
)

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]
SHOTS = Path(os.environ.get("CHATAPP_ACCOUNT_SHOTS", "")) if os.environ.get(
    "CHATAPP_ACCOUNT_SHOTS") else None


def shot(page, name: str) -> None:
    """Save a screenshot when asked to (CHATAPP_ACCOUNT_SHOTS=folder), to look at."""
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_switching_to_chinese_and_a_time_zone_in_settings(chatters):
    ann = chatters("ann").register()
    page = ann.page
    page.get_by_role("link", name="Settings", exact=True).click()
    page.wait_for_url(re.compile(r"/settings/$"))
    expect(page.get_by_label("Time zone", exact=True)).to_have_value("UTC")
    page.get_by_label("Display name").fill("Ann 安")
    page.get_by_label("Language").select_option(label="中文 (简体)")
    # The search narrows the list on the server; Shanghai is then picked from what is left.
    page.get_by_label("Find a time zone").fill("Shang")
    expect(page.locator("#time-zone optgroup")).to_have_count(1)
    expect(page.locator('#time-zone option[value="Europe/Paris"]')).to_have_count(0)
    page.get_by_label("Time zone", exact=True).select_option("Asia/Shanghai")
    shot(page, "settings-en")
    page.get_by_role("button", name="Save").click()

    # Now in Chinese: the page, its labels, its notice and the header.
    expect(page.get_by_role("status").filter(has_text="设置已保存")).to_be_visible()
    expect(page.get_by_role("heading", name="设置", level=1)).to_be_visible()
    for label in ("显示名称", "头像", "语言", "时区", "当前密码", "新密码", "确认新密码"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="保存")).to_be_visible()
    expect(page.get_by_role("link", name="设置", exact=True)).to_have_attribute("aria-current", "page")
    expect(page.get_by_label("时区", exact=True)).to_have_value("Asia/Shanghai")
    expect(page.get_by_label("显示名称")).to_have_value("Ann 安")
    assert page.locator("html").get_attribute("lang").startswith("zh")
    shot(page, "settings-zh")
    assert serious_axe_violations(page) == []

    # A bad input answers in Chinese and changes nothing.
    page.get_by_label("显示名称").fill("   ")
    page.get_by_role("button", name="保存").click()
    expect(page.get_by_role("alert").filter(has_text="显示名称至少要有一个可见字符")).to_be_visible()
    page.goto("/settings/")
    expect(page.get_by_label("显示名称")).to_have_value("Ann 安")

    # Back in the chat, the header speaks Chinese too and the name shows beside the handle.
    page.goto("/")
    ann.live()
    expect(page.get_by_role("link", name="设置", exact=True)).to_be_visible()
    expect(page.locator("#sidebar .sidebar-me")).to_contain_text("Ann 安")
    # Times are shown in Shanghai's zone (UTC+8, no daylight saving): a message sent now.
    from datetime import datetime, timedelta, timezone

    before = datetime.now(timezone.utc) + timedelta(hours=8)
    page.locator("#composer-body").fill("你好")
    page.locator("#composer-body").press("Enter")
    shown = page.locator("article", has_text="你好").locator("time").first
    expect(shown).to_be_visible()
    after = datetime.now(timezone.utc) + timedelta(hours=8)
    assert shown.inner_text() in {before.strftime("%H:%M"), after.strftime("%H:%M")}
    shot(page, "chat-zh")


def test_logging_out_another_browser_from_the_sessions_list(chatters):
    ann_desk = chatters("ann").register()
    ann_phone = chatters("ann", viewport=PHONE).login()
    page = ann_desk.page
    page.goto("/settings/")
    sessions = page.get_by_role("list", name="Sessions")
    expect(sessions.get_by_role("listitem")).to_have_count(2)
    expect(sessions.get_by_role("listitem").first).to_contain_text("This browser")
    sessions.get_by_role("listitem").nth(1).get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status").filter(has_text="That session was logged out")).to_be_visible()
    expect(sessions.get_by_role("listitem")).to_have_count(1)
    # The phone's open page loses its socket; its next page is the login.
    ann_phone.page.goto("/")
    expect(ann_phone.page).to_have_url(re.compile(r"/login/"))
    shot(page, "sessions")


def test_settings_fit_a_phone(chatters):
    ann = chatters("ann", viewport=PHONE).register()
    ann.page.goto("/settings/")
    no_horizontal_scroll(ann.page)
    shot(ann.page, "settings-phone")


def test_first_run_then_an_invite_link_made_copied_and_used(browser, server_factory):
    from test_browser import Chatter

    server = server_factory(CHATAPP_REGISTRATION="invite")
    founder = Chatter(browser, server, "founder")
    guest = Chatter(browser, server, "guest")
    try:
        page = founder.page
        page.goto("/login/")
        page.get_by_role("link", name="Set up chatapp").click()
        expect(page.get_by_role("heading", name="Set up chatapp")).to_be_visible()
        founder.register()
        expect(page.get_by_role("link", name="Admin", exact=True)).to_be_visible()
        page.goto("/admin/invites")
        expect(page.get_by_role("link", name="Invites")).to_have_attribute("aria-current", "page")
        page.get_by_label("Uses").fill("1")
        page.get_by_role("button", name="New invite link").click()
        link = page.get_by_role("textbox", name="Invite link 1")
        expect(link).to_have_attribute("readonly", "")
        url = link.input_value()
        assert url.startswith(server.url + "/register/?invite=")
        shot(page, "admin-invites")

        guest.page.goto("/register/")
        expect(guest.page.get_by_role("alert")).to_contain_text("by invitation")
        guest.page.goto(url)
        guest.page.get_by_label("Username").fill("guest")
        guest.page.get_by_label("Password", exact=True).fill("correct horse battery")
        guest.page.get_by_label("Confirm password").fill("correct horse battery")
        guest.page.get_by_role("button", name="Create account").click()
        guest.page.wait_for_url(server.url + "/")
        guest.live()

        page.reload()
        expect(page.get_by_role("row").filter(has_text="1 / 1")).to_contain_text("Used up")
        page.get_by_role("button", name="Revoke invite link 1").click()
        expect(page.get_by_role("status").filter(has_text="Invite link revoked")).to_be_visible()
    finally:
        founder.close()
        guest.close()
