"""What a room costs per message: membership is checked in O(1) statements, and the
fan-out, as in the public room, does not grow with the number of members."""

from __future__ import annotations

from conftest import Person
from sqlalchemy import event
from test_private import ThreadedServer


def statements_for_one_room_message(app, members: int) -> int:
    """Statements issued while one message in a members-only room of `members` people
    reaches every member's socket on the room."""
    from chatapp.extensions import db
    from chatapp.models import Conversation, User

    reads = app.extensions["chatapp.realtime"].reads
    reads.interval = 3600  # flushed here, explicitly
    server = ThreadedServer(app)
    try:
        sender = Person(server, f"sender{members}").register()
        others = [Person(server, f"m{members}-{i:03}").register() for i in range(members - 1)]
        with app.app_context():
            people = [User.by_username(p.username) for p in others]
            room = Conversation.create_room(f"room {members}", True,
                                            User.by_username(sender.username), people)
            db.session.commit()
            room_id, engine = room.id, db.engine
        out = sender.connect(room_id)
        socks = [p.connect(room_id) for p in others]
        reads.flush()
        count = [0]

        def counter(*_):
            count[0] += 1

        event.listen(engine, "before_cursor_execute", counter)
        try:
            out.say("to the room")
            out.wait_for('hx-target="#composer"')
            for sock in socks:
                sock.wait_for("to the room")
            reads.flush()
        finally:
            event.remove(engine, "before_cursor_execute", counter)
        return count[0]
    finally:
        server.stop()


def test_a_room_message_costs_the_same_statements_for_3_or_30_members(app):
    few = statements_for_one_room_message(app, 3)
    many = statements_for_one_room_message(app, 30)
    print(f"statements for one room message: {few} with 3 members, {many} with 30")
    assert 0 < many <= few, (few, many)
