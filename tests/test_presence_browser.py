"""Presence, typing and the favicon in two real browsers (Debian's Chromium through
Playwright): an online dot that appears and goes after the grace period, "is typing…"
that clears when the message arrives and when the typing stops, and the tab's icon
swapped by the push that brings an unread badge."""

from __future__ import annotations

import re

import pytest
from conftest import open_private_chat
from test_browser import SHOTS, Chatter, expect, serious_axe_violations

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]


@pytest.fixture
def presence_server(server_factory):
    """People go offline one second after their last page closed."""
    return server_factory(CHATAPP_PRESENCE_GRACE="1", CHATAPP_MESSAGE_RATE="1000/second")


@pytest.fixture
def people(browser, presence_server):
    """Registered people, each in their own browser, on the public room."""
    made: list[Chatter] = []

    def make(*names: str):
        for name in names:
            made.append(Chatter(browser, presence_server, name).register())
        return made[-len(names):]

    yield make
    for chatter in made:
        chatter.close()


def test_an_online_dot_appears_and_goes_after_the_grace_period(people, presence_server):
    ann, ben = people("ann", "ben")
    chat = open_private_chat(presence_server, "ann", "ben")
    ann.goto(f"/c/{chat}")
    header = ann.page.locator(".chat-header")
    ben_link = ann.nav.get_by_role("link", name=re.compile("^ben"))
    expect(header.get_by_label("online")).to_be_visible()
    expect(ben_link.get_by_label("online")).to_be_visible()
    expect(ben_link).to_have_accessible_name(re.compile(r"^ben online"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    ann.page.screenshot(path=SHOTS / "presence-online.png")

    # Ben closes his tab: a second later (the grace period) his dots go, live.
    ben.page.goto("about:blank")
    expect(header.get_by_label("online")).to_have_count(0)
    expect(ben_link.get_by_label("online")).to_have_count(0)
    expect(header).to_contain_text("Last seen just now")
    ann.page.screenshot(path=SHOTS / "presence-offline.png")

    # He comes back: the dot is there again and "Last seen" is gone.
    ben.goto("/")
    expect(header.get_by_label("online")).to_be_visible()
    expect(header).not_to_contain_text("Last seen")
    assert serious_axe_violations(ann.page) == []
    assert not ann.errors and not ben.errors, (ann.errors, ben.errors)


def test_typing_shows_under_the_log_and_clears_on_send_and_on_timeout(people):
    ann, ben = people("ann", "ben")
    typing = ann.page.locator("#typing")
    expect(typing).to_have_attribute("role", "status")

    ben.textbox.press_sequentially("hello th", delay=30)
    expect(ann.page.get_by_role("status").filter(has_text="ben is typing…")).to_be_visible()
    ann.page.screenshot(path=SHOTS / "presence-typing.png")
    ben.textbox.press_sequentially("ere", delay=30)
    ben.textbox.press("Enter")
    ann.sees("hello there")
    expect(typing).to_have_text("")

    # He starts again and stops: "is typing" goes by itself after six seconds.
    ben.textbox.press_sequentially("and", delay=30)
    expect(typing).to_have_text("ben is typing…")
    expect(typing).to_have_text("", timeout=10_000)
    expect(ben.page.locator("#typing")).to_have_text("")  # never himself
    assert not ann.errors and not ben.errors, (ann.errors, ben.errors)


def test_the_favicon_link_is_swapped_when_something_is_unread(people, presence_server):
    ann, ben = people("ann", "ben")
    chat = open_private_chat(presence_server, "ann", "ben")
    ann.goto(f"/c/{chat}")
    icon = ann.page.locator("link#favicon")
    expect(icon).to_have_attribute("href", "/favicon/0.svg")
    fetched = []
    ann.page.on("request", lambda r: "/favicon/" in r.url and fetched.append(r.url))

    ben.say("news in the public room")
    expect(icon).to_have_attribute("href", "/favicon/1.svg")
    expect(ann.page).to_have_title(re.compile(r"^\(1\) "))
    ben.say("more news")
    expect(icon).to_have_attribute("href", "/favicon/2.svg")
    # Chromium follows the swapped element: it fetches each new icon as it appears.
    ann.page.wait_for_timeout(500)
    assert any(u.endswith("/favicon/1.svg") for u in fetched), fetched
    # Reading the room clears the count, and the icon with it.
    ann.nav.get_by_role("link", name=re.compile("^Public room")).click()
    ann.live()
    expect(ann.page.locator("link#favicon")).to_have_attribute("href", "/favicon/0.svg")
    assert not ann.errors and not ben.errors, (ann.errors, ben.errors)
