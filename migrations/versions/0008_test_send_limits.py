"""Test sends: counted in their campaign's tallies (spend, never recipients), an index of a team's test
sends for their limits, and whether a person chose the team's time zone.

The tally triggers are created again with test sends counted (webapp.tally_triggers.TEST_BUCKETS); test
sends made before are counted once here, as deltas at the moment they were posted, so the next fold puts
their spend in its month. Teams whose zone is not UTC had it chosen; a UTC team is asked once. Plain
operations, not SQLite's batch mode, which would rebuild message and drop the triggers.

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-07 21:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

from webapp.tally_triggers import statements


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0005'
branch_labels = None
depends_on = None

TEST = sa.text("kind = 'test'")


def upgrade():
    op.add_column('team', sa.Column('timezone_chosen', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE team SET timezone_chosen = (timezone <> 'UTC')")
    op.create_index('ix_message_team_test_sends', 'message', ['team_id', 'created_at'], unique=False,
                    postgresql_where=TEST, sqlite_where=TEST)
    for statement in statements(op.get_bind().dialect.name):
        op.execute(statement)
    # 0003 creates the triggers of the code it runs with: start the test buckets from the messages either way.
    op.execute("DELETE FROM tally_delta WHERE bucket IN ('test', 'test_unsent')")
    op.execute("DELETE FROM campaign_tally WHERE bucket IN ('test', 'test_unsent')")
    op.execute("""
INSERT INTO tally_delta (campaign_id, bucket, reason, at, messages, parts, estimated, billed, unbilled, mismatched,
                         sent_twice)
SELECT campaign_id,
       CASE WHEN status IN ('sending', 'accepted', 'delivered', 'undelivered', 'unknown') THEN 'test'
            ELSE 'test_unsent' END,
       '', coalesce(sent_at, created_at), 1, parts, estimated_cost, coalesce(billed_cost, 0),
       CASE WHEN billed_cost IS NULL THEN estimated_cost ELSE 0 END,
       CASE WHEN billed_cost IS NOT NULL AND billed_cost <> estimated_cost THEN 1 ELSE 0 END,
       CASE WHEN sent_twice THEN 1 ELSE 0 END
FROM message WHERE kind = 'test' AND campaign_id IS NOT NULL
""")


def downgrade():
    # The triggers keep counting test sends in buckets of their own, which the older code leaves out of
    # every figure but spend; 0003's downgrade drops them.
    op.drop_index('ix_message_team_test_sends', table_name='message', postgresql_where=TEST, sqlite_where=TEST)
    with op.batch_alter_table('team', schema=None) as batch_op:
        batch_op.drop_column('timezone_chosen')
