"""Who is online and who is typing: one event per change of state, never one per socket.

A person is online while they have a socket open on any worker. When their last socket
here closes, this process waits out a grace period (CHATAPP_PRESENCE_GRACE, 30 s) before
letting go of them, so a reload, a dropped connection or a deploy's reconnect storm
produces no event at all. Whether the person is then offline everywhere is decided in
one place: in-process without Redis, else by a Lua script in Redis that also publishes
the change, so two workers can never announce the same change twice or out of order.

Typing is an event too ("ann is typing" in one conversation); it is held in memory for
TYPING_TIMEOUT seconds by each process's hub (PresenceEvents), never stored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone

from flask import render_template

from ..i18n import rendering_as
from ..models import User, db
from .frames import Frame

log = logging.getLogger(__name__)

TYPING_TIMEOUT = 6.0  # seconds an "is typing" lasts without another frame
TYPING_INTERVAL = 3.0  # the composer sends at most one typing frame per this many seconds
# A person's frames closer together than this are dropped (and count as refused): the
# composer's throttle keeps 3 s, the slack covers network jitter.
TYPING_MIN_GAP = 2.0
HEARTBEAT = 5.0  # seconds between a worker's "still alive" in Redis...
# ...and how long without one before others let go of its people. Generous: a worker busy
# with a reconnect storm may beat late, and is not dead (if it was reaped all the same,
# its next beat puts its people back).
WORKER_DEAD_AFTER = 60.0

# KEYS: the person's workers, the online set, this worker's people.
# ARGV: worker id, user id, channel, event to publish when this is a change.
ARRIVE = """
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
"""
LEAVE = """
redis.call('SREM', KEYS[3], ARGV[2])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
end
return 0
"""


def last_seen(peer) -> str:
    """ "Last seen 5 minutes ago" for someone offline, in the viewer's language; "" while
    they are online, or if they were never seen."""
    from flask_babel import format_timedelta, gettext

    from .current import get

    if get().presence.is_online(peer.id) or peer.last_seen_at is None:
        return ""
    ago = datetime.now(timezone.utc).replace(tzinfo=None) - peer.last_seen_at
    if ago.total_seconds() < 60:
        return gettext("Last seen just now")
    return gettext("Last seen %(ago)s",
                   ago=format_timedelta(-ago, threshold=1, add_direction=True))


def shown_in(sidebar: dict) -> set[int]:
    """The people whose dots a rendered sidebar shows (private chats and People)."""
    return {peer.id for _, peer in sidebar["chats"]} | {peer.id for peer in sidebar["people"]}


def track_shown(client, sidebar: dict, conversation) -> None:
    """Remember whose dots this page shows, so presence changes of others skip it: the
    sidebar's people and a private chat's peer. A room's page shows its member list, which
    changes with the room: it hears every change (shown = None)."""
    if conversation.is_room:
        client.shown, client.header_ids = None, None
        return
    peer = conversation.peer_of(db.session.get(User, client.user_id))
    client.header_ids = {peer.id} if peer is not None else set()
    client.shown = shown_in(sidebar) | client.header_ids


def sidebar_changed(client, sidebar: dict) -> None:
    """A fresh sidebar went to this page: the people it shows may have changed."""
    if getattr(client, "header_ids", None) is not None:
        client.shown = shown_in(sidebar) | client.header_ids


def by_audience(clients) -> dict:
    """Sockets grouped by (language, time zone): a push is rendered once per group."""
    groups: dict = {}
    for client in clients:
        groups.setdefault(getattr(client, "audience", None), []).append(client)
    return groups


def presence_event(user_id: int, online: bool, last_seen: float | None = None) -> dict:
    """The event that tells every process a person came online or went offline."""
    return {"type": "presence", "user_id": user_id, "online": online, "last_seen": last_seen}


class Presence:
    """This process's part in presence: its people's sockets, grace periods and the
    shared online set (a view of every worker's, kept current by presence events)."""

    def __init__(self, app, hub, backplane):
        self.app = app
        self.hub = hub
        self.backplane = backplane
        self.grace = float(app.config["PRESENCE_GRACE"])
        self.here: dict[int, int] = {}  # open sockets per person in this process
        self.leaving: dict[int, float] = {}  # person -> when the grace period ends
        self.published = 0  # presence changes this process announced (bench, tests)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._worker = ""
        self._last_beat = 0.0
        self._last_reap = 0.0
        self._beaten = False
        self.reaped = 0  # times another worker took this one for dead (tests, logs)
        redis_client = getattr(backplane, "redis", None)
        self.redis = redis_client
        if redis_client is not None:
            prefix = app.config.get("REDIS_PREFIX", "chatapp:")
            self.channel = backplane.channel
            self.key = prefix + "presence:"
            self._arrive = redis_client.register_script(ARRIVE)
            self._leave = redis_client.register_script(LEAVE)
            self._loaded = False

    # -- sockets -------------------------------------------------------------------------

    @property
    def worker(self) -> str:
        """This process's id in Redis (made after a fork, so workers never share one)."""
        if self._pid != os.getpid():
            self._pid, self._worker = os.getpid(), uuid.uuid4().hex
        return self._worker

    def opened(self, user_id: int) -> None:
        """A socket of this person opened here: online, unless they already were."""
        # One decision at a time in this process, Redis call included: a leaving decided
        # by the clock must not interleave with an arrival of the same person here.
        with self._lock:
            self.here[user_id] = self.here.get(user_id, 0) + 1
            if self.here[user_id] > 1:
                return
            if self.leaving.pop(user_id, None) is not None:
                return  # back within the grace period: nothing changed
            self._ensure_running()
            self._arrive_everywhere(user_id)

    def closed(self, user_id: int) -> None:
        """A socket of this person closed here; their last one starts the grace period."""
        with self._lock:
            left = self.here.get(user_id, 0) - 1
            if left > 0:
                self.here[user_id] = left
                return
            self.here.pop(user_id, None)
            self.leaving[user_id] = time.monotonic() + self.grace
            self._ensure_running()

    def is_online(self, user_id: int) -> bool:
        """Whether the person has a socket open on any worker (or is in their grace)."""
        self._load()
        return user_id in self.hub.online

    # -- changes of state --------------------------------------------------------------

    def _arrive_everywhere(self, user_id: int) -> None:
        event = presence_event(user_id, True)
        if self.redis is not None:
            try:
                self._load()
                if self._arrive(keys=self._keys(user_id), args=self._args(user_id, event)):
                    self.published += 1
                return
            except Exception as exc:  # noqa: BLE001 - Redis down: this process decides
                log.warning("presence in Redis failed (%s); deciding in this process", exc)
        if user_id not in self.hub.online:
            self.published += 1
            self.backplane.publish(event)

    def _leave_everywhere(self, user_id: int, worker: str | None = None) -> tuple[bool, float]:
        """Let go of a person (for this worker, or a dead one): whether they are now
        offline everywhere, and the time to remember as their last seen."""
        last_seen = time.time()
        event = presence_event(user_id, False, last_seen)
        gone = False
        if self.redis is not None:
            try:
                gone = bool(self._leave(keys=self._keys(user_id, worker),
                                        args=self._args(user_id, event, worker)))
            except Exception as exc:  # noqa: BLE001
                log.warning("presence in Redis failed (%s); deciding in this process", exc)
                gone = user_id in self.hub.online
                if gone:
                    self.backplane.publish(event)
        elif user_id in self.hub.online:
            gone = True
            self.backplane.publish(event)
        if gone:
            self.published += 1
        return gone, last_seen

    def _keys(self, user_id: int, worker: str | None = None) -> list[str]:
        return [f"{self.key}user:{user_id}", f"{self.key}online",
                f"{self.key}worker:{worker or self.worker}"]

    def _args(self, user_id: int, event: dict, worker: str | None = None) -> list:
        return [worker or self.worker, user_id, self.channel,
                json.dumps(event, separators=(",", ":"))]

    def _load(self) -> None:
        """Take the online set from Redis once (a worker starting among running ones)."""
        if self.redis is None or self._loaded:
            return
        self._loaded = True
        try:
            self.hub.online.update(int(u) for u in self.redis.smembers(f"{self.key}online"))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read who is online from Redis: %s", exc)

    def _save_last_seen(self, user_id: int, when: float) -> None:
        """Remember when the person went offline (one UPDATE per change, not per socket)."""
        try:
            db.session.execute(db.update(User).where(User.id == user_id).values(
                last_seen_at=datetime.fromtimestamp(when, timezone.utc).replace(tzinfo=None)))
            db.session.commit()
        except Exception:  # noqa: BLE001 - the event matters more than the timestamp
            db.session.rollback()
            log.exception("could not save when user %s was last seen", user_id)

    # -- the clock: grace periods, typing, heartbeats -----------------------------------

    def _ensure_running(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="presence")
            self._thread.start()
            if self.redis is not None:
                # Its own loop, taking no lock: a storm of arrivals must not delay the
                # heartbeat until the other workers take this one for dead.
                threading.Thread(target=self._beat_loop, daemon=True,
                                 name="presence-heartbeat").start()

    def _beat_loop(self) -> None:
        while True:
            try:
                with self.app.test_request_context("/"):
                    self._beat(time.monotonic())
            except Exception:  # noqa: BLE001
                log.exception("presence heartbeat failed")
            time.sleep(1.0)

    def _run(self) -> None:
        tick = max(0.05, min(1.0, self.grace / 4))
        while True:
            time.sleep(tick)
            try:
                with self.app.test_request_context("/"):
                    self.tick()
            except Exception:  # noqa: BLE001 - the clock must keep going
                log.exception("presence tick failed")

    def tick(self) -> None:
        """Let go of people whose grace ran out, and expire typing."""
        now = time.monotonic()
        with self._lock:
            due = [u for u, t in self.leaving.items() if t <= now]
        for user_id in due:
            with self._lock:  # checked again: they may have come back meanwhile
                if self.leaving.get(user_id, now + 1) > now or user_id in self.here:
                    continue
                del self.leaving[user_id]
                gone, when = self._leave_everywhere(user_id)
            if gone:
                self._save_last_seen(user_id, when)  # outside the lock: a database write
        self.hub.expire_typing(now)

    def _beat(self, now: float) -> None:
        """Tell Redis this worker lives; let go of the people of workers that died."""
        try:
            if now - self._last_beat >= HEARTBEAT:
                self._last_beat = now
                new = self.redis.hset(f"{self.key}workers", self.worker, time.time())
                if new and self._beaten:
                    self._come_back()
                self._beaten = True
            if now - self._last_reap >= WORKER_DEAD_AFTER / 2:
                self._last_reap = now
                self._reap()
        except Exception as exc:  # noqa: BLE001
            log.warning("presence heartbeat failed: %s", exc)

    def _come_back(self) -> None:
        """Another worker took this one for dead and let go of its people: they are here
        still, so they arrive again (an online event for any it had announced offline)."""
        self.reaped += 1
        with self._lock:
            people = list(self.here)
        log.warning("this worker was taken for dead; %d people here arrive again", len(people))
        for user_id in people:
            self._arrive_everywhere(user_id)

    def _reap(self) -> None:
        """A worker that stopped beating (killed, or stopped for a deploy) holds its
        people in Redis still: whoever notices first lets go of them (idempotent)."""
        cutoff = time.time() - WORKER_DEAD_AFTER
        for worker, beat in self.redis.hgetall(f"{self.key}workers").items():
            worker = worker.decode()
            if worker == self.worker or float(beat) >= cutoff:
                continue
            people = self.redis.smembers(f"{self.key}worker:{worker}")
            log.warning("worker %s silent for %d s: letting go of its %d people", worker,
                        WORKER_DEAD_AFTER, len(people))
            for user_id in people:
                gone, when = self._leave_everywhere(int(user_id), worker)
                if gone:
                    self._save_last_seen(int(user_id), when)
            self.redis.hdel(f"{self.key}workers", worker)
            self.redis.delete(f"{self.key}worker:{worker}")


class PresenceEvents:
    """The hub's part: the online set, presence pushes, and who is typing where.

    A mixin of Hub (hub.py); it uses the hub's lock, users and by_conversation.
    """

    def _init_presence(self) -> None:
        self.online: set[int] = set()
        # conversation -> person -> (name, when their "is typing" ends)
        self.typing: dict[int, dict[int, tuple[str, float]]] = {}
        self.last_typing: dict[int, float] = {}  # person -> their last accepted frame here

    def _on_presence(self, event: dict) -> None:
        user_id, online = event["user_id"], event["online"]
        with self._lock:
            if (user_id in self.online) == online:
                return  # nothing changes on screen (this process already knew)
            (self.online.add if online else self.online.discard)(user_id)
            # Only pages that show the person (None: not known, or a room's member list).
            clients = [c for s in self.users.values() for c in s.clients
                       if getattr(c, "shown", None) is None or user_id in c.shown]
        # One rendering for every page: the person's dots (wherever they are shown) and,
        # on their private chat's header, "Last seen".
        for audience, group in by_audience(clients).items():
            with rendering_as(audience):
                frame = Frame(render_template("pushes/presence_changed.html",
                                              user_id=user_id, online=online))
            for client in group:
                client.push(frame)

    def accept_typing(self, user_id: int) -> bool:
        """Whether a typing frame of this person comes soon enough after their last one."""
        now = time.monotonic()
        with self._lock:
            if now - self.last_typing.get(user_id, -TYPING_MIN_GAP) < TYPING_MIN_GAP:
                return False
            self.last_typing[user_id] = now
            if len(self.last_typing) > 10_000:  # forget the quiet ones
                self.last_typing = {u: t for u, t in self.last_typing.items()
                                    if now - t < TYPING_MIN_GAP}
            return True

    def _on_typing(self, event: dict) -> None:
        conversation_id, user_id = event["conversation_id"], event["user_id"]
        with self._lock:
            if conversation_id not in self.by_conversation:
                return  # nobody here has it open
            typers = self.typing.setdefault(conversation_id, {})
            new = user_id not in typers
            typers[user_id] = (event["name"], time.monotonic() + TYPING_TIMEOUT)
        if new:
            self._push_typing(conversation_id)

    def typing_stopped(self, conversation_id: int, user_id: int) -> None:
        """Their message arrived: the indicator forgets them at once."""
        with self._lock:
            typers = self.typing.get(conversation_id)
            if not typers or typers.pop(user_id, None) is None:
                return
        self._push_typing(conversation_id)

    def expire_typing(self, now: float) -> None:
        """Forget whoever has not typed for TYPING_TIMEOUT seconds."""
        changed = []
        with self._lock:
            for conversation_id, typers in list(self.typing.items()):
                stale = [u for u, (_, until) in typers.items() if until <= now]
                for user_id in stale:
                    del typers[user_id]
                if stale:
                    changed.append(conversation_id)
        for conversation_id in changed:
            self._push_typing(conversation_id)

    def _push_typing(self, conversation_id: int) -> None:
        """Show who is typing on the conversation's open pages: one rendering for those
        who are not typing, one for each typer (who does not see their own name)."""
        with self._lock:
            typers = dict(self.typing.get(conversation_id, {}))
            if not typers:
                self.typing.pop(conversation_id, None)
            viewers = list(self.by_conversation.get(conversation_id, ()))
        frames: dict[tuple, Frame] = {}
        for client in viewers:
            typer = client.user_id if client.user_id in typers else None
            audience = getattr(client, "audience", None)
            frame = frames.get((typer, audience))
            if frame is None:
                names = sorted(name for u, (name, _) in typers.items() if u != typer)
                with rendering_as(audience):
                    frame = frames[typer, audience] = Frame(
                        render_template("pushes/typing_changed.html", names=names))
            client.push(frame)
