"""Configuration: the generated secret key and the SQLite settings."""

from sqlalchemy import text


def test_secret_key_is_generated_once_and_kept_in_instance(tmp_path, monkeypatch):
    from chatapp import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("CHATAPP_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.setenv("CHATAPP_UPLOAD_DIR", str(tmp_path / "uploads"))
    first = create_app().config["SECRET_KEY"]
    stored = (tmp_path / "instance" / "secret_key").read_text().strip()
    assert first == stored and len(first) >= 64
    assert create_app().config["SECRET_KEY"] == first
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path, monkeypatch):
    from chatapp import create_app
    from chatapp.extensions import db

    monkeypatch.setenv("SECRET_KEY", "x")
    monkeypatch.setenv("CHATAPP_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.setenv("CHATAPP_UPLOAD_DIR", str(tmp_path / "uploads"))
    app = create_app()
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        db.session.rollback()
        db.engine.dispose()
