"""Hostile images and uploads: bounded memory, no foreign bytes kept, quiet refusals."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap

import pytest
from PIL import Image, ImageCms

from conftest import ROOT, Person, free_port
from test_uploads import assert_refused, image_urls, picture, upload, worker_peak_rss_kb

from chatapp import imaging

# Files, Pillow and HTTP: the database engine plays no part here.
pytestmark = pytest.mark.databases("sqlite")


# -- hand-made GIFs ------------------------------------------------------------------------


def _gif_image_blocks(data: bytes) -> list[bytes]:
    """The image blocks (descriptor, tables, LZW data) of a GIF, in order."""
    flags = data[10]
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    blocks = []
    while data[pos:pos + 1] != b";":
        start, kind = pos, data[pos:pos + 1]
        if kind == b"!":
            pos += 2
        else:
            local = data[pos + 9]
            pos += 10 + ((3 << ((local & 7) + 1)) if local & 0x80 else 0) + 1
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
        if kind == b",":
            blocks.append(data[start:pos])
    return blocks


def _frame(size: tuple[int, int], colour: int) -> bytes:
    """One image block of the given size in one colour, LZW-compressed by Pillow."""
    im = Image.new("P", size, colour)
    im.putpalette([0, 0, 0, 255, 255, 255])
    out = io.BytesIO()
    im.save(out, "GIF")
    return _gif_image_blocks(out.getvalue())[0]


def growing_gif(big: tuple[int, int], frames: int) -> bytes:
    """A GIF whose screen and first frame are 1x1 while every later frame is `big`."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    delay = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"
    later = delay + _frame(big, 1)
    return screen + loop + delay + _frame((1, 1), 0) + later * frames + b";"


# -- 3. animated images ----------------------------------------------------------------------


def test_a_gif_whose_frames_outgrow_its_screen_decodes_a_bounded_number_of_pixels(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    hostile = growing_gif((2000, 2000), 40)  # 160 megapixels of frames behind a 1x1 screen
    assert len(hostile) < 200_000
    assert upload(alice, 1, picture("PNG", size=(900, 700))).status_code == 200  # warm up
    b.wait_for('class="image"')
    before = worker_peak_rss_kb(alice.server)

    response = upload(alice, 1, hostile, "tiny.gif", "image/gif", caption="tiny")

    after = worker_peak_rss_kb(alice.server)
    print(f"worker peak RSS {before // 1024} MB -> {after // 1024} MB")
    assert response.status_code == 200, response.text
    original_url, _ = image_urls(b.wait_for("tiny"))
    stored = Image.open(io.BytesIO(bob.get(original_url).content))
    # Frames are cut to the screen the header promised, as browsers show them, and no
    # more pixels are decoded in all than one image at the limit (40 megapixels).
    assert stored.size == (1, 1)
    assert stored.n_frames <= 1 + 40_000_000 // (2000 * 2000)
    assert after - before < 200_000  # kB; 40 frames of 2000x2000 took 600 MB more


def test_a_gif_frame_past_the_pixel_limit_is_refused(server_factory):
    server = server_factory(CHATAPP_MAX_IMAGE_PIXELS="1000000")
    alice = Person(server, "alice").register()
    response = upload(alice, 1, growing_gif((1100, 1000), 2), "tiny.gif", "image/gif")
    assert_refused(response, 422, "too large: at most 1 megapixels")


def animation(fmt: str, size: tuple[int, int], frames: int) -> bytes:
    """An animated PNG or WebP whose frames all differ."""
    images = [Image.new("RGB", size, (i * 7 % 256, 90, 200)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_apng_and_animated_webp_decode_no_more_pixels_than_one_image_at_the_limit(fmt):
    processed = imaging.process(io.BytesIO(animation(fmt, (500, 400), 30)), 1_000_000)
    assert processed.frames == 5  # 5 x 200,000 pixels: the budget, and no frame more
    stored = Image.open(io.BytesIO(processed.original.data))
    assert stored.n_frames == 5 and stored.size == (500, 400)


def test_decodes_wait_their_turn_without_stopping_the_worker(tmp_path):
    """Under gevent (as in wsgi.py) at most two decodes run at once and greenlets keep running.

    Each decode runs in a child process: it writes down when it ran, and the overlap of
    those spans is counted here.
    """
    spans = tmp_path / "spans"
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import time
        import gevent
        from gevent.monkey import get_original
        from chatapp import uploads

        real_sleep = get_original("time", "sleep")
        state = {{"ticks": 0}}

        def decode():
            began = time.monotonic()
            real_sleep(0.2)
            with open({str(spans)!r}, "a") as f:
                f.write(f"{{began}} {{time.monotonic()}}\\n")

        def upload():
            with uploads._decoding:
                uploads._off_the_loop(decode)

        def ticker():
            while True:
                state["ticks"] += 1
                gevent.sleep(0.01)

        tick = gevent.spawn(ticker)
        gevent.joinall([gevent.spawn(upload) for _ in range(6)])
        tick.kill()
        print(state["ticks"])
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    ticks = int(done.stdout.split()[0])
    ran = [tuple(map(float, line.split())) for line in spans.read_text().splitlines()]
    assert len(ran) == 6
    most = max(sum(b <= at < e for b, e in ran) for at, _ in ran)
    assert most == 2
    assert ticks > 10  # the loop ran while the decodes did


# -- 8. colour profiles, quiet refusals, rate without Redis -----------------------------------


JUNK = b"JUNKPROFILE:" + b"arbitrary text carried byte for byte " * 1650  # ~60 KB


def test_a_jpeg_profile_of_junk_is_not_stored(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    photo = picture("JPEG", size=(1200, 900), icc_profile=JUNK)
    assert Image.open(io.BytesIO(photo)).info["icc_profile"] == JUNK

    assert upload(alice, 1, photo, "photo.jpg", "image/jpeg").status_code == 200

    for url in image_urls(b.wait_for('class="image"')):
        served = bob.get(url).content
        assert b"JUNKPROFILE" not in served and b"byte for byte" not in served
        assert "icc_profile" not in Image.open(io.BytesIO(served)).info
    uploads = alice.server.tmp_path / "uploads"
    for path in (p for p in uploads.rglob("*") if p.is_file()):
        assert b"JUNKPROFILE" not in path.read_bytes()


def test_a_real_profile_is_applied_to_the_pixels_then_dropped():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("JPEG", "PNG", "WEBP"):
        options = {"quality": 95} if fmt != "PNG" else {}
        data = picture(fmt, size=(300, 200), icc_profile=srgb, **options)
        processed = imaging.process(io.BytesIO(data), 40_000_000)
        stored = Image.open(io.BytesIO(processed.original.data))
        assert "icc_profile" not in stored.info, fmt
        red, green, blue = stored.convert("RGB").getpixel((30, 100))  # a blue stripe
        assert abs(red - 40) < 8 and abs(green - 90) < 8 and abs(blue - 200) < 8, fmt


def test_a_refused_upload_logs_one_line_and_no_traceback(people):
    alice = people("alice")
    response = upload(alice, 1, b"plain text pretending to be a picture", "cat.png")
    assert_refused(response, 422, "not an image")
    assert upload(alice, 1, picture("PNG", size=(40, 40))).status_code == 200
    log = alice.server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "Refused" not in log
    assert sum("refused (422)" in line for line in log.splitlines()) == 1


def test_uploads_work_and_are_counted_when_redis_is_down(server_factory):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    first = server_factory(REDIS_URL=down, CHATAPP_MESSAGE_RATE="3/minute")
    alice = Person(first, "alice").register()
    first.stop()
    # A fresh worker, where no login or registration has found Redis gone yet: someone
    # still signed in sends images.
    server = server_factory(REDIS_URL=down, CHATAPP_MESSAGE_RATE="3/minute")
    again = Person(server, "alice")
    again.http.cookies.update(alice.http.cookies)
    for _ in range(3):
        assert upload(again, 1, picture("PNG", size=(40, 40))).status_code == 200
    assert_refused(upload(again, 1, picture("PNG", size=(40, 40))), 429, "too fast")
    assert "Traceback" not in server.log()
