"""RQ job functions. Jobs take ids, re-read their rows, and are safe to run twice."""

import os
from collections.abc import Callable
from contextlib import contextmanager
from functools import wraps

from flask import Flask, current_app, has_app_context

_app: Flask | None = None
_engine_pid: int | None = None


@contextmanager
def app_context():
    """The app for a job: the caller's when there is one (tests, SimpleWorker), else one made per process.

    RQ forks a work horse per job; a pooled database connection inherited across fork must not be
    shared, so the pool is discarded once in each new process.
    """
    global _app
    if has_app_context():
        _discard_inherited_connections()
        yield current_app
        return
    if _app is None:
        from webapp import create_app

        _app = create_app()
    with _app.app_context():
        _discard_inherited_connections()
        yield _app


def _discard_inherited_connections() -> None:
    global _engine_pid
    if _engine_pid != os.getpid():
        from webapp.extensions import db

        db.engine.dispose(close=False)
        _engine_pid = os.getpid()


def with_app(job: Callable) -> Callable:
    """Run a job function inside the app context."""

    @wraps(job)
    def wrapped(*args, **kwargs):
        with app_context():
            return job(*args, **kwargs)

    return wrapped
