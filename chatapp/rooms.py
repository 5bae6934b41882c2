"""Rooms: create, browse and join (a room's settings are in room_settings.py).

Views only translate the form and call the model verbs (Conversation.create_room,
add_member, remove_member, rename); room_settings.py holds a room's settings. Each change is one transaction with the system line
that tells of it ("ann added ben", posted through posting.py), and its events are
published only after the commit.
"""

from __future__ import annotations

from flask_babel import gettext as _
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import posting, ratelimit
from .database import like_literal
from .models import Conversation, Membership, User, db
from .models.conversations import ROOM_NAME_MAX
from .realtime import events
from .text import blank, encodable
from .views import SIDEBAR_PEOPLE, sidebar_context

bp = Blueprint("rooms", __name__)

RESERVED_NAMES = {"public", "public room"}


class Invalid(Exception):
    """Input that changes nothing; the text says what to do."""

    status = 400


class TooMany(Invalid):
    """Over CHATAPP_ROOM_RATE: rooms one person may create."""

    status = 429


# -- checking input -------------------------------------------------------------------------


def room_name(raw: str | None, room: Conversation | None = None) -> str:
    """A room name as stored: trimmed, 1-50 visible characters, free (ignoring case)."""
    name = (raw or "").strip()
    if not encodable(name):
        raise Invalid(_("That name holds a broken character. Remove it and try again."))
    if blank(name):
        raise Invalid(_("Give the room a name (spaces alone are not one)."))
    if any(not ch.isprintable() for ch in name):
        raise Invalid(_("Room names cannot contain control characters or line breaks."))
    if len(name) > ROOM_NAME_MAX:
        raise Invalid(_("Room names can be at most %(limit)d characters; yours has "
                        "%(length)d. Shorten it.", limit=ROOM_NAME_MAX, length=len(name)))
    if name.lower() in RESERVED_NAMES:
        raise Invalid(_("“%(name)s” is the public room's name. Choose another.", name=name))
    taken = Conversation.by_name(name)
    if taken is not None and taken is not room:
        raise Invalid(_("A room called “%(name)s” already exists. Choose another name.", name=taken.name))
    return name


def people_named(names: list[str], room: Conversation | None = None) -> list[User]:
    """The active people these usernames name, each once; none already in the room."""
    found, seen = [], set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        key = name.lower()
        if key in seen:
            raise Invalid(_("%(name)s is listed twice. Add each person once.", name=name))
        seen.add(key)
        person = User.by_username(name) if encodable(name) else None
        if person is None:
            raise Invalid(_("Nobody is called “%(name)s”. Pick people from the suggestions.", name=name))
        if not person.active:
            raise Invalid(_("%(name)s's account is deactivated; they cannot be added.", name=person.username))
        if person.id == current_user.id and room is None:
            raise Invalid(_("You are in the room already; add other people."))
        if room is not None and room.is_member(person):
            raise Invalid(_("%(name)s is already in this room.", name=person.username))
        found.append(person)
    return found


def room_or_404(conversation_id: int) -> Conversation:
    """A room the current user may see; 404 for others, as if absent."""
    room = db.session.get(Conversation, conversation_id)
    if room is None or not room.is_room or not room.is_member(current_user):
        abort(404)
    return room


def names_list(people) -> str:
    """ "ben", "ben and cat", "ben, cat and dan" """
    names = [p.username for p in people]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- creating and finding rooms -------------------------------------------------------------


@bp.route("/rooms/new", methods=["GET", "POST"])
@login_required
def new():
    """The New room form; creating a room takes its creator there."""
    if request.method == "GET":
        return _new_form()
    members_only = bool(request.form.get("members_only"))
    chosen = request.form.getlist("people")
    try:
        name = room_name(request.form.get("name"))
        people = people_named(chosen) if members_only else []
        if not ratelimit.hit(current_app.config["ROOM_RATE"], "rooms", str(current_user.id)):
            raise TooMany(_("You have created too many rooms lately. Wait a while, then try again."))
        room = Conversation.create_room(name, members_only, current_user, people)
    except IntegrityError:  # the same name, created a moment ago by someone else
        db.session.rollback()
        return _new_form(_("A room called “%(name)s” already exists. Choose another name.",
                           name=request.form.get("name", "").strip()), 400)
    except Invalid as problem:
        return _new_form(str(problem), problem.status)
    events_out = [posting.stage_system(room, current_user, f"{current_user.username} created this room")]
    if people:
        events_out.append(posting.stage_system(
            room, current_user, f"{current_user.username} added {names_list(people)}"))
    db.session.commit()
    for event in events_out:
        posting.publish(event)
    events.members_changed(room.id, [current_user.id, *(p.id for p in people)])
    return redirect(url_for("chat.conversation", conversation_id=room.id), 303)


def _new_form(error: str | None = None, status: int = 200):
    """The New room form, keeping what was typed and chosen."""
    chosen = _chosen_people(request.form.getlist("people")) if request.method == "POST" else []
    return render_template(
        "rooms/new.html", error=error, chosen=chosen, title=_("New room"),
        name=request.form.get("name", ""), members_only=bool(request.form.get("members_only")),
        sidebar=sidebar_context(current_user, None),
    ), status


def _chosen_people(names: list[str]) -> list[User]:
    """The active people among these names (to keep a picker's choices ticked)."""
    keys = sorted({n.strip().lower() for n in names if n.strip() and encodable(n)})[:100]
    if not keys:
        return []
    return db.session.scalars(
        select(User).where(User.username_key.in_(keys), User.active.is_(True))
        .order_by(User.username_key)
    ).all()


@bp.get("/rooms/people")
@login_required
def suggestions():
    """The Add people picker's suggestions: people chosen so far (ticked) and matches."""
    q = (request.args.get("q") or "").strip().lower()[:32]
    if not encodable(q):
        abort(400)
    chosen = _chosen_people(request.args.getlist("people"))
    chosen_ids = {p.id for p in chosen}
    matches = []
    if q:
        matches = db.session.scalars(
            select(User)
            .where(User.username_key.like(like_literal(q) + "%", escape="\\"),
                   User.id != current_user.id, User.active.is_(True))
            .order_by(User.username_key)
            .limit(SIDEBAR_PEOPLE)
        ).all()
    matches = [p for p in matches if p.id not in chosen_ids]
    return render_template("rooms/_suggestions.html", chosen=chosen, matches=matches, q=q)


@bp.get("/rooms/")
@login_required
def browse():
    """Every open room with its member count, and Join for those the user is not in."""
    mine = set(db.session.scalars(
        select(Membership.conversation_id).where(Membership.user_id == current_user.id)))
    return render_template("rooms/browse.html", rooms=Conversation.open_rooms(), mine=mine,
                           title=_("Browse rooms"), sidebar=sidebar_context(current_user, None))


@bp.post("/c/<int:conversation_id>/join")
@login_required
def join(conversation_id: int):
    """Join an open room; it appears in the sidebar of every tab at once."""
    room = db.session.get(Conversation, conversation_id)
    if room is None or not room.is_room or room.members_only:
        abort(404)  # a members-only room is joined only by being added
    if room.add_member(current_user):
        event = posting.stage_system(room, current_user, f"{current_user.username} joined")
        db.session.commit()
        posting.publish(event)
        events.members_changed(room.id, [current_user.id])
    return redirect(url_for("chat.conversation", conversation_id=room.id), 303)
