"""The admin's Bots page in a real browser (Chromium): create a bot, copy its key once,
regenerate it, delete the bot; the key works, then stops at once."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from conftest import PASSWORD, Person
from live import ROOT


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def status(server, key: str) -> int:
    return requests.get(f"{server.url}/api/v1/conversations", timeout=10,
                        headers={"Authorization": f"Bearer {key}"}).status_code


@pytest.mark.databases("sqlite")
def test_an_admin_manages_a_bot_in_the_browser(browser, server_factory):
    server = server_factory()
    Person(server, "root").register().close()
    subprocess.run([sys.executable, "-m", "flask", "--app", "chatapp", "create-admin", "root"],
                   cwd=ROOT, env=server.env, check=True, capture_output=True)
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        page.goto("/login/")
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(server.url + "/")
        page.goto("/admin/")
        page.get_by_role("navigation", name="Admin").get_by_role("link", name="Bots").click()
        expect(page.get_by_role("heading", name="Bots", exact=True)).to_be_visible()

        page.get_by_label("Bot name").fill("deploybot")
        page.get_by_label("Webhook URL").fill("https://ci.example.com/hook")
        page.get_by_role("button", name="Create bot").click()
        box = page.get_by_role("textbox", name="API key")
        expect(box).to_be_visible()
        expect(box).not_to_be_editable()  # readonly: select it and copy
        key = box.input_value()
        from test_browser import serious_axe_violations

        assert serious_axe_violations(page) == []
        assert key.startswith("chatbot_") and status(server, key) == 200
        row = page.get_by_role("row").filter(has_text="deploybot")
        expect(row).to_contain_text("https://ci.example.com/hook")
        expect(row).to_contain_text("bot")

        page.get_by_role("button", name="Regenerate key of deploybot").click()
        new = page.get_by_role("textbox", name="API key").input_value()
        assert new != key and status(server, key) == 401 and status(server, new) == 200

        page.goto("/admin/bots")  # the key is shown once
        expect(page.get_by_role("textbox", name="API key")).to_have_count(0)

        page.get_by_role("button", name="Delete deploybot").click()
        expect(page.get_by_role("status").filter(has_text="Deleted the bot deploybot")).to_be_visible()
        expect(page.get_by_text("No bots yet.")).to_be_visible()
        assert status(server, new) == 401
    finally:
        context.close()
