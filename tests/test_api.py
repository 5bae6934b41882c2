"""The bots' HTTP API in process: keys, errors, idempotency, paging, the admin's Bots page,
the OpenAPI document against the routes, and the webhook address guard (both databases)."""

from __future__ import annotations

import html
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatapp import bots, webhooks
from chatapp.extensions import db
from chatapp.models import Conversation, Message, User
from conftest import PASSWORD, csrf_from

TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def world(app):
    """alice and bob (people), a DM between them, and the bot "ci" with its key."""
    with app.app_context():
        alice, bob = User.register("alice", PASSWORD), User.register("bob", PASSWORD)
        dm = Conversation.direct(alice, bob)
        bot, key = bots.create("ci", None)
        bot_dm = Conversation.direct(alice, bot)
        db.session.commit()
        return {"key": key, "dm": dm.id, "bot_dm": bot_dm.id, "bot": bot.id}


def call(client, key, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)


def count(app, **where) -> int:
    with app.app_context():
        return db.session.query(Message).filter_by(**where).count()


def test_a_wrong_or_missing_key_is_refused_without_saying_which(client, world):
    answers = [
        client.get("/api/v1/conversations"),
        client.get("/api/v1/conversations", headers={"Authorization": world["key"]}),
        client.get("/api/v1/conversations", headers={"Authorization": f"Basic {world['key']}"}),
        call(client, world["key"] + "x", "GET", "/conversations"),
        call(client, world["key"][:-1], "GET", "/conversations"),
        call(client, "", "GET", "/conversations"),
        call(client, "\u00e9" * 10, "GET", "/conversations"),
        call(client, world["key"] + "x", "POST", "/conversations/1/messages", data="hi",
             headers=TEXT),
    ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.get_data() for r in answers}) == 1
    assert answers[0].get_json() == {"error": bots_unauthorized()}
    assert answers[0].headers["WWW-Authenticate"].startswith("Bearer")
    assert call(client, world["key"], "GET", "/conversations").status_code == 200


def bots_unauthorized() -> str:
    from chatapp.api import UNAUTHORIZED

    return UNAUTHORIZED


def test_a_bot_sees_only_its_conversations(client, world):
    listed = call(client, world["key"], "GET", "/conversations").get_json()["conversations"]
    assert {(c["id"], c["kind"]) for c in listed} == {(1, "public"), (world["bot_dm"], "direct")}
    assert next(c for c in listed if c["kind"] == "direct")["title"] == "alice"
    for method in ("GET", "POST"):
        for conversation in (world["dm"], 999999, 2**62):
            r = call(client, world["key"], method, f"/conversations/{conversation}/messages",
                     data="hi", headers=TEXT)
            assert r.status_code == 404 and "not a member" in r.get_json()["error"]
    assert call(client, world["key"], "GET", "/nowhere").get_json() == {
        "error": "There is nothing at this address."}
    r = call(client, world["key"], "DELETE", "/conversations/1/messages")
    assert r.status_code == 405 and "error" in r.get_json()


def test_bad_bodies_get_clear_errors_and_post_nothing(app, client, world):
    key = world["key"]
    cases = [
        ({"data": "", "headers": TEXT}, 400, "Type a message"),
        ({"data": "  \u200b ", "headers": TEXT}, 400, "Type a message"),
        ({"data": "x" * 4001, "headers": TEXT}, 400, "at most 4000"),
        ({"data": b"\xff\xfe", "headers": TEXT}, 400, "UTF-8"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "Malformed JSON"),
        ({"json": ["body"]}, 400, "Malformed JSON"),
        ({"json": {"body": 5}}, 400, "Malformed JSON"),
        ({"json": {"text": "hi"}}, 400, "Malformed JSON"),
        ({"data": {"image": (__import__("io").BytesIO(b"GIF89a nope"), "x.gif")}}, 422, ""),
        ({"data": {"file": (__import__("io").BytesIO(b"abc"), "x.txt")}}, 400, '"image"'),
        ({"data": "hi", "headers": {**TEXT, "Idempotency-Key": "\u00e9"}}, 400, "Idempotency"),
    ]
    for kwargs, status, text in cases:
        r = call(client, key, "POST", "/conversations/1/messages", **kwargs)
        assert r.status_code == status, (kwargs, r.get_data())
        assert text in r.get_json()["error"]
    assert count(app, author_id=world["bot"]) == 0
    r = call(client, key, "POST", "/conversations/1/messages", data="x" * 4000, headers=TEXT)
    assert r.status_code == 201


def test_an_idempotency_key_makes_one_message(app, client, world):
    key, headers = world["key"], {**TEXT, "Idempotency-Key": "deploy-2024-06-01-1"}
    first = call(client, key, "POST", "/conversations/1/messages", data="deployed", headers=headers)
    again = call(client, key, "POST", "/conversations/1/messages", data="deployed", headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.get_json() == again.get_json()
    assert first.headers["Location"] == first.get_json()["url"]
    # The same key for another conversation is a mistake, said so; a new key is a new message.
    elsewhere = call(client, key, "POST", f"/conversations/{world['bot_dm']}/messages",
                     data="deployed", headers=headers)
    assert elsewhere.status_code == 409
    other = call(client, key, "POST", "/conversations/1/messages", json={"body": "deployed"},
                 headers={"Idempotency-Key": "deploy-2024-06-01-2"})
    assert other.status_code == 201
    plain = [call(client, key, "POST", "/conversations/1/messages", data="again", headers=TEXT)
             for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]  # without a key, each post is new
    assert count(app, author_id=world["bot"]) == 4


def test_reading_pages_through_messages_after_an_id(app, client, world):
    key = world["key"]
    with app.app_context():
        alice = User.by_username("alice")
        room = Conversation.public_room()
        for n in range(7):
            Message.post(room, alice, f"note {n}", f"00000000-0000-4000-8000-00000000000{n}")
        deleted = Message.post(room, alice, "gone", "00000000-0000-4000-8000-000000000009")[0]
        deleted.deleted_at = deleted.created_at
        db.session.commit()
    seen, after, pages = [], 0, 0
    while True:
        r = call(client, key, "GET", f"/conversations/1/messages?after={after}&limit=3")
        page = r.get_json()
        seen += [m["body"] for m in page["messages"]]
        after, pages = page["next_after"], pages + 1
        if not page["has_more"]:
            break
    assert seen == [f"note {n}" for n in range(7)] and pages == 3
    tail = call(client, key, "GET", f"/conversations/1/messages?after={after}").get_json()
    assert tail == {"messages": [], "has_more": False, "next_after": after}
    far = call(client, key, "GET", "/conversations/1/messages?after=99999999999").get_json()
    assert far["messages"] == []  # past any id (PostgreSQL's are 32-bit): nothing, no error
    for bad in ("limit=0", "limit=201", "after=-1", "after=x", "limit=1e3", "after=1" + "0" * 18):
        r = call(client, key, "GET", f"/conversations/1/messages?{bad}")
        assert r.status_code == 400 and "limit" in r.get_json()["error"], bad
    message = call(client, key, "GET", "/conversations/1/messages?limit=1").get_json()["messages"][0]
    assert message["author"] == {"id": message["author"]["id"], "name": "alice", "bot": False}
    assert re.fullmatch(r"http://localhost/c/1/@\d+", message["url"])


def test_the_api_rate_is_per_key(tmp_path, database_url, monkeypatch):
    monkeypatch.setenv("CHATAPP_API_RATE", "3/minute")
    from chatapp import create_app

    from conftest import base_env
    for k, v in base_env(tmp_path, database_url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CHATAPP_API_RATE", "3/minute")
    app = create_app({"TESTING": True})
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
        _, first = bots.create("one", None)
        _, second = bots.create("two", None)
        db.session.commit()
    client = app.test_client()
    codes = [call(client, first, "GET", "/conversations").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert call(client, second, "GET", "/conversations").status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_the_openapi_document_matches_the_routes(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    assert spec["servers"] == [{"url": "http://localhost/api/v1"}]
    for path, ops in spec["paths"].items():  # every path parameter is declared
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


def admin_client(app, client, runner):
    result = runner.invoke(args=["create-admin", "root"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code == 0
    token = csrf_from(client.get("/login/").get_data(as_text=True))
    client.post("/login/", data={"csrf_token": token, "username": "root", "password": PASSWORD})
    return csrf_from(client.get("/admin/bots").get_data(as_text=True))


def test_admins_create_bots_see_the_key_once_regenerate_and_delete(app, client, runner,
                                                                   caplog):
    caplog.set_level(logging.DEBUG)
    token = admin_client(app, client, runner)
    page = client.post("/admin/bots", data={"csrf_token": token, "name": "deploy",
                                            "webhook_url": "https://ci.example.com/hook"})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    key = re.search(r'id="bot-key" type="text" value="([^"]+)"', page.get_data(as_text=True))[1]
    assert len(key) >= 43 and key.startswith("chatbot_")
    assert key not in client.get("/admin/bots").get_data(as_text=True)  # shown once
    with app.app_context():
        bot = User.by_username("deploy")
        assert bot.is_bot and bot.api_key_hash == bots.digest(key) and key not in bot.api_key_hash
        assert bot.webhook_url == "https://ci.example.com/hook"
        bot_id = bot.id
    assert call(client, key, "GET", "/conversations").status_code == 200

    page = client.post(f"/admin/bots/{bot_id}/key", data={"csrf_token": token})
    new = re.search(r'id="bot-key" type="text" value="([^"]+)"', page.get_data(as_text=True))[1]
    assert new != key
    assert call(client, key, "GET", "/conversations").status_code == 401  # at once
    assert call(client, new, "POST", "/conversations/1/messages", data="hi",
                headers=TEXT).status_code == 201

    assert client.post(f"/admin/bots/{bot_id}/delete", data={"csrf_token": token}).status_code == 303
    assert call(client, new, "GET", "/conversations").status_code == 401
    assert "No bots yet." in client.get("/admin/bots").get_data(as_text=True)
    assert client.post(f"/admin/bots/{bot_id}/key", data={"csrf_token": token}).status_code == 404
    # Keys never reach the logs.
    assert key not in caplog.text and new not in caplog.text
    audit = html.unescape(client.get("/admin/audit").get_data(as_text=True))
    for label in ("Created a bot", "Regenerated a bot's key", "Deleted a bot"):
        assert label in audit


def test_bad_bot_forms_change_nothing(app, client, runner, auth):
    token = admin_client(app, client, runner)
    for name, url, text in [("x", "", "3 to 32"), ("root", "", "taken"),
                            ("okbot", "ftp://example.com/", "http://"),
                            ("okbot", "javascript:alert(1)", "http://"),
                            ("okbot", "http://user:pw@example.com/", "password"),
                            ("okbot", "http://example.com/" + "a" * 2048, "2048")]:
        r = client.post("/admin/bots", data={"csrf_token": token, "name": name, "webhook_url": url})
        assert r.status_code == 400 and text in r.get_data(as_text=True), (name, url)
    assert client.post("/admin/bots", data={"name": "nocsrf"}).status_code == 400
    with app.app_context():
        assert db.session.query(User).filter_by(is_bot=True).count() == 0
    client.post("/logout", data={"csrf_token": token})
    auth.register("mallory")
    assert client.get("/admin/bots").status_code == 403


def test_bots_never_log_in_through_the_form(app, client, runner, world):
    for password in ("", "!bot", PASSWORD, world["key"]):
        token = csrf_from(client.get("/login/").get_data(as_text=True))
        r = client.post("/login/", data={"csrf_token": token, "username": "ci",
                                         "password": password or "x"})
        assert "Wrong username or password" in r.get_data(as_text=True)
    assert client.get("/", follow_redirects=False).status_code == 302
    result = runner.invoke(args=["create-admin", "ci"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code != 0 and "bot" in result.output


def test_the_cli_creates_a_bot_and_prints_its_key(app, client, runner):
    result = runner.invoke(args=["create-bot", "nightly", "--webhook", "https://h.example/x"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert call(client, key, "GET", "/conversations").status_code == 200


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/", "http://localhost/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://100.64.0.1/", "http://[fe80::1]/", "http://2130706433/",
])
@pytest.mark.databases("sqlite")
def test_webhooks_refuse_non_public_addresses_unless_allowed(url):
    with pytest.raises(webhooks.Unsafe):
        webhooks.resolve(url, allow_private=False)
    if "fe80" not in url:
        assert webhooks.resolve(url, allow_private=True)[3]


@pytest.mark.databases("sqlite")
def test_webhooks_follow_no_redirect_and_refuse_other_schemes():
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        with pytest.raises(webhooks.Failed) as failed:
            webhooks.call(url, {"x": 1}, timeout=2, allow_private=True)
        assert not failed.value.retry and hits == ["/hook"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    for url in ("file:///etc/passwd", "gopher://example.com/", "ftp://example.com/"):
        with pytest.raises(webhooks.Unsafe):
            webhooks.resolve(url, allow_private=True)
