"""Seed a chatapp database for a benchmark run: users (one shared password) and private chats.

Run with chatapp's own Python and the server's environment (DATABASE_URL etc.):
    python bench/seed_chatapp.py USERS PAIRS [ROOM]
Users are bench00000...; the first 2*PAIRS of them are paired in private chats. With ROOM
= 1, every user is also a member of one members-only room, whose id is printed last. Accounts
are inserted directly (one argon2 hash computed once), since registering thousands of
users through the form would spend minutes hashing; logging in still goes through the
form, with CSRF, as a browser does.
"""

import os
import sys

from flask_migrate import upgrade

from chatapp import create_app
from chatapp.models import Conversation, Membership, User, db

PASSWORD = "bench password 1"
AUDIENCES = [(None, None), ("zh_Hans", "Asia/Shanghai"), ("en", "America/New_York"),
             ("zh_Hans", "UTC")]


def main(users: int, pairs: int, room: bool = False) -> None:
    app = create_app()
    with app.app_context():
        upgrade()
        public = Conversation.public_room()
        db.session.commit()
        probe = User(username="probe", username_key="probe")
        probe.set_password(PASSWORD)
        password_hash = probe.password_hash
        rows = [
            {"username": f"bench{i:05d}", "username_key": f"bench{i:05d}",
             "password_hash": password_hash}
            for i in range(users)
        ]
        db.session.execute(User.__table__.insert(), rows)
        ids = db.session.scalars(db.select(User.id).order_by(User.id)).all()
        db.session.execute(
            Membership.__table__.insert(),
            [{"conversation_id": public.id, "user_id": i, "last_read_id": 0} for i in ids],
        )
        db.session.commit()
        # BENCH_AUDIENCES=N: the users after the first (the sender) get N (language, time
        # zone) choices in turn, so each message is rendered for N audiences.
        audiences = AUDIENCES[:int(os.environ.get("BENCH_AUDIENCES", "1"))]
        if len(audiences) > 1:
            for n, user_id in enumerate(ids[1:]):
                language, time_zone = audiences[n % len(audiences)]
                db.session.execute(User.__table__.update().where(User.id == user_id).values(
                    language=language, time_zone=time_zone))
            db.session.commit()
        chats = []
        for p in range(pairs):
            a = db.session.get(User, ids[2 * p])
            b = db.session.get(User, ids[2 * p + 1])
            chats.append(Conversation.direct(a, b).id)
            db.session.commit()
        if room:
            members = Conversation.create_room("bench", True, db.session.get(User, ids[0]))
            db.session.execute(
                Membership.__table__.insert(),
                [{"conversation_id": members.id, "user_id": i, "last_read_id": 0,
                  "notify": "all"} for i in ids[1:]],
            )
            db.session.commit()
            chats.append(members.id)
        print(" ".join(str(c) for c in [public.id, *chats]))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "1")
