"""Formatting: a little Markdown, and nothing a message's author could use to run script,
restyle the page or drive htmx. Hostile inputs arrive as text, always."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from chatapp.formatting import render, sanitize

MEMBERS = {"bob": "bob", "b_o": "b_o"}

# (input, fragments that must not appear in the output, as markup)
HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD4=)",
    "<javascript:alert(1)>",
    "javascript:alert(1)",
    '<div hx-get="/admin/" hx-trigger="load">x</div>',
    '<button hx-post="/messages/1/delete" hx-trigger="load">x</button>',
    '<span hx-on:click="alert(1)">x</span>',
    '<span hx-on::load="alert(1)">x</span>',
    '<form hx-ws:send>x</form>',
    '<hx-partial hx-target="#sidebar" hx-swap="outerHTML">owned</hx-partial>',
    '<p onmouseover="alert(1)">hover</p>',
    '<iframe src="//evil.example"></iframe>',
    "<style>body{display:none}</style>",
    '<a href="https://ok.example" onclick="alert(1)" hx-get="/x">ok</a>',
    "**<b onclick=alert(1)>x</b>**",
    "*<i>nested *<em>markup</em>*</i>*",
    "`<script>alert(1)</script>`",
    "```\n<script>alert(1)</script>\n```",
    "<<script>script>alert(1)<</script>/script>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<!-- <script>alert(1)</script> -->",
    '"><img src=x onerror=alert(1)>',
    "'><svg/onload=alert(1)>",
    "@bob<script>alert(1)</script>",
    "https://example.com/\"onmouseover=\"alert(1)",
    "https://example.com/<script>",
    "[x](https://example.com \"title\" onclick=alert(1))",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "[x](&#106;avascript:alert(1))",
    "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
]

ALLOWED_TAGS = {"p", "br", "a", "code", "pre", "em", "strong"}


class Elements(HTMLParser):
    """Every element and its attributes, as an HTML parser reads them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, attrs))


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_arrives_as_text(text):
    html, _ = render(text, MEMBERS)
    seen = Elements()
    seen.feed(html)  # as a browser's parser would read it
    for tag, attributes in seen.elements:
        assert tag in ALLOWED_TAGS, (text, html)
        for name, value in attributes:
            assert name in {"href", "class", "target", "rel"}, (text, html)
            if name == "href":
                assert re.match(r"(https?://|mailto:|/dm/)", value), (text, html)
            if name == "class":
                assert value == "mention", (text, html)


def test_links_in_text_open_safely_in_a_new_tab():
    html, _ = render("see https://example.com/a?b=1&c=2 now", MEMBERS)
    assert ('<a href="https://example.com/a?b=1&amp;c=2" target="_blank" '
            'rel="noopener noreferrer nofollow">https://example.com/a?b=1&amp;c=2</a>') in html


def test_code_keeps_its_spacing_and_markup_in_it_is_text():
    html, _ = render("use `a  <b>  c`", MEMBERS)
    assert "<code>a  &lt;b&gt;  c</code>" in html
    html, _ = render("```\n  indented\n    <i>more</i>\n```", MEMBERS)
    assert html == "<pre><code>  indented\n    &lt;i&gt;more&lt;/i&gt;\n</code></pre>"


def test_emphasis_and_strong_and_nothing_else():
    html, _ = render("*soft* **loud** # not a heading\n> not a quote\n- not a list", MEMBERS)
    assert "<em>soft</em>" in html and "<strong>loud</strong>" in html
    assert "<h1" not in html and "<blockquote" not in html and "<li" not in html
    assert "# not a heading" in html and "&gt; not a quote" in html


def test_mentions_only_of_the_members_given_and_never_in_code_or_links():
    html, named = render("@bob @b_o @eve `@bob` https://x.example/@bob mail@bob.example", MEMBERS)
    assert named == {"bob", "b_o"}
    assert html.count('class="mention"') == 2
    assert "<code>@bob</code>" in html and "@eve" in html


def test_the_sanitizer_alone_drops_what_the_parser_could_never_emit():
    dirty = ('<p class="x" style="color:red" hx-get="/admin/">a</p><a href="javascript:x()" '
             'class="mention evil">b</a><img src=x><script>c()</script>')
    clean = sanitize(dirty)
    assert clean.startswith("<p>a</p>")
    assert "hx-get" not in clean and "style" not in clean and "script" not in clean
    assert "javascript" not in clean and "<img" not in clean and "evil" not in clean


def test_hostile_text_through_the_page_is_text(app, auth, client):
    """End to end: stored through the one road, shown on the page, still only text."""
    import uuid

    from chatapp import posting
    from chatapp.models import Conversation, User

    auth.register("alice")
    with app.test_request_context():
        for text in HOSTILE:
            posting.post(Conversation.public_room(), User.by_username("alice"), text,
                         str(uuid.uuid4()))
    page = client.get("/").get_data(as_text=True)
    bubbles = re.findall(r'<div class="bubble">(.*?)</div>', page, re.S)
    assert len(bubbles) == len(HOSTILE)
    for bubble in bubbles:
        seen = Elements()
        seen.feed(bubble)
        for tag, attributes in seen.elements:
            assert tag in ALLOWED_TAGS, bubble
            assert {name for name, _ in attributes} <= {"href", "class", "target", "rel"}, bubble
    seen = Elements()
    seen.feed(page)
    # Nothing on the whole page runs an event handler or an htmx trigger on load.
    for tag, attributes in seen.elements:
        for name, value in attributes:
            assert not name.startswith("on") and not name.startswith("hx-on"), (tag, name)
            assert not (name == "hx-trigger" and "load" in (value or "")), (tag, name)


def test_plain_text_skips_the_parser_with_the_same_result():
    """Lines with nothing the parser would format take a shortcut; it must change nothing."""
    import random
    import string

    from chatapp.formatting import SPECIAL, _md

    rng = random.Random(16)
    alphabet = string.printable.replace("\x0b", "").replace("\x0c", "") + "éß漢😀\u200b"
    plain = 0
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))).strip()
        if not text or SPECIAL.search(text):
            continue
        plain += 1
        assert render(text)[0] == sanitize(_md.render(text, {"members": {}})), text
    assert plain > 50
    for text in ('a & b < c > d "e" \'f\' #g -h [i](j) !k', "& &amp; &#106;"):
        assert render(text)[0] == sanitize(_md.render(text, {"members": {}})), text
