"""The real-time machinery of one process, as the app holds it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .hub import Hub
from .reads import ReadTracker

EXTENSION = "chatapp.realtime"


@dataclass
class Realtime:
    """The real-time machinery of one process."""

    hub: Hub
    backplane: object
    reads: ReadTracker
    presence: object = None  # presence.Presence


def get() -> Realtime:
    """The real-time machinery of the current app."""
    return current_app.extensions[EXTENSION]
