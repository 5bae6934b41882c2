"""Flask-SocketIO under gevent: persist each message, render it once, emit it to the room.

The smallest honest equivalent of chatapp's public room on the Socket.IO stack: one
gunicorn gevent worker, SQLite in WAL mode, a Jinja fragment rendered once per message
and broadcast to the room "public". No accounts (chatapp's login, CSRF and Origin checks
are extra work the peer is spared).
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sqlite3  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from flask import Flask, render_template_string  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

FRAGMENT = """<article id="message-{{ id }}" class="message"><header><span class="author">\
{{ author }}</span> <time>{{ at }}</time></header><p class="body">{{ body }}</p></article>"""

app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent", cors_allowed_origins="*")
db = sqlite3.connect(os.environ["PEER_DB"], check_same_thread=False, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, author TEXT,"
           " body TEXT, created_at TEXT)")


@app.route("/")
def index():
    """A liveness page."""
    return "ok"


@socketio.on("connect")
def connect():
    """Every socket listens to the public room."""
    join_room("public")


@socketio.on("message")
def message(data):
    """Store the message, render it once, send it to everyone in the room."""
    body = str(data.get("body", ""))[:4000]
    at = datetime.now(timezone.utc).isoformat()
    cur = db.execute("INSERT INTO messages (author, body, created_at) VALUES (?, ?, ?)",
                     ("anonymous", body, at))
    html = render_template_string(FRAGMENT, id=cur.lastrowid, author="anonymous", at=at,
                                  body=body)
    socketio.emit("message", html, to="public")
