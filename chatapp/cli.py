"""Command-line tools (flask --app chatapp ...)."""

import os
from pathlib import Path

import click
from flask import current_app
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


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def backup_command(path: Path) -> None:
    """Write the database and uploads to PATH (a new .tar.gz), safe while chatapp runs."""
    from . import backup, storage

    config = current_app.config
    try:
        manifest = backup.create(config["SQLALCHEMY_DATABASE_URI"], storage.current(), path)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc))
    counts = manifest["counts"]
    click.echo(
        f"Wrote {path}: {counts.get('messages', 0)} messages, {counts.get('users', 0)} accounts, "
        f"{len(manifest['files']) - 1} uploaded files, at migration {manifest['migration_head']}."
    )


@click.command("restore")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an instance that already holds data.")
@with_appcontext
def restore_command(path: Path, force: bool) -> None:
    """Restore the backup at PATH into this instance (stop chatapp first).

    Refuses an instance that holds accounts or images unless --force, and an archive
    whose checksums or migration do not check out; then migrates to this version.
    """
    from flask_migrate import upgrade

    from . import backup, restore, storage
    from .extensions import db

    config = current_app.config
    url = config["SQLALCHEMY_DATABASE_URI"]
    migrations = current_app.extensions["migrate"].directory
    db.engine.dispose()  # no connection of ours may hold the old database open
    try:
        manifest = restore.restore(url, storage.current(), path, migrations, force=force)
        restore.verify(url, manifest)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc))
    upgrade(directory=migrations)  # a backup from an older version gets this one's schema
    counts = manifest["counts"]
    click.echo(
        f"Restored {path} (taken {manifest['created_at']} by chatapp {manifest['chatapp_version']}): "
        f"{counts.get('messages', 0)} messages, {counts.get('users', 0)} accounts, "
        f"{len(manifest['files']) - 1} uploaded files."
    )


@click.command("prune")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Delete messages older than this many days (default: CHATAPP_RETENTION_DAYS).")
@with_appcontext
def prune_command(days: int | None) -> None:
    """Delete messages and their images older than the retention period (run it from cron)."""
    from .retention import prune

    days = days or current_app.config["RETENTION_DAYS"]
    if not days:
        click.echo("Retention is off (CHATAPP_RETENTION_DAYS is not set): nothing deleted.")
        return
    if days < 1:
        raise click.ClickException("CHATAPP_RETENTION_DAYS must be a number of days, 1 or more.")
    messages, images = prune(days)
    click.echo(f"Deleted {messages} messages and {images} images older than {days} days.")


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(create_admin)
    app.cli.add_command(backup_command)
    app.cli.add_command(restore_command)
    app.cli.add_command(prune_command)
    from . import storage_cli

    storage_cli.init_app(app)
