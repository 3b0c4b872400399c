"""The `campaigns` command: Flask's CLI plus dev, worker, sandbox and users.

`campaigns dev` runs the whole product on one machine (web, worker, embedded Redis, sandbox provider)
in one process group; `campaigns worker` is what production runs, once per process, on any machine.
Migrations: `campaigns db upgrade` (Flask-Migrate).
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import requests
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Role, User
from webapp.queues import QUEUE_NAMES, embedded_redis_url, redis_connection, stop_embedded_redis
from webapp.services.accounts import AccountError, create_user, get_or_create_team

DEMO_EMAIL = "demo@example.com"
DEMO_TEAM = "Demo team"


def main() -> None:
    """The console script: Flask's own commands, Flask-Migrate's `db`, and ours (see register)."""
    from webapp import create_app

    FlaskGroup(create_app=create_app, help=__doc__).main(prog_name="campaigns")


def register(app) -> None:
    """Attach our commands to app.cli, so `campaigns`, `flask` and the test runner all see them."""
    for command in (dev_command, serve_command, worker_command, sandbox_command, users_group):
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
    from rq import Worker
    from rq.worker_pool import WorkerPool

    connection = redis_connection()
    if processes > 1:
        WorkerPool(list(queues), connection=connection, num_workers=processes).start(burst=burst)
    else:
        Worker(list(queues), connection=connection).work(burst=burst, with_scheduler=True)


@click.command("serve")
@click.option("--bind", default=lambda: os.environ.get("BIND", "0.0.0.0:8000"), show_default="0.0.0.0:8000")
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", "2")), show_default="2")
@with_appcontext
def serve_command(bind: str, workers: int):
    """Production web entrypoint: apply migrations, then replace this process with gunicorn."""
    from flask_migrate import upgrade

    upgrade()
    db.engine.dispose()  # don't hand open connections to gunicorn's forked workers
    argv = ["gunicorn", "--bind", bind, "--workers", str(workers), "--worker-class", "gthread",
            "--threads", "4", "--access-logfile", "-", "webapp:create_app()"]
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


def _ensure_demo_login(instance_path: str) -> tuple[str, str]:
    """Create the demo team and user on first run; the password is kept in the instance folder."""
    password_file = Path(instance_path) / "demo-login.txt"
    if db.session.scalar(select(User.id).where(User.email == DEMO_EMAIL)) is None:
        password = secrets.token_urlsafe(12)
        create_user(get_or_create_team(DEMO_TEAM), DEMO_EMAIL, password, Role.OWNER, name="Demo")
        db.session.commit()
        password_file.write_text(password)
        password_file.chmod(0o600)
    password = password_file.read_text().strip() if password_file.exists() else "(set when it was created)"
    return DEMO_EMAIL, password


def _wait_until_up(url: str, processes: list[subprocess.Popen], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise click.ClickException("A process stopped while starting; see its output above.")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise click.ClickException(f"{url} did not answer within {seconds:.0f} s")


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--sandbox-port", default=5001, show_default=True)
@with_appcontext
def dev_command(host: str, port: int, sandbox_port: int):
    """Run everything on this machine: web, one worker, embedded Redis and the sandbox provider."""
    from flask_migrate import upgrade

    app = current_app
    base_url = f"http://{host}:{port}"
    sandbox_url = f"http://{host}:{sandbox_port}"
    env = dict(os.environ)
    env["REDIS_URL"] = app.config["REDIS_URL"] or embedded_redis_url(app.config["EMBEDDED_REDIS_PATH"])
    env.setdefault("PUBLIC_BASE_URL", base_url)
    env.setdefault("SANDBOX_URL", sandbox_url)
    env.setdefault("MULTITEL_API_URL", sandbox_url)

    upgrade()
    email, password = _ensure_demo_login(app.instance_path)

    python = sys.executable
    commands = {
        "sandbox": [python, "-m", "webapp.cli", "sandbox", "--host", host, "--port", str(sandbox_port)],
        "worker": [python, "-m", "webapp.cli", "worker"],
        "web": [python, "-m", "waitress", f"--listen={host}:{port}", "--threads=8", "--call", "webapp:create_app"],
    }
    processes = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}

    stopping = []

    def stop(*_):
        stopping.append(True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_until_up(f"{base_url}/healthz", list(processes.values()))
        click.echo(
            f"\n  Campaigns is running at {base_url}\n"
            f"  Sign in as {email} with password {password}\n"
            f"  Sandbox provider at {sandbox_url}. Press Ctrl-C to stop.\n"
        )
        while not stopping:
            exited = [name for name, p in processes.items() if p.poll() is not None]
            if exited:
                click.echo(f"{', '.join(exited)} stopped; stopping the rest.", err=True)
                break
            time.sleep(0.3)
    finally:
        _stop_all(processes.values())
        stop_embedded_redis()
    click.echo("Stopped.")


def _stop_all(processes) -> None:
    """SIGTERM every child, give them 10 s to finish, then SIGKILL what is left."""
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


if __name__ == "__main__":
    main()
