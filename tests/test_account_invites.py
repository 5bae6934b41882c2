"""Who may register: open, invite (an administrator's links) or closed; and the first run."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from conftest import PASSWORD, csrf_from


def register(client, username, invite=None, confirm=None):
    url = "/register/" + (f"?invite={invite}" if invite else "")
    page = client.get(url)
    html = page.get_data(as_text=True)
    data = {"username": username, "password": PASSWORD,
            "confirm": PASSWORD if confirm is None else confirm}
    # A page without a form still lets a script post one: with a token from the login page.
    data["csrf_token"] = csrf_from(html if "csrf_token" in html
                                   else client.get("/login/").get_data(as_text=True))
    if invite:
        data["invite"] = invite
    return client.post("/register/", data=data)


def users(app) -> dict[str, bool]:
    from chatapp.models import User, db

    with app.app_context():
        return {u.username: u.is_admin for u in db.session.scalars(db.select(User))}


def fresh(app):
    return app.test_client()


@pytest.mark.parametrize("mode", ["open", "invite", "closed"])
def test_the_first_account_can_always_be_made_and_runs_the_server(app, client, mode):
    app.config["REGISTRATION"] = mode
    login = client.get("/login/").get_data(as_text=True)
    assert "Nobody has an account here yet." in login and 'href="/register/"' in login
    page = client.get("/register/").get_data(as_text=True)
    assert "Set up chatapp" in page and "it will administer this server" in page
    assert register(client, "founder").status_code == 302
    assert users(app) == {"founder": True}
    assert ">Admin</span></a>" in client.get("/").get_data(as_text=True)
    # The second person is no administrator, and meets the configured mode.
    other = fresh(app)
    assert "Set up chatapp" not in other.get("/register/").get_data(as_text=True)
    response = register(other, "second")
    if mode == "open":
        assert response.status_code == 302 and users(app) == {"founder": True, "second": False}
    else:
        assert response.status_code == 403 and users(app) == {"founder": True}


def test_no_first_run_admin_when_an_admin_exists(app, runner, client):
    """A server whose first account was made by `flask create-admin` has its admin."""
    result = runner.invoke(args=["create-admin", "root"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert register(client, "alice").status_code == 302
    assert users(app) == {"root": True, "alice": False}


def test_closed_registration_says_so_and_creates_nobody(app, client):
    register(client, "founder")
    app.config["REGISTRATION"] = "closed"
    other = fresh(app)
    page = other.get("/register/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'role="alert"' in html and "Registration is closed on this server" in html
    assert 'name="username"' not in html
    token = csrf_from(other.get("/login/").get_data(as_text=True))
    response = other.post("/register/", data={"csrf_token": token, "username": "mallory",
                                              "password": PASSWORD, "confirm": PASSWORD})
    assert response.status_code == 403 and "mallory" not in users(app)


def admin_client(app):
    founder = fresh(app)
    assert register(founder, "founder").status_code == 302
    return founder


def new_invite(admin, days="", uses="") -> tuple[int, str]:
    page = admin.get("/admin/invites").get_data(as_text=True)
    response = admin.post("/admin/invites", data={"csrf_token": csrf_from(page), "days": days,
                                                  "uses": uses})
    assert response.status_code == 302
    page = admin.get("/admin/invites").get_data(as_text=True)
    invite_id, url = re.search(r'id="invite-url-(\d+)" class="invite-url" type="text" '
                               r'value="([^"]+)" readonly', page).groups()
    return int(invite_id), url


def token_of(url: str) -> str:
    return url.split("invite=", 1)[1]


def test_invite_mode_registers_only_through_a_link(app):
    admin = admin_client(app)
    app.config["REGISTRATION"] = "invite"
    stranger = fresh(app)
    html = stranger.get("/register/").get_data(as_text=True)
    assert "by invitation" in html and 'name="username"' not in html
    assert register(stranger, "stranger").status_code == 403

    invite_id, url = new_invite(admin, uses="2")
    assert url.startswith("http://localhost/register/?invite=")  # the full URL, to copy
    guest = fresh(app)
    page = guest.get(url[len("http://localhost"):]).get_data(as_text=True)
    assert 'name="username"' in page and f'name="invite" value="{token_of(url)}"' in page
    assert register(guest, "guest", invite=token_of(url)).status_code == 302
    # A bad form with the link in hand keeps the link and counts no use.
    retry = register(fresh(app), "guest", invite=token_of(url))
    assert retry.status_code == 400 and "taken" in retry.get_data(as_text=True)
    assert register(fresh(app), "guest2", invite=token_of(url)).status_code == 302
    used_up = register(fresh(app), "guest3", invite=token_of(url))
    assert used_up.status_code == 403
    assert "used as often as it may" in used_up.get_data(as_text=True)
    assert set(users(app)) == {"founder", "guest", "guest2"}
    listing = admin.get("/admin/invites").get_data(as_text=True)
    assert "Used up" in listing and "2 / 2" in listing


def test_revoked_expired_regenerated_and_unknown_links_are_refused(app):
    from chatapp.models import AuditEntry, Invite, db, utcnow

    admin = admin_client(app)
    app.config["REGISTRATION"] = "invite"
    revoked_id, revoked = new_invite(admin)
    page = admin.get("/admin/invites").get_data(as_text=True)
    admin.post(f"/admin/invites/{revoked_id}/revoke", data={"csrf_token": csrf_from(page)})
    response = register(fresh(app), "late", invite=token_of(revoked))
    assert response.status_code == 403 and "was revoked" in response.get_data(as_text=True)

    expired_id, expired = new_invite(admin, days="1")
    with app.app_context():
        db.session.get(Invite, expired_id).expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    response = register(fresh(app), "late", invite=token_of(expired))
    assert response.status_code == 403 and "has expired" in response.get_data(as_text=True)

    old_id, old = new_invite(admin)
    page = admin.get("/admin/invites").get_data(as_text=True)
    admin.post(f"/admin/invites/{old_id}/regenerate", data={"csrf_token": csrf_from(page)})
    page = admin.get("/admin/invites").get_data(as_text=True)
    new = re.search(rf'id="invite-url-{old_id}" class="invite-url" type="text" value="([^"]+)"',
                    page).group(1)
    assert new != old
    response = register(fresh(app), "late", invite=token_of(old))
    assert response.status_code == 403 and "is not valid" in response.get_data(as_text=True)
    assert register(fresh(app), "late", invite=token_of(new)).status_code == 302
    assert "late" in users(app)
    for bad in ("x" * 500, "%00", "nonsense"):
        assert register(fresh(app), "nobody", invite=bad).status_code == 403
    assert "nobody" not in users(app)
    with app.app_context():
        actions = [e.action for e in db.session.scalars(db.select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["create_invite", "revoke_invite", "create_invite", "create_invite",
                       "regenerate_invite"]
    audit = admin.get("/admin/audit").get_data(as_text=True)
    assert "Revoked an invite link" in audit and "Regenerated an invite link" in audit


def test_a_link_used_up_while_the_form_was_open_creates_nobody(app):
    admin = admin_client(app)
    app.config["REGISTRATION"] = "invite"
    _, url = new_invite(admin, uses="1")
    one, two = fresh(app), fresh(app)
    tokens = [csrf_from(c.get("/register/?invite=" + token_of(url)).get_data(as_text=True))
              for c in (one, two)]
    data = {"password": PASSWORD, "confirm": PASSWORD, "invite": token_of(url)}
    assert one.post("/register/", data={**data, "csrf_token": tokens[0], "username": "first"}).status_code == 302
    late = two.post("/register/", data={**data, "csrf_token": tokens[1], "username": "second"})
    assert late.status_code == 403 and "second" not in users(app)


@pytest.mark.parametrize(("days", "uses"), [("0", ""), ("-1", ""), ("366", ""), ("abc", ""),
                                            ("", "0"), ("", "10001"), ("", "1.5")])
def test_bad_invite_limits_are_refused(app, days, uses):
    from chatapp.models import Invite, db

    admin = admin_client(app)
    page = admin.get("/admin/invites").get_data(as_text=True)
    response = admin.post("/admin/invites", data={"csrf_token": csrf_from(page), "days": days,
                                                  "uses": uses})
    assert response.status_code == 400 and 'role="alert"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Invite.id))) == 0


def test_invite_pages_are_for_admins_only_and_need_csrf(app):
    from chatapp.models import Invite, db

    admin = admin_client(app)
    member = fresh(app)
    assert register(member, "member").status_code == 302
    assert member.get("/admin/invites").status_code == 403
    page = member.get("/").get_data(as_text=True)
    assert member.post("/admin/invites", data={"csrf_token": csrf_from(page)}).status_code == 403
    assert admin.post("/admin/invites", data={"days": "1"}).status_code == 400  # no token
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Invite.id))) == 0
    assert fresh(app).get("/admin/invites").status_code == 302  # to the login


def test_an_unknown_registration_mode_stops_start_up(monkeypatch):
    from chatapp.config import _registration

    monkeypatch.setenv("CHATAPP_REGISTRATION", "invite-only")
    with pytest.raises(ValueError, match="CHATAPP_REGISTRATION"):
        _registration()
    monkeypatch.setenv("CHATAPP_REGISTRATION", " Closed ")
    assert _registration() == "closed"
    monkeypatch.delenv("CHATAPP_REGISTRATION")
    assert _registration() == "open"
