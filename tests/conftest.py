"""Shared fixtures: an in-process app, and a real gunicorn gevent server on a free port
(the server and its clients are in live.py).

Tests that need PostgreSQL, Redis or Chromium skip with the reason when the service is
missing, unless CHATAPP_REQUIRE_SERVICES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

# The live-server helpers live in live.py; tests import them (and these basics) from here.
from live import (  # noqa: F401 - re-exported for the test modules
    MESSAGE_ID,
    PASSWORD,
    REQUIRE_SERVICES,
    ROOT,
    TEST_SECRET,
    LiveServer,
    Person,
    Socket,
    base_env,
    csrf_from,
    frames_to_fill,
    free_port,
    migrate_database,
    need_service,
    open_private_chat,
    open_private_chats,
)



# Every test that touches the database runs once per engine named here (CI: both).
# Locally, CHATAPP_TEST_DATABASES=sqlite runs the quick half.
TEST_DATABASES = [
    name.strip() for name in os.environ.get("CHATAPP_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]
POSTGRES_ADMIN_URL = os.environ.get(
    "CHATAPP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_generate_tests(metafunc):
    """Run each database-touching test on every engine of TEST_DATABASES.

    `@pytest.mark.databases("postgresql")` narrows a test to the engines it is about.
    """
    if "database_url" not in metafunc.fixturenames:
        return
    definitions = getattr(metafunc, "_arg2fixturedefs", {}).get("database_url")
    if definitions and definitions[-1].func.__module__ != __name__:
        return  # a module brings its own database_url (e.g. a copied SQLite file)
    names = TEST_DATABASES
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is not None:
        names = [n for n in marker.args if n in TEST_DATABASES] or list(marker.args[:1])
    metafunc.parametrize("database_url", names, indirect=True)


@contextmanager
def postgres_database():
    """A PostgreSQL database of its own (chatapp_test_<random>), dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        need_service(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"chatapp_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # FORCE: a server still closing must not keep the database alive.
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh database for this test: an SQLite file, or a PostgreSQL database."""
    engine = getattr(request, "param", "sqlite")
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'chatapp.sqlite3'}"
    elif engine == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        raise ValueError(f"unknown test database {engine!r}")


# What the shell exported when the run began: kept out of in-process apps.
SHELL_SETTINGS = {
    k: v for k, v in os.environ.items() if k.startswith("CHATAPP_") or k == "REDIS_URL"
}


@pytest.fixture
def app(tmp_path, database_url, monkeypatch):
    """An in-process app on a migrated database of its own."""
    # A developer's shell settings (REDIS_URL switches backplane and limiter) stay out;
    # what a test set itself before this fixture (say, a tighter limit) stays in.
    for key, value in SHELL_SETTINGS.items():
        if os.environ.get(key) == value:
            monkeypatch.delenv(key)
    for key, value in base_env(tmp_path, database_url).items():
        monkeypatch.setenv(key, value)
    from flask_migrate import upgrade

    from chatapp import create_app

    app = create_app({"TESTING": True})
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        from chatapp.extensions import db

        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()




class AuthActions:
    """Register, log in and out through the real forms of the in-process test client."""

    def __init__(self, client):
        self.client = client

    def register(self, username="alice", password=PASSWORD, confirm=None):
        token = csrf_from(self.client.get("/register/").get_data(as_text=True))
        return self.client.post(
            "/register/",
            data={
                "csrf_token": token,
                "username": username,
                "password": password,
                "confirm": password if confirm is None else confirm,
            },
        )

    def login(self, username="alice", password=PASSWORD, **extra):
        token = csrf_from(self.client.get("/login/").get_data(as_text=True))
        return self.client.post(
            "/login/", data={"csrf_token": token, "username": username, "password": password, **extra}
        )

    def logout(self):
        token = csrf_from(self.client.get("/").get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client):
    return AuthActions(client)


# -- a real server ------------------------------------------------------------------------




@pytest.fixture
def server_factory(tmp_path, database_url):
    """Start servers (stopped at the end), optionally with extra environment."""
    servers: list[LiveServer] = []

    def start(migrate=True, url=None, dev=False, **env) -> LiveServer:
        server = LiveServer(tmp_path, url or database_url, dev=dev, **env)
        if migrate:
            server.migrate()
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory):
    """A running server on a fresh SQLite database."""
    return server_factory()




@pytest.fixture
def people(server):
    """Make registered people on the running server: people("alice", "bob")."""
    made: list[Person] = []

    def make(*names: str):
        new = [Person(server, name).register() for name in names]
        made.extend(new)
        return new[0] if len(new) == 1 else new

    yield make
    for person in made:
        person.close()


# -- services -------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        need_service(f"Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
