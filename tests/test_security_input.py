"""Hostile input, part two: broken and invisible text, refusal floods, admins' image
views, and chats opened from another site's link."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest
import websocket
from werkzeug.datastructures import MultiDict

from conftest import ROOT, csrf_from
from test_realtime import rows
from test_uploads import picture, upload

ERROR = 'id="composer-error"'
ACK = 'hx-target="#composer"'


def start_chat(person, peer: str) -> int:
    """Start the private chat with a peer as the page's button does; return its id."""
    token = csrf_from(person.get(f"/dm/{peer}").text)
    response = person.http.post(f"{person.server.url}/dm/{peer}", data={"csrf_token": token})
    assert response.status_code == 200, response.status_code
    match = re.search(r"/c/(\d+)$", response.url)
    assert match, response.url
    return int(match.group(1))


def make_admin(server, name: str) -> None:
    """Make a registered person an administrator with the command-line tool."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", "create-admin", name],
        cwd=ROOT, env=server.env, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr


# -- 5. text that cannot be encoded ---------------------------------------------------------


def frame_with(sock, **changes) -> dict:
    """A composer frame with some fields replaced (or added)."""
    frame = {"body": "hello", "client_id": str(uuid.uuid4()), "csrf_token": sock.csrf_token,
             "headers": {"HX-Request": "true"}}
    frame.update(changes)
    return frame


@pytest.mark.parametrize("field", ["body", "csrf_token", "client_id", "headers", "key"])
def test_a_lone_surrogate_in_any_frame_field_is_refused_and_the_socket_stays_open(
    server, people, database_url, field
):
    alice = people("alice")
    sock = alice.connect()
    lone = "\ud800"
    if field == "headers":
        frame = frame_with(sock, headers={"HX-Request": "true", "HX-Trigger": "x" + lone})
    elif field == "key":
        frame = frame_with(sock)
        frame["headers"] = {lone: "true"}
    else:
        frame = frame_with(sock, **{field: lone})
    sock.send_json(frame)  # json.dumps writes it as the escape "\ud800", as a browser would
    refused = sock.wait_for(ERROR)
    assert 'role="alert"' in refused and ("broken character" in refused or "session" in refused)
    assert rows(database_url, "SELECT count(*) FROM messages") == [(0,)]
    # The socket is still open and the next good message posts.
    sock.say("still here")
    sock.wait_for("still here")
    assert "Traceback" not in server.log()


def test_forms_refuse_text_that_cannot_be_encoded_with_a_field_error(app):
    from chatapp.auth import LoginForm, RegisterForm

    bad = "ali\udc80ce"
    with app.test_request_context():
        login = LoginForm(MultiDict({"username": bad, "password": "pass\ud800word"}),
                          meta={"csrf": False})
        assert not login.validate()
        assert "broken character" in login.username.errors[0]
        assert "broken character" in login.password.errors[0]
        register = RegisterForm(
            MultiDict({"username": bad, "password": "x\ud800" * 5, "confirm": "x\ud800" * 5}),
            meta={"csrf": False},
        )
        assert not register.validate()  # and raises nothing on the way (name lookup, hash)
        assert "broken character" in register.username.errors[0]
        assert "broken character" in register.password.errors[0]


def test_captions_and_message_checks_refuse_lone_surrogates(app):
    from chatapp.posting import text_problem

    assert "broken characters" in text_problem("a\ud800b", 100)
    assert text_problem("a \U0001f600 b", 100) is None  # a real emoji is fine


# -- 8. invisible-only text ------------------------------------------------------------------

INVISIBLE = ["\u200b\u200b", "\u2060", "\ufeff", "\u200c\u200d", "\u00a0\u2003\u3000",
             "\u200e\u202e", "\u3164", " \u200b \t"]


def test_messages_of_only_invisible_characters_are_refused_as_empty(
    server, people, database_url
):
    alice = people("alice")
    sock = alice.connect()
    for body in INVISIBLE:
        sock.say(body)
        assert "Type a message first." in sock.wait_for(ERROR), repr(body)
    assert rows(database_url, "SELECT count(*) FROM messages") == [(0,)]
    sock.say("\u200bvisible\u200b")  # invisible characters around text are not the problem
    sock.wait_for("visible")
    assert rows(database_url, "SELECT count(*) FROM messages") == [(1,)]


def test_an_invisible_only_caption_is_stored_as_no_caption(server, people, database_url):
    alice = people("alice")
    response = upload(alice, 1, picture("PNG", (64, 48)), caption="\u200b\u2060\ufeff")
    assert response.status_code == 200, response.text
    assert rows(database_url, "SELECT body FROM messages WHERE image_id IS NOT NULL") == [("",)]


# -- 8. refusal floods -----------------------------------------------------------------------


def test_a_socket_flooding_refused_frames_is_closed_with_1008_and_others_carry_on(
    server, people, database_url
):
    mallory, bob = people("mallory", "bob")
    flood = mallory.connect()
    calm = bob.connect()
    sent = 0
    try:
        for _ in range(500):  # far past CHATAPP_REFUSAL_RATE's default of 20 per 10 seconds
            flood.send_json(frame_with(flood, csrf_token="forged"))
            sent += 1
    except (OSError, websocket.WebSocketException):
        pass  # the server closed the socket while frames were still going out
    assert flood.close_code() == 1008
    errors = [f for f in flood.frames if ERROR in f]
    assert len(errors) <= 20, (sent, len(errors))
    # Someone else on the same worker is unaffected.
    calm.say("business as usual")
    calm.wait_for(ACK)
    assert rows(database_url, "SELECT body FROM messages") == [("business as usual",)]
    assert "more than 20 refused frames" in server.log()


@pytest.mark.databases("sqlite")
def test_a_few_refusals_do_not_close_the_socket(server_factory):
    from conftest import Person

    server = server_factory(CHATAPP_REFUSAL_RATE="3/minute")
    alice = Person(server, "alice").register()
    sock = alice.connect()
    for _ in range(3):
        sock.send_json(frame_with(sock, csrf_token="forged"))
        sock.wait_for(ERROR)
    sock.say("fine after three")
    sock.wait_for("fine after three")
    sock.send_json(frame_with(sock, csrf_token="forged"))  # the fourth in a minute
    assert sock.close_code() == 1008


# -- 6. admins viewing private images --------------------------------------------------------


def audit_entries(server, admin) -> list[str]:
    """The audit log's image-view rows as the admin console shows them."""
    page = admin.get("/admin/audit").text
    return re.findall(r"Viewed a private or deleted image</td>.*?<td>([^<]*)</td>\s*</tr>",
                      page, re.S)


def test_admins_viewing_private_or_deleted_images_is_audited_once_an_hour(
    server, people, database_url
):
    alice, bob, root = people("alice", "bob", "root")
    make_admin(server, "root")
    chat = start_chat(alice, "bob")
    assert upload(alice, chat, picture("PNG", (64, 48)), caption="private").status_code == 200
    assert upload(alice, 1, picture("PNG", (64, 48)), caption="public").status_code == 200
    ids = dict(rows(database_url, "SELECT body, image_id FROM messages"))
    private, public = ids["private"], ids["public"]

    for size in ("thumb", "full", "full", "thumb"):
        assert root.get(f"/admin/images/{private}/{size}").status_code == 200
        assert root.get(f"/admin/images/{public}/{size}").status_code == 200
    assert audit_entries(server, root) == [f"image {private}"]  # one entry, none for public

    # A deleted image from the public room is no longer public: viewing it is audited too.
    (message_id,) = rows(database_url, "SELECT id FROM messages WHERE body = 'public'")[0]
    token = csrf_from(root.get("/admin/").text)
    root.http.post(f"{server.url}/admin/messages/{message_id}/delete", data={"csrf_token": token})
    assert root.get(f"/admin/images/{public}/full").status_code == 200
    assert root.get(f"/admin/images/{public}/thumb").status_code == 200
    assert audit_entries(server, root) == [f"image {public}, deleted", f"image {private}"]

    # Another admin's view is their own entry.
    make_admin(server, "bob")
    assert bob.get(f"/admin/images/{private}/thumb").status_code == 200
    (count,) = rows(database_url, "SELECT count(*) FROM audit_entries "
                                  "WHERE action = 'view_private_image'")[0]
    assert count == 3


# -- 7. opening a chat from another site's link ----------------------------------------------


def test_a_link_from_another_site_creates_no_chat(server, people, database_url):
    alice, mallory = people("alice", "mallory")
    # A hostile page links (or redirects) alice's browser here: a top-level navigation,
    # which carries her SameSite=Lax cookie but no CSRF token.
    page = alice.get("/dm/mallory", headers={"Referer": "https://evil.example/",
                                             "Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200
    assert "Start chat" in page.text and 'name="csrf_token"' in page.text
    assert rows(database_url, "SELECT count(*) FROM conversations WHERE key <> 'public'") == [(0,)]
    assert rows(database_url, "SELECT count(*) FROM memberships m JOIN conversations c "
                              "ON c.id = m.conversation_id WHERE c.key <> 'public'") == [(0,)]
    # A cross-site form POST carries no valid token either.
    forged = mallory.http.post(f"{server.url}/dm/alice")
    assert forged.status_code == 400
    assert rows(database_url, "SELECT count(*) FROM conversations WHERE key <> 'public'") == [(0,)]
    # Neither sidebar shows a chat with the other.
    for person in (alice, mallory):
        assert not re.search(r'href="/c/\d+"', person.get("/").text)

    # Starting it for real is a POST with the page's token; after that a GET opens it.
    chat = start_chat(mallory, "alice")
    assert mallory.get("/dm/alice").url.endswith(f"/c/{chat}")
    assert alice.get("/dm/mallory").url.endswith(f"/c/{chat}")
    assert f'href="/c/{chat}"' in alice.get("/").text


def test_nobody_and_oneself_have_no_chat_page(server, people):
    alice = people("alice")
    token = csrf_from(alice.get("/").text)
    assert alice.get("/dm/nobody").status_code == 404
    assert alice.get("/dm/alice").status_code == 404
    response = alice.http.post(f"{server.url}/dm/alice", data={"csrf_token": token})
    assert response.status_code == 404
