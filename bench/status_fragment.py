"""Status fragment latency of a 1,000,000-message campaign on PostgreSQL while delivery callbacks stream in.

Issue 11, item 7 (second half). One run, a fresh PostgreSQL database, a real Redis (login throttling):
  1. a team, an editor and a sending campaign whose audience is frozen into `--messages` message rows
     (one INSERT ... SELECT generate_series through the tally triggers, as the freeze's COPY goes): kind
     'campaign', unique references, text, parts and estimates; 70% posted over 90 minutes in id order
     (sent_at spread over that time), the rest queued, a tenth of those held for quiet hours. Of the
     posted: delivered, undelivered (three provider reasons), failed, unknown, opted out, a few in flight,
     accepted ones awaiting their report (70% of the last 10 minutes, the provider lagging) and 1.5% of
     older ones whose report never came (listed as overdue). The triggers' deltas are checked against a
     recount (tallies.recount), the timeline (campaign_minute) is built from sent_at, then VACUUM ANALYZE
     (what autovacuum does after a bulk insert);
  2. the app under gunicorn as in production (gthread, 2 workers x 8 threads, access log on), a
     requests.Session signed in through the login form with its CSRF token;
  3. 4 threads posting notify callbacks (form-encoded, as the sandbox sends them) back to back for
     messages that exist (by reference: accepted and unknown ones, 90% DELIVRD, 10% UNDELIV/EXPIRED/
     REJECTD, 5% repeated), and a thread running tallies.fold() every 5 s as the scheduler does;
  4. meanwhile GET /campaigns/<id>/status (the fragment the page polls) every 0.2 s, timed one by one:
     p50, p95 and max; a few warm-up requests first are not counted;
  5. callbacks stopped, a final fold, one last fragment: its counts, total and billed spend must equal a
     recount of the messages, and tallies.differences() must be empty.
While the callbacks still stream, the fragment's queries are timed in this process (the same service
calls the view makes); when p95 misses the goal (or with --explain) the slowest are shown with
EXPLAIN (ANALYZE, BUFFERS), to say where the time goes.
Goal, from issue 11: p95 < 50 ms. --quick: 200,000 messages and 100 requests, same checks, < 2 minutes.

    python bench/status_fragment.py [--quick] [--messages 1000000] [--requests 300] [--explain]
        [--server postgresql://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/10]
"""

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import answers, free_port, stop_group, wait_until  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "status_fragment.json"
P95_LIMIT_MS = 50.0
FULL = {"messages": 1_000_000, "requests": 300}
QUICK = {"messages": 200_000, "requests": 100}
REQUEST_INTERVAL = 0.2  # seconds between fragment requests (ten people watching, each polling every 2 s)
WARMUP_REQUESTS = 10  # not counted: each gunicorn worker compiles templates and fills its pools first
CALLBACK_THREADS = 4
FOLD_SECONDS = 5.0  # as the scheduler folds
DUPLICATE_SHARE = 0.05  # providers repeat callbacks
POSTED_SHARE = 0.70  # of the audience, posted so far (in id order, as batches claim)
SPAN_MINUTES = 90  # from launch to now
LAG_SECONDS = 600  # reports of the last 10 minutes mostly not in yet
PRICE = Decimal("0.015")
PASSWORD = "bench-password-" + "x" * 12
SENDER = "+14155550111"
FOOTER = "Reply STOP to opt out"
BODY = "Hi {{ first_name }}, spring sale: 20% off everything this weekend only."
UNDELIVERED_WORDS = ("UNDELIV", "EXPIRED", "REJECTD")

# One statement: the frozen audience, through the tally triggers (one statement-level delta set).
MESSAGES_SQL = """
WITH base AS (
  SELECT i, random() AS r, random() AS r2, i <= :posted AS posted,
         CASE WHEN i <= :posted
              THEN CAST(:t0 AS timestamp) + make_interval(secs => (i - 1) * CAST(:span AS float8) / :posted)
         END AS sent_at,
         CASE WHEN i % 9 = 0 THEN 2 ELSE 1 END AS parts
  FROM generate_series(1, :n) AS i
), placed AS (
  SELECT *, CASE
      WHEN NOT posted THEN CASE WHEN r < 0.1 THEN 'held' ELSE 'created' END
      WHEN sent_at > CAST(:now AS timestamp) - interval '1 second' THEN 'sending'
      WHEN sent_at > CAST(:now AS timestamp) - make_interval(secs => :lag) AND r < 0.7 THEN 'accepted'
      WHEN sent_at > CAST(:now AS timestamp) - make_interval(secs => :lag) THEN 'delivered'
      WHEN r < 0.015 THEN 'accepted'
      WHEN r < 0.020 THEN 'unknown'
      WHEN r < 0.028 THEN 'failed'
      WHEN r < 0.029 THEN 'opted_out'
      WHEN r < 0.075 THEN 'undelivered'
      ELSE 'delivered' END AS bucket
  FROM base
), shaped AS (
  SELECT *, bucket IN ('accepted', 'delivered', 'undelivered') AS taken,
         CASE WHEN bucket IN ('delivered', 'undelivered')
              THEN least(sent_at + make_interval(secs => 3 + r2 * 57), CAST(:now AS timestamp)) END AS finished,
         CASE WHEN r2 < 0.003 THEN parts + 1 ELSE parts END AS billed
  FROM placed
)
INSERT INTO message (team_id, campaign_id, kind, phone, sender, text, encoding, parts, estimated_cost, is_mms,
  reference, status, unique_id, pid, billed_parts, billed_cost, reply_parts, reply_cost, error, created_at,
  sent_at, updated_at, finished_at, claim_token, claimed_at, not_before, held, attempts, resent, sent_twice)
SELECT :team_id, :campaign_id, 'campaign', '+1415' || lpad(CAST(i AS text), 7, '0'), :sender,
  CASE WHEN parts = 2 THEN 'Hi Ana-Maria ' || i || ', spring sale: 20% off everything this weekend only, '
       || 'in store and online, with free delivery on orders over 50 dollars. See the new collection first.'
       ELSE 'Hi Ana' || i || ', spring sale: 20% off everything this weekend only.' END || E'\\n' || :footer,
  'GSM-7', parts, parts * :price, false,
  md5(:salt || i), CASE WHEN bucket = 'held' THEN 'created' ELSE bucket END,
  CASE WHEN taken THEN CAST(CAST(md5('uid' || :salt || i) AS uuid) AS text) END,
  CASE WHEN taken THEN 'ZQF88E' || md5('pid' || i) END,
  CASE WHEN taken THEN billed END, CASE WHEN taken THEN billed * :price END,
  CASE WHEN taken THEN parts END, CASE WHEN taken THEN parts * :price END,
  CASE WHEN bucket = 'undelivered' THEN 'Not delivered: the provider reported '
         || (ARRAY['UNDELIV', 'EXPIRED', 'REJECTD'])[1 + CAST(floor(r2 * 3) AS int)]
         || ' (cause ' || (1 + CAST(floor(r2 * 3) AS int)) || ')'
       WHEN bucket = 'failed' THEN 'Refused by the provider: invalid destination number (causecode 1004)'
       WHEN bucket = 'unknown' THEN 'No answer from the provider within 30 s: it may have been sent'
       WHEN bucket = 'opted_out' THEN 'Opted out after the campaign was launched' END,
  CAST(:t0 AS timestamp),
  CASE WHEN bucket <> 'opted_out' THEN sent_at END,
  coalesce(finished, CASE WHEN bucket <> 'opted_out' THEN sent_at END, CAST(:t0 AS timestamp)),
  finished,
  CASE WHEN bucket = 'sending' THEN 'bench-batch' END, CASE WHEN bucket = 'sending' THEN sent_at END,
  CASE WHEN bucket = 'held' THEN CAST(:now AS timestamp) + make_interval(hours => 1 + CAST(floor(r2 * 10) AS int)) END,
  bucket = 'held', CASE WHEN posted AND bucket <> 'opted_out' THEN 1 ELSE 0 END, false, false
FROM shaped
"""

# The chart's minutes, as the fold would have built them while the campaign sent.
MINUTES_SQL = """
INSERT INTO campaign_minute (campaign_id, minute, posted, delivered, failed, spend)
SELECT :campaign_id, minute, sum(posted), sum(delivered), sum(failed), sum(spend) FROM (
  SELECT date_trunc('minute', sent_at) AS minute, 1 AS posted, 0 AS delivered,
         CASE WHEN status = 'failed' THEN 1 ELSE 0 END AS failed,
         CASE WHEN status IN ('accepted', 'delivered', 'undelivered', 'unknown', 'sending')
              THEN coalesce(billed_cost, estimated_cost) ELSE 0 END AS spend
  FROM message WHERE campaign_id = :campaign_id AND sent_at IS NOT NULL
  UNION ALL
  SELECT date_trunc('minute', finished_at), 0, CASE WHEN status = 'delivered' THEN 1 ELSE 0 END,
         CASE WHEN status = 'undelivered' THEN 1 ELSE 0 END, 0
  FROM message WHERE campaign_id = :campaign_id AND finished_at IS NOT NULL
) AS moments GROUP BY minute
"""


# --- the campaign -----------------------------------------------------------------------------------


def build(app, count: int) -> dict:
    """Team, editor, sending campaign with `count` frozen messages, its tally and timeline; what was built."""
    from sqlalchemy import func, select, text
    from werkzeug.security import generate_password_hash

    from webapp.extensions import db
    from webapp.models import (
        AuditEntry,
        Campaign,
        CampaignList,
        CampaignStatus,
        ContactList,
        Message,
        Role,
        SenderNumber,
        Team,
        User,
        utcnow,
    )
    from webapp.services import tallies

    started = time.perf_counter()
    now = utcnow()
    t0 = now - timedelta(minutes=SPAN_MINUTES)
    posted = round(count * POSTED_SHARE)
    with app.app_context():
        db.create_all()
        team = Team(name="Bench retail", timezone="America/New_York", send_rate=Decimal(200))
        db.session.add(team)
        db.session.flush()
        sender = SenderNumber(team_id=team.id, number=SENDER, label="Main")
        user = User(team_id=team.id, email="editor@bench.example", name="Bench Editor", role=Role.EDITOR,
                    password_hash=generate_password_hash(PASSWORD, method="scrypt"))
        contacts = ContactList(team_id=team.id, name="Spring customers")
        db.session.add_all([sender, user, contacts])
        db.session.flush()
        campaign = Campaign(
            team_id=team.id, name="Spring sale", status=CampaignStatus.SENDING, body=BODY,
            sender_number_id=sender.id, footer_text=FOOTER, frozen_text=f"{BODY}\n{FOOTER}", created_by_id=user.id,
            prepared_at=t0, launched_at=t0, heartbeat_at=now, budget_cap=Decimal(25_000), recipients=count,
            exclusions={"opted_out": count // 90, "duplicate": count // 40, "landline": count // 300},
            audience=[CampaignList(list_id=contacts.id, position=0)])
        db.session.add(campaign)
        db.session.flush()
        db.session.add_all([
            AuditEntry(team_id=team.id, campaign_id=campaign.id, user_id=user.id, action="launched", at=t0),
            AuditEntry(team_id=team.id, campaign_id=campaign.id, action="audience frozen",
                       detail=f"{count:,} messages", at=t0),
            AuditEntry(team_id=team.id, campaign_id=campaign.id, user_id=user.id, action="budget cap",
                       detail="25,000.00 USD", at=t0 + timedelta(minutes=20)),
        ])
        db.session.commit()
        team_id, campaign_id, callback_token = team.id, campaign.id, team.callback_token

        db.session.execute(text(MESSAGES_SQL), {
            "team_id": team_id, "campaign_id": campaign_id, "n": count, "posted": posted, "t0": t0, "now": now,
            "span": SPAN_MINUTES * 60 - 2, "lag": LAG_SECONDS, "sender": SENDER, "footer": FOOTER,
            "price": PRICE, "salt": secrets.token_hex(4)})
        db.session.commit()
        inserted = time.perf_counter() - started
        # The triggers appended the insert as deltas; a recount compares them with the rows and rebuilds
        # the tally (the deltas all carry this moment, so folding them would put the whole campaign in
        # one minute of the chart; the timeline is built from sent_at instead).
        trigger_rows_wrong = tallies.recount(campaign_id)
        db.session.execute(text(MINUTES_SQL), {"campaign_id": campaign_id})
        reserved = db.session.scalar(select(func.coalesce(func.sum(Message.estimated_cost), 0)).where(
            Message.campaign_id == campaign_id, Message.sent_at.is_not(None)))
        db.session.get(Campaign, campaign_id).reserved_cost = reserved
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("message", "campaign_tally", "campaign_minute", "tally_delta"):
                connection.exec_driver_sql(f"VACUUM ANALYZE {table}")
        by_status = dict(db.session.execute(select(Message.status, func.count()).where(
            Message.campaign_id == campaign_id).group_by(Message.status)).all())
        minutes = db.session.scalar(text("SELECT count(*) FROM campaign_minute WHERE campaign_id = :c"),
                                    {"c": campaign_id})
    return {"team_id": team_id, "campaign_id": campaign_id, "callback_token": callback_token,
            "messages": count, "posted": posted, "by_status": {str(key): value for key, value in by_status.items()},
            "timeline_minutes": minutes, "trigger_rows_wrong_at_insert": trigger_rows_wrong,
            "insert_seconds": round(inserted, 1), "build_seconds": round(time.perf_counter() - started, 1)}


def callback_targets(app, campaign_id: int) -> list[tuple]:
    """(reference, uniqueid, parts, cost) of every message still awaiting its report, in a fixed random order."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Message, MessageStatus

    with app.app_context():
        rows = db.session.execute(
            select(Message.reference, Message.unique_id, Message.parts, Message.reply_cost, Message.estimated_cost)
            .where(Message.campaign_id == campaign_id,
                   Message.status.in_((MessageStatus.ACCEPTED, MessageStatus.UNKNOWN)))).all()
    targets = [(reference, unique_id or f"late-{reference[:20]}", parts, reply_cost or estimated_cost)
               for reference, unique_id, parts, reply_cost, estimated_cost in rows]
    random.Random(11).shuffle(targets)
    return targets


# --- the app under gunicorn -------------------------------------------------------------------------


class Web:
    """The app under gunicorn as `campaigns serve` runs it (gthread, access log), 2 workers x 8 threads."""

    def __init__(self, env: dict, log: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                   "--worker-class", "gthread", "--threads", "8", "--access-logfile", "-", "webapp:create_app()"]
        self.log = log.open("a")
        self.process = subprocess.Popen(command, env=env | {"PUBLIC_BASE_URL": self.url}, start_new_session=True,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: answers(f"{self.url}/healthz"), 60, "the app under gunicorn")

    def stop(self) -> None:
        stop_group(self.process)
        self.log.close()


def sign_in(url: str, email: str) -> requests.Session:
    """A browser-like session signed in through the login form, CSRF token and all."""
    session = requests.Session()
    page = session.get(f"{url}/login", timeout=30)
    page.raise_for_status()
    token = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', page.text) \
        or re.search(r'<input[^>]*value="([^"]+)"[^>]*name="csrf_token"', page.text)
    if token is None:
        raise RuntimeError("the login form has no csrf_token")
    answer = session.post(f"{url}/login", data={"csrf_token": token.group(1), "email": email, "password": PASSWORD},
                          allow_redirects=False, timeout=30)
    if answer.status_code != 302:
        raise RuntimeError(f"signing in answered {answer.status_code}, not a redirect")
    return session


# --- the load: callbacks and folds ------------------------------------------------------------------


class CallbackStream:
    """CALLBACK_THREADS threads posting notify callbacks back to back, each target once (then repeats), in a
    process of their own: the client timing the fragment must not wait for their GIL."""

    def __init__(self, notify_url: str, targets: list[tuple]):
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self.parent_end, child_end = context.Pipe()
        self.process = context.Process(target=post_callbacks, args=(notify_url, targets, self.stop_event, child_end),
                                       daemon=True)
        self.result: dict | None = None

    def start(self) -> None:
        self.process.start()
        if self.parent_end.recv() != "started":
            raise RuntimeError("the callback process did not start")

    def finish(self) -> dict:
        if self.result is None and self.process.pid is not None:
            self.stop_event.set()
            self.result = self.parent_end.recv() if self.parent_end.poll(120) else {}
            self.process.join(timeout=30)
        return self.result or {}


def post_callbacks(notify_url: str, targets: list[tuple], stop, connection) -> None:
    """Child process: post until told to stop, then send back what was posted and answered."""
    lock = threading.Lock()
    next_index = itertools.count()
    tally = {"posted": 0, "repeats": 0, "errors": defaultdict(int), "called": set()}

    def body(rng: random.Random, index: int) -> tuple[dict, bool]:
        repeat = index >= len(targets) or (index > 100 and rng.random() < DUPLICATE_SHARE)
        reference, unique_id, parts, cost = targets[rng.randrange(min(index, len(targets))) if repeat else index]
        draw = random.Random(reference).random()  # a message's outcome is the same in every repeat
        word, cause = ("DELIVRD", 0) if draw < 0.9 else (UNDELIVERED_WORDS[int(draw * 100) % 3], 1 + int(draw * 10) % 3)
        return {"uniqueid": unique_id, "reference": reference, "status": word, "causecode": cause,
                "cost": str(cost), "parts": parts,
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}, repeat

    def run(number: int) -> None:
        rng = random.Random(number)
        session = requests.Session()
        while not stop.is_set():
            fields, repeat = body(rng, next(next_index))
            try:
                answer = session.post(notify_url, data=fields, timeout=30)
                outcome = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
            except requests.RequestException as error:
                outcome = type(error).__name__
            with lock:
                tally["posted"] += 1
                tally["repeats"] += repeat
                if outcome:
                    tally["errors"][outcome] += 1
                else:
                    tally["called"].add(fields["reference"])

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(CALLBACK_THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    connection.send("started")
    stop.wait()
    for thread in threads:
        thread.join(timeout=60)
    seconds = time.perf_counter() - started
    connection.send({"posted": tally["posted"], "seconds": round(seconds, 2),
                     "per_second": round(tally["posted"] / seconds, 1), "repeats": tally["repeats"],
                     "errors": dict(tally["errors"]), "called": sorted(tally["called"])})


class Folder:
    """tallies.fold() every FOLD_SECONDS in a thread of its own, as the scheduler runs it."""

    def __init__(self, app):
        self.app = app
        self.stop = threading.Event()
        self.seconds: list[float] = []
        self.deltas: list[int] = []  # unfolded delta rows each fold found
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        from sqlalchemy import func, select

        from webapp.extensions import db
        from webapp.models import TallyDelta
        from webapp.services import tallies

        with self.app.app_context():
            while not self.stop.wait(FOLD_SECONDS):
                try:
                    self.deltas.append(db.session.scalar(select(func.count()).select_from(TallyDelta)))
                    db.session.commit()
                    started = time.perf_counter()
                    tallies.fold()
                    self.seconds.append(time.perf_counter() - started)
                except Exception as error:  # noqa: BLE001 - counted and shown; the scheduler logs and goes on
                    db.session.rollback()
                    self.errors.append(f"{type(error).__name__}: {error}")


# --- measuring --------------------------------------------------------------------------------------


def fetch_fragment(session: requests.Session, url: str) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    answer = session.get(url, headers={"HX-Request": "true"}, allow_redirects=False, timeout=30)
    return time.perf_counter() - started, answer


def measure(session: requests.Session, url: str, count: int) -> dict:
    """`count` fragment requests, one every REQUEST_INTERVAL (or right after a slower one)."""
    latencies, statuses, sizes = [], defaultdict(int), []
    next_at = time.perf_counter()
    for _ in range(count):
        time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += REQUEST_INTERVAL
        seconds, answer = fetch_fragment(session, url)
        latencies.append(seconds * 1000)
        statuses[answer.status_code] += 1
        sizes.append(len(answer.content))
    ordered = sorted(latencies)
    return {"requests": count, "p50_ms": round(_percentile(ordered, 50), 1),
            "p95_ms": round(_percentile(ordered, 95), 1),
            "max_ms": round(ordered[-1], 1), "mean_ms": round(statistics.fmean(ordered), 1),
            "statuses": {str(code): n for code, n in sorted(statuses.items())},
            "bytes": round(statistics.fmean(sizes))}


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, round(percent / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def query_profile(app, campaign_id: int, rounds: int = 5) -> list[dict]:
    """The fragment's queries (the service calls the view makes), timed here; slowest first, by median."""
    from sqlalchemy import event, select
    from sqlalchemy.orm import joinedload

    from webapp.extensions import db
    from webapp.models import AuditEntry, Campaign
    from webapp.services import audience, progress

    timings: dict[str, list[float]] = defaultdict(list)
    samples: dict[str, object] = {}
    this_thread = threading.get_ident()  # not the fold's thread, which shares the engine

    def before(connection, cursor, statement, parameters, context, executemany):
        connection.info["bench_started"] = time.perf_counter()

    def after(connection, cursor, statement, parameters, context, executemany):
        started = connection.info.pop("bench_started", None)
        if threading.get_ident() != this_thread or started is None:
            return
        timings[statement].append((time.perf_counter() - started) * 1000)
        samples.setdefault(statement, parameters)

    with app.app_context():
        engine = db.engine
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        try:
            for _ in range(rounds):
                db.session.rollback()
                campaign = db.session.get(Campaign, campaign_id)
                progress.progress(campaign, app.config["REPORT_OVERDUE_SECONDS"])
                db.session.scalars(select(AuditEntry).options(joinedload(AuditEntry.user))
                                   .where(AuditEntry.campaign_id == campaign_id)
                                   .order_by(AuditEntry.id.desc()).limit(100)).all()
                if campaign.prepared_at is None:
                    audience.latest_summary(campaign)
                db.session.rollback()
        finally:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)
    profile = [{"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2),
                "calls_per_fragment": round(len(times) / rounds, 1), "statement": statement,
                "parameters": samples[statement]} for statement, times in timings.items()]
    profile.sort(key=lambda entry: -entry["median_ms"])
    return profile


def explain(app, profile: list[dict], top: int = 3) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of the `top` slowest queries of the profile."""
    from webapp.extensions import db

    plans = []
    with app.app_context(), db.engine.connect() as connection:
        for entry in [entry for entry in profile if entry["statement"].lstrip().upper().startswith("SELECT")][:top]:
            rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + entry["statement"],
                                              entry["parameters"]).all()
            plans.append({"median_ms": entry["median_ms"], "statement": entry["statement"],
                          "plan": [row[0] for row in rows]})
            connection.rollback()
    return plans


def final_agreement(app, campaign_id: int, fragment: str) -> dict:
    """The last fragment's figures against a recount of the messages, and the kept tally's differences."""
    from webapp.extensions import db
    from webapp.services import tallies
    from webapp.tally_triggers import BUCKETS

    with app.app_context():
        counted = tallies.counted(campaign_id)
        differences = tallies.differences(campaign_id)
        db.session.rollback()
    recount = tallies.Figures()
    for (bucket, _reason), values in counted.items():
        into = recount.buckets.setdefault(bucket, dict.fromkeys(tallies.MEASURES, 0))
        for measure in tallies.MEASURES:
            into[measure] += values[measure]
    shown = {bucket: int(number.replace(",", ""))
             for bucket, number in re.findall(r'id="count-([a-z_]+)">([\d,]+)<', fragment)}
    total = re.search(r'id="progress-text">[\d,]+ of ([\d,]+) messages', fragment)
    billed = re.search(r'id="spend-billed"><span class="money" title="([\d.-]+) ', fragment)  # the full figure
    disagreements = {}
    for bucket in BUCKETS:
        if shown.get(bucket, 0) != recount.count(bucket):
            disagreements[bucket] = {"fragment": shown.get(bucket, 0), "recount": recount.count(bucket)}
    if total is None or int(total.group(1).replace(",", "")) != recount.messages:
        disagreements["total"] = {"fragment": total and total.group(1), "recount": recount.messages}
    if billed is None or Decimal(billed.group(1)) != recount.billed:
        disagreements["billed"] = {"fragment": billed and billed.group(1), "recount": f"{recount.billed:.4f}"}
    return {"fragment_vs_recount": disagreements, "tally_differences": {f"{key[0]}/{key[1]}": str(value)
                                                                         for key, value in differences.items()},
            "recount_by_bucket": {bucket: recount.count(bucket) for bucket in BUCKETS if recount.count(bucket)},
            "billed": f"{recount.billed:.4f}"}


# --- the run ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 messages and 100 requests, in under 2 minutes")
    parser.add_argument("--messages", type=int, help="messages in the campaign (default 1,000,000; quick 200,000)")
    parser.add_argument("--requests", type=int, help="fragment requests measured (default 300; quick 100)")
    parser.add_argument("--explain", action="store_true", help="show the slowest queries' plans even when p95 passes")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    sizes = dict(QUICK if options.quick else FULL)
    sizes["messages"] = options.messages or sizes["messages"]
    sizes["requests"] = options.requests or sizes["requests"]
    mode = "quick" if options.quick else "full"
    load_before = round(os.getloadavg()[0], 2)
    began = time.monotonic()

    from tests.conftest import _fresh_postgres_database
    from webapp import create_app
    from webapp.extensions import db

    database_url, drop = _fresh_postgres_database(options.server)
    instance = Path(tempfile.mkdtemp(prefix="bench-status-"))
    secret = secrets.token_urlsafe(48)
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": options.redis, "SECRET_KEY": secret,
                      "INSTANCE_PATH": str(instance)})
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=options.redis, SECRET_KEY=secret,
               INSTANCE_PATH=str(instance), UPLOAD_FOLDER=str(instance / "uploads"), APP_ENV="development")
    web = folder = stream = None
    try:
        print(f"building a sending campaign of {sizes['messages']:,} messages"
              + (" (quick: not 1,000,000)" if sizes["messages"] != FULL["messages"] else ""), flush=True)
        built = build(app, sizes["messages"])
        print(f"  built in {built['build_seconds']} s (insert {built['insert_seconds']} s): {built['by_status']}",
              flush=True)
        targets = callback_targets(app, built["campaign_id"])
        web = Web(env, instance / "web.log")
        session = sign_in(web.url, "editor@bench.example")
        fragment_url = f"{web.url}/campaigns/{built['campaign_id']}/status"
        notify_url = f"{web.url}/callbacks/multitel/{built['team_id']}/{built['callback_token']}"
        for _ in range(WARMUP_REQUESTS):
            fetch_fragment(session, fragment_url)
        quiet = measure(session, fragment_url, 20)  # a figure without load, for comparison only
        print(f"  without callbacks: p50 {quiet['p50_ms']} ms, p95 {quiet['p95_ms']} ms over 20 requests", flush=True)

        with app.app_context():
            final_before = _finals(built["campaign_id"])
        folder, stream = Folder(app), CallbackStream(notify_url, targets)
        folder.start()
        stream.start()
        time.sleep(2)  # the stream is steady before the first timed request
        print(f"measuring {sizes['requests']} fragment requests, one every {REQUEST_INTERVAL} s, while "
              f"{CALLBACK_THREADS} threads post callbacks and the tallies fold every {FOLD_SECONDS:.0f} s", flush=True)
        loaded = measure(session, fragment_url, sizes["requests"])
        profile = query_profile(app, built["campaign_id"])  # still under the stream
        plans = explain(app, profile) if options.explain or loaded["p95_ms"] >= P95_LIMIT_MS else []
        stream.finish()
        folder.finish()
        with app.app_context():
            from webapp.services import tallies

            tallies.fold()
            moved = _finals(built["campaign_id"]) - final_before
        seconds, last = fetch_fragment(session, fragment_url)
        agreement = final_agreement(app, built["campaign_id"], last.text)
    finally:
        if stream is not None:
            stream.finish()
        if folder is not None:
            folder.finish()
        if web is not None:
            web.stop()
        with app.app_context():
            db.engine.dispose()
        drop()
        shutil.rmtree(instance, ignore_errors=True)

    posted = stream.finish()
    called = len(posted.get("called", ()))
    callback_errors = sum(posted.get("errors", {}).values()) if posted else -1
    fragment_errors = sum(n for code, n in loaded["statuses"].items() if code != "200") + (last.status_code != 200)
    checks = {
        "fragment_p95_ms": {"value": loaded["p95_ms"], "limit": f"< {P95_LIMIT_MS:.0f}",
                            "ok": loaded["p95_ms"] < P95_LIMIT_MS},
        "fragment_responses_not_200": {"value": fragment_errors, "limit": "== 0", "ok": fragment_errors == 0},
        "last_fragment_vs_recount": {"value": len(agreement["fragment_vs_recount"]), "limit": "== 0",
                                     "ok": not agreement["fragment_vs_recount"]},
        "tally_differences": {"value": len(agreement["tally_differences"]), "limit": "== 0",
                              "ok": not agreement["tally_differences"]},
        "callbacks_not_200": {"value": callback_errors, "limit": "== 0 (-1: no report)", "ok": callback_errors == 0},
        "messages_finalised_by_callbacks": {"value": moved, "limit": f"== {called:,} called back",
                                            "ok": moved == called},
    }
    passed = all(check["ok"] for check in checks.values())
    folds = folder.seconds
    report = {
        "benchmark": "status_fragment", "mode": mode, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average_1m_before": load_before,
                    "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "database": "postgresql", "server": "gunicorn gthread, 2 workers x 8 threads",
        "messages": built["messages"],
        "note": (f"quick: {built['messages']:,} messages, not 1,000,000" if built["messages"] != FULL["messages"]
                 else "full: 1,000,000 messages"),
        "campaign": {key: value for key, value in built.items() if key not in ("callback_token",)},
        "fragment": loaded, "fragment_without_callbacks": quiet, "last_fragment_ms": round(seconds * 1000, 1),
        "callbacks": {"threads": CALLBACK_THREADS, "in_own_process": True, "posted": posted.get("posted"),
                      "seconds": posted.get("seconds"), "per_second": posted.get("per_second"),
                      "repeats": posted.get("repeats"), "distinct_messages": called, "targets": len(targets),
                      "errors": posted.get("errors")},
        "folds": {"every_seconds": FOLD_SECONDS, "count": len(folds),
                  "mean_ms": round(statistics.fmean(folds) * 1000, 1) if folds else None,
                  "max_ms": round(max(folds) * 1000, 1) if folds else None,
                  "deltas_per_fold_max": max(folder.deltas, default=0), "errors": folder.errors},
        "query_profile": [{key: value for key, value in entry.items() if key != "parameters"} for entry in profile],
        "explain": plans,
        "agreement": agreement,
        "checks": checks, "pass": passed,
    }
    print_report(report)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written to {options.output}")
    return 0 if passed else 1


def _finals(campaign_id: int) -> int:
    """The campaign's delivered and undelivered messages, counted (a figure for the check, not the page)."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Message, MessageStatus

    count = db.session.scalar(select(func.count()).where(
        Message.campaign_id == campaign_id, Message.status.in_((MessageStatus.DELIVERED, MessageStatus.UNDELIVERED))))
    db.session.rollback()
    return count


def print_report(report: dict) -> None:
    fragment, callbacks, folds, checks = report["fragment"], report["callbacks"], report["folds"], report["checks"]
    print(f"\nStatus fragment ({report['mode']}: {report['messages']:,} messages), PostgreSQL, {report['server']}, "
          f"{report['machine']['cpus']} CPUs, load {report['machine']['load_average_1m_before']} before\n")
    rows = [
        ("fragment p50 (ms)", fragment["p50_ms"], None),
        ("fragment p95 (ms)", fragment["p95_ms"], checks["fragment_p95_ms"]),
        ("fragment max (ms)", fragment["max_ms"], None),
        (f"fragment requests (not 200: {checks['fragment_responses_not_200']['value']})", fragment["requests"],
         checks["fragment_responses_not_200"]),
        ("fragment size (bytes)", fragment["bytes"], None),
        ("  without callbacks: p50 / p95 (ms)",
         f"{report['fragment_without_callbacks']['p50_ms']} / {report['fragment_without_callbacks']['p95_ms']}", None),
        (f"callbacks posted ({callbacks['threads']} threads, own process)", f"{callbacks['posted'] or 0:,}", None),
        ("callbacks per second", callbacks["per_second"], None),
        ("callbacks not answered 200", checks["callbacks_not_200"]["value"], checks["callbacks_not_200"]),
        ("messages finalised by callbacks", checks["messages_finalised_by_callbacks"]["value"],
         checks["messages_finalised_by_callbacks"]),
        (f"folds every {folds['every_seconds']:.0f} s: count / mean / max (ms)",
         f"{folds['count']} / {folds['mean_ms']} / {folds['max_ms']}", None),
        ("unfolded deltas a fold found, at most", folds["deltas_per_fold_max"], None),
        ("last fragment's figures vs a recount (differing)", checks["last_fragment_vs_recount"]["value"],
         checks["last_fragment_vs_recount"]),
        ("tallies.differences() after a final fold", checks["tally_differences"]["value"],
         checks["tally_differences"]),
    ]
    print(f"{'figure':<52}{'measured':>16}  {'limit':<28}result")
    for name, value, check in rows:
        limit, result = (check["limit"], "pass" if check["ok"] else "FAIL") if check else ("", "")
        print(f"{name:<52}{value!s:>16}  {limit:<28}{result}")
    print("\nthe fragment's queries, timed in this process under the same load (median ms, slowest first):")
    for entry in report["query_profile"][:6]:
        statement = " ".join(entry["statement"].split())
        print(f"  {entry['median_ms']:>7.2f}  x{entry['calls_per_fragment']:<4} {statement[:110]}")
    for plan in report["explain"]:
        statement = " ".join(plan["statement"].split())
        print(f"\nEXPLAIN (ANALYZE, BUFFERS), {plan['median_ms']} ms median: {statement[:300]}")
        for line in plan["plan"]:
            print("    " + line)
    for problem, detail in (("fragment vs recount", report["agreement"]["fragment_vs_recount"]),
                            ("tally differences", report["agreement"]["tally_differences"]),
                            ("fold errors", report["folds"]["errors"])):
        if detail:
            print(f"{problem}: {detail}")
    print(f"\noverall: {'pass' if report['pass'] else 'FAIL'} in {report['seconds']:.0f} s; "
          f"load {report['machine']['load_average_1m_after']} after")


if __name__ == "__main__":
    sys.exit(main())
