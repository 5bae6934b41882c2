"""Events between processes through Redis pub/sub: every worker hears every event.

Why pub/sub and not streams: an event is only a nudge to pages that are open right
now; the database is the record. A worker that misses events (Redis restarted, a
network cut) does not replay them: it closes its sockets with 1012 and each page
reconnects and receives the connect snapshot from the database, which is always
complete. Streams would add retention, trimming and consumer offsets per worker to
solve a problem the snapshot already solves. (docs/deployment.md says more.)
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from contextlib import nullcontext

import redis
from flask import has_request_context
from redis.backoff import NoBackoff
from redis.retry import Retry

from .client import coalesced
from .frames import SERVICE_RESTART
from .reading import BATCH_MESSAGES

log = logging.getLogger(__name__)

RETRY_MIN = 0.1  # seconds before the first reconnection attempt
RETRY_MAX = 2.0  # cheap to try, and pages wait on it: keep the ceiling low
RESYNC_BATCH = 200  # sockets closed at a time when pages must catch up...
RESYNC_PAUSE = 0.1  # ...and the pause between batches (10 000 sockets: 5 s)


class RedisBackplane:
    """Publishes this process's events to Redis and delivers everyone's to the local hub."""

    remote = True  # other processes must hear about per-user bookkeeping (read pointers)

    def __init__(self, app, hub, url: str):
        self.app = app
        self.hub = hub
        self.channel = app.config.get("REDIS_PREFIX", "chatapp:") + "events"
        # No retries inside redis-py: a sender must not wait on a Redis that is down,
        # and the subscriber has its own backoff.
        self.redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=1,
            socket_timeout=2,
            socket_keepalive=True,
            health_check_interval=15,
            retry=Retry(NoBackoff(), 0),
        )
        self.subscribed = threading.Event()
        self.subscribed_at = 0.0
        # Set when an event of ours may not have reached the other processes.
        self._failed_since: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        app.before_request(self.start)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, event: dict) -> None:
        """Send an event (after its transaction committed) to every process, this one included.

        If Redis is unreachable the event is delivered to this process's sockets only
        and the failure is logged, never raised: the message is stored and the sender
        is acknowledged. Once Redis answers again, a "resync" event makes every other
        process bring its pages up to date.
        """
        self.start()
        payload = json.dumps(event, separators=(",", ":"))
        try:
            self.redis.publish(self.channel, payload)
        except redis.RedisError as exc:
            if self._failed_since is None:
                self._failed_since = time.time()
            log.warning("Redis unreachable; %s delivered in this process only: %s",
                        event.get("type"), exc)
            self._deliver(event)
            return
        if self._failed_since is not None:
            self._announce_resync()

    def _announce_resync(self) -> None:
        """Tell every process that some of our events since then never reached them."""
        since, self._failed_since = self._failed_since, None
        try:
            self.redis.publish(self.channel, json.dumps({"type": "resync", "since": since}))
        except redis.RedisError:
            self._failed_since = since  # still down: try again later

    # -- receiving -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the subscriber once per process (on the first request or event).

        The first request waits (briefly) until the subscription is live, so a page
        never takes its snapshot in a worker that is not yet listening.
        """
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            # A real thread, or a greenlet when gevent has patched threading.
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="redis-subscriber")
            self._thread.start()
        self.subscribed.wait(2.0)

    def stop(self) -> None:
        """Stop the subscriber (process shutdown)."""
        self._stopping.set()

    def _run(self) -> None:
        """Subscribe, deliver, and on any failure reconnect with jittered backoff."""
        delay = RETRY_MIN
        first = True
        while not self._stopping.is_set():
            pubsub = self.redis.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        delay = RETRY_MIN
                        self._on_subscribed(first)
                        first = False
                    elif message["type"] == "message":
                        self._deliver_waiting(pubsub, message)
            except (redis.RedisError, OSError) as exc:
                if self.subscribed.is_set():
                    log.warning("lost the Redis subscription (%s); reconnecting", exc)
                self.subscribed.clear()
            except Exception:  # noqa: BLE001 - a bad event must not end the subscriber
                log.exception("Redis subscriber failed; restarting it")
                self.subscribed.clear()
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
            self._stopping.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RETRY_MAX)

    def _on_subscribed(self, first: bool) -> None:
        """(Re)subscribed: pages here may have missed events while we were not listening."""
        self.subscribed_at = time.time()
        self.subscribed.set()
        # Sockets attached before this moment may have missed events (a lost
        # subscription, or Redis down when the worker started): they reconnect.
        if not first or self.hub.clients():
            log.info("Redis subscription live again; asking pages here to reconnect")
            self._resync_local()
        if self._failed_since is not None:
            self._announce_resync()

    def _resync_local(self) -> None:
        """Close every local socket with 1012: htmx reconnects and gets a fresh snapshot."""
        clients = self.hub.clients()
        random.shuffle(clients)
        threading.Thread(target=self._close_gradually, args=(clients,), daemon=True,
                         name="redis-resync").start()

    @staticmethod
    def _close_gradually(clients) -> None:
        """Close in batches: thousands of snapshots at once would queue on the database."""
        for start in range(0, len(clients), RESYNC_BATCH):
            for client in clients[start:start + RESYNC_BATCH]:
                client.close(SERVICE_RESTART, "Reconnect to catch up")
            time.sleep(RESYNC_PAUSE)

    def _deliver_waiting(self, pubsub, message) -> None:
        """Deliver this event and those already waiting behind it, BATCH_MESSAGES at a
        time: a batch's pushes share each socket's write, as a sender's burst does."""
        while message is not None:
            with coalesced():
                for _ in range(BATCH_MESSAGES):
                    # Subscription notices come only before the first event on a
                    # connection; anything that is not an event is skipped, as in _run.
                    if message["type"] == "message":
                        self._deliver(json.loads(message["data"]))
                    message = pubsub.get_message(timeout=0.0)  # only what is already here
                    if message is None:
                        break
            time.sleep(0)  # let the other greenlets run between batches

    def _deliver(self, event: dict) -> None:
        """Hand one event to the local hub, as the publishing request would have."""
        if event.get("type") == "resync":
            # Sockets attached after that moment got their snapshot after it: current.
            if self.subscribed_at <= event.get("since", 0):
                self._resync_local()
            return
        members = event.get("member_ids")
        if members is not None and not any(self.hub.clients_of(u) for u in members):
            return  # a private chat with no member here: nothing to render
        # A request context (not only an app context): templates build relative URLs.
        # A publisher delivering here itself keeps its own context and database session
        # (see LocalBackplane.publish: a second session could starve the pool).
        context = nullcontext() if has_request_context() else self.app.test_request_context("/")
        with context:
            try:
                self.hub.deliver(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop the others
                log.exception("could not deliver %s", event.get("type"))
