"""Languages and time zones: which one a person sees, and the helpers that format for them.

The language is the signed-in person's `language` setting when it names a supported
locale, else the best match of the browser's Accept-Language, else English. The time zone
is their `time_zone` setting when it is a known IANA name, else UTC. Unknown values (an
old setting, a hand-edited row, a strange header) fall back; they never break a page.

Pushes are rendered outside the request of the person who receives them: `audience()`
gives the "language time-zone" key of the current request or socket, and `rendering_as()`
renders for a given key (realtime/hub.py renders once per key among the recipients).

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
from flask_babel import Babel, format_datetime, get_locale, get_timezone, get_translations
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


def _machine_api() -> bool:
    """The JSON API (/api/) is read by programs: its errors stay English, its times UTC."""
    return has_request_context() and request.path.startswith("/api/")


def select_locale() -> str:
    """Flask-Babel's locale selector: forced key, the person's setting, their browser, English."""
    forced = g.get("i18n_audience")
    if forced:
        return forced[0]
    if _machine_api():
        return DEFAULT_LANGUAGE
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
    if _machine_api():
        return DEFAULT_TIME_ZONE
    user = _user()
    return known_time_zone(getattr(user, "time_zone", None)) or DEFAULT_TIME_ZONE


def audience() -> str:
    """The audience key ("language time-zone") of the current request: a push rendered for
    it reads right to everyone whose key is the same (realtime/hub.py groups by it)."""
    return f"{select_locale()} {select_time_zone()}"


def _forget_cached():
    """Drop the locale, zone and catalog Flask-Babel cached on the current context."""
    from flask_babel import refresh

    refresh()


def _catalog():
    """The current catalog, looked up once per locale and context rather than per string
    (Flask-Babel's own lookup costs several context and locale look-ups per call, and a
    message push holds half a dozen strings)."""
    from flask_babel import _get_current_context

    ctx = _get_current_context()
    if ctx is None:
        return get_translations()
    locale = getattr(ctx, "babel_locale", None)
    cached = getattr(ctx, "chatapp_catalog", None)
    if locale is None or cached is None or cached[0] is not locale:
        catalog = get_translations()  # selects (and caches) the locale too
        ctx.chatapp_catalog = cached = (ctx.babel_locale, catalog)
    return cached[1]


@contextmanager
def rendering_as(key: str | None):
    """Render templates and format dates for the given audience key (see audience())."""
    if key is None:
        yield
        return
    language, _, zone_name = key.partition(" ")
    forced = (known_language(language) or DEFAULT_LANGUAGE,
              known_time_zone(zone_name) or DEFAULT_TIME_ZONE)
    previous = g.get("i18n_audience")
    if previous == forced:
        yield
        return
    g.i18n_audience = forced
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
    """The moment in the viewer's time zone (UTC outside a request or push)."""
    return _aware(value).astimezone(get_timezone() or timezone.utc)


def local_date(value: datetime) -> date:
    """The viewer's calendar day of a stored moment (day separators group by it)."""
    return local(value).date()


def day_of():
    """local_date with the viewer's zone looked up once, for a whole list of messages."""
    zone = get_timezone() or timezone.utc
    return lambda value: _aware(value).astimezone(zone).date()


# Patterns per language (CLDR syntax). English keeps the house formats (ISO-like dates in
# tables, "Sunday 22 November 2026" over a day); Chinese uses its own order and 年月日.
_PATTERNS = {
    "en": {"when": "yyyy-MM-dd HH:mm", "when_seconds": "yyyy-MM-dd HH:mm:ss",
           "day": "yyyy-MM-dd", "day_heading": "EEEE d MMMM y"},
    "zh": {"when": "y年M月d日 HH:mm", "when_seconds": "y年M月d日 HH:mm:ss",
           "day": "y年M月d日", "day_heading": "full"},
}


def _pattern(name: str) -> str:
    locale = get_locale()
    language = locale.language if locale is not None else DEFAULT_LANGUAGE
    return _PATTERNS.get(language, _PATTERNS["en"])[name]


def clock(value: datetime) -> str:
    """A message's time of day in the viewer's zone: 14:05 (24-hour in both languages,
    the same digits: strftime, at a fraction of the cost of a CLDR pattern per message)."""
    return local(value).strftime("%H:%M")


def when(value: datetime) -> str:
    """Date and minute (admin tables, search results) in the viewer's zone and language."""
    return format_datetime(_aware(value), _pattern("when"))


def when_seconds(value: datetime) -> str:
    """Date and time to the second (audit log)."""
    return format_datetime(_aware(value), _pattern("when_seconds"))


def day(value: datetime) -> str:
    """A calendar day (creation dates in tables)."""
    return _babel_format_date(local_date(value), _pattern("day"), locale=get_locale())


def day_heading(value: datetime, today: date | None = None) -> str:
    """A day separator: Today, Yesterday (今天, 昨天), or the full date."""
    shown = local_date(value)
    today = today or local_date(datetime.now(timezone.utc))
    if shown == today:
        return gettext("Today")
    if (today - shown).days == 1:
        return gettext("Yesterday")
    return _babel_format_date(shown, _pattern("day_heading"), locale=get_locale())


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
    app.jinja_env.install_gettext_callables(  # as Flask-Babel's, with the catalog kept
        gettext=lambda s: _catalog().ugettext(s),
        ngettext=lambda s, p, n: _catalog().ungettext(s, p, n),
        pgettext=lambda c, s: _catalog().upgettext(c, s),
        npgettext=lambda c, s, p, n: _catalog().unpgettext(c, s, p, n),
        newstyle=True,
    )
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


def N_(message: str) -> str:
    """Mark a string for translation where it is defined (pybabel finds N_), and translate
    it where it is shown (`_(label)` in a template): for English keys of lookup tables."""
    return message
