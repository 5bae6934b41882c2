"""Rooms through their forms, in process: creating, browsing, joining, members, settings,
Notify me, the admin's rooms, and every bad input (each changes nothing). Both databases.

The live behaviour (sockets closed on removal, pushes, badges, titles) is in
test_rooms_live.py; a person creating rooms in a real browser is in test_rooms_browser.py.
"""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import PASSWORD, csrf_from
from sqlalchemy import func, select

from chatapp.models import AuditEntry, Conversation, Image, Membership, Message, User, db


class Person:
    """Someone logged in through the real login form of an in-process test client."""

    def __init__(self, app, name: str):
        self.app = app
        self.name = name
        self.client = app.test_client()
        token = csrf_from(self.client.get("/login/").get_data(as_text=True))
        response = self.client.post("/login/", data={"csrf_token": token, "username": name,
                                                      "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)[:300]

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data=None, token=True, page="/"):
        data = dict(data or {})
        if token:
            data["csrf_token"] = csrf_from(self.client.get(page).get_data(as_text=True))
        return self.client.post(path, data=data)

    def create(self, name: str, members_only=False, people=()):
        data = {"name": name, "people": list(people)}
        if members_only:
            data["members_only"] = "1"
        return self.post("/rooms/new", data, page="/rooms/new")


_HASH: list[str] = []


def quick_register(name: str) -> User:
    """User.register with one shared password hash (argon2 is slow on purpose)."""
    from chatapp import passwords

    if not _HASH:
        _HASH.append(passwords.hash_password(PASSWORD))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "hash_password", lambda _password: _HASH[0])
        return User.register(name, PASSWORD)


@pytest.fixture
def world(app):
    """ann, ben, cat, dan (deactivated) and root (an administrator)."""
    with app.app_context():
        for name in ("ann", "ben", "cat", "dan", "root"):
            quick_register(name)
        User.by_username("root").promote()
        db.session.commit()
    people = {name: Person(app, name) for name in ("ann", "ben", "cat", "root")}
    with app.app_context():
        User.by_username("dan").deactivate()
        db.session.commit()
    return people


def room_id(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return int(re.search(r"/c/(\d+)$", response.headers["Location"]).group(1))


def snapshot(app) -> tuple:
    """Everything a refused request must leave as it was."""
    with app.app_context():
        rows = db.session.execute(
            select(Conversation.id, Conversation.name, Conversation.members_only)
            .order_by(Conversation.id)).all()
        seats = db.session.execute(
            select(Membership.conversation_id, Membership.user_id, Membership.notify)
            .order_by(Membership.id)).all()
        messages = db.session.scalar(select(func.count(Message.id)))
        return rows, seats, messages


def alert(response) -> str:
    import html

    match = re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True))
    return html.unescape(match.group(1)) if match else ""


def test_an_open_room_is_created_browsed_and_joined(app, world):
    ann, ben = world["ann"], world["ben"]
    room = room_id(ann.create("  Dev talk "))
    page = ann.get(f"/c/{room}").get_data(as_text=True)
    assert "<h1 id=\"conversation-title\">Dev talk</h1>" in page and "Room settings" in page
    assert "ann created this room" in page
    # Ben sees it in Browse rooms with one member and a Join button, not in his sidebar.
    browse = ben.get("/rooms/").get_data(as_text=True)
    assert "Dev talk" in browse and "1 member<" in browse and 'aria-label="Join Dev talk"' in browse
    assert f'href="/c/{room}"' not in ben.get("/").get_data(as_text=True).split("Browse rooms")[0]
    # Not yet in it: the page offers to join and shows none of its messages.
    offer = ben.get(f"/c/{room}")
    assert offer.status_code == 200 and "ann created this room" not in offer.get_data(as_text=True)
    assert ben.get(f"/c/{room}/messages?before=999").status_code == 404
    assert room_id(ben.post(f"/c/{room}/join", page="/rooms/")) == room
    page = ben.get(f"/c/{room}").get_data(as_text=True)
    assert "ben joined" in page
    members = re.search(r'<ul aria-label="Members">(.*?)</ul>', page, re.S)[1]
    assert re.findall(r"<li>(\w+)", members) == ["ann", "ben"]
    assert "2 members" in ben.get("/rooms/").get_data(as_text=True)
    # Leaving hides it until he joins again.
    assert ben.post(f"/c/{room}/leave", page=f"/c/{room}/settings").status_code == 303
    assert ben.get(f"/c/{room}/messages?before=999").status_code == 404
    assert 'aria-label="Join Dev talk"' in ben.get("/rooms/").get_data(as_text=True)


def test_a_members_only_room_is_404_for_everyone_else(app, world):
    ann, ben, cat = world["ann"], world["ben"], world["cat"]
    room = room_id(ann.create("Leads", members_only=True, people=["ben"]))
    with app.app_context():
        conversation = db.session.get(Conversation, room)
        image = Image(path="x.png", thumb_path="x-thumb.png", content_type="image/png",
                      width=2, height=2, size_bytes=10, thumb_width=1, thumb_height=1)
        message, _ = Message.post(conversation, User.by_username("ann"), "", str(uuid.uuid4()), image)
        db.session.commit()
        image_id, message_id = image.id, message.id
        assert conversation.is_member(User.by_username("ben"))
        assert not conversation.is_member(User.by_username("cat"))
        readable = set(db.session.scalars(Conversation.readable_ids(User.by_username("cat").id)))
        assert room not in readable and Conversation.public_room().id in readable
        # As search will use it: messages of the readable conversations only.
        for name, sees in (("cat", False), ("ben", True)):
            found = db.session.scalars(select(Message.id).where(Message.conversation_id.in_(
                Conversation.readable_ids(User.by_username(name).id)))).all()
            assert (message_id in found) is sees, name
    assert "ann added ben" in ben.get(f"/c/{room}").get_data(as_text=True)
    for path in (f"/c/{room}", f"/c/{room}/messages?before={message_id + 1}",
                 f"/images/{image_id}", f"/images/{image_id}/thumb", f"/c/{room}/settings"):
        assert cat.get(path).status_code == 404, path
    before = snapshot(app)
    for path in (f"/c/{room}/join", f"/c/{room}/leave", f"/c/{room}/rename",
                 f"/c/{room}/members", f"/c/{room}/notify"):
        assert cat.post(path, {"name": "Mine", "people": ["cat"], "level": "none"}).status_code == 404
    assert snapshot(app) == before
    assert "Leads" not in cat.get("/rooms/").get_data(as_text=True)
    assert "Leads" not in cat.get("/").get_data(as_text=True)


def test_members_are_added_and_removed_by_the_creator(app, world):
    ann, ben, cat = world["ann"], world["ben"], world["cat"]
    room = room_id(ann.create("Leads", members_only=True))
    settings = f"/c/{room}/settings"
    assert ann.post(f"/c/{room}/members", {"people": ["ben", "cat"]}, page=settings).status_code == 303
    assert "ann added ben and cat" in ann.get(f"/c/{room}").get_data(as_text=True)
    with app.app_context():
        ben_id = User.by_username("ben").id
    # Ben (not the creator) may not remove anyone, nor rename.
    before = snapshot(app)
    refused = ben.post(f"/c/{room}/members/{ben_id}/remove", page=settings)
    assert refused.status_code == 403 and "creator" in alert(refused)
    refused = ben.post(f"/c/{room}/rename", {"name": "Ben's"}, page=settings)
    assert refused.status_code == 403 and "rename" in alert(refused)
    assert snapshot(app) == before
    assert ann.post(f"/c/{room}/members/{ben_id}/remove", page=settings).status_code == 303
    assert "ann removed ben" in ann.get(f"/c/{room}").get_data(as_text=True)
    assert ben.get(f"/c/{room}").status_code == 404
    # The creator renames; so may an administrator (from the admin console).
    assert ann.post(f"/c/{room}/rename", {"name": "Leadership"}, page=settings).status_code == 303
    assert "ann renamed the room to Leadership" in cat.get(f"/c/{room}").get_data(as_text=True)


BAD_NAMES = [
    ("", "Give the room a name"),
    ("    ", "Give the room a name"),
    ("\u200b\u200b", "Give the room a name"),
    ("dev\x07talk", "control characters"),
    ("dev\ntalk", "control characters"),
    ("x" * 51, "at most 50"),
    ("public room", "public room's name"),
    ("DEV TALK", "already exists"),
]


def test_bad_room_names_are_refused_and_change_nothing(app, world):
    ann = world["ann"]
    room_id(ann.create("Dev talk"))
    other = room_id(ann.create("Other"))
    before = snapshot(app)
    for name, words in BAD_NAMES:
        refused = ann.create(name)
        assert refused.status_code == 400 and words in alert(refused), (name, alert(refused))
        refused = ann.post(f"/c/{other}/rename", {"name": name}, page=f"/c/{other}/settings")
        assert refused.status_code == 400 and words in alert(refused), (name, alert(refused))
    assert snapshot(app) == before


BAD_PEOPLE = [
    (["nobody"], "Nobody is called"),
    (["dan"], "deactivated"),
    (["ben", "BEN"], "listed twice"),
    (["ann"], "in the room already"),
]


def test_bad_people_are_refused_and_change_nothing(app, world):
    before = snapshot(app)
    for people, words in BAD_PEOPLE:
        refused = world["ann"].create("Leads", members_only=True, people=people)
        assert refused.status_code == 400 and words in alert(refused), (people, alert(refused))
        assert "Leads" in refused.get_data(as_text=True)  # what was typed is kept
    assert snapshot(app) == before


def test_adding_a_member_twice_and_removing_the_last_one_are_refused(app, world):
    ann = world["ann"]
    room = room_id(ann.create("Leads", members_only=True, people=["ben"]))
    settings = f"/c/{room}/settings"
    before = snapshot(app)
    refused = ann.post(f"/c/{room}/members", {"people": ["ben"]}, page=settings)
    assert refused.status_code == 400 and "already in this room" in alert(refused)
    refused = ann.post(f"/c/{room}/members", {"people": []}, page=settings)
    assert refused.status_code == 400 and "Choose someone" in alert(refused)
    with app.app_context():
        ids = {n: User.by_username(n).id for n in ("ann", "ben", "cat")}
    refused = ann.post(f"/c/{room}/members/{ids['cat']}/remove", page=settings)
    assert refused.status_code == 404 and "not in this room" in alert(refused)
    assert snapshot(app) == before
    assert ann.post(f"/c/{room}/members/{ids['ben']}/remove", page=settings).status_code == 303
    before = snapshot(app)
    refused = ann.post(f"/c/{room}/members/{ids['ann']}/remove", page=settings)
    assert refused.status_code == 400 and "last member" in alert(refused)
    refused = ann.post(f"/c/{room}/leave", page=settings)
    assert refused.status_code == 400 and "last member" in alert(refused)
    assert snapshot(app) == before


def test_posts_without_a_csrf_token_and_unknown_rooms_change_nothing(app, world):
    ann = world["ann"]
    room = room_id(ann.create("Dev talk"))
    before = snapshot(app)
    for path in ("/rooms/new", f"/c/{room}/rename", f"/c/{room}/leave", f"/c/{room}/notify",
                 f"/c/{room}/members"):
        response = ann.post(path, {"name": "Forged", "level": "none", "people": ["ben"]}, token=False)
        assert response.status_code == 400, path
    for path in ("/c/999999/join", "/c/999999/rename", "/c/999999/leave", "/c/1/join",
                 "/c/1/rename", f"/c/{room}/members/999999/remove"):
        assert ann.post(path, {"name": "X"}).status_code == 404, path
    assert ann.get("/c/999999/settings").status_code == 404
    refused = ann.post(f"/c/{room}/notify", {"level": "loud"}, page=f"/c/{room}/settings")
    assert refused.status_code == 400 and "Every message" in alert(refused)
    assert snapshot(app) == before


def test_room_creation_is_rate_limited(app, world, monkeypatch):
    app.config["ROOM_RATE"] = "2/hour"
    ann = world["ann"]
    room_id(ann.create("one"))
    room_id(ann.create("two"))
    before = snapshot(app)
    refused = ann.create("three")
    assert refused.status_code == 429 and "too many rooms" in alert(refused)
    assert snapshot(app) == before
    room_id(world["ben"].create("bens"))  # per person


def test_the_suggestions_keep_who_was_ticked_and_find_by_name(app, world):
    ann = world["ann"]
    html = ann.get("/rooms/people?q=b&people=cat").get_data(as_text=True)
    assert 'value="cat" checked' in html and 'value="ben">' in html
    assert 'value="dan"' not in ann.get("/rooms/people?q=d").get_data(as_text=True)  # deactivated
    assert 'value="ann"' not in ann.get("/rooms/people?q=a").get_data(as_text=True)  # oneself


def test_notify_me_decides_what_counts_as_unread(app, world):
    ann, ben = world["ann"], world["ben"]
    room = room_id(ann.create("Dev talk"))
    ben.post(f"/c/{room}/join", page="/rooms/")
    with app.app_context():
        conversation = db.session.get(Conversation, room)
        author = User.by_username("ann")
        for n in range(3):
            Message.post(conversation, author, f"hello {n}", str(uuid.uuid4()))
        db.session.commit()
        ben_id = User.by_username("ben").id
    counts = {}
    for level in ("all", "mentions", "none", "all"):
        assert ben.post(f"/c/{room}/notify", {"level": level}, page=f"/c/{room}/settings").status_code == 303
        with app.app_context():
            counts[level] = Membership.unread_counts(ben_id).get(room, 0)
            assert Membership.levels(ben_id).get(room, "all") == level
    # System lines ("ben joined") never count; the three messages do, at "Every message".
    assert counts == {"all": 3, "mentions": 0, "none": 0}
    assert 'selected>Every message' in ben.get(f"/c/{room}/settings").get_data(as_text=True)


def test_the_sidebar_groups_rooms_and_direct_messages_newest_first(app, world):
    ann = world["ann"]
    first = room_id(ann.create("Alpha"))
    room_id(ann.create("Beta"))  # newer, but nothing said in it yet
    with app.app_context():
        Message.post(db.session.get(Conversation, first), User.by_username("ann"), "hi",
                     str(uuid.uuid4()))
        Conversation.direct(User.by_username("ann"), User.by_username("ben"))
        db.session.commit()
    html = ann.get("/").get_data(as_text=True)
    rooms, direct = html.split(">Rooms</h2>")[1].split(">Direct messages</h2>")
    # The public room first, then by newest message ("created this room" lines count).
    assert rooms.index("Public room") < rooms.index("Alpha") < rooms.index("Beta")
    assert "ben" in direct.split("People")[0] and "Alpha" not in direct


def test_an_admin_renames_and_deletes_a_room_with_its_messages_audited(app, world, tmp_path):
    ann, root = world["ann"], world["root"]
    room = room_id(ann.create("Leads", members_only=True, people=["ben"]))
    upload_dir = app.config["UPLOAD_DIR"]
    import os

    os.makedirs(upload_dir, exist_ok=True)
    for name in ("r.png", "r-thumb.png"):
        with open(os.path.join(upload_dir, name), "wb") as f:
            f.write(b"x")
    with app.app_context():
        image = Image(path="r.png", thumb_path="r-thumb.png", content_type="image/png",
                      width=2, height=2, size_bytes=1, thumb_width=1, thumb_height=1)
        Message.post(db.session.get(Conversation, room), User.by_username("ann"), "", str(uuid.uuid4()), image)
        db.session.commit()
    assert ann.get("/admin/rooms").status_code == 403
    listing = root.get("/admin/rooms").get_data(as_text=True)
    assert "Leads" in listing and "Members only" in listing
    refused = root.post(f"/admin/rooms/{room}/rename", {"name": "  "}, page="/admin/rooms")
    assert refused.status_code == 303
    assert root.post(f"/admin/rooms/{room}/rename", {"name": "Heads"}, page="/admin/rooms").status_code == 303
    confirm = root.get(f"/admin/rooms/{room}/delete").get_data(as_text=True)
    assert "Delete the room Heads?" in confirm and "1 images" in confirm
    assert root.post(f"/admin/rooms/{room}/delete", token=False).status_code == 400  # no token
    assert root.post(f"/admin/rooms/{room}/delete", page="/admin/rooms").status_code == 303
    with app.app_context():
        assert db.session.get(Conversation, room) is None
        assert db.session.scalar(select(func.count(Message.id)).where(Message.conversation_id == room)) == 0
        assert db.session.scalar(select(func.count(Image.id))) == 0
        actions = [e.action for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions[-2:] == ["rename_room", "delete_room"]
    assert not os.path.exists(os.path.join(upload_dir, "r.png"))
    assert ann.get(f"/c/{room}").status_code == 404
    assert "Deleted a room" in root.get("/admin/audit").get_data(as_text=True)
