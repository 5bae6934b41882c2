"""The Chinese catalog is complete and current: every message marked in the templates and
the code has a translation, none is empty, fuzzy or left over, placeholders agree, and
what the app compiles at start-up says what the .po says.

Fixing a failure: `make translations`, fill in the new msgstr "" entries of
chatapp/translations/zh_Hans/LC_MESSAGES/messages.po (see docs/translations.md).
"""

from __future__ import annotations

import gettext
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from chatapp import i18n

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "chatapp" / "translations" / "zh_Hans" / "LC_MESSAGES" / "messages.po"


def extract(tmp_path: Path) -> Path:
    """What `make translations` extracts: every marked message of chatapp/, as a .pot."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "-q", "extract", "-F", "babel.cfg",
         "-k", "_l", "-k", "lazy_gettext", "--no-location", "--omit-header",
         "-o", str(pot), "chatapp"],
        cwd=ROOT, check=True,
    )
    return pot


def problems(pot_path: Path, po_path: Path) -> list[str]:
    """Everything wrong with a catalog against the extracted messages, one line each."""
    with open(pot_path, "rb") as f:
        template = read_po(f)
    with open(po_path, "rb") as f:
        catalog = read_po(f, locale="zh_Hans")
    wanted = {m.id for m in template if m.id}
    have = {m.id: m for m in catalog if m.id}
    found = [f"missing: {i!r}" for i in sorted(wanted - have.keys(), key=str)]
    found += [f"obsolete: {i!r}" for i in sorted(have.keys() - wanted, key=str)]
    found += [f"obsolete: {m.id!r}" for m in catalog.obsolete.values()]
    for msgid, message in have.items():
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(strings):
            found.append(f"untranslated: {msgid!r}")
        if message.fuzzy:
            found.append(f"fuzzy (stale): {msgid!r}")
    # Babel's own checks: the same %(name)s placeholders on both sides, plural forms.
    for message, errors in catalog.check():
        found += [f"{error}: {message.id!r}" for error in errors]
    return found


def test_every_marked_message_has_a_current_chinese_translation(tmp_path):
    assert problems(extract(tmp_path), PO) == []


def test_the_check_fails_on_missing_empty_fuzzy_and_obsolete_entries(tmp_path):
    pot = tmp_path / "t.pot"
    pot.write_text('msgid "Save"\nmsgstr ""\n\nmsgid "Cancel"\nmsgstr ""\n\n'
                   'msgid "Send"\nmsgstr ""\n\nmsgid "Hi %(name)s"\nmsgstr ""\n')
    po = tmp_path / "t.po"
    po.write_text('msgid "Save"\nmsgstr ""\n\n'  # empty
                  '#, fuzzy\nmsgid "Cancel"\nmsgstr "取消"\n\n'  # stale
                  'msgid "Hi %(name)s"\nmsgstr "你好 %(who)s"\n\n'  # wrong placeholder
                  'msgid "Gone"\nmsgstr "没了"\n')  # obsolete; "Send" missing
    found = problems(pot, po)
    assert "missing: 'Send'" in found
    assert "untranslated: 'Save'" in found
    assert "fuzzy (stale): 'Cancel'" in found
    assert "obsolete: 'Gone'" in found
    assert any("Hi %(name)s" in line and "untranslated" not in line for line in found)


def test_the_compiled_catalog_says_what_the_po_says(tmp_path):
    """The .mo is built from the .po at start-up (never committed, so never stale)."""
    i18n.compile_catalogs(str(PO.parent.parent.parent), str(tmp_path))
    mo = tmp_path / "zh_Hans" / "LC_MESSAGES" / "messages.mo"
    with open(mo, "rb") as f:
        translations = gettext.GNUTranslations(f)
    with open(PO, "rb") as f:
        catalog = read_po(f, locale="zh_Hans")
    for message in catalog:
        if not message.id:
            continue
        if message.context:
            assert translations.pgettext(message.context, message.id) == message.string
        elif isinstance(message.id, tuple):
            assert translations.ngettext(*message.id, 2) == message.string[0]
        else:
            assert translations.gettext(message.id) == message.string
    # Compiled again only when the .po is newer.
    before = mo.stat().st_mtime_ns
    i18n.compile_catalogs(str(PO.parent.parent.parent), str(tmp_path))
    assert mo.stat().st_mtime_ns == before


@pytest.mark.parametrize("path", sorted((ROOT / "chatapp" / "templates").rglob("*.html")),
                         ids=lambda p: str(p.relative_to(ROOT / "chatapp" / "templates")))
def test_templates_show_no_unmarked_words(path):
    """Text between tags is marked (a cheap net for what extraction cannot see)."""
    import re

    text = path.read_text()
    text = re.sub(r"{#.*?#}", "", text, flags=re.S)  # comments
    text = re.sub(r"{[{%].*?[%}]}", "", text, flags=re.S)  # expressions and tags
    text = re.sub(r"<(script|style|svg)\b.*?</\1>", "", text, flags=re.S)
    words = [w.strip() for w in re.findall(r">([^<>]+)<", text)]
    # What may stay as it is: the product's name, symbols, and emoji-free punctuation.
    allowed = {"chatapp", "#", "?", "·", "@", "(", ")", "", ",", "&#128274;"}
    unmarked = [w for w in words
                if w not in allowed and re.search(r"[A-Za-z]{2,}", w.replace("chatapp", ""))]
    assert unmarked == []
