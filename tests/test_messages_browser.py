"""Messages people fix, take back, point to and answer, in a real browser with two people:
edit, delete with its confirmation, permalinks, @mention suggestions and badges, reactions."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import open_private_chat
from test_browser import (  # noqa: F401 - fixtures
    PHONE, Chatter, Seed, chat_server, chatters, expect, serious_axe_violations,
)

pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]

# The structure of the message list as a reader sees it: separators and articles, in order,
# with whether each article continues a group.
STRUCTURE = """els => els.map(e => e.tagName === 'H2' ? 'day:' + e.textContent.trim()
  : e.tagName === 'ARTICLE' ? e.id + (e.classList.contains('message-continued') ? '+' : '') : null)
  .filter(Boolean)"""


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def structure(person: Chatter) -> list[str]:
    return person.page.locator("#messages > h2, #messages > article").evaluate_all(STRUCTURE)


def wheel_until(person: Chatter, sight, step: int, timeout: float = 60) -> None:
    """Wheel through the messages (down: step > 0) until `sight` is visible."""
    import time

    page = person.page
    box = page.locator(".scroller").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    deadline = time.monotonic() + timeout
    while not sight.is_visible():
        assert time.monotonic() < deadline, f"never saw {sight}"
        page.mouse.wheel(0, step)
        page.wait_for_timeout(150)


def article(person: Chatter, text: str):
    return person.log.get_by_role("article").filter(has_text=text)


def test_the_author_edits_and_the_other_sees_it_edited_live(chatters):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    alice.say("helo everyone")
    bob.sees("helo everyone")
    # Only the author is offered Edit and Delete.
    expect(article(bob, "helo everyone").get_by_role("button", name="Edit")).to_have_count(0)
    expect(article(bob, "helo everyone").get_by_role("button", name="Delete")).to_have_count(0)

    article(alice, "helo everyone").get_by_role("button", name="Edit").click()
    box = alice.page.get_by_role("textbox", name="Edit message")
    expect(box).to_have_value("helo everyone")
    alice.page.get_by_role("button", name="Cancel").click()
    expect(box).to_have_count(0)
    article(alice, "helo everyone").get_by_role("button", name="Edit").click()
    box.fill("hello *everyone*")
    box.press("Enter")
    for person in (alice, bob):
        edited = article(person, "hello everyone")
        expect(edited.get_by_text("(edited)")).to_be_visible()
        expect(edited.locator("em")).to_have_text("everyone")
        expect(article(person, "helo")).to_have_count(0)
    # An empty edit is refused with a reason, and changes nothing.
    article(alice, "hello everyone").get_by_role("button", name="Edit").click()
    box.fill(" ")
    alice.page.get_by_role("button", name="Save").click()
    expect(alice.page.get_by_role("alert").filter(has_text="Type a message first")).to_be_visible()
    expect(article(bob, "hello everyone")).to_have_count(1)
    refused = [e for e in alice.errors if "status of 400" not in e]  # the refusal itself
    assert refused == [] and bob.errors == [], (alice.errors, bob.errors)


def test_delete_asks_then_removes_live_keeping_groups_and_days_right(chatters, chat_server):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    seed = Seed(chat_server)
    today = now() - timedelta(minutes=3)
    seed.messages(1, [
        ("bob", "old news", today - timedelta(days=1)),
        ("alice", "first today", today),
        ("alice", "second today", today + timedelta(seconds=20)),
        ("alice", "third today", today + timedelta(seconds=40)),
    ])
    alice.goto("/")
    bob.goto("/")
    expect(alice.page.locator(".day-separator")).to_have_count(2)

    # The confirmation comes first; Cancel keeps the message.
    article(alice, "first today").get_by_role("button", name="Delete").click()
    alice.page.get_by_role("button", name="Cancel").click()
    expect(alice.page.get_by_role("button", name="Yes, delete")).to_have_count(0)
    article(alice, "first today").get_by_role("button", name="Delete").click()
    alice.page.get_by_role("button", name="Yes, delete").click()
    for person in (alice, bob):
        expect(article(person, "first today")).to_have_count(0)
        expect(article(person, "second today")).not_to_have_class(re.compile(r"message-continued"))
        expect(person.page.locator(".day-separator")).to_have_count(2)
    # The day's only message goes with its separator.
    article(bob, "old news").get_by_role("button", name="Delete").click()
    bob.page.get_by_role("button", name="Yes, delete").click()
    for person in (alice, bob):
        expect(article(person, "old news")).to_have_count(0)
        expect(person.page.locator(".day-separator")).to_have_count(1)
    live = structure(bob)
    assert live == structure(alice)
    bob.goto("/")  # what a fresh page shows is what the live one became
    assert structure(bob) == live and len(live) == 3 and live[2].endswith("+")
    assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)


def test_a_permalink_opens_scrolled_to_the_message_highlighted_and_pages_both_ways(chatters, chat_server):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    start = now() - timedelta(hours=3)
    ids = Seed(chat_server).messages(
        1, [("bob", f"number {i}", start + timedelta(minutes=i)) for i in range(150)])
    target = ids[75]
    alice.goto("/")
    bob.page.goto(f"/c/1/@{target}")
    shown = article(bob, "number 75")
    expect(shown).to_have_class(re.compile(r"\bmessage-target\b"))
    expect(shown).to_be_in_viewport()
    expect(shown).to_be_focused()
    expect(article(bob, "number 149")).to_have_count(0)
    # Page down to the newest, and up to the very first, wheeling as a person would.
    wheel_until(bob, article(bob, "number 149"), 2500)
    wheel_until(bob, bob.log.get_by_text("This is the very beginning of the conversation."), -2500)
    assert bob.message_ids() == ids
    # The time on a message is the link to it.
    alice.sees("number 149")
    link = article(alice, "number 149").get_by_role("link", name="Link to this message")
    link.focus()  # a grouped message shows its time (and link) to the keyboard
    link.press("Enter")
    alice.page.wait_for_url(f"**/c/1/@{ids[149]}")
    expect(article(alice, "number 149")).to_have_class(re.compile(r"\bmessage-target\b"))


def test_mention_suggestions_and_the_mention_badge(chatters, chat_server):
    alice, bob, bobby = chatters("alice", "bob", "bobby")
    for person in (alice, bob, bobby):
        person.register()
    chat = open_private_chat(chat_server, "alice", "bob")
    bob.goto(f"/c/{chat}")  # bob is elsewhere when he is called
    alice.goto("/")
    alice.textbox.press_sequentially("lunch @bo", delay=30)
    suggestions = alice.page.get_by_role("list", name="Suggestions")
    expect(suggestions.get_by_role("button")).to_have_text(["@bob", "@bobby"])
    suggestions.get_by_role("button", name="@bob", exact=True).click()
    expect(alice.textbox).to_have_value("lunch @bob ")
    expect(suggestions.get_by_role("button")).to_have_count(0)
    alice.textbox.press("End")
    alice.textbox.press_sequentially("at noon?", delay=10)
    alice.textbox.press("Enter")
    alice.sees("lunch @bob at noon?")
    # By keyboard: Tab from the box to the first suggestion, Enter picks it.
    alice.textbox.press_sequentially("and @bobb", delay=30)
    expect(suggestions.get_by_role("button")).to_have_text(["@bobby"])
    alice.textbox.press("Tab")
    alice.page.keyboard.press("Enter")
    expect(alice.textbox).to_have_value("and @bobby ")

    room = bob.nav.get_by_role("link", name=re.compile(r"^Public room"))
    expect(room.get_by_label("1 mentions")).to_be_visible()
    expect(bob.page).to_have_title(re.compile(r"^\(1\) @1 "))
    room.click()
    bob.live()
    mention = article(bob, "lunch").get_by_role("link", name="@bob")
    expect(mention).to_have_class("mention")
    expect(bob.nav.get_by_label(re.compile(r"\d+ mentions"))).to_have_count(0)
    assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)


def test_reactions_toggle_live_for_both(chatters):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    alice.say("we shipped it")
    bob.sees("we shipped it")
    article(bob, "we shipped it").get_by_role("button", name="React").click()
    bob.page.get_by_role("button", name="Thumbs up", exact=True).click()
    for person in (alice, bob):
        expect(article(person, "we shipped it").get_by_role(
            "button", name="Thumbs up: 1, bob")).to_be_visible()
    expect(bob.page.get_by_role("button", name="Thumbs up", exact=True)).to_have_count(0)
    # alice joins in through the same button; then bob takes his back.
    article(alice, "we shipped it").get_by_role("button", name="Thumbs up: 1, bob").click()
    expect(article(bob, "we shipped it").get_by_role(
        "button", name="Thumbs up: 2, bob, alice")).to_be_visible()
    article(bob, "we shipped it").get_by_role("button", name="Thumbs up: 2, bob, alice").click()
    for person in (alice, bob):
        expect(article(person, "we shipped it").get_by_role(
            "button", name="Thumbs up: 1, alice")).to_be_visible()
    assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_in_the_new_controls(chatters, chat_server, scheme):
    """axe-core on every new piece: formatted text, reactions, mention badge, the edit form,
    the delete confirmation, the reaction picker, the suggestions and the permalink page."""
    alice, bob = chatters("alice", "bob", scheme=scheme)
    alice.register()
    bob.register()
    chat = open_private_chat(chat_server, "alice", "bob")
    bob.goto(f"/c/{chat}")
    alice.textbox.fill("see `code`, **this** and https://example.com, @bob")
    alice.textbox.press("Enter")
    alice.sees("see code, this and https://example.com, @bob")
    alice.say("second")
    article(alice, "second").get_by_role("button", name="React").click()
    alice.page.get_by_role("button", name="Party", exact=True).click()
    expect(article(bob, "second")).to_have_count(0)  # bob is in his private chat
    expect(bob.nav.get_by_label("1 mentions")).to_be_visible()
    found = {"mention badge": serious_axe_violations(bob.page)}
    article(alice, "second").get_by_role("button", name="React").click()
    found["picker and reactions"] = serious_axe_violations(alice.page)
    article(alice, "see").get_by_role("button", name="Delete").click()
    expect(alice.page.get_by_role("button", name="Yes, delete")).to_be_visible()
    found["delete confirmation"] = serious_axe_violations(alice.page)
    article(alice, "second").get_by_role("button", name="Edit").click()
    expect(alice.page.get_by_role("textbox", name="Edit message")).to_be_visible()
    found["edit form"] = serious_axe_violations(alice.page)
    alice.textbox.press_sequentially("@b", delay=30)
    expect(alice.page.get_by_role("list", name="Suggestions").get_by_role("button")).to_have_count(1)
    found["suggestions"] = serious_axe_violations(alice.page)
    mid = alice.message_ids()[0]
    alice.page.goto(f"/c/1/@{mid}")
    expect(article(alice, "see")).to_have_class(re.compile("message-target"))
    found["permalink"] = serious_axe_violations(alice.page)
    assert {where: v for where, v in found.items() if v} == {}
