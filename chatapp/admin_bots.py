"""The admin console's bots: create one (its key shown once), regenerate its key, delete it."""

from __future__ import annotations

from flask_babel import gettext as _

from .i18n import N_
from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError

from . import bots
from .admin import ACTION_LABELS, bp
from .models import AuditEntry, User, db

ACTION_LABELS.update({
    "create_bot": N_("Created a bot"),
    "regenerate_bot_key": N_("Regenerated a bot's key"),
    "delete_bot": N_("Deleted a bot"),
})


def _page(status: int = 200, **context):
    """The bots page; a key in it is shown this once, so the page is never cached."""
    context.setdefault("name", "")
    context.setdefault("webhook_url", "")
    response = make_response(render_template("admin/bots.html", bots=bots.listed(), **context),
                             status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/bots")
def bots_page():
    """Every bot, and the New bot form."""
    return _page()


@bp.post("/bots")
def create_bot():
    """Create a bot and show its key once."""
    name = (request.form.get("name") or "").strip()
    webhook_url = (request.form.get("webhook_url") or "").strip()
    problem = bots.name_problem(name) or (webhook_url and bots.webhook_problem(webhook_url))
    if problem:
        return _page(400, error=problem, name=name[:32], webhook_url=webhook_url[:2048])
    try:
        bot, key = bots.create(name, webhook_url)
        AuditEntry.record(current_user, "create_bot", target_user_id=bot.id)
        db.session.commit()
    except IntegrityError:  # someone took the name between the check and the insert
        db.session.rollback()
        return _page(400, error=_("That name is taken. Choose another."), name=name,
                     webhook_url=webhook_url)
    return _page(key=key, key_bot=bot)


def _bot_or_404(bot_id: int) -> User:
    bot = db.session.get(User, bot_id)
    if bot is None or not bot.is_bot or not bot.active:
        abort(404)
    return bot


@bp.post("/bots/<int:bot_id>/key")
def regenerate_bot_key(bot_id: int):
    """A new key for the bot; the old one is refused from this commit on."""
    bot = _bot_or_404(bot_id)
    key = bots.regenerate(bot)
    AuditEntry.record(current_user, "regenerate_bot_key", target_user_id=bot.id)
    db.session.commit()
    return _page(key=key, key_bot=bot)


@bp.post("/bots/<int:bot_id>/delete")
def delete_bot(bot_id: int):
    """Delete the bot: its key and webhook stop at once; its messages stay."""
    bot = _bot_or_404(bot_id)
    bots.remove(bot)
    AuditEntry.record(current_user, "delete_bot", target_user_id=bot.id)
    db.session.commit()
    flash(_("Deleted the bot %(name)s.", name=bot.username))
    return redirect(url_for("admin.bots_page"), 303)
