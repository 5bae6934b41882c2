"""The admin console: every message, every user, moderation and the audit log."""

from __future__ import annotations

from flask_babel import gettext as _

from .i18n import N_
from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from . import posting
from .admin_search import MessageSearchForm, conversation_labels, like_anywhere, search_messages
from .models import AuditEntry, Conversation, Image, Message, User, db, utcnow
from .realtime import events
from .text import UNENCODABLE, encodable
from .views import id_arg, safe_next, send_image

bp = Blueprint("admin", __name__, url_prefix="/admin")

PAGE_SIZE = 50
IMAGE_AUDIT_INTERVAL = timedelta(hours=1)  # one audit entry per image and admin this often
MAX_PAGE = 10**6  # an offset past this many pages is refused as absent (page 1)
# English, marked (N_) for translation where they are shown.
ACTION_LABELS = {
    "open_private_chat": N_("Opened a private chat"),
    "view_private_image": N_("Viewed a private or deleted image"),
    "read_private_messages": N_("Listed private messages"),
    "delete_message": N_("Deleted a message"),
    "deactivate": N_("Deactivated a user"),
    "reactivate": N_("Reactivated a user"),
    "promote": N_("Made a user an administrator"),
    "demote": N_("Took administration away"),
    "rename_room": N_("Renamed a room"),
    "delete_room": N_("Deleted a room"),
}


@bp.before_request
def admins_only():
    """Every admin URL, GET or POST: anonymous users log in first, others get 403."""
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    if not current_user.is_admin:
        abort(403)


def _page(query, limit: int = PAGE_SIZE) -> tuple[list, bool]:
    """One page of rows and whether more follow."""
    rows = db.session.scalars(query.limit(limit + 1)).unique().all()
    return rows[:limit], len(rows) > limit


def image_urls(image) -> tuple[str, str]:
    """The console's thumbnail and full-size URLs of a message's image."""
    return (url_for("admin.image", image_id=image.id, size="thumb"),
            url_for("admin.image", image_id=image.id, size="full"))


def render_messages(template: str, messages: list[Message], **context):
    """A page holding a message table, with labels and image links for its rows."""
    conversations = {m.conversation_id: m.conversation for m in messages}
    return render_template(
        template,
        messages=messages,
        labels=conversation_labels(conversations.values()),
        image_urls=image_urls,
        **context,
    )


def audit_private(messages: list[Message], detail: str) -> None:
    """Log that private messages were shown to this admin (and which chats)."""
    private = sorted({m.conversation_id for m in messages if not m.conversation.is_open})
    if private:
        chats = ", ".join(str(i) for i in private)
        AuditEntry.record(current_user, "read_private_messages", detail=f"{detail}; chats {chats}")
        db.session.commit()


@bp.route("/")
def messages():
    """Every message, newest first, searchable by text, author, conversation and dates."""
    if not all(encodable(value) for value in request.args.values()):
        abort(400, UNENCODABLE)
    form = MessageSearchForm(request.args)
    if request.args and not form.validate():
        return render_messages("admin/messages.html", [], form=form, more=False), 400
    before = id_arg("before")
    found, more = _page(search_messages(form, before))
    filters = form.filters()
    audit_private(found, "search " + (" ".join(f"{k}={v}" for k, v in filters.items()) or "all"))
    return render_messages("admin/messages.html", found, form=form, more=more,
                           filters=filters, before=before)


@bp.route("/conversations/<int:conversation_id>")
def conversation(conversation_id: int):
    """One conversation as an admin reads it; opening a private chat is audited."""
    found_conversation = db.session.get(Conversation, conversation_id) or abort(404)
    before = id_arg("before")
    query = select(Message).where(Message.conversation_id == conversation_id)
    if before:
        query = query.where(Message.id < before)
    found, more = _page(query.order_by(Message.id.desc()))
    if not found_conversation.is_open:
        AuditEntry.record(current_user, "open_private_chat", conversation_id=conversation_id)
        db.session.commit()
    label = conversation_labels([found_conversation])[conversation_id]
    return render_messages("admin/conversation.html", found, conversation=found_conversation,
                           label=label, more=more, filters={}, before=before)


@bp.route("/messages/<int:message_id>/delete", methods=["POST"])
def delete_message(message_id: int):
    """Hide a message everywhere; open pages lose it at once."""
    message = db.session.get(Message, message_id) or abort(404)
    if message.deleted_at is None:
        # Recorded in the same transaction the one road commits, then announced.
        AuditEntry.record(current_user, "delete_message", conversation_id=message.conversation_id,
                          target_user_id=message.author_id, detail=f"message {message.id}")
        posting.delete(message, current_user, moderator=True)
        flash(_("Deleted the message from %(name)s.", name=message.author.username))
    else:
        flash(_("That message was already deleted."))
    return redirect(safe_next(request.form.get("next")) if request.form.get("next")
                    else url_for("admin.messages"), 303)


@bp.route("/images/<int:image_id>/<any(thumb, full):size>")
def image(image_id: int, size: str):
    """An image of any message, private or deleted, for the console (admins only)."""
    found = db.session.get(Image, image_id) or abort(404)
    audit_image(found)
    return send_image(found, thumbnail=size == "thumb")


def audit_image(image: Image) -> None:
    """Log that this admin saw a private or deleted image, once per image per hour.

    Opening a private chat is audited; its images must not be a way around that. The
    console shows each image as a thumbnail and a link, and a page is reloaded often:
    one entry an hour per image says who looked without flooding the log.
    """
    shown = Conversation.showing(image)
    if shown is not None and shown.is_open:
        return
    if shown is None:  # its message was deleted (or it belongs to none)
        message = db.session.scalar(select(Message).where(Message.image_id == image.id).limit(1))
        conversation_id = message.conversation_id if message else None
    else:
        conversation_id = shown.id
    name = f"image {image.id}"
    seen = db.session.scalar(
        select(AuditEntry.id).where(
            AuditEntry.actor_id == current_user.id,
            AuditEntry.action == "view_private_image",
            AuditEntry.detail.in_([name, f"{name}, deleted"]),
            AuditEntry.created_at > utcnow() - IMAGE_AUDIT_INTERVAL,
        ).limit(1)
    )
    if seen is None:
        AuditEntry.record(current_user, "view_private_image", conversation_id=conversation_id,
                          detail=name if shown is not None else f"{name}, deleted")
        db.session.commit()


@bp.route("/users")
def users():
    """Every account, searchable by name, with its role and status."""
    if not all(encodable(value) for value in request.args.values()):
        abort(400, UNENCODABLE)
    q = (request.args.get("q") or "").strip()[:32]
    page = id_arg("page", MAX_PAGE) or 1
    query = select(User).order_by(User.username_key)
    if q:
        query = query.where(User.username_key.like(like_anywhere(q.lower()), escape="\\"))
    found, more = _page(query.offset((page - 1) * PAGE_SIZE))
    return render_template("admin/users.html", users=found, q=q, page=page, more=more)


USER_ACTIONS = {
    "deactivate": User.deactivate,
    "reactivate": User.reactivate,
    "promote": User.promote,
    "demote": User.demote,
}


@bp.route("/users/<int:user_id>/<action>", methods=["POST"])
def user_action(user_id: int, action: str):
    """Deactivate, reactivate, promote or demote an account."""
    verb = USER_ACTIONS.get(action) or abort(404)
    user = db.session.get(User, user_id) or abort(404)
    back = safe_next(request.form.get("next")) if request.form.get("next") else url_for(
        "admin.users")
    if user.id == current_user.id and action in ("deactivate", "demote"):
        flash(_("You cannot do that to your own account; ask another administrator."), "error")
        return redirect(back, 303)
    verb(user)
    AuditEntry.record(current_user, action, target_user_id=user.id)
    db.session.commit()
    if action == "deactivate":
        events.user_deactivated(user.id)  # after the commit, like every event
    flash(_("%(action)s: %(name)s.", action=_(ACTION_LABELS[action]), name=user.username))
    return redirect(back, 303)


@bp.route("/audit")
def audit():
    """The audit log: what administrators did, newest first."""
    page = id_arg("page", MAX_PAGE) or 1
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).offset((page - 1) * PAGE_SIZE)
    entries, more = _page(query)
    conversations = [e.conversation for e in entries if e.conversation is not None]
    return render_template("admin/audit.html", entries=entries, page=page, more=more,
                           labels=conversation_labels(conversations), actions=ACTION_LABELS)


from . import admin_bots  # noqa: E402,F401 - the Bots pages, on this blueprint
from . import admin_invites  # noqa: E402,F401 - the Invites pages, on this blueprint
