"""Numbers in URLs larger than any id: every page answers 404, on both databases.

PostgreSQL's ids are 32-bit integers and it refuses to compare one with a larger number,
so such a number must never reach a query (it would be a 500)."""

from __future__ import annotations

import pytest

BEYOND = [2**31 - 1, 2**31, 2**63, 10**30]  # the largest id, then numbers no id can be


def id_pages(app) -> list[tuple[str, list[str]]]:
    """Every GET page whose URL holds ids, with the names of those ids."""
    pages = []
    for rule in app.url_map.iter_rules():
        ids = [name for name, converter in rule._converters.items()
               if type(converter).__name__ == "IdConverter" and name != "size"]
        if ids and "GET" in rule.methods and not rule.websocket:  # sockets: test_ws_*
            pages.append((rule.endpoint, ids))
    return pages


@pytest.mark.parametrize("number", BEYOND)
def test_pages_with_ids_beyond_every_row_are_404(app, client, auth, number):
    from flask import url_for

    assert auth.register("alice").status_code == 302  # the first account: an admin too
    pages = id_pages(app)
    assert any(endpoint == "chat.conversation" for endpoint, _ in pages), pages
    with app.test_request_context():
        urls = [url_for(endpoint, **{name: number for name in ids},
                        **({"size": "thumb"} if endpoint == "admin.image" else {}))
                for endpoint, ids in pages]
    for url in urls:
        # The API asks for a bot's key first (tests/test_api.py covers it with one).
        allowed = (401, 404) if url.startswith("/api/") else (404,)
        assert client.get(url).status_code in allowed, url


@pytest.mark.parametrize("number", BEYOND)
def test_paging_arguments_beyond_every_row_change_nothing(client, auth, number):
    assert auth.register("alice").status_code == 302
    for url in (f"/c/1/messages?before={number}", f"/c/1/messages/newer?after={number}"):
        assert client.get(url).status_code in (200, 204, 400), url
