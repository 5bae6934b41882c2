"""The socket route: who may connect, and what a frame from the composer does."""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import nullcontext

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user
from flask_wtf.csrf import ValidationError, validate_csrf
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from .. import metrics
from ..extensions import db, limiter, sock
from ..models import Conversation, Message, User, unread_counts
from . import events, get
from .client import Client, SnapshotIds, coalesced

log = logging.getLogger(__name__)
bp = Blueprint("realtime", __name__)

FIELDS = {"body", "client_id", "csrf_token"}


def origin_allowed() -> bool:
    """Whether the handshake comes from a page of ours (or an origin listed in config)."""
    origin = (request.headers.get("Origin") or "").rstrip("/")
    if not origin:
        return False
    own = {f"http://{request.host}", f"https://{request.host}"}
    return origin in own or origin in current_app.config["ALLOWED_ORIGINS"]


@bp.before_request
def refuse_strangers():
    """Refuse the handshake before the upgrade: 403 unless logged in, from our origin."""
    if not current_user.is_authenticated:
        log.info("socket refused: not logged in (%s)", request.remote_addr)
        abort(403)
    if not origin_allowed():
        log.warning("socket refused: origin %r", request.headers.get("Origin"))
        abort(403)
    conversation = db.session.get(Conversation, request.view_args.get("conversation_id", 0))
    if conversation is None or not conversation.is_member(current_user):
        abort(404)
    # Each socket costs the worker memory and a share of every fan-out: one account may
    # not hold an unbounded number (per worker; htmx retries a refused handshake later).
    limit = current_app.config["MAX_SOCKETS_PER_USER"]
    if len(get().hub.clients_of(current_user.id)) >= limit:
        log.warning("socket refused: user %s already has %d open", current_user.id, limit)
        abort(429, f"You have {limit} tabs open. Close one, then reload this page.")


class Refusal(Exception):
    """A frame that changes nothing; the sender sees why."""


def _composer(conversation_id: int, client_id: str | None = None, body: str = "") -> str:
    return render_template(
        "pushes/composer_reset.html",
        conversation_id=conversation_id,
        client_id=client_id or str(uuid.uuid4()),
    )


def _parse(raw) -> dict:
    """Check a frame's shape: JSON object, known fields, valid CSRF token and client id."""
    if not isinstance(raw, str):
        raise Refusal("Messages must be text. Reload the page and try again.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested thousands deep
        raise Refusal("That message could not be read. Reload the page and try again.")
    if not isinstance(data, dict):
        raise Refusal("That message could not be read. Reload the page and try again.")
    data.pop("headers", None)  # htmx adds its request headers; nothing in them is needed
    unknown = set(data) - FIELDS
    if unknown:
        raise Refusal("That message had unexpected fields. Reload the page and try again.")
    try:
        if not isinstance(data.get("csrf_token"), str):  # a number makes flask-wtf raise TypeError
            raise ValidationError("The CSRF token is missing.")
        validate_csrf(data["csrf_token"])
    except ValidationError:
        raise Refusal("Your session has changed. Reload the page to send messages.")
    try:
        data["client_id"] = str(uuid.UUID(str(data.get("client_id"))))
    except ValueError:
        raise Refusal("That message could not be read. Reload the page and try again.")
    if not isinstance(data.get("body"), str):
        raise Refusal("Type a message first.")
    return data


def _check_body(body: str) -> str:
    body = body.strip()
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if not body:
        raise Refusal("Type a message first.")
    problem = Message.text_problem(body, limit)
    if problem:
        raise Refusal(problem)
    return body


# Counts messages while the shared store (Redis) is unreachable: per process, but a limit.
_local_limiter: FixedWindowRateLimiter | None = None


def _check_rate(user_id: int) -> None:
    global _local_limiter
    item = parse_limit(current_app.config["MESSAGE_RATE"])
    try:
        allowed = limiter.limiter.hit(item, "messages", str(user_id))
    except Exception as exc:  # noqa: BLE001 - Redis down must not stop people talking
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        if _local_limiter is None:
            _local_limiter = FixedWindowRateLimiter(MemoryStorage())
        allowed = _local_limiter.hit(item, "messages", str(user_id))
    if not allowed:
        raise Refusal("You are sending messages too fast. Wait a moment, then send again.")


def handle_frame(client: Client, conversation: Conversation, user: User, raw) -> None:
    """Post the composer's message, or tell the sender why not."""
    started = time.perf_counter()
    try:
        data = _parse(raw)
        body = _check_body(data["body"])
        _check_rate(client.user_id)
    except Refusal as refusal:
        log.info("frame from user %s refused: %s", user.id, refusal)
        metrics.refused("frame")
        client.push(render_template("pushes/composer_error.html", error=str(refusal)))
        return
    # The push is rendered inside the transaction that stores the message (its grouping
    # reads the message before it there), and published only after the commit.
    message, created = Message.post(conversation, user, body, data["client_id"], commit=False)
    event = events.message_event(message) if created else None
    db.session.commit()
    if event is not None:
        events.publish(event)
    # The acknowledgement: a fresh, empty composer (with a new client id).
    client.push(_composer(client.conversation_id))
    metrics.acknowledged(started)


def snapshot(client: Client, conversation: Conversation, user: User) -> None:
    """Bring the page up to date: the current window of messages and the sidebar."""
    from ..chat import sidebar_context

    messages = conversation.recent_messages(current_app.config["HISTORY_PAGE_SIZE"])
    client.skip_ids = SnapshotIds(m.id for m in messages)
    sidebar = sidebar_context(user, conversation)
    get().hub.sidebar_rendered(user.id, sidebar["chats"])
    client.push(
        render_template(
            "pushes/snapshot.html",
            conversation=conversation,
            messages=messages,
            sidebar=sidebar,
            title=client.title,
        )
    )


def conversation_title(conversation: Conversation, user: User) -> str:
    """What a page calls its conversation: "Public room" or the other member's name."""
    if conversation.is_public:
        return "Public room"
    peer_id = next(i for i in conversation.member_ids() if i != user.id)
    peer = db.session.get(User, peer_id)
    return peer.username if peer else "Private chat"


def _load_state(user_id: int):
    """Unread counts of a user as this process starts tracking them."""
    from sqlalchemy import func, select

    watermark = db.session.scalar(select(func.coalesce(func.max(Message.id), 0)))
    return unread_counts(user_id), watermark


@sock.route("/ws/<int:conversation_id>", bp=bp)
def socket(ws, conversation_id: int):
    """A page's live connection: pushes in, composer frames out."""
    config = current_app.config
    realtime = get()
    # This socket's session lives as long as the socket. Its user and conversation stay
    # loaded across commits, so posting a message does not first reload both; what they
    # hold that can change (a deactivation, say) reaches the socket as an event instead.
    db.session().expire_on_commit = False
    user = db.session.get(User, current_user.id)
    conversation = db.session.get(Conversation, conversation_id)
    client = Client(
        ws,
        user.id,
        conversation_id,
        queue_size=config["SEND_QUEUE_SIZE"],
        send_timeout=config["SEND_TIMEOUT"],
        ping_interval=config["PING_INTERVAL"],
        title=conversation_title(conversation, user),
    )
    log.info("socket opened: conversation %s", conversation_id,
             extra={"conversation_id": conversation_id})
    metrics.socket_opened()
    try:
        realtime.hub.attach(client, lambda: _load_state(user.id))
        events.mark_read(user.id, conversation)
        snapshot(client, conversation, user)
        db.session.commit()  # hold no transaction while waiting for the next frame
        for batch in client.batches():  # this greenlet is the socket's reader too
            # Messages that arrived together: their pushes to each socket share one write.
            with coalesced() if len(batch) > 1 else nullcontext():
                for raw in batch:
                    try:
                        handle_frame(client, conversation, user, raw)
                    finally:
                        db.session.rollback()  # only after a failure: a frame ends committed
            # Let the other sockets run before the next batch: a burst from one sender
            # must not keep the CPU to itself (a no-op switch outside gevent).
            time.sleep(0)
    finally:
        realtime.hub.detach(client)
        client.close(1000, "")
        client.join()  # the closing frame goes out before the server lets go of the socket
        code = getattr(client, "close_code", None) or int(ws.close_reason or 0)  # ours, else theirs
        log.info("socket closed: code %s %s", code, ws.close_message or "", extra={
            "conversation_id": conversation_id, "close_code": code, "close_reason": ws.close_message})
        metrics.socket_closed(code)
