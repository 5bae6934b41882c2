"""What search sees of a text: folded words, Chinese/Japanese/Korean bigrams, and queries.

Both engines index the same list of terms, computed here, so they match the same
messages. Word tokenizers do not split Chinese ("下周发布新版本" is one "word" to them),
so each run of CJK characters becomes its overlapping pairs of characters (下周 周发 发布
布新 新版 版本) and its last character alone (本). A query's CJK run becomes the same
pairs, required next to each other: "发布" finds any text with 发布 anywhere inside a
run, and so does any longer substring. Other words are folded (NFKC, case, Latin
accents) and matched by prefix: "deplo" finds "deployment".

A query is parsed into Terms (a run of tokens that must be adjacent, the last one
perhaps a prefix), plus from: and in: filters. Nothing from the query reaches an engine
unquoted: a token is only ever letters and digits.
"""

from __future__ import annotations

from flask_babel import gettext as _
import re
import unicodedata
from dataclasses import dataclass, field

# Han (with extensions and compatibility ideographs), kana, Hangul, and CJK symbols'
# ideographic iteration marks: scripts written without spaces between words.
CJK = (
    "\u3005\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f\uf900-\ufaff\U00020000-\U0003134f"
)
WORDS = re.compile(rf"[{CJK}]+|(?:(?![{CJK}])[^\W_])+")
IS_CJK = re.compile(rf"[{CJK}]")
MAX_QUERY_CHARS = 200
MAX_TERMS = 8
MAX_TOKEN_CHARS = 64  # longer "words" (a pasted hash) are cut: enough to find them


def fold(text: str) -> str:
    """Text as search compares it: NFKC, case-folded, Latin letters without accents."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():
        return text
    out = []
    for char in unicodedata.normalize("NFD", text):
        # Drop accents on Latin letters only: kana's voicing marks change the word.
        if unicodedata.combining(char) and out and out[-1] < "\u0250":
            continue
        out.append(char)
    return unicodedata.normalize("NFC", "".join(out))


def _run_tokens(run: str, last: bool) -> list[str]:
    """The tokens a CJK run stands for: its pairs, and its last character unless it ends
    a query (a query's run may sit anywhere inside a stored run)."""
    if len(run) == 1:
        return [run]
    pairs = [run[i:i + 2] for i in range(len(run) - 1)]
    return pairs if last else pairs + [run[-1]]


def index_tokens(text: str) -> list[str]:
    """Every token of a message, in order, for the index."""
    tokens = []
    for word in WORDS.findall(fold(text)):
        if IS_CJK.match(word):
            tokens.extend(_run_tokens(word, last=False))
        else:
            tokens.append(word[:MAX_TOKEN_CHARS])
    return tokens


def index_text(text: str) -> str:
    """A message's tokens as one space-separated string, what both engines index."""
    return " ".join(index_tokens(text))


@dataclass(frozen=True)
class Term:
    """Tokens that must appear next to each other; the last may be a prefix."""

    tokens: tuple[str, ...]
    prefix: bool
    # What to highlight: the folded words as typed (CJK runs stay whole).
    words: tuple[str, ...]


def term(text: str, phrase: bool = False) -> Term | None:
    """The Term a bare word or a quoted phrase stands for, or None if it has no letters."""
    words = WORDS.findall(fold(text))
    if not words:
        return None
    tokens: list[str] = []
    for i, word in enumerate(words):
        if IS_CJK.match(word):
            tokens.extend(_run_tokens(word, last=i == len(words) - 1))
        else:
            tokens.append(word[:MAX_TOKEN_CHARS])
    last = words[-1]
    # A prefix needs two letters (one would match nearly everything), and a CJK run
    # already matches anywhere; a single CJK character is a prefix of its pairs.
    if IS_CJK.match(last):
        prefix = len(last) == 1
    else:
        prefix = not phrase and len(last) >= 2 and len(last) < MAX_TOKEN_CHARS
    return Term(tuple(tokens), prefix, tuple(words))


@dataclass
class Query:
    """A parsed search: terms (all must match) and filters by author and conversation."""

    text: str
    terms: list[Term] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.terms or self.authors or self.rooms)


PARTS = re.compile(r'"([^"]*)"?|(\S+)')


def parse(text: str) -> Query:
    """Read what a person typed: words, "phrases", from:name and in:#room."""
    text = (text or "").replace("\x00", "").strip()
    query = Query(text=text[:MAX_QUERY_CHARS])
    if len(text) > MAX_QUERY_CHARS:
        query.problem = _("Searches can be at most %(limit)d characters; shorten yours.",
                          limit=MAX_QUERY_CHARS)
        return query
    for quoted, bare in PARTS.findall(text):
        if bare:
            key, _colon, value = bare.partition(":")
            if value and key.lower() == "from":
                query.authors.append(value.lstrip("@"))
                continue
            if value and key.lower() == "in":
                query.rooms.append(value.lstrip("#"))
                continue
        found = term(quoted if quoted else bare, phrase=bool(quoted))
        if found is not None and found not in query.terms:
            query.terms.append(found)
    if len(query.terms) > MAX_TERMS:
        query.problem = _("Use at most %(limit)d words or phrases in one search.", limit=MAX_TERMS)
    return query


def fts5_match(terms: list[Term]) -> str:
    """The terms as an SQLite FTS5 expression (every token quoted: no operators)."""
    return " AND ".join(
        '"' + " ".join(t.tokens) + '"' + ("*" if t.prefix else "") for t in terms
    )


def tsquery(terms: list[Term]) -> str:
    """The terms as a PostgreSQL tsquery (every token quoted: no operators)."""
    parts = []
    for t in terms:
        quoted = [f"'{token}'" for token in t.tokens]
        if t.prefix:
            quoted[-1] += ":*"
        parts.append("(" + " <-> ".join(quoted) + ")")
    return " & ".join(parts)


def highlight_patterns(terms: list[Term]) -> list[re.Pattern]:
    """Regular expressions over folded text that find what each term matched."""
    patterns = []
    for t in terms:
        pieces = []
        for word in t.words:
            pieces.append(re.escape(word))
        body = r"[\W_]*".join(pieces)
        # A word matches from its start; a CJK run anywhere.
        start = "" if IS_CJK.match(t.words[0]) else rf"(?<!(?![{CJK}])[^\W_])"
        if IS_CJK.match(t.words[-1]):
            end = ""
        elif t.prefix:  # the rest of the word
            end = rf"(?:(?![{CJK}])[^\W_])*"
        else:  # the whole word, no more
            end = rf"(?!(?![{CJK}])[^\W_])"
        patterns.append(re.compile(start + body + end))
    return patterns
