"""The systems under test: their virtual environments, how to start them, what they cost.

Every server runs pinned to core 0 (taskset); the load client runs on core 1. CPU and
memory are read from /proc for the server's whole process tree (a gunicorn master and
its worker, or daphne alone).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
SERVER_CORE = "0"
CLIENT_CORE = 1
SECRET = "bench-secret-key-not-for-production"


def ensure_venv(name: str, requirements: Path) -> Path:
    """A virtual environment with these requirements, made once (again when they change)."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    print(f"[bench] creating the {name} environment in {venv}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                   check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
                   check=True)
    stamp.write_text(digest)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


CLK = os.sysconf("SC_CLK_TCK")


class Server:
    """One system under test, running on core 0."""

    def __init__(self, system: str, workdir: Path, env: dict | None = None, workers: int = 1,
                 config: str = "gunicorn.conf.py"):
        self.system = system
        self.config = config  # chatapp's gunicorn settings (bench/loop_probe.py adds a probe)
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.workers = workers
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / f"{system}-{self.port}.log"
        self.conversations: list[int] = [1]

    # -- lifecycle -----------------------------------------------------------------------

    def command(self) -> tuple[list[str], Path, dict]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATAPP_")}
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        env.update(self.extra_env)
        if self.system == "chatapp":
            env.update(
                SECRET_KEY=SECRET,
                WEB_CONCURRENCY=str(self.workers),
                CHATAPP_INSTANCE_PATH=str(self.workdir / "instance"),
                CHATAPP_UPLOAD_DIR=str(self.workdir / "uploads"),
                # The harness sends faster than a person may; the limit is not under test.
                CHATAPP_MESSAGE_RATE="1000000/second",
                CHATAPP_MAX_SOCKETS_PER_USER="100000",  # a few accounts hold every tab
            )
            env.setdefault("DATABASE_URL", f"sqlite:///{self.workdir / 'chatapp.sqlite3'}")
            py = chatapp_python()
            return ([py, "-m", "gunicorn", "-c", self.config,
                     "--bind", f"127.0.0.1:{self.port}", "--backlog", "4096"], ROOT, env)
        name = "floor" if self.system in ("floor-nagle", "floor-single") else self.system
        peer = BENCH / "peers" / name
        py = str(ensure_venv(name, peer / "requirements.txt"))
        env["PEER_DB"] = str(self.workdir / f"{name}.sqlite3")
        if self.system == "floor":
            return [py, "server.py", str(self.port)], peer, env
        if self.system == "floor-nagle":  # the floor without TCP_NODELAY (docs/benchmarks.md)
            return [py, "server.py", str(self.port), "--nagle"], peer, env
        if self.system == "floor-single":  # the floor writing each message on its own
            return [py, "server.py", str(self.port), "--single"], peer, env
        if self.system == "socketio":
            return ([py, "-m", "gunicorn", "-k", "gevent", "-w", "1",
                     "--worker-connections", "20000", "--backlog", "4096",
                     "-b", f"127.0.0.1:{self.port}", "server:app"], peer, env)
        if self.system == "channels":
            env["DJANGO_SETTINGS_MODULE"] = "settings"
            subprocess.run([py, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
                           cwd=peer, env={**env, "PYTHONPATH": str(peer)}, check=True)
            return ([py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                     "--proxy-headers", "asgi:application"], peer,
                    {**env, "PYTHONPATH": str(peer)})
        raise ValueError(self.system)

    def seed(self, users: int, pairs: int, room: bool = False) -> None:
        """Create the accounts (private chats, a members-only room) the run logs in as."""
        if self.system != "chatapp":
            return
        _, _, env = self.command()
        out = subprocess.run([chatapp_python(), str(BENCH / "seed_chatapp.py"), str(users),
                              str(pairs), "1" if room else "0"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True)
        self.conversations = [int(x) for x in out.stdout.split()]

    def start(self) -> Server:
        cmd, cwd, env = self.command()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", SERVER_CORE, *cmd], cwd=cwd, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.system} exited:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).read()
                break
            except OSError as exc:
                if getattr(exc, "code", None):  # any HTTP answer means it is up
                    break
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.system} did not start:\n{self.log()[-3000:]}")
        time.sleep(0.5)  # let every worker finish booting
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- costs -----------------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole server tree so far."""
        total = 0
        for pid in _tree(self.process.pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total / CLK

    def rss_bytes(self) -> int:
        """Resident memory of the whole server tree."""
        total = 0
        for pid in _tree(self.process.pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total


def chatapp_python() -> str:
    """chatapp's interpreter: CHATAPP_PYTHON, else the project's .venv (make setup)."""
    return os.environ.get("CHATAPP_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
