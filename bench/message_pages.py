"""The messages table of a 1,000,000-message campaign: page times, their query plans, and the CSV export.

Issue 11, item 4. Builds a fresh database (SQLite file by default, or a new PostgreSQL database with
--server) with one big campaign (statuses as a finished send leaves them: mostly delivered, some
undelivered, failed, unknown, in flight, queued and held for quiet hours; numbers in two countries,
uncorrelated with ids) and a second campaign a tenth its size, written in bulk by the database itself
(generate_series / a recursive CTE). Then, through the real view (test client, signed in):
  1. p50 and p95 of every kind of page: first, deep (after= near the end), backward (before=), each
     status filter, number prefixes from '+1' (every row) to a whole number and one that matches
     nothing, a status inside a search, and the bounded scan of a filter the index can't apply;
  2. each page's SQL under EXPLAIN: no full scan of the message table (PostgreSQL: no Seq Scan on
     message; SQLite: no bare SCAN message);
  3. the export of the whole campaign streamed: rows/s, every row once, and the growth of the
     process's resident memory while it streams.
Limits: p95 of every page < 50 ms; no full scan; export rows = messages; memory growth < 64 MB.

    python bench/message_pages.py [--quick] [--messages 1000000] [--server postgresql://postgres@127.0.0.1:5432/postgres]
"""

import argparse
import csv
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results" / "message_pages.json"
P95_LIMIT_MS = 50.0
MEMORY_LIMIT_MB = 64.0
REPEATS = 30

# One deterministic pseudo-random fraction per row (no random(): SQLite may evaluate it once per use).
_FRACTION = "(((n * 2654435761) % 1000003) / 1000003.0)"
_STATUS = f"""CASE WHEN {_FRACTION} < 0.80 THEN 'delivered' WHEN {_FRACTION} < 0.85 THEN 'undelivered'
  WHEN {_FRACTION} < 0.87 THEN 'failed' WHEN {_FRACTION} < 0.92 THEN 'accepted' WHEN {_FRACTION} < 0.925 THEN 'sending'
  WHEN {_FRACTION} < 0.93 THEN 'unknown' ELSE 'created' END"""
_COLUMNS = """team_id, campaign_id, kind, phone, sender, text, encoding, parts, estimated_cost, is_mms, reference,
  status, unique_id, billed_parts, billed_cost, reply_parts, reply_cost, error, created_at, sent_at, updated_at, held,
  attempts, resent, sent_twice"""


def _values(phone: str, now: str) -> str:
    sent = f"{_FRACTION} < 0.93"
    billed = f"{_FRACTION} < 0.92"
    return f"""SELECT :team, :campaign, 'campaign', {phone}, '+14155550111', 'Hi', 'GSM-7', 1, 0.015, false,
      :prefix || n, {_STATUS},
      CASE WHEN {sent} THEN 'u-' || n END, CASE WHEN {billed} THEN 1 END,
      CASE WHEN {billed} THEN (CASE WHEN n % 997 = 0 THEN 0.03 ELSE 0.015 END) END,
      CASE WHEN {billed} THEN 1 END, CASE WHEN {billed} THEN 0.015 END,
      CASE WHEN {_FRACTION} >= 0.85 AND {_FRACTION} < 0.87 THEN 'Refused: invalid destination' END,
      {now}, CASE WHEN {sent} THEN {now} END, {now}, {_FRACTION} >= 0.97, 0, false, false"""


def build(app, count: int) -> dict:
    """The team (zone New York), its editor, the big campaign and a tenth-size one; returns their ids."""
    from sqlalchemy import text

    from webapp.extensions import db
    from webapp.models import Campaign, Role, Team, User

    with app.app_context():
        db.create_all()
        team = Team(name="Bench", timezone="America/New_York")
        db.session.add(team)
        db.session.flush()
        user = User(team_id=team.id, email="bench@example.com", role=Role.VIEWER, password_hash="-")
        big = Campaign(team_id=team.id, name="Big", body="Hi")
        small = Campaign(team_id=team.id, name="Small", body="Hi")
        db.session.add_all([user, big, small])
        db.session.commit()
        postgres = db.engine.dialect.name == "postgresql"
        # Numbers uncorrelated with ids: one in ten in GB, the rest in the US.
        seven = "lpad(((n * 7919) % 10000000)::text, 7, '0')" if postgres else \
            "substr('0000000' || ((n * 7919) % 10000000), -7, 7)"
        six = "lpad(((n * 7919) % 1000000)::text, 6, '0')" if postgres else \
            "substr('000000' || ((n * 7919) % 1000000), -6, 6)"
        phone = f"CASE WHEN n % 10 = 3 THEN '+447700' || {six} ELSE '+1415' || {seven} END"
        now = "now() AT TIME ZONE 'UTC'" if postgres else "datetime('now')"
        # Only this module's constants are formatted into the SQL; the values are bound.
        if postgres:
            numbers = "generate_series(1, CAST(:n AS bigint)) n"
            insert = f"INSERT INTO message ({_COLUMNS}) {_values(phone, now)} FROM {numbers}"
        else:
            numbers = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n) "
            insert = f"{numbers}INSERT INTO message ({_COLUMNS}) {_values(phone, now)} FROM g"  # noqa: S608
        for campaign, size, prefix in ((big, count, "big-"), (small, count // 10, "small-")):
            db.session.execute(text(insert), {"team": team.id, "campaign": campaign.id, "n": size, "prefix": prefix})
            db.session.commit()
        db.session.execute(text("ANALYZE message") if postgres else text("ANALYZE"))
        db.session.commit()
        return {"team": team.id, "user": user.id, "campaign": big.id, "postgres": postgres}


def signed_in_client(app, user_id: int):
    """A test client carrying a real sign-in of the bench user (no login form: it needs Redis)."""
    from webapp.extensions import db
    from webapp.models import User
    from webapp.services.accounts import start_login_session

    with app.app_context():
        token = start_login_session(db.session.get(User, user_id), remember=False)
        db.session.commit()
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"], session["_fresh"] = token, True
    return client


def scenarios(app, client, campaign_id: int) -> dict[str, str]:
    """name -> URL of each page measured; deep cursors taken from the data."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Message

    with app.app_context():
        last = db.session.scalar(select(func.max(Message.id)).where(Message.campaign_id == campaign_id))
        first = db.session.scalar(select(func.min(Message.id)).where(Message.campaign_id == campaign_id))
        some_phone = db.session.scalar(select(Message.phone).where(Message.id == (first + last) // 2))
    deep = last - 500
    base = f"/campaigns/{campaign_id}/messages"
    return {
        "first page": base,
        "deep page (after)": f"{base}?after={deep}",
        "deep page (before)": f"{base}?before={deep}",
        "delivered, deep": f"{base}?status=delivered&after={deep}",
        "failed": f"{base}?status=failed",
        "unknown, deep": f"{base}?status=unknown&after={deep}",
        "held (scan)": f"{base}?status=held",
        "queued (scan), deep": f"{base}?status=queued&after={deep}",
        "search +1": f"{base}?q=%2B1",
        "search +1415, second page": next_link(client.get(f"{base}?q=%2B1415").get_data(as_text=True)),
        "search +14155": f"{base}?q=%2B14155",
        "search +44": f"{base}?q=%2B44",
        "search whole number": f"{base}?q={some_phone.replace('+', '%2B')}",
        "search matching nothing": f"{base}?q=%2B999",
        # The tenth-size campaign's rows all come after the big one's: a plan walking the primary key
        # would read a million rows of the other campaign first.
        "other campaign: failed": f"/campaigns/{campaign_id + 1}/messages?status=failed",
        "search +44, failed (scan)": f"{base}?q=%2B44&status=failed",
        "search +1415, unknown (scan)": f"{base}?q=%2B1415&status=unknown",
    }


def next_link(html: str) -> str | None:
    import re

    found = re.search(r'id="page-next" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def capture_sql(app):
    """A list the app's SQL on message goes into, (statement, parameters), while it is attached."""
    from sqlalchemy import event

    from webapp.extensions import db

    captured = []

    def remember(_conn, _cursor, statement, parameters, _context, _many):
        if "FROM message" in statement:
            captured.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    return captured, lambda: event.remove(engine, "before_cursor_execute", remember)


def full_scans(app, statements, postgres: bool) -> list[str]:
    """The plans of these statements that read the whole message table."""
    from webapp.extensions import db

    found = []
    with app.app_context():
        connection = db.session.connection()
        for statement, parameters in statements:
            prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            rows = connection.exec_driver_sql(prefix + statement, parameters).all()
            plan = "\n".join(str(row[-1]) for row in rows)
            if postgres and "Seq Scan on message" in plan:
                found.append(plan)
            if not postgres and any(line.strip().endswith("SCAN message") for line in plan.splitlines()):
                found.append(plan)
        db.session.rollback()
    return found


def page_query(url: str):
    """The service call the view makes for this URL: the page's queries alone, without the request around them."""
    from urllib.parse import parse_qs, urlsplit

    from webapp.services import message_log

    parts = urlsplit(url)
    campaign_id = int(parts.path.split("/")[2])
    args = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return lambda: message_log.page(campaign_id, args.get("status", ""), message_log.number_prefix(args.get("q")),
                                    message_log.cursor_id(args.get("after")), message_log.cursor_id(args.get("before")))


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return round(statistics.median(times), 2), round(times[max(0, int(len(times) * 0.95) - 1)], 2)


def measure_pages(app, client, urls: dict[str, str], postgres: bool) -> dict:
    """Each page REPEATS times through the view (the figure judged) and through the service alone."""
    from webapp.extensions import db

    results = {}
    for name, url in urls.items():
        captured, stop = capture_sql(app)
        response = client.get(url)
        stop()
        assert response.status_code == 200, (name, response.status_code)
        request_times, query_times = [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            html = client.get(url).get_data(as_text=True)
            request_times.append((time.perf_counter() - started) * 1000)
        query = page_query(url)
        with app.app_context():
            for _ in range(REPEATS):
                started = time.perf_counter()
                query()
                query_times.append((time.perf_counter() - started) * 1000)
                db.session.rollback()
        p50, p95 = percentiles(request_times)
        query_p50, query_p95 = percentiles(query_times)
        results[name] = {"url": url, "rows": html.count('<tr id="message-'), "p50_ms": p50, "p95_ms": p95,
                         "query_p50_ms": query_p50, "query_p95_ms": query_p95,
                         "full_scans": len(full_scans(app, captured, postgres)), "queries": len(captured)}
    return results


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def measure_export(client, campaign_id: int, count: int) -> dict:
    """Stream the export, checking each message comes once (a bit per reference) and watching resident memory."""
    seen = bytearray(count + 1)
    before = peak = _rss_mb()
    started = time.perf_counter()
    response = client.get(f"/campaigns/{campaign_id}/messages.csv", buffered=False)
    rows, repeated, tail = 0, 0, ""
    for piece in response.response:
        text = tail + (piece.decode() if isinstance(piece, bytes) else piece)
        text, _, tail = text.rpartition("\n")
        for row in csv.reader(io.StringIO(text)):
            if row and row[-1].startswith("big-"):  # "Our reference", the last column
                rows += 1
                number = int(row[-1][4:])
                repeated += seen[number]
                seen[number] = 1
        peak = max(peak, _rss_mb())
    response.close()
    seconds = time.perf_counter() - started
    return {"rows": rows, "repeated": repeated, "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds), "memory_growth_mb": round(peak - before, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200,000 messages")
    parser.add_argument("--server", help="a PostgreSQL server URL; a fresh database is created and dropped")
    args = parser.parse_args()
    count = 200_000 if args.quick else args.messages

    from webapp import create_app

    workdir = Path(tempfile.mkdtemp(prefix="message-pages-bench-"))
    drop = None
    if args.server:
        from tests.conftest import _fresh_postgres_database

        database_url, drop = _fresh_postgres_database(args.server)
    else:
        database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "INSTANCE_PATH": str(workdir / "instance"),
                      "SECRET_KEY": "bench-" + "-".join(str(i) for i in range(12)), "WTF_CSRF_ENABLED": False})
    try:
        started = time.perf_counter()
        ids = build(app, count)
        build_seconds = round(time.perf_counter() - started, 1)
        client = signed_in_client(app, ids["user"])
        urls = scenarios(app, client, ids["campaign"])
        pages = measure_pages(app, client, urls, ids["postgres"])
        export = measure_export(client, ids["campaign"], count)
    finally:
        if drop is not None:
            from webapp.extensions import db

            with app.app_context():
                db.engine.dispose()
            drop()

    worst = max(pages.values(), key=lambda page: page["p95_ms"])
    scanned = [name for name, page in pages.items() if page["full_scans"]]
    checks = {
        "worst_page_p95_ms": {"value": worst["p95_ms"], "limit": f"< {P95_LIMIT_MS}",
                              "ok": worst["p95_ms"] < P95_LIMIT_MS},
        "pages_with_a_full_scan": {"value": scanned, "limit": "none", "ok": not scanned},
        "export_rows": {"value": export["rows"], "limit": f"== {count}, none twice",
                        "ok": export["rows"] == count and export["repeated"] == 0},
        "export_memory_growth_mb": {"value": export["memory_growth_mb"], "limit": f"< {MEMORY_LIMIT_MB}",
                                    "ok": export["memory_growth_mb"] < MEMORY_LIMIT_MB},
    }
    report = {
        "benchmark": "message_pages",
        "mode": "quick" if args.quick else "full",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "database": "postgresql" if ids["postgres"] else "sqlite",
        "messages": count,
        "other_campaign_messages": count // 10,
        "build_seconds": build_seconds,
        "pages": pages,
        "export": export,
        "checks": checks,
        "pass": all(check["ok"] for check in checks.values()),
    }
    print(f"{report['database']}, {count:,} messages in the campaign (+{count // 10:,} in another), built in "
          f"{build_seconds} s")
    print(f"{'page (request; its queries alone)':<34}{'rows':>5}{'p50 ms':>8}{'p95 ms':>8}{'query p50':>11}"
          f"{'query p95':>10}  full scans   (limit: request p95 < {P95_LIMIT_MS:.0f} ms, no full scan)")
    for name, page in pages.items():
        print(f"{name:<34}{page['rows']:>5}{page['p50_ms']:>8.2f}{page['p95_ms']:>8.2f}{page['query_p50_ms']:>11.2f}"
              f"{page['query_p95_ms']:>10.2f}  {page['full_scans']}")
    print(f"export: {export['rows']:,} rows in {export['seconds']} s ({export['rows_per_second']:,}/s), "
          f"memory +{export['memory_growth_mb']} MB (limit < {MEMORY_LIMIT_MB:.0f})")
    print("pass" if report["pass"] else "FAIL: " + ", ".join(name for name, check in checks.items() if not check["ok"]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
