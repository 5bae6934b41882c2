"""Does a 10 MB image upload stall other people? `python bench/storage_upload.py [--storage s3]`

One gunicorn gevent worker (as in production) keeps images in a bucket (moto's S3 server
on loopback, as in tests/test_storage.py: no MinIO package is available here) or in a
folder. 500 sockets listen to the public room while one sender posts 20 messages a second
carrying their send time; each listener records how long every message took to arrive.
Phases alternate: without an upload, then with one 10 MB image upload (decoded, re-encoded,
and written to the store) starting a second in. The p99 of the phases with the upload is
compared with the p99 of those without (the issue's bar: within 20%).

Results are printed and written to bench/results/storage-upload-<storage>.json.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import websocket  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from live import LiveServer, Person, csrf_from  # noqa: E402
from storage_service import MotoServer  # noqa: E402

STAMP = re.compile(r"bench-(\d+)-(\d+)")
COMPOSER_CLIENT_ID = re.compile(r'class="composer-image".*?name="client_id" value="([^"]+)"', re.S)


def ten_megabyte_png() -> bytes:
    """A PNG of noise just under the 10 MiB upload limit (noise does not compress)."""
    from PIL import Image

    side = 1810
    im = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=1)
    return out.getvalue()


def listen(server: LiveServer, cookie: str, latencies: dict, stop) -> None:
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/ws/1", header=[f"Cookie: {cookie}"], origin=server.url,
        timeout=30,
    )
    try:
        while not stop.is_set():
            frame = ws.recv()
            now = time.monotonic_ns()
            for phase, sent in STAMP.findall(frame):
                latencies.setdefault(int(phase), []).append((now - int(sent)) / 1e6)
    except Exception:  # noqa: BLE001 - closed at the end
        pass
    finally:
        ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=["s3", "local"], default="s3")
    parser.add_argument("--listeners", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="chatapp-bench-storage-"))
    moto = None
    env = {
        "CHATAPP_MESSAGE_RATE": "100000/second",
        "CHATAPP_MAX_SOCKETS_PER_USER": str(args.listeners + 10),
        "CHATAPP_SEND_QUEUE_SIZE": "4096",
    }
    if args.storage == "s3":
        moto = MotoServer(work).start()
        env.update(moto.env_for(moto.new_bucket()))
    server = LiveServer(work, f"sqlite:///{work / 'bench.sqlite3'}", **env)
    server.migrate()
    server.start()
    try:
        listener, sender, uploader = (Person(server, n).register() for n in ("lis", "sender", "uploader"))
        latencies: dict[int, list[float]] = {}
        stop = gevent.event.Event()
        cookie = listener.cookie_header()
        listeners = [gevent.spawn(listen, server, cookie, latencies, stop) for _ in range(args.listeners)]
        gevent.sleep(5)
        sock = sender.connect()
        picture = ten_megabyte_png()
        print(f"{args.listeners} listeners, {args.rate:g} msg/s, upload of {len(picture) / 1e6:.1f} MB "
              f"to {args.storage}", flush=True)
        phases = []
        for repeat in range(args.repeats):
            for with_upload in (False, True):
                phase = len(phases)
                upload_seconds = None

                def do_upload():
                    nonlocal upload_seconds
                    html = uploader.get("/").text
                    started = time.monotonic()
                    response = uploader.http.post(
                        f"{server.url}/c/1/images",
                        data={"csrf_token": csrf_from(html), "body": "",
                              "client_id": COMPOSER_CLIENT_ID.search(html).group(1)},
                        files={"image": ("big.png", picture, "image/png")},
                        headers={"HX-Request": "true"}, timeout=120,
                    )
                    assert response.status_code == 200, response.text[:300]
                    upload_seconds = time.monotonic() - started

                up = gevent.spawn_later(1.0, do_upload) if with_upload else None
                start = time.monotonic()
                sent = 0
                while time.monotonic() - start < args.seconds:
                    sock.say(f"bench-{phase}-{time.monotonic_ns()}")
                    sent += 1
                    gevent.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
                if up is not None:
                    up.join()
                gevent.sleep(2)  # the last messages arrive
                phases.append({"upload": with_upload, "upload_seconds": upload_seconds, "sent": sent})
                got = sorted(latencies.get(phase, []))
                p99 = got[int(len(got) * 0.99) - 1] if got else None
                print(f"  phase {phase} upload={with_upload}: {len(got)} deliveries, "
                      f"p50 {statistics.median(got):.1f} ms, p99 {p99:.1f} ms"
                      + (f", upload took {upload_seconds:.2f} s" if upload_seconds else ""), flush=True)
        stop.set()
        sock.close()
        summary = {}
        for with_upload in (False, True):
            got = sorted(x for i, p in enumerate(phases) if p["upload"] == with_upload
                         for x in latencies.get(i, []))
            summary["with_upload" if with_upload else "without"] = {
                "deliveries": len(got),
                "p50_ms": round(statistics.median(got), 2),
                "p99_ms": round(got[int(len(got) * 0.99) - 1], 2),
            }
        ratio = summary["with_upload"]["p99_ms"] / summary["without"]["p99_ms"]
        result = {"storage": args.storage, "listeners": args.listeners, "rate": args.rate,
                  "seconds": args.seconds, "repeats": args.repeats, "upload_bytes": len(picture),
                  "phases": phases, **summary, "p99_ratio": round(ratio, 3), "cpus": os.cpu_count()}
        print(json.dumps(summary), f"p99 with/without = {ratio:.2f}", flush=True)
        out = ROOT / "bench" / "results" / f"storage-upload-{args.storage}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        gevent.killall(listeners, timeout=5)
    finally:
        server.stop()
        if moto:
            moto.stop()


if __name__ == "__main__":
    main()
