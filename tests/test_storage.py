"""Images on object storage (CHATAPP_STORAGE=s3), against a real S3 HTTP endpoint on loopback.

No MinIO package is available on these machines, so the S3 endpoint is moto's standalone
server (moto[server], a dev dependency) started by these tests as a subprocess on a free
port (tests/storage_service.py). Without it the tests skip, or fail when
CHATAPP_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import Person, csrf_from, open_private_chat
from storage_service import MotoServer
from test_uploads import COMPOSER_CLIENT_ID, IMAGE_LINK, STORED_NAME, assert_refused, image_urls, picture, upload

pytestmark = pytest.mark.databases("sqlite")
BOTH_DATABASES = pytest.mark.databases("sqlite", "postgresql")
STORE_DOWN = "Images cannot be stored right now"


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto) -> str:
    return moto.new_bucket()


@pytest.fixture
def s3_env(moto, bucket, monkeypatch) -> dict:
    """The environment of an in-process app keeping its images in a fresh bucket."""
    env = moto.env_for(bucket)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def post_image(client, data: bytes, caption: str = ""):
    """The composer's image form, sent by the in-process client of a logged-in person."""
    html = client.get("/").get_data(as_text=True)
    return client.post(
        "/c/1/images",
        data={"csrf_token": csrf_from(html), "client_id": COMPOSER_CLIENT_ID.search(html).group(1),
              "body": caption, "image": (io.BytesIO(data), "picture.png")},
        headers={"HX-Request": "true"}, content_type="multipart/form-data",
    )


def image_ids(app) -> list[int]:
    from chatapp.extensions import db
    from chatapp.models import Message

    with app.app_context():
        ids = list(db.session.scalars(db.select(Message.image_id).where(Message.image_id.is_not(None))))
        db.session.remove()
        return ids


# -- upload and serve --------------------------------------------------------------------------


@BOTH_DATABASES
def test_images_live_in_the_bucket_and_are_served_to_members_only(server_factory, moto, bucket):
    server = server_factory(**moto.env_for(bucket))
    alice, bob, carol = (Person(server, name).register() for name in ("alice", "bob", "carol"))
    b = bob.connect()
    assert upload(alice, 1, picture("PNG"), caption="in the bucket").status_code == 200
    original, thumb = image_urls(b.wait_for("in the bucket"))

    objects = moto.objects(bucket)
    assert len(objects) == 2
    assert all(k.startswith("chatapp/") and STORED_NAME.match(k.removeprefix("chatapp/")) for k in objects)
    assert local_files(server.tmp_path / "uploads") == {}  # nothing on this machine's disk
    for url in (original, thumb):
        response = bob.get(url)
        assert response.status_code == 200 and response.content in objects.values()
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "private, max-age=86400"
        again = bob.get(url, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and not again.content

    chat = open_private_chat(server, "alice", "carol")
    c = carol.connect(chat)
    assert upload(alice, chat, picture("JPEG"), "s.jpg", "image/jpeg", caption="just us").status_code == 200
    for url in image_urls(c.wait_for("just us")):
        assert carol.get(url).status_code == 200
        assert bob.get(url).status_code == 404  # no member: as if there were no such image
    # Streamed through the app: no page names the bucket, let alone a signed URL to it.
    for person, page in ((bob, "/"), (carol, f"/c/{chat}")):
        html = person.get(page).text
        assert moto.url not in html and "X-Amz" not in html


@pytest.mark.databases("postgresql")
def test_an_image_posted_on_one_server_is_served_by_another_sharing_the_bucket(
        server_factory, moto, bucket, tmp_path):
    env = moto.env_for(bucket)
    one = server_factory(**env, CHATAPP_UPLOAD_DIR=str(tmp_path / "one"))
    two = server_factory(**env, CHATAPP_UPLOAD_DIR=str(tmp_path / "two"))
    alice = Person(one, "alice").register()
    bob = Person(two, "bob").register()
    assert upload(alice, 1, picture("WEBP"), "w.webp", "image/webp", caption="from one").status_code == 200
    match = IMAGE_LINK.search(bob.get("/").text)  # the page, as machine two renders it
    assert match, "machine two does not show the image message"
    for url in match.groups():
        on_one, on_two = alice.get(url), bob.get(url)
        assert on_two.status_code == 200 and on_two.content == on_one.content
    assert local_files(tmp_path / "one") == local_files(tmp_path / "two") == {}


# -- faults ------------------------------------------------------------------------------------


def test_the_store_going_down_refuses_uploads_with_503_and_chat_goes_on(server_factory, tmp_path):
    store = MotoServer(tmp_path).start()
    try:
        bucket = store.new_bucket()
        server = server_factory(**store.env_for(bucket), CHATAPP_S3_TIMEOUT="2")
        alice, bob = Person(server, "alice").register(), Person(server, "bob").register()
        a, b = alice.connect(), bob.connect()
        assert upload(alice, 1, picture("PNG"), caption="before").status_code == 200
        original, thumb = image_urls(b.wait_for("before"))

        store.stop()
        started = time.monotonic()
        response = upload(alice, 1, picture("PNG"), caption="never shown")
        assert time.monotonic() - started < 20
        assert_refused(response, 503, STORE_DOWN)
        assert bob.get(original).status_code == 503 and bob.get(thumb).status_code == 503
        a.say("text still works")
        b.wait_for("text still works")
        assert "never shown" not in bob.get("/").text
        assert not [f for f in b.frames if "never shown" in f]

        # The store comes back (empty: moto keeps nothing): uploads work again unaided.
        store = MotoServer(tmp_path, port=store.port).start()
        store.client().create_bucket(Bucket=bucket)
        assert upload(alice, 1, picture("PNG"), caption="after").status_code == 200
        b.wait_for("after")
        assert len(store.objects(bucket)) == 2
    finally:
        store.stop()


def test_a_slow_store_times_out_into_a_503_and_stores_nothing(app, auth, client, monkeypatch):
    from chatapp import storage

    silent = socket.socket()  # accepts connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        app.config.update(STORAGE="s3", S3_BUCKET="images", S3_TIMEOUT=1,
                          S3_ENDPOINT_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, "x")
        app.extensions["storage"] = storage.from_config(app.config)
        auth.register("alice")
        started = time.monotonic()
        response = post_image(client, picture("PNG", size=(300, 200)), "slow")
        assert time.monotonic() - started < 15
        assert response.status_code == 503 and STORE_DOWN in response.get_data(as_text=True)
        assert image_ids(app) == []
    finally:
        silent.close()


def test_a_failure_after_the_first_file_leaves_neither_message_nor_file(app, auth, client, monkeypatch):
    from chatapp import storage

    real_put = storage.LocalStorage.put

    def put(self, key, data, content_type="application/octet-stream"):
        if "-thumb" in key:
            raise storage.StorageUnavailable("the store went away mid-upload")
        return real_put(self, key, data, content_type)

    monkeypatch.setattr(storage.LocalStorage, "put", put)
    auth.register("alice")
    response = post_image(client, picture("PNG"), "half")  # 1200 px: original and thumbnail
    assert response.status_code == 503 and STORE_DOWN in response.get_data(as_text=True)
    assert image_ids(app) == []
    assert local_files(Path(app.config["UPLOAD_DIR"])) == {}


def test_sweep_removes_old_objects_no_image_refers_to(app, auth, client, runner):
    auth.register("alice")
    assert post_image(client, picture("PNG"), "kept").status_code == 200
    root = Path(app.config["UPLOAD_DIR"])
    kept = local_files(root)
    orphan, young = root / "ab" / "orphan.png", root / "ab" / "young.png"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    young.write_bytes(b"an upload under way")
    hour_ago = time.time() - 3700
    for path in [orphan, *(root / k for k in kept)]:
        os.utime(path, (hour_ago, hour_ago))
    done = runner.invoke(args=["storage", "sweep"])
    assert done.exit_code == 0, done.output
    assert "Deleted 1 files" in done.output
    assert local_files(root) == {**kept, "ab/young.png": b"an upload under way"}


def test_wrong_credentials_stop_the_app_from_starting(server_factory, tmp_path):
    # This moto checks every request's key against its IAM users, of which there are none.
    store = MotoServer(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0").start()
    try:
        with pytest.raises(RuntimeError) as refused:
            server_factory(**store.env_for("images"))
        assert "refused our credentials" in str(refused.value)
        assert "InvalidAccessKeyId" in str(refused.value) and "AWS_ACCESS_KEY_ID" in str(refused.value)
    finally:
        store.stop()


def test_a_missing_bucket_stops_the_app_with_the_reason(moto, s3_env, monkeypatch, tmp_path):
    from chatapp import create_app
    from chatapp.storage import StorageMisconfigured

    monkeypatch.setenv("CHATAPP_S3_BUCKET", "no-such-bucket")
    monkeypatch.setenv("CHATAPP_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with pytest.raises(StorageMisconfigured, match="There is no bucket no-such-bucket"):
        create_app({"TESTING": True})


# -- migrate, delete, back up ------------------------------------------------------------------


def test_migrate_local_to_s3_and_back_verified_and_resumable(app, auth, client, runner, moto, bucket,
                                                              monkeypatch):
    from chatapp import storage

    # The app keeps its images in its folder (CHATAPP_STORAGE=local) and knows the bucket.
    for key, value in moto.env_for(bucket).items():
        if key.startswith("CHATAPP_S3"):
            app.config[key.removeprefix("CHATAPP_")] = value
        elif key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    auth.register("alice")
    assert post_image(client, picture("PNG"), "big").status_code == 200
    assert post_image(client, picture("JPEG", size=(200, 100)), "small").status_code == 200
    root = Path(app.config["UPLOAD_DIR"])
    before = {k: sha(v) for k, v in local_files(root).items()}
    assert len(before) == 3  # the big one has a thumbnail

    done = runner.invoke(args=["storage", "migrate", "--to", "s3"])
    assert done.exit_code == 0, done.output
    assert "Copied 3 files" in done.output and "0 were there already" in done.output
    in_bucket = {k.removeprefix("chatapp/"): sha(v) for k, v in moto.objects(bucket).items()}
    assert in_bucket == before

    # Posted after the copy, before the switch: still only in the folder.
    assert post_image(client, picture("PNG", size=(120, 90)), "late").status_code == 200
    before = {k: sha(v) for k, v in local_files(root).items()}
    assert len(before) == 4
    # The switch: the bucket first, the folder read for what is not copied yet.
    app.config.update(STORAGE="s3", STORAGE_FALLBACK="local")
    app.extensions["storage"] = storage.from_config(app.config)
    late = image_ids(app)[-1]
    assert sha(client.get(f"/images/{late}").data) in before.values()

    # And a copy interrupted half-way: one object missing, one cut short.
    s3 = moto.client()
    first, second = sorted(in_bucket)[:2]
    s3.delete_object(Bucket=bucket, Key=f"chatapp/{first}")
    s3.put_object(Bucket=bucket, Key=f"chatapp/{second}", Body=b"cut sho")
    # The second run copies the late image and mends both.
    again = runner.invoke(args=["storage", "migrate", "--to", "s3"])
    assert again.exit_code == 0, again.output
    assert "Copied 3 files" in again.output and "1 were there already" in again.output
    assert {k.removeprefix("chatapp/"): sha(v) for k, v in moto.objects(bucket).items()} == before

    # The fallback gone, and the folder with it: every image is served from the bucket.
    app.config["STORAGE_FALLBACK"] = ""
    app.extensions["storage"] = storage.from_config(app.config)
    for path in root.rglob("*"):
        if path.is_file():
            path.unlink()
    for image_id in image_ids(app):
        response = client.get(f"/images/{image_id}")
        assert response.status_code == 200 and sha(response.data) in before.values()

    back = runner.invoke(args=["storage", "migrate", "--to", "local"])
    assert back.exit_code == 0, back.output
    assert "Copied 4 files" in back.output
    assert {k: sha(v) for k, v in local_files(root).items()} == before


def test_retention_backup_and_restore_reach_the_bucket(s3_env, moto, bucket, app, auth, client,
                                                       runner, tmp_path):
    from chatapp.extensions import db
    from chatapp.models import Message, utcnow

    auth.register("alice")
    assert post_image(client, picture("PNG"), "to keep").status_code == 200
    stored = moto.objects(bucket)
    assert len(stored) == 2

    archive = tmp_path / "backup.tar.gz"
    done = runner.invoke(args=["backup", str(archive)])
    assert done.exit_code == 0, done.output
    assert "2 uploaded files" in done.output

    with app.app_context():
        db.session.execute(db.update(Message).values(created_at=utcnow() - timedelta(days=40)))
        db.session.commit()
    app.config["RETENTION_DAYS"] = 30
    pruned = runner.invoke(args=["prune"])
    assert "Deleted 1 messages and 1 images" in pruned.output
    assert moto.objects(bucket) == {}  # deleting the message deleted its objects

    restored = runner.invoke(args=["restore", "--force", str(archive)])
    assert restored.exit_code == 0, restored.output
    assert moto.objects(bucket) == stored
    [image_id] = image_ids(app)
    assert client.get(f"/images/{image_id}").data in stored.values()


def test_keys_never_leave_the_store(tmp_path):
    from chatapp.storage import LocalStorage

    store = LocalStorage(str(tmp_path / "store"))
    for key in ("../secret", "/etc/passwd", "a/../../b", "", "a//b", "a\\b"):
        with pytest.raises(ValueError):
            store.put(key, b"x")
    store.put("ab/cd/name.png", b"data")
    assert store.get("ab/cd/name.png") == b"data" and store.exists("ab/cd/name.png")
    assert [e.key for e in store.list()] == ["ab/cd/name.png"]
    store.delete("ab/cd/name.png")
    store.delete("ab/cd/name.png")  # already gone: nothing happens
    assert not store.exists("ab/cd/name.png")


def test_an_image_deleted_with_its_message_loses_its_files_only_when_that_commits(app, auth, client):
    from chatapp import storage
    from chatapp.extensions import db
    from chatapp.models import Image, Message

    auth.register("alice")
    assert post_image(client, picture("PNG"), "first").status_code == 200
    assert post_image(client, picture("PNG", size=(100, 80)), "second").status_code == 200
    root = Path(app.config["UPLOAD_DIR"])
    assert len(local_files(root)) == 3

    def delete(body: str, commit: bool) -> None:
        with app.app_context():
            message = db.session.scalar(db.select(Message).where(Message.body == body))
            image = message.image
            storage.delete_image_files(image)  # what deleting a message or a room calls
            db.session.delete(message)
            db.session.delete(image)
            db.session.commit() if commit else db.session.rollback()
            db.session.remove()

    delete("first", commit=False)  # rolled back: the message and its files stay
    assert len(local_files(root)) == 3
    delete("first", commit=True)
    with app.app_context():
        [image] = db.session.scalars(db.select(Image)).all()
        assert set(local_files(root)) == {image.path}
        db.session.remove()


@pytest.mark.browser
def test_a_person_sees_the_store_is_down_in_the_composer_and_can_still_chat(
        browser, server_factory, tmp_path):
    from playwright.sync_api import expect

    store = MotoServer(tmp_path).start()
    context = browser.new_context()
    try:
        server = server_factory(**store.env_for(store.new_bucket()), CHATAPP_S3_TIMEOUT="2")
        alice, bob = Person(server, "alice").register(), Person(server, "bob").register()
        b = bob.connect()
        photo = tmp_path / "photo.png"
        photo.write_bytes(picture("PNG", size=(600, 400)))
        page = context.new_page()
        page.goto(server.url + "/login/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(alice.password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("log", name="Messages")).to_be_visible()

        store.stop()
        page.get_by_label("Attach image").set_input_files(photo)
        page.get_by_label("Caption").fill("lost in the outage")
        page.get_by_role("button", name="Send image").click()
        expect(page.get_by_role("alert")).to_contain_text(STORE_DOWN, timeout=20_000)
        expect(page.get_by_role("link", name="Image from alice")).to_have_count(0)

        page.get_by_role("textbox", name="Message", exact=True).fill("text still goes through")
        page.get_by_role("textbox", name="Message", exact=True).press("Enter")
        b.wait_for("text still goes through")
        expect(page.get_by_role("log", name="Messages")).to_contain_text("text still goes through")
        assert not [f for f in b.frames if "lost in the outage" in f]
    finally:
        context.close()
        store.stop()


def test_the_migrate_command_copies_while_the_server_takes_uploads(server_factory, moto, bucket):
    import subprocess
    import sys
    import threading

    from conftest import ROOT

    server = server_factory()  # images in its folder (CHATAPP_STORAGE=local)
    alice, bob = Person(server, "alice").register(), Person(server, "bob").register()
    b = bob.connect()
    for n in range(3):
        assert upload(alice, 1, picture("PNG", size=(300 + n, 200)), caption=f"old {n}").status_code == 200
    root = server.tmp_path / "uploads"
    existing = {k: sha(v) for k, v in local_files(root).items()}
    assert len(existing) == 3

    # The S3 settings beside the running app's own (still CHATAPP_STORAGE=local).
    env = {**server.env, **{k: v for k, v in moto.env_for(bucket).items() if k != "CHATAPP_STORAGE"}}
    posted = []
    poster = threading.Thread(target=lambda: posted.append(
        upload(alice, 1, picture("PNG", size=(320, 240)), caption="during").status_code))
    poster.start()
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "chatapp", "storage", "migrate",
                           "--to", "s3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    poster.join()
    assert done.returncode == 0, done.stderr
    assert "each verified by SHA-256" in done.stdout and "CHATAPP_STORAGE_FALLBACK=local" in done.stdout
    assert posted == [200]
    b.wait_for("during")
    in_bucket = {k.removeprefix("chatapp/"): sha(v) for k, v in moto.objects(bucket).items()}
    assert existing.items() <= in_bucket.items()
    # Run again: whatever came meanwhile is copied, the rest is kept.
    again = subprocess.run([sys.executable, "-m", "flask", "--app", "chatapp", "storage", "migrate",
                            "--to", "s3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    in_bucket = {k.removeprefix("chatapp/"): sha(v) for k, v in moto.objects(bucket).items()}
    assert in_bucket == {k: sha(v) for k, v in local_files(root).items()}
    assert len(in_bucket) == 4
