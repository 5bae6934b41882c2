"""Posting: 16 senders as fast as the server acknowledges, into one room with 4 listeners.

    python bench/posting_bench.py [--label NAME] [--seconds 10] [--repeats 3]
                                  [--senders 16] [--listeners 4] [--workers 1]

Makes (or reuses) the load client's environment (bench/.venvs/client) and re-runs itself
there, pinned to core 1; chatapp runs as one gunicorn gevent worker pinned to core 0
(bench/servers.py), on a fresh SQLite database. With --workers 2 the server gets both
cores and Redis (its own key prefix), and the client shares them.

Every sender and listener is a distinct account, logged in through the login form with
its CSRF token (bench/loadclient.py). Each sender keeps one message in flight, as a
person at a composer does: it sends the frame htmx sends, waits for the acknowledgement,
and sends the next at once.

The acknowledgement is the sender's fresh composer (pushes/composer_reset.html, the
partial aimed at #composer): the socket route pushes it after posting.post() has
committed the message and published it (realtime/ws.py, handle_frame), so it means "the
message is stored and on its way". The sender's own copy of the message goes out just
before it, in the same fan-out as everybody else's. A composer error counts as a refusal.

Measured per phase (the median over repeats; lost and doubled: the worst repeat):
acknowledged messages per second, frame-to-acknowledgement latency (p50/p99/max), at
each listener every acknowledged message once (lost, doubled), the server's CPU per
acknowledged message from /proc (the whole gunicorn tree), and the load client's own
CPU share (near 1.0 it is the client that limits the figures). Results go to
bench/results/posting-<label>.json and .md, with the load average at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402
from servers import BENCH, CLIENT_CORE, Server, ensure_venv  # noqa: E402

RESULTS = BENCH / "results"
ACK = 'hx-target="#composer"'
REFUSED = 'hx-target="#composer-error"'


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sender:
    """One person at the composer: one message in flight, the next sent on its
    acknowledgement."""

    def __init__(self, index: int, conn, session, adapter):
        self.index = index
        self.conn = conn
        self.session = session
        self.adapter = adapter
        self.waiting: asyncio.Future | None = None
        self.refused = 0
        self.unexpected = 0
        for text in conn.queue:
            self._text(text)
        conn.queue = None
        conn.on_text = self._text

    def _text(self, text: str) -> None:
        if ACK in text:
            if self.waiting is not None and not self.waiting.done():
                self.waiting.set_result(time.monotonic_ns())
            else:
                self.unexpected += 1
        elif REFUSED in text:
            self.refused += 1
            if self.waiting is not None and not self.waiting.done():
                self.waiting.set_exception(RuntimeError(text[:200]))

    async def run(self, phase: int, until: float, latencies: list, sent: list) -> int:
        """Send until the deadline; every acknowledged (phase, seq) goes into `sent`."""
        loop = asyncio.get_running_loop()
        seq = self.index * 1_000_000
        acked = 0
        while time.monotonic() < until and not self.conn.closed:
            self.waiting = loop.create_future()
            t0 = time.monotonic_ns()
            body = f"bench-{phase}-{seq}-{t0}"
            self.conn.send_text(self.adapter.frame(self.session, body, 1))
            try:
                t1 = await asyncio.wait_for(self.waiting, 30)
            except RuntimeError:
                seq += 1
                continue
            except asyncio.TimeoutError:
                break
            latencies.append((t1 - t0) / 1e6)
            sent.append((phase << 40) | seq)
            seq += 1
            acked += 1
        return acked


class Listener:
    """A page in the room that only reads: every message stamp it sees, counted."""

    def __init__(self, conn):
        from loadclient import STAMP

        self.stamp = STAMP
        self.conn = conn
        self.phase = -1
        self.seen: dict[int, int] = {}
        for text in conn.queue:
            self._text(text)
        conn.queue = None
        conn.on_text = self._text

    def _text(self, text: str) -> None:
        for phase, seq, _sent in self.stamp.findall(text):
            if int(phase) == self.phase:
                key = (int(phase) << 40) | int(seq)
                self.seen[key] = self.seen.get(key, 0) + 1

    def start(self, phase: int) -> None:
        self.phase = phase
        self.seen = {}


async def phase(server, senders, listeners, number: int, seconds: float) -> dict:
    """Every sender sends for `seconds`; then wait until the listeners have everything."""
    for listener in listeners:
        listener.start(number)
    latencies: list[float] = []
    sent: list[int] = []
    cpu0, own0 = server.cpu_seconds(), own_cpu()
    t0 = time.monotonic()
    until = t0 + seconds
    await asyncio.gather(*(s.run(number, until, latencies, sent) for s in senders))
    elapsed = time.monotonic() - t0  # includes the last messages' acknowledgements
    cpu, own = server.cpu_seconds() - cpu0, own_cpu() - own0
    # Every acknowledged message must reach every listener once.
    expected = set(sent)
    wait_until = time.monotonic() + 10
    while time.monotonic() < wait_until and any(
            len(expected & l.seen.keys()) < len(expected) for l in listeners):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # late duplicates
    lost = max(len(expected - l.seen.keys()) for l in listeners)
    doubled = max(sum(1 for k, n in l.seen.items() if n > 1) for l in listeners)
    strays = max(len(l.seen.keys() - expected) for l in listeners)  # refused yet delivered
    return {
        "messages": len(sent),
        "messages_per_s": len(sent) / elapsed,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "lost": lost,
        "doubled": doubled,
        "unacknowledged_but_delivered": strays,
        "refused": sum(s.refused for s in senders),
        "server_cpu_us_per_message": 1e6 * cpu / max(len(sent), 1),
        "server_cpu_share": cpu / elapsed,
        "client_cpu_share": own / elapsed,
    }


def median_of(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key in ("lost", "doubled", "refused", "unacknowledged_but_delivered"):
            out[key] = max(values)
        else:
            out[key] = statistics.median(values)
    out["repeats"] = len(runs)
    out["runs"] = runs
    return out


async def bench(args) -> dict:
    from loadclient import LoadClient, connect

    workdir = Path(tempfile.mkdtemp(prefix="posting-"))
    env = {}
    if args.workers > 1:
        env = {"REDIS_URL": args.redis_url,
               "CHATAPP_REDIS_PREFIX": f"chatapp_bench_{uuid.uuid4().hex[:8]}:"}
    if args.postgresql:
        env["DATABASE_URL"] = fresh_postgres()
    server = Server("chatapp", workdir, env=env, workers=args.workers)
    users = [f"bench{i:05d}" for i in range(args.senders + args.listeners)]
    server.seed(len(users), 0)
    server.start()
    try:
        client = LoadClient("chatapp", server.url)
        await client.login(users)
        adapter = client.adapter

        async def open_conn(name):
            session = client.sessions[name]
            conn = await connect(client.host, client.port, "/ws/1", session["headers"])
            await adapter.ready(conn)
            return conn, session

        senders = []
        for i, name in enumerate(users[: args.senders]):
            conn, session = await open_conn(name)
            senders.append(Sender(i, conn, session, adapter))
        listeners = [Listener((await open_conn(name))[0]) for name in users[args.senders:]]
        await asyncio.sleep(1)
        warm = await phase(server, senders, listeners, 1, max(1.0, args.seconds / 4))
        print(f"[posting] warm-up: {warm['messages_per_s']:.0f} msg/s", flush=True)
        runs = []
        for n in range(args.repeats):
            figures = await phase(server, senders, listeners, 2 + n, args.seconds)
            print("[posting] " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in figures.items()), flush=True)
            runs.append(figures)
            await asyncio.sleep(1)
        for s in senders:
            s.conn.close()
        for l in listeners:
            l.conn.close()
        await asyncio.sleep(0.3)
        for http in client.https.values():
            await http.close()
        return median_of(runs)
    finally:
        server.stop()


def fresh_postgres() -> str:
    """An empty PostgreSQL database of this benchmark's own."""
    import subprocess

    name = "chatapp_bench_posting"
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql],
                       check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def write(meta: dict, result: dict, label: str) -> list[Path]:
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"posting-{label}.json"
    json_path.write_text(json.dumps({"meta": meta, "result": result}, indent=2) + "\n")
    cols = ["messages_per_s", "p50_ms", "p99_ms", "max_ms", "lost", "doubled", "refused",
            "server_cpu_us_per_message", "server_cpu_share", "client_cpu_share"]
    lines = [
        f"Posting, run of {meta['date']} (git {meta['git']}; {meta['senders']} senders, "
        f"{meta['listeners']} listeners, {meta['workers']} worker(s) on core(s) "
        f"{meta['server_cores']}, client on core {meta['client_core']}; {meta['database']}; "
        f"{meta['seconds']} s "
        f"phases, median of {result['repeats']}; load average {meta['loadavg_at_start']} "
        f"at start, {meta['loadavg_at_end']} at end).", "",
        "| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|",
    ]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    for i, run in enumerate(result["runs"]):
        lines.append(f"| {i + 1} | " + " | ".join(cell(run[c]) for c in cols) + " |")
    lines.append("| **median** | " + " | ".join(cell(result[c]) for c in cols) + " |")
    md_path = RESULTS / f"posting-{label}.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="quick")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--listeners", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgresql", action="store_true",
                        help="PostgreSQL (127.0.0.1:5432) instead of SQLite")
    args = parser.parse_args()

    client_python = ensure_venv("client", BENCH / "requirements.txt")
    if Path(sys.prefix).resolve() != client_python.parent.parent.resolve():
        os.execv(str(client_python), [str(client_python), *sys.argv])
    if args.workers > 1:  # both cores for the server; the client shares them
        servers.SERVER_CORE = "0,1"
    else:
        os.sched_setaffinity(0, {CLIENT_CORE})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    import subprocess

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "git": subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip(),
        "senders": args.senders, "listeners": args.listeners, "workers": args.workers,
        "server_cores": servers.SERVER_CORE,
        "client_core": "0,1" if args.workers > 1 else CLIENT_CORE,
        "seconds": args.seconds,
        "database": "postgresql" if args.postgresql else "sqlite",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    result = asyncio.run(bench(args))
    meta["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for path in write(meta, result, args.label):
        print(f"[posting] wrote {path}", flush=True)


if __name__ == "__main__":
    main()
