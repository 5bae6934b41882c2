"""The product in a real browser: Debian's Chromium, driven by Playwright, against a real
gunicorn gevent server. Two people in two browser contexts, as two people would be."""

from __future__ import annotations

import re
import sqlite3
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import PASSWORD, ROOT

# Seed writes the SQLite file directly, so these run on SQLite only.
pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]

SHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

# Records the page's sockets so a test can wait until hx-ws is connected (test code only;
# the product itself runs no script of ours).
TRACK_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
})();
"""
SOCKET_OPEN = "() => (window.__sockets || []).some(s => s.readyState === 1)"


def expect(locator_or_page):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator_or_page)


class Chatter:
    """One person in their own browser context (own cookies), on the chat page."""

    def __init__(self, browser, server, username: str, viewport=DESKTOP, scheme="light"):
        self.server = server
        self.username = username
        self.context = browser.new_context(
            viewport=viewport, color_scheme=scheme, base_url=server.url
        )
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.page.add_init_script(TRACK_SOCKETS)
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: m.type == "error" and self.errors.append(m.text)
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def register(self) -> Chatter:
        page = self.page
        page.goto("/register/")
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Confirm password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(self.server.url + "/")
        return self.live()

    def login(self) -> Chatter:
        page = self.page
        page.goto("/login/")
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(self.server.url + "/")
        return self.live()

    def live(self) -> Chatter:
        """Wait until the page's socket is open."""
        self.page.wait_for_function(SOCKET_OPEN, timeout=15_000)
        return self

    def goto(self, path: str) -> Chatter:
        self.page.goto(path)
        return self.live()

    @property
    def log(self):
        return self.page.get_by_role("log", name="Messages")

    @property
    def nav(self):
        return self.page.get_by_role("navigation", name="Conversations")

    @property
    def textbox(self):
        return self.page.get_by_role("textbox", name="Message", exact=True)

    def say(self, text: str) -> None:
        """Type a message and press Enter; wait until the server acknowledged it."""
        self.textbox.fill(text)
        self.textbox.press("Enter")
        self.sees(text)
        expect(self.textbox).to_have_value("")

    def sees(self, text: str, timeout: float = 10_000) -> None:
        expect(self.log.get_by_role("article").filter(has_text=text)).to_have_count(
            1, timeout=timeout
        )

    def message_ids(self) -> list[int]:
        ids = self.log.get_by_role("article").evaluate_all("els => els.map(e => e.id)")
        return [int(i.removeprefix("message-")) for i in ids]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def chat_server(server_factory):
    """A server that lets tests send quickly."""
    return server_factory(CHATAPP_MESSAGE_RATE="1000/second")


@pytest.fixture
def chatters(browser, chat_server):
    """Open people's browsers: chatters("alice", "bob", viewport=..., scheme=...)."""
    made: list[Chatter] = []

    def make(*names: str, **options):
        new = [Chatter(browser, chat_server, name, **options) for name in names]
        made.extend(new)
        return new[0] if len(new) == 1 else new

    yield make
    for chatter in made:
        chatter.close()


# -- seeding the server's database directly (fast, and with chosen times) ------------------


class Seed:
    """Write rows straight into the test server's SQLite database."""

    def __init__(self, server):
        path = server.env["DATABASE_URL"].removeprefix("sqlite:///")
        self.db = sqlite3.connect(path, timeout=10)

    def user_id(self, username: str) -> int:
        return self.db.execute(
            "SELECT id FROM users WHERE username_key = ?", (username.lower(),)
        ).fetchone()[0]

    def conversation_id(self, key: str) -> int:
        return self.db.execute("SELECT id FROM conversations WHERE key = ?", (key,)).fetchone()[0]

    def direct_id(self, a: str, b: str) -> int:
        low, high = sorted((self.user_id(a), self.user_id(b)))
        return self.conversation_id(f"dm:{low}:{high}")

    def messages(self, conversation_id: int, rows: list[tuple[str, str, datetime]]) -> list[int]:
        """Insert (author, body, time) rows; return their ids in order."""
        ids = []
        for author, body, at in rows:
            cursor = self.db.execute(
                "INSERT INTO messages (conversation_id, author_id, body, client_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (conversation_id, self.user_id(author), body, str(uuid.uuid4()),
                 at.strftime("%Y-%m-%d %H:%M:%S.%f")),
            )
            ids.append(cursor.lastrowid)
        self.db.execute(
            "UPDATE conversations SET last_message_at = ? WHERE id = ?",
            (rows[-1][2].strftime("%Y-%m-%d %H:%M:%S.%f"), conversation_id),
        )
        self.db.commit()
        return ids

    def read_all(self, username: str) -> None:
        """Mark everything read for a user (seeded rows are not news)."""
        self.db.execute(
            "UPDATE memberships SET last_read_id = (SELECT coalesce(max(id), 0) FROM messages"
            " WHERE messages.conversation_id = memberships.conversation_id) WHERE user_id = ?",
            (self.user_id(username),),
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def no_horizontal_scroll(page) -> None:
    """Nothing sticks out sideways: the page is exactly as wide as the window."""
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide in a {widths[1]} px window"


def serious_axe_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


# -- the look ---------------------------------------------------------------------------------

DAY = datetime(2026, 11, 23, 9, 0)
STORY = [
    ("carol", "Has anyone tried the new build on a phone yet?", DAY - timedelta(hours=17)),
    ("dave", "Yes. The conversation list folds away behind the menu button on a small "
             "screen, and the composer stays above the keyboard.", DAY - timedelta(hours=16, minutes=55)),
    ("bob", "Morning! Standup in ten minutes.", DAY + timedelta(minutes=12)),
    ("bob", "I'll share the release notes there.", DAY + timedelta(minutes=12, seconds=30)),
    ("alice", "Sounds good. The dark theme is finished: it follows the system setting, "
              "no toggle needed.", DAY + timedelta(minutes=14)),
    ("alice", "Screenshots are in the README.", DAY + timedelta(minutes=14, seconds=40)),
    ("carol", "Love it. Does it work on 360 px phones too?", DAY + timedelta(minutes=20)),
    ("alice", "Yes, with no sideways scrolling anywhere.", DAY + timedelta(minutes=21)),
    ("dave", "Nice work, everyone.", DAY + timedelta(minutes=23)),
]


def seed_story(server) -> None:
    """Four people, a public room with two days of talk, and an unread private chat."""
    from conftest import Person

    people = {name: Person(server, name).register() for name in ("alice", "bob", "carol", "dave")}
    people["bob"].get("/dm/alice")
    people["carol"].get("/dm/alice")
    seed = Seed(server)
    seed.messages(seed.conversation_id("public"), STORY)
    seed.messages(seed.direct_id("carol", "alice"), [
        ("carol", "Lunch at noon?", DAY - timedelta(hours=20)),
    ])
    seed.read_all("alice")
    seed.messages(seed.direct_id("bob", "alice"), [
        ("bob", "Can you review my branch after standup?", DAY + timedelta(minutes=30)),
        ("bob", "No rush.", DAY + timedelta(minutes=30, seconds=20)),
    ])
    seed.close()
    for person in people.values():
        person.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_phone_and_desktop(browser, chat_server, scheme):
    """The chat as alice sees it, at phone and desktop widths, saved for the README."""
    seed_story(chat_server)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        alice = Chatter(browser, chat_server, "alice", viewport=viewport, scheme=scheme)
        try:
            alice.login()
            alice.sees("Nice work, everyone.")
            expect(alice.page).to_have_title(re.compile(r"^\(2\) Public room"))
            no_horizontal_scroll(alice.page)
            alice.page.screenshot(path=SHOTS / f"chat-{name}-{scheme}.png")
            if name == "phone":
                alice.page.locator("summary").filter(has_text="Conversations").click()
                expect(alice.nav).to_be_visible()
                alice.page.screenshot(path=SHOTS / f"chat-phone-{scheme}-conversations.png")
            assert alice.errors == [], alice.errors
        finally:
            alice.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_on_any_page(browser, chat_server, scheme):
    """axe-core finds nothing serious or critical on any page, at either width."""
    seed_story(chat_server)
    found: dict[str, list[str]] = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        visitor = Chatter(browser, chat_server, "nobody", viewport=viewport, scheme=scheme)
        page = visitor.page
        page.goto("/register/")
        found[f"register {name}"] = serious_axe_violations(page)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("alert").first).to_be_visible()
        found[f"register with errors {name}"] = serious_axe_violations(page)
        page.goto("/login/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password", exact=True).fill("wrong password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        found[f"login with error {name}"] = serious_axe_violations(page)
        visitor.close()

        alice = Chatter(browser, chat_server, "alice", viewport=viewport, scheme=scheme).login()
        page = alice.page
        alice.sees("Nice work, everyone.")
        found[f"public room {name}"] = serious_axe_violations(page)
        if name == "phone":
            page.locator("summary").filter(has_text="Conversations").click()
        alice.nav.get_by_role("link", name=re.compile("^bob")).click()
        alice.live().sees("No rush.")
        found[f"private chat {name}"] = serious_axe_violations(page)
        page.goto("/c/999")
        found[f"not found {name}"] = serious_axe_violations(page)
        alice.close()
    assert {page: v for page, v in found.items() if v} == {}
