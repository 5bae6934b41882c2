"""Images in messages: the composer's upload, storage (storage.py), and serving to members."""

from __future__ import annotations

import io
import logging
import os
import secrets
import threading

from flask import Blueprint, abort, current_app, request
from flask_babel import gettext as _, lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from . import imaging, metrics, posting, storage
from .extensions import db
from .models import Conversation, Image, Message
from .posting import Refusal
from .views import member_conversation_or_404, send_image

log = logging.getLogger(__name__)
bp = Blueprint("uploads", __name__)

# Decoding a large image takes a few hundred megabytes for a moment: at most two at once
# per process, so memory stays bounded however many people upload together.
_decoding = threading.BoundedSemaphore(2)


def init_app(app) -> None:
    """Register the blueprint and give Pillow's header check our pixel limit."""
    imaging.set_pixel_limit(app.config["MAX_IMAGE_PIXELS"])
    app.register_blueprint(bp)


def _refuse(message: str, status: int):
    """The error fragment that appears in the composer (htmx swaps it whatever the status)."""
    # The user's id, not get_id(): that names the session, a secret the log must not hold.
    user_id = getattr(current_user, "id", None)
    log.info("upload by user %s refused (%s): %s", user_id, status, message)
    return posting.refusal_fragment(message), status


@bp.errorhandler(413)
def too_large(exc):
    """A request over MAX_CONTENT_LENGTH: say what the limit is."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit >= 1024 * 1024:
        size = f"{limit / (1024 * 1024):.3g} MB"
    else:
        size = f"{limit / 1024:.3g} KB"
    return _refuse(_("That file is too large: images can be at most %(size)s. Attach a smaller one.", size=size), 413)


@bp.errorhandler(CSRFError)
def csrf_failed(exc):
    """A forged or expired form: nothing is stored."""
    return _refuse(_("Your session has changed. Reload the page to send images."), 400)


@bp.post("/c/<int:conversation_id>/images")
@login_required
def upload(conversation_id: int):
    """Post an attached image (with an optional caption) as one message, pushed live."""
    conversation = member_conversation_or_404(conversation_id)
    try:
        client_id = posting.client_id(request.form.get("client_id"), "upload")
        caption = posting.caption_text(request.form.get("body", ""))
        upload = request.files.get("image")
        if upload is None or _size(upload.stream) == 0:
            raise Refusal(_("Choose an image to attach first."))
        sent = db.session.scalar(
            select(Message).where(
                Message.author_id == current_user.id, Message.client_id == client_id
            )
        )
        if sent is None:  # a resend of an acknowledged upload is only acknowledged again
            posting.check_rate(current_user.id)
            # Decoding takes a while: hold no database transaction (nor connection) meanwhile.
            db.session.rollback()
            with _decoding:
                processed = _off_the_loop(imaging.process, _in_memory(upload.stream),
                                          current_app.config["MAX_IMAGE_PIXELS"])
            _post(conversation, caption, client_id, processed)
    except Refusal as refusal:  # imaging.Refused among them (422)
        metrics.refused("upload")
        return _refuse(str(refusal), refusal.status)
    return posting.acknowledgement(conversation.id)


def _size(stream) -> int:
    """How many bytes the uploaded file has (the stream is left at its start)."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _in_memory(stream) -> io.BytesIO:
    """The upload's bytes (at most MAX_CONTENT_LENGTH), for a decoding child that keeps no
    file of the worker's open."""
    return io.BytesIO(stream.read())


def _off_the_loop(fn, *args):
    """Run CPU-heavy work (decoding an upload) where it cannot stall the worker's sockets.

    Under gevent (wsgi.py), fn runs in a forked child process at the lowest CPU priority:
    the event loop's thread shares no lock with it (a thread would share the GIL, and a
    low-priority thread holding the GIL makes the loop wait for it), and on a busy core the
    scheduler runs the loop first. The answer comes back over a socket, read cooperatively.
    Without gevent (the test client, `flask` commands), fn runs here.
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return fn(*args)
    if monkey.is_module_patched("os") and monkey.is_module_patched("socket"):
        failed, value = _in_a_child(fn, *args)
        if failed:
            raise value  # here, on the request's greenlet, where it is handled
        return value
    return fn(*args)


def _in_a_child(fn, *args):
    """(failed, fn's value or its Refusal), computed in a forked child process."""
    import signal
    import socket

    ours, theirs = socket.socketpair()
    theirs_fd = theirs.fileno()
    try:
        pid = os.fork()  # gevent's fork: the child gets a fresh hub it never uses
    except OSError as exc:  # out of processes or memory: refuse this upload, keep serving
        ours.close()
        theirs.close()
        log.error("could not start an image decoding process: %s", exc)
        return True, Refusal(DECODER_BUSY, 503)
    if pid == 0:  # the child: no greenlets, no logging; plain blocking writes, then exit
        status = 1
        try:
            # Only its answer socket stays open: not the worker's listening socket, nor the
            # people's sockets (closing one in the worker must not wait for this child),
            # nor the database's.
            os.closerange(3, theirs_fd)
            os.closerange(theirs_fd + 1, os.sysconf("SC_OPEN_MAX"))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                        signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)  # gunicorn's handlers are the parent's
            _yield_to_the_loop()
            answer = _child_outcome(fn, args)
            os.set_blocking(theirs_fd, True)
            view = memoryview(answer)
            while view:
                view = view[os.write(theirs_fd, view):]
            status = 0
        finally:
            os._exit(status)
    theirs.close()
    reaped = False
    try:
        with ours:
            chunks = []
            while chunk := ours.recv(1 << 20):  # cooperative: other greenlets run meanwhile
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)  # gevent's: waits without blocking the loop
        reaped = True
    finally:
        if not reaped:  # this request was interrupted (client gone, worker stopping)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (OSError, ChildProcessError):
                pass
    if status != 0 or not chunks:
        # Killed (out of memory, say) or crashed: the upload is refused, the worker lives.
        log.error("image decoding process %s ended with status %s", pid, status)
        return True, imaging.Refused(imaging.DAMAGED)
    return _ChildAnswer(b"".join(chunks)).load()


def _child_outcome(fn, args) -> bytes:
    """What the child sends back: (failed, value), pickled; an unexpected error as text."""
    import pickle

    try:
        outcome = (False, fn(*args))
    except Refusal as refusal:
        # The message is usually a lazy translation. Translating it needs the person's
        # language, which the child cannot look up (it has no database connection), so it
        # travels untranslated and the parent translates it (_ChildAnswer.load).
        message = refusal.args[0] if refusal.args else ""
        if isinstance(message, LazyString):
            text = (message._args, message._kwargs)
        else:
            text = ((str(message),), {})
        outcome = (True, ("refusal", isinstance(refusal, imaging.Refused), refusal.status, text))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        outcome = (True, f"{type(exc).__name__}: {exc}")
    return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)


class _ChildAnswer:
    """Unpickles only what a decode can answer: the child parsed untrusted bytes, so its
    answer may name no class but these."""

    ALLOWED = {
        ("chatapp.imaging", "Processed"), ("chatapp.imaging", "Encoded"),
        ("chatapp.imaging", "Refused"), ("chatapp.posting", "Refusal"),
    }

    def __init__(self, data: bytes):
        self.data = data

    def load(self):
        import pickle

        allowed = self.ALLOWED

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in allowed:
                    raise pickle.UnpicklingError(f"{module}.{name} is not a decoding answer")
                return super().find_class(module, name)

        failed, value = Restricted(io.BytesIO(self.data)).load()
        if failed and isinstance(value, str):
            raise RuntimeError(f"decoding an image failed: {value}")
        if failed and isinstance(value, tuple) and value[0] == "refusal":
            _, refused, status, (args, kwargs) = value
            return True, (imaging.Refused if refused else Refusal)(_l(*args, **kwargs), status)
        return failed, value


DECODER_BUSY = _l(
    "Images cannot be processed right now. Try again in a minute; text messages still work."
)
STORE_DOWN = _l("Images cannot be stored right now. Try again in a minute; text messages still work.")


def _yield_to_the_loop() -> None:
    """Lower this process's CPU priority (the decoding child's), so that on a busy core
    the worker's event loop, which every socket of the worker waits on, is scheduled first."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except (AttributeError, OSError):  # not allowed: only slower sockets
        pass


def post_image(conversation, author, caption: str, client_id: str, stream) -> Message:
    """Decode an upload off the loop and post it as the author (the HTTP API's road).

    The caller checked the rate and found no message with this client id yet.
    """
    db.session.rollback()  # decoding takes a while: hold no transaction meanwhile
    with _decoding:
        processed = _off_the_loop(
            imaging.process, _in_memory(stream), current_app.config["MAX_IMAGE_PIXELS"]
        )
    return _post(conversation, caption, client_id, processed, author)


def _post(conversation, caption: str, client_id: str, processed: imaging.Processed,
          author=None) -> Message:
    """Store the files, then post the image and its message (one commit, then announced)."""
    stem = _random_stem()
    path = f"{stem}.{processed.extension}"
    thumb_path = f"{stem}-thumb.{processed.extension}" if processed.thumb else path
    _store(path, processed.original.data, processed.content_type)
    thumb = processed.thumb or processed.original
    if processed.thumb:
        _store(thumb_path, thumb.data, processed.content_type, written=path)
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
        message, created = posting.post(conversation, author or current_user, caption, client_id,
                                        image=image)
    except BaseException:
        storage.delete_files(path, thumb_path)
        raise
    if not created:  # a concurrent resend stored it first: these files belong to nothing
        storage.delete_files(path, thumb_path)
    return message


def _store(key: str, data: bytes, content_type: str, written: str | None = None) -> None:
    """Write one file to the store, or refuse the upload (503) leaving nothing behind.

    Should the store fail after the original was written, the original goes too; if even
    that fails, the object is logged and `flask storage sweep` removes it later.
    """
    try:
        storage.current().put(key, data, content_type)
    except (storage.StorageUnavailable, OSError) as exc:
        log.error("could not store image file %s: %s", key, exc)
        if written:
            storage.delete_files(written)
        raise Refusal(STORE_DOWN, 503)


def _random_stem() -> str:
    """A random storage name spread over two levels of subfolders (ab/cd/abcd…)."""
    name = secrets.token_hex(16)
    return f"{name[:2]}/{name[2:4]}/{name}"


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
    conversation = Conversation.showing(image) if image else None
    if conversation is None or not conversation.is_member(current_user):
        abort(404)
    return send_image(image, thumbnail)
