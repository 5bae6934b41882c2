"""`flask --app chatapp storage ...`: copy images between backends, and sweep orphans."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from . import storage

group = AppGroup("storage", help="Where image files live (CHATAPP_STORAGE): migrate, sweep.")


class MigrationError(Exception):
    """A copy that did not arrive intact; the message names the object."""


def migrate(source: storage.Storage, target: storage.Storage, echo=lambda line: None) -> tuple[int, int]:
    """Copy every object of source into target, each verified by its SHA-256; (copied, kept).

    Resumable: an object already in the target with the same checksum is kept as it is,
    one that differs (a copy cut short, an older version) is written again. Safe while
    the app runs: objects are only added, never removed from either side, and an image
    uploaded meanwhile is copied by the next run.
    """
    copied = kept = 0
    for entry in source.list():
        try:
            data = source.get(entry.key)
        except FileNotFoundError:  # deleted since the listing (a message deleted meanwhile)
            continue
        want = hashlib.sha256(data).hexdigest()
        try:
            if target.exists(entry.key) and target.sha256(entry.key) == want:
                kept += 1
                continue
        except FileNotFoundError:
            pass
        target.put(entry.key, data, storage.content_type_of(entry.key))
        got = target.sha256(entry.key)
        if got != want:
            raise MigrationError(f"{entry.key} arrived as sha256 {got}, not {want}: run migrate again.")
        copied += 1
        echo(f"copied {entry.key} ({len(data)} bytes, sha256 {want[:12]}…)")
    return copied, kept


@group.command("migrate")
@click.option("--to", "to", type=click.Choice(["s3", "local"]), required=True,
              help="The backend to copy images into (the other one is the source).")
@click.option("--verbose", is_flag=True, help="Name every object copied.")
def migrate_command(to: str, verbose: bool) -> None:
    """Copy every image file into the other backend, verified by checksum (resumable)."""
    config = current_app.config
    try:
        source = storage.from_config(config, "local" if to == "s3" else "s3")
        target = storage.from_config(config, to)
        for store in (source, target):
            store.check()
        copied, kept = migrate(source, target, click.echo if verbose else (lambda line: None))
    except (storage.StorageMisconfigured, storage.StorageUnavailable, MigrationError) as exc:
        raise click.ClickException(f"{exc} (what was copied stays; run the command again)")
    click.echo(
        f"Copied {copied} files from the {source!r} to the {target!r}, each verified by "
        f"SHA-256; {kept} were there already."
    )
    if config["STORAGE"] != to:
        click.echo(
            f"Next: set CHATAPP_STORAGE={to} and CHATAPP_STORAGE_FALLBACK={source.name}, restart "
            "chatapp, then run this command once more to copy what was uploaded meanwhile "
            "(docs/deployment.md)."
        )


def orphans(store: storage.Storage, older_than: timedelta) -> list[str]:
    """Keys of stored objects that no image or avatar refers to, older than the given age."""
    from .extensions import db
    from .models import Image, User

    cutoff = datetime.now(timezone.utc) - older_than
    candidates = [e.key for e in store.list() if e.modified < cutoff]
    if not candidates:
        return []
    used = set(db.session.scalars(select(Image.path)))
    used.update(db.session.scalars(select(Image.thumb_path)))
    # People's pictures live in the same store (account.py).
    used.update(db.session.scalars(select(User.avatar_key).where(User.avatar_key.is_not(None))))
    return [key for key in candidates if key not in used]


@group.command("sweep")
@click.option("--minutes", type=click.IntRange(min=1), default=60,
              help="Only objects at least this old (an upload under way is younger).")
def sweep_command(minutes: int) -> None:
    """Delete stored files that no image or avatar refers to (left by a store failing mid-upload)."""
    store = storage.current()
    try:
        found = orphans(store, timedelta(minutes=minutes))
    except storage.StorageUnavailable as exc:
        raise click.ClickException(str(exc))
    done = storage.delete_files(*found)
    click.echo(f"Deleted {len(found)} files nothing refers to from the {store!r}."
               + ("" if done else " Some could not be deleted: run it again later."))


def init_app(app) -> None:
    app.cli.add_command(group)
