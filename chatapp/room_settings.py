"""A room's settings: Rename, members (Add people, Remove), Leave room and Notify me.

Routes on the rooms blueprint (rooms.py holds creating, browsing and joining). Each change
is one transaction with its system line, and its events are published after the commit.
"""

from __future__ import annotations

from flask_babel import gettext as _
from flask import abort, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy.exc import IntegrityError

from . import notify, posting
from .models import Conversation, User, db
from .realtime import events
from .rooms import Invalid, bp, names_list, people_named, room_name, room_or_404
from .views import room_members, sidebar_context


@bp.get("/c/<int:conversation_id>/settings")
@login_required
def settings(conversation_id: int):
    """Room settings: name, members, Add people, Notify me, Leave room."""
    return _settings_page(_settings_room(conversation_id))


def _settings_room(conversation_id: int) -> Conversation:
    """A room (or the public room, for Notify me) the user may see; 404 otherwise."""
    room = db.session.get(Conversation, conversation_id)
    if room is None or room.is_direct or not room.is_member(current_user):
        abort(404)
    return room


def _settings_page(room: Conversation, error: str | None = None, status: int = 200,
                   notice: str | None = None):
    seat = room.membership_of(current_user.id)
    return render_template(
        "rooms/settings.html", room=room, error=error, notice=notice,
        members=room_members(room) if room.is_room else [],
        level=seat.notify if seat else notify.EVERY, levels=notify.LEVELS,
        may_manage=room.may_manage(current_user), title=_("%(name)s settings", name=room.title_for(current_user)),
        sidebar=sidebar_context(current_user, None),
    ), status


@bp.post("/c/<int:conversation_id>/rename")
@login_required
def rename(conversation_id: int):
    """Rename a room (its creator or an administrator); shown live to its members."""
    room = room_or_404(conversation_id)
    if not room.may_manage(current_user):
        return _settings_page(room, _("Only the room's creator or an administrator can rename it."), 403)
    try:
        name = room_name(request.form.get("name"), room)
    except Invalid as problem:
        return _settings_page(room, str(problem), 400)
    if name == room.name:
        return redirect(url_for("rooms.settings", conversation_id=room.id), 303)
    room.rename(name)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return _settings_page(room, _("A room called “%(name)s” already exists. Choose another name.", name=name), 400)
    event = posting.stage_system(room, current_user, f"{current_user.username} renamed the room to {name}")
    members = room.member_ids()
    db.session.commit()
    posting.publish(event)
    events.room_changed(room.id, name, members)
    return redirect(url_for("rooms.settings", conversation_id=room.id), 303)


@bp.post("/c/<int:conversation_id>/members")
@login_required
def add_people(conversation_id: int):
    """Add people to a room (any member may); they see it in their sidebar at once."""
    room = room_or_404(conversation_id)
    try:
        people = people_named(request.form.getlist("people"), room)
        if not people:
            raise Invalid(_("Choose someone to add first."))
    except Invalid as problem:
        return _settings_page(room, str(problem), 400)
    for person in people:
        room.add_member(person)
    event = posting.stage_system(room, current_user,
                                 f"{current_user.username} added {names_list(people)}")
    db.session.commit()
    posting.publish(event)
    events.members_changed(room.id, [p.id for p in people])
    return redirect(url_for("rooms.settings", conversation_id=room.id), 303)


@bp.post("/c/<int:conversation_id>/members/<int:user_id>/remove")
@login_required
def remove(conversation_id: int, user_id: int):
    """Remove a member (creator or admin): their pages of the room close, on any worker."""
    room = room_or_404(conversation_id)
    if not room.may_manage(current_user):
        return _settings_page(room, _("Only the room's creator or an administrator can remove people."), 403)
    person = db.session.get(User, user_id)
    if person is None or not room.is_member(person):
        return _settings_page(room, _("That person is not in this room."), 404)
    if room.member_count() <= 1:
        return _settings_page(room, _("%(name)s is the room's last member; a room needs at least one. "
                                "An administrator can delete the room.", name=person.username), 400)
    room.remove_member(person.id)
    text = (f"{person.username} left" if person.id == current_user.id
            else f"{current_user.username} removed {person.username}")
    event = posting.stage_system(room, current_user, text)
    db.session.commit()
    posting.publish(event)
    events.members_changed(room.id, [], removed=[person.id])
    if person.id == current_user.id:
        return redirect(url_for("chat.index"), 303)
    return redirect(url_for("rooms.settings", conversation_id=room.id), 303)


@bp.post("/c/<int:conversation_id>/leave")
@login_required
def leave(conversation_id: int):
    """Leave a room; an open one can be joined again from Browse rooms."""
    room = room_or_404(conversation_id)
    if room.members_only and room.member_count() <= 1:
        return _settings_page(room, _("You are the last member of this members-only room; add someone "
                                "first, or ask an administrator to delete it."), 400)
    room.remove_member(current_user.id)
    event = posting.stage_system(room, current_user, f"{current_user.username} left")
    db.session.commit()
    posting.publish(event)
    events.members_changed(room.id, [], removed=[current_user.id])
    return redirect(url_for("chat.index"), 303)


@bp.post("/c/<int:conversation_id>/notify")
@login_required
def set_notify(conversation_id: int):
    """Choose how much of this conversation counts toward badges and the page title."""
    room = _settings_room(conversation_id)
    level = request.form.get("level")
    if level not in notify.LEVELS:
        return _settings_page(room, _("Choose Every message, Mentions only or Nothing."), 400)
    seat = room.membership_of(current_user.id)
    if seat is None:  # the public room, for an account made before seats existed
        seat = room._seat(current_user.id)
    seat.notify = level
    db.session.commit()
    events.notify_changed(current_user.id, room.id, level)
    if request.headers.get("HX-Request"):
        return render_template("rooms/_notify.html", room=room, level=level,
                               levels=notify.LEVELS, saved=True)
    return redirect(url_for("rooms.settings", conversation_id=room.id), 303)
