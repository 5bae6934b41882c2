"""The suite's own fixtures: what a developer's shell holds does not change what is tested."""

import pytest


@pytest.fixture
def shell_settings(monkeypatch):
    """A developer's shell with a Redis URL and a loosened limit exported."""
    import conftest

    for key, value in (("REDIS_URL", "redis://127.0.0.1:1/0"),
                       ("CHATAPP_MESSAGE_RATE", "1000/second")):
        monkeypatch.setitem(conftest.SHELL_SETTINGS, key, value)  # as if there at the start
        monkeypatch.setenv(key, value)


@pytest.mark.databases("sqlite")
def test_shell_settings_stay_out_of_in_process_apps(shell_settings, app):
    """The in-process app runs on its defaults, whatever the shell exports."""
    assert app.config["REDIS_URL"] is None
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert app.config["MESSAGE_RATE"] == "10/5second"
