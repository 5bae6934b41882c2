"""The hub's bookkeeping for rooms, in process with stand-in sockets (milliseconds each):
Notify me levels, system lines, members joining and being removed, renames."""

from __future__ import annotations

from test_hub import ROOM, app, calls, connect, hub, message, texts  # noqa: F401

from chatapp.realtime.frames import POLICY_VIOLATION

LEADS = 7  # a members-only room of users 1, 2 and 3


def room_message(message_id, author_id=1, members=(1, 2, 3), **extra):
    return {**message(LEADS, message_id, author_id, list(members)), **extra}


def test_notify_levels_decide_what_counts_in_memory(hub, calls):  # noqa: F811
    every, quiet, mentions = (connect(hub, u, ROOM) for u in (2, 3, 4))
    hub.users[3].levels[LEADS] = "none"
    hub.users[4].levels[LEADS] = "mentions"
    calls.sidebars.clear()
    for state in hub.users.values():
        state.heads = {LEADS}
    hub.deliver(room_message(5, members=(1, 2, 3, 4)))
    hub.deliver(room_message(6, members=(1, 2, 3, 4), mention_ids=[4]))
    assert hub.users[2].unread == {LEADS: 2}
    assert hub.users[3].unread.get(LEADS, 0) == 0 and texts(quiet) == []
    assert hub.users[4].unread == {LEADS: 1}  # only the message that mentions them
    assert "<title>(1) @1 Public room · chatapp</title>" in texts(mentions)[-1]  # and the mention


def test_system_lines_are_shown_but_never_counted(hub):  # noqa: F811
    viewer, elsewhere = connect(hub, 2, LEADS), connect(hub, 3, ROOM)
    hub.users[2].heads = hub.users[3].heads = {LEADS}
    hub.deliver(room_message(5, system=True))
    assert texts(viewer) == ['<article id="message-5"></article>']
    assert hub.users[3].unread.get(LEADS, 0) == 0 and texts(elsewhere) == []


def test_a_non_member_hears_nothing_of_a_room(hub, calls):  # noqa: F811
    outsider = connect(hub, 9, ROOM)
    hub.deliver(room_message(5))
    assert texts(outsider) == [] and hub.users[9].unread == {} and 9 not in calls.sidebars


def test_removal_closes_only_that_persons_sockets_on_that_room(app, hub, calls):  # noqa: F811
    removed_here, removed_elsewhere = connect(hub, 2, LEADS), connect(hub, 2, ROOM)
    staying = connect(hub, 3, LEADS)
    hub.users[2].unread[LEADS] = 4
    with app.test_request_context("/"):  # as every delivery runs (the goodbye has a link)
        hub.deliver({"type": "members_changed", "conversation_id": LEADS, "people": [2],
                     "removed": [2]})
    assert removed_here.closing and removed_here.ws.ws.close_codes == [POLICY_VIOLATION]
    assert "You are no longer in this room." in texts(removed_here)[-1]
    assert texts(staying) == [] and texts(removed_elsewhere) == ["<sidebar>"]
    assert not removed_elsewhere.closing and not staying.closing
    assert LEADS not in hub.users[2].unread
    assert calls.sidebars == [2]  # the other tab's sidebar loses the room


def test_a_rename_retitles_the_rooms_pages(hub, calls):  # noqa: F811
    viewer = connect(hub, 2, LEADS)
    hub.deliver({"type": "room_changed", "conversation_id": LEADS, "name": "Heads",
                 "member_ids": [2, 3]})
    assert viewer.title == "Heads" and calls.sidebars == [2]
