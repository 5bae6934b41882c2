"""Settings: a person's display name, picture, language, time zone, password and sessions."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import unicodedata
from collections import defaultdict

from flask import (
    Blueprint, abort, current_app, flash, redirect, render_template, request, url_for,
)
from flask_babel import gettext as _, lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from ua_parser import parse as parse_user_agent
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length, ValidationError

from . import i18n, imaging, storage
from .auth import PASSWORD_MAX, LoginAttempt
from .extensions import db
from .models import User, UserSession
from .realtime import events
from .text import Encodable, invisible
from .views import sidebar_context

log = logging.getLogger(__name__)
bp = Blueprint("account", __name__, url_prefix="/settings")

DISPLAY_NAME_MAX = 50
AVATAR_SIDE = 256


def clean_display_name(raw: str | None) -> str | None:
    """The display name to store (None: show the username), or ValueError saying why.

    Refused rather than stripped: a format character (zero-width, joiner, direction
    mark or override) or control character could reverse or hide the text around the
    name, and silently changing what someone typed would surprise them.
    """
    text = unicodedata.normalize("NFC", raw or "")
    if text == "":
        return None
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cf", "Cc", "Zl", "Zp", "Co", "Cs", "Cn"):
            raise ValueError(_("A display name cannot hold invisible or text-direction "
                               "characters. Type it again without them."))
    text = text.strip()
    if not text or all(invisible(c) for c in text):
        raise ValueError(_("A display name needs at least one visible character."))
    if len(text) > DISPLAY_NAME_MAX:
        raise ValueError(_("Use at most %(num)d characters for the display name.",
                           num=DISPLAY_NAME_MAX))
    return text


def time_zone_groups(query: str = "") -> dict[str, list[str]]:
    """IANA time zone names grouped by region (Europe, Asia …), filtered by a search."""
    needle = query.strip().lower().replace(" ", "_")
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(i18n.time_zones()):
        if needle and needle not in name.lower():
            continue
        region = name.split("/", 1)[0] if "/" in name else _("Other")
        groups[region].append(name)
    return dict(sorted(groups.items()))


class ProfileForm(FlaskForm):
    """Display name, picture, language and time zone."""

    display_name = StringField(_l("Display name"), validators=[Encodable(),
                               Length(max=200, message=_l("That display name is far too long."))])
    avatar = FileField(_l("Avatar"))
    language = StringField(_l("Language"), validators=[Length(max=16)])
    time_zone = StringField(_l("Time zone"), validators=[Length(max=64)])

    def validate_display_name(self, field):
        """Refuse blank names and characters that would disturb the text around the name."""
        try:
            field.cleaned = clean_display_name(field.data)
        except ValueError as exc:
            raise ValidationError(str(exc))

    def validate_language(self, field):
        """Only the languages chatapp speaks."""
        if not i18n.known_language(field.data):
            raise ValidationError(_("Choose English or 中文 (简体)."))

    def validate_time_zone(self, field):
        """Only IANA time zone names this server knows."""
        if not i18n.known_time_zone(field.data):
            raise ValidationError(_("Choose a time zone from the list, such as Asia/Shanghai."))


class PasswordForm(FlaskForm):
    """Change the password, proving the current one."""

    current_password = PasswordField(_l("Current password"), validators=[
        InputRequired(_l("Enter your current password.")), Encodable(),
        Length(max=PASSWORD_MAX, message=_l("Passwords are at most 256 characters."))])
    new_password = PasswordField(_l("New password"), validators=[
        InputRequired(_l("Choose a new password.")), Encodable(),
        Length(min=8, max=PASSWORD_MAX, message=_l("Use at least 8 characters (at most 256)."))])
    confirm_password = PasswordField(_l("Confirm new password"), validators=[
        InputRequired(_l("Type the new password again.")), Encodable()])

    def validate_new_password(self, field):
        """Not the username (in any case), which anyone can read."""
        if (field.data or "").lower() == current_user.username.lower():
            raise ValidationError(_("Your password cannot be your username. Choose another."))

    def validate_confirm_password(self, field):
        """Both new passwords alike."""
        if field.data != self.new_password.data:
            raise ValidationError(_("The two new passwords differ; type them again."))


def session_handle(key: str) -> str:
    """A public name for a session in forms: the session key itself is a secret."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def describe_browser(user_agent: str) -> str:
    """'Firefox 133 on Windows' from a User-Agent (ua-parser's maintained rules)."""
    if not user_agent:
        return _("Unknown browser")
    try:
        parsed = parse_user_agent(user_agent).with_defaults()
    except Exception:  # noqa: BLE001 - a strange header is an unknown browser, not a 500
        return _("Unknown browser")
    browser = parsed.user_agent.family
    if parsed.user_agent.major and browser != "Other":
        browser = f"{browser} {parsed.user_agent.major}"
    if browser == "Other":
        browser = _("Unknown browser")
    system = parsed.os.family
    if system and system != "Other":
        return _("%(browser)s on %(system)s", browser=browser, system=system)
    return browser


def _page(profile=None, password=None, status=200, tz_query=""):
    """The Settings page, with whichever forms were just submitted (and their errors)."""
    if profile is None:
        profile = ProfileForm(formdata=None, display_name=current_user.display_name or "",
                              language=i18n.known_language(current_user.language)
                              or i18n.select_locale(),
                              time_zone=i18n.known_time_zone(current_user.time_zone) or "UTC")
    password = password or PasswordForm(formdata=None)
    sessions = [
        {"handle": session_handle(s.id), "current": s.id == current_user.session_key,
         "browser": describe_browser(s.user_agent), "address": s.address or "?",
         "last_seen": s.last_seen_at or s.created_at}
        for s in UserSession.of_user(current_user.id)
    ]
    sessions.sort(key=lambda s: not s["current"])
    return render_template(
        "account/settings.html", profile=profile, password=password, sessions=sessions,
        groups=time_zone_groups(tz_query), tz_query=tz_query,
        languages=i18n.LANGUAGES, title=_("Settings"),
        sidebar=sidebar_context(current_user, None),
    ), status


@bp.get("/")
@login_required
def settings():
    """Show the Settings page."""
    return _page()[0]


@bp.get("/time-zones")
@login_required
def time_zones():
    """The time zone choices matching a search (the picker's live filter)."""
    query = request.args.get("tz_q", "")[:64]
    chosen = request.args.get("time_zone") or current_user.time_zone or "UTC"
    return render_template("account/_time_zones.html", groups=time_zone_groups(query),
                           chosen=chosen)


@bp.post("/")
@login_required
def save():
    """Save display name, picture, language and time zone; nothing changes on any error."""
    form = ProfileForm()
    if not form.validate_on_submit():
        return _page(profile=form, status=400)
    upload = form.avatar.data
    new_key = None
    if upload and upload.filename:
        try:
            new_key = store_avatar(upload.stream)
        except imaging.Refused as refusal:
            form.avatar.errors.append(str(refusal))
            return _page(profile=form, status=422)
    user = db.session.get(User, current_user.id)
    old_key = user.avatar_key
    user.display_name = form.display_name.cleaned
    user.language = i18n.known_language(form.language.data)
    user.time_zone = i18n.known_time_zone(form.time_zone.data)
    if new_key:
        user.avatar_key = new_key
        if old_key:
            storage.delete_after_commit(old_key)
    elif request.form.get("remove_avatar") and old_key:
        user.avatar_key = None
        storage.delete_after_commit(old_key)
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        if new_key:
            storage.delete_files(new_key)
        raise
    i18n._forget_cached()  # this very response speaks the new language
    flash(_("Settings saved."))
    return redirect(url_for("account.settings"))


def store_avatar(stream) -> str:
    """Validate, re-encode and square an uploaded picture; its storage key. Raises Refused."""
    config = current_app.config
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    if size == 0:
        raise imaging.Refused(_("Choose a picture to upload first."))
    if size > config["MAX_AVATAR_BYTES"]:
        raise imaging.Refused(_("That picture is too large: at most %(size)s. Choose a smaller one.",
                                size=_megabytes(config["MAX_AVATAR_BYTES"])))
    try:
        data = imaging.square_avatar(stream, config["MAX_IMAGE_PIXELS"], AVATAR_SIDE)
    except imaging.Refused as refusal:
        raise imaging.Refused(_avatar_refusal(str(refusal)))
    key = f"avatars/{secrets.token_hex(16)}.png"
    try:
        storage.current().put(key, data, "image/png")
    except (storage.StorageUnavailable, OSError) as exc:
        log.error("could not store avatar %s: %s", key, exc)
        raise imaging.Refused(_("Pictures cannot be stored right now. Try again in a minute."))
    return key


def _megabytes(size: int) -> str:
    """A byte count as people read it: 2 MB."""
    return "%.3g MB" % (size / (1024 * 1024))


def _avatar_refusal(message: str) -> str:
    """The imaging pipeline's reason, in the viewer's language."""
    if message == imaging.NOT_AN_IMAGE:
        return _("That file is not an image. Upload a PNG, JPEG, GIF or WebP picture.")
    if message == imaging.DAMAGED:
        return _("That image is damaged or incomplete. Save it again and upload the new file.")
    return _("That picture is too large. Make it smaller and try again.")


@bp.post("/password")
@login_required
def change_password():
    """Change the password; every other session of this person ends, sockets included."""
    form = PasswordForm()
    if not form.validate_on_submit():
        return _page(password=form, status=400)
    attempt = LoginAttempt(current_user.username)
    if not attempt.reserve():
        form.current_password.errors.append(
            _("Too many wrong passwords. Wait a few minutes, then try again."))
        return _page(password=form, status=429)
    user = db.session.get(User, current_user.id)
    if not user.check_password(form.current_password.data):
        db.session.rollback()
        form.current_password.errors.append(_("That is not your current password."))
        return _page(password=form, status=400)
    attempt.refund()
    user.set_password(form.new_password.data)
    ended = user.end_other_sessions(keep=current_user.session_key)
    db.session.commit()
    for key in ended:
        events.session_ended(user.id, key)
    log.info("user %s changed their password; %d other sessions ended", user.id, len(ended))
    flash(_("Password changed. You were logged out everywhere else."))
    return redirect(url_for("account.settings"))


@bp.post("/sessions/<handle>/logout")
@login_required
def end_session(handle: str):
    """Log out one of this person's other sessions (this one logs out from the header)."""
    for record in UserSession.of_user(current_user.id):
        if session_handle(record.id) == handle and record.id != current_user.session_key:
            UserSession.end(record.id)
            db.session.commit()
            events.session_ended(current_user.id, record.id)
            flash(_("That session was logged out."))
            return redirect(url_for("account.settings"))
    abort(404)


@bp.post("/sessions/logout-others")
@login_required
def end_other_sessions():
    """Log out every other session of this person, at once, sockets included."""
    user = db.session.get(User, current_user.id)
    ended = user.end_other_sessions(keep=current_user.session_key)
    db.session.commit()
    for key in ended:
        events.session_ended(user.id, key)
    flash(_("You were logged out everywhere else."))
    return redirect(url_for("account.settings"))


@bp.errorhandler(413)
def too_large(exc):
    """A request over MAX_CONTENT_LENGTH (a huge picture): say so, change nothing."""
    form = ProfileForm(formdata=None, display_name=current_user.display_name or "",
                       language=current_user.language or i18n.select_locale(),
                       time_zone=current_user.time_zone or "UTC")
    form.avatar.errors = [_("That picture is too large: at most %(size)s. Choose a smaller one.",
                            size=_megabytes(current_app.config["MAX_AVATAR_BYTES"]))]
    return _page(profile=form, status=413)


def init_app(app) -> None:
    """Register the blueprint, the avatar route and the per-request last-seen note."""
    app.register_blueprint(bp)
    app.add_url_rule("/avatars/<int:user_id>", "avatar", avatar)

    @app.before_request
    def _touch_session():
        # Sessions list's "last seen": one UPDATE per session per minute at most.
        if request.endpoint in (None, "static"):
            return
        if current_user.is_authenticated and current_user.session_key:
            if UserSession.touch(current_user.session_key, current_user.session_last_seen):
                db.session.commit()


@login_required
def avatar(user_id: int):
    """A person's picture: any signed-in person may see it (it shows beside messages)."""
    user = db.session.get(User, user_id)
    if user is None or not user.avatar_key:
        abort(404)
    try:
        stored = storage.current().stream(user.avatar_key)
    except (FileNotFoundError, ValueError):
        abort(404)
    except (storage.StorageUnavailable, OSError):
        from .views import storage_unavailable

        return storage_unavailable()
    from .views import stored_response

    # The URL names the picture's key (?v=), so a new picture is a new URL.
    return stored_response(stored, "image/png")
