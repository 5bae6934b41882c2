"""The Alembic migrations build the models' schema on every supported database."""

import subprocess
import sys

from conftest import ROOT, base_env


def flask_db(tmp_path, database_url, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", "db", *args],
        cwd=ROOT, env=base_env(tmp_path, database_url), capture_output=True, text=True,
    )


def test_migrations_match_the_models_and_run_both_ways(tmp_path, database_url):
    for step in (["upgrade"], ["check"], ["downgrade", "base"], ["upgrade"]):
        result = flask_db(tmp_path, database_url, *step)
        assert result.returncode == 0, f"flask db {' '.join(step)}:\n{result.stdout}{result.stderr}"


def test_every_migration_carries_existing_rows_both_ways(tmp_path, database_url):
    """A migration that rebuilds a table others point at (SQLite's batch mode) must keep
    working on a database in use, and leave every row and reference in place."""
    from sqlalchemy import create_engine, text

    first = flask_db(tmp_path, database_url, "upgrade", "99e910af725f")
    assert first.returncode == 0, first.stderr
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, username, username_key, password_hash, is_admin, active,"
                " created_at, session_epoch) VALUES (1, 'ann', 'ann', 'x', false, true,"
                " '2026-01-01', 0)"))
            conn.execute(text("INSERT INTO conversations (id, key, created_at)"
                              " VALUES (1, 'public', '2026-01-01')"))
            conn.execute(text("INSERT INTO memberships (conversation_id, user_id, last_read_id)"
                              " VALUES (1, 1, 0)"))
            conn.execute(text("INSERT INTO messages (conversation_id, author_id, body, client_id,"
                              " created_at) VALUES (1, 1, 'kept', 'c1', '2026-01-01')"))
        for step in (["upgrade"], ["downgrade", "99e910af725f"], ["upgrade"]):
            result = flask_db(tmp_path, database_url, *step)
            assert result.returncode == 0, f"flask db {' '.join(step)}:\n{result.stderr[-2000:]}"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT body FROM messages")).scalars().all() == ["kept"]
            assert conn.execute(text("SELECT count(*) FROM memberships")).scalar() == 1
    finally:
        engine.dispose()
