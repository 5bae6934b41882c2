"""Pushes in several languages and time zones stay render-once: the hub renders a push
once per distinct (language, time zone) among a conversation's sockets, never per socket.
In process, with stand-in sockets (see test_hub)."""

from __future__ import annotations

import pytest
from test_hub import ROOM, StandInWS, app, calls, texts  # noqa: F401

from chatapp import i18n
from chatapp.realtime.client import Client
from chatapp.realtime.hub import Hub

ZH_SHANGHAI = "zh_Hans Asia/Shanghai"
EN_UTC = "en UTC"
EN_NEW_YORK = "en America/New_York"


class CountingRenderer:
    """render_push stand-in: counts renders per audience and says what it rendered for."""

    def __init__(self):
        self.renders: list[str] = []

    def __call__(self, event, audience, rendered=None):
        self.renders.append(audience)
        return f"<article>{event['message_id']} for {audience}</article>"


@pytest.fixture
def renderer():
    return CountingRenderer()


@pytest.fixture
def hub(app, calls, renderer):  # noqa: F811
    with app.app_context():
        yield Hub(on_read=calls.on_read, render_sidebars=calls.render_sidebars,
                  recount_unread=calls.recount_unread, render_push=renderer)


def connect(hub, user_id, audience, conversation_id=ROOM):
    client = Client(StandInWS(), user_id, conversation_id, queue_size=8, send_timeout=1,
                    ping_interval=30, title="Public room", audience=audience)
    hub.attach(client, lambda: ({}, 0))
    return client


def created(message_id, audience=EN_UTC):
    return {"type": "message_created", "conversation_id": ROOM, "message_id": message_id,
            "author_id": 1, "member_ids": None, "audience": audience,
            "html": f"<article>{message_id} as posted</article>"}


def test_n_sockets_in_two_groups_cost_exactly_two_renders(hub, renderer):
    english = [connect(hub, 100 + n, EN_UTC) for n in range(30)]
    chinese = [connect(hub, 200 + n, ZH_SHANGHAI) for n in range(20)]
    hub.deliver(created(5, audience=EN_UTC))
    # The posted HTML serves its own group; the other group is rendered once, not 20 times.
    assert renderer.renders == [ZH_SHANGHAI]
    assert all(texts(c) == ["<article>5 as posted</article>"] for c in english)
    assert all(texts(c) == [f"<article>5 for {ZH_SHANGHAI}</article>"] for c in chinese)


def test_groups_absent_from_the_posters_audience_are_each_rendered_once(hub, renderer):
    for n in range(10):
        connect(hub, 100 + n, ZH_SHANGHAI)
        connect(hub, 200 + n, EN_NEW_YORK)
    hub.deliver(created(6, audience=EN_UTC))  # nobody here shares the poster's audience
    assert sorted(renderer.renders) == sorted([ZH_SHANGHAI, EN_NEW_YORK])


def test_one_group_renders_nothing_more_than_the_posted_html(hub, renderer):
    sockets = [connect(hub, 100 + n, EN_UTC) for n in range(25)]
    hub.deliver(created(7))
    assert renderer.renders == []
    assert all(texts(c) == ["<article>7 as posted</article>"] for c in sockets)


def test_groups_follow_sockets_as_they_come_and_go(hub, renderer):
    first = connect(hub, 1, EN_UTC)
    second = connect(hub, 2, ZH_SHANGHAI)
    assert hub.audiences[ROOM] == {EN_UTC: 1, ZH_SHANGHAI: 1}
    hub.detach(second)
    hub.detach(second)  # a second detach changes nothing
    assert hub.audiences[ROOM] == {EN_UTC: 1}
    hub.deliver(created(8))
    assert renderer.renders == []  # the Chinese group left: nothing rendered for it
    hub.detach(first)
    assert ROOM not in hub.audiences


def test_hub_rendered_pushes_render_once_per_audience(app, hub):  # noqa: F811
    """Room headers, notices and the like go through push_per_audience."""
    sockets = [connect(hub, 100 + n, (EN_UTC, ZH_SHANGHAI, EN_NEW_YORK)[n % 3])
               for n in range(12)]
    seen = []
    with app.test_request_context("/"):
        def render():
            seen.append(i18n.audience())
            return i18n.day_heading(__import__("datetime").datetime.now())
        Hub.push_per_audience(sockets, render)
    assert sorted(seen) == sorted([EN_UTC, ZH_SHANGHAI, EN_NEW_YORK])
    assert texts(sockets[1]) == ["今天"] and texts(sockets[0]) == ["Today"]


def test_unknown_audience_keys_render_as_the_default(app):  # noqa: F811
    with app.test_request_context("/"):
        with i18n.rendering_as("xx_Klingon Mars/Olympus_Mons"):
            assert i18n.audience() == EN_UTC
        with i18n.rendering_as("zh_Hans Not/AZone"):
            assert i18n.audience() == "zh_Hans UTC"
