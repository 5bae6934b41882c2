"""The admin console's rooms: every room, open or members-only, renamed or deleted here.

Routes on the admin blueprint (admins only); each action is audited, and its events are
published after the commit like every other change.
"""

from __future__ import annotations

from flask_babel import gettext as _
import logging

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import delete, func, select, update

from . import posting, storage
from .admin import bp
from .models import AuditEntry, Conversation, Image, Membership, Mention, Message, Reaction, db
from .models.conversations import ROOM_PREFIX
from .realtime import events
from .rooms import Invalid, room_name

log = logging.getLogger(__name__)


def _room_or_404(conversation_id: int) -> Conversation:
    room = db.session.get(Conversation, conversation_id)
    if room is None or not room.is_room:
        abort(404)
    return room


@bp.route("/rooms")
def rooms():
    """Every room with its kind, creator and member count."""
    count = (select(func.count(Membership.id)).where(Membership.conversation_id == Conversation.id)
             .correlate(Conversation).scalar_subquery())
    found = db.session.execute(
        select(Conversation, count).where(Conversation.key.startswith(ROOM_PREFIX))
        .order_by(Conversation.name_key)
    ).all()
    return render_template("admin/rooms.html", rooms=found)


@bp.route("/rooms/<int:conversation_id>/rename", methods=["POST"])
def rename_room(conversation_id: int):
    """Rename any room; its members see the new name at once."""
    room = _room_or_404(conversation_id)
    old = room.name
    try:
        name = room_name(request.form.get("name"), room)
    except Invalid as problem:
        flash(str(problem), "error")
        return redirect(url_for("admin.rooms"), 303)
    room.rename(name)
    AuditEntry.record(current_user, "rename_room", conversation_id=room.id,
                      detail=f"{old} -> {name}")
    event = posting.stage_system(room, current_user,
                                 f"{current_user.username} renamed the room to {name}")
    members = room.member_ids()
    db.session.commit()
    posting.publish(event)
    events.room_changed(room.id, name, members)
    flash(_("Renamed %(old)s to %(new)s.", old=old, new=name))
    return redirect(url_for("admin.rooms"), 303)


@bp.route("/rooms/<int:conversation_id>/delete", methods=["GET", "POST"])
def delete_room(conversation_id: int):
    """Confirm, then delete a room with its messages and images (audited)."""
    room = _room_or_404(conversation_id)
    messages = db.session.scalar(select(func.count(Message.id))
                                 .where(Message.conversation_id == room.id))
    image_ids = list(db.session.scalars(
        select(Message.image_id).where(Message.conversation_id == room.id,
                                       Message.image_id.is_not(None))))
    if request.method == "GET":
        return render_template("admin/room_delete.html", room=room, messages=messages,
                               images=len(image_ids))
    members = room.member_ids()
    files = db.session.execute(
        select(Image.path, Image.thumb_path).where(Image.id.in_(image_ids))).all()
    name = room.name
    # Older audit entries keep their record of the room by name, not by a dangling id.
    db.session.execute(update(AuditEntry).where(AuditEntry.conversation_id == room.id)
                       .values(conversation_id=None))
    in_room = select(Message.id).where(Message.conversation_id == room.id)
    db.session.execute(delete(Reaction).where(Reaction.message_id.in_(in_room)))
    db.session.execute(delete(Mention).where(Mention.conversation_id == room.id))
    db.session.execute(delete(Message).where(Message.conversation_id == room.id))
    if image_ids:
        db.session.execute(delete(Image).where(Image.id.in_(image_ids)))
    db.session.execute(delete(Membership).where(Membership.conversation_id == room.id))
    db.session.delete(room)
    # The files go once this commits: a crash between leaves unused files (`flask storage
    # sweep`), never a message without its image.
    storage.delete_after_commit(*(key for row in files for key in row))
    AuditEntry.record(current_user, "delete_room",
                      detail=f"room {name} (id {conversation_id}): {messages} messages, "
                             f"{len(image_ids)} images")
    db.session.commit()
    events.room_deleted(conversation_id, members)
    flash(_("Deleted the room %(name)s, its %(messages)d messages and %(images)d images.",
            name=name, messages=messages, images=len(image_ids)))
    return redirect(url_for("admin.rooms"), 303)
