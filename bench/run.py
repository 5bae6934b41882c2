"""Run the benchmarks: `python bench/run.py [--full] [--systems ...] [--workloads ...]`.

Makes the load client's environment (bench/.venvs/client) and re-runs itself there, pinned
to core 1; each server runs on core 0. Results go to bench/results/ as JSON, a markdown
table and PNG plots. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BENCH, CLIENT_CORE, ROOT, Server, ensure_venv  # noqa: E402

RESULTS = BENCH / "results"
ALL_SYSTEMS = ["chatapp", "floor", "socketio", "channels"]
# Run only when named: the floor without TCP_NODELAY, and the floor that writes every
# message on its own (before it batched as chatapp does).
EXTRA_SYSTEMS = ["floor-nagle", "floor-single"]
ALL_WORKLOADS = ["ramp", "fanout", "saturation", "mix", "slow", "redis"]
# Not in the default set (chatapp only): a members-only room, `--workloads room`.
EXTRA_WORKLOADS = ["room"]

PROFILES = {
    "tiny": {  # for debugging the harness itself
        "users": 20,
        "ramp": [100],
        "fanout_listeners": [50],
        "fanout_rates": [10],
        "seconds": 1,
        "repeats": 1,
        "saturation_listeners": 50,
        "saturation_seconds": 1,
        "mix": {"pairs": 4, "pair_rate": 1, "listeners": 20, "room_rate": 5, "seconds": 2},
        "slow": {"listeners": 100, "rate": 10, "seconds": 2},
    },
    "quick": {
        "users": 100,  # distinct accounts; sockets beyond that are further tabs of them
        "ramp": [1000, 2000],
        "fanout_listeners": [100, 1000],
        "fanout_rates": [10, 50],
        "seconds": 2,  # (with 3 repeats, 100,000 deliveries a phase at 1,000 × 50 msg/s)
        "repeats": 3,
        "saturation_listeners": 1000,
        "saturation_seconds": 2,
        "mix": {"pairs": 20, "pair_rate": 1, "listeners": 200, "room_rate": 10, "seconds": 4},
        "slow": {"listeners": 500, "rate": 20, "seconds": 6},
    },
    "full": {
        "users": 1000,
        "ramp": [1000, 5000, 10000],
        "fanout_listeners": [100, 1000, 5000],
        "fanout_rates": [10, 100, 1000],
        "seconds": 5,
        "repeats": 5,
        "saturation_listeners": 1000,
        "saturation_seconds": 4,
        "mix": {"pairs": 200, "pair_rate": 1, "listeners": 1000, "room_rate": 10, "seconds": 10},
        "slow": {"listeners": 2000, "rate": 20, "seconds": 20},
    },
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def median_of(runs: list[dict]) -> dict:
    """The median of each figure over repeats (lost and duplicated: the worst repeat)."""
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs]
        if key in ("lost", "duplicated", "expected", "closed"):
            out[key] = max(vals)
        elif isinstance(vals[0], (int, float)):
            out[key] = statistics.median(vals)
        else:
            out[key] = vals[0]
    out["repeats"] = len(runs)
    return out


class Bench:
    """One harness run: the profile, the work directory and the results so far."""

    def __init__(self, args):
        self.args = args
        self.profile = dict(PROFILES["full" if args.full else args.profile])
        if args.ramp:
            self.profile["ramp"] = args.ramp
        self.tmp = Path(tempfile.mkdtemp(prefix="chatapp-bench-"))
        self.results: list[dict] = []
        self.started = time.time()

    def record(self, workload: str, system: str, params: dict, figures: dict) -> None:
        row = {"workload": workload, "system": system, "params": params, **figures}
        self.results.append(row)
        print(f"[bench] {workload:10} {system:9} {json.dumps(params)} -> "
              + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items()), flush=True)

    # -- measuring ---------------------------------------------------------------------------

    async def phase(self, client, server, sender, rate, count, expected_tabs, wait=5.0,
                    streams=None) -> dict:
        """Send count messages at rate; wait for their deliveries; the phase's figures."""
        rec = client.recorder
        client.phase += 1
        rec.start(client.phase)
        cpu0 = server.cpu_seconds()
        own0 = _own_cpu()
        t0 = time.monotonic_ns()
        if streams is None:
            streams = [(sender, rate, count, expected_tabs)]
        achieved = await asyncio.gather(
            *(client.send_stream(s, r, c, client.phase, seq0=i * 1_000_000)
              for i, (s, r, c, _) in enumerate(streams))
        )
        expected = sum(c * n for _, _, c, n in streams)
        sent_at = time.monotonic()
        last = -1
        while rec.deliveries < expected and time.monotonic() - sent_at < wait:
            await asyncio.sleep(0.05)
            if rec.deliveries != last:
                last = rec.deliveries
        await asyncio.sleep(0.2)  # late duplicates
        cpu = server.cpu_seconds() - cpu0
        own = _own_cpu() - own0
        span = max(rec.last_delivery - t0, 1) / 1e9
        lat = [x / 1e6 for x in rec.latencies]
        return {
            "offered_rate": sum(r for _, r, _, _ in streams),
            "sent_rate": round(sum(achieved), 1),
            "expected": expected,
            "delivered": rec.deliveries,
            "lost": expected - rec.deliveries,
            "duplicated": rec.duplicates,
            "p50_ms": pct(lat, 0.50),
            "p95_ms": pct(lat, 0.95),
            "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) if lat else float("nan"),
            "deliveries_per_s": rec.deliveries / span,
            "cpu_us_per_delivery": cpu / max(rec.deliveries, 1) * 1e6,
            "server_cpu_share": cpu / span,
            # Near 1.0 the client, not the server, limits the figures.
            "client_cpu_share": own / (time.monotonic_ns() - t0) * 1e9,
        }

    async def settle(self, client, quiet: float = 2.0, limit: float = 180.0) -> None:
        """Wait until the server has worked off an overload: no stamp for `quiet` seconds.

        A phase that offered more than the server can do leaves messages queued behind
        it; measuring the next phase before they are out would charge their delay to it.
        """
        rec = client.recorder
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if time.monotonic_ns() - rec.last_any > quiet * 1e9:
                return
            await asyncio.sleep(0.25)
        print(f"[bench]   still delivering after {limit:.0f} s; going on", flush=True)

    async def repeated(self, client, server, sender, rate, seconds, tabs, streams=None):
        """Warm-up (discarded), then the median of the profile's repeats."""
        count = max(20, int(rate * seconds))
        await self.phase(client, server, sender, rate, max(10, count // 4), tabs,
                         streams=_scale(streams, 4))
        runs = []
        for _ in range(self.profile["repeats"]):
            runs.append(await self.phase(client, server, sender, rate, count, tabs,
                                         streams=streams))
            if runs[-1]["lost"]:  # overloaded: more repeats would only queue more behind it
                break
        return median_of(runs)

    def server(self, system: str, users: int, pairs: int = 0, room: bool = False,
               **kw) -> Server:
        workdir = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=self.tmp))
        server = Server(system, workdir, **kw)
        server.seed(users, pairs, room)
        return server.start()

    async def client(self, server: Server, users: list[str]):
        from loadclient import LoadClient

        client = LoadClient(server.system, server.url)
        await client.login(users)
        return client

    # -- workloads ---------------------------------------------------------------------------

    async def ramp(self, system: str) -> None:
        """(1) Idle sockets: connect rate, errors, memory per socket."""
        sizes = self.profile["ramp"]
        users = _users(self.profile["users"])
        server = self.server(system, len(users))
        try:
            client = await self.client(server, users)
            try:
                await asyncio.sleep(1)
                base = server.rss_bytes()
                opened = 0
                for size in sizes:
                    plan = [(users[i % len(users)], 1) for i in range(opened, size)]
                    errors0 = client.connect_errors
                    tabs, secs = await client.open_tabs(plan)
                    opened = size
                    await asyncio.sleep(2)  # idle: let buffers settle
                    rss = server.rss_bytes()
                    held = sum(1 for t in client.tabs if t.closed is None)
                    self.record("ramp", system, {"sockets": size}, {
                        "first_errors": client.recorder.errors[:3],
                        "held": held,
                        "connect_per_s": len(plan) / secs,
                        "connect_errors": client.connect_errors - errors0,
                        "rss_mb": rss / 2**20,
                        "kb_per_socket": (rss - base) / max(held, 1) / 1024,
                    })
            finally:
                await client.close()
        finally:
            server.stop()

    async def fanout(self, system: str) -> None:
        """(2) One sender in the public room, listeners × message rates."""
        p = self.profile
        users = _users(p["users"])
        server = self.server(system, len(users))
        try:
            client = await self.client(server, users)
            try:
                sender = await client.open_tab(users[0], 1, listener=False)
                opened = 0
                for listeners in p["fanout_listeners"]:
                    plan = [(users[1 + i % (len(users) - 1)], 1) for i in range(opened, listeners)]
                    await client.open_tabs(plan)
                    opened = listeners
                    live = sum(1 for t in client.tabs if t.listener and t.closed is None)
                    behind = None
                    for rate in p["fanout_rates"]:
                        params = {"listeners": listeners, "rate": rate}
                        if behind is not None:  # measuring further only costs minutes
                            self.record("fanout", system, params,
                                        {"skipped": f"fell behind at {behind} msg/s"})
                            continue
                        figures = await self.repeated(client, server, sender, rate,
                                                      p["seconds"], live)
                        self.record("fanout", system, params, figures)
                        if figures["lost"] or figures["p99_ms"] > 1000:
                            behind = rate
                            await self.settle(client)
            finally:
                await client.close()
        finally:
            server.stop()

    async def room(self, system: str) -> None:
        """(7) One sender in a members-only room of ROOM_MEMBERS people, at the fan-out rates.

        Every account is a member (the message event carries all their ids, and the hub
        checks each); the listening sockets are tabs of the first `users` accounts, as in
        the public-room fan-out, so the two compare directly.
        """
        if system != "chatapp":
            return
        p = self.profile
        members = _users(ROOM_MEMBERS)
        users = members[: p["users"]]
        server = self.server(system, len(members), room=True)
        room_id = server.conversations[-1]
        try:
            client = await self.client(server, users)
            try:
                sender = await client.open_tab(users[0], room_id, listener=False)
                listeners = p["fanout_listeners"][-1]
                plan = [(users[1 + i % (len(users) - 1)], room_id) for i in range(listeners)]
                await client.open_tabs(plan)
                live = sum(1 for t in client.tabs if t.listener and t.closed is None)
                for rate in p["fanout_rates"]:
                    params = {"members": len(members), "listeners": listeners, "rate": rate}
                    figures = await self.repeated(client, server, sender, rate, p["seconds"], live)
                    self.record("room", system, params, figures)
            finally:
                await client.close()
        finally:
            server.stop()

    async def saturation(self, system: str) -> None:
        """(3) The highest delivery rate with p99 under 200 ms and nothing lost."""
        p = self.profile
        users = _users(p["users"])
        listeners = p["saturation_listeners"]
        server = self.server(system, len(users))
        try:
            client = await self.client(server, users)
            try:
                sender = await client.open_tab(users[0], 1, listener=False)
                await client.open_tabs([(users[1 + i % (len(users) - 1)], 1)
                                        for i in range(listeners)])
                live = sum(1 for t in client.tabs if t.listener and t.closed is None)
                # Search: double the rate, one short phase per step, until a step fails;
                # then bisect between the last good rate and the first bad one.
                await self.phase(client, server, sender, 2, 4, live)  # warm-up
                steps, good, rate = [], [], p.get("saturation_from", 2)
                bad = None

                async def step(rate):
                    count = max(10, int(rate * p["saturation_seconds"]))
                    f = await self.phase(client, server, sender, rate, count, live)
                    steps.append({"rate": rate, "deliveries_per_s": f["deliveries_per_s"],
                                  "p99_ms": f["p99_ms"], "lost": f["lost"],
                                  "sent_rate": f["sent_rate"]})
                    print(f"[bench]   saturation {system} rate={rate} "
                          f"deliveries/s={f['deliveries_per_s']:.0f} p99={f['p99_ms']:.1f}ms "
                          f"lost={f['lost']}", flush=True)
                    if _good(f, rate):
                        good.append(rate)
                        return True
                    await self.settle(client)  # let the failed step's backlog drain
                    return False

                while rate <= 4096:
                    if not await step(rate):
                        bad = rate
                        break
                    rate *= 2
                for _ in range(p.get("saturation_bisect", 3)):
                    if not good or bad is None:
                        break
                    mid = (max(good) + bad) // 2
                    if mid in (max(good), bad):
                        break
                    if not await step(mid):
                        bad = mid
                # ...then measure the best good rate properly: the median of the repeats.
                # A step can pass by luck near the limit: if the repeats fail, the rate
                # comes down by 15% until they pass (at most four times).
                best = None
                best_rate = max(good) if good else None
                for _ in range(4 if good else 0):
                    await asyncio.sleep(1)
                    best = await self.repeated(client, server, sender, best_rate,
                                               p["saturation_seconds"], live)
                    if _good(best, best_rate):
                        break
                    print(f"[bench]   saturation {system} rate={best_rate} failed its "
                          f"repeats (p99 {best['p99_ms']:.1f} ms); trying 15% less", flush=True)
                    steps.append({"rate": best_rate, "repeats_failed": True,
                                  "p99_ms": best["p99_ms"], "lost": best["lost"]})
                    best, best_rate = None, max(2, int(best_rate * 0.85))
                    await self.settle(client)
                figures = dict(best or {"deliveries_per_s": 0.0})
                figures["steps"] = steps
                self.record("saturation", system, {"listeners": listeners}, figures)
            finally:
                await client.close()
        finally:
            server.stop()

    async def mix(self, system: str, database: str) -> None:
        """(4) Many private chats plus the public room, on SQLite or PostgreSQL."""
        m = self.profile["mix"]
        pairs = m["pairs"]
        users = _users(max(self.profile["users"], 2 * pairs + 1))
        env = {}
        if database == "postgresql":
            env["DATABASE_URL"] = _fresh_postgres()
            if env["DATABASE_URL"] is None:
                self.record("mix", system, {"database": database}, {"skipped": "no psql"})
                return
        server = self.server(system, len(users), pairs=pairs, env=env)
        try:
            client = await self.client(server, users)
            try:
                chats = server.conversations[1:]
                dm_tabs = []
                for i, conv in enumerate(chats):
                    a = await client.open_tab(users[2 * i], conv)
                    b = await client.open_tab(users[2 * i + 1], conv)
                    dm_tabs += [a, b]
                room_sender = await client.open_tab(users[-1], 1, listener=False)
                room = users[2 * pairs:-1] or users[:-1]
                await client.open_tabs([(room[i % len(room)], 1) for i in range(m["listeners"])])
                live = sum(1 for t in client.tabs if t.listener and t.closed is None
                           and t.conversation == 1)
                streams = [(room_sender, m["room_rate"], m["room_rate"] * m["seconds"], live)]
                streams += [(t, m["pair_rate"], m["pair_rate"] * m["seconds"], 2)
                            for t in dm_tabs[::2]]
                figures = await self.repeated(client, server, None, 0, m["seconds"], 0,
                                              streams=streams)
                self.record("mix", system, {"database": database, **m}, figures)
            finally:
                await client.close()
        finally:
            server.stop()

    async def slow(self, system: str) -> None:
        """(5) 1% of listeners stop reading: the others' p99 and the server's memory."""
        s = self.profile["slow"]
        users = _users(self.profile["users"])
        server = self.server(system, len(users))
        try:
            client = await self.client(server, users)
            try:
                sender = await client.open_tab(users[0], 1, listener=False)
                tabs, _ = await client.open_tabs(
                    [(users[1 + i % (len(users) - 1)], 1) for i in range(s["listeners"])])
                live = len(tabs)
                before = await self.repeated(client, server, sender, s["rate"], 2, live)
                stalled = tabs[:: 100]
                for tab in stalled:
                    tab.pause()
                    tab.listener = False
                rss = [server.rss_bytes()]
                sampler = asyncio.create_task(_sample(server, rss))
                after = await self.phase(client, server, sender, s["rate"],
                                         s["rate"] * s["seconds"], live - len(stalled))
                sampler.cancel()
                self.record("slow", system, {**s, "stalled": len(stalled)}, {
                    "p99_before_ms": before["p99_ms"],
                    "p99_ms": after["p99_ms"],
                    "lost": after["lost"],
                    "duplicated": after["duplicated"],
                    "rss_start_mb": rss[0] / 2**20,
                    "rss_max_mb": max(rss) / 2**20,
                    "rss_end_mb": rss[-1] / 2**20,
                    "stalled_closed_by_server": sum(1 for t in stalled if t.closed),
                })
            finally:
                await client.close()
        finally:
            server.stop()

    async def redis(self, system: str) -> None:
        """(6) Two workers sharing Redis: fan-out across processes."""
        if not (ROOT / "chatapp" / "realtime" / "redis_backplane.py").exists():
            self.record("redis", system, {}, {"skipped": "chatapp has no Redis backplane yet"})
            return
        p = self.profile
        users = _users(p["users"])
        server = self.server(system, len(users), workers=2,
                             env={"REDIS_URL": "redis://127.0.0.1:6379/15"})
        try:
            client = await self.client(server, users)
            try:
                sender = await client.open_tab(users[0], 1, listener=False)
                listeners = p["fanout_listeners"][-1]
                await client.open_tabs([(users[1 + i % (len(users) - 1)], 1)
                                        for i in range(listeners)])
                live = sum(1 for t in client.tabs if t.listener and t.closed is None)
                figures = await self.repeated(client, server, sender, 50, p["seconds"], live)
                self.record("redis", system, {"listeners": listeners, "rate": 50,
                                              "workers": 2}, figures)
            finally:
                await client.close()
        finally:
            server.stop()

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        systems, workloads = self.args.systems, self.args.workloads
        for workload in workloads:
            for system in systems:
                if workload in ("mix", "slow", "redis") and system != "chatapp":
                    continue  # chatapp-only workloads (peers have no private chats)
                try:
                    if workload == "mix":
                        for database in ("sqlite", "postgresql"):
                            await self.mix(system, database)
                    else:
                        await getattr(self, workload)(system)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    import traceback

                    traceback.print_exc()
                    self.record(workload, system, {}, {"error": repr(exc)[:300]})


def _good(f: dict, rate: float) -> bool:
    """A saturation step passes: p99 within 200 ms, nothing lost or doubled, rate kept."""
    return (f["p99_ms"] <= 200 and f["lost"] == 0 and f["duplicated"] == 0
            and f["sent_rate"] >= 0.9 * rate)


def _scale(streams, k):
    if streams is None:
        return None
    return [(s, r, max(2, c // k), n) for s, r, c, n in streams]


async def _sample(server, out):
    while True:
        await asyncio.sleep(0.5)
        out.append(server.rss_bytes())


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ROOM_MEMBERS = 1000  # the members-only room's size in the "room" workload


def _users(n: int) -> list[str]:
    return [f"bench{i:05d}" for i in range(n)]


def _fresh_postgres() -> str | None:
    """An empty PostgreSQL database for one run."""
    name = "chatapp_bench"
    try:
        for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
                            "-qc", sql], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, list):
        return f"[{len(v)} steps]"
    return str(v)


def conditions() -> dict:
    """What the machine was doing: the figures are only as quiet as the box was."""
    load = os.getloadavg()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "git": rev,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "server_core": 0,
        "client_core": CLIENT_CORE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full profile (slow)")
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--systems", nargs="+", default=ALL_SYSTEMS, choices=ALL_SYSTEMS + EXTRA_SYSTEMS)
    parser.add_argument("--workloads", nargs="+", default=ALL_WORKLOADS,
                        choices=ALL_WORKLOADS + EXTRA_WORKLOADS)
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    parser.add_argument("--ramp", nargs="+", type=int, help="socket counts for the ramp")
    parser.add_argument("--keep", action="store_true", help="keep server logs and databases")
    parser.add_argument("--label", default="", help="name of this run's result files")
    parser.add_argument("--audiences", type=int, default=1, choices=range(1, 5),
                        help="(language, time zone) audiences among the listeners (chatapp)")
    args = parser.parse_args()
    os.environ["BENCH_AUDIENCES"] = str(args.audiences)  # read by bench/seed_chatapp.py

    client_python = ensure_venv("client", BENCH / "requirements.txt")
    if Path(sys.prefix).resolve() != client_python.parent.parent.resolve():
        os.execv(str(client_python), [str(client_python), *sys.argv])
    os.sched_setaffinity(0, {CLIENT_CORE})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # servers inherit it too
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    bench = Bench(args)
    meta = conditions()
    meta.update(profile="full" if args.full else args.profile, nofile=want,
                audiences=args.audiences)
    started = time.monotonic()
    try:
        asyncio.run(bench.run())
    finally:
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        meta["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        meta["seconds"] = round(time.monotonic() - started, 1)
        from report import write

        paths = write(Path(args.out), meta, bench.results, args.label or meta["profile"])
        print("[bench] wrote " + ", ".join(str(p) for p in paths), flush=True)


if __name__ == "__main__":
    main()
