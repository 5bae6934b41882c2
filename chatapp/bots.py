"""Bots: accounts that post by HTTP (api.py) and hear mentions and DMs (webhooks.py).

A bot is a User row with is_bot=True, so it is a member like a person: it has a seat in
the public room, can be sent a direct message, mentioned, and added to rooms. It has no
usable password and User.authenticate refuses it: a bot never logs in through the form.
Its key is shown once; only the key's SHA-256 is stored (a key is 32 random bytes, so a
fast hash is enough), looked up by that digest and compared in constant time.
"""

from __future__ import annotations

from flask_babel import force_locale, gettext as _
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import has_request_context, request, url_for
from sqlalchemy import select

from .extensions import db
from .models import USERNAME_RE, Conversation, Membership, Message, User

KEY_PREFIX = "chatbot_"
MAX_KEY_CHARS = 200
MAX_WEBHOOK_CHARS = 2048
NO_PASSWORD = "!bot"  # not an argon2 hash: no password ever matches it


def digest(key: str) -> str:
    """What is stored of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(bot: User) -> str:
    """A fresh key for the bot (32 random bytes); the old one stops working at once."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    bot.api_key_hash = digest(key)
    return key


def name_problem(name: str) -> str | None:
    """What is wrong with a new bot's name, or None."""
    if not USERNAME_RE.match(name):
        return _("Bot names are 3 to 32 letters, digits, dots, dashes or underscores.")
    if User.by_username(name) is not None:
        return _("That name is taken. Choose another.")
    return None


def webhook_problem(url: str) -> str | None:
    """What is wrong with a webhook URL as typed (addresses are checked when sending)."""
    if len(url) > MAX_WEBHOOK_CHARS:
        return _("Webhook URLs can be at most %(limit)d characters.", limit=MAX_WEBHOOK_CHARS)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return _("That webhook URL could not be read.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return _("Webhook URLs start with http:// or https:// and name a host.")
    if parts.username or parts.password:
        return _("Webhook URLs cannot carry a user name or password.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return _("Webhook URLs cannot contain spaces or control characters.")
    return None


def create(name: str, webhook_url: str | None) -> tuple[User, str]:
    """A new bot with a seat in the public room; returns it and its key (shown once).

    Flushes (the name's unique constraint speaks here); the caller commits.
    """
    bot = User(username=name, username_key=name.lower(), password_hash=NO_PASSWORD,
               is_bot=True, webhook_url=webhook_url or None)
    key = _new_key(bot)
    db.session.add(bot)
    db.session.flush()
    room = Conversation.public_room()
    db.session.add(Membership(conversation=room, user=bot, last_read_id=room.latest_message_id()))
    db.session.flush()
    return bot, key


def regenerate(bot: User) -> str:
    """Replace the bot's key; the caller commits (from then on the old key is refused)."""
    return _new_key(bot)


def remove(bot: User) -> None:
    """Delete a bot: its key and webhook go, at once. Its messages stay, under its name,
    so the account row stays too (deactivated, like a person's)."""
    bot.api_key_hash = None
    bot.webhook_url = None
    bot.active = False


def listed() -> list[User]:
    """The bots an admin manages (deleted ones are gone from the list)."""
    return list(db.session.scalars(
        select(User).where(User.is_bot.is_(True), User.active.is_(True)).order_by(User.username_key)))


def by_key(key: str | None) -> User | None:
    """The active bot holding this key, or None (whatever was wrong with it)."""
    if not key or len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        return None
    wanted = digest(key)
    bot = db.session.scalar(select(User).where(User.api_key_hash == wanted))
    if bot is None or not bot.is_bot or not bot.active:
        return None
    if not hmac.compare_digest(bot.api_key_hash or "", wanted):
        return None
    return bot


def message_json(message: Message) -> dict:
    """A message as the API and the webhooks show it."""
    image = message.image
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "author": {"id": message.author.id, "name": message.author.username,
                   "bot": bool(message.author.is_bot)},
        "body": message.body,
        # A room's line such as "ann added deploybot", written by chatapp, not the author.
        "system": bool(getattr(message, "system", False)),
        "created_at": _iso(message.created_at),
        "edited_at": _iso(message.edited_at) if message.edited_at else None,
        "url": url_for("messages.permalink", conversation_id=message.conversation_id,
                       message_id=message.id, _external=True),
        "image": {"width": image.width, "height": image.height,
                  "content_type": image.content_type} if image is not None else None,
    }


def _iso(moment) -> str:
    """A stored (naive UTC) time as ISO 8601 with its zone."""
    return moment.isoformat(timespec="seconds") + "Z"


def webhook_jobs(message: Message, mentioned: list[int]) -> list[dict]:
    """Webhook deliveries owed for a new message: to each bot with a webhook it mentions,
    or the bot it was sent to directly. Built before the commit (rows loaded).

    Costs a query only for a message that mentions someone or is in a private chat.
    Messages by bots call no webhook (two bots must not answer each other forever).
    """
    if message.author.is_bot:
        return []
    conversation = message.conversation
    direct = conversation.is_direct
    candidates = set(mentioned)
    if direct:
        candidates |= set(conversation.member_ids()) - {message.author_id}
    if not candidates:
        return []
    bots = db.session.execute(
        select(User.id, User.username).where(
            User.id.in_(sorted(candidates)), User.is_bot.is_(True), User.active.is_(True),
            User.webhook_url.is_not(None))
    ).all()
    if not bots:
        return []
    body = message_json(message)
    with force_locale("en"):  # webhooks are read by programs: English, as the API
        title = "Direct message" if direct else conversation.title_for(message.author)
    return [{
        "bot_id": bot_id,
        "message_id": message.id,
        "conversation_id": conversation.id,
        # The reply's push links to this site the way the message's did.
        "base_url": request.host_url if has_request_context() else None,
        "payload": {
            "event": "direct_message" if direct else "mention",
            "bot": {"id": bot_id, "name": name},
            "conversation": {"id": conversation.id, "title": title},
            "message": body,
        },
    } for bot_id, name in bots]
