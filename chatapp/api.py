"""The HTTP API for bots (/api/v1, documented in docs/api.md and openapi.py).

A bot authenticates with `Authorization: Bearer <key>` on every request: no cookies, so
no CSRF token either. Each key has its own rate (API_RATE). A bot sees only the
conversations it is a member of (others are 404, as if absent), and posts through the
one road (posting.py), like the composer: same checks, same push, same idempotency (an
`Idempotency-Key` is the composer's client id).
"""

from __future__ import annotations

import uuid

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select

from . import bots, metrics, posting, ratelimit, uploads
from .extensions import csrf, db
from .models import MAX_ID, Conversation, Membership, Message
from .openapi import document
from .posting import Refusal

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

UNAUTHORIZED = "Missing or invalid API key. Send it as: Authorization: Bearer <key>."
NOT_FOUND = "No such conversation, or this bot is not a member of it."
MAX_IDEMPOTENCY_KEY = 255
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# An Idempotency-Key names a client id in the bot's own space (unique per author).
IDEMPOTENCY_NAMESPACE = uuid.UUID("0f6f3f57-6c1b-4d1e-a2a5-0c6a2bd5e8a1")


def error(message: str, status: int, **headers):
    """The one shape of every API error."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


@bp.before_request
def authenticate():
    """Every endpoint but the document needs a bot's key, within its rate."""
    if request.endpoint == "api.openapi":
        return None
    scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
    bot = bots.by_key(key.strip()) if scheme.lower() == "bearer" else None
    if bot is None:
        db.session.rollback()
        return error(UNAUTHORIZED, 401, **{"WWW-Authenticate": 'Bearer realm="chatapp"'})
    if not ratelimit.hit(current_app.config["API_RATE"], "api", str(bot.id)):
        return error("Too many requests for this key. Wait a moment, then try again.", 429,
                     **{"Retry-After": "60"})
    g.bot = bot
    return None


@bp.after_request
def no_store(response):
    """API answers are not cached, and set no cookies."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of this API."""
    return jsonify(document(request.host_url.rstrip("/")))


@bp.get("/conversations")
def conversations():
    """The conversations the bot is a member of, newest activity first."""
    bot = g.bot
    found = db.session.scalars(
        select(Conversation).join(Membership, Membership.conversation_id == Conversation.id)
        .where(Membership.user_id == bot.id)
        .order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id)
    ).all()
    return jsonify(conversations=[_conversation_json(c, bot) for c in found if c.is_member(bot)])


def _conversation_json(conversation: Conversation, bot) -> dict:
    kind = "public" if conversation.is_public else "direct" if conversation.is_direct else "room"
    return {
        "id": conversation.id,
        "kind": kind,
        "title": conversation.title_for(bot),
        "last_message_at": (conversation.last_message_at.isoformat(timespec="seconds") + "Z"
                            if conversation.last_message_at else None),
    }


def _member_conversation(conversation_id: int) -> Conversation | None:
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None or not conversation.is_member(g.bot):
        return None
    return conversation


@bp.get("/conversations/<int:conversation_id>/messages")
def messages(conversation_id: int):
    """Messages after an id, oldest first, a page at a time (for scripts that poll)."""
    conversation = _member_conversation(conversation_id)
    if conversation is None:
        return error(NOT_FOUND, 404)
    after = _int_arg("after", 0)
    limit = _int_arg("limit", DEFAULT_LIMIT)
    if after is None or limit is None or not 1 <= limit <= MAX_LIMIT:
        return error(f"after must be a message id (0 or more) and limit 1 to {MAX_LIMIT}.", 400)
    rows = db.session.scalars(
        select(Message).where(Message.conversation_id == conversation.id,
                              Message.deleted_at.is_(None),
                              Message.id > min(after, MAX_ID))
        .order_by(Message.id).limit(limit + 1)
    ).all()
    page, more = rows[:limit], len(rows) > limit
    return jsonify(
        messages=[bots.message_json(m) for m in page],
        has_more=more,
        next_after=page[-1].id if page else after,
    )


def _int_arg(name: str, default: int) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


@bp.post("/conversations/<int:conversation_id>/messages")
def post_message(conversation_id: int):
    """Post as the bot: text/plain (any body), JSON {"body": ...}, or multipart with an image."""
    conversation = _member_conversation(conversation_id)
    if conversation is None:
        return error(NOT_FOUND, 404)
    bot = g.bot
    try:
        client_id = _client_id(bot)
        sent = db.session.scalar(
            select(Message).where(Message.author_id == bot.id, Message.client_id == client_id))
        if sent is not None:
            return _replayed(sent, conversation)
        kind = request.mimetype
        if kind == "multipart/form-data":
            message = _post_multipart(conversation, bot, client_id)
        else:
            body = _json_body() if kind == "application/json" or kind.endswith("+json") \
                else _text_body()
            text = posting.message_text(body)
            posting.check_rate(bot.id)
            message, created = posting.post(conversation, bot, text, client_id)
            if not created:  # a concurrent retry stored it first
                return _replayed(message, conversation)
    except Refusal as refusal:
        metrics.refused("api")
        db.session.rollback()
        return error(str(refusal), refusal.status)
    shown = bots.message_json(message)
    response = jsonify(shown)
    response.status_code = 201
    response.headers["Location"] = shown["url"]
    return response


def _client_id(bot) -> str:
    """The message's client id: from the Idempotency-Key, else a fresh one."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return posting.new_client_id()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise Refusal(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
                      "characters.")
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, key))


def _replayed(message: Message, conversation: Conversation):
    """The answer to a retry: the message already stored for this Idempotency-Key."""
    if message.conversation_id != conversation.id:
        return error("That Idempotency-Key was already used for a message in another "
                     "conversation.", 409)
    response = jsonify(bots.message_json(message))
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _json_body() -> str:
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("body"), str):
        raise Refusal('Malformed JSON: send an object with a "body" string, '
                      'like {"body": "deploy done"}.')
    return data["body"]


def _text_body() -> str:
    raw = request.get_data(cache=False, parse_form_data=False)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("The message must be UTF-8 text.")


def _post_multipart(conversation: Conversation, bot, client_id: str) -> Message:
    """An image (field "image") with an optional caption (field "body"), or text alone."""
    upload = request.files.get("image")
    body = request.form.get("body", "")
    if upload is None:
        if request.files:
            raise Refusal('Send the image in the field named "image".')
        text = posting.message_text(body)
        posting.check_rate(bot.id)
        return posting.post(conversation, bot, text, client_id)[0]
    caption = posting.caption_text(body)
    if uploads._size(upload.stream) == 0:
        raise Refusal("The image is empty.")
    posting.check_rate(bot.id)
    return uploads.post_image(conversation, bot, caption, client_id, upload.stream)


def json_error_page(exc):
    """Errors before or outside a view of the API (404, 405, 413...) as JSON too."""
    code = getattr(exc, "code", 500) or 500
    texts = {
        400: "That request could not be read.",
        404: "There is nothing at this address.",
        405: "That method is not allowed here.",
        413: "The request is too large.",
    }
    if code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        texts[413] = f"The request is too large: at most {limit // (1024 * 1024)} MB."
    return error(texts.get(code, "Something went wrong."), code)
