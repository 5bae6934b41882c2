"""Searching in a real browser: the header's box, the results, opening one, and the
search page's htmx-enhanced form (Debian's Chromium through Playwright)."""

from __future__ import annotations

import re

import pytest

from test_browser import (  # noqa: F401 - fixtures
    PHONE, chat_server, chatters, expect, no_horizontal_scroll, serious_axe_violations,
)

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]


def test_searching_and_opening_a_result(chatters):
    ann, ben = chatters("ann", "ben")
    ann.register()
    ben.register()
    ben.say("the deployment is on friday")
    ben.say("下周发布新版本 <b>bold?</b>")
    ann.sees("下周发布新版本")

    page = ann.page
    search = page.get_by_role("search", name="Search messages")
    search.get_by_role("searchbox", name="Search messages").fill("deplo")
    search.get_by_role("searchbox", name="Search messages").press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=deplo$"))
    results = page.get_by_role("list", name="Search results")
    expect(results.get_by_role("listitem")).to_have_count(1)
    expect(results.locator("mark")).to_have_text("deployment")
    expect(results).to_contain_text("Public room")
    expect(results).to_contain_text("ben")

    # On the search page, htmx swaps the results in place and keeps the address.
    assert serious_axe_violations(page) == []
    page.evaluate("window.__same_page = true")
    box = page.get_by_role("searchbox", name="Search messages")
    box.fill("发布")
    page.get_by_role("search", name="Search messages").get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"/search\?q=%E5%8F%91%E5%B8%83$"))
    expect(results.locator("mark")).to_have_text("发布")
    expect(results).to_contain_text("<b>bold?</b>")  # shown as text, not markup
    expect(page.get_by_role("list", name="Recent searches")).to_contain_text("deplo")
    assert page.evaluate("window.__same_page") is True  # swapped in, not a new page

    # Opening a result shows the message in its conversation.
    results.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"/c/\d+/@\d+$"))  # the permalink page (it has no socket)
    ann.sees("下周发布新版本")
    message_id = re.search(r"(\d+)$", page.url).group(1)
    expect(page.locator(f"#message-{message_id}")).to_be_in_viewport()

    # Nothing found says so.
    page.get_by_role("searchbox", name="Search messages").fill("nothing like this")
    page.get_by_role("searchbox", name="Search messages").press("Enter")
    expect(page.get_by_text("No messages match")).to_be_visible()
    assert ann.errors == [], ann.errors


def test_the_search_box_fits_a_phone(chatters):
    ann = chatters("ann", viewport=PHONE)
    ann.register()
    expect(ann.page.get_by_role("searchbox", name="Search messages")).to_be_visible()
    no_horizontal_scroll(ann.page)
    ann.page.goto("/search?q=hello")
    no_horizontal_scroll(ann.page)
