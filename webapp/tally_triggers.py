"""Triggers on `message` that append every change of a campaign's figures to `tally_delta`.

A campaign's page must not count a million rows per poll, and callbacks must not all wait on one
counter row. So the database itself records, for each statement that inserts, updates or deletes
campaign messages, how many moved in or out of each bucket (and with what parts and cost), as new
rows of tally_delta. Appends never lock a shared row; webapp.services.tallies folds them into
campaign_tally and campaign_minute every few seconds, and reads tally + unfolded deltas. Because the
database writes the deltas, no code path that changes a message (the engine, callbacks, the sweep, a
person's resend) can forget to count, and the figures equal a recount by construction.

PostgreSQL fires one statement-level trigger per statement (transition tables: the 1,000,000-row COPY
at launch is one aggregate, not a million trigger calls); SQLite has only row triggers.
"""

from sqlalchemy import DDL, Table, event

# A campaign message's bucket: its status, with "held for quiet hours" and "replaced by a resend" apart.
BUCKETS = ("created", "held", "sending", "accepted", "delivered", "undelivered", "failed", "unknown", "replaced",
           "opted_out", "cancelled")
# A test send is no recipient's message, but it costs money: posted ones are "test" (their spend counts),
# the others (not posted yet, or not sent) "test_unsent". Neither is in BUCKETS, so no count includes them.
TEST_BUCKETS = ("test", "test_unsent")
TEST_POSTED = ("sending", "accepted", "delivered", "undelivered", "unknown")
REASON_LENGTH = 120


def _bucket(row: str) -> str:
    posted = ", ".join(f"'{status}'" for status in TEST_POSTED)
    return (f"CASE WHEN {row}.kind = 'test' THEN CASE WHEN {row}.status IN ({posted}) THEN 'test' "
            f"ELSE 'test_unsent' END "
            f"WHEN {row}.status = 'created' AND {row}.held THEN 'held' "
            f"WHEN {row}.status = 'unknown' AND {row}.resent THEN 'replaced' ELSE {row}.status END")


def _reason(row: str) -> str:
    """Why a campaign message failed (the breakdown on the campaign page); empty for every other bucket."""
    return (f"CASE WHEN {row}.kind = 'campaign' AND {row}.status IN ('failed', 'undelivered') "
            f"THEN substr(coalesce({row}.error, ''), 1, {REASON_LENGTH}) ELSE '' END")


def _measures(row: str, sign: str) -> str:
    """messages, parts, estimated, billed, unbilled, mismatched, sent_twice of one row, times sign."""
    return ", ".join(_measure_list(row, sign))


def _measure_list(row: str, sign: str) -> tuple[str, ...]:
    return ((
        f"{sign}",
        f"{sign} * {row}.parts",
        f"{sign} * CASE WHEN {row}.resent THEN 0 ELSE {row}.estimated_cost END",  # its resend carries it
        f"{sign} * coalesce({row}.billed_cost, 0)",
        f"{sign} * CASE WHEN {row}.billed_cost IS NULL THEN {row}.estimated_cost ELSE 0 END",
        f"{sign} * CASE WHEN {row}.billed_cost IS NOT NULL AND {row}.billed_cost <> {row}.estimated_cost "
        f"THEN 1 ELSE 0 END",
        f"{sign} * CASE WHEN {row}.sent_twice THEN 1 ELSE 0 END",
    ))


COLUMNS = "campaign_id, bucket, reason, at, messages, parts, estimated, billed, unbilled, mismatched, sent_twice"
_COUNTED = "{row}.campaign_id IS NOT NULL"  # a campaign's messages and its test sends


def _postgresql_function() -> str:
    def side(table: str, sign: str) -> str:
        return (f"SELECT r.campaign_id, {_bucket('r')} AS bucket, {_reason('r')} AS reason, "  # noqa: S608
                f"{_measures('r', sign)} FROM {table} r WHERE {_COUNTED.format(row='r')}")  # (constants only)

    grouped = ("INSERT INTO tally_delta (" + COLUMNS + ") "  # noqa: S608 - constants, no input
               "SELECT campaign_id, bucket, reason, now() AT TIME ZONE 'UTC', sum(m), sum(p), sum(e), sum(b), "
               "sum(u), sum(x), sum(t) FROM ({rows}) AS c(campaign_id, bucket, reason, m, p, e, b, u, x, t) "
               "GROUP BY campaign_id, bucket, reason "
               "HAVING sum(m) <> 0 OR sum(p) <> 0 OR sum(e) <> 0 OR sum(b) <> 0 OR sum(u) <> 0 OR sum(x) <> 0 "
               "OR sum(t) <> 0;")
    return f"""
CREATE OR REPLACE FUNCTION tally_message_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {grouped.format(rows=side('new_rows', '1'))}
  ELSIF TG_OP = 'UPDATE' THEN
    {grouped.format(rows=side('new_rows', '1') + ' UNION ALL ' + side('old_rows', '-1'))}
  ELSE
    {grouped.format(rows=side('old_rows', '-1'))}
  END IF;
  RETURN NULL;
END $$;
"""


POSTGRESQL = (
    _postgresql_function(),
    "DROP TRIGGER IF EXISTS tally_message_insert ON message",
    "CREATE TRIGGER tally_message_insert AFTER INSERT ON message REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_message_changes()",
    "DROP TRIGGER IF EXISTS tally_message_update ON message",
    "CREATE TRIGGER tally_message_update AFTER UPDATE ON message "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_message_changes()",
    "DROP TRIGGER IF EXISTS tally_message_delete ON message",
    "CREATE TRIGGER tally_message_delete AFTER DELETE ON message REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_message_changes()",
)
# tally_delta is a queue (appended, then deleted by every fold): vacuumed after every few thousand deleted
# rows, not after a fifth of the table, so readers' index scans don't wade through dead entries.
POSTGRESQL_QUEUE = ("ALTER TABLE tally_delta SET (autovacuum_vacuum_scale_factor = 0, "
                    "autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)",)


def _sqlite_insert(row: str, sign: str) -> str:
    return (f"INSERT INTO tally_delta ({COLUMNS}) SELECT {row}.campaign_id, {_bucket(row)}, {_reason(row)}, "
            f"strftime('%Y-%m-%d %H:%M:%S', 'now'), {_measures(row, sign)} WHERE {_COUNTED.format(row=row)};")


# Columns whose change can move a figure; an UPDATE of anything else (a claim, a heartbeat) adds nothing.
_WATCHED = ("campaign_id", "kind", "status", "held", "resent", "error", "parts", "estimated_cost", "billed_cost",
            "sent_twice")

_CHANGED = "(" + " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in _WATCHED) + ")"
# The row stays in its bucket: one delta of the figures' difference, so no message seems to enter it again.
_SAME_PLACE = (f"OLD.campaign_id IS NEW.campaign_id AND OLD.kind IS NEW.kind "
               f"AND ({_bucket('OLD')}) IS ({_bucket('NEW')}) AND ({_reason('OLD')}) IS ({_reason('NEW')})")
_DIFFERENCE = ", ".join(f"({new}) + ({old})"
                        for new, old in zip(_measure_list("NEW", "1"), _measure_list("OLD", "-1"), strict=True))

SQLITE = (
    "DROP TRIGGER IF EXISTS tally_message_insert",
    f"CREATE TRIGGER tally_message_insert AFTER INSERT ON message BEGIN {_sqlite_insert('NEW', '1')} END",
    "DROP TRIGGER IF EXISTS tally_message_update",
    f"CREATE TRIGGER tally_message_update AFTER UPDATE ON message WHEN {_CHANGED} AND NOT ({_SAME_PLACE})"
    f" BEGIN {_sqlite_insert('OLD', '-1')} {_sqlite_insert('NEW', '1')} END",
    "DROP TRIGGER IF EXISTS tally_message_update_same",
    f"CREATE TRIGGER tally_message_update_same AFTER UPDATE ON message WHEN {_CHANGED} AND {_SAME_PLACE}"
    f" BEGIN INSERT INTO tally_delta ({COLUMNS}) SELECT NEW.campaign_id, {_bucket('NEW')}, {_reason('NEW')}, "
    f"strftime('%Y-%m-%d %H:%M:%S', 'now'), {_DIFFERENCE} WHERE {_COUNTED.format(row='NEW')}; END",
    "DROP TRIGGER IF EXISTS tally_message_delete",
    f"CREATE TRIGGER tally_message_delete AFTER DELETE ON message BEGIN {_sqlite_insert('OLD', '-1')} END",
)


def statements(dialect: str) -> tuple[str, ...]:
    """The DDL that (re)creates the triggers on this dialect; run by the migration."""
    return POSTGRESQL + POSTGRESQL_QUEUE if dialect == "postgresql" else SQLITE


def attach(message: Table, tally_delta: Table) -> None:
    """Create the triggers whenever the message table is created (tests and `db create_all`)."""
    for table, dialect, ddl in ((message, "postgresql", POSTGRESQL), (message, "sqlite", SQLITE),
                                (tally_delta, "postgresql", POSTGRESQL_QUEUE)):
        for statement in ddl:
            event.listen(table, "after_create", DDL(statement.replace("%", "%%")).execute_if(dialect=dialect))
