"""Command-line tools (flask --app chatapp ...)."""

import os

import click
from flask.cli import with_appcontext

from .models import USERNAME_RE, User, db

PASSWORD_ENV = "CHATAPP_ADMIN_PASSWORD"
MIN_PASSWORD = 8


@click.command("create-admin")
@click.argument("username")
@with_appcontext
def create_admin(username: str) -> None:
    """Make USERNAME an administrator, creating the account if it does not exist.

    A new account's password is asked for twice, or read from CHATAPP_ADMIN_PASSWORD
    when a script runs this. An existing account keeps its password.
    """
    user = User.by_username(username)
    if user is not None:
        was_inactive = not user.active
        user.promote()
        user.reactivate()
        db.session.commit()
        note = " (and reactivated the account)" if was_inactive else ""
        click.echo(f"{user.username} is now an administrator{note}.")
        return
    if not USERNAME_RE.match(username):
        raise click.BadParameter(
            "use 3 to 32 letters, digits, dots, dashes or underscores.", param_hint="USERNAME"
        )
    password = os.environ.get(PASSWORD_ENV) or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    if len(password) < MIN_PASSWORD:
        raise click.UsageError(f"The password needs at least {MIN_PASSWORD} characters.")
    user = User.register(username, password)
    user.promote()
    db.session.commit()
    click.echo(f"Created administrator {user.username}.")


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(create_admin)
