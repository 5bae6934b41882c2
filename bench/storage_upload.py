"""Does a 10 MB image upload stall other people? `python bench/storage_upload.py [--storage s3|local]`

chatapp (one gunicorn gevent worker, on core 0 like every bench server) keeps its images
in a bucket or a folder. The bucket is moto's S3 server on loopback (no MinIO package is
available on these machines), run on the client's core 1: in production the store is
another machine. 500 sockets listen to the public room while one sender posts 20
stamped messages a second (bench/loadclient.py measures every delivery). Phases
alternate: without an upload, then with one ~10 MB image upload (parsed, decoded,
re-encoded and written to the store) starting a second in. The p99 of the phases with
the upload is compared with that of the phases without (the bar: within 20%).

Results: printed, and bench/results/storage-upload-<storage>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BENCH, CLIENT_CORE, Server, chatapp_python, ensure_venv, free_port  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def ten_megabyte_png(path: Path) -> bytes:
    """A PNG of noise just under the 10 MiB upload limit (noise does not compress)."""
    subprocess.run([chatapp_python(), "-c", (
        "import io, os, sys; from PIL import Image; side = 1810; "
        "im = Image.frombytes('RGB', (side, side), os.urandom(side * side * 3)); "
        f"im.save({str(path)!r}, 'PNG', compress_level=1)")], check=True)
    return path.read_bytes()


def start_moto(workdir: Path, nice: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "ab")
    process = subprocess.Popen(
        ["nice", "-n", str(nice), "taskset", "-c", str(CLIENT_CORE),
         chatapp_python(), "-m", "moto.server",
         "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **CREDENTIALS}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    subprocess.run([chatapp_python(), "-c", (
        "import boto3, time\n"
        f"c = boto3.client('s3', endpoint_url={url!r}, region_name='us-east-1')\n"
        "for _ in range(100):\n"
        "    try:\n        c.create_bucket(Bucket='bench'); break\n"
        "    except Exception: time.sleep(0.2)\n")],
        env={**os.environ, **CREDENTIALS}, check=True)
    return process, url


async def upload(client, username: str, picture: bytes) -> tuple[float, float]:
    """What the composer's image form sends; when it started and seconds until the answer
    (time.monotonic, the machine's clock)."""
    import aiohttp

    http = client.https[username]
    form = aiohttp.FormData()
    form.add_field("csrf_token", client.sessions[username]["csrf"])
    form.add_field("client_id", str(uuid.uuid4()))
    form.add_field("body", "")
    form.add_field("image", picture, filename="big.png", content_type="image/png")
    started = time.monotonic()
    async with http.post(client.adapter.base_url + "/c/1/images", data=form,
                         headers={"HX-Request": "true"}) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"upload answered {r.status}: {text[:300]}")
    return started, time.monotonic() - started


def loop_stalls(probe: Path, began: float, ended: float) -> dict:
    """The server's event-loop stalls (over 2 ms) between two moments of the machine's clock."""
    late = []
    if probe.exists():
        for line in probe.read_text().splitlines():
            at, ms = (float(x) for x in line.split())
            if began <= at <= ended:
                late.append(ms)
    return {"max_ms": max(late, default=0.0), "largest_ms": sorted(late)[-5:][::-1],
            "over_10ms": sum(ms > 10 for ms in late),
            "total_ms": round(sum(late), 1)}


def worker_cpu(server) -> tuple[float, float, float]:
    """CPU seconds of the worker's event-loop thread, of its reaped children (the
    decoding processes), and the loop thread's share of the first spent in the kernel
    (from /proc)."""
    from servers import CLK

    master = server.process.pid  # taskset exec'd gunicorn's master
    with open(f"/proc/{master}/task/{master}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    loop = children = kernel = 0.0
    for pid in workers[:1]:  # gunicorn's one worker
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        loop = (int(fields[11]) + int(fields[12])) / CLK
        kernel = int(fields[12]) / CLK
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        children = (int(fields[13]) + int(fields[14])) / CLK
    return loop, children, kernel


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def run(args) -> dict:
    from loadclient import LoadClient

    workdir = Path(tempfile.mkdtemp(prefix="chatapp-bench-storage-"))
    picture = ten_megabyte_png(workdir / "big.png")
    env = {"CHATAPP_SEND_QUEUE_SIZE": "4096"}
    moto = None
    if args.storage == "s3":
        moto, url = start_moto(workdir, args.store_nice)
        env.update(CREDENTIALS, CHATAPP_STORAGE="s3", CHATAPP_S3_BUCKET="bench",
                   CHATAPP_S3_ENDPOINT_URL=url, CHATAPP_S3_REGION="us-east-1",
                   CHATAPP_S3_TIMEOUT="30")
    users = [f"bench{i:05d}" for i in range(12)]
    probe = workdir / "loop-probe.txt"
    if args.probe:
        env["CHATAPP_BENCH_LOOP_PROBE"] = str(probe)
    server = Server("chatapp", workdir, env=env,
                    config="bench/loop_probe.py" if args.probe else "gunicorn.conf.py")
    server.seed(len(users), 0)
    server.start()
    try:
        client = LoadClient("chatapp", server.url)
        await client.login(users)
        sender = await client.open_tab(users[0], 1, listener=False)
        tabs, secs = await client.open_tabs([(users[2 + i % 10], 1) for i in range(args.listeners)])
        print(f"{len(tabs)} listeners open in {secs:.1f} s; {args.rate:g} msg/s; upload of "
              f"{len(picture) / 1e6:.1f} MB to {args.storage}", flush=True)
        count = int(args.rate * args.seconds)
        await client.send_stream(sender, args.rate, count // 2, phase=0)  # warm-up
        await asyncio.sleep(2)
        phases = []
        for repeat in range(args.repeats):
            for with_upload in (False, True):
                phase = len(phases) + 1
                client.recorder.start(phase)
                began = time.monotonic()
                cpu_before = worker_cpu(server)
                task = None
                if with_upload:
                    async def later():
                        await asyncio.sleep(1.0)
                        return await upload(client, users[1], picture)
                    task = asyncio.ensure_future(later())
                await client.send_stream(sender, args.rate, count, phase)
                upload_began, took = (await task) if task else (None, None)
                await asyncio.sleep(2)  # the last deliveries
                lat = [x / 1e6 for x in client.recorder.latencies]
                cpu_after = worker_cpu(server)
                loop_cpu = round(cpu_after[0] - cpu_before[0], 2)
                child_cpu = round(cpu_after[1] - cpu_before[1], 2)
                loop_kernel = round(cpu_after[2] - cpu_before[2], 2)
                stalls = loop_stalls(probe, began, time.monotonic()) if args.probe else None
                if args.probe and with_upload:  # the stalls while the upload was in flight
                    stalls["during_upload"] = loop_stalls(probe, upload_began, upload_began + took)
                phases.append({"upload": with_upload, "upload_seconds": took,
                               "expected": count * len(tabs), "delivered": len(lat),
                               "p50_ms": round(statistics.median(lat), 2),
                               "p99_ms": round(p99(lat), 2),
                               "loadavg": round(os.getloadavg()[0], 2),
                               "loop_cpu_s": loop_cpu, "loop_kernel_cpu_s": loop_kernel,
                               "decoding_cpu_s": child_cpu,
                               **({"loop_stalls": stalls} if stalls else {}),
                               "latencies": lat})
                print(f"  phase {phase} upload={with_upload}: {len(lat)}/{count * len(tabs)} "
                      f"delivered, p50 {statistics.median(lat):.1f} ms, p99 {p99(lat):.1f} ms"
                      + (f", upload took {took:.2f} s" if took else "")
                      + f", load {os.getloadavg()[0]:.1f}, loop CPU {loop_cpu:.2f} s "
                      f"({loop_kernel:.2f} kernel), "
                      f"decoding CPU {child_cpu:.2f} s"
                      + (f", loop stalls {stalls}" if stalls else ""), flush=True)
        await client.close()
    finally:
        server.stop()
        if moto:
            os.killpg(moto.pid, 15)
            moto.wait()
    summary = {}
    for with_upload in (False, True):
        lat = [x for p in phases if p["upload"] == with_upload for x in p["latencies"]]
        summary["with_upload" if with_upload else "without"] = {
            "delivered": len(lat), "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(p99(lat), 2)}
    for p in phases:
        del p["latencies"]
    ratio = summary["with_upload"]["p99_ms"] / summary["without"]["p99_ms"]
    # Medians of the phases' own p99s: one phase spoiled by the machine's other work moves
    # a median less than it moves the p99 of all the phases' deliveries pooled.
    medians = {kind: statistics.median(p["p99_ms"] for p in phases if p["upload"] == up)
               for kind, up in (("without", False), ("with_upload", True))}
    median_ratio = medians["with_upload"] / medians["without"]
    print(json.dumps(summary), f"p99 with/without upload = {ratio:.2f}; median of phase p99s "
          f"{medians['with_upload']:.1f} / {medians['without']:.1f} ms = {median_ratio:.2f}",
          flush=True)
    return {"storage": args.storage, "listeners": args.listeners, "rate": args.rate,
            "seconds": args.seconds, "repeats": args.repeats, "upload_bytes": len(picture),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "store_nice": args.store_nice if args.storage == "s3" else None,
            "priority": args.priority,
            "phases": phases, **summary, "p99_ratio": round(ratio, 3),
            "median_phase_p99_ms": medians, "median_phase_p99_ratio": round(median_ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=["s3", "local"], default="s3")
    parser.add_argument("--listeners", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe", action="store_true",
                        help="log the server's event-loop stalls (bench/loop_probe.py)")
    parser.add_argument("--store-nice", type=int, default=10,
                        help="CPU priority of the S3 server on the client's core (0-19)")
    parser.add_argument("--priority", type=int, default=0,
                        help="nice value of the server, the client and the S3 server (negative "
                             "needs root): on a machine shared with other work, -10 keeps that "
                             "work from preempting them; the decoding child still lowers itself")
    parser.add_argument("--out",
                        help="results file (default bench/results/storage-upload-<storage>.json)")
    args = parser.parse_args()
    client_python = ensure_venv("client", BENCH / "requirements.txt")
    if Path(sys.prefix).resolve() != client_python.parent.parent.resolve():
        os.execv(str(client_python), [str(client_python), *sys.argv])
    os.sched_setaffinity(0, {CLIENT_CORE})
    if args.priority:
        os.setpriority(os.PRIO_PROCESS, 0, args.priority)  # inherited by the server and moto
    result = asyncio.run(run(args))
    out = Path(args.out) if args.out else BENCH / "results" / f"storage-upload-{args.storage}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
