"""The command line: creating the first administrator."""

from chatapp.models import User, db

from conftest import PASSWORD


def test_create_admin_reads_password_from_environment(app, runner, auth):
    result = runner.invoke(args=["create-admin", "root"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert "Created administrator root" in result.output
    with app.app_context():
        user = User.by_username("root")
        assert user.is_admin and user.active
    assert auth.login("root").status_code == 302


def test_create_admin_asks_for_the_password_twice(app, runner, auth):
    result = runner.invoke(args=["create-admin", "root"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Password:" in result.output and "Repeat for confirmation:" in result.output
    with app.app_context():
        assert User.by_username("root").is_admin
    assert auth.login("root").status_code == 302


def test_create_admin_refuses_differing_passwords(app, runner):
    result = runner.invoke(args=["create-admin", "root"], input=f"{PASSWORD}\nsomething else\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    with app.app_context():
        assert User.by_username("root") is None


def test_create_admin_refuses_short_password_and_bad_name(app, runner):
    short = runner.invoke(args=["create-admin", "root"], env={"CHATAPP_ADMIN_PASSWORD": "short"})
    assert short.exit_code != 0 and "at least 8" in short.output
    bad = runner.invoke(args=["create-admin", "no way!"], env={"CHATAPP_ADMIN_PASSWORD": PASSWORD})
    assert bad.exit_code != 0 and "letters, digits" in bad.output
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_create_admin_promotes_an_existing_user_keeping_the_password(app, runner, auth):
    auth.register("alice")
    with app.app_context():
        user = User.by_username("alice")
        user.deactivate()
        db.session.commit()
    result = runner.invoke(args=["create-admin", "Alice"], env={"CHATAPP_ADMIN_PASSWORD": "ignored-pw"})
    assert result.exit_code == 0, result.output
    assert "alice is now an administrator (and reactivated the account)" in result.output
    with app.app_context():
        user = User.by_username("alice")
        assert user.is_admin and user.active
        assert user.check_password(PASSWORD)
