"""Read pointers, advanced in batches rather than once per recipient per message."""

from __future__ import annotations

import logging
import threading

from ..models import Membership, db

log = logging.getLogger(__name__)


class ReadTracker:
    """Collects "user U has seen message M in conversation C" and writes them together.

    A message to a busy room is read at once by everyone viewing it; writing each
    pointer as it happens would be one UPDATE per viewer per message. Instead the
    newest id per (user, conversation) is kept in memory and flushed in one
    transaction every `interval` seconds; on_saved(batch) then tells the other processes.
    """

    def __init__(self, app, on_saved, interval: float = 1.0):
        self.app = app
        self.on_saved = on_saved
        self.interval = interval
        self._pending: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self, user_ids, conversation_id: int, message_id: int) -> None:
        """Remember that these users have seen a message (written on the next flush)."""
        with self._lock:
            pending = self._pending
            for user_id in user_ids:
                key = (user_id, conversation_id)
                if pending.get(key, 0) < message_id:
                    pending[key] = message_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="reads")
                self._thread.start()

    def flush(self) -> None:
        """Write every pending pointer in one transaction."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        with self.app.app_context():
            try:
                Membership.advance(batch)
                db.session.commit()
            except Exception:  # noqa: BLE001 - keep the pointers for the next try
                log.exception("could not save %d read pointers", len(batch))
                db.session.rollback()
                with self._lock:
                    for key, message_id in batch.items():
                        if self._pending.get(key, 0) < message_id:
                            self._pending[key] = message_id
                return
            self.on_saved(batch)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()
