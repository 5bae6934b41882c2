"""bots: accounts that post by HTTP with a hashed key, and their outgoing webhook

Revision ID: c4d81e6b3a20
Revises: 3f7c2a9d1b40
Create Date: 2026-12-03 13:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c4d81e6b3a20'
down_revision = '3f7c2a9d1b40'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_bot', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('api_key_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('webhook_url', sa.String(length=2048), nullable=True))
        batch_op.create_index('ix_users_api_key_hash', ['api_key_hash'], unique=True)


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('ix_users_api_key_hash')
        batch_op.drop_column('webhook_url')
        batch_op.drop_column('api_key_hash')
        batch_op.drop_column('is_bot')
