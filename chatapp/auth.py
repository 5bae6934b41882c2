"""Accounts: register, log in, log out."""

from flask_babel import gettext as _, lazy_gettext as _l
import logging

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    abort,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from limits import parse as parse_limit
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import EqualTo, InputRequired, Length, Regexp, ValidationError

from . import ratelimit
from .extensions import limiter, login_manager
from .models import USERNAME_RE, Invite, User, UserSession, db
from .models.invites import EXPIRED, REVOKED, UNKNOWN, USED_UP
from .realtime import events
from .text import Encodable
from .views import safe_next

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)
TAKEN = _l("That username is taken; choose another.")
# Longest login fields worth any work: names are at most 32 characters (longer ones still
# cost a verification, so that their timing says nothing), passwords at most 256.
LOGIN_NAME_MAX = 64
PASSWORD_MAX = 256


class RegisterForm(FlaskForm):
    """The registration form."""

    username = StringField(
        _l("Username"),
        validators=[
            InputRequired(_l("Choose a username.")),
            Encodable(),
            Regexp(
                USERNAME_RE,
                message=_l("Use 3 to 32 letters, digits, dots, dashes or underscores."),
            ),
        ],
    )
    password = PasswordField(
        _l("Password"),
        validators=[
            InputRequired(_l("Choose a password.")),
            Encodable(),
            Length(min=8, max=PASSWORD_MAX, message=_l("Use at least 8 characters (at most 256).")),
        ],
    )
    confirm = PasswordField(
        _l("Confirm password"),
        validators=[
            InputRequired(_l("Type the password again.")),
            Encodable(),
            EqualTo("password", message=_l("The two passwords differ; type them again.")),
        ],
    )

    def validate_username(self, field):
        """Refuse a name that is taken, ignoring case."""
        if User.by_username(field.data or ""):
            raise ValidationError(TAKEN)


class LoginForm(FlaskForm):
    """The log-in form."""

    username = StringField(
        _l("Username"),
        validators=[
            InputRequired(_l("Enter your username.")),
            Encodable(),
            Length(max=LOGIN_NAME_MAX, message=_l("Usernames are at most 32 characters.")),
        ],
    )
    password = PasswordField(
        _l("Password"),
        validators=[
            InputRequired(_l("Enter your password.")),
            Encodable(),
            Length(max=PASSWORD_MAX, message=_l("Passwords are at most 256 characters.")),
        ],
    )
    remember = BooleanField(_l("Keep me signed in"))


@login_manager.user_loader
def load_user(session_id: str):
    """Load the user of a live session: not logged out, expired, deactivated or ended."""
    return UserSession.load_user(session_id)


def _start_session(user: User, remember: bool) -> None:
    """Log the user in with a fresh session (no fixation of an earlier one)."""
    session.clear()
    # The record is what the cookies name (User.get_id): logging out deletes it.
    UserSession.start(user, current_app.config["SESSION_LIFETIME"],
                      user_agent=request.user_agent.string, address=request.remote_addr or "")
    db.session.commit()
    login_user(user, remember=remember)
    session.permanent = remember


def _first_run() -> bool:
    """Whether nobody has an account yet (a fresh install). A database that cannot answer
    (not migrated yet, or down) is no first run: its pages say nothing of it."""
    try:
        return not User.any_exist()
    except SQLAlchemyError:
        db.session.rollback()
        return False


def _invite_problem(invite) -> str:
    """Why an invite link cannot be used, said to the person holding it."""
    reason = invite.problem if invite is not None else UNKNOWN
    return {
        REVOKED: _("This invite link was revoked. Ask an administrator for a new one."),
        EXPIRED: _("This invite link has expired. Ask an administrator for a new one."),
        USED_UP: _("This invite link has been used as often as it may. Ask an administrator "
                   "for a new one."),
    }.get(reason, _("This invite link is not valid. Check that you copied all of it, or ask "
                    "an administrator for a new one."))


def _registration_refused(mode: str, status: int = 403):
    """The register page saying this server takes no new accounts without an invite."""
    if mode == "closed":
        return render_template("auth/register.html", form=None, closed=True), status
    error = _("Registration on this server is by invitation. Ask an administrator for "
              "an invite link.")
    return render_template("auth/register.html", form=None, error=error), status


@bp.route("/register/", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["REGISTER_RATE"], methods=["POST"])
def register():
    """Create an account and start chatting (the first one on a fresh install administers it).

    CHATAPP_REGISTRATION decides who may: anyone (open), the holder of an administrator's
    invite link (invite), or nobody (closed). The first account of a fresh install can
    always be made, so that setting up needs no command line.
    """
    if current_user.is_authenticated:
        return redirect(url_for("chat.index"))
    first_run = _first_run()
    mode = current_app.config["REGISTRATION"]
    token = request.values.get("invite", "")
    invite = None
    if not first_run and mode == "closed":
        return _registration_refused(mode, 403 if request.method == "POST" else 200)
    if not first_run and mode == "invite":
        invite = Invite.by_token(token)
        if invite is None or invite.problem:
            status = 403 if request.method == "POST" or token else 200
            if not token:
                return _registration_refused(mode, status)
            return render_template("auth/register.html", form=None,
                                   error=_invite_problem(invite)), status
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = User.register(form.username.data, form.password.data)
            # The first person on a fresh install runs it; if someone else's account
            # came first meanwhile, this one is an ordinary registration, which a
            # closed or invite-only server refuses.
            if first_run and not user.claim_first_run() and mode != "open":
                db.session.rollback()
                return _registration_refused(mode)
            if invite is not None and not invite.use():  # its last use went meanwhile
                db.session.rollback()
                return render_template("auth/register.html", form=None,
                                       error=_invite_problem(Invite.by_token(token))), 403
            db.session.commit()
        except IntegrityError:  # someone took the name between the check and the insert
            db.session.rollback()
            form.username.errors.append(TAKEN)
        else:
            if invite is not None:
                log.info("user %s registered with invite %s", user.id, invite.id)
            events.person_joined(user.id)  # other people's sidebars list them now
            _start_session(user, remember=False)
            return redirect(url_for("chat.index"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/register.html", form=form, first_run=first_run,
                           invite_token=token if invite is not None else ""), status


class LoginAttempt:
    """One login attempt, counted against the limits before its password is checked.

    Counting after the answer (as a failure) would let a burst of guesses, hashed in
    parallel, all pass the check before the first one is counted. So each attempt takes
    its place first, with one atomic increment per limit (Redis INCRBY, or the in-process
    store), and gives it back only if the password was right: N simultaneous guesses
    against a limit of L get exactly L verifications, the rest 429.
    """

    def __init__(self, username: str):
        config = current_app.config
        prefix = config["RATELIMIT_KEY_PREFIX"]
        address = request.remote_addr or ""
        # Longer names than 32 characters share one key (no such account exists), so
        # they cannot fill the counter store with long keys.
        name = username.strip().lower()[:33]
        self.limits = [
            # Per username and address: guessing one account's password.
            (parse_limit(config["LOGIN_RATE"]), (prefix, "login", name, address)),
            # Per address: trying name after name (each costs an argon2 verification).
            (parse_limit(config["LOGIN_ADDRESS_RATE"]), (prefix, "login-address", address)),
        ]
        self.taken: list[tuple] = []  # (store, key, expiry) of each place taken

    def reserve(self) -> bool:
        """Take a place under every limit; False (taking none) if one is full."""
        for item, identifiers in self.limits:
            key, expiry = item.key_for(*identifiers), item.get_expiry()
            store, count = ratelimit.increment(key, expiry, 1)
            self.taken.append((store, key, expiry))
            if count > item.amount:
                self.refund()
                return False
        return True

    def refund(self) -> None:
        """Give the places back: this attempt does not count (the password was right)."""
        for store, key, expiry in self.taken:
            try:
                store.incr(key, expiry, amount=-1)
            except Exception as exc:  # noqa: BLE001 - the store went away meanwhile
                log.warning("login counter not refunded: %s", exc)
        self.taken = []


@bp.route("/login/", methods=["GET", "POST"])
def login():
    """Log in with username and password."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        attempt = LoginAttempt(form.username.data)
        if not attempt.reserve():
            abort(429)
        user = User.authenticate(form.username.data.strip(), form.password.data)
        if user is not None:
            if not user.active:
                error = _("This account has been deactivated. Ask an administrator.")
            else:
                db.session.commit()  # keep a rehashed password
                attempt.refund()
                _start_session(user, remember=form.remember.data)
                return redirect(safe_next(request.args.get("next")))
        else:
            error = _("Wrong username or password. Check both and try again.")
    if len(form.username.data or "") > LOGIN_NAME_MAX:
        form.username.data = ""  # refused unread: not echoed back either
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, error=error,
                           first_run=_first_run()), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """End this session: on the server, in every cookie, and in its open sockets."""
    user_id, key = current_user.id, current_user.session_key
    UserSession.end(key)
    db.session.commit()
    events.session_ended(user_id, key)  # every worker closes this session's sockets
    session.clear()
    # After the clear: logout_user() marks the remember cookie for deletion in the session.
    logout_user()
    flash(_("You have logged out."))
    return redirect(url_for("auth.login"))


def too_many_requests(exc):
    """Explain a rate limit on the page that hit it."""
    if request.endpoint == "auth.login":
        form = LoginForm()
        if len(form.username.data or "") > LOGIN_NAME_MAX:
            form.username.data = ""
        error = _("Too many failed attempts. Wait a few minutes, then try again.")
        return render_template("auth/login.html", form=form, error=error), 429
    if request.endpoint == "auth.register":
        form = RegisterForm(formdata=None)
        error = _("Too many new accounts from your address. Try again later.")
        return render_template("auth/register.html", form=form, error=error), 429
    return render_template("error.html", code=429, message=_("Too many requests. Slow down.")), 429
