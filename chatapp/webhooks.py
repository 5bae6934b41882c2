"""Outgoing webhooks: tell a bot it was mentioned or sent a direct message, post its reply.

Deliveries run on a few background workers (threads, greenlets under gevent), fed by a
bounded queue: the socket or request that posted the message only enqueues, so a slow,
dead or hanging webhook never delays a room. Each delivery:

- resolves the host itself and refuses private, loopback, link-local and other
  non-public addresses (server-side request forgery), unless WEBHOOK_ALLOW_PRIVATE; then
  connects to the address it checked (a second lookup cannot point elsewhere);
- POSTs the event as JSON, follows no redirect, gives up after WEBHOOK_TIMEOUT seconds
  in all, and tries again WEBHOOK_RETRIES times with doubling pauses on a network error,
  a timeout or a 5xx/429;
- signs the exact body it sends (Stripe's and Slack's scheme): `X-Chatapp-Timestamp` is
  the Unix time of the attempt, and `X-Chatapp-Signature` is `sha256=` + the hex HMAC-
  SHA256 of `"<timestamp>.<body>"`, keyed by the hex SHA-256 of the bot's API key. The
  bot knows its key, chatapp keeps only that digest, and a regenerated key changes the
  signature, so a receiver can tell chatapp's calls from anyone else's (docs/api.md);
- posts a 200 text/plain answer (at most MAX_REPLY_BYTES, within the message limits) as
  the bot's reply, once: the reply's client id is derived from the message answered.
  HTML, other types, oversized or empty answers are dropped and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import queue
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import urllib3

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 64 * 1024
QUEUE_SIZE = 1000
WORKERS = 4
REPLY_NAMESPACE = uuid.UUID("5b0c8d3e-7a51-4f61-9f3e-2f8c3b1a9d42")

_queue: queue.Queue = queue.Queue(QUEUE_SIZE)
_started = False
_start_lock = threading.Lock()


class Unsafe(Exception):
    """A webhook address chatapp refuses to call."""


class Failed(Exception):
    """A delivery that did not get an answer; `retry` says whether trying again may help."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


def resolve(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, address to connect to) for a webhook URL, checked."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unsafe("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Failed(f"cannot resolve {parts.hostname}: {exc}", retry=True) from exc
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise Failed(f"no address for {parts.hostname}", retry=True)
    if not allow_private:
        for address in addresses:
            if not _public(address):
                raise Unsafe(f"{parts.hostname} resolves to a non-public address ({address})")
    return parts.scheme, parts.hostname, port, addresses[0]


def _public(address: str) -> bool:
    """Whether an address is on the public internet (not ours, nor anyone's LAN)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def signature(signing_key: str, timestamp: int, body: bytes) -> str:
    """The X-Chatapp-Signature of a body sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(signing_key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def call(url: str, payload: dict, *, timeout: float, allow_private: bool,
         signing_key: str = "") -> str | None:
    """POST the payload once, signed; the reply text to post, or None. Raises Unsafe or
    Failed."""
    scheme, host, port, address = resolve(url, allow_private)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if scheme == "https" else 80
    headers = {
        "Host": host if port == default_port else f"{host}:{port}",
        "Content-Type": "application/json",
        "User-Agent": "chatapp-webhook/1",
        "Accept": "text/plain",
    }
    body = json.dumps(payload).encode()
    timestamp = int(time.time())
    headers["X-Chatapp-Timestamp"] = str(timestamp)
    headers["X-Chatapp-Signature"] = signature(signing_key, timestamp, body)
    limits = urllib3.Timeout(connect=timeout, read=timeout)
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(address, port, timeout=limits, retries=False,
                                           server_hostname=host, assert_hostname=host)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=limits, retries=False)
    deadline = time.monotonic() + timeout
    try:
        response = pool.urlopen("POST", target, body=body,
                                headers=headers, redirect=False, retries=False,
                                preload_content=False)
        try:
            status = response.status
            if status == 429 or status >= 500:
                raise Failed(f"answered {status}", retry=True)
            if status != 200:  # redirects (never followed) and 4xx: trying again will not help
                raise Failed(f"answered {status}", retry=False)
            kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            body = _read(response, deadline)
        finally:
            response.close()  # and its connection: one delivery, one connection
            response.release_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Failed(f"{type(exc).__name__}: {exc}", retry=True) from exc
    finally:
        pool.close()
    if body is None:
        log.warning("webhook reply over %d bytes dropped", MAX_REPLY_BYTES)
        return None
    if kind != "text/plain":
        if body.strip():
            log.info("webhook reply of type %r not posted (only text/plain is)", kind or "none")
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("webhook reply is not UTF-8; not posted")
        return None


def _read(response, deadline: float) -> bytes | None:
    """The answer's body, or None once it passes MAX_REPLY_BYTES; within the deadline."""
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise Failed("answer took too long", retry=True)
        chunk = response.read(16 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return None
        chunks.append(chunk)


# -- background delivery ------------------------------------------------------------------


def enqueue(app, jobs: list[dict]) -> None:
    """Hand deliveries to the background workers; never waits (a full queue drops them)."""
    _start()
    for job in jobs:
        try:
            _queue.put_nowait((app, job))
        except queue.Full:
            log.warning("webhook queue full; delivery to bot %s dropped", job["bot_id"])


def _start() -> None:
    global _started
    if _started:
        return
    with _start_lock:
        if not _started:
            for n in range(WORKERS):
                threading.Thread(target=_work, name=f"webhook-{n}", daemon=True).start()
            _started = True


def _work() -> None:
    while True:
        app, job = _queue.get()
        try:
            deliver(app, job)
        except Exception:  # noqa: BLE001 - one bad delivery must not stop the worker
            log.exception("webhook delivery to bot %s failed", job.get("bot_id"))


def deliver(app, job: dict) -> None:
    """One delivery with its retries, and the reply posted as the bot."""
    from .extensions import db
    from .models import User

    config = app.config
    with app.app_context():
        try:
            bot = db.session.get(User, job["bot_id"])
            url = bot.webhook_url if bot is not None and bot.active else None
            signing_key = bot.api_key_hash if url else ""
        finally:
            db.session.remove()  # hold no connection while waiting on the network
    if not url:
        return
    reply = None
    attempts = 1 + max(0, config["WEBHOOK_RETRIES"])
    for attempt in range(attempts):
        try:
            reply = call(url, job["payload"], timeout=config["WEBHOOK_TIMEOUT"],
                         allow_private=config["WEBHOOK_ALLOW_PRIVATE"],
                         signing_key=signing_key)
            break
        except Unsafe as exc:
            log.warning("webhook of bot %s refused: %s", job["bot_id"], exc)
            return
        except Failed as exc:
            log.info("webhook of bot %s, attempt %d: %s", job["bot_id"], attempt + 1, exc)
            if not exc.retry or attempt + 1 == attempts:
                return
            time.sleep(config["WEBHOOK_BACKOFF"] * 2 ** attempt)
    if reply is not None and reply.strip():
        _post_reply(app, job, reply)


def _post_reply(app, job: dict, text: str) -> None:
    """Post the webhook's answer as the bot, once, if it is still in the conversation."""
    from . import posting
    from .extensions import db
    from .models import Conversation, User

    with app.test_request_context(base_url=job.get("base_url") or "http://localhost/"):
        try:
            bot = db.session.get(User, job["bot_id"])
            conversation = db.session.get(Conversation, job["conversation_id"])
            if bot is None or not bot.active or conversation is None \
                    or not conversation.is_member(bot):
                return
            try:
                body = posting.message_text(text)
            except posting.Refusal as refusal:
                log.info("webhook reply of bot %s not posted: %s", bot.id, refusal)
                return
            client_id = str(uuid.uuid5(REPLY_NAMESPACE, f"reply:{job['message_id']}"))
            posting.post(conversation, bot, body, client_id)
        finally:
            db.session.remove()
