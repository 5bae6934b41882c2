"""message search: an FTS5 index (SQLite) or a tsvector column with GIN (PostgreSQL),
built for every existing message; and each person's recent searches

Revision ID: 10a90139a1e8
Revises: 99e910af725f
Create Date: 2026-12-03 12:20:00.000000

"""
from alembic import op
import sqlalchemy as sa

from chatapp.search_text import index_text


# revision identifiers, used by Alembic.
revision = '10a90139a1e8'
down_revision = '99e910af725f'
branch_labels = None
depends_on = None

messages = sa.table(
    "messages",
    sa.column("id", sa.Integer), sa.column("conversation_id", sa.Integer),
    sa.column("body", sa.Text), sa.column("deleted_at", sa.DateTime),
)


def _existing_messages(connection, batch=5000):
    """Every message (the admin console finds deleted ones too), in batches of rows (id, conversation_id, body)."""
    last = 0
    while True:
        rows = connection.execute(
            sa.select(messages.c.id, messages.c.conversation_id, messages.c.body)
            .where(messages.c.id > last)
            .order_by(messages.c.id).limit(batch)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def upgrade():
    op.create_table('recent_searches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('query', sa.String(length=200), nullable=False),
    sa.Column('searched_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'query')
    )
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.add_column('messages', sa.Column('search_vector', sa.dialects.postgresql.TSVECTOR()))
        for rows in _existing_messages(connection):
            connection.execute(
                sa.text("UPDATE messages SET search_vector = to_tsvector('simple', :terms) WHERE id = :id"),
                [{"id": r.id, "terms": index_text(r.body or "")} for r in rows],
            )
        op.create_index('ix_messages_search_vector', 'messages', ['search_vector'],
                        postgresql_using='gin')
        return
    # Python's own SQLite: FTS5 with the unicode61 tokenizer over the prepared terms (CJK
    # already in pairs, see chatapp/search_text.py), with prefix indexes for "deplo".
    op.execute(
        "CREATE VIRTUAL TABLE message_search USING fts5("
        "terms, conversation, tokenize='unicode61 remove_diacritics 0', prefix='2 3')"
    )
    # Messages removed by a Core DELETE (retention) leave the index with them.
    op.execute(
        "CREATE TRIGGER message_search_forget AFTER DELETE ON messages BEGIN "
        "DELETE FROM message_search WHERE rowid = old.id; END"
    )
    for rows in _existing_messages(connection):
        connection.execute(
            sa.text("INSERT INTO message_search(rowid, terms, conversation) VALUES (:id, :terms, :c)"),
            [{"id": r.id, "terms": index_text(r.body or ""), "c": f"c{r.conversation_id}"}
             for r in rows],
        )


def downgrade():
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        op.drop_index('ix_messages_search_vector', table_name='messages')
        op.drop_column('messages', 'search_vector')
    else:
        op.execute("DROP TRIGGER IF EXISTS message_search_forget")
        op.execute("DROP TABLE IF EXISTS message_search")
    op.drop_table('recent_searches')
