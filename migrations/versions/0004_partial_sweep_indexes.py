"""Partial indexes for the recovery sweep and for posted rows, and no index on message.team_id alone.

(status, sent_at), (status, claimed_at), (team_id) and (campaign_id, status, sent_at) each gave a whole
campaign's queued rows one key, so every write of a message row (claimed, in flight, recorded) found
its place among a million equal keys: about half of PostgreSQL's work per message sent. The sweep
only looks for rows in flight and rows claimed, and the campaign page only for rows posted, so those
are all the indexes hold now; ix_message_team_unique_id still starts with team_id. Plain index
operations, not SQLite's batch mode, which would rebuild the table and drop the tally triggers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 23:59:51.503778

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

IN_FLIGHT = sa.text("status = 'sending'")
CLAIMED = sa.text("claim_token IS NOT NULL")
POSTED = sa.text("sent_at IS NOT NULL")


def upgrade():
    op.drop_index('ix_message_status_claimed_at', table_name='message')
    op.drop_index('ix_message_status_sent_at', table_name='message')
    op.drop_index('ix_message_team_id', table_name='message')
    op.create_index('ix_message_claimed_at', 'message', ['claimed_at'], unique=False,
                    postgresql_where=CLAIMED, sqlite_where=CLAIMED)
    op.create_index('ix_message_sending_sent_at', 'message', ['sent_at'], unique=False,
                    postgresql_where=IN_FLIGHT, sqlite_where=IN_FLIGHT)
    op.drop_index('ix_message_campaign_status_sent_at', table_name='message')
    op.create_index('ix_message_campaign_status_sent_at', 'message', ['campaign_id', 'status', 'sent_at'],
                    unique=False, postgresql_include=['kind', 'resent'], postgresql_where=POSTED, sqlite_where=POSTED)


def downgrade():
    op.drop_index('ix_message_campaign_status_sent_at', table_name='message')
    op.create_index('ix_message_campaign_status_sent_at', 'message', ['campaign_id', 'status', 'sent_at'],
                    unique=False, postgresql_include=['kind', 'resent'])
    op.drop_index('ix_message_sending_sent_at', table_name='message')
    op.drop_index('ix_message_claimed_at', table_name='message')
    op.create_index('ix_message_team_id', 'message', ['team_id'], unique=False)
    op.create_index('ix_message_status_sent_at', 'message', ['status', 'sent_at'], unique=False)
    op.create_index('ix_message_status_claimed_at', 'message', ['status', 'claimed_at'], unique=False)
