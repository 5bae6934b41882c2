"""Seed a chatapp database for a benchmark run: users (one shared password) and private chats.

Run with chatapp's own Python and the server's environment (DATABASE_URL etc.):
    python bench/seed_chatapp.py USERS PAIRS [ROOM]
Users are bench00000...; the first 2*PAIRS of them are paired in private chats. With ROOM
= 1, every user is also a member of one members-only room, whose id is printed last. With
BENCH_MESSAGES=N the public room gets N messages (a few authors, a minute apart, some
formatted, some with reactions), as the HTTP page benchmark (bench/http_bench.py) reads. Accounts
are inserted directly (one argon2 hash computed once), since registering thousands of
users through the form would spend minutes hashing; logging in still goes through the
form, with CSRF, as a browser does.
"""

import os
import sys
import uuid
from datetime import timedelta

from flask_migrate import upgrade

from chatapp import create_app
from chatapp import formatting
from chatapp.models import Conversation, Membership, Message, Reaction, User, db, utcnow

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
        seed_messages(public, ids, int(os.environ.get("BENCH_MESSAGES", "0")))
        print(" ".join(str(c) for c in [public.id, *chats]))


BODIES = ["good morning, all", "the **release** is out: https://example.com/notes",
          "who has the keys to the `staging` box?", "lunch at noon?", "发布 版本 下周",
          "done, merged", "*thanks*, that fixed it", "meeting moved to 3pm"]


def seed_messages(public: Conversation, ids: list[int], count: int) -> None:
    """`count` messages in the public room, oldest first: three authors taking turns in
    short runs (so some messages continue a group), a minute apart, all but the newest 20
    a day earlier (a day separator), every fifth one with a reaction or two."""
    if not count:
        return
    start = utcnow() - timedelta(minutes=count + 5)
    authors = ids[:3]
    for n in range(count):
        body = f"{BODIES[n % len(BODIES)]} #{n}"
        message = Message(conversation_id=public.id, author_id=authors[(n // 3) % len(authors)],
                          body=body, client_id=str(uuid.uuid4()),
                          created_at=start + timedelta(minutes=n, days=-(n < count - 20)),
                          body_html=formatting.render(body)[0])
        db.session.add(message)
        db.session.flush()
        if n % 5 == 0:
            for user_id, emoji in zip(ids[:1 + n % 2], ("👍", "🎉")):
                db.session.add(Reaction(message_id=message.id, user_id=user_id, emoji=emoji))
    public.last_message_at = start + timedelta(minutes=count - 1)
    db.session.commit()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "1")
