"""A heartbeat per batch (send_batch, by claim token), and what a sending campaign waits for.

The campaign's own heartbeat_at is shared by all its batches, so a live batch hid a dead one whose
claims then waited for SEND_JOB_TIMEOUT; each batch now keeps its own row, and the sweep releases the
claims of a batch whose heartbeat stopped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 21:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('send_batch',
    sa.Column('token', sa.String(length=32), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_send_batch_campaign_id_campaign'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_send_batch'))
    )
    with op.batch_alter_table('send_batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_send_batch_campaign_id'), ['campaign_id'], unique=False)
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_for', sa.Enum('database', 'redis', 'rate', 'quiet_hours', 'retry', 'stalled_batch', name='waiting', native_enum=False, create_constraint=False, length=16), nullable=True))
        batch_op.add_column(sa.Column('waiting_since', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('waiting_since')
        batch_op.drop_column('waiting_for')
    with op.batch_alter_table('send_batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_send_batch_campaign_id'))
    op.drop_table('send_batch')
