"""Restores: check a backup archive (backup.py) against its manifest, then put its database
and uploads (into a folder or a bucket, storage.py) in place of this instance's.

Every file is unpacked and checked in a staging folder before the instance is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from .backup import (
    CHUNK, FORMAT, MANIFEST, POSTGRES_FILE, SQLITE_FILE, UPLOADS, BackupError, _facts, _libpq,
    _need, as_store,
)
from .storage import LocalStorage, StorageUnavailable, content_type_of


def _known_revision(head: str | None, migrations: str) -> bool:
    """Whether this version of chatapp knows the migration the backup was taken at."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if head is None:
        return False
    script = ScriptDirectory.from_config(_alembic_config(migrations))
    try:
        return script.get_revision(head) is not None
    except CommandError:
        return False


def _alembic_config(migrations: str):
    """Alembic's settings for the migrations folder (no database needed)."""
    from alembic.config import Config

    config = Config(os.path.join(migrations, "alembic.ini"))
    config.set_main_option("script_location", migrations)
    return config


def _unpack(archive: Path, staging: Path, migrations: str) -> dict:
    """Check the archive against its manifest and unpack it into staging; return the manifest.

    Nothing outside staging is touched: every file is checked before the instance is.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if names.count(MANIFEST) != 1:
                raise BackupError("The archive has no manifest: it is not a chatapp backup.")
            manifest = json.load(tar.extractfile(MANIFEST))
            if manifest.get("format") != FORMAT:
                raise BackupError(f"The archive's format {manifest.get('format')!r} is not one this version reads.")
            files = manifest["files"]
            if sorted(set(names) - {MANIFEST}) != sorted(files) or len(names) != len(files) + 1:
                raise BackupError("The archive's files are not the ones its manifest lists: it is damaged.")
            for member in members:
                if member.name == MANIFEST:
                    continue
                _check_name(member)
                target = staging / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with tar.extractfile(member) as source, open(target, "wb") as out:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != files[member.name]["sha256"]:
                    raise BackupError(f"{member.name} does not match its checksum: the archive is damaged.")
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, KeyError) as exc:
        raise BackupError(f"The archive cannot be read ({exc}): it is damaged or not a chatapp backup.")
    if not _known_revision(manifest.get("migration_head"), migrations):
        raise BackupError(
            f"The backup's database is at migration {manifest.get('migration_head')!r}, which this "
            "version of chatapp does not know: restore it with the version that made it "
            f"({manifest.get('chatapp_version')}) or a newer one."
        )
    return manifest


def _check_name(member: tarfile.TarInfo) -> None:
    """Only plain files at plain relative paths: nothing may land outside the instance."""
    path = PurePosixPath(member.name)
    if (not member.isfile() or path.is_absolute() or ".." in path.parts
            or not (member.name in (SQLITE_FILE, POSTGRES_FILE) or path.parts[0] == UPLOADS)):
        raise BackupError(f"The archive holds {member.name!r}, which a chatapp backup never does.")


def _is_empty(database_url: str, store) -> bool:
    """Whether an instance holds nothing yet: no accounts and no uploaded files."""
    try:
        if next(iter(store.list()), None) is not None:
            return False
    except StorageUnavailable as exc:
        raise BackupError(f"The {store!r} cannot be read ({exc}); nothing was restored.")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not os.path.exists(url.database or ""):
        return True
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("users"):
                return True
            return conn.execute(text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        engine.dispose()


def restore(database_url: str, store, archive: Path, migrations: str,
            force: bool = False) -> dict:
    """Restore a backup into this instance (refusing a non-empty one unless force).

    store: the image store (storage.py), or an upload folder's path.
    """
    store = as_store(store)
    archive = Path(archive)
    if not archive.is_file():
        raise BackupError(f"There is no file {archive}.")
    url = make_url(database_url)
    engine_name = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
    if not force and not _is_empty(database_url, store):
        raise BackupError(
            "This instance already holds accounts or images. Restore into an empty one, or "
            "pass --force to replace everything in it with the backup."
        )
    if engine_name == "sqlite":
        base = Path(url.database).parent
    elif isinstance(store, LocalStorage):
        base = Path(store.root).parent
    else:
        base = Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".chatapp-restore-", dir=base) as tmp:
        staging = Path(tmp)
        manifest = _unpack(archive, staging, migrations)
        if manifest["database"] != engine_name:
            raise BackupError(
                f"The backup holds a {manifest['database']} database and this instance uses "
                f"{engine_name}; see docs/operations.md for moving between them."
            )
        if engine_name == "sqlite":
            _restore_sqlite(staging / SQLITE_FILE, url.database)
        else:
            _restore_postgres(staging / POSTGRES_FILE, url)
        _restore_uploads(staging / UPLOADS, store)
    return manifest


def _restore_sqlite(copy: Path, database: str) -> None:
    """Write the copy into the database file through the backup API (WAL files included)."""
    os.makedirs(os.path.dirname(database) or ".", exist_ok=True)
    source = sqlite3.connect(copy)
    target = sqlite3.connect(database, timeout=30)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _restore_postgres(dump: Path, url) -> None:
    """pg_restore the dump, replacing whatever objects of the same names exist."""
    pg_restore = _need("pg_restore")
    libpq, env = _libpq(url)
    done = subprocess.run(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",
         "--single-transaction", "--exit-on-error", "--dbname", libpq, str(dump)],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()}")


def _restore_uploads(source: Path, store) -> None:
    """Make the store (folder or bucket) hold exactly the backup's files."""
    try:
        for old in list(store.list()):
            store.delete(old.key)
        if isinstance(store, LocalStorage):
            _remove_empty_folders(Path(store.root))
        if source.is_dir():
            for file in sorted(source.rglob("*")):
                if file.is_file():
                    store.put(file.relative_to(source).as_posix(), file.read_bytes(),
                              content_type_of(file.name))
    except StorageUnavailable as exc:
        raise BackupError(
            f"The database was restored but the images could not be written to the {store!r} "
            f"({exc}). Run the restore again with --force once the store answers."
        )


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def verify(database_url: str, manifest: dict) -> None:
    """Check the restored database holds the row counts the manifest recorded."""
    engine = create_engine(make_url(database_url))
    try:
        with engine.connect() as conn:
            head, counts = _facts(lambda sql: conn.execute(text(sql)).scalar())
    finally:
        engine.dispose()
    if counts != manifest["counts"]:
        raise BackupError(f"The restored database holds {counts}, not the {manifest['counts']} backed up.")
