"""The admin console: who may use it, searching every message, moderation, privacy."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import websocket

from chatapp.models import AuditEntry, Conversation, Image, Message, User, db
from conftest import (
    MESSAGE_ID, PASSWORD, POSTGRES_ADMIN_URL, ROOT, TEST_DATABASES, Person, base_env, csrf_from,
    open_private_chat, postgres_database,
)

ROW = re.compile(r'id="admin-message-(\d+)"')


def post(conversation, author, body, created_at=None) -> int:
    """Store a message as the socket would; optionally back-dated."""
    message, _ = Message.post(conversation, author, body, str(uuid.uuid4()))
    if created_at:
        message.created_at = created_at
    db.session.commit()
    return message.id


def _build_world(app, runner) -> dict:
    """root (an admin made by the CLI), alice, bob, carol; public and private messages."""
    result = runner.invoke(args=["create-admin", "root"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    with app.app_context():
        alice, bob, carol = (User.register(n, PASSWORD) for n in ("alice", "bob", "carol"))
        root = User.by_username("root")
        room = Conversation.public_room()
        dm = Conversation.direct(alice, bob)
        dm2 = Conversation.direct(alice, carol)
        ids = {
            "hello": post(room, alice, "hello everyone"),
            "lunch": post(room, bob, "lunch plans at noon"),
            "pizza": post(dm, alice, "secret pizza recipe"),
            "carol": post(dm2, carol, "hi alice, carol here"),
            "old": post(room, carol, "an old 100% note", datetime(2020, 1, 15, 12, 0)),
        }
        image = Image(path="world.png", thumb_path="world-thumb.png", content_type="image/png",
                      width=80, height=60, size_bytes=100, thumb_width=40, thumb_height=30)
        ids["picture"] = Message.post(dm, bob, "", str(uuid.uuid4()), image=image)[0].id
        db.session.commit()  # models flush; the caller commits
        return {
            "ids": ids, "dm": dm.id, "dm2": dm2.id, "room": room.id,
            "alice": alice.id, "bob": bob.id, "root": root.id, "image": image.id,
        }


def _build_world_in(tmp_path: Path, url: str) -> dict:
    """Migrate the database at url and build the world in it."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CHATAPP_") or k == "REDIS_URL"]:
            mp.delenv(key)
        for key, value in base_env(tmp_path, url).items():
            mp.setenv(key, value)
        from flask_migrate import upgrade

        from chatapp import create_app

        app = create_app({"TESTING": True})
        with app.app_context():
            upgrade()
        world = _build_world(app, app.test_cli_runner())
        with app.app_context():
            db.engine.dispose()
    return world


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory):
    """The world built once (password hashing is slow on purpose); each test gets a copy."""
    tmp_path = tmp_path_factory.mktemp("world")
    world = _build_world_in(tmp_path, f"sqlite:///{tmp_path / 'world.sqlite3'}")
    return tmp_path / "world.sqlite3", world


@pytest.fixture(scope="module")
def postgres_world(tmp_path_factory):
    """The world built once in a PostgreSQL database that each test's database copies."""
    with postgres_database() as url:
        world = _build_world_in(tmp_path_factory.mktemp("world"), url)
        yield url.rsplit("/", 1)[1], world


def pytest_generate_tests(metafunc):
    """Every test here runs on each test database (this module brings its database_url)."""
    if "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", TEST_DATABASES, indirect=True)


@pytest.fixture
def database_url(request, tmp_path):
    """This test's database: a copy of the built world, on the engine under test."""
    if request.param == "sqlite":
        source, _ = request.getfixturevalue("sqlite_world")
        target = tmp_path / "chatapp.sqlite3"
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        yield f"sqlite:///{target}"
        return
    import psycopg

    template, _ = request.getfixturevalue("postgres_world")
    name = f"chatapp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def world(request, app, database_url):
    """The ids of the world's users, conversations and messages."""
    built = "postgres_world" if database_url.startswith("postgresql") else "sqlite_world"
    return request.getfixturevalue(built)[1]


def ids_on(response) -> list[int]:
    return [int(i) for i in ROW.findall(response.get_data(as_text=True))]


# -- who may use the console -----------------------------------------------------------

ADMIN_URLS = [
    ("GET", "/admin/"),
    ("GET", "/admin/?q=pizza&author=alice"),
    ("GET", "/admin/users"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/conversations/{dm}"),
    ("GET", "/admin/images/{image}/thumb"),
    ("GET", "/admin/images/{image}/full"),
    ("POST", "/admin/messages/{pizza}/delete"),
    ("POST", "/admin/users/{bob}/deactivate"),
    ("POST", "/admin/users/{bob}/reactivate"),
    ("POST", "/admin/users/{bob}/promote"),
    ("POST", "/admin/users/{root}/demote"),
]


def _request(client, world, method, url, token):
    url = url.format(dm=world["dm"], pizza=world["ids"]["pizza"], bob=world["bob"],
                     root=world["root"], image=world["image"])
    if method == "POST":
        return client.post(url, data={"csrf_token": token})
    return client.get(url)


def _unchanged(app, world):
    with app.app_context():
        bob, root = db.session.get(User, world["bob"]), db.session.get(User, world["root"])
        assert bob.active and not bob.is_admin and root.is_admin
        assert db.session.get(Message, world["ids"]["pizza"]).deleted_at is None
        assert db.session.query(AuditEntry).count() == 0


@pytest.mark.parametrize(("method", "url"), ADMIN_URLS)
def test_anonymous_users_are_sent_to_log_in(app, client, world, method, url):
    token = csrf_from(client.get("/login/").get_data(as_text=True))  # a valid token: only the login is missing
    response = _request(client, world, method, url, token)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login/?next=")
    _unchanged(app, world)


@pytest.mark.parametrize(("method", "url"), ADMIN_URLS)
def test_members_who_are_not_admins_get_403(app, client, auth, world, method, url):
    auth.login("alice")
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = _request(client, world, method, url, token)
    assert response.status_code == 403
    assert 'role="alert"' in response.get_data(as_text=True)
    _unchanged(app, world)


def test_admin_posts_need_the_csrf_token(app, client, auth, world):
    auth.login("root")
    response = client.post(f"/admin/messages/{world['ids']['pizza']}/delete")
    assert response.status_code == 400
    response = client.post(f"/admin/users/{world['bob']}/deactivate", data={"csrf_token": "forged"})
    assert response.status_code == 400
    _unchanged(app, world)


def test_chat_page_links_admins_to_the_console(client, auth, world):
    auth.login("alice")
    assert 'href="/admin/"' not in client.get("/").get_data(as_text=True)
    auth.logout()
    auth.login("root")
    assert 'href="/admin/"' in client.get("/").get_data(as_text=True)


# -- every message, searchable ---------------------------------------------------------


@pytest.fixture
def admin(client, auth, world):
    auth.login("root")
    return client


def test_every_message_newest_first(admin, world):
    ids = world["ids"]
    response = admin.get("/admin/")
    assert response.status_code == 200
    assert ids_on(response) == sorted(ids.values(), reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=PIZZA", ["pizza"]),
        ("q=100%25", ["old"]),  # a literal %, not a wildcard
        ("q=%25", ["old"]),
        ("author=bob", ["lunch", "picture"]),
        ("author=Carol", ["carol", "old"]),
        ("conversation=Public+room", ["hello", "lunch", "old"]),
        ("conversation=public", ["hello", "lunch", "old"]),
        ("conversation=carol", ["carol"]),  # carol's private chats
        ("conversation=alice", ["pizza", "carol", "picture"]),
        ("conversation=alice+%26+bob", ["pizza", "picture"]),
        ("since=2020-01-01&until=2020-01-31", ["old"]),
        ("until=2020-01-15", ["old"]),  # the end date is inclusive
        ("since=2021-01-01", ["hello", "lunch", "pizza", "carol", "picture"]),
        ("q=hi&author=carol&conversation=alice", ["carol"]),
    ],
)
def test_search_by_each_field(admin, world, query, expected):
    response = admin.get(f"/admin/?{query}")
    assert response.status_code == 200
    assert sorted(ids_on(response)) == sorted(world["ids"][k] for k in expected)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("since=yesterday", "Enter a date as YYYY-MM-DD."),
        ("since=2021-02-01&until=2021-01-01", "The end date is before the start date"),
        ("author=nobody", "Nobody is called nobody"),
        ("conversation=alice+ghost", "Nobody is called ghost"),
    ],
)
def test_bad_search_says_what_to_fix(admin, world, query, error):
    response = admin.get(f"/admin/?{query}")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert re.search(r'role="alert">[^<]*' + re.escape(error), html)
    assert ids_on(response) == []


def test_messages_are_paginated(app, admin, world):
    with app.app_context():
        room, alice = Conversation.public_room(), db.session.get(User, world["alice"])
        posted = [post(room, alice, f"filler {i}") for i in range(52)]
    first = admin.get("/admin/?author=alice")
    page1 = ids_on(first)
    assert page1 == sorted(posted, reverse=True)[:50]
    older = re.search(r'href="([^"]+)">Older messages', first.get_data(as_text=True)).group(1)
    assert "author=alice" in older
    page2 = ids_on(admin.get(older.replace("&amp;", "&")))
    assert page2 == sorted(posted, reverse=True)[50:] + [world["ids"]["pizza"], world["ids"]["hello"]]


def test_image_messages_show_a_thumbnail_even_from_private_chats(app, admin, world):
    from PIL import Image as Picture

    upload_dir = Path(app.config["UPLOAD_DIR"])
    for name, size in (("world.png", (80, 60)), ("world-thumb.png", (40, 30))):
        Picture.new("RGB", size, "red").save(upload_dir / name)
    html = admin.get("/admin/?author=bob").get_data(as_text=True)
    row = html.split(f'id="admin-message-{world["ids"]["picture"]}"')[1].split("</tr>")[0]
    thumb = re.search(r'<img class="admin-thumb" src="([^"]+)"[^>]*alt="Image from bob"', row)
    full = re.search(r'<a href="([^"]+)"><img', row)
    assert thumb and full
    for url, size in ((thumb.group(1), (40, 30)), (full.group(1), (80, 60))):
        with admin.get(url) as response:
            assert response.status_code == 200 and response.mimetype == "image/png"
            assert Picture.open(io.BytesIO(response.data)).size == size
    # The admin is no member of the chat: the members' route still refuses them.
    assert admin.get(f"/images/{world['image']}/thumb").status_code == 404


# -- moderation, in-process --------------------------------------------------------------


def test_deleting_a_message_hides_it_from_the_chat(app, admin, client, auth, world):
    pizza = world["ids"]["pizza"]
    token = csrf_from(admin.get("/admin/").get_data(as_text=True))
    response = admin.post(f"/admin/messages/{pizza}/delete",
                          data={"csrf_token": token, "next": "/admin/?q=pizza"})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/?q=pizza"
    page = admin.get("/admin/?q=pizza").get_data(as_text=True)
    assert "Deleted the message from alice" in page and "is-deleted" in page
    with app.app_context():
        assert db.session.get(Message, pizza).deleted_at is not None
        entry = db.session.query(AuditEntry).filter_by(action="delete_message").one()
        assert entry.target_user_id == world["alice"]
    auth.logout()
    auth.login("alice")
    assert "secret pizza" not in client.get(f"/c/{world['dm']}").get_data(as_text=True)


def test_users_list_and_search(admin, world):
    html = admin.get("/admin/users").get_data(as_text=True)
    for name in ("alice", "bob", "carol", "root"):
        assert f">{name}" in html
    found = admin.get("/admin/users?q=CAR").get_data(as_text=True)
    assert ">carol" in found and ">alice" not in found and ">bob" not in found


@pytest.mark.parametrize(
    ("action", "check"),
    [
        ("deactivate", lambda u: not u.active and u.session_epoch == 1),
        ("promote", lambda u: u.is_admin),
    ],
)
def test_user_actions(app, admin, world, action, check):
    token = csrf_from(admin.get("/admin/users").get_data(as_text=True))
    response = admin.post(f"/admin/users/{world['bob']}/{action}", data={"csrf_token": token})
    assert response.status_code == 303
    with app.app_context():
        assert check(db.session.get(User, world["bob"]))
    undo = {"deactivate": "reactivate", "promote": "demote"}[action]
    admin.post(f"/admin/users/{world['bob']}/{undo}", data={"csrf_token": token})
    with app.app_context():
        bob = db.session.get(User, world["bob"])
        assert bob.active and not bob.is_admin
        actions = [e.action for e in db.session.query(AuditEntry).order_by(AuditEntry.id)]
    assert actions == [action, undo]


@pytest.mark.parametrize("action", ["deactivate", "demote"])
def test_admins_cannot_deactivate_or_demote_themselves(app, admin, world, action):
    token = csrf_from(admin.get("/admin/users").get_data(as_text=True))
    response = admin.post(f"/admin/users/{world['root']}/{action}", data={"csrf_token": token},
                          follow_redirects=True)
    assert 'role="alert">You cannot do that to your own account' in response.get_data(as_text=True)
    with app.app_context():
        root = db.session.get(User, world["root"])
        assert root.active and root.is_admin and root.session_epoch == 0


def test_unknown_user_action_is_404(admin, world):
    token = csrf_from(admin.get("/admin/users").get_data(as_text=True))
    assert admin.post(f"/admin/users/{world['bob']}/delete", data={"csrf_token": token}).status_code == 404


# -- privacy ---------------------------------------------------------------------------


def test_opening_a_private_chat_is_audited(app, admin, world):
    response = admin.get(f"/admin/conversations/{world['dm']}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "secret pizza recipe" in html and "alice &amp; bob" in html
    with app.app_context():
        entry = db.session.query(AuditEntry).one()
        assert (entry.actor_id, entry.action, entry.conversation_id) == (
            world["root"], "open_private_chat", world["dm"])
    admin.get(f"/admin/conversations/{world['dm']}")  # every opening counts
    admin.get(f"/admin/conversations/{world['room']}")  # the public room is not private
    with app.app_context():
        assert db.session.query(AuditEntry).filter_by(action="open_private_chat").count() == 2
        assert db.session.query(AuditEntry).count() == 2
    log = admin.get("/admin/audit").get_data(as_text=True)
    assert log.count("Opened a private chat") == 2
    assert f'href="/admin/conversations/{world["dm"]}">alice &amp; bob</a>' in log


def test_listing_private_messages_is_audited(app, admin, world):
    admin.get("/admin/?conversation=public")
    with app.app_context():
        assert db.session.query(AuditEntry).count() == 0
    admin.get("/admin/?q=pizza")
    with app.app_context():
        entry = db.session.query(AuditEntry).one()
        assert entry.action == "read_private_messages"
        assert "q=pizza" in entry.detail and f"chats {world['dm']}" in entry.detail


# -- moderation, live: a real server and real sockets ------------------------------------


def close_code(sock, timeout: float = 5.0) -> int:
    """Read a socket until the server closes it; return the close code it sent."""
    sock.ws.settimeout(timeout)
    while True:
        opcode, frame = sock.ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            sock.ws.shutdown()  # the close handshake is done; let go of the TCP socket
            return int.from_bytes(frame.data[:2], "big")


def test_deleting_a_message_removes_it_from_every_open_page(server, people):
    dave, erin, fay, mod = people("dave", "erin", "fay", "mod")
    promoted = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", "create-admin", "mod"],
        cwd=ROOT, env=server.env, capture_output=True, text=True,
    )
    assert promoted.returncode == 0, promoted.stderr
    d, e = dave.connect(), erin.connect()
    elsewhere = open_private_chat(server, "fay", "dave")
    f = fay.connect(elsewhere)  # fay is in a private chat: the room's message is unread
    d.say("buy cheap pills")
    message_id = int(MESSAGE_ID.search(e.wait_for("buy cheap pills")).group(1))
    d.wait_for(f'id="message-{message_id}"')
    f.wait_for('aria-label="1 unread"')

    token = csrf_from(mod.get("/admin/").text)
    response = mod.http.post(f"{server.url}/admin/messages/{message_id}/delete",
                             data={"csrf_token": token}, allow_redirects=False)
    assert response.status_code == 303

    removal = f'<hx-partial hx-target="#message-{message_id}" hx-swap="delete">'
    for sock in (d, e):
        sock.wait_for(removal)
    # fay's badge for the room is counted again: nothing unread is left.
    f.wait_for('<hx-partial hx-target="#badge-1" hx-swap="outerHTML">'
               '<span id="badge-1" class="badge-slot"></span>')
    assert "buy cheap pills" not in erin.get("/").text
    assert message_id not in erin.connect().message_ids()


def test_deactivating_closes_sockets_ends_sessions_refuses_login(server, people, world):
    frank, gina = people("frank", "gina")
    root = Person(server, "root")
    assert root.login().url == server.url + "/"  # root was made an admin by the CLI
    tabs = [frank.connect(), frank.connect()]
    watcher = gina.connect()
    tabs[0].say("my last words")
    watcher.wait_for("my last words")

    users = root.get("/admin/users?q=frank").text
    frank_id = int(re.search(r'<tr id="user-(\d+)">\s*<td>frank', users).group(1))
    response = root.http.post(f"{server.url}/admin/users/{frank_id}/deactivate",
                              data={"csrf_token": csrf_from(users)}, allow_redirects=False)
    assert response.status_code == 303

    for tab in tabs:  # every socket of frank's, at once, with "policy violation"
        assert close_code(tab) == 1008
    watcher.say("still here")  # nobody else is disturbed
    watcher.wait_for("still here")

    assert frank.get("/").url.startswith(server.url + "/login/")  # the session is over
    refused = frank.login()
    assert refused.status_code == 400 and "This account has been deactivated" in refused.text
    with pytest.raises(websocket.WebSocketBadStatusException) as handshake:
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws/1", origin=server.url,
                                    header=[f"Cookie: {frank.cookie_header()}"], timeout=5)
    assert handshake.value.status_code == 403
    assert "my last words" in gina.get("/").text  # the old messages stay


@pytest.mark.browser
def test_an_admin_deletes_a_message_and_it_vanishes_from_open_pages(browser, server, world):
    from test_browser import Chatter, expect

    alice, bob = Chatter(browser, server, "alice").login(), Chatter(browser, server, "bob").login()
    console = browser.new_context(base_url=server.url)
    try:
        alice.say("click here for free money")
        bob.sees("click here for free money")

        page = console.new_page()
        page.goto("/admin/")  # not logged in yet: sent to log in, then back
        page.get_by_label("Username").fill("root")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(server.url + "/admin/")
        page.get_by_label("Text").fill("free money")
        page.get_by_role("button", name="Search").click()
        row = page.get_by_role("row").filter(has_text="click here for free money")
        expect(row).to_have_count(1)
        row.get_by_role("button", name="Delete message").click()
        expect(page.get_by_role("status")).to_contain_text("Deleted the message from alice")

        for chatter in (alice, bob):  # gone from both open pages, with no reload
            expect(chatter.log.get_by_role("article").filter(has_text="free money")).to_have_count(0)
            assert chatter.errors == []
    finally:
        console.close()
        alice.close()
        bob.close()
