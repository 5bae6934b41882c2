"""Presence under a reconnect storm: how many online/offline events, and what CPU.

    .venv/bin/python bench/presence_storm.py [--people 1000] [--grace 30] [--window 10]

Starts chatapp with two gunicorn gevent workers sharing Redis (its own key prefix) on a
fresh SQLite database with PEOPLE accounts, opens one socket per person (the kernel spreads
them over both workers), waits until everyone is online, then closes every socket and
reopens each at a random moment within WINDOW seconds (as after a deploy: a page may come
back on the other worker). It counts the presence events published on the Redis channel
from the storm until the grace period (and the dead-worker reaper's delay) has passed, and
the server's CPU seconds over the storm.

Sessions are minted directly (a UserSession row and a signed cookie per person), as
logging in a thousand people through the form would spend minutes of argon2 before the
storm begins; the sockets themselves go through the real handshake (cookie, Origin).
Runs with chatapp's own interpreter (gevent, redis, websocket-client from `make setup`).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
import websocket  # noqa: E402
from gevent.pool import Pool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers  # noqa: E402
from servers import BENCH, Server  # noqa: E402

REDIS_URL = os.environ.get("CHATAPP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def mint_cookies(server: Server, count: int) -> list[str]:
    """A signed-in session cookie per seeded person (bench00000...)."""
    _, _, env = server.command()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        from flask.sessions import SecureCookieSessionInterface

        from chatapp import create_app
        from chatapp.extensions import db
        from chatapp.models import User, UserSession

        app = create_app()
        with app.app_context():
            users = db.session.scalars(db.select(User).where(User.username.like("bench%"))
                                       .order_by(User.id).limit(count)).all()
            serializer = SecureCookieSessionInterface().get_signing_serializer(app)
            cookies = []
            for user in users:
                UserSession.start(user, app.config["SESSION_LIFETIME"])
                cookies.append(serializer.dumps({"_user_id": user.get_id(), "_fresh": True}))
            db.session.commit()
            name = app.config.get("SESSION_COOKIE_NAME", "session")
            return [f"{name}={c}" for c in cookies]
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Tab:
    """One person's page: a socket that reads (and drops) whatever is pushed, and, as
    htmx does, reconnects after about half a second when the server closes it or a
    handshake fails."""

    retries = 0  # reconnections of every tab (the server closed, or a handshake failed)

    def __init__(self, server: Server, cookie: str):
        self.server, self.cookie = server, cookie
        self.ws = None
        self.wanted = False
        self.closed_at = None  # when the storm closed this page
        self.outage = None  # seconds from then until its socket was open again

    def open(self) -> None:
        self.wanted = True
        while self.wanted:
            try:
                ws = websocket.create_connection(
                    f"ws://127.0.0.1:{self.server.port}/ws/1", origin=self.server.url,
                    header=[f"Cookie: {self.cookie}"], timeout=60)
            except Exception:  # noqa: BLE001 - htmx retries a failed handshake
                Tab.retries += 1
                gevent.sleep(random.uniform(0.35, 0.65))
                continue
            ws.settimeout(None)  # an idle page waits for pushes as long as it takes
            self.ws = ws
            if self.closed_at is not None and self.outage is None:
                self.outage = time.monotonic() - self.closed_at
            gevent.spawn(self._read, ws)
            return

    def _read(self, ws) -> None:
        try:
            while ws.recv():
                pass
        except Exception:  # noqa: BLE001 - closed
            pass
        if self.wanted and self.ws is ws:  # not closed by us: come back, as htmx does
            Tab.retries += 1
            gevent.sleep(random.uniform(0.35, 0.65))
            if self.wanted and self.ws is ws:
                self.open()

    def close(self) -> None:
        self.wanted = False
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            ws.shutdown()


class Counter:
    """Presence events on the Redis channel, by (person, online)."""

    def __init__(self, channel: str):
        self.events: list[tuple[float, int, bool]] = []
        self.pubsub = redis.Redis.from_url(REDIS_URL).pubsub()
        self.pubsub.subscribe(channel)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            event = json.loads(message["data"])
            if event.get("type") == "presence":
                self.events.append((time.monotonic(), event["user_id"], event["online"]))

    def since(self, t0: float) -> list[tuple[float, int, bool]]:
        return [e for e in self.events if e[0] >= t0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--grace", type=float, default=30)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", default="0,1",
                        help="the server's CPUs (taskset); the bench harness's default is 0")
    args = parser.parse_args()
    servers.SERVER_CORE = args.cores
    prefix = f"chatapp_bench_{uuid.uuid4().hex[:8]}:"
    workdir = Path(tempfile.mkdtemp(prefix="presence-storm-"))
    server = Server("chatapp", workdir, workers=args.workers, env={
        "REDIS_URL": REDIS_URL, "CHATAPP_REDIS_PREFIX": prefix,
        "CHATAPP_PRESENCE_GRACE": str(args.grace), "CHATAPP_SEND_QUEUE_SIZE": "4096"})
    server.seed(args.people, 0)
    cookies = mint_cookies(server, args.people)
    counter = Counter(prefix + "events")
    server.start()
    # Every worker takes a few requests first, so its Redis subscriber is live before
    # sockets arrive (a subscription made later asks its pages to reconnect).
    import urllib.request

    for _ in range(20 * args.workers):
        urllib.request.urlopen(server.url + "/login/", timeout=10).read()
    time.sleep(3)
    tabs = [Tab(server, c) for c in cookies]
    pool = Pool(50)
    try:
        t0 = time.monotonic()
        cpu0 = server.cpu_seconds()
        pool.map(lambda t: t.open(), tabs)
        while len({u for _, u, on in counter.events if on}) < args.people \
                and time.monotonic() - t0 < 120:
            time.sleep(0.5)
        time.sleep(3)
        connect = {"seconds": time.monotonic() - t0, "cpu_s": server.cpu_seconds() - cpu0,
                   "online_events": sum(1 for _, _, on in counter.events if on),
                   "offline_events": sum(1 for _, _, on in counter.events if not on)}
        print("connected:", connect, flush=True)

        # The storm: every page drops, and comes back within the window.
        Tab.retries = 0
        storm = time.monotonic()
        cpu1 = server.cpu_seconds()
        for tab in tabs:
            tab.close()
            tab.closed_at = time.monotonic()

        def back(tab):
            gevent.sleep(random.uniform(0, args.window))
            tab.open()

        jobs = [gevent.spawn(back, t) for t in tabs]
        gevent.joinall(jobs, timeout=args.window + 60)
        reopened = time.monotonic() - storm
        cpu_storm = server.cpu_seconds() - cpu1
        # Past the grace period and the reaper's delay: any offline event would be out.
        time.sleep(args.grace + 25)
        events = counter.since(storm)
        people = {u for _, u, _ in events}
        outages = sorted(t.outage for t in tabs if t.outage is not None)
        back_in_grace = sum(1 for o in outages if o < args.grace)
        result = {
            "people": args.people, "workers": args.workers, "grace_s": args.grace,
            "window_s": args.window, "reopened_in_s": round(reopened, 1),
            "sockets_failed": sum(1 for j in jobs if j.exception is not None),
            "reconnects_and_retries": Tab.retries,
            "outage_p50_s": round(outages[len(outages) // 2], 1) if outages else None,
            "outage_max_s": round(outages[-1], 1) if outages else None,
            "people_back_within_grace": back_in_grace,
            "storm_presence_events": len(events),
            "storm_online": sum(1 for e in events if e[2]),
            "storm_offline": sum(1 for e in events if not e[2]),
            "people_with_events": len(people),
            "max_events_per_person": max(
                (sum(1 for e in events if e[1] == u) for u in people), default=0),
            "storm_cpu_s": round(cpu_storm, 2),
            "wait_cpu_s": round(server.cpu_seconds() - cpu1 - cpu_storm, 2),
            "connect": connect,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(result, indent=1))
        out = BENCH / "results" / f"presence-storm-{args.people}-grace{int(args.grace)}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        for tab in tabs:
            tab.close()
        server.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


if __name__ == "__main__":
    main()
