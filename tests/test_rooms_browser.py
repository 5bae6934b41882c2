"""Rooms in a real browser (Debian's Chromium through Playwright): creating an open and a
members-only room through the New room form, the Add people picker's suggestions, the
room appearing live in a member's sidebar, Browse rooms and Join."""

from __future__ import annotations

import re

import pytest
from test_browser import (  # noqa: F401
    PHONE, SHOTS, chat_server, chatters, expect, no_horizontal_scroll, serious_axe_violations,
)

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]


def test_creating_open_and_members_only_rooms_through_the_form(chatters):
    ann, ben = chatters("ann", "ben")
    ann.register()
    ben.register()
    page = ann.page

    # An open room.
    ann.nav.get_by_role("link", name="New room").click()
    page.get_by_label("Room name").fill("Dev talk")
    page.get_by_role("button", name="Create room").click()
    page.wait_for_url(re.compile(r"/c/\d+$"))
    ann.live()
    expect(page.get_by_role("heading", name="Dev talk", level=1)).to_be_visible()
    expect(ann.nav.get_by_role("link", name=re.compile("^Dev talk"))).to_have_attribute(
        "aria-current", "page")
    ann.say("first in dev")

    # A members-only room with ben, picked from the server's suggestions.
    ann.nav.get_by_role("link", name="New room").click()
    page.get_by_label("Room name").fill("Leads")
    page.get_by_label("Members only").check()
    page.get_by_label("Add people").fill("be")
    page.get_by_role("checkbox", name="ben").check()
    page.get_by_role("button", name="Create room").click()
    page.wait_for_url(re.compile(r"/c/\d+$"))
    ann.live()
    expect(page.get_by_role("heading", name="Leads", level=1)).to_be_visible()
    expect(ann.log).to_contain_text("ann added ben")

    # Ben, on the public room all along, sees Leads appear in his sidebar (not Dev talk).
    expect(ben.nav.get_by_role("link", name=re.compile("^Leads"))).to_be_visible()
    expect(ben.nav.get_by_role("link", name=re.compile("^Dev talk"))).to_have_count(0)
    expect(ben.nav.get_by_role("heading", name="Rooms")).to_be_visible()
    expect(ben.nav.get_by_role("heading", name="Direct messages")).to_be_visible()

    # Browse rooms lists the open room with its member count; Join takes him in.
    ben.nav.get_by_role("link", name="Browse rooms").click()
    expect(ben.page.get_by_role("list", name="Open rooms")).to_contain_text("1 member")
    expect(ben.page.get_by_role("list", name="Open rooms")).not_to_contain_text("Leads")
    ben.page.get_by_role("button", name="Join").click()
    ben.page.wait_for_url(re.compile(r"/c/\d+$"))
    ben.live()
    ben.sees("first in dev")
    expect(ben.log).to_contain_text("ben joined")
    ben.page.get_by_role("link", name="Room settings").click()
    expect(ben.page.get_by_label("Notify me")).to_have_value("all")
    ben.page.get_by_label("Notify me").select_option(label="Nothing")
    expect(ben.page.get_by_role("status")).to_contain_text("Saved")
    assert not ann.errors and not ben.errors, (ann.errors, ben.errors)


def test_room_pages_have_no_serious_accessibility_violations(chatters):
    ann, ben = chatters("ann", "ben")
    ann.register()
    ben.register()
    page = ann.page
    page.goto("/rooms/new")
    page.get_by_label("Room name").fill("   ")
    page.get_by_role("button", name="Create room").click()
    expect(page.get_by_role("alert")).to_contain_text("Give the room a name")
    found = {"new room with error": serious_axe_violations(page)}
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_label("Members only").check()
    page.get_by_label("Add people").fill("b")
    page.get_by_role("checkbox", name="ben").check()
    page.screenshot(path=str(SHOTS / "room-new-desktop-light.png"))
    page.get_by_label("Members only").uncheck()
    page.get_by_label("Room name").fill("Dev talk")
    page.get_by_role("button", name="Create room").click()
    page.wait_for_url(re.compile(r"/c/\d+$"))
    ann.live()
    page.screenshot(path=str(SHOTS / "room-desktop-light.png"))
    found["room"] = serious_axe_violations(page)
    page.set_viewport_size(PHONE)  # the header's words fold into icons; nothing sticks out
    no_horizontal_scroll(page)
    expect(page.get_by_role("link", name="Room settings")).to_be_visible()
    page.screenshot(path=str(SHOTS / "room-phone-light.png"))
    found["room on a phone"] = serious_axe_violations(page)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("link", name="Room settings").click()
    found["room settings"] = serious_axe_violations(page)
    page.screenshot(path=str(SHOTS / "room-settings-desktop-light.png"))
    ben.page.goto("/rooms/")
    found["browse rooms"] = serious_axe_violations(ben.page)
    ben.page.screenshot(path=str(SHOTS / "room-browse-desktop-light.png"))
    ben.page.get_by_role("link", name="Dev talk").click()
    expect(ben.page.get_by_role("button", name="Join")).to_be_visible()
    found["join"] = serious_axe_violations(ben.page)
    assert not {k: v for k, v in found.items() if v}
