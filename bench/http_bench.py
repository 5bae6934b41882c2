"""HTTP page workloads: the room page, a page of history, the sidebar, people search.

    python3 bench/http_bench.py                       # every workload, results as http-now.*
    python3 bench/http_bench.py --label before --duration 5
    python3 bench/http_bench.py --compare fc89b1a --rounds 2   # against an older commit
    python3 bench/http_bench.py --workloads room --profile   # where a room page's time goes

Starts chatapp as the other benchmarks do (one gunicorn gevent worker pinned to core 0 with
taskset, SQLite, a fresh database in a temporary folder), seeds 30 accounts, a members-only
room, a private chat and 100 messages in the public room (bench/seed_chatapp.py), logs one
person in through the real form (GET /login/, POST with the CSRF token) and drives Debian's
wrk (/usr/bin/wrk, one thread pinned to core 1, 16 connections, keep-alive) at each page
with that person's cookie: a warm-up run, then the measured run.

Before each measured run one response is checked: status 200, and the expected content in
order (the room page shows the newest 50 messages, the history page the 50 before them, in
id order, read from the database; the sidebar names the person's room, chat and people; the
search finds the expected names). "floor" is the health probe /up (gunicorn, WSGI and one
SELECT 1, no Flask): what any request costs on the machine as loaded now. wrk counts non-2xx answers and socket errors; a run with
any is reported as failed.

Reported per workload: requests/s and latency p50/p99 (wrk), server CPU per request
(utime + stime of the server's process tree from /proc over the measured run, ÷ requests:
the figure load distorts least), SQL statements and Python function calls per request
(counted in-process with an engine event and cProfile, on the same database: load does not
change them), the client's CPU share (wrk's CPU ÷ wall time: near
1.0 the figures would describe wrk), the response size, and the load average before and
after. Results: bench/results/http-<label>.json and .md.

--compare REF also runs chatapp as it was at commit REF (its files unpacked into a temporary
folder), alternating page by page with the current one, so that both are measured under the
same load: on a shared machine, the fair before/after figure.

--profile runs each page 300 times in-process under cProfile (chatapp's Python, the same
database) and prints where the time goes; nothing is written to results.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from servers import CLIENT_CORE, Server, chatapp_python  # noqa: E402

RESULTS = BENCH / "results"
WRK = "/usr/bin/wrk"
USERS, MESSAGES, PAGE = 30, 100, 50
PASSWORD = "bench password 1"  # bench/seed_chatapp.py
VIEWER = "bench00000"
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
MESSAGE_IDS = re.compile(r'<(?:article|p) id="message-(\d+)"')
NAMES = re.compile(r'<span class="name">([^<]+)</span>')
WORKLOADS = ("room", "history", "sidebar", "people", "floor")


# -- the workloads: what each requests and what a correct answer holds ----------------------

def plan(conversations: list[int], database: Path) -> dict[str, dict]:
    """Each workload's path and the check of its answer, from the seeded database."""
    public, _chat, room = conversations
    with sqlite3.connect(database) as db:
        ids = [i for (i,) in db.execute(
            "SELECT id FROM messages WHERE conversation_id = ? AND deleted_at IS NULL "
            "ORDER BY id", (public,))]
        room_name = db.execute("SELECT name FROM conversations WHERE id = ?", (room,)).fetchone()[0]
    newest, older = ids[-PAGE:], ids[-2 * PAGE:-PAGE]
    people = [f"bench{i:05d}" for i in range(1, 21)]

    def messages_are(expected):
        return lambda body: _same(MESSAGE_IDS.findall(body), [str(i) for i in expected])

    def sidebar(body):
        if 'id="sidebar"' not in body or f'<span class="name">{room_name}</span>' not in body:
            return "the sidebar or its room is missing"
        # The private chat's peer, then People (those not chatted with), then the viewer.
        names = [n for n in NAMES.findall(body) if n.startswith("bench0")]
        return _same(names, ["bench00001", *(f"bench{i:05d}" for i in range(2, 22)), VIEWER])

    return {
        "room": {"path": "/", "check": messages_are(newest), "expect": len(newest)},
        "history": {"path": f"/c/{public}/messages?before={newest[0]}",
                    "check": messages_are(older), "expect": len(older)},
        "sidebar": {"path": f"/sidebar?c={public}", "check": sidebar, "expect": None},
        "people": {"path": "/people?q=bench0",
                   "check": lambda body: _same(NAMES.findall(body), people),
                   "expect": len(people)},
        # Calibration: the health probe (gunicorn, WSGI, one SELECT 1, no Flask) is the
        # least a request costs on this machine under its present load.
        "floor": {"path": "/up", "check": lambda body: None if body == "ok\n" else body,
                  "expect": None},
    }


def _same(found: list, expected: list) -> str | None:
    """None when the lists are equal, else what differs."""
    if found == expected:
        return None
    return f"expected {len(expected)} items {expected[:3]}…, found {len(found)} {found[:3]}…"


# -- the client side ----------------------------------------------------------------------------

def login(base: str) -> str:
    """Log VIEWER in through the form; return the Cookie header wrk sends."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/login/").read().decode()
    form = urllib.parse.urlencode({"csrf_token": CSRF.search(page).group(1),
                                   "username": VIEWER, "password": PASSWORD}).encode()
    with opener.open(base + "/login/", data=form) as answer:
        if answer.status != 200 or answer.url.rstrip("/") != base:
            raise RuntimeError(f"login failed: {answer.status} {answer.url}")
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def fetch(base: str, path: str, cookie: str) -> tuple[int, str]:
    request = urllib.request.Request(base + path, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, cookie: str, seconds: float, connections: int) -> dict:
    """One wrk run pinned to the client core; its figures and its own CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    out = subprocess.run(
        ["taskset", "-c", str(CLIENT_CORE), WRK, "-t1", f"-c{connections}",
         f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s", "-H", f"Cookie: {cookie}", url],
        check=True, capture_output=True, text=True).stdout
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "client_cpu_share": round(client_cpu / wall, 3),
        "raw": out,
    }


def statements(server: Server, paths: dict[str, str], profile: bool) -> dict:
    """SQL statements per request of each path, counted in chatapp's own Python."""
    _, _, env = server.command()
    out = subprocess.run([chatapp_python(), __file__, "--in-process", json.dumps(paths)]
                         + (["--profile"] if profile else []),
                         cwd=BENCH.parent, env=env, check=True, capture_output=not profile,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1]) if not profile else {}


# -- in chatapp's Python: statement counts and profiles --------------------------------------

def python_calls(client, path: str, n: int = 10) -> int:
    """Python function calls per request (cProfile's count): unlike time, load leaves it be."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        client.get(path)
    profiler.disable()
    return round(pstats.Stats(profiler).total_calls / n)


def in_process(paths: dict[str, str], profile: bool) -> None:
    """Log VIEWER in with the test client, then count each page's statements (or profile)."""
    from sqlalchemy import event

    from chatapp import create_app
    from chatapp.extensions import db

    app = create_app()
    client = app.test_client()
    page = client.get("/login/").get_data(as_text=True)
    client.post("/login/", data={"csrf_token": CSRF.search(page).group(1),
                                 "username": VIEWER, "password": PASSWORD})
    counts = {}
    with app.app_context():
        engine = db.engine
    for name, path in paths.items():
        client.get(path)  # warm: compiled statements, templates
        seen = []

        def count(conn, cursor, statement, *args):
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        status = client.get(path).status_code
        event.remove(engine, "before_cursor_execute", count)
        counts[name] = {"statements": len(seen), "calls": python_calls(client, path)}
        if status != 200:
            raise SystemExit(f"{path}: {status}")
        if os.environ.get("BENCH_SHOW_SQL"):
            print(f"--- {name}: {len(seen)} statements", file=sys.stderr)
            for statement in seen:
                print("   ", " ".join(statement.split())[:160], file=sys.stderr)
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            start = time.process_time()
            profiler.enable()
            for _ in range(300):
                client.get(path)
            profiler.disable()
            spent = (time.process_time() - start) / 300
            print(f"\n=== {name} {path}: {spent * 1e3:.2f} ms of CPU per request "
                  f"under the profiler, {len(seen)} statements")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    print(json.dumps(counts))


# -- the run ------------------------------------------------------------------------------------

class OlderServer(Server):
    """chatapp as it was at another commit (its files unpacked in `source`), for a
    comparison taken under the same load as the current one."""

    def __init__(self, source: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source

    def command(self):
        cmd, _cwd, env = super().command()
        env["PYTHONPATH"] = str(self.source)  # its chatapp package before the installed one
        return cmd, self.source, env


def unpack(ref: str, folder: Path) -> Path:
    """The files of `ref` that run chatapp, in a folder of their own."""
    folder.mkdir()
    archive = subprocess.run(["git", "archive", ref, "chatapp", "migrations", "wsgi.py",
                              "gunicorn.conf.py"], cwd=BENCH.parent, check=True,
                             capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


class System:
    """One chatapp under test: its server, seeded database, pages and logged-in cookie."""

    def __init__(self, label: str, folder: Path, args, source: Path | None = None):
        folder.mkdir()
        env = {"BENCH_MESSAGES": str(MESSAGES)}
        self.label = label
        self.server = (OlderServer(source, "chatapp", folder, env=env) if source
                       else Server("chatapp", folder, env=env))
        self.server.seed(USERS, 1, room=True)
        pages = plan(self.server.conversations, folder / "chatapp.sqlite3")
        self.pages = {name: pages[name] for name in args.workloads}
        self.counts = statements(self.server, {n: p["path"] for n, p in self.pages.items()},
                                 args.profile)
        self.cookie = None

    def start(self) -> None:
        self.server.start()
        self.cookie = login(self.server.url)

    def measure(self, name: str, args) -> dict:
        """Check the page, warm it up, measure it under wrk, check it again."""
        page, base, cookie = self.pages[name], self.server.url, self.cookie
        status, body = fetch(base, page["path"], cookie)
        problem = f"status {status}" if status != 200 else page["check"](body)
        load_before = os.getloadavg()[0]
        wrk(base + page["path"], cookie, args.warmup, args.connections)
        cpu = self.server.cpu_seconds()
        run = wrk(base + page["path"], cookie, args.duration, args.connections)
        spent = self.server.cpu_seconds() - cpu
        if run["non_2xx"] or run["socket_errors"]:
            problem = problem or (f"{run['non_2xx']} non-2xx answers, socket errors: "
                                  f"{run['socket_errors']}")
        # The page is still right after the load (nothing cached went wrong).
        status, again = fetch(base, page["path"], cookie)
        problem = problem or (f"status {status} after the run" if status != 200
                              else page["check"](again))
        result = {
            "system": self.label, "path": page["path"],
            **{k: v for k, v in run.items() if k != "raw"},
            "server_cpu_ms": spent / max(run["requests"], 1) * 1e3,
            "statements": self.counts[name]["statements"],
            "python_calls": self.counts[name]["calls"],
            "bytes": len(body.encode()),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "ok": not problem, "problem": problem, "wrk": run["raw"],
        }
        print(f"[http] {self.label} {name}: {run['rps']:,.0f} req/s, p50 {run['p50_ms']:.2f} ms, "
              f"p99 {run['p99_ms']:.2f} ms, {result['server_cpu_ms']:.3f} ms CPU/request, "
              f"{result['statements']} statements, {result['python_calls']:,} Python calls, "
              f"client {run['client_cpu_share']:.2f}, load {load_before:.2f}"
              f"{'' if not problem else ', FAILED: ' + problem}", flush=True)
        return result


def table(results: dict) -> str:
    lines = [
        "| workload | system | requests/s | p50 ms | p99 ms | server CPU per request "
        "| SQL statements | Python calls | response bytes | client CPU share "
        "| load average (before → after) | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results["workloads"].items():
        for r in runs:
            lines.append(
                f"| {name} `{r['path']}` | {r['system']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['server_cpu_ms']:.3f} ms | {r['statements']} "
                f"| {r['python_calls']:,} | {r['bytes']:,} | {r['client_cpu_share']:.2f} "
                f"| {r['load_before']:.2f} → {r['load_after']:.2f} "
                f"| {'ok' if r['ok'] else r['problem']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="now")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per page")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per page")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--compare", metavar="REF",
                        help="also measure chatapp at this commit, alternating with the "
                             "current one (the same load for both)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare: alternations per page")
    parser.add_argument("--profile", action="store_true",
                        help="profile each page in-process instead of measuring it")
    parser.add_argument("--in-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        in_process(json.loads(args.in_process), args.profile)
        return 0

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="chatapp-http-") as folder:
        folder = Path(folder)
        systems = [System(f"now ({commit})", folder / "now", args)]
        if args.profile:
            return 0
        if args.compare:
            source = unpack(args.compare, folder / "older-source")
            systems.append(System(f"at {args.compare}", folder / "older", args, source))
        results = {"label": args.label, "commit": commit, "compare": args.compare,
                   "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                   "duration_s": args.duration, "connections": args.connections,
                   "messages_seeded": MESSAGES, "workloads": {}}
        failed = False
        try:
            for system in systems:
                system.start()
            for name in args.workloads:
                runs = results["workloads"][name] = []
                for _ in range(args.rounds if args.compare else 1):
                    for system in systems:
                        runs.append(system.measure(name, args))
                        failed |= not runs[-1]["ok"]
        finally:
            for system in systems:
                system.server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"http-{args.label}.json").write_text(json.dumps(results, indent=2) + "\n")
    heading = (f"# HTTP pages: {args.label}\n\ngit {results['commit']}, {results['started']}; "
               f"one gunicorn gevent worker on core 0, SQLite; wrk on core 1, "
               f"{args.connections} connections, {args.duration:g} s per page after "
               f"{args.warmup:g} s of warm-up; {MESSAGES} messages in the room"
               + (f"; alternating with chatapp at {args.compare}" if args.compare else "")
               + ".\n\n")
    (RESULTS / f"http-{args.label}.md").write_text(heading + table(results))
    print(table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
