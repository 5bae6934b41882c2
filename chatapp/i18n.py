"""Languages and time zones: which one a person sees, and the helpers that format for them.

The language is the signed-in person's `language` setting when it names a supported
locale, else the best match of the browser's Accept-Language, else English. The time zone
is their `time_zone` setting when it is a known IANA name, else UTC. Unknown values (an
old setting, a hand-edited row, a strange header) fall back; they never break a page.

Pushes are rendered outside the request of the person who receives them: `audience()`
gives the (language, time zone) key of the current request or socket, and `rendering_as()`
renders under a given key (realtime/hub.py renders once per key among the recipients).

Catalogs: chatapp/translations/<locale>/LC_MESSAGES/messages.po is the source; the
compiled .mo is built from it at start-up into the instance folder (`compile_catalogs`),
so a fresh clone runs with nothing extra and the .mo can never be stale.
"""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import contextmanager
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale
from babel.dates import format_date as _babel_format_date
from flask import current_app, g, has_request_context, request
from flask_babel import Babel, format_datetime, format_time, get_locale, get_timezone
from flask_babel import gettext, lazy_gettext, ngettext  # noqa: F401 - re-exported

# Locale identifiers as Babel names them; the first is the default.
LANGUAGES: dict[str, str] = {"en": "English", "zh_Hans": "中文 (简体)"}
DEFAULT_LANGUAGE = "en"
DEFAULT_TIME_ZONE = "UTC"
TRANSLATIONS_DIR = os.path.join(os.path.dirname(__file__), "translations")

babel = Babel()


@functools.cache
def time_zones() -> frozenset[str]:
    """Every IANA time zone name this machine knows (zoneinfo, or the tzdata package)."""
    return frozenset(available_timezones())


def known_language(value: str | None) -> str | None:
    """The supported locale a stored or submitted language value names, else None."""
    if not value:
        return None
    if value in LANGUAGES:
        return value
    lowered = value.replace("-", "_").lower()
    for code in LANGUAGES:
        if code.lower() == lowered:
            return code
    return None


def known_time_zone(value: str | None) -> str | None:
    """The value when it is a known IANA time zone name, else None."""
    return value if value and value in time_zones() else None


def from_accept_language(header_values) -> str:
    """The best supported locale for an Accept-Language header (werkzeug's parsed form).

    Any Chinese (zh, zh-CN, zh-Hans, zh-TW ...) picks Simplified Chinese, our only Chinese;
    any English picks English; the first acceptable one in the browser's order wins.
    """
    for value, quality in header_values:
        if quality <= 0:
            continue
        primary = value.replace("_", "-").split("-")[0].lower()
        if primary == "zh":
            return "zh_Hans"
        if primary == "en":
            return "en"
    return DEFAULT_LANGUAGE


def _user():
    """The signed-in person of this request, or None (never loads a user outside one)."""
    if not has_request_context():
        return None
    from flask_login import current_user

    return current_user if current_user and current_user.is_authenticated else None


def select_locale() -> str:
    """Flask-Babel's locale selector: forced key, the person's setting, their browser, English."""
    forced = g.get("i18n_audience")
    if forced:
        return forced[0]
    user = _user()
    chosen = known_language(getattr(user, "language", None)) if user else None
    if chosen:
        return chosen
    if has_request_context():
        return from_accept_language(request.accept_languages)
    return DEFAULT_LANGUAGE


def select_time_zone() -> str:
    """Flask-Babel's time zone selector: forced key, the person's setting, else UTC."""
    forced = g.get("i18n_audience")
    if forced:
        return forced[1]
    user = _user()
    return known_time_zone(getattr(user, "time_zone", None)) or DEFAULT_TIME_ZONE


def audience() -> tuple[str, str]:
    """The (language, time zone) key of the current request: what its pushes render as."""
    return select_locale(), select_time_zone()


def audience_of(user, accept_languages=None) -> tuple[str, str]:
    """The (language, time zone) key for a person, given their browser's Accept-Language."""
    language = known_language(getattr(user, "language", None))
    if not language:
        language = from_accept_language(accept_languages or [])
    return language, known_time_zone(getattr(user, "time_zone", None)) or DEFAULT_TIME_ZONE


def _forget_cached():
    """Drop the locale, zone and catalog Flask-Babel cached on the current context."""
    from flask_babel import refresh

    refresh()


@contextmanager
def rendering_as(key: tuple[str, str] | None):
    """Render templates and format dates as the given (language, time zone) audience."""
    if key is None:
        yield
        return
    previous = g.get("i18n_audience")
    if previous == key:
        yield
        return
    g.i18n_audience = key
    _forget_cached()
    try:
        yield
    finally:
        if previous is None:
            g.pop("i18n_audience", None)
        else:
            g.i18n_audience = previous
        _forget_cached()


# --- formatting: every time a person reads is in their zone and language -------------

def _aware(value: datetime) -> datetime:
    """Stored datetimes are naive UTC; make them aware so conversion is explicit."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def local(value: datetime) -> datetime:
    """The moment in the viewer's time zone."""
    return _aware(value).astimezone(get_timezone())


def local_date(value: datetime) -> date:
    """The viewer's calendar day of a stored moment (day separators group by it)."""
    return local(value).date()


def clock(value: datetime) -> str:
    """A message's time of day: 14:05 in English, 14:05 in Chinese (short, 24-hour)."""
    return format_time(_aware(value), "HH:mm")


def when(value: datetime) -> str:
    """Date and minute (admin tables, search results), per locale."""
    return format_datetime(_aware(value), "short")


def when_seconds(value: datetime) -> str:
    """Date and time to the second (audit log), per locale."""
    return format_datetime(_aware(value), "medium")


def day(value: datetime) -> str:
    """A calendar day (creation dates in tables), per locale."""
    return _babel_format_date(local(value).date(), "medium", locale=get_locale())


def day_heading(value: datetime, today: date | None = None) -> str:
    """A day separator: Today, Yesterday, or the full date, in the viewer's language."""
    shown = local_date(value)
    today = today or local_date(datetime.now(timezone.utc))
    if shown == today:
        return gettext("Today")
    if (today - shown).days == 1:
        return gettext("Yesterday")
    return _babel_format_date(shown, "full", locale=get_locale())


def html_lang() -> str:
    """The lang attribute of a page: en, or zh-Hans."""
    return str(get_locale() or DEFAULT_LANGUAGE).replace("_", "-")


# --- catalogs ---------------------------------------------------------------------------

def compile_catalogs(source: str, target: str) -> None:
    """Compile each locale's messages.po in `source` to a messages.mo under `target`.

    Only when the .mo is missing or older than the .po; written to a temporary file and
    renamed, so workers starting together never read half a file.
    """
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for locale in os.listdir(source) if os.path.isdir(source) else ():
        po_path = os.path.join(source, locale, "LC_MESSAGES", "messages.po")
        if not os.path.isfile(po_path):
            continue
        out_dir = os.path.join(target, locale, "LC_MESSAGES")
        mo_path = os.path.join(out_dir, "messages.mo")
        if (os.path.isfile(mo_path)
                and os.path.getmtime(mo_path) >= os.path.getmtime(po_path)):
            continue
        os.makedirs(out_dir, exist_ok=True)
        with open(po_path, "rb") as po_file:
            catalog = read_po(po_file, locale=locale)
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as mo_file:
            write_mo(mo_file, catalog)  # fuzzy entries left out, as pybabel compile does
        os.replace(tmp, mo_path)


def init_app(app) -> None:
    """Bind Flask-Babel: selectors, compiled catalogs, and the template helpers."""
    compiled = os.path.join(app.instance_path, "translations")
    compile_catalogs(TRANSLATIONS_DIR, compiled)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", DEFAULT_TIME_ZONE)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = compiled
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_time_zone)
    app.jinja_env.globals.update(
        html_lang=html_lang, LANGUAGES=LANGUAGES, local_date=local_date,
    )
    app.jinja_env.filters.update(
        clock=clock, when=when, when_seconds=when_seconds, day=day, day_heading=day_heading,
    )


def locale_display_name(code: str) -> str:
    """A locale's name in that language (for a language picker)."""
    return LANGUAGES.get(code) or Locale.parse(code).get_display_name()


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of a known name (callers check with known_time_zone first)."""
    return ZoneInfo(name)
