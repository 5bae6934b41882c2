"""CPU per composer message, in-process: the work chatapp does once per message and once
per delivery, without the kernel's share (sockets are stand-ins that accept every write).

    python bench/message_cost.py [--listeners N] [--accounts N] [--messages N] [--sections]
                                 [--groups N]

Run with chatapp's own Python (`.venv/bin/python`). It builds a fresh SQLite database in a
temporary directory, attaches N listeners to the public room's hub, and hands the socket
route's handler (ws.handle_frame) the JSON htmx sends, as a socket would. --sections
splits the time per message among the handler's steps. --groups N spreads the listeners
over N (language, time zone) audiences (the sender's first): each message is then rendered
once per audience. docs/benchmarks.md quotes it.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class StandInSocket:
    """Takes every write whole; counts them."""

    writes = 0

    def send(self, data, flags=0):
        StandInSocket.writes += 1
        return len(data)

    def fileno(self):
        return -1


class StandInWS:
    """What Client needs of a simple-websocket Server: a socket, no extensions."""

    def __init__(self):
        self.sock = StandInSocket()
        self.ws = type("Proto", (), {"connection": None, "handshake": None})()
        self.connected = True


# The sender's audience first (no setting, no Accept-Language: English, UTC).
AUDIENCES = ["en UTC", "zh_Hans Asia/Shanghai", "en America/New_York", "zh_Hans UTC"]


def timed(obj, name, totals, label=None):
    """Wrap obj.name so that its CPU time adds up in totals[label]."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label or name] += time.process_time() - start

    setattr(obj, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=100, help="distinct listener accounts")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sections", action="store_true")
    parser.add_argument("--groups", type=int, default=1, choices=range(1, len(AUDIENCES) + 1),
                        help="(language, time zone) audiences among the listeners")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="chatapp-cost-")
    os.environ.update(SECRET_KEY="message-cost", DATABASE_URL=f"sqlite:///{tmp}/chatapp.sqlite3",
                      CHATAPP_INSTANCE_PATH=tmp, CHATAPP_UPLOAD_DIR=tmp)
    from flask_migrate import upgrade
    from flask_wtf.csrf import generate_csrf

    from chatapp import create_app
    from chatapp.models import Conversation, Membership, User, db
    from chatapp.realtime import get
    from chatapp.realtime import ws as route
    from chatapp.realtime.client import Client

    app = create_app({"MESSAGE_RATE": "1000000/second"})
    with app.app_context():
        upgrade()
        room = Conversation.public_room()
        db.session.commit()
        db.session.execute(User.__table__.insert(), [
            {"username": f"cost{i:05d}", "username_key": f"cost{i:05d}", "password_hash": "-"}
            for i in range(args.accounts + 1)
        ])
        ids = db.session.scalars(db.select(User.id).order_by(User.id)).all()
        db.session.execute(Membership.__table__.insert(), [
            {"conversation_id": room.id, "user_id": i, "last_read_id": 0} for i in ids
        ])
        db.session.commit()
        hub = get().hub
        for n in range(args.listeners):
            listener = Client(StandInWS(), ids[1 + n % args.accounts], room.id, queue_size=100,
                              send_timeout=5, ping_interval=30,
                              audience=AUDIENCES[n % args.groups])
            hub.attach(listener, lambda: ({}, 0))

        with app.test_request_context("/"):
            token = generate_csrf()
            db.session().expire_on_commit = False  # as in the socket route
            user = db.session.get(User, ids[0])
            conversation = db.session.get(Conversation, room.id)
            sender = Client(StandInWS(), user.id, room.id, queue_size=100, send_timeout=5,
                            ping_interval=30)

            def send(count: int) -> None:
                for i in range(count):
                    raw = json.dumps({"body": f"message {i} {time.monotonic_ns()}",
                                      "client_id": str(uuid.uuid4()), "csrf_token": token,
                                      "headers": {"HX-Request": "true"}})
                    route.handle_frame(sender, conversation, user, raw)
                    db.session.rollback()
                    gevent.sleep(0)

            send(50)  # warm-up: statement caches, templates
            totals: Counter = Counter()
            if args.sections:
                from chatapp import posting
                from chatapp.models import Message

                timed(route, "_parse", totals)
                for name in ("message_text", "check_rate"):
                    timed(posting, name, totals)
                timed(posting.Acknowledgements, "fresh", totals, "acknowledgement")
                timed(posting, "message_event", totals)
                timed(get().backplane, "publish", totals, "publish (fan-out)")
                timed(Message, "previous", totals, "  of which previous()")
                post = Message.post.__func__
                Message.post = classmethod(
                    lambda cls, *a, **k: _timed_call(post, totals, "post", cls, *a, **k))
                timed(db.session(), "commit", totals)
                from chatapp.realtime import sidebars

                timed(get().hub, "render_push", totals, "  of which other audiences")
            StandInSocket.writes = 0
            start = time.process_time()
            send(args.messages)
            cpu = time.process_time() - start
    per_message = 1e6 * cpu / args.messages
    print(f"{args.listeners} listeners ({args.accounts} accounts, {args.groups} audiences), "
          f"{args.messages} messages: "
          f"{per_message:.0f} µs of CPU per message"
          + (f", {1e6 * cpu / StandInSocket.writes:.2f} µs per write" if args.listeners else ""))
    for label, seconds in totals.most_common():
        print(f"  {label:24s} {1e6 * seconds / args.messages:7.0f} µs per message")


def _timed_call(function, totals, label, *args, **kwargs):
    start = time.process_time()
    try:
        return function(*args, **kwargs)
    finally:
        totals[label] += time.process_time() - start


if __name__ == "__main__":
    main()
