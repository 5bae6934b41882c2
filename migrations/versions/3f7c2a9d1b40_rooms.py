"""rooms: named open and members-only rooms, per-member notify level, system lines

Revision ID: 3f7c2a9d1b40
Revises: b7e4c2a91d05
Create Date: 2026-12-03 12:05:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3f7c2a9d1b40'
down_revision = 'b7e4c2a91d05'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column('name_key', sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column('members_only', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('created_by_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_conversations_name_key', ['name_key'])
        batch_op.create_foreign_key('fk_conversations_created_by_id_users', 'users',
                                    ['created_by_id'], ['id'])

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify', sa.String(length=16), nullable=False,
                                      server_default='all'))

    # A constant default lets SQLite add the column in place: rebuilding the messages
    # table would drop the search index's trigger on it.
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('system', sa.Boolean(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('system')

    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('notify')

    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_conversations_created_by_id_users', type_='foreignkey')
        batch_op.drop_constraint('uq_conversations_name_key', type_='unique')
        batch_op.drop_column('created_by_id')
        batch_op.drop_column('members_only')
        batch_op.drop_column('name_key')
        batch_op.drop_column('name')
