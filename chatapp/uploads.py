"""Images in messages: the composer's upload, storage under UPLOAD_DIR, and serving to members."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import uuid

from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from werkzeug.security import safe_join

from . import imaging, ratelimit
from .chat import member_conversation_or_404, new_client_id
from .extensions import db
from .imaging import Refused
from .models import Image, Message
from .realtime import events

log = logging.getLogger(__name__)
bp = Blueprint("uploads", __name__)

# Decoding a large image takes a few hundred megabytes for a moment: at most two at once
# per process, so memory stays bounded however many people upload together.
_decoding = threading.BoundedSemaphore(2)

IMAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def init_app(app) -> None:
    """Register the blueprint and give Pillow's header check our pixel limit."""
    imaging.set_pixel_limit(app.config["MAX_IMAGE_PIXELS"])
    app.register_blueprint(bp)
    app.jinja_env.globals.setdefault("new_client_id", new_client_id)


class Refusal(Exception):
    """An upload that changes nothing; the sender sees why, with an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _refuse(message: str, status: int):
    """The error fragment that appears in the composer (htmx swaps it whatever the status)."""
    log.info("upload by user %s refused (%s): %s", current_user.get_id(), status, message)
    return render_template("pushes/composer_error.html", error=message), status


@bp.errorhandler(413)
def too_large(exc):
    """A request over MAX_CONTENT_LENGTH: say what the limit is."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit >= 1024 * 1024:
        size = f"{limit / (1024 * 1024):.3g} MB"
    else:
        size = f"{limit / 1024:.3g} KB"
    return _refuse(f"That file is too large: images can be at most {size}. Attach a smaller one.", 413)


@bp.errorhandler(CSRFError)
def csrf_failed(exc):
    """A forged or expired form: nothing is stored."""
    return _refuse("Your session has changed. Reload the page to send images.", 400)


@bp.post("/c/<int:conversation_id>/images")
@login_required
def upload(conversation_id: int):
    """Post an attached image (with an optional caption) as one message, pushed live."""
    conversation = member_conversation_or_404(conversation_id)
    try:
        client_id = _client_id(request.form.get("client_id"))
        caption = _caption(request.form.get("body", ""))
        upload = request.files.get("image")
        if upload is None or _size(upload.stream) == 0:
            raise Refusal("Choose an image to attach first.")
        sent = db.session.scalar(
            select(Message).where(
                Message.author_id == current_user.id, Message.client_id == client_id
            )
        )
        if sent is None:  # a resend of an acknowledged upload is only acknowledged again
            _check_rate(current_user.id)
            # Decoding takes a while: hold no database transaction (nor connection) meanwhile.
            db.session.rollback()
            with _decoding:
                processed = _off_the_loop(
                    imaging.process, upload.stream, current_app.config["MAX_IMAGE_PIXELS"]
                )
            _post(conversation, caption, client_id, processed)
    except Refused as refused:
        return _refuse(str(refused), 422)
    except Refusal as refusal:
        return _refuse(str(refusal), refusal.status)
    return render_template(
        "pushes/composer_reset.html", conversation_id=conversation.id, client_id=new_client_id()
    )


def _client_id(value) -> str:
    """The composer's id for this upload, so a resend never makes a second message."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise Refusal("That upload could not be read. Reload the page and try again.")


def _caption(body: str) -> str:
    """The optional text sent with the image, within the message length limit."""
    from .text import blank

    body = body.strip()
    if blank(body):  # only invisible characters: no caption, rather than an empty-looking one
        return ""
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    problem = Message.text_problem(body, limit, "Captions")
    if problem:
        raise Refusal(problem)
    return body


def _size(stream) -> int:
    """How many bytes the uploaded file has (the stream is left at its start)."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _check_rate(user_id: int) -> None:
    """Images count against the same rate as text messages."""
    if not ratelimit.hit(current_app.config["MESSAGE_RATE"], "messages", str(user_id)):
        raise Refusal("You are sending messages too fast. Wait a moment, then send again.", 429)


def _off_the_loop(fn, *args):
    """Run CPU-heavy work on a real thread under gevent, so sockets keep flowing meanwhile."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return fn(*args)
    if monkey.is_module_patched("threading"):
        failed, value = get_hub().threadpool.apply(_caught, (fn, *args))
        if failed:
            raise value  # here, on the request's greenlet, where it is handled
        return value
    return fn(*args)


def _caught(fn, *args):
    """fn's outcome as a value: gevent's pool prints a traceback for any exception it sees."""
    try:
        return False, fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed back whole and re-raised
        return True, exc


def _post(conversation, caption: str, client_id: str, processed: imaging.Processed) -> None:
    """Store the files, then the image and its message in one commit, then announce it."""
    stem = _random_stem()
    path = _write(f"{stem}.{processed.extension}", processed.original.data)
    thumb = processed.thumb or processed.original
    thumb_path = _write(f"{stem}-thumb.{processed.extension}", thumb.data) if processed.thumb else path
    image = Image(
        path=path,
        thumb_path=thumb_path,
        content_type=processed.content_type,
        width=processed.original.width,
        height=processed.original.height,
        size_bytes=len(processed.original.data),
        thumb_width=thumb.width,
        thumb_height=thumb.height,
    )
    try:
        message, created = Message.post(conversation, current_user, caption, client_id, image=image)
    except BaseException:
        _remove(path, thumb_path)
        raise
    if created:
        events.message_created(message)
    else:  # a concurrent resend stored it first: these files belong to nothing
        _remove(path, thumb_path)


def _remove(*paths: str) -> None:
    """Delete stored files that no message will ever show."""
    for rel in set(paths):
        try:
            os.unlink(os.path.join(current_app.config["UPLOAD_DIR"], rel))
        except FileNotFoundError:
            pass


def _random_stem() -> str:
    """A random storage name spread over two levels of subfolders (ab/cd/abcd…)."""
    name = secrets.token_hex(16)
    return f"{name[:2]}/{name[2:4]}/{name}"


def _write(rel: str, data: bytes) -> str:
    """Write a new file under UPLOAD_DIR (never replacing one); return its relative path."""
    full = os.path.join(current_app.config["UPLOAD_DIR"], rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return rel


@bp.get("/images/<int:image_id>")
@login_required
def original(image_id: int):
    """The full image, for members of the conversation it was posted in."""
    return _send(image_id, thumbnail=False)


@bp.get("/images/<int:image_id>/thumb")
@login_required
def thumbnail(image_id: int):
    """The image's thumbnail, for members of the conversation it was posted in."""
    return _send(image_id, thumbnail=True)


def _send(image_id: int, thumbnail: bool):
    """Serve a stored file as the type it was stored as, to members only (others 404)."""
    image = db.session.get(Image, image_id)
    conversation = image.shown_in() if image else None
    if conversation is None or not conversation.is_member(current_user):
        abort(404)
    return send_image(image, thumbnail)


def send_image(image: Image, thumbnail: bool):
    """The stored file of an image, for a caller that has checked who may see it."""
    full = safe_join(current_app.config["UPLOAD_DIR"], image.thumb_path if thumbnail else image.path)
    if full is None or not os.path.isfile(full):
        log.warning("image %s is missing its file", image.id)
        abort(404)
    extension = full.rsplit(".", 1)[-1]
    response = send_file(
        full,
        mimetype=image.content_type,
        conditional=True,
        etag=True,
        download_name=f"image-{image.id}{'-thumb' if thumbnail else ''}.{extension}",
    )
    # Private content: browsers may keep it, shared caches may not.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Even if a browser rendered the file as a document, it could run nothing.
    response.headers["Content-Security-Policy"] = IMAGE_CSP
    response.vary.add("Cookie")
    return response
