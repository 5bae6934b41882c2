"""The socket route: who may connect, and what a frame from the composer does."""

from __future__ import annotations

from flask_babel import gettext as _
import json
import logging
import time
from contextlib import nullcontext

from flask import Blueprint, abort, current_app, g, render_template, request
from flask_login import current_user
from flask_wtf.csrf import ValidationError, validate_csrf
from limits import parse as parse_limit

from .. import i18n, metrics, posting
from ..extensions import db, sock
from ..models import Conversation, Membership, Message, User, unread_mentions
from ..posting import Refusal
from ..text import encodable
from ..views import sidebar_context
from . import events
from .client import Client, SnapshotIds, coalesced
from .current import get
from .frames import POLICY_VIOLATION
from .presence import track_shown

log = logging.getLogger(__name__)
bp = Blueprint("realtime", __name__)

FIELDS = {"body", "client_id", "csrf_token"}
# The composer's "I am typing" frame (sent by an htmx trigger, throttled to one per 3 s).
TYPING_FIELDS = {"typing", "csrf_token"}


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
    if not get().hub.claim_slot(current_user.id, limit):
        log.warning("socket refused: user %s already has %d open", current_user.id, limit)
        abort(429, _("You have %(num)d tabs open. Close one, then reload this page.", num=limit))
    g.socket_slot = current_user.id  # given back when the socket (or its handshake) ends


@bp.teardown_request
def give_back_slot(exc=None):
    """The socket is gone: its user may open another."""
    user_id = g.pop("socket_slot", None)
    if user_id is not None:
        get().hub.release_slot(user_id)


def _encodable_json(data) -> bool:
    """Whether every string of a decoded frame, keys included, can be encoded as UTF-8."""
    try:
        return encodable(json.dumps(data, ensure_ascii=False))
    except (ValueError, RecursionError):
        return False


# A socket's CSRF token, once checked, is taken as it is for this long: checking its
# signature costs more than the rest of a frame's checks. A logout closes the socket
# (its session ends), and a token older than its time limit fails the next check.
CSRF_RECHECK = 60.0


class CheckedToken:
    """The CSRF token a socket's frames last carried, and when it was checked."""

    __slots__ = ("token", "checked_at")

    def __init__(self):
        self.token, self.checked_at = None, 0.0

    def check(self, token) -> None:
        """validate_csrf(token), unless this same token passed it a moment ago."""
        now = time.monotonic()
        if token == self.token and now - self.checked_at < CSRF_RECHECK:
            return
        self.token = None
        if not isinstance(token, str):  # a number makes flask-wtf raise TypeError
            raise ValidationError("The CSRF token is missing.")
        validate_csrf(token)
        self.token, self.checked_at = token, now


def _parse(raw, csrf: CheckedToken | None = None) -> dict:
    """Check a frame's shape: JSON object, known fields, valid CSRF token and client id."""
    if not isinstance(raw, str):
        raise Refusal(_("Messages must be text. Reload the page and try again."))
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested thousands deep
        raise Refusal(_("That message could not be read. Reload the page and try again."))
    if not isinstance(data, dict):
        raise Refusal(_("That message could not be read. Reload the page and try again."))
    # JSON's "\ud800" escapes decode to lone surrogates, which no database, template or
    # token check can encode: refuse them in any field (and key), however deeply nested.
    # (The frame itself is valid UTF-8, so only an escape can make one.)
    if "\\u" in raw and not _encodable_json(data):
        raise Refusal(_("That message holds a broken character. Remove it and send again."))
    data.pop("headers", None)  # htmx adds its request headers; nothing in them is needed
    unknown = set(data) - (TYPING_FIELDS if "typing" in data else FIELDS)
    if unknown:
        raise Refusal(_("That message had unexpected fields. Reload the page and try again."))
    try:
        (csrf or CheckedToken()).check(data.get("csrf_token"))
    except ValidationError:
        raise Refusal(_("Your session has changed. Reload the page to send messages."))
    if "typing" in data:
        return data
    data["client_id"] = posting.client_id(data.get("client_id"))
    if not isinstance(data.get("body"), str):
        raise Refusal(_("Type a message first."))
    return data


# Refused frames cost a render, a push and a log line each; a socket that keeps sending
# them (a script, not a person) is closed with 1008 once it passes this many per window.


def refusal_rate() -> str:
    """How many refused frames one socket may send per window (CHATAPP_REFUSAL_RATE)."""
    return current_app.config["REFUSAL_RATE"]


class Refusals:
    """A socket's refused frames in the current window (a fixed window, per socket)."""

    def __init__(self, rate: str):
        item = parse_limit(rate)
        self.limit, self.window = item.amount, item.get_expiry()
        self.started, self.count = 0.0, 0

    def one_too_many(self) -> bool:
        """Count a refusal; True when the socket has now passed its limit."""
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started, self.count = now, 0
        self.count += 1
        return self.count > self.limit


def handle_frame(client: Client, conversation: Conversation, user: User, raw,
                 refusals: Refusals | None = None) -> None:
    """Post the composer's message, or tell the sender why not (closing a flooder)."""
    started = time.perf_counter()
    if client.csrf is None:
        client.csrf = CheckedToken()
    try:
        data = _parse(raw, client.csrf)
        if "typing" in data:
            typing(client, conversation, user, refusals)
            return
        body = posting.message_text(data["body"])
        posting.check_rate(client.user_id)
        posting.check_member(conversation, user)
    except Refusal as refusal:
        metrics.refused("frame")
        if refusals is not None and refusals.one_too_many():
            log.warning("socket of user %s closed: more than %d refused frames in %ds",
                        user.id, refusals.limit, refusals.window)
            client.close(POLICY_VIOLATION, "Too many refused messages")
            return
        log.info("frame from user %s refused: %s", user.id, refusal)
        client.push(posting.refusal_fragment(str(refusal)))
        return
    posting.post(conversation, user, body, data["client_id"])
    # The acknowledgement: a fresh, empty composer (with a new client id).
    if client.acknowledgements is None:
        client.acknowledgements = posting.Acknowledgements(client.conversation_id)
    client.push(client.acknowledgements.fresh())
    metrics.acknowledged(started)


def typing(client: Client, conversation: Conversation, user: User,
           refusals: Refusals | None = None) -> None:
    """Tell the conversation's other members that this person is typing (never stored).

    A person's frames closer together than the composer's throttle are dropped and count
    as refused, so a flood closes the socket as any other does; nothing reaches others.
    """
    hub = get().hub
    try:
        if not hub.accept_typing(user.id):
            raise Refusal("typing too fast")
        posting.check_member(conversation, user)
    except Refusal as refusal:
        metrics.refused("typing")
        log.info("typing frame from user %s dropped: %s", user.id, refusal)
        if refusals is not None and refusals.one_too_many():
            log.warning("socket of user %s closed: more than %d refused frames in %ds",
                        user.id, refusals.limit, refusals.window)
            client.close(POLICY_VIOLATION, "Too many refused messages")
        return
    events.typing(conversation.id, user.id, user.username)


def snapshot(client: Client, conversation: Conversation, user: User) -> None:
    """Bring the page up to date: the current window of messages and the sidebar."""
    messages, shown_before = conversation.recent_messages_after(
        current_app.config["HISTORY_PAGE_SIZE"])
    client.skip_ids = SnapshotIds(m.id for m in messages)
    sidebar = sidebar_context(user, conversation)
    get().hub.sidebar_rendered(user.id, sidebar["heads"])
    track_shown(client, sidebar, conversation)
    client.push(
        render_template(
            "pushes/snapshot.html",
            conversation=conversation,
            messages=messages,
            shown_before=shown_before,
            sidebar=sidebar,
            title=client.title,
        )
    )


def _load_state(user_id: int):
    """Unread counts, "Notify me" levels and unread mentions of a user as this process
    starts tracking them."""
    watermark = Message.newest_id()
    return (Membership.unread_counts(user_id), watermark, Membership.levels(user_id),
            unread_mentions(user_id))


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
        title=conversation.title_for(user),
        audience=i18n.audience(),  # this person's language and time zone, for every push
    )
    refusals = Refusals(refusal_rate())
    client.session_key = current_user.session_key  # logging out closes this socket
    log.info("socket opened: conversation %s", conversation_id,
             extra={"conversation_id": conversation_id})
    metrics.socket_opened()
    try:
        realtime.hub.attach(client, lambda: _load_state(user.id))
        realtime.presence.opened(user.id)
        latest, _moved = Membership.mark_read(user.id, conversation)
        db.session.commit()
        events.conversation_read(user.id, conversation.id, latest)
        snapshot(client, conversation, user)
        db.session.commit()  # hold no transaction while waiting for the next frame
        for batch in client.batches():  # this greenlet is the socket's reader too
            # Messages that arrived together: their pushes to each socket share one write.
            with coalesced() if len(batch) > 1 else nullcontext():
                for raw in batch:
                    if client.closing:
                        break  # closed as a flooder: the rest of the batch goes unread
                    try:
                        handle_frame(client, conversation, user, raw, refusals)
                    finally:
                        db.session.rollback()  # only after a failure: a frame ends committed
            # Let the other sockets run before the next batch: a burst from one sender
            # must not keep the CPU to itself (a no-op switch outside gevent).
            time.sleep(0)
    finally:
        realtime.hub.detach(client)
        realtime.presence.closed(user.id)
        client.close(1000, "")
        client.join()  # the closing frame goes out before the server lets go of the socket
        code = getattr(client, "close_code", None) or int(ws.close_reason or 0)  # ours, else theirs
        log.info("socket closed: code %s %s", code, ws.close_message or "", extra={
            "conversation_id": conversation_id, "close_code": code, "close_reason": ws.close_message})
        metrics.socket_closed(code)
