"""The `campaigns` command: Flask's CLI plus dev, serve, worker, scheduler, sandbox and users.

`campaigns dev` runs the whole product on one machine (web, worker, scheduler, embedded Redis, sandbox
provider) as its children, restarting a worker or scheduler that dies; production runs `campaigns serve`,
`campaigns worker` (once per process, on any machine) and `campaigns scheduler` (one is enough; more are
harmless).
Migrations: `campaigns db upgrade` (Flask-Migrate).
"""

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from contextlib import suppress
from pathlib import Path

import click
import requests
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Role, User
from webapp.queues import QUEUE_NAMES, Scheduler, embedded_redis_url, redis_connection, stop_embedded_redis
from webapp.services.accounts import AccountError, create_user, get_or_create_team

DEMO_EMAIL = "demo@example.com"
DEMO_TEAM = "Demo team"
# Valid US numbers in the 555-01xx range set aside for fiction: the sandbox takes any sender, nobody owns them.
DEMO_SENDER, DEMO_TEST_NUMBER = "+14155550100", "+14155550199"


def main() -> None:
    """The console script: Flask's own commands, Flask-Migrate's `db`, and ours (see register)."""
    from webapp import create_app

    FlaskGroup(create_app=create_app, help=__doc__).main(prog_name="campaigns")


def register(app) -> None:
    """Attach our commands to app.cli, so `campaigns`, `flask` and the test runner all see them."""
    for command in (dev_command, serve_command, worker_command, scheduler_command, sandbox_command, users_group,
                    reconcile_command, recount_command):
        app.cli.add_command(command)


@click.group("users")
def users_group():
    """Manage users from the command line."""


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 10 characters; asked for when left out, so it stays out of the shell history.")
@click.option("--team", required=True, help="Team name; created when it doesn't exist.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.EDITOR.value, show_default=True)
@with_appcontext
def create_user_command(email: str, password: str, team: str, role: str):
    """Create a user in a team."""
    try:
        user = create_user(get_or_create_team(team), email, password, role)
    except AccountError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    click.echo(f"Created {user.email} ({user.role}) in team {team!r}.")


@click.command("worker")
@click.option("--queue", "-q", "queues", multiple=True, default=QUEUE_NAMES, show_default=True)
@click.option("--processes", "-n", default=1, show_default=True, help="Worker processes on this machine.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def worker_command(queues: tuple[str, ...], processes: int, burst: bool):
    """Run RQ workers against REDIS_URL (start as many as the volume needs, on any machine)."""
    from rq.worker_pool import WorkerPool

    if not logging.getLogger().handlers:  # the jobs' own lines (batch reports, the sweep) beside RQ's
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _preload_jobs()
    _warm_up_sending()
    connection = redis_connection()
    if processes > 1:
        WorkerPool(list(queues), connection=connection, num_workers=processes).start(burst=burst)
    else:
        _work_through_redis_outages(list(queues), connection, burst)


def _preload_jobs() -> None:
    """Import every job module once in the worker itself: RQ forks a work horse per job, and a module the
    parent never loaded is imported again in each horse (about 80 ms for the sending jobs)."""
    import importlib.util
    import pkgutil

    # By name, as RQ finds them: the jobs package is the workers' entry point, not a dependency of the app.
    for module in pkgutil.iter_modules(importlib.util.find_spec("jobs").submodule_search_locations):
        importlib.import_module(f"jobs.{module.name}")


def _warm_up_sending() -> None:
    """Compile the sending statements once here, where every work horse is forked from (best effort).

    Not on SQLite: with the file opened here before the forks (closed again, yet), work horses SIGKILLed
    mid-write left it unreadable in tests/test_engine_crash.py; the embedded default needs no such speed.
    """
    from webapp.services.sending import warm_up

    if db.engine.dialect.name == "sqlite":
        return
    try:
        warm_up()
    except Exception as error:  # noqa: BLE001 - the database may be down at start; jobs still work then
        db.session.rollback()
        click.echo(f"Sending statements not warmed up ({type(error).__name__}); each job compiles its own.", err=True)
    finally:
        db.session.remove()
        db.engine.dispose()


def _work_through_redis_outages(queues: list[str], connection: Redis, burst: bool) -> None:
    """Run one RQ worker; when Redis goes away under it, start a new one once Redis answers again.

    RQ retries a lost connection only while waiting for a job: Redis missing at start, or lost in the
    middle of a job, ends Worker.work() with ConnectionError. Stops on SIGTERM/SIGINT as RQ does.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from rq import Worker

    failures = 0
    stop = []
    while True:
        worker = None
        started = time.monotonic()
        try:
            worker = Worker(queues, connection=connection)
            worker.work(burst=burst, with_scheduler=True)
            return
        except (RedisConnectionError, RedisTimeoutError) as error:
            if worker is not None and worker._stop_requested:
                return
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            wait = min(30, 2 ** min(failures, 5))
            click.echo(f"Worker lost Redis ({error}); starting a new one in {wait} s.", err=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(True))
        deadline = time.monotonic() + wait
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)
        if stop:
            return


@click.command("scheduler")
@click.option("--tick", default=5.0, show_default=True, help="Seconds between looks for due jobs.")
@with_appcontext
def scheduler_command(tick: float):
    """Enqueue the periodic sweeps (jobs.maintenance.PERIODIC) when due; a second scheduler is harmless."""
    from jobs.maintenance import PERIODIC

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    Scheduler(redis_connection(), PERIODIC, tick=tick).run(lambda: bool(stop))


@click.command("reconcile")
@with_appcontext
def reconcile_command():
    """Carry campaigns on from the database now, as the periodic sweep does, and say what it did.

    Unlike the sweep, it queues batches at once for every campaign with messages due and no live batch,
    instead of waiting SEND_STALL_SECONDS for the batches that may still be queued."""
    from webapp.services.sending import recover

    found = recover(queue_idle=True)
    click.echo(f"{found.unknown} messages in flight when their worker stopped: now unknown "
               "(matched by reference when a delivery report arrives; resent only by a person).")
    click.echo(f"{found.released} messages claimed by a stopped worker and never posted: released, to be sent.")
    for label, ids in (("Scheduled campaigns started", found.started), ("Campaigns whose batches were queued "
                       "again", found.restarted), ("Campaigns completed", found.completed)):
        click.echo(f"{label}: {', '.join(map(str, ids)) if ids else 'none'}.")


@click.command("recount")
@click.argument("campaign_ids", nargs=-1, type=int)
@with_appcontext
def recount_command(campaign_ids: tuple[int, ...]):
    """Rebuild campaign figures from their messages (all campaigns without ids) and say which were wrong.

    The figures are kept by database triggers and should never be wrong; this is for an operator who
    restored a backup or edited rows by hand, not a routine job.
    """
    from webapp.models import Campaign
    from webapp.services import tallies

    ids = campaign_ids or db.session.scalars(select(Campaign.id).order_by(Campaign.id)).all()
    for campaign_id in ids:
        if db.session.get(Campaign, campaign_id) is None:
            raise click.ClickException(f"There is no campaign {campaign_id}.")
        wrong = tallies.recount(campaign_id)
        click.echo(f"Campaign {campaign_id}: " + (f"{wrong} figure{'s' if wrong != 1 else ''} corrected."
                                                  if wrong else "figures were right."))


@click.command("serve")
@click.option("--bind", default=lambda: os.environ.get("BIND", "0.0.0.0:8000"), show_default="0.0.0.0:8000")
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", "2")), show_default="2")
@click.option("--only", type=click.Choice(["callbacks"]), default=lambda: os.environ.get("SERVE_ONLY") or None,
              help="Serve only the provider's callbacks (/callbacks/) and /healthz, on processes of their own "
                   "behind the same URL, so a deploy of the dashboard never refuses one. Applies no migrations.")
@with_appcontext
def serve_command(bind: str, workers: int, only: str | None):
    """Production web entrypoint: apply migrations, then replace this process with gunicorn."""
    if only is None:
        from flask_migrate import upgrade

        upgrade()  # a callbacks server doesn't: starting beside the dashboard's deploy, it would race its upgrade
    db.engine.dispose()  # don't hand open connections to gunicorn's forked workers
    os.environ["SERVE_ONLY"] = only or ""  # read by create_app in each gunicorn worker
    argv = ["gunicorn", "--bind", bind, "--workers", str(workers), "--worker-class", "gthread",
            "--threads", "4", "--access-logfile", "-",
            "--logger-class", "webapp.access_log.TokenMaskingLogger", "webapp:create_app()"]
    os.execvp(argv[0], argv)


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True)
@with_appcontext
def sandbox_command(host: str, port: int):
    """Serve the built-in MultiTEL sandbox (development and tests only)."""
    if not current_app.config["SANDBOX_ENABLED"]:
        raise click.ClickException("The sandbox is disabled here (SANDBOX_ENABLED=0, the production default).")
    from webapp.provider.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(), host=host, port=port).start()
    click.echo(f"MultiTEL sandbox listening on {server.url}")
    _wait_for_signal()
    server.stop()


def _wait_for_signal() -> None:
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    while not stop:
        time.sleep(0.2)


def _ensure_demo_login(instance_path: str, on_sandbox: bool = True) -> tuple[str, str]:
    """Create the demo team and user on first run; the password is kept in the instance folder. While the
    provider is the sandbox, the team gets what a first campaign needs (see _ready_for_the_sandbox)."""
    password_file = Path(instance_path) / "demo-login.txt"
    if db.session.scalar(select(User.id).where(User.email == DEMO_EMAIL)) is None:
        password = secrets.token_urlsafe(12)
        create_user(get_or_create_team(DEMO_TEAM), DEMO_EMAIL, password, Role.OWNER, name="Demo")
        db.session.commit()
        password_file.write_text(password)
        password_file.chmod(0o600)
    if on_sandbox:
        _ready_for_the_sandbox(get_or_create_team(DEMO_TEAM))
    password = password_file.read_text().strip() if password_file.exists() else "(set when it was created)"
    return DEMO_EMAIL, password


def _ready_for_the_sandbox(team) -> None:
    """The sandbox's account, a demo sender and a test number for the demo team, each only where it has none
    yet (what a person set in Settings stays), so a new user's first campaign needs no guessing."""
    from webapp.encryption import encrypt
    from webapp.models import SenderNumber
    from webapp.provider.sandbox import SandboxConfig

    if not team.api_username and not team.api_password_encrypted:
        team.api_username, password = next(iter(SandboxConfig().accounts.items()))
        team.api_password_encrypted = encrypt(password)
    if not team.sender_numbers:
        team.sender_numbers.append(SenderNumber(number=DEMO_SENDER, label="Demo sender (sandbox)"))
    if not team.test_numbers:
        team.test_numbers = [DEMO_TEST_NUMBER]
    db.session.commit()


# Children of `campaigns dev` that are restarted when they die; the web and the sandbox are not (a crash
# there is a bug to see, not to hide), and their exit stops everything.
RESTARTED = ("worker", "scheduler")
MAX_RESTARTS_PER_MINUTE = 5


def _wait_until_ready(checks: dict, processes: dict[str, subprocess.Popen], seconds: float = 120) -> None:
    """Wait until every check passes (each child is serving), or fail naming those that never did."""
    pending = dict(checks)
    deadline = time.monotonic() + seconds
    while pending and time.monotonic() < deadline:
        stopped = [name for name, p in processes.items() if p.poll() is not None]
        if stopped:
            raise click.ClickException(f"{', '.join(stopped)} stopped while starting; see its output above.")
        for name, ready in list(pending.items()):
            if ready():
                del pending[name]
        if pending:
            time.sleep(0.2)
    if pending:
        raise click.ClickException(f"{', '.join(pending)} not ready within {seconds:.0f} s")


def _answers(url: str, expect_ok: bool = False) -> bool:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return False
    return response.ok or not expect_ok


def _worker_registered(connection: Redis, process: subprocess.Popen) -> bool:
    from rq import Worker

    try:
        return any(worker.pid == process.pid for worker in Worker.all(connection=connection))
    except RedisError:
        return False


def _scheduler_alive(connection: Redis, process: subprocess.Popen) -> bool:
    try:
        return bool(connection.exists(Scheduler.heartbeat_key(Scheduler.name_for(process.pid))))
    except RedisError:
        return False


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--sandbox-port", default=5001, show_default=True)
@with_appcontext
def dev_command(host: str, port: int, sandbox_port: int):
    """Run everything on this machine: web, a worker, the scheduler, embedded Redis and the sandbox provider."""
    from flask_migrate import upgrade

    app = current_app
    base_url = f"http://{host}:{port}"
    sandbox_url = f"http://{host}:{sandbox_port}"
    env = dict(os.environ)
    env["REDIS_URL"] = app.config["REDIS_URL"] or embedded_redis_url(app.config["EMBEDDED_REDIS_PATH"])
    env.setdefault("PUBLIC_BASE_URL", base_url)
    env.setdefault("SANDBOX_URL", sandbox_url)
    env.setdefault("MULTITEL_API_URL", sandbox_url)

    on_sandbox = env["MULTITEL_API_URL"].rstrip("/") == env["SANDBOX_URL"].rstrip("/")

    upgrade()
    email, password = _ensure_demo_login(app.instance_path, on_sandbox)

    python = sys.executable
    commands = {
        "sandbox": [python, "-m", "webapp.cli", "sandbox", "--host", host, "--port", str(sandbox_port)],
        "worker": [python, "-m", "webapp.cli", "worker"],
        "scheduler": [python, "-m", "webapp.cli", "scheduler"],
        "web": [python, "-m", "waitress", f"--listen={host}:{port}", "--threads=8", "--call", "webapp:create_app"],
    }
    processes = {name: _start(cmd, env) for name, cmd in commands.items()}
    connection = Redis.from_url(env["REDIS_URL"])

    stopping = []

    def stop(*_):
        stopping.append(True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_until_ready({
            "web": lambda: _answers(f"{base_url}/healthz", expect_ok=True),
            "sandbox": lambda: _answers(sandbox_url),
            "worker": lambda: _worker_registered(connection, processes["worker"]),
            "scheduler": lambda: _scheduler_alive(connection, processes["scheduler"]),
        }, processes)
        click.echo(
            f"\n  Campaigns is running at {base_url}\n"
            f"  Sign in as {email} with password {password}\n"
            f"  Sandbox provider at {sandbox_url}"
            + (f" (the demo team sends there from {DEMO_SENDER})" if on_sandbox else "") + ". Press Ctrl-C to stop.\n"
        )
        _supervise(processes, commands, env, stopping)
    finally:
        _stop_all(processes.values())
        connection.close()
        stop_embedded_redis()
    click.echo("Stopped.")


def _supervise(processes: dict[str, subprocess.Popen], commands: dict, env: dict, stopping: list) -> None:
    """Restart a worker or scheduler that dies; stop everything when the web or the sandbox does."""
    restarts: dict[str, deque] = {name: deque(maxlen=MAX_RESTARTS_PER_MINUTE) for name in RESTARTED}
    while not stopping:
        for name, process in list(processes.items()):
            if process.poll() is None or stopping:
                continue
            recent = restarts.get(name)
            if recent is None:
                click.echo(f"{name} stopped (exit code {process.returncode}); stopping the rest.", err=True)
                return
            if len(recent) == recent.maxlen and time.monotonic() - recent[0] < 60:
                click.echo(f"{name} died {recent.maxlen} times within a minute; stopping the rest.", err=True)
                return
            recent.append(time.monotonic())
            click.echo(f"{name} stopped (exit code {process.returncode}); starting a new one.", err=True)
            _signal_group(process, signal.SIGKILL)  # what it left behind (RQ's scheduler, a work horse)
            processes[name] = _start(commands[name], env)
        time.sleep(0.3)


def _start(command: list[str], env: dict) -> subprocess.Popen:
    """Start a child in a process group of its own, so that it and whatever it forks can be stopped together."""
    return subprocess.Popen(command, env=env, start_new_session=True)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _stop_all(processes) -> None:
    """SIGTERM every child, give them 10 s to finish, then SIGKILL what is left of their process groups."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _signal_group(process, signal.SIGKILL)  # anything it forked that outlived it


if __name__ == "__main__":
    main()
