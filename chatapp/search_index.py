"""The search index on each engine, kept in step with messages, and the query over it.

SQLite: an FTS5 table `message_search` (rowid = message id) holding each shown
message's terms (search_text.index_text) and a token naming its conversation ("c42").
PostgreSQL: a `search_vector` tsvector column on messages (to_tsvector('simple', terms))
with a GIN index. Both index the same terms, so both find the same messages.

Kept in step by the ORM, whoever changes a message: an insert adds its terms, an
update of its text replaces them (mapper events below, run
inside the same flush, so the index commits or rolls back with the message). A Core
DELETE of messages (retention) leaves FTS rows behind on SQLite: a trigger removes them,
and every query joins messages anyway, so a stale row can never show.

Which conversations a search covers is decided by the caller (search.py's scope);
here they only narrow the probe. Every query is bounded by a LIMIT and walks newest
first: FTS5 returns rowids in descending order without sorting, and on SQLite the
conversation tokens let FTS5 itself skip what the person may not read.
"""

from __future__ import annotations

from sqlalchemy import bindparam, column, event, inspect, select, table, text

from .extensions import db
from .models import Message
from .search_text import Term, fts5_match, index_text, tsquery

# Past this many conversations the token filter costs more than it saves.
MAX_SCOPE_TOKENS = 200


def schema_object(obj, name, type_, reflected, compare_to) -> bool:
    """For Alembic's comparison: the index lives outside the models (FTS5 tables, the
    tsvector column and its GIN index), so `flask db check` leaves it alone."""
    if type_ == "table" and name and name.startswith("message_search"):
        return False
    return not (reflected and compare_to is None and name in ("search_vector", "ix_messages_search_vector"))


def _dialect(connection) -> str:
    return connection.dialect.name


def write(connection, message_id: int, conversation_id: int, body: str) -> None:
    """(Re)index one message's text."""
    if _dialect(connection) == "postgresql":
        connection.execute(
            text("UPDATE messages SET search_vector = to_tsvector('simple', :terms) WHERE id = :id"),
            {"terms": index_text(body), "id": message_id},
        )
        return
    connection.execute(text("DELETE FROM message_search WHERE rowid = :id"), {"id": message_id})
    connection.execute(
        text("INSERT INTO message_search(rowid, terms, conversation) VALUES (:id, :terms, :c)"),
        {"id": message_id, "terms": index_text(body), "c": f"c{conversation_id}"},
    )


@event.listens_for(Message, "after_insert")
def _indexed_on_insert(_mapper, connection, message):
    """A new message is searchable in the same transaction that stores it."""
    index_new(connection, message.id, message.conversation_id, message.body or "")


def index_new(connection, message_id: int, conversation_id: int, body: str) -> None:
    """Index a message just inserted (by the ORM, or by Message.post's plain INSERT)."""
    if _dialect(connection) == "postgresql":
        write(connection, message_id, conversation_id, body)
    else:  # a fresh id: nothing to delete first
        connection.execute(_insert_terms(), {"id": message_id, "terms": index_text(body),
                                             "c": f"c{conversation_id}"})


_INSERT_TERMS = None


def _insert_terms():
    """The FTS5 insert, built once (text() is parsed again each time it is built)."""
    global _INSERT_TERMS
    if _INSERT_TERMS is None:
        _INSERT_TERMS = text(
            "INSERT INTO message_search(rowid, terms, conversation) VALUES (:id, :terms, :c)")
    return _INSERT_TERMS


@event.listens_for(Message, "after_update")
def _reindexed_on_change(_mapper, connection, message):
    """An edited message is found by its new text, not its old one.

    A deleted message keeps its terms: the admin console still finds it, marked deleted;
    everyone else's search leaves it out by its deleted_at, read on every query.
    """
    if inspect(message).attrs.body.history.has_changes():
        write(connection, message.id, message.conversation_id, message.body or "")


def matching_ids(terms: list[Term], *, conversations: list[int] | None, authors: list[int] | None,
                 before: int | None, limit: int) -> list[int]:
    """Ids of shown messages matching every term, newest first, at most `limit`.

    `conversations` None means everywhere (the admin console); otherwise only there.
    """
    if conversations is not None and not conversations:
        return []
    if not terms:
        return _filtered_ids(conversations, authors, before, limit)
    if db.engine.dialect.name == "postgresql":
        return _postgresql_ids(terms, conversations, authors, before, limit)
    return _sqlite_ids(terms, conversations, authors, before, limit)


def narrowed(query, terms: list[Term]):
    """A SELECT of Message narrowed to messages matching every term, and the column to
    order it newest first by: for queries built elsewhere (the admin console's filters
    and pages), through the same index.

    On SQLite the order is FTS5's rowid, so FTS5 walks its matches newest first and the
    LIMIT stops it (ordering by messages.id would sort every match first).
    """
    if db.engine.dialect.name == "postgresql":
        return query.where(
            text("messages.search_vector @@ to_tsquery('simple', :search_query)")
            .bindparams(search_query=tsquery(terms))
        ), Message.id
    fts = table("message_search", column("rowid"))
    return query.join(fts, fts.c.rowid == Message.id).where(
        text("message_search MATCH :search_match")
        .bindparams(search_match="{terms}: (" + fts5_match(terms) + ")")
    ), fts.c.rowid


def _filters(conversations, authors, before, params: dict) -> str:
    """SQL conditions on `m` (messages) for the scope, authors and page."""
    sql = " AND m.deleted_at IS NULL AND NOT m.system"  # a room's own lines are not found
    if conversations is not None:
        sql += " AND m.conversation_id IN :conversations"
        params["conversations"] = list(conversations)
    if authors is not None:
        sql += " AND m.author_id IN :authors"
        params["authors"] = list(authors)
    if before is not None:
        sql += " AND m.id < :before"
        params["before"] = before
    return sql


def _run(sql: str, params: dict) -> list[int]:
    statement = text(sql)
    for name in ("conversations", "authors"):
        if name in params:
            statement = statement.bindparams(bindparam(name, expanding=True))
    return list(db.session.scalars(statement, params))


def _sqlite_ids(terms, conversations, authors, before, limit) -> list[int]:
    match = "{terms}: (" + fts5_match(terms) + ")"
    if conversations is not None and len(conversations) <= MAX_SCOPE_TOKENS:
        # Conversation tokens: FTS5 intersects them with the terms itself, so a person
        # who reads one quiet room does not walk every room's matches to find theirs.
        match += " AND conversation: (" + " OR ".join(f'"c{int(c)}"' for c in conversations) + ")"
    params = {"match": match, "limit": limit}
    sql = ("SELECT m.id FROM message_search s JOIN messages m ON m.id = s.rowid "
           "WHERE message_search MATCH :match")
    if before is not None:
        sql += " AND s.rowid < :before"
    sql += _filters(conversations, authors, before, params)
    return _run(sql + " ORDER BY s.rowid DESC LIMIT :limit", params)


# Up to this many conversations, each is probed on its own (see _postgresql_ids).
MAX_BRANCHES = 12


def _postgresql_ids(terms, conversations, authors, before, limit) -> list[int]:
    params = {"query": tsquery(terms), "limit": limit}
    sql = ("SELECT m.id FROM messages m "
           "WHERE m.search_vector @@ to_tsquery('simple', :query)")
    if conversations is None or len(conversations) > MAX_BRANCHES:
        sql += _filters(conversations, authors, before, params)
        return _run(sql + " ORDER BY m.id DESC LIMIT :limit", params)
    # A person who reads a few conversations: one newest-first probe per conversation
    # (the (conversation_id, id) index, or the GIN index for a rare term, whichever the
    # planner prefers), merged. One probe over all of them would walk every room's
    # messages backwards, the others' filtered out one by one.
    branches = []
    for n, conversation_id in enumerate(conversations):
        params[f"c{n}"] = int(conversation_id)
        branch = sql + f" AND m.conversation_id = :c{n}" + _filters(None, authors, before, params)
        branches.append(f"({branch} ORDER BY m.id DESC LIMIT :limit)")
    return _run("SELECT id FROM (" + " UNION ALL ".join(branches) + ") AS hits "
                "ORDER BY id DESC LIMIT :limit", params)


def _filtered_ids(conversations, authors, before, limit) -> list[int]:
    """Only filters (from:, in:), no words: newest shown messages that pass them."""
    params = {"limit": limit}
    sql = "SELECT m.id FROM messages m WHERE 1 = 1" + _filters(conversations, authors, before, params)
    return _run(sql + " ORDER BY m.id DESC LIMIT :limit", params)


def rebuild(connection, batch: int = 5000) -> int:
    """Index every message again (a migration, or after a restore); returns how many."""
    if _dialect(connection) == "postgresql":
        connection.execute(text("UPDATE messages SET search_vector = NULL"))
    else:
        connection.execute(text("DELETE FROM message_search"))
    messages = db.metadata.tables["messages"]
    last, count = 0, 0
    while True:
        rows = connection.execute(
            select(messages.c.id, messages.c.conversation_id, messages.c.body)
            .where(messages.c.id > last)
            .order_by(messages.c.id).limit(batch)
        ).all()
        if not rows:
            return count
        if _dialect(connection) == "postgresql":
            connection.execute(
                text("UPDATE messages SET search_vector = to_tsvector('simple', :terms) WHERE id = :id"),
                [{"id": r.id, "terms": index_text(r.body or "")} for r in rows],
            )
        else:
            connection.execute(
                text("INSERT INTO message_search(rowid, terms, conversation) VALUES (:id, :terms, :c)"),
                [{"id": r.id, "terms": index_text(r.body or ""), "c": f"c{r.conversation_id}"}
                 for r in rows],
            )
        last, count = rows[-1].id, count + len(rows)
