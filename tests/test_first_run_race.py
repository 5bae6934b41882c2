"""Two people registering on a fresh install at the same moment: one of them runs it."""

from __future__ import annotations

import threading

import pytest

from conftest import PASSWORD, csrf_from


def users(app) -> dict[str, bool]:
    from chatapp.models import User, db

    with app.app_context():
        return {u.username: u.is_admin for u in db.session.scalars(db.select(User))}


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_simultaneous_first_registrations_make_one_admin(app, monkeypatch, mode):
    """Both see the first-run page and both post; exactly one becomes admin, and on a
    closed server the other is refused instead of slipping in through the first run."""
    import chatapp.auth
    from chatapp.models import User

    app.config["REGISTRATION"] = mode
    with app.app_context():  # the public room is there already (else its creation
        from chatapp.models import Conversation, db  # would queue the second insert)

        Conversation.public_room()
        db.session.commit()
    names = ["ann", "ben"]
    clients = [app.test_client() for _ in names]
    forms = []
    for client in clients:
        page = client.get("/register/").get_data(as_text=True)
        assert "Set up chatapp" in page
        forms.append(csrf_from(page))

    # Both requests decide "first run" before either has written anything, and (where the
    # database lets two writers in at once, as PostgreSQL does) both insert their account
    # before either checks who came first: the widest window a real race could open.
    both_checked = threading.Barrier(2, timeout=10)
    real_first_run, real_register = chatapp.auth._first_run, User.register.__func__

    def first_run():
        answer = real_first_run()
        both_checked.wait()
        return answer

    both_inserted = threading.Barrier(2, timeout=10)

    def register(cls, username, password):
        user = real_register(cls, username, password)
        from chatapp.extensions import db

        if db.session.get_bind().dialect.name == "postgresql":
            both_inserted.wait()  # SQLite's second insert waits for the first commit
        return user

    monkeypatch.setattr(chatapp.auth, "_first_run", first_run)
    monkeypatch.setattr(User, "register", classmethod(register))
    statuses = {}

    def post(client, name, token):
        response = client.post("/register/", data={
            "username": name, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token})
        statuses[name] = response.status_code

    threads = [threading.Thread(target=post, args=args) for args in zip(clients, names, forms)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    made = users(app)
    assert sorted(statuses.values()) == ([302, 302] if mode == "open" else [302, 403])
    assert list(made.values()).count(True) == 1, made
    assert len(made) == (2 if mode == "open" else 1), made
