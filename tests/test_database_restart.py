"""A PostgreSQL restart in the middle of a batch (fast, and a crash) and a worker stopped for longer than
SEND_IN_FLIGHT_SECONDS never send a recipient twice, and the campaign sends again within
SEND_STALL_SECONDS of the database's return. A private cluster (initdb, pg_ctl) the test can restart,
real `campaigns worker` processes and the sandbox over real HTTP; the sandbox's log of sends is the witness.
Part of the PostgreSQL suite (TEST_DATABASE_URL set), which CI runs; the cluster is the test's own.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, text

from tests.conftest import _empty_all_tables
from tests.factories import make_campaign, make_contact, make_list, make_sender, make_team, make_user
from tests.processes import Workers, free_port, wait_until
from webapp import create_app
from webapp.encryption import encrypt
from webapp.extensions import db
from webapp.models import Message, MessageStatus, SendBatch
from webapp.provider.sandbox import SandboxConfig, SandboxServer
from webapp.services import campaign_states, sending

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="runs in the PostgreSQL suite")]

RECIPIENTS = 160
IN_FLIGHT_SECONDS, STALL_SECONDS, JOB_TIMEOUT = 3, 6, 12
OUTAGE_SECONDS = 3  # how long the database stays down: the experiment's parameter, not a wait for a condition
STOPPED_JOB_TIMEOUT = 40
DEADLINE = 90  # seconds for any one step on a busy two-core machine


def _postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on the PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


class Cluster:
    """A PostgreSQL cluster of the test's own on a free port; as root, run as the postgres user."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        # Under /tmp, not TMPDIR: CI's TMPDIR is a root-only folder the postgres user can't enter.
        self.root = Path(tempfile.mkdtemp(prefix="campaigns-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / tool), *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
                  "--locale", "C")

    def start(self) -> datetime:
        """Start and wait until it accepts connections; returns that moment."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", options, "-w",
                  "-t", "60", "start")
        return datetime.now(UTC)

    def stop(self, mode: str) -> None:
        """`fast` (sessions cut, a clean shutdown) or `immediate` (a crash: recovery from the WAL at start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    cluster = Cluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def engine_app(cluster, app_config, tmp_path):
    """The app on the private cluster, with the engine's limits a few seconds long."""
    app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=cluster.url,
                          UPLOAD_FOLDER=str(tmp_path / "uploads"), SEND_IN_FLIGHT_SECONDS=IN_FLIGHT_SECONDS,
                          SEND_STALL_SECONDS=STALL_SECONDS, SEND_JOB_TIMEOUT=JOB_TIMEOUT))
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        _empty_all_tables()
        from webapp.queues import redis_connection

        redis_connection().flushdb()
        db.engine.dispose()


@pytest.fixture
def sandbox():
    # No callbacks: nothing reconciles an unknown message here, so "never resent" is seen plainly.
    server = SandboxServer(SandboxConfig(callbacks=False, latency_ms=60, seed=5)).start()
    yield server
    server.stop()


def _launch(app, cluster_url: str, sandbox, tmp_path) -> tuple[int, Workers]:
    """A launched campaign of RECIPIENTS on the sandbox, and (not started) a worker for it."""
    app.config.update(MULTITEL_API_URL=sandbox.url)
    with app.app_context():
        team = make_team()
        team.api_username, team.api_password_encrypted = "sandbox", encrypt("sandbox")
        team.send_rate = Decimal(1000)
        db.session.commit()
        user = make_user(team)
        contacts = make_list(team)
        for n in range(RECIPIENTS):
            make_contact(contacts, phone=f"+1415557{n:04d}", first_name=f"N{n}")
        campaign = make_campaign(team, [contacts], body="Hi {{ first_name }}", sender=make_sender(team))
        campaign.quiet_hours = False
        db.session.commit()
        campaign_id = campaign.id
        campaign_states.launch(campaign_id, user.id)
    env = dict(os.environ, DATABASE_URL=cluster_url, REDIS_URL=app.config["REDIS_URL"],
               INSTANCE_PATH=app.instance_path, SECRET_KEY=app.config["SECRET_KEY"],
               UPLOAD_FOLDER=app.config["UPLOAD_FOLDER"], MULTITEL_API_URL=sandbox.url,
               SEND_CONCURRENCY="4", SEND_BATCH_SIZE="32", SEND_IN_FLIGHT_SECONDS=str(IN_FLIGHT_SECONDS),
               SEND_STALL_SECONDS=str(STALL_SECONDS), SEND_JOB_TIMEOUT=str(JOB_TIMEOUT))
    return campaign_id, Workers(env, log=tmp_path / "worker.log")


def _count(campaign_id: int, *statuses: MessageStatus) -> int:
    db.session.rollback()  # a fresh snapshot, and a session usable again after the database came back
    return db.session.scalar(select(func.count()).select_from(Message).where(
        Message.campaign_id == campaign_id, Message.status.in_(statuses)))


def _sent(campaign_id: int) -> int:
    return _count(campaign_id, MessageStatus.ACCEPTED, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)


def _sends(sandbox) -> list[dict]:
    return requests.get(f"{sandbox.url}/_sandbox/sends", timeout=30).json()


def _mid_batch(campaign_id: int) -> bool:
    """A fifth sent, POSTs on the wire and rows claimed: the moment a fault strands the most."""
    return _sent(campaign_id) >= RECIPIENTS // 5 and _count(campaign_id, MessageStatus.SENDING) > 0


def _sweep() -> sending.Recovery:
    """What the periodic sweep does (on a connection opened since the database came back)."""
    db.session.rollback()
    return sending.recover()


def _finish(campaign_id: int) -> None:
    """Wait until every message was posted or made unknown, running the sweep as the scheduler would."""
    wait_until(lambda: _sweep() and _count(campaign_id, MessageStatus.CREATED, MessageStatus.SENDING) == 0,
               DEADLINE, "every message posted or unknown")


def _sent_at_most_once(sandbox, campaign_id: int) -> Counter:
    """No recipient twice in the sandbox's log; every recipient sent, or unknown (never resent)."""
    per_phone = Counter(send["to"] for send in _sends(sandbox))
    assert {phone: n for phone, n in per_phone.items() if n > 1} == {}, "sent twice"
    db.session.rollback()
    unknown = set(db.session.scalars(select(Message.phone).where(Message.campaign_id == campaign_id,
                                                                 Message.status == MessageStatus.UNKNOWN)))
    assert len(set(per_phone) | unknown) == RECIPIENTS
    return per_phone


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_mid_batch_sends_again_within_the_stall_limit_and_never_twice(
        engine_app, cluster, sandbox, tmp_path, mode):
    """The batch cut off by the restart retries its release until the database is back and the next batch
    goes on at once: the first send after the return comes well within SEND_STALL_SECONDS."""
    campaign_id, workers = _launch(engine_app, cluster.url, sandbox, tmp_path)
    try:
        workers.start()
        with engine_app.app_context():
            wait_until(lambda: _mid_batch(campaign_id), DEADLINE, "a batch in the middle of its POSTs", interval=0.01)
            db.session.rollback()  # the test's own connection back to the pool, where it is pinged before use
            cluster.stop(mode)
            time.sleep(OUTAGE_SECONDS)  # the outage's length is the experiment, not a wait for a condition
            back = cluster.start()
            first = wait_until(lambda: min((datetime.fromisoformat(send["time"]) for send in _sends(sandbox)
                                            if datetime.fromisoformat(send["time"]) > back), default=None),
                               DEADLINE, "a send after the database came back", interval=0.05)
            resumed = (first - back).total_seconds()
            print(f"\n{mode} restart: first send {resumed:.2f} s after the database came back")
            assert resumed < STALL_SECONDS
            _finish(campaign_id)
            _sent_at_most_once(sandbox, campaign_id)
            assert db.session.scalar(select(func.count()).select_from(SendBatch)) == 0, "every batch ended"
    finally:
        workers.stop()


def _stop_outside_a_transaction(workers: Workers) -> None:
    """SIGSTOP the worker at a moment it holds no transaction open (else its row locks would block the
    sweep until it is continued): stop, look, and if it was inside one, let it go on a moment and retry."""
    for _ in range(50):
        workers.signal(signal.SIGSTOP)
        db.session.rollback()
        busy = db.session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND state IN ('active', 'idle in transaction', "
            "'idle in transaction (aborted)')"))
        db.session.rollback()
        if not busy:
            return
        workers.signal(signal.SIGCONT)
        time.sleep(0.02)  # let it finish that statement: a moment of running, not a wait for a condition
    raise AssertionError("the worker was always inside a transaction")


def test_a_worker_stopped_past_the_in_flight_limit_never_resends_and_its_late_writes_are_refused(
        engine_app, cluster, sandbox, tmp_path):
    """SIGSTOP a worker mid-batch for longer than SEND_IN_FLIGHT_SECONDS: its in-flight rows become unknown,
    its other claimed rows go to another worker, and once continued it finds its claims gone and stops:
    nothing it had claimed is posted twice, and no row another batch holds is changed by it."""
    campaign_id, stopped = _launch(engine_app, cluster.url, sandbox, tmp_path)
    # Its batch must still be within its time limit once continued, or RQ's timeout ends it first.
    stopped.env["SEND_JOB_TIMEOUT"] = str(STOPPED_JOB_TIMEOUT)
    other = Workers(stopped.env, log=tmp_path / "other-worker.log")
    try:
        stopped.start()
        with engine_app.app_context():
            wait_until(lambda: _mid_batch(campaign_id), DEADLINE, "a batch in the middle of its POSTs", interval=0.01)
            _stop_outside_a_transaction(stopped)
            token = db.session.scalars(select(SendBatch.token)).one()
            in_flight = set(db.session.scalars(select(Message.id).where(
                Message.claim_token == token, Message.status == MessageStatus.SENDING)))
            claimed = set(db.session.scalars(select(Message.id).where(
                Message.claim_token == token, Message.status == MessageStatus.CREATED)))
            assert in_flight and claimed

            def swept() -> bool:
                _sweep()
                rows = db.session.execute(select(Message.status, Message.claim_token)
                                          .where(Message.id.in_(in_flight | claimed))).all()
                return all(claim is None for _, claim in rows) and sum(
                    status is MessageStatus.UNKNOWN for status, _ in rows) == len(in_flight)
            wait_until(swept, DEADLINE, "the sweep: in-flight rows unknown, the other claims released")
            assert db.session.get(SendBatch, token) is None

            other.start()
            campaign_states.enqueue_batches(campaign_id)
            wait_until(lambda: not db.session.scalar(select(func.count()).where(
                Message.id.in_(claimed), Message.status == MessageStatus.CREATED)), DEADLINE,
                "the other worker to send the released rows")
            stopped.signal(signal.SIGCONT)
            log = tmp_path / "worker.log"
            wait_until(lambda: sending.CLAIM_RELEASED in log.read_text(errors="replace"), DEADLINE,
                       "the continued batch to see its claims gone")
            _finish(campaign_id)
            per_phone = _sent_at_most_once(sandbox, campaign_id)
            phones = dict(db.session.execute(select(Message.id, Message.phone).where(Message.id.in_(claimed))).all())
            assert all(per_phone[phones[row]] == 1 for row in claimed), "its released rows were sent once, by another"
            statuses = db.session.scalars(select(Message.status).where(Message.id.in_(in_flight))).all()
            # Unknown, or accepted by the stopped batch's own late reply (the provider's word): never sent again.
            assert set(statuses) <= {MessageStatus.UNKNOWN, MessageStatus.ACCEPTED}
            assert not db.session.scalar(select(func.count()).where(Message.claim_token == token))
    finally:
        stopped.stop()
        other.stop()
