"""Backups: one .tar.gz holding a consistent copy of the database, the uploads and a
manifest (version, migration head, row counts, SHA-256 of every file). restore.py puts
one back.

The database is copied first, the uploads (from a folder or a bucket, storage.py) after
it: an image's files are written before its message commits, so every image in the copy
finds its files in the archive (files uploaded after the copy are harmless extras).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlalchemy.engine import make_url

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.pgdump"
UPLOADS = "uploads"
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


def _tables() -> list[str]:
    """chatapp's tables, parents first."""
    from .extensions import db

    return [table.name for table in db.metadata.sorted_tables]


def _chatapp_version() -> str:
    """The installed chatapp's version, written into each manifest."""
    try:
        return version("chatapp")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "unknown"


def _facts(execute) -> tuple[str | None, dict[str, int]]:
    """The migration head and the row count of every table, read through execute(sql)."""
    head = execute("SELECT version_num FROM alembic_version")
    counts = {name: execute(f'SELECT count(*) FROM "{name}"') for name in _tables()}
    return head, counts


def _sha256(path: Path) -> str:
    """A file's SHA-256, read in chunks (a database can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _libpq(url) -> tuple[str, dict]:
    """A libpq URL for pg_dump/pg_restore, and the environment carrying the password
    (a password on the command line would show in the process list)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _need(tool: str) -> str:
    """The path of a PostgreSQL client tool, or an error saying how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise BackupError(
            f"{tool} is not on PATH. Install PostgreSQL's client tools (Debian: "
            "postgresql-client, the same major version as the server), or run it by hand "
            "as docs/operations.md shows."
        )
    return path


# -- backup ----------------------------------------------------------------------------------


def _copy_sqlite(database: str, target: Path) -> tuple[str | None, dict[str, int]]:
    """Copy a live SQLite database with the online backup API, then check the copy."""
    if not os.path.isfile(database):
        raise BackupError(f"There is no database at {database}.")
    source = sqlite3.connect(database, timeout=30)
    copy = sqlite3.connect(target)
    try:
        # One step: the copy is one read transaction's snapshot. In WAL mode writers carry
        # on meanwhile (people keep posting); a step-by-step copy would restart on each write.
        source.backup(copy)
        if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError("The database copy failed its integrity check; nothing was written.")
        return _facts(lambda sql: copy.execute(sql).fetchone()[0])
    finally:
        copy.close()
        source.close()


def _dump_postgres(url, target: Path) -> tuple[str | None, dict[str, int]]:
    """pg_dump the database; the counts come from the very snapshot pg_dump reads."""
    import psycopg

    pg_dump = _need("pg_dump")
    libpq, env = _libpq(url)
    with psycopg.connect(libpq, password=url.password) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        facts = _facts(lambda sql: conn.execute(sql).fetchone()[0])
        done = subprocess.run(
            [pg_dump, "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot}", "--file", str(target), "--dbname", libpq],
            env=env, capture_output=True, text=True,
        )
        conn.rollback()
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
    return facts


def create(database_url: str, store, path: Path) -> dict:
    """Write a backup archive to path (which must not exist yet); return its manifest.

    store: the image store (storage.py), or an upload folder's path.
    """
    store = as_store(store)
    path = Path(path)
    if path.exists():
        raise BackupError(f"{path} already exists. Choose a new file name.")
    if not path.parent.is_dir():
        raise BackupError(f"There is no folder {path.parent}.")
    url = make_url(database_url)
    with tempfile.TemporaryDirectory(prefix=".chatapp-backup-", dir=path.parent) as staging:
        if url.get_backend_name() == "sqlite":
            name, engine = SQLITE_FILE, "sqlite"
            head, counts = _copy_sqlite(url.database, Path(staging) / name)
        else:
            name, engine = POSTGRES_FILE, "postgresql"
            head, counts = _dump_postgres(url, Path(staging) / name)
        partial = Path(staging) / "archive.tar.gz"
        files: dict[str, dict] = {}
        with tarfile.open(partial, "w:gz") as tar:
            database = Path(staging) / name
            files[name] = {"sha256": _sha256(database), "size": database.stat().st_size}
            tar.add(database, arcname=name, recursive=False)
            for key, data in _stored_files(store):
                arcname = f"{UPLOADS}/{key}"
                files[arcname] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                _add_bytes(tar, arcname, data)
            manifest = {
                "format": FORMAT,
                "chatapp_version": _chatapp_version(),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "database": engine,
                "migration_head": head,
                "counts": counts,
                "files": files,
            }
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
        # Moved into place only when complete: a failed backup leaves no half archive.
        os.replace(partial, path)
    return manifest


def as_store(store):
    """A storage.Storage, given one or the path of an upload folder."""
    from .storage import LocalStorage, Storage

    return store if isinstance(store, Storage) else LocalStorage(str(store))


def _stored_files(store):
    """(key, bytes) of every stored image file, from a folder or a bucket alike."""
    from .storage import StorageUnavailable

    try:
        for entry in store.list():
            try:
                yield entry.key, store.get(entry.key)  # bounded by CHATAPP_MAX_UPLOAD_BYTES
            except FileNotFoundError:  # removed since the listing
                continue
    except StorageUnavailable as exc:
        raise BackupError(f"The images cannot be read from the {store!r}: {exc}. Nothing was written.")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a file made of these bytes: checksummed and archived from the same read."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o640
    info.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))
