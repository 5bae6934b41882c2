"""Where image files live: a folder (CHATAPP_STORAGE=local, the default) or an S3-compatible
bucket (CHATAPP_STORAGE=s3). Both speak one small interface, so uploads, serving,
deletion, retention, backup, restore and `flask storage migrate` never ask which it is.

Keys are the relative names stored in the images table (ab/cd/<hex>.png); in a bucket
(storage_s3.py) they sit under an optional prefix (CHATAPP_S3_PREFIX).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Iterator

from flask import current_app

log = logging.getLogger(__name__)
CHUNK = 256 * 1024


class StorageUnavailable(Exception):
    """The store cannot be reached or answered with a failure (down, slow, refusing)."""


class StorageMisconfigured(RuntimeError):
    """The store answers, but not for us: wrong credentials, missing bucket, no access."""


@dataclass
class Entry:
    """One stored object, as a listing sees it."""

    key: str
    size: int
    modified: datetime


@dataclass
class StoredObject:
    """An object opened for reading: its body comes in chunks; close() releases it."""

    size: int
    etag: str
    modified: datetime
    chunks: Iterator[bytes]
    close: callable


def check_key(key: str) -> str:
    """A relative key of plain parts: a name from the database can never leave the store."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(p in ("", ".", "..") for p in key.split("/")) or "\\" in key:
        raise ValueError(f"not a storage key: {key!r}")
    return key


def content_type_of(key: str) -> str:
    """The type an image file is served as, from the extension chatapp gave its name."""
    from .imaging import CONTENT_TYPES, EXTENSIONS

    by_extension = {ext: CONTENT_TYPES[fmt] for fmt, ext in EXTENSIONS.items()}
    return by_extension.get(key.rsplit(".", 1)[-1], "application/octet-stream")


class Storage:
    """The interface; LocalStorage and S3Storage implement it."""

    name = "?"

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store data under key, whole or not at all (a reader never sees half of it)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        raise NotImplementedError

    def stream(self, key: str) -> StoredObject:
        """The object opened for streaming; FileNotFoundError when there is none."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens when there is none."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self) -> Iterator[Entry]:
        """Every object in the store, in key order."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise StorageMisconfigured (or StorageUnavailable) unless the store works for us."""

    def sha256(self, key: str) -> str:
        """The SHA-256 of an object's bytes, read back from the store."""
        return hashlib.sha256(self.get(key)).hexdigest()


# -- a folder ------------------------------------------------------------------------------


class LocalStorage(Storage):
    """Files under a folder (CHATAPP_UPLOAD_DIR), as chatapp always kept them."""

    name = "local"

    def __init__(self, root: str):
        self.root = os.path.realpath(root)

    def __repr__(self) -> str:
        return f"folder {self.root}"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def put(self, key, data, content_type="application/octet-stream"):
        full = self._path(key)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        # Written beside, then renamed into place: the name holds all of it or nothing.
        partial = f"{full}.{secrets.token_hex(4)}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(partial, full)
        except BaseException:
            _unlink(partial)
            raise

    def get(self, key):
        with open(self._path(key), "rb") as f:
            return f.read()

    def stream(self, key):
        f = open(self._path(key), "rb")
        stat = os.fstat(f.fileno())

        def chunks():
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return StoredObject(
            size=stat.st_size,
            etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
            modified=datetime.fromtimestamp(int(stat.st_mtime), timezone.utc),
            chunks=chunks(),
            close=f.close,
        )

    def delete(self, key):
        _unlink(self._path(key))

    def exists(self, key):
        return os.path.isfile(self._path(key))

    def list(self):
        found = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                if name.endswith(".partial"):
                    continue  # a write under way (or one a crash cut short)
                full = os.path.join(folder, name)
                try:
                    stat = os.lstat(full)
                except FileNotFoundError:
                    continue
                if not os.path.isfile(full) or os.path.islink(full):
                    continue
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                found.append(Entry(key, stat.st_size,
                                   datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return iter(sorted(found, key=lambda e: e.key))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- while moving between backends ---------------------------------------------------------


class WithFallback(Storage):
    """The new backend, reading from the old one what is not copied yet (CHATAPP_STORAGE_FALLBACK).

    For the switch from one backend to the other while people post: writes go to the new
    one, an object missing there is read from the old one, deletes reach both, and a
    listing (backups) shows both. Once `storage migrate` has run after the switch, the
    fallback can go.
    """

    def __init__(self, primary: Storage, fallback: Storage):
        self.primary, self.fallback = primary, fallback
        self.name = primary.name

    def __repr__(self) -> str:
        return f"{self.primary!r} (falling back to the {self.fallback!r})"

    def put(self, key, data, content_type="application/octet-stream"):
        self.primary.put(key, data, content_type)

    def _read(self, method: str, key: str):
        try:
            return getattr(self.primary, method)(key)
        except FileNotFoundError:
            return getattr(self.fallback, method)(key)

    def get(self, key):
        return self._read("get", key)

    def stream(self, key):
        return self._read("stream", key)

    def delete(self, key):
        self.primary.delete(key)
        self.fallback.delete(key)

    def exists(self, key):
        return self.primary.exists(key) or self.fallback.exists(key)

    def list(self):
        merged = {e.key: e for e in self.fallback.list()}
        merged.update((e.key, e) for e in self.primary.list())
        return iter(sorted(merged.values(), key=lambda e: e.key))

    def check(self):
        self.primary.check()
        self.fallback.check()


# -- the app's store -----------------------------------------------------------------------


def from_config(config, backend: str | None = None) -> Storage:
    """The store the configuration names (or only the one named by backend, for migrating)."""
    if backend is None:
        store = from_config(config, config.get("STORAGE") or "local")
        fallback = (config.get("STORAGE_FALLBACK") or "").lower()
        if fallback and fallback != store.name:
            store = WithFallback(store, from_config(config, fallback))
        return store
    backend = backend.lower()
    if backend == "local":
        return LocalStorage(config["UPLOAD_DIR"])
    if backend == "s3":
        from .storage_s3 import S3Storage

        return S3Storage(
            config.get("S3_BUCKET") or "",
            prefix=config.get("S3_PREFIX") or "",
            endpoint_url=config.get("S3_ENDPOINT_URL"),
            region=config.get("S3_REGION"),
            timeout=config.get("S3_TIMEOUT", 5.0),
        )
    raise StorageMisconfigured(f"CHATAPP_STORAGE={backend!r}: use local or s3.")


def init_app(app) -> None:
    """Build the app's store; refuse to start when a bucket does not accept our credentials.

    A store that cannot be reached right now does not stop the app: chat goes on, and
    images answer 503 until it is back. Wrong credentials or a missing bucket will not
    mend themselves, so they stop it at once with the reason.
    """
    store = from_config(app.config)
    if not isinstance(store, LocalStorage):
        try:
            store.check()
        except StorageUnavailable as exc:
            log.warning("images are unavailable until the object store answers: %s", exc)
    app.extensions["storage"] = store


def current() -> Storage:
    """The running app's store."""
    return current_app.extensions["storage"]


def image_keys(image) -> set[str]:
    """The keys an image's files are stored under (its thumbnail may be the original)."""
    return {key for key in (image.path, image.thumb_path) if key}


def delete_files(*keys: str) -> bool:
    """Delete stored objects no row refers to any longer; False when some could not be.

    Call it after the commit that removed their rows: a crash or an unreachable store in
    between leaves unused objects, never a message without its image. What is left is
    logged, and `flask storage sweep` removes it later.
    """
    store = current()
    done = True
    for key in sorted(set(k for k in keys if k)):
        try:
            store.delete(key)
        except (StorageUnavailable, OSError, ValueError) as exc:
            done = False
            log.warning("could not delete stored object %s (flask storage sweep will): %s", key, exc)
    return done


def delete_image_files(image) -> None:
    """Delete an image's stored files once the transaction deleting its row commits.

    Call it in the same transaction as the delete of the message, image or room (before
    the commit, while the image's attributes are loaded). Nothing happens if that
    transaction rolls back; after its commit the files go (see delete_files).
    """
    delete_after_commit(*image_keys(image))


def delete_after_commit(*keys: str) -> None:
    """Delete these objects when the current database transaction commits (not if it rolls back)."""
    from .extensions import db

    db.session().info.setdefault(_PENDING, set()).update(k for k in keys if k)


_PENDING = "chatapp.storage.delete_after_commit"


def _listen() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    @event.listens_for(Session, "after_commit")
    def _after_commit(session):
        keys = session.info.pop(_PENDING, None)
        if keys:
            delete_files(*keys)

    @event.listens_for(Session, "after_rollback")
    def _after_rollback(session):
        session.info.pop(_PENDING, None)


_listen()
