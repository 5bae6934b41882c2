"""Images in messages: only real images are accepted, re-encoded, pushed live, served to members."""

from __future__ import annotations

import io
import re
import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import csrf_from, open_private_chat

IMAGE_LINK = re.compile(r'<a class="image" href="(/images/\d+)"[^>]*><img src="(/images/\d+/thumb)"')
COMPOSER_CLIENT_ID = re.compile(r'class="composer-image".*?name="client_id" value="([^"]+)"', re.S)
STORED_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}(-thumb)?\.(png|jpg|gif|webp)$")
HTML = b"<html><body><script>alert('pwned')</script></body></html>"

# What is checked here is files, Pillow and HTTP; the database engine matters only where an
# image message is stored and its membership looked up, so only those tests run on both.
pytestmark = pytest.mark.databases("sqlite")
BOTH_DATABASES = pytest.mark.databases("sqlite", "postgresql")


def picture(fmt: str, size=(1200, 900), **options) -> bytes:
    """A picture in the given format with some structure (not one flat colour)."""
    im = Image.new("RGB", size, (40, 90, 200))
    for x in range(0, size[0], 50):
        im.paste((250, 200, 20), (x, 0, x + 20, size[1]))
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def animated_gif(size=(1000, 500), frames=3) -> bytes:
    colours = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (200, 200, 0)]
    images = [Image.new("RGB", size, colours[i % len(colours)]) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of the given size: ~100 KB on disk, ~1 GB decoded."""
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def page_of(conversation_id: int) -> str:
    return "/" if conversation_id == 1 else f"/c/{conversation_id}"


def upload(person, conversation_id: int, data: bytes, filename="picture.png",
           content_type="image/png", caption="", client_id=None, token=None, page=True):
    """Send what the composer's image form sends (multipart, CSRF token, client id)."""
    html = person.get(page_of(conversation_id)).text if page else ""
    fields = {
        "csrf_token": csrf_from(html) if token is None else token,
        "client_id": client_id or COMPOSER_CLIENT_ID.search(html).group(1),
        "body": caption,
    }
    return person.http.post(
        f"{person.server.url}/c/{conversation_id}/images",
        data=fields,
        files={"image": (filename, data, content_type)},
        headers={"HX-Request": "true"},
    )


def image_urls(frame: str) -> tuple[str, str]:
    match = IMAGE_LINK.search(frame)
    assert match, frame
    return match.group(1), match.group(2)


def private_chat(person, peer) -> int:
    """Open the private chat with a peer; return its conversation id."""
    return open_private_chat(person.server, person.username, peer.username)


def stored_files(server) -> list[str]:
    root = server.tmp_path / "uploads"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert 'role="alert"' in response.text
    assert words in response.text, response.text


def assert_nothing_arrives(sock) -> None:
    assert not [f for f in sock.drain(0.5) if "<article" in f]


FORMATS = {
    "png": ("PNG", "image/png", lambda: picture("PNG")),
    "jpeg": ("JPEG", "image/jpeg", lambda: picture("JPEG", quality=90)),
    "gif": ("GIF", "image/gif", animated_gif),
    "webp": ("WEBP", "image/webp", lambda: picture("WEBP")),
}


@BOTH_DATABASES
def test_each_format_reaches_the_other_member_live_as_one_message(people):
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    for kind, (fmt, content_type, make) in FORMATS.items():
        seen = len(set(b.message_ids()))
        client_id = COMPOSER_CLIENT_ID.search(alice.get("/").text).group(1)
        caption = f"Look at this {kind}"

        response = upload(alice, 1, make(), f"holiday.{kind}", content_type, caption=caption,
                          client_id=client_id)

        # The acknowledgement is a fresh composer with a new client id.
        assert response.status_code == 200, response.text
        assert 'hx-target="#composer"' in response.text
        assert client_id not in response.text
        frame = b.wait_for(caption)
        assert 'alt="Image from alice"' in frame
        assert len(set(b.message_ids())) == seen + 1
        a.wait_for(caption)  # the sender sees it through the socket like any message

        original_url, thumb_url = image_urls(frame)
        original, thumb = bob.get(original_url), bob.get(thumb_url)
        assert original.status_code == thumb.status_code == 200
        assert original.headers["Content-Type"] == thumb.headers["Content-Type"] == content_type
        full = Image.open(io.BytesIO(original.content))
        small = Image.open(io.BytesIO(thumb.content))
        assert full.format == small.format == fmt
        assert max(full.size) > 800 and max(small.size) == 800
        if kind == "gif":  # still animated, original and thumbnail alike
            assert full.n_frames == small.n_frames == 3

        # Sending the same composer again (no acknowledgement seen) makes no second message.
        again = upload(alice, 1, make(), f"holiday.{kind}", content_type, caption=caption,
                       client_id=client_id)
        assert again.status_code == 200
        assert_nothing_arrives(b)
        assert alice.get("/").text.count(caption) == 1


def test_things_that_are_not_images_are_refused_and_change_nothing(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           b'<script>alert(1)</script></svg>')
    cases = [
        (svg, "cat.svg", "image/svg+xml"),
        (svg, "cat.png", "image/png"),
        (HTML, "cat.png", "image/png"),
        (b"just some text, honestly a picture", "cat.jpg", "image/jpeg"),
        (picture("PNG")[:400], "truncated.png", "image/png"),  # truncated
        (picture("JPEG")[:-900], "truncated.jpg", "image/jpeg"),
        (picture("BMP", size=(20, 20)), "cat.png", "image/png"),  # a real image, not allowed
    ]
    for data, name, content_type in cases:
        response = upload(alice, 1, data, name, content_type)
        assert response.status_code == 422, (name, response.text)
        assert 'role="alert"' in response.text
        assert "not an image" in response.text or "damaged or incomplete" in response.text
    assert_refused(upload(alice, 1, b"", "empty.png"), 400, "Choose an image")
    assert_refused(upload(alice, 1, picture("PNG"), token="forged"), 400, "Reload the page")
    assert_nothing_arrives(b)
    assert stored_files(alice.server) == []
    assert 'class="image"' not in alice.get("/").text


def test_html_appended_to_a_png_is_gone_from_the_stored_file(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    response = upload(alice, 1, picture("PNG", size=(400, 300)) + HTML, "innocent.png")
    assert response.status_code == 200, response.text
    original_url, thumb_url = image_urls(b.wait_for('class="image"'))
    served = bob.get(original_url).content
    assert b"<script" not in served and b"<html" not in served
    assert Image.open(io.BytesIO(served)).size == (400, 300)
    files = stored_files(alice.server)
    assert len(files) == 1  # small enough to be its own thumbnail
    for rel in files:
        assert b"<script" not in (alice.server.tmp_path / "uploads" / rel).read_bytes()


def worker_peak_rss_kb(server) -> int:
    """Peak resident memory of the server's gunicorn worker (VmHWM), in kB."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text()
    worker = children.split()[0]
    status = Path(f"/proc/{worker}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def test_a_30000_by_30000_png_is_refused_fast_without_decoding(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    bomb = huge_png(30000, 30000)  # 900 megapixels: ~1 GB if it were ever decoded
    assert len(bomb) < 200_000
    upload(alice, 1, picture("PNG", size=(900, 700)))  # warm up the image code paths
    b.wait_for('class="image"')
    html = alice.get("/").text
    token, client_id = csrf_from(html), COMPOSER_CLIENT_ID.search(html).group(1)
    before = worker_peak_rss_kb(alice.server)
    started = time.monotonic()
    response = upload(alice, 1, bomb, "bomb.png", token=token, client_id=client_id, page=False)
    elapsed = time.monotonic() - started
    assert_refused(response, 422, "too large: at most 40 megapixels")
    assert elapsed < 2.0
    assert worker_peak_rss_kb(alice.server) - before < 50_000  # kB
    # Just over the limit (49 megapixels), where Pillow would only warn: refused too.
    assert_refused(upload(alice, 1, huge_png(7000, 7000)), 422, "40 megapixels")
    assert_nothing_arrives(b)


def test_a_request_over_the_size_limit_gets_413_and_a_clear_error(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    eleven_mb = picture("PNG", size=(50, 50)) + b"\0" * (11 * 1024 * 1024)
    response = upload(alice, 1, eleven_mb, "big.png")
    assert_refused(response, 413, "too large: images can be at most 10 MB")

    # Without a Content-Length (chunked), the limit is enforced while reading.
    html = alice.get("/").text
    token, client_id = csrf_from(html), COMPOSER_CLIENT_ID.search(html).group(1)
    boundary = "chunkedboundary"

    def chunked_body():
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
               f'{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name="client_id"'
               f'\r\n\r\n{client_id}\r\n--{boundary}\r\nContent-Disposition: form-data; '
               f'name="image"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n').encode()
        for _ in range(11):
            yield b"\0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = alice.http.post(
        f"{alice.server.url}/c/1/images", data=chunked_body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_refused(response, 413, "too large")
    assert_nothing_arrives(b)
    assert stored_files(alice.server) == []


def test_limits_come_from_the_environment(server_factory, tmp_path):
    from conftest import Person

    server = server_factory(CHATAPP_MAX_IMAGE_PIXELS="10000", CHATAPP_MAX_UPLOAD_BYTES="100000")
    alice = Person(server, "alice").register()
    assert_refused(upload(alice, 1, picture("PNG", size=(200, 200))), 422, "0.01 megapixels")
    assert_refused(upload(alice, 1, b"\0" * 150_000), 413, "at most 97.7 KB")
    assert upload(alice, 1, picture("PNG", size=(100, 100))).status_code == 200


def test_gps_exif_is_gone_and_orientation_applied(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees
    exif[0x010F] = "SpyCamMaker"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 22.0, 1.5), 3: "E", 4: (4.0, 53.0, 2.0)})
    photo = picture("JPEG", size=(1600, 1000), exif=exif)
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the test photo has GPS

    assert upload(alice, 1, photo, "IMG_0001.jpg", "image/jpeg").status_code == 200
    original_url, thumb_url = image_urls(b.wait_for('class="image"'))
    for url in (original_url, thumb_url):
        served = bob.get(url).content
        im = Image.open(io.BytesIO(served))
        assert not im.getexif() and "exif" not in im.info
        assert b"Exif" not in served and b"SpyCamMaker" not in served
        assert im.height > im.width  # turned upright, as the orientation said
    assert Image.open(io.BytesIO(bob.get(original_url).content)).size == (1000, 1600)


@BOTH_DATABASES
def test_private_chat_images_are_served_to_its_two_members_only(people):
    alice, bob, carol = people("alice", "bob", "carol")
    chat = private_chat(alice, bob)
    b = bob.connect(chat)
    assert upload(alice, chat, picture("PNG"), "secret.png", caption="just us").status_code == 200
    original_url, thumb_url = image_urls(b.wait_for("just us"))

    for url in (original_url, thumb_url):
        response = bob.get(url)
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        assert "private" in response.headers["Cache-Control"]
        assert "public" not in response.headers["Cache-Control"]
        etag = response.headers["ETag"]
        again = bob.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and not again.content
        assert carol.get(url).status_code == 404
        assert alice.get(url).status_code == 200
        anonymous = bob.http.__class__().get(bob.server.url + url, allow_redirects=False)
        assert anonymous.status_code in (302, 401)
    assert carol.get("/images/999999").status_code == 404
    # Nor may carol post into their chat.
    carol_token = csrf_from(carol.get("/").text)
    assert upload_as(carol, chat, carol_token).status_code == 404
    assert_nothing_arrives(b)


def upload_as(person, conversation_id: int, token: str):
    return person.http.post(
        f"{person.server.url}/c/{conversation_id}/images",
        data={"csrf_token": token, "client_id": str(uuid.uuid4()), "body": ""},
        files={"image": ("x.png", picture("PNG", size=(20, 20)), "image/png")},
    )


def test_the_file_name_never_reaches_the_file_system_or_the_page(people):
    alice, bob = people("alice", "bob")
    b = bob.connect()
    escape = f"escaped-{uuid.uuid4().hex}"
    names = [
        f"../../../../../../{alice.server.tmp_path}/{escape}.png",
        f"..\\..\\..\\{escape}.png",
        f"/tmp/{escape}.png",
        f"..%2F..%2F{escape}.png",
        f'"><script>alert(1)</script>{escape}.png',
    ]
    for name in names:
        assert upload(alice, 1, picture("PNG", size=(64, 64)), name).status_code == 200
        b.wait_for('class="image"')
    files = stored_files(alice.server)
    assert len(files) == len(names)
    assert all(STORED_NAME.match(f) for f in files), files
    assert not list(alice.server.tmp_path.rglob(f"*{escape}*"))
    assert not Path(f"/tmp/{escape}.png").exists()
    page = bob.get("/").text
    assert escape not in page and "<script>alert" not in page
    assert not any(escape in frame for frame in b.frames)


@pytest.mark.browser
def test_attaching_an_image_in_the_browser(browser, people, tmp_path):
    from playwright.sync_api import expect

    alice, bob = people("alice", "bob")
    b = bob.connect()
    photo = tmp_path / "photo.png"
    photo.write_bytes(picture("PNG", size=(1000, 700)))
    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_bytes(b"these are my notes, not a picture")
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(alice.server.url + "/login/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(alice.password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("log", name="Messages")).to_be_visible()

        # Something that is not an image: a clear error in the page, nothing sent.
        page.get_by_label("Attach image").set_input_files(not_a_photo)
        page.get_by_role("button", name="Send image").click()
        expect(page.get_by_role("alert")).to_contain_text("not an image")

        # Hold the upload in flight to see the composer say that it is sending.
        held = []
        page.route("**/c/1/images", lambda route: held.append(route))
        page.get_by_label("Attach image").set_input_files(photo)
        page.get_by_label("Caption").fill("from the browser")
        page.get_by_role("button", name="Send image").click()
        expect(page.get_by_text("Sending…")).to_be_visible()
        deadline = time.monotonic() + 15
        while not held:  # bounded: a request that never comes fails here, not hangs
            assert time.monotonic() < deadline, "the upload request never reached the route"
            page.wait_for_timeout(20)
        held[0].continue_()

        b.wait_for("from the browser")
        link = page.get_by_role("link", name="Image from alice")
        expect(link).to_be_visible()
        expect(link.locator("img")).to_have_js_property("naturalWidth", 800)
        expect(page.get_by_text("Sending…")).to_be_hidden()
        # The acknowledgement: a fresh composer, the file and caption cleared, no error.
        expect(page.get_by_label("Caption")).to_have_value("")
        expect(page.get_by_label("Attach image")).to_have_value("")
        expect(page.locator("#composer-error")).to_be_empty()
    finally:
        context.close()
