"""Accounts: register, log in, log out."""

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import EqualTo, InputRequired, Length, Regexp, ValidationError

from .extensions import limiter, login_manager
from .models import USERNAME_RE, User, db
from .text import Encodable
from .views import safe_next

bp = Blueprint("auth", __name__)
TAKEN = "That username is taken; choose another."


class RegisterForm(FlaskForm):
    """The registration form."""

    username = StringField(
        "Username",
        validators=[
            InputRequired("Choose a username."),
            Encodable(),
            Regexp(
                USERNAME_RE,
                message="Use 3 to 32 letters, digits, dots, dashes or underscores.",
            ),
        ],
    )
    password = PasswordField(
        "Password",
        validators=[
            InputRequired("Choose a password."),
            Encodable(),
            Length(min=8, max=256, message="Use at least 8 characters (at most 256)."),
        ],
    )
    confirm = PasswordField(
        "Confirm password",
        validators=[
            InputRequired("Type the password again."),
            Encodable(),
            EqualTo("password", message="The two passwords differ; type them again."),
        ],
    )

    def validate_username(self, field):
        """Refuse a name that is taken, ignoring case."""
        if User.by_username(field.data or ""):
            raise ValidationError(TAKEN)


class LoginForm(FlaskForm):
    """The log-in form."""

    username = StringField(
        "Username", validators=[InputRequired("Enter your username."), Encodable()]
    )
    password = PasswordField(
        "Password", validators=[InputRequired("Enter your password."), Encodable()]
    )
    remember = BooleanField("Keep me signed in")


@login_manager.user_loader
def load_user(session_id: str):
    """Load the user of a session, unless deactivated or its sessions were ended."""
    try:
        user_id, epoch = (int(part) for part in session_id.split(":"))
    except ValueError:
        return None
    user = db.session.get(User, user_id)
    if user is None or user.session_epoch != epoch or not user.active:
        return None
    return user


def _start_session(user: User, remember: bool) -> None:
    """Log the user in with a fresh session (no fixation of an earlier one)."""
    session.clear()
    login_user(user, remember=remember)
    session.permanent = remember


@bp.route("/register/", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["REGISTER_RATE"], methods=["POST"])
def register():
    """Create an account and start chatting."""
    if current_user.is_authenticated:
        return redirect(url_for("chat.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = User.register(form.username.data, form.password.data)
            db.session.commit()
        except IntegrityError:  # someone took the name between the check and the insert
            db.session.rollback()
            form.username.errors.append(TAKEN)
        else:
            _start_session(user, remember=False)
            return redirect(url_for("chat.index"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/register.html", form=form), status


def _login_key() -> str:
    """Throttle failed logins per username and address together."""
    # Names are at most 32 characters: longer ones share one key, so they cannot fill
    # the counter store with megabyte-long keys.
    username = (request.form.get("username") or "").strip().lower()[:33]
    return f"login:{username}:{request.remote_addr}"


def _login_failed(response) -> bool:
    """Only failures count against the login limits: a successful login redirects."""
    return response.status_code != 302


@bp.route("/login/", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["LOGIN_RATE"],
    key_func=_login_key,
    methods=["POST"],
    deduct_when=_login_failed,
)
# One address trying name after name (each attempt costs an argon2 verification).
@limiter.limit(
    lambda: current_app.config["LOGIN_ADDRESS_RATE"],
    key_func=lambda: f"login-address:{request.remote_addr}",
    methods=["POST"],
    deduct_when=_login_failed,
)
def login():
    """Log in with username and password."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = User.authenticate(form.username.data.strip(), form.password.data)
        if user is not None:
            if not user.active:
                error = "This account has been deactivated. Ask an administrator."
            else:
                db.session.commit()  # keep a rehashed password
                _start_session(user, remember=form.remember.data)
                return redirect(safe_next(request.args.get("next")))
        else:
            error = "Wrong username or password. Check both and try again."
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """End this session."""
    logout_user()
    session.clear()
    flash("You have logged out.")
    return redirect(url_for("auth.login"))


def too_many_requests(exc):
    """Explain a rate limit on the page that hit it."""
    if request.endpoint == "auth.login":
        form = LoginForm()
        error = "Too many failed attempts. Wait a few minutes, then try again."
        return render_template("auth/login.html", form=form, error=error), 429
    if request.endpoint == "auth.register":
        form = RegisterForm(formdata=None)
        error = "Too many new accounts from your address. Try again later."
        return render_template("auth/register.html", form=form, error=error), 429
    return render_template("error.html", code=429, message="Too many requests. Slow down."), 429
