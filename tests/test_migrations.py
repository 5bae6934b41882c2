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
