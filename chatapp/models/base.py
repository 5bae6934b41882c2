"""What every model module shares: limits, names and the clock."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# ASCII only (no confusables or direction marks); \Z, not $, which also allows "name\n".
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}\Z")
# The largest id a row can have: ids are 32-bit integers on PostgreSQL (which refuses to
# compare them with larger numbers), so larger numbers from URLs are simply absent.
MAX_ID = 2**31 - 1
PUBLIC_KEY = "public"
# Messages by one author closer together than this are shown as one group.
GROUP_GAP = timedelta(minutes=5)


def utcnow() -> datetime:
    """Return the current time as a naive UTC datetime (portable across databases)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
