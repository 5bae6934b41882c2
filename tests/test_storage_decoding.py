"""Decoding an upload in a child process (uploads._off_the_loop under gevent, as in wsgi.py).

The event loop's thread shares no lock with the decode, so a 10 MB image does not stall
other people's sockets (bench/storage_upload.py measures that; these tests check that the
child answers exactly what decoding here would, and that its failures are contained).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

from PIL import Image

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import io, json, os, pathlib, signal, sys
    from PIL import Image
    from chatapp import imaging, uploads

    def photo():
        im = Image.new("RGB", (1200, 900), (200, 30, 40))
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated: the re-encoding turns it upright and drops EXIF
        exif[0x010F] = "SecretCam"
        out = io.BytesIO()
        im.save(out, "JPEG", exif=exif.tobytes())
        return out.getvalue()

    def outcome(fn, *args):
        try:
            return ["ok", uploads._off_the_loop(fn, *args)]
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    def killed():
        os.kill(os.getpid(), signal.SIGKILL)

    def broken():
        raise KeyError("not a refusal")

    listening = __import__("socket").create_server(("127.0.0.1", 0))  # like gunicorn's
    def no_fork():  # the machine is out of processes: that upload is refused with a 503
        real, os.fork = os.fork, lambda: (_ for _ in ()).throw(OSError(11, "no processes"))
        try:
            return outcome(sum, [1]) + [len(os.listdir("/proc/self/fd"))]
        finally:
            os.fork = real

    data = photo()
    here = imaging.process(io.BytesIO(data), 40_000_000)
    there = uploads._off_the_loop(imaging.process, io.BytesIO(data), 40_000_000)
    print(json.dumps({
        "parent": os.getpid(),
        "child": uploads._off_the_loop(os.getpid),
        "same": here == there,
        "size": [there.original.width, there.original.height],
        "exif_left": b"SecretCam" in there.original.data + there.thumb.data,
        "not_an_image": outcome(imaging.process, io.BytesIO(b"<svg/>"), 40_000_000),
        "killed": outcome(killed),
        "broken": outcome(broken),
        "foreign_class": outcome(pathlib.Path, "/etc/passwd"),
        "after": uploads._off_the_loop(sum, [1, 2, 3]),
        "parent_fds": len(os.listdir("/proc/self/fd")),
        "child_fds": uploads._off_the_loop(lambda: os.listdir("/proc/self/fd")),
        "no_fork": no_fork(),
    }))
""")


def uploads_module():
    from chatapp import uploads

    return uploads


def run_under_gevent() -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_child_decodes_exactly_as_the_worker_would_and_contains_its_failures():
    seen = run_under_gevent()
    # Decoded in another process, with the same answer as decoding here.
    assert seen["child"] != seen["parent"]
    assert seen["same"] is True
    assert seen["size"] == [900, 1200]  # turned upright from its EXIF orientation
    assert seen["exif_left"] is False
    # A refusal crosses over as the same refusal, with its message.
    assert seen["not_an_image"][0] == "Refused"
    assert "not an image" in seen["not_an_image"][1]
    # A child killed (out of memory, say) refuses that upload; the worker carries on.
    assert seen["killed"][0] == "Refused"
    assert "damaged" in seen["killed"][1]
    # An unexpected error is an error (a 500), not a refusal.
    assert seen["broken"][0] == "RuntimeError"
    assert "KeyError" in seen["broken"][1]
    # The answer may name only the classes a decode returns.
    assert seen["foreign_class"][0] == "UnpicklingError"
    assert seen["after"] == 6
    # The child keeps open only standard input and output, its answer socket (and the
    # folder being listed): none of the worker's sockets or files.
    assert len(seen["child_fds"]) == 5 < seen["parent_fds"]
    # No process to decode in: a 503 refusal, and no socket left open behind it.
    assert seen["no_fork"][:2] == ["Refusal", uploads_module().DECODER_BUSY]
    assert seen["no_fork"][2] == seen["parent_fds"]


def test_without_gevent_the_decode_runs_in_this_process():
    from chatapp import imaging, uploads

    out = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(out, "PNG")
    import os

    assert uploads._off_the_loop(os.getpid) == os.getpid()
    processed = uploads._off_the_loop(imaging.process, io.BytesIO(out.getvalue()), 1_000_000)
    assert (processed.original.width, processed.original.height) == (40, 30)


def test_a_large_body_is_parsed_whole_while_handing_the_loop_back_between_pieces():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from chatapp.cooperative import READ_SLICE, CooperativeInput

    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB
    builder = EnvironBuilder(method="POST", data={
        "caption": "hi", "image": (io.BytesIO(payload), "big.png", "image/png")})
    environ = builder.get_environ()
    builder.close()
    pauses = []
    body = environ["wsgi.input"]
    environ["wsgi.input"] = CooperativeInput(body, pause=lambda: pauses.append(1))
    request = Request(environ)
    try:
        assert request.form["caption"] == "hi"
        assert request.files["image"].read() == payload
    finally:
        request.close()
        body.close()
    assert len(pauses) >= len(payload) // READ_SLICE - 1
