"""Backup and restore: a backup taken while people post restores every acknowledged message
and every image; a restore refuses a non-empty instance and a damaged archive."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from conftest import ROOT, LiveServer, Person, base_env, postgres_database
from test_uploads import picture, upload

POSTERS = 20
FAST = {"CHATAPP_MESSAGE_RATE": "100000/minute"}  # 20 people posting flat out


def engine_url(url: str) -> str:
    """SQLAlchemy's spelling of a test database URL (psycopg 3 for PostgreSQL)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def query(url: str, sql: str) -> list[tuple]:
    """Rows of a query against a test database."""
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def flask_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app chatapp ARGS` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


class Poster(threading.Thread):
    """One person posting as fast as the server acknowledges, recording each acknowledgement."""

    def __init__(self, sock, name: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.sock, self.name, self.stop = sock, name, stop
        self.acked: list[tuple[str, float]] = []  # (body, when the acknowledgement came)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                body = f"{self.name} posts number {n}"
                self.sock.say(body)
                self.sock.wait_for('hx-target="#composer"', timeout=30)
                self.acked.append((body, time.monotonic()))
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.fixture
def fresh_database(database_url, tmp_path):
    """Another empty database on the same engine: where a backup is restored."""
    with ExitStack() as stack:
        if database_url.startswith("sqlite"):
            yield f"sqlite:///{tmp_path / 'restored' / 'chatapp.sqlite3'}"
        else:
            yield stack.enter_context(postgres_database())


def test_a_backup_taken_while_20_people_post_restores_every_acknowledged_message_and_image(
    server_factory, tmp_path, database_url, fresh_database
):
    server = server_factory(**FAST)
    people = [Person(server, f"poster{i:02d}").register() for i in range(POSTERS)]
    alice = people[0]
    for i in range(3):
        response = upload(alice, 1, picture("PNG", size=(900 + i * 10, 700)), caption=f"picture {i}")
        assert response.status_code == 200, response.text
    images = {}
    for (image_id,) in query(database_url, "SELECT id FROM images"):
        for suffix in ("", "/thumb"):
            got = alice.get(f"/images/{image_id}{suffix}")
            assert got.status_code == 200
            images[f"/images/{image_id}{suffix}"] = got.content
    assert len(images) == 6

    stop = threading.Event()
    posters = [Poster(p.connect(), p.username, stop) for p in people]
    for poster in posters:
        poster.start()
    deadline = time.monotonic() + 60
    while sum(len(p.acked) for p in posters) < 3 * POSTERS:
        assert time.monotonic() < deadline and not any(p.error for p in posters)
        time.sleep(0.05)

    archive = tmp_path / "backup.tar.gz"
    started = time.monotonic()
    made = flask_cli(server.env, "backup", str(archive))
    finished = time.monotonic()
    # Posting went on while the backup ran.
    during = [b for p in posters for b, at in p.acked if started <= at <= finished]
    stop.set()
    for poster in posters:
        poster.join(60)
        assert poster.error is None, poster.error
    assert made.returncode == 0, made.stderr
    assert during, "nobody posted while the backup ran"
    acknowledged_before = {b for p in posters for b, at in p.acked if at < started}
    posted = [b for p in posters for b, _ in p.acked]

    restored = tmp_path / "restored"
    env = base_env(restored, fresh_database)
    done = flask_cli(env, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "Restored" in done.stdout

    bodies = [b for (b,) in query(fresh_database, "SELECT body FROM messages WHERE body LIKE 'poster%'")]
    assert acknowledged_before <= set(bodies)
    assert len(bodies) == len(set(bodies)) and set(bodies) <= set(posted)
    manifest = json.load(tarfile.open(archive).extractfile("manifest.json"))
    assert manifest["counts"]["messages"] == len(bodies) + 3  # and the three pictures

    # The restored instance works: it serves the same accounts and byte-identical images.
    again = LiveServer(restored, fresh_database)
    try:
        again.start()
        assert requests.get(again.url + "/up", timeout=10).text == "ok\n"
        person = Person(again, alice.username)
        assert person.login().url == again.url + "/"
        for url, content in images.items():
            got = person.get(url)
            assert got.status_code == 200 and got.content == content, url
        person.close()
    finally:
        again.stop()


# -- refusals ----------------------------------------------------------------------------------

SQLITE_ONLY = pytest.mark.databases("sqlite")


@pytest.fixture
def backed_up(server_factory, tmp_path):
    """A server with one message and one image, stopped, and a backup of it."""
    server = server_factory()
    alice = Person(server, "alice").register()
    assert upload(alice, 1, picture("PNG"), caption="kept").status_code == 200
    archive = tmp_path / "backup.tar.gz"
    made = flask_cli(server.env, "backup", str(archive))
    assert made.returncode == 0, made.stderr
    sock = alice.connect()
    sock.say("posted after the backup")
    sock.wait_for('hx-target="#composer"')
    server.stop()
    return server, archive


def messages(server) -> list[str]:
    return [b for (b,) in query(server.env["DATABASE_URL"], "SELECT body FROM messages ORDER BY id")]


@SQLITE_ONLY
def test_restore_refuses_a_non_empty_instance_unless_forced(backed_up):
    server, archive = backed_up
    uploads = sorted((server.tmp_path / "uploads").rglob("*"))
    refused = flask_cli(server.env, "restore", str(archive))
    assert refused.returncode != 0
    assert "already holds accounts or images" in refused.stderr and "--force" in refused.stderr
    assert messages(server) == ["kept", "posted after the backup"]  # nothing changed
    assert sorted((server.tmp_path / "uploads").rglob("*")) == uploads

    forced = flask_cli(server.env, "restore", "--force", str(archive))
    assert forced.returncode == 0, forced.stderr
    assert messages(server) == ["kept"]


def rewrite(archive: Path, target: Path, change) -> None:
    """Copy an archive, passing each member's bytes through change(name, data)."""
    with tarfile.open(archive) as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            data = change(member.name, source.extractfile(member).read())
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))


@SQLITE_ONLY
def test_restore_refuses_a_damaged_archive_and_leaves_the_instance_empty(backed_up, tmp_path):
    _, archive = backed_up
    fresh = tmp_path / "fresh"
    env = base_env(fresh, f"sqlite:///{fresh / 'chatapp.sqlite3'}")

    def flip_image_byte(name, data):
        if name.startswith("uploads/") and name.endswith(".png"):
            return data[:100] + bytes([data[100] ^ 1]) + data[101:]
        return data

    tampered = tmp_path / "tampered.tar.gz"
    rewrite(archive, tampered, flip_image_byte)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    newer = tmp_path / "newer.tar.gz"

    def unknown_migration(name, data):
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["migration_head"] = "f00dfeedbeef"
            return json.dumps(manifest).encode()
        return data

    rewrite(archive, newer, unknown_migration)

    for bad, words in [(tampered, "does not match its checksum"),
                       (truncated, "cannot be read"),
                       (newer, "migration 'f00dfeedbeef'")]:
        refused = flask_cli(env, "restore", str(bad))
        assert refused.returncode != 0, bad
        assert words in refused.stderr, refused.stderr
        assert not (fresh / "chatapp.sqlite3").exists()
        assert not any(p.is_file() for p in (fresh / "uploads").rglob("*"))
