"""What counts as text people may store: encodable as UTF-8, and visible."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
import unicodedata

from wtforms.validators import StopValidation

# Letters that render as nothing (Hangul fillers); everything else invisible is found by
# its Unicode category below.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# Format characters (zero-width space, joiners, word joiner, BOM, direction marks: Cf),
# spaces (Zs), line and paragraph separators (Zl, Zp) and control characters (Cc).
INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp", "Cc"})
UNENCODABLE = _l("That text holds a broken character (a lone surrogate). Remove it and try again.")


def encodable(text: str) -> bool:
    """Whether the text can be stored and sent: lone UTF-16 surrogates cannot be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def invisible(char: str) -> bool:
    """Whether a character shows nothing on its own (space, zero-width, control)."""
    return (
        char.isspace()
        or char in BLANK_LETTERS
        or unicodedata.category(char) in INVISIBLE_CATEGORIES
    )


def blank(text: str) -> bool:
    """Whether the text would look empty: nothing, or only invisible characters."""
    return all(invisible(char) for char in text)


class Encodable:
    """A form validator: refuse text that cannot be encoded as UTF-8, saying so.

    It stops the field's other checks: a later one (a database lookup of the name, a
    password hash) would fail on the same character with an exception.
    """

    def __call__(self, form, field) -> None:
        if isinstance(field.data, str) and not encodable(field.data):
            raise StopValidation(UNENCODABLE)
