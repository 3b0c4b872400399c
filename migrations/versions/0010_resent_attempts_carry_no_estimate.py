"""A resent attempt carries no estimate in the tallies (its resend does), so "resend unconfirmed" keeps the
campaign's estimate as launched instead of adding the replaced messages' estimates to it.

The triggers are recreated with the new measure; the estimates resent rows already added are taken back by
one negative delta per (campaign, bucket, reason), which the next fold adds in like any other.

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-07 21:20:00.000000

"""
from alembic import op

from webapp.tally_triggers import REASON_LENGTH, statements


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0004'
branch_labels = None
depends_on = None

NEW_MEASURE = "CASE WHEN {row}.resent THEN 0 ELSE {row}.estimated_cost END"
OLD_MEASURE = "{row}.estimated_cost"


def _adjust(sign: str) -> None:
    """Add sign x the resent rows' estimates to their buckets' figures, as deltas."""
    now = ("now() AT TIME ZONE 'UTC'" if op.get_bind().dialect.name == "postgresql"
           else "strftime('%Y-%m-%d %H:%M:%S', 'now')")
    op.execute(f"""
INSERT INTO tally_delta (campaign_id, bucket, reason, at, messages, parts, estimated, billed, unbilled, mismatched,
                         sent_twice)
SELECT campaign_id, bucket, reason, {now}, 0, 0, {sign} sum(estimated_cost), 0, 0, 0, 0
FROM (SELECT m.campaign_id, m.estimated_cost,
        CASE WHEN status = 'created' AND held THEN 'held' WHEN status = 'unknown' AND resent THEN 'replaced'
             ELSE status END AS bucket,
        CASE WHEN status IN ('failed', 'undelivered') THEN substr(coalesce(error, ''), 1, {REASON_LENGTH})
             ELSE '' END AS reason
      FROM message m WHERE campaign_id IS NOT NULL AND kind = 'campaign' AND resent) resent_rows
GROUP BY campaign_id, bucket, reason
""")


def _triggers(old: bool) -> None:
    for statement in statements(op.get_bind().dialect.name):
        if old:
            for row in ("r", "NEW", "OLD"):
                statement = statement.replace(NEW_MEASURE.format(row=row), OLD_MEASURE.format(row=row))
        op.execute(statement)


def upgrade():
    _triggers(old=False)
    _adjust("-")


def downgrade():
    _triggers(old=True)
    _adjust("")
