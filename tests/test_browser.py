"""The product in a real browser: Debian's Chromium, driven by Playwright, against a real
gunicorn gevent server. Two people in two browser contexts, as two people would be."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import PASSWORD, ROOT, csrf_from

# Seed writes the SQLite file directly, so these run on SQLite only.
pytestmark = [pytest.mark.browser, pytest.mark.databases("sqlite")]

# The README's pictures are refreshed only when asked: a test run leaves the tree clean.
SHOTS = (ROOT / "docs" / "screenshots" if os.environ.get("CHATAPP_UPDATE_SCREENSHOTS")
         else ROOT / "tests" / "artifacts" / "screenshots")
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
  // Pushed frames swapped into the page (the first is the connect snapshot).
  window.__swapped = 0;
  document.addEventListener("htmx:ws:after:message:incoming", () => { window.__swapped++; });
})();
"""
SOCKET_OPEN = "() => (window.__sockets || []).some(s => s.readyState === 1)"
SNAPSHOT_SWAPPED = "() => window.__swapped > 0"


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
        """Wait until the page's socket is open and its connect snapshot is on the page."""
        self.page.wait_for_function(SOCKET_OPEN, timeout=15_000)
        self.page.wait_for_function(SNAPSHOT_SWAPPED, timeout=15_000)
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

    def messages(self, conversation_id: int, rows: list[tuple]) -> list[int]:
        """Insert (author, body, time[, image id]) rows; return their ids in order."""
        ids = []
        for author, body, at, *image in rows:
            cursor = self.db.execute(
                "INSERT INTO messages (conversation_id, author_id, body, client_id, created_at,"
                " image_id) VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, self.user_id(author), body, str(uuid.uuid4()),
                 at.strftime("%Y-%m-%d %H:%M:%S.%f"), image[0] if image else None),
            )
            ids.append(cursor.lastrowid)
        self.db.execute(
            "UPDATE conversations SET last_message_at = ? WHERE id = ?",
            (rows[-1][2].strftime("%Y-%m-%d %H:%M:%S.%f"), conversation_id),
        )
        self.db.commit()
        return ids

    def picture(self, upload_dir: str) -> int:
        """Store a drawn landscape (and its thumbnail) as an uploaded image; return its id."""
        from PIL import Image, ImageDraw

        full = Image.new("RGB", (1200, 800))
        draw = ImageDraw.Draw(full)
        for y in range(800):  # an evening sky
            t = y / 800
            draw.line([(0, y), (1200, y)], fill=(int(255 - 60 * t), int(150 + 40 * t), int(110 + 90 * t)))
        draw.ellipse((480, 380, 720, 620), fill=(255, 236, 190))
        draw.polygon([(0, 800), (0, 560), (260, 430), (520, 600), (800, 470), (1200, 640), (1200, 800)],
                     fill=(58, 64, 110))
        names = {}
        for kind, size in (("full", (1200, 800)), ("thumb", (360, 240))):
            rel = f"se/ed/{uuid.uuid4().hex}{'-thumb' if kind == 'thumb' else ''}.jpg"
            path = Path(upload_dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            full.resize(size).save(path, "JPEG", quality=85)
            names[kind] = (rel, path.stat().st_size)
        cursor = self.db.execute(
            "INSERT INTO images (path, thumb_path, content_type, width, height, size_bytes,"
            " thumb_width, thumb_height, created_at) VALUES (?, ?, 'image/jpeg', 1200, 800, ?,"
            " 360, 240, ?)",
            (names["full"][0], names["thumb"][0], names["full"][1], DAY.isoformat(" ")),
        )
        self.db.commit()
        return cursor.lastrowid

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
    for name in ("bob", "carol"):  # "Start chat" is a POST with the page's token
        token = csrf_from(people[name].get("/dm/alice").text)
        people[name].http.post(f"{server.url}/dm/alice", data={"csrf_token": token})
    seed = Seed(server)
    picture = seed.picture(server.env["CHATAPP_UPLOAD_DIR"])
    story = sorted(
        STORY + [("carol", "The view from the office last night", DAY + timedelta(minutes=18), picture)],
        key=lambda row: row[2],
    )
    seed.messages(seed.conversation_id("public"), story)
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
            picture = alice.log.get_by_role("img", name="Image from carol")
            picture.evaluate("img => img.decode()")  # loaded (it is lazy) before the picture
            # Checked before any screenshot: Playwright's own caret-hiding style trips the CSP.
            assert alice.errors == [], alice.errors
            alice.page.screenshot(path=SHOTS / f"chat-{name}-{scheme}.png", animations="disabled")
            if name == "phone":
                alice.page.locator("summary").filter(has_text="Conversations").click()
                expect(alice.nav).to_be_visible()
                alice.page.screenshot(
                    path=SHOTS / f"chat-phone-{scheme}-conversations.png", animations="disabled"
                )
        finally:
            alice.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_on_any_page(browser, chat_server, scheme):
    """axe-core finds nothing serious or critical on any page, at either width."""
    seed_story(chat_server)
    from conftest import Person

    Person(chat_server, "root").register().close()
    seed = Seed(chat_server)
    seed.db.execute("UPDATE users SET is_admin = 1 WHERE username_key = 'root'")
    seed.db.commit()
    seed.close()
    found: dict[str, list[str]] = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        visitor = Chatter(browser, chat_server, "nobody", viewport=viewport, scheme=scheme)
        page = visitor.page
        page.goto("/register/")
        found[f"register {name}"] = serious_axe_violations(page)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("alert").first).to_be_visible()
        page.screenshot(path=SHOTS / f"register-errors-{name}-{scheme}.png", animations="disabled")
        found[f"register with errors {name}"] = serious_axe_violations(page)
        page.goto("/login/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password", exact=True).fill("wrong password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        found[f"login with error {name}"] = serious_axe_violations(page)
        page.screenshot(path=SHOTS / f"login-error-{name}-{scheme}.png", animations="disabled")
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

        root = Chatter(browser, chat_server, "root", viewport=viewport, scheme=scheme).login()
        seed = Seed(chat_server)
        dm = seed.direct_id("alice", "bob")
        seed.close()
        for path in ("/admin/", "/admin/?q=standup", "/admin/users", "/admin/audit",
                     f"/admin/conversations/{dm}"):
            root.page.goto(path)
            found[f"{path} {name}"] = serious_axe_violations(root.page)
        root.close()
    assert {page: v for page, v in found.items() if v} == {}


# -- people using it --------------------------------------------------------------------------


def test_two_people_register_and_chat_live_both_ways(chatters):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    expect(alice.log.get_by_text("No messages yet")).to_be_visible()

    alice.say("hello bob")
    bob.sees("hello bob")
    bob.say("hi alice, you are live")
    alice.sees("hi alice, you are live")
    alice.say("first of two")
    alice.say("second of two")
    for person in (alice, bob):
        person.sees("second of two")
        expect(person.log.get_by_text("No messages yet")).to_be_hidden()
        second = person.log.get_by_role("article").filter(has_text="second of two")
        expect(second).to_have_class(re.compile(r"\bmessage-continued\b"))
        expect(second.get_by_text("alice")).to_be_attached()  # grouped, still named

    # One HTML for everyone; "mine" is the page's own rule: alice's lines sit right for her.
    def side(person, text):
        return person.log.get_by_role("article").filter(has_text=text).evaluate(
            "e => getComputedStyle(e).flexDirection"
        )

    assert side(alice, "hello bob") == "row-reverse" and side(alice, "hi alice") == "row"
    assert side(bob, "hello bob") == "row" and side(bob, "hi alice") == "row-reverse"
    assert alice.message_ids() == bob.message_ids() and len(alice.message_ids()) == 4
    assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)


def test_private_chat_badge_rises_and_clears(chatters):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    bob.goto("/")  # bob's sidebar lists alice, who registered first
    bob.nav.get_by_role("link", name=re.compile(r"^alice")).click()
    bob.page.get_by_role("button", name="Start chat").click()  # opening alone creates nothing
    bob.live()
    expect(bob.page.get_by_role("heading", name="alice", level=1)).to_be_visible()
    bob.say("psst, alice")

    link = alice.nav.get_by_role("link", name=re.compile(r"^bob"))
    expect(link.get_by_label("1 unread")).to_be_visible()
    expect(alice.page).to_have_title(re.compile(r"^\(1\) Public room"))
    bob.say("are you there?")
    expect(link.get_by_label("2 unread")).to_be_visible()
    expect(alice.page).to_have_title(re.compile(r"^\(2\) "))

    link.click()
    alice.live()
    alice.sees("psst, alice")
    alice.sees("are you there?")
    expect(alice.nav.get_by_role("link", name=re.compile(r"^bob"))).to_have_attribute(
        "aria-current", "page"
    )
    expect(alice.nav.get_by_label(re.compile(r"\d+ unread"))).to_have_count(0)
    expect(alice.page).to_have_title(re.compile(r"^bob · chatapp"))
    alice.say("here!")
    bob.sees("here!")
    expect(bob.nav.get_by_label(re.compile(r"\d+ unread"))).to_have_count(0)


def test_an_image_sent_is_seen_on_the_other_side(chatters, tmp_path):
    from PIL import Image, ImageDraw

    picture = tmp_path / "sunset.png"
    image = Image.new("RGB", (900, 600), (250, 170, 90))
    ImageDraw.Draw(image).ellipse((350, 250, 550, 450), fill=(255, 240, 200))
    image.save(picture)

    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    alice.page.get_by_label("Attach image").set_input_files(picture)
    expect(alice.page.get_by_label("Caption")).to_be_visible()  # the form opened up
    alice.page.get_by_label("Caption").fill("sunset from the office")
    no_horizontal_scroll(alice.page)
    alice.page.get_by_role("button", name="Send image", exact=True).click()

    for person in (bob, alice):
        person.sees("sunset from the office")
        article = person.log.get_by_role("article").filter(has_text="sunset from the office")
        thumb = article.get_by_role("img", name="Image from alice")
        expect(thumb).to_be_visible()
        person.page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
        )
        full = article.get_by_role("link", name="Image from alice").get_attribute("href")
        assert person.page.request.get(full).status == 200
    # The composer came back closed, ready for the next image.
    expect(alice.page.get_by_label("Caption")).to_be_hidden()
    assert bob.errors == []


def scroll_to_the_beginning(person: Chatter, timeout: float = 60) -> None:
    """Wheel up through the history like a person would, until the very first message."""
    import time

    page = person.page
    box = page.locator(".scroller").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    beginning = person.log.get_by_text("This is the very beginning of the conversation.")
    deadline = time.monotonic() + timeout
    while not beginning.is_visible():
        assert time.monotonic() < deadline, "never reached the first message"
        page.mouse.wheel(0, -2500)
        page.wait_for_timeout(150)


@pytest.mark.parametrize("where", ["public room", "private chat"])
def test_scrolling_up_loads_all_history_without_gaps_or_repeats(chatters, chat_server, where):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    seed = Seed(chat_server)
    if where == "private chat":
        alice.page.goto("/dm/bob")
        alice.page.get_by_role("button", name="Start chat").click()
        alice.live()
        conversation_id = seed.direct_id("alice", "bob")
    else:
        conversation_id = seed.conversation_id("public")
    start = datetime(2026, 11, 20, 8, 0)
    ids = seed.messages(conversation_id, [
        ("alice" if i % 7 < 3 else "bob", f"history line {i:03d}", start + timedelta(minutes=9 * i))
        for i in range(200)
    ])
    seed.close()
    alice.page.reload()
    alice.live().sees("history line 199")
    assert alice.message_ids() == ids[-50:]

    requests = []
    alice.page.on("requestfinished", lambda r: "/messages?before=" in r.url and requests.append(r.url))
    scroll_to_the_beginning(alice)
    assert alice.message_ids() == ids  # every message once, oldest first
    assert len(requests) == 3  # 50 on the page, then three pages of 50
    days = alice.log.locator(".day-separator").all_inner_texts()
    assert days == ["Friday 20 November 2026", "Saturday 21 November 2026"]
    # A message sent now still lands at the bottom, in view.
    alice.say("and a new one")
    expect(alice.log.get_by_role("article").last).to_contain_text("and a new one")
    expect(alice.log.get_by_role("article").last).to_be_in_viewport()


def test_server_restart_mid_conversation_leaves_every_message_once(chatters, chat_server):
    alice, bob = chatters("alice", "bob")
    alice.register()
    bob.register()
    alice.say("before the restart")
    bob.sees("before the restart")
    bob.say("me too")
    alice.sees("me too")

    chat_server.stop()
    alice.textbox.fill("typed while the server was away")
    alice.textbox.press("Enter")
    alice.page.wait_for_timeout(300)
    expect(alice.textbox).to_have_value("typed while the server was away")  # not acknowledged
    chat_server.start()

    for person in (alice, bob):
        person.page.wait_for_function(
            "() => window.__sockets.length > 1 && window.__sockets.at(-1).readyState === 1",
            timeout=30_000,
        )
    alice.textbox.press("Enter")  # send again: at most once, whatever reached the server
    for person in (alice, bob):
        person.sees("typed while the server was away")
    expect(alice.textbox).to_have_value("")
    bob.say("after the restart")
    alice.sees("after the restart")

    seed = Seed(chat_server)
    stored = [row[0] for row in seed.db.execute("SELECT id FROM messages ORDER BY id")]
    seed.close()
    assert len(stored) == 4
    for person in (alice, bob):
        assert person.message_ids() == stored


FOCUSED = """() => {
  const e = document.activeElement;
  const label = e.labels && e.labels[0] ? e.labels[0].textContent : '';
  return (e.getAttribute('aria-label') || label || e.textContent || e.tagName).trim().replace(/\\s+/g, ' ');
}"""


def test_phone_fold_keyboard_and_no_sideways_scrolling(chatters):
    alice = chatters("alice", viewport=PHONE)
    bob = chatters("bob")
    alice.register()
    bob.register()
    bob.say("x" * 400)  # one unbroken word, far wider than a phone
    bob.say("https://example.org/" + "very-long-path/" * 20)
    alice.sees("very-long-path")
    no_horizontal_scroll(alice.page)

    # The conversation list folds away; the control needs no script and works by keyboard.
    page = alice.page
    expect(alice.nav).to_be_hidden()
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED).startswith("Conversations")
    page.keyboard.press("Enter")
    expect(alice.nav).to_be_visible()
    expect(alice.nav.get_by_role("link", name="Public room")).to_have_attribute("aria-current", "page")
    no_horizontal_scroll(page)
    page.keyboard.press("Enter")
    expect(alice.nav).to_be_hidden()

    # The on-screen keyboard takes half the screen: the composer and newest message stay in view.
    page.set_viewport_size({"width": 360, "height": 380})
    expect(alice.textbox).to_be_in_viewport()
    expect(alice.log.get_by_role("article").last).to_be_in_viewport()
    alice.textbox.focus()
    page.keyboard.type("typed on a phone")
    page.keyboard.press("Enter")
    bob.sees("typed on a phone")
    expect(alice.textbox).to_have_value("")
    expect(alice.textbox).to_be_focused()  # ready for the next message
    expect(alice.log.get_by_role("article").last).to_be_in_viewport()
    no_horizontal_scroll(page)


def tab_to(page, locator, limit: int = 30) -> int:
    """Press Tab until the locator has focus; return how many presses it took."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if locator.evaluate("e => e === document.activeElement"):
            return presses
    raise AssertionError(f"{locator} is not reachable with Tab")


def test_everything_is_reachable_by_keyboard(chatters):
    alice = chatters("alice")
    alice.register()
    page = alice.page
    # In reading order from the first conversation: the list, the people search, the
    # header (room settings, message search, admin, settings, log out), the scrollable
    # log, the composer. (alice is the first account, so an administrator.) Tabbing starts
    # at the list, not wherever the page's load left the focus.
    alice.nav.get_by_role("link", name="Public room").focus()
    for target in (
        page.get_by_role("searchbox", name="Find people"),
        page.get_by_role("link", name="Room settings"),
        page.get_by_role("searchbox", name="Search messages"),
        page.get_by_role("link", name="Admin"),
        page.get_by_role("link", name="Settings", exact=True),
        page.get_by_role("button", name="Log out"),
        page.locator(".scroller"),
        page.get_by_label("Attach image"),
        alice.textbox,
        page.get_by_role("button", name="Send", exact=True),
    ):
        assert tab_to(page, target) <= 3, target
    # Enter sends from the keyboard alone.
    alice.textbox.focus()
    page.keyboard.type("sent with the keyboard")
    page.keyboard.press("Enter")
    alice.sees("sent with the keyboard")


def test_sending_too_fast_says_so_and_keeps_the_text(browser, server_factory):
    strict = server_factory(CHATAPP_MESSAGE_RATE="2/minute")
    alice = Chatter(browser, strict, "alice", viewport=PHONE)
    try:
        alice.register()
        alice.say("one")
        alice.say("two")
        alice.textbox.fill("three, too soon")
        alice.textbox.press("Enter")
        alert = alice.page.get_by_role("alert").filter(has_text=re.compile(r"\w"))
        expect(alert).to_be_visible()
        expect(alert).to_contain_text(re.compile("fast|wait|slow", re.I))
        expect(alice.textbox).to_have_value("three, too soon")  # nothing was lost
        expect(alice.log.get_by_role("article")).to_have_count(2)
        no_horizontal_scroll(alice.page)
    finally:
        alice.close()
