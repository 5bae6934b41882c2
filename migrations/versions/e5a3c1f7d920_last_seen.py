"""presence: when each person was last online (for "Last seen 5 minutes ago")

Revision ID: e5a3c1f7d920
Revises: e5a1c9d07f42
Create Date: 2026-12-03 15:15:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e5a3c1f7d920'
down_revision = 'e5a1c9d07f42'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
