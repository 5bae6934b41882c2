"""A message's text as HTML: a little Markdown, @mentions, then an allow-list sanitizer.

Rendered once when a message is stored or edited (Message.body_html), never per viewer.
markdown-it-py parses with raw HTML off and only the rules people use in chat (links
found in text, `code`, fenced code, *emphasis*, **strong**, line breaks); nh3 then keeps
only the tags and attributes listed here, whatever the parser emitted. No regular
expression ever looks at HTML: mentions are found in the parser's text tokens.
"""

from __future__ import annotations

import html as html_lib
import re

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .models.base import USERNAME_RE

# "@name" where a name starts (not inside an e-mail address or another word).
MENTION_RE = re.compile(r"(?<![\w@.])@([A-Za-z0-9_.-]{3,32})")
TAGS = {"p", "br", "a", "code", "pre", "em", "strong"}
ATTRIBUTES = {"a": {"href"}}
LINK_REL = "noopener noreferrer nofollow"


def _parser() -> MarkdownIt:
    md = MarkdownIt("zero", {"html": False, "linkify": True, "breaks": True, "typographer": False})
    md.enable(["emphasis", "backticks", "fence", "linkify", "autolink", "newline", "escape"])
    md.linkify.add("//", None)  # no protocol-relative links: a link says where it goes
    md.core.ruler.push("mentions", _mentions)
    return md


def candidates(text: str) -> set[str]:
    """Lower-case names that text may mention (to look up members before rendering)."""
    names = set()
    for match in MENTION_RE.finditer(text):
        name = match.group(1)
        names.add(name.lower())
        names.add(name.rstrip(".-").lower())  # "@bob." ends a sentence
    return {n for n in names if USERNAME_RE.match(n)}


def _mentions(state) -> None:
    """Turn "@name" in text (not code, not a link's text) into a link, for members only."""
    members: dict[str, str] = state.env.get("members") or {}
    found: set[str] = state.env.setdefault("mentioned", set())
    if not members:
        return
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children, in_link = [], 0
        for token in block.children:
            in_link += token.type == "link_open"
            in_link -= token.type == "link_close"
            if token.type != "text" or in_link:
                children.append(token)
                continue
            children.extend(_split(token.content, members, found))
        block.children = children


def _split(text: str, members: dict[str, str], found: set[str]) -> list[Token]:
    """Text tokens and mention links for one run of text."""
    out: list[Token] = []
    position = 0
    for match in MENTION_RE.finditer(text):
        name = match.group(1)
        key = name.lower() if name.lower() in members else name.rstrip(".-").lower()
        if key not in members:
            continue
        start, end = match.start(), match.start() + 1 + len(key)
        if start > position:
            out.append(_text(text[position:start]))
        username = members[key]
        link = Token("link_open", "a", 1)
        link.attrs = {"href": f"/dm/{username}", "class": "mention"}
        out += [link, _text("@" + text[start + 1:end]), Token("link_close", "a", -1)]
        found.add(key)
        position = end
    if position < len(text):
        out.append(_text(text[position:]))
    return out


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


_md = _parser()
# Characters that start something the parser turns into markup (emphasis, code, fences,
# links, e-mail addresses, mentions, line breaks, escapes). Text without any of them is
# one escaped paragraph: most chat lines skip the parser and sanitizer (~0.3 ms each).
SPECIAL = re.compile(r"[*_`~:.@<\\\n\r]")


def render(text: str, members: dict[str, str] | None = None) -> tuple[str, set[str]]:
    """The sanitized HTML of a message's text, and the (lower-case) names it mentions.

    members maps lower-case usernames to usernames of those who may be mentioned here.
    """
    if not SPECIAL.search(text):
        return f"<p>{html_lib.escape(text, quote=False)}</p>", set()
    env = {"members": members or {}}
    html = _md.render(text, env)
    return sanitize(html), env.get("mentioned", set())


def sanitize(html: str) -> str:
    """Keep only the tags and attributes a message may have; links open safely apart."""
    return nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        allowed_classes={"a": {"mention"}},  # ours; the parser emits no class from text
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    ).strip()
