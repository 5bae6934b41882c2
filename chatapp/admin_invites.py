"""The admin console's invite links: create, copy, revoke, regenerate (CHATAPP_REGISTRATION)."""

from __future__ import annotations

from datetime import timedelta

from flask import abort, current_app, flash, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from .admin import ACTION_LABELS, bp
from .i18n import N_
from .models import AuditEntry, Invite, db, utcnow

ACTION_LABELS.update({
    "create_invite": N_("Created an invite link"),
    "revoke_invite": N_("Revoked an invite link"),
    "regenerate_invite": N_("Regenerated an invite link"),
})
MAX_DAYS = 365
MAX_USES = 10_000


def invite_url(invite: Invite) -> str:
    """The full link a new person opens to register."""
    return url_for("auth.register", invite=invite.token, _external=True)


def _page(status: int = 200, **context):
    """The invites page (links are secrets: never cached)."""
    invites = db.session.scalars(select(Invite).order_by(Invite.id.desc())).all()
    response = make_response(render_template(
        "admin/invites.html", invites=invites, invite_url=invite_url,
        mode=current_app.config["REGISTRATION"], **context), status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/invites")
def invites():
    """Every invite link, and the New invite link form."""
    return _page()


def _bounded(name: str, most: int) -> int | None:
    """An optional whole number from 1 to `most`, or ValueError."""
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValueError(name)
    return int(raw)


@bp.post("/invites")
def create_invite():
    """Create an invite link with an optional expiry (days) and number of uses."""
    try:
        days = _bounded("days", MAX_DAYS)
    except ValueError:
        return _page(400, error=_("Expires in: a whole number of days from 1 to %(num)d, or empty.",
                                  num=MAX_DAYS))
    try:
        uses = _bounded("uses", MAX_USES)
    except ValueError:
        return _page(400, error=_("Uses: a whole number from 1 to %(num)d, or empty.", num=MAX_USES))
    expires_at = utcnow() + timedelta(days=days) if days else None
    invite = Invite.create(current_user, expires_at, uses)
    AuditEntry.record(current_user, "create_invite",
                      detail=f"invite {invite.id}; days {days or '-'}; uses {uses or '-'}")
    db.session.commit()
    flash(_("Invite link created. Copy it from the list below."))
    return redirect(url_for("admin.invites", _anchor=f"invite-{invite.id}"))


def _invite_or_404(invite_id: int) -> Invite:
    invite = db.session.get(Invite, invite_id)
    if invite is None:
        abort(404)
    return invite


@bp.post("/invites/<int:invite_id>/revoke")
def revoke_invite(invite_id: int):
    """Stop an invite link from working, for good."""
    invite = _invite_or_404(invite_id)
    invite.revoke()
    AuditEntry.record(current_user, "revoke_invite", detail=f"invite {invite.id}")
    db.session.commit()
    flash(_("Invite link revoked."))
    return redirect(url_for("admin.invites"))


@bp.post("/invites/<int:invite_id>/regenerate")
def regenerate_invite(invite_id: int):
    """Give an invite link a new secret: the old URL stops working, the limits stay."""
    invite = _invite_or_404(invite_id)
    if invite.revoked_at is not None:
        flash(_("A revoked invite link cannot be regenerated. Create a new one."), "error")
        return redirect(url_for("admin.invites"))
    invite.regenerate()
    AuditEntry.record(current_user, "regenerate_invite", detail=f"invite {invite.id}")
    db.session.commit()
    flash(_("Invite link regenerated: the old link no longer works."))
    return redirect(url_for("admin.invites", _anchor=f"invite-{invite.id}"))
