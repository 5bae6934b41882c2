"""The cache of rendered messages (chatapp/fragments.py), through the real pages: a page from
the cache is the page rendered afresh; an edit, a deletion, a reaction or a renamed author
shows at once (on this worker and on another sharing the database); each language and time
zone gets its own; and people with different memberships never see each other's messages
or sidebars, whatever the cache holds. Both databases."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from test_messages import post  # through the one road; its push caches the article
from test_rooms import Person, quick_register

from chatapp.fragments import EXTENSION, FragmentCache

ARTICLE = re.compile(r'<article id="message-(\d+)"')
MESSAGES = re.compile(r'<div id="messages".*?</div>\s*</div>\s*<p id="typing"', re.S)


@pytest.fixture
def people(app):
    """ann, ben and cat, logged in through the login form."""
    from chatapp.models import db

    with app.app_context():
        for name in ("ann", "ben", "cat"):
            quick_register(name)
        db.session.commit()
    return {name: Person(app, name) for name in ("ann", "ben", "cat")}


def cache_of(app) -> FragmentCache:
    return app.extensions[EXTENSION]


def messages_of(response) -> str:
    """The message list of a page (the part assembled from fragments)."""
    assert response.status_code == 200, response.status_code
    return MESSAGES.search(response.get_data(as_text=True)).group(0)


def fresh(app, person: Person, path: str = "/") -> str:
    """The page's message list rendered with nothing cached."""
    cache_of(app).clear()
    return messages_of(person.get(path))


def token(person: Person) -> str:
    from conftest import csrf_from

    return csrf_from(person.get("/").get_data(as_text=True))


def test_a_page_from_the_cache_is_the_page_rendered_afresh(app, people):
    ann = people["ann"]
    for n in range(6):  # two runs each (grouping), formatting, a mention, a day apart
        post(app, ("ann", "ben")[n // 2 % 2], f"**hello** #{n} @ben `x`",
             ago=timedelta(days=1) if n < 2 else None)
    post(app, "ann", "a link https://example.com and <b>tags</b>")
    first = messages_of(ann.get("/"))
    cache = cache_of(app)
    hits = cache.hits
    again = messages_of(ann.get("/"))
    assert cache.hits - hits == 7  # every article came from the cache
    assert again == first == fresh(app, ann)
    assert len(ARTICLE.findall(first)) == 7 and "day-separator" in first
    # The push rendered the article already: a page after it renders none.
    misses = cache.misses
    post(app, "ben", "pushed first")
    assert cache.misses == misses + 1  # the push's rendering
    assert "pushed first" in messages_of(ann.get("/"))
    assert cache.misses == misses + 1


def test_a_history_page_and_a_permalink_are_the_fresh_rendering_too(app, people):
    ann = people["ann"]
    app.config["HISTORY_PAGE_SIZE"] = 3
    ids = [post(app, "ann" if n % 3 else "ben", f"message {n}") for n in range(8)]
    history = f"/c/1/messages?before={ids[5]}"
    cached = ann.get(history).get_data(as_text=True)
    assert cached == ann.get(history).get_data(as_text=True)
    cache_of(app).clear()
    assert ann.get(history).get_data(as_text=True) == cached
    assert ARTICLE.findall(cached) == [str(i) for i in ids[2:5]]
    # A permalink highlights its target for that page alone: not from the cache, nor into it.
    permalink = ann.get(f"/c/1/@{ids[4]}").get_data(as_text=True)
    assert permalink.count("message-target") == 1
    assert "message-target" not in messages_of(ann.get("/"))


def test_edits_deletions_reactions_and_renames_show_at_once(app, people):
    ann, ben = people["ann"], people["ben"]
    first = post(app, "ann", "first words")
    second = post(app, "ann", "second words")  # continues the first one's group
    third = post(app, "ann", "third words")
    page = messages_of(ben.get("/"))
    assert 'class="message message-continued"' in page

    assert ann.post(f"/messages/{second}/edit", {"body": "changed words"}).status_code == 200
    page = messages_of(ben.get("/"))
    assert "changed words" in page and "second words" not in page and "(edited)" in page
    assert page == fresh(app, ben)

    assert ben.post(f"/messages/{third}/reactions", {"emoji": "🎉"}).status_code == 200
    page = messages_of(ann.get("/"))
    assert 'class="reaction-count">1<' in page and "ben" in page.split(f'id="reactions-{third}"')[1]
    assert page == fresh(app, ann)

    # The first message goes: the second now starts the group (not "continued" any more).
    assert ann.post(f"/messages/{first}/delete").status_code == 200
    page = messages_of(ben.get("/"))
    assert f'id="message-{first}"' not in page
    assert re.search(rf'<article id="message-{second}" class="message"', page)
    assert page == fresh(app, ben)

    # A new display name is on every message of its author.
    with app.app_context():
        from chatapp.models import User, db

        User.by_username("ann").display_name = "Ann Smith"
        db.session.commit()
    page = messages_of(ben.get("/"))
    assert page.count("Ann Smith") == 2
    assert page == fresh(app, ben)


def test_an_edit_on_one_worker_shows_on_another(app, people):
    """Two processes on one database (as with Redis and several workers): the other's
    cache holds the old article, and still never serves it."""
    from chatapp import create_app

    other_app = create_app({"TESTING": True})
    ben_elsewhere = Person(other_app, "ben")
    said = post(app, "ann", "before the edit")
    assert "before the edit" in messages_of(ben_elsewhere.get("/"))
    assert len(cache_of(other_app)) == 1

    ann = people["ann"]
    assert ann.post(f"/messages/{said}/edit", {"body": "after the edit"}).status_code == 200
    page = messages_of(ben_elsewhere.get("/"))
    assert "after the edit" in page and "before the edit" not in page
    assert ben_elsewhere.post(f"/messages/{said}/reactions", {"emoji": "👍"}).status_code == 200
    assert 'class="reaction-count">1<' in messages_of(people["cat"].get("/"))
    with other_app.app_context():
        from chatapp.extensions import db

        db.engine.dispose()


def test_each_language_and_time_zone_gets_its_own_fragment(app, people):
    from datetime import datetime

    from chatapp.models import Message, User, db

    said = post(app, "ann", "hello everyone")
    with app.app_context():
        User.by_username("ben").language = "zh_Hans"
        User.by_username("ben").time_zone = "Asia/Shanghai"
        User.by_username("cat").time_zone = "America/New_York"
        db.session.commit()
        sent = db.session.get(Message, said).created_at
    english = messages_of(people["ann"].get("/"))
    chinese = messages_of(people["ben"].get("/"))
    new_york = messages_of(people["cat"].get("/"))
    assert len(cache_of(app)) == 3  # one article per audience
    assert ">Edit<" in english and ">编辑<" in chinese and ">Edit<" in new_york

    def clock(page):
        return re.search(r'Z">(\d\d:\d\d)</time>', page).group(1)

    from zoneinfo import ZoneInfo

    def local(zone):
        return sent.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(zone)).strftime("%H:%M")

    assert clock(english) == local("UTC")
    assert clock(chinese) == local("Asia/Shanghai")
    assert clock(new_york) == local("America/New_York")
    assert isinstance(sent, datetime)
    # Each still reads its own after the others filled the cache.
    assert messages_of(people["ann"].get("/")) == english
    assert messages_of(people["ben"].get("/")) == chinese


def test_people_in_different_rooms_never_see_each_others_messages_or_sidebars(app, people):
    """ann is in a members-only room, ben is not: whatever ann's pages put in the cache,
    ben's pages (room, history, sidebar, the room itself) show none of it."""
    ann, ben = people["ann"], people["ben"]
    response = ann.post("/rooms/new", {"name": "secret-plans", "members_only": "1"})
    room = int(re.search(r"/c/(\d+)$", response.headers["Location"]).group(1))
    hidden = [post(app, "ann", f"the hidden plan {n}", conversation_id=room) for n in range(3)]
    public = post(app, "ann", "hello, public")

    ann_room = ann.get(f"/c/{room}").get_data(as_text=True)
    assert all(f'id="message-{i}"' in ann_room for i in hidden)
    assert "secret-plans" in ann.get(f"/sidebar?c={room}").get_data(as_text=True)
    assert len(cache_of(app)) >= 4  # ann's room's articles are cached

    for path in (f"/c/{room}", f"/c/{room}/messages?before={hidden[-1] + 1}",
                 f"/sidebar?c={room}", f"/c/{room}/@{hidden[0]}"):
        assert ben.get(path).status_code == 404, path
    seen_by_ben = "".join(ben.get(path).get_data(as_text=True) for path in (
        "/", f"/c/1/messages?before={public + 1}", "/sidebar", "/sidebar?c=1"))
    assert "hidden plan" not in seen_by_ben and "secret-plans" not in seen_by_ben
    assert not any(f'id="message-{i}"' in seen_by_ben for i in hidden)
    assert f'id="message-{public}"' in seen_by_ben

    # Each sees their own sidebar and "mine" styling, though the articles are shared.
    ben_sidebar = ben.get("/sidebar").get_data(as_text=True)
    ann_sidebar = ann.get("/sidebar").get_data(as_text=True)
    assert re.search(r'Signed in as </span><span class="name">ben<', ben_sidebar)
    assert re.search(r'Signed in as </span><span class="name">ann<', ann_sidebar)
    with app.app_context():
        from chatapp.models import User

        ann_id, ben_id = User.by_username("ann").id, User.by_username("ben").id
    ann_page, ben_page = ann.get("/").get_data(as_text=True), ben.get("/").get_data(as_text=True)
    assert f'.message[data-author="{ann_id}"]' in ann_page
    assert f'.message[data-author="{ben_id}"]' in ben_page
    assert messages_of(ann.get("/")) == messages_of(ben.get("/"))

    # Once ben is added he sees the room, from the same cache.
    assert ann.post(f"/c/{room}/members", {"people": "ben"}, page=f"/c/{room}/settings"
                    ).status_code in (200, 303)
    assert all(f'id="message-{i}"' in ben.get(f"/c/{room}").get_data(as_text=True)
               for i in hidden)


def test_the_cache_is_bounded_and_can_be_turned_off():
    cache = FragmentCache(size=2)
    for n in range(3):
        cache.put((n,), f"<p>{n}</p>")
    assert len(cache) == 2 and cache.get((0,)) is None
    assert cache.get((1,)) == "<p>1</p>"  # now the most recently used
    cache.put((3,), "<p>3</p>")
    assert cache.get((2,)) is None and cache.get((1,)) == "<p>1</p>"
    off = FragmentCache(size=0)
    off.put((1,), "<p>1</p>")
    assert len(off) == 0 and off.get((1,)) is None
