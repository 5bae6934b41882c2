"""The posting path's shortcuts keep what they stand in for: the plain-statement insert,
the socket's kept composer, its checked CSRF token and the message partial's links."""

import re
import threading
import time
import uuid

from flask import url_for
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select

from chatapp import id_url, posting, search_index
from chatapp.extensions import db
from chatapp.models import Conversation, Membership, Mention, Message, User
from chatapp.posting import Refusal
from chatapp.realtime.ws import CheckedToken, _parse
from chatapp.search_text import term
from conftest import Person
from test_realtime import rows

UUID = re.compile(r'name="client_id" value="([0-9a-f-]{36})"')


def _people(app, *names):
    users = []
    for name in names:
        user = User(username=name, username_key=name)
        user.set_password("a long password 1")
        db.session.add(user)
        users.append(user)
    room = Conversation.public_room()
    db.session.flush()
    for user in users:
        db.session.add(Membership(conversation_id=room.id, user_id=user.id, last_read_id=0))
    db.session.commit()
    return room, users


def test_a_posted_message_is_stored_whole_searchable_and_read_by_its_author(app):
    with app.test_request_context("/"):
        room, (ann, bob) = _people(app, "ann", "bob")
        message, created = posting.post(room, ann, "hello @bob, see *this*", str(uuid.uuid4()))
        assert created
        db.session.expire_all()  # what the database holds, not what the session remembers
        stored = db.session.get(Message, message.id)
        assert stored.body == "hello @bob, see *this*"
        assert '<a href="/dm/bob" class="mention"' in stored.body_html
        assert "<em>this</em>" in stored.body_html
        assert stored.conversation.last_message_at == stored.created_at
        assert Mention.of(message.id) == [bob.id]
        read = db.session.scalar(select(Membership.last_read_id).where(
            Membership.user_id == ann.id, Membership.conversation_id == room.id))
        assert read == message.id
        found = search_index.matching_ids([term("hello")], conversations=[room.id], authors=None,
                                          before=None, limit=10)
        assert found == [message.id]


def test_a_resend_returns_the_stored_message_and_stores_nothing(app):
    with app.test_request_context("/"):
        room, (ann,) = _people(app, "ann")
        client_id = str(uuid.uuid4())
        first, created = posting.post(room, ann, "once", client_id)
        again, created_again = posting.post(room, ann, "once", client_id)
        assert created and not created_again and again.id == first.id
        assert db.session.scalar(select(db.func.count()).select_from(Message)) == 1


def test_the_new_message_is_in_the_session_with_nothing_pending(app):
    with app.test_request_context("/"):
        room, (ann,) = _people(app, "ann")
        message, _ = posting.post(room, ann, "hi", str(uuid.uuid4()))
        assert message in db.session and not db.session.dirty and not db.session.new
        assert message.author is ann and message.conversation is room
        # Changed later through the ORM, it is written as any loaded message is.
        message.body = "hi again"
        db.session.commit()
        assert rows(str(db.engine.url), "SELECT body FROM messages") == [("hi again",)]


def test_id_url_builds_what_url_for_builds(app):
    with app.test_request_context("/"):
        for endpoint, ids in [("messages.permalink", {"conversation_id": 3, "message_id": 42}),
                              ("messages.edit_form", {"message_id": 7}),
                              ("messages.delete_form", {"message_id": 12345}),
                              ("messages.picker", {"message_id": 1}),
                              ("uploads.thumbnail", {"image_id": 9})]:
            for _ in range(2):  # built, then from the kept pattern
                assert id_url(endpoint, **ids) == url_for(endpoint, **ids)
    with app.test_request_context("/", base_url="http://example.org/chat"):
        assert id_url("messages.picker", message_id=5) == "/chat/messages/5/react" == \
            url_for("messages.picker", message_id=5)


def test_each_acknowledgement_is_the_rendered_composer_with_fresh_ids(app):
    with app.test_request_context("/"):
        kept = posting.Acknowledgements(1)
        first, second = kept.fresh(), kept.fresh()
        rendered = posting.acknowledgement(1)
        ids = [UUID.findall(html) for html in (first, second, rendered)]
        assert all(len(found) == 2 for found in ids)
        everything = [i for found in ids for i in found]
        assert len(set(everything)) == 6  # every id is new
        same = [UUID.sub("", html) for html in (first, second, rendered)]
        assert same[0] == same[1] == same[2]
        assert generate_csrf() in first


def test_a_checked_token_is_checked_again_when_it_changes(app):
    with app.test_request_context("/"):
        token = generate_csrf()
        checked = CheckedToken()
        frame = '{"body": "hi", "client_id": "%s", "csrf_token": "%s"}'
        assert _parse(frame % (uuid.uuid4(), token), checked)["body"] == "hi"
        assert _parse(frame % (uuid.uuid4(), token), checked)["body"] == "hi"
        for forged in ("forged", token[:-2] + "xx", ""):
            try:
                _parse(frame % (uuid.uuid4(), forged), checked)
            except Refusal as refusal:
                assert "Reload the page" in str(refusal)
            else:
                raise AssertionError(f"{forged!r} was taken")
        try:
            _parse('{"body": "hi", "client_id": "%s", "csrf_token": 5}' % uuid.uuid4(), checked)
        except Refusal:
            pass
        else:
            raise AssertionError("a number was taken as a token")


def test_concurrent_senders_are_each_acknowledged_and_heard_once_in_order(server_factory,
                                                                         database_url):
    """Eight people send as fast as each is acknowledged; a listener gets every message
    once, each sender's in the order sent, and the database holds each once."""
    server = server_factory(CHATAPP_MESSAGE_RATE="1000/second")  # the limit is not tested
    senders = [Person(server, f"sender{i}").register() for i in range(8)]
    listener = Person(server, "listener").register()
    ear = listener.connect()
    count = 12
    failures = []

    def send(person):
        try:
            sock = person.connect()
            for n in range(count):
                sock.say(f"{person.username} says {n}")
                sock.wait_for('hx-target="#composer"', timeout=20)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))

    threads = [threading.Thread(target=send, args=(p,)) for p in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    deadline = time.monotonic() + 20
    heard: list[str] = []
    while time.monotonic() < deadline and len(heard) < count * len(senders):
        ear.drain(0.5)
        heard = re.findall(r"(sender\d) says (\d+)", "".join(
            f for f in ear.frames if 'hx-swap="beforeend"' in f))
    assert len(heard) == count * len(senders) == len(set(heard))
    for person in senders:
        assert [int(n) for who, n in heard if who == person.username] == list(range(count))
    assert len(set(ear.message_ids())) == len(ear.message_ids()) == count * len(senders)
    stored = rows(database_url, "SELECT count(*), count(DISTINCT client_id) FROM messages")
    assert stored == [(count * len(senders), count * len(senders))]
