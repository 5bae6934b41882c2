"""Chinese in a real browser (Chromium): labels, live messages and dates, from the
browser's language and from the person's own setting."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import PASSWORD
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]
SCREENSHOTS = __import__("pathlib").Path(__file__).parent / "artifacts"


def expect(target):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


def database(server):
    return create_engine(server.env["DATABASE_URL"].replace("postgresql://",
                                                            "postgresql+psycopg://", 1))


def choose(server, username, language, time_zone):
    engine = database(server)
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET language = :l, time_zone = :z WHERE username = :u"),
                     {"l": language, "z": time_zone, "u": username})
    engine.dispose()


def seed_message(server, username, body, at):
    """A message posted at a chosen moment (UTC), straight into the database."""
    engine = database(server)
    with engine.begin() as conn:
        user_id = conn.execute(text("SELECT id FROM users WHERE username = :u"),
                               {"u": username}).scalar_one()
        conn.execute(text(
            "INSERT INTO messages (conversation_id, author_id, body, body_html, client_id, "
            "created_at, system) VALUES (1, :a, :b, :h, :c, :t, :f)"),
            {"a": user_id, "b": body, "h": f"<p>{body}</p>", "c": str(uuid.uuid4()), "t": at,
             "f": False})
    engine.dispose()


def test_a_chinese_browser_gets_chinese_labels_messages_and_dates(browser, server):
    context = browser.new_context(locale="zh-CN", base_url=server.url,
                                  viewport={"width": 1100, "height": 760})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto("/register/")
        # The first account on a fresh server: the first-run screen, in Chinese.
        expect(page.get_by_role("heading", name="设置 chatapp")).to_be_visible()
        page.get_by_label("用户名").fill("lihua")
        page.get_by_label("密码", exact=True).fill(PASSWORD)
        page.get_by_label("确认密码").fill(PASSWORD)
        page.get_by_role("button", name="创建账户").click()
        page.wait_for_url(server.url + "/")
        expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
        expect(page.get_by_role("navigation", name="会话")).to_contain_text("公共房间")
        expect(page.get_by_role("button", name="退出登录")).to_be_visible()
        expect(page.locator("#messages")).to_contain_text("还没有消息。打个招呼吧！")
        page.get_by_label("消息", exact=True).fill("大家好")
        page.get_by_role("button", name="发送", exact=True).click()
        article = page.get_by_role("article", name="lihua")
        expect(article).to_contain_text("大家好")
        expect(article.get_by_role("button", name="编辑")).to_be_attached()
        expect(page.locator(".day-separator")).to_have_text("今天")
        # The time shown is UTC's (no zone chosen), the machine-readable one too.
        stamp = article.locator("time")
        moment = stamp.get_attribute("datetime")
        shown = datetime.fromisoformat(moment.rstrip("Z")).strftime("%H:%M")
        expect(stamp).to_have_text(shown)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "i18n-chinese-browser.png"))
    finally:
        context.close()


def test_the_persons_setting_and_zone_win_over_an_english_browser(browser, server):
    context = browser.new_context(locale="en-US", base_url=server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto("/register/")
        page.get_by_label("Username").fill("wang")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Confirm password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(server.url + "/")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        # Sunday 22 November 23:30 UTC is Monday 07:30 in Shanghai.
        seed_message(server, "wang", "早上好", datetime(2026, 11, 22, 23, 30))
        yesterday = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=1)
        # 24 hours ago is yesterday in Shanghai at any hour (no daylight saving there).
        seed_message(server, "wang", "昨天的消息", yesterday)
        choose(server, "wang", "zh_Hans", "Asia/Shanghai")
        page.reload()
        expect(page.get_by_role("button", name="退出登录")).to_be_visible()
        separators = page.locator(".day-separator")
        expect(separators.first).to_have_text("2026年11月23日星期一")
        expect(separators.first.locator("time")).to_have_attribute("datetime", "2026-11-23")
        first = page.get_by_role("article").filter(has_text="早上好")
        expect(first.locator("time")).to_have_text("07:30")
        expect(first.locator("time")).to_have_attribute("datetime",
                                                         re.compile(r"^2026-11-22T23:30:00"))
        expect(separators.nth(1)).to_have_text(re.compile("^(昨天|今天)$"))
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "i18n-setting-over-browser.png"))
    finally:
        context.close()
