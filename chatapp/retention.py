"""Retention: delete messages (and their image files) older than CHATAPP_RETENTION_DAYS.

Run by `flask --app chatapp prune`, from cron or a systemd timer (docs/operations.md):
one job for the whole deployment, however many workers or machines serve it, and no
greenlet in a worker competing with sockets for the event loop.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select

from . import storage
from .extensions import db
from .models import Image, Mention, Message, Reaction, utcnow

audit_log = logging.getLogger("chatapp.audit")
BATCH = 500  # rows per transaction: a large first prune never holds a long write lock


def prune(days: int) -> tuple[int, int]:
    """Delete messages created more than `days` days ago and their images; return (messages, images)."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    cutoff = utcnow() - timedelta(days=days)
    messages = images = 0
    while True:
        rows = db.session.execute(
            select(Message.id, Message.image_id)
            .where(Message.created_at < cutoff)
            .order_by(Message.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        message_ids = [m for m, _ in rows]
        image_ids = [i for _, i in rows if i is not None]
        files = db.session.execute(
            select(Image.path, Image.thumb_path).where(Image.id.in_(image_ids))
        ).all() if image_ids else []
        for dependent in (Mention, Reaction):  # SQLite may not enforce ON DELETE CASCADE
            db.session.execute(delete(dependent).where(dependent.message_id.in_(message_ids)))
        db.session.execute(delete(Message).where(Message.id.in_(message_ids)))
        if image_ids:
            db.session.execute(delete(Image).where(Image.id.in_(image_ids)))
        db.session.commit()
        # Files go after the commit: a crash between leaves unused files, never a
        # message whose image is missing.
        storage.delete_files(*(key for pair in files for key in pair))
        messages += len(message_ids)
        images += len(image_ids)
    # The audit table records an administrator's actions (it needs an actor); this is the
    # deployment's policy, so its record is this log line (and the command's output).
    audit_log.warning(
        "retention: deleted %d messages and %d images created before %s UTC (older than %d days)",
        messages, images, cutoff.isoformat(timespec="seconds"), days,
        extra={"action": "retention_prune", "messages": messages, "images": images,
               "cutoff": cutoff.isoformat(timespec="seconds")},
    )
    return messages, images
