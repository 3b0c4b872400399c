"""A resent attempt carries no estimate in the tallies (its resend does), so "resend unconfirmed" keeps the
campaign's estimate as launched instead of adding the replaced messages' estimates to it.

The triggers are recreated with the new measure; the estimates resent rows already added are taken back by
one delta per (campaign, bucket, reason) that differs from a recount, which the next fold adds in like any other.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07 21:20:00.000000

"""
from alembic import op

from webapp.tally_triggers import REASON_LENGTH, statements


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None

NEW_MEASURE = "CASE WHEN {row}.resent THEN 0 ELSE {row}.estimated_cost END"
OLD_MEASURE = "{row}.estimated_cost"


def _correct(measure: str) -> None:
    """Append, for each campaign with resent rows, the delta that makes its kept estimates equal `measure`
    summed over its messages: exact whatever triggers wrote its tally before, and adds nothing when run again."""
    now = ("now() AT TIME ZONE 'UTC'" if op.get_bind().dialect.name == "postgresql"
           else "strftime('%Y-%m-%d %H:%M:%S', 'now')")
    affected = "SELECT campaign_id FROM message WHERE campaign_id IS NOT NULL AND kind = 'campaign' AND resent"
    op.execute(f"""
INSERT INTO tally_delta (campaign_id, bucket, reason, at, messages, parts, estimated, billed, unbilled, mismatched,
                         sent_twice)
SELECT campaign_id, bucket, reason, {now}, 0, 0, sum(estimated), 0, 0, 0, 0
FROM (SELECT m.campaign_id,
        CASE WHEN status = 'created' AND held THEN 'held' WHEN status = 'unknown' AND resent THEN 'replaced'
             ELSE status END AS bucket,
        CASE WHEN status IN ('failed', 'undelivered') THEN substr(coalesce(error, ''), 1, {REASON_LENGTH})
             ELSE '' END AS reason,
        {measure.format(row="m")} AS estimated
      FROM message m WHERE kind = 'campaign' AND campaign_id IN ({affected})
      UNION ALL SELECT campaign_id, bucket, reason, -estimated FROM campaign_tally WHERE campaign_id IN ({affected}) AND bucket NOT IN ('test', 'test_unsent')
      UNION ALL SELECT campaign_id, bucket, reason, -estimated FROM tally_delta WHERE campaign_id IN ({affected}) AND bucket NOT IN ('test', 'test_unsent')
     ) differences
GROUP BY campaign_id, bucket, reason
HAVING sum(estimated) <> 0
""")


def _triggers(old: bool) -> None:
    for statement in statements(op.get_bind().dialect.name):
        if old:
            for row in ("r", "NEW", "OLD"):
                statement = statement.replace(NEW_MEASURE.format(row=row), OLD_MEASURE.format(row=row))
        op.execute(statement)


def upgrade():
    _triggers(old=False)
    _correct(NEW_MEASURE)


def downgrade():
    _triggers(old=True)
    _correct(OLD_MEASURE)
