"""SMS campaign dashboard: the Flask application package and its factory."""

import os
from pathlib import Path

from flask import Flask, render_template

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """templates/, static/ or migrations/: inside the package when installed from a wheel,
    at the repository root in a checkout (the wheel maps them in; see pyproject.toml)."""
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings, extensions, blueprints. Nothing connects until a request needs it."""
    config = dict(config or {})
    app = Flask(
        __name__,
        instance_path=config.pop("INSTANCE_PATH", None) or os.environ.get("INSTANCE_PATH") or None,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
        instance_relative_config=True,
    )
    from webapp.config import load_config

    app.config.update(load_config(app.instance_path, config))

    if app.config["PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    from webapp.extensions import csrf, db, login_manager, migrate

    db.init_app(app)
    _tune_sqlite(app)
    migrate.init_app(app, db, directory=str(resource_dir("migrations")), render_as_batch=True)
    csrf.init_app(app)
    login_manager.init_app(app)

    from webapp import queues, web

    queues.init_app(app)
    web.init_app(app)

    from webapp import cli

    cli.register(app)
    _register_error_pages(app)
    _register_template_helpers(app)
    return app


# (endpoint, label, who sees it); an endpoint not registered yet is simply left out.
NAVIGATION = [
    ("dashboard.index", "Dashboard", "all"),
    ("contacts.lists", "Lists", "all"),
    ("imports.index", "Imports", "all"),
    ("optouts.index", "Opt-outs", "all"),
    ("compose.index", "Templates", "all"),
    ("campaigns.index", "Campaigns", "all"),
    ("callback_review.index", "Reports to check", "all"),
    ("settings.index", "Settings", "admin"),
    ("users.index", "Users", "admin"),
]


def _register_template_helpers(app: Flask) -> None:
    from flask import current_app
    from flask_login import current_user

    def nav_items() -> list[tuple[str, str]]:
        allowed = {"all": True, "editor": current_user.can_edit, "admin": current_user.can_admin}
        return [
            (endpoint, label)
            for endpoint, label, who in NAVIGATION
            if allowed[who] and endpoint in current_app.view_functions
        ]

    def on_sandbox() -> bool:
        """True when messages go to the built-in sandbox, so the banner tells every page."""
        config = current_app.config
        return config["MULTITEL_API_URL"] == config["SANDBOX_URL"]

    app.jinja_env.globals.update(nav_items=nav_items, on_sandbox=on_sandbox)
    from webapp.services.phones import number_type_label

    app.jinja_env.filters["number_type"] = number_type_label  # "landline", not "fixed_line"


def _owner_only_database_file(database: str | None) -> None:
    """Create the SQLite file readable by its owner only (it holds people's numbers) before SQLite
    opens it; SQLite gives its -wal and -shm files the same mode. An older file is made private too."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)


def _tune_sqlite(app: Flask) -> None:
    """SQLite serves the web and a worker process at once in development: WAL lets readers run beside
    the writer, and busy_timeout makes a writer wait instead of failing with 'database is locked'."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    from sqlalchemy import event

    from webapp.extensions import db

    with app.app_context():
        _owner_only_database_file(db.engine.url.database)

        @event.listens_for(db.engine, "connect")
        def on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()


def _register_error_pages(app: Flask) -> None:
    """Plain, friendly pages for the errors a user can meet, and a small fragment instead of a page when
    htmx asked (htmx 4 swaps error responses too, so a whole page would land inside the fragment)."""
    from contextlib import suppress

    from flask import request
    from redis.exceptions import RedisError
    from werkzeug.exceptions import HTTPException

    from webapp.extensions import db
    from webapp.services.disk import NOTHING_SAVED, DiskFull

    errors = {
        400: ("Bad request", "The request could not be understood. If you were submitting a form, reload the page "
                             "and try again."),
        401: ("Signed out", "You are signed out. Sign in again to continue."),
        403: ("Not allowed", "You don't have permission to do that. Ask an admin of your team."),
        404: ("Not found", "There is nothing here, or it belongs to another team."),
        405: ("Not allowed", "This address doesn't accept that kind of request."),
        413: ("Too large", "That upload is larger than this server accepts."),
        500: ("Something went wrong", "Something went wrong on our side and it has been logged. Try again; if it "
                                      "keeps happening, tell whoever runs this server."),
        503: ("Unavailable", "A service this page needs is unavailable for a moment. Try again in a minute."),
        507: ("Disk full", NOTHING_SAVED + " Try again later, and tell whoever runs this server."),
    }

    def error_response(code: int, message: str):
        if code >= 500:
            with suppress(Exception):  # a failed transaction must not break the error page too
                db.session.rollback()
        title = errors.get(code, errors[500])[0]
        if "dashboard.index" not in app.view_functions:  # a callbacks-only server has no pages to link to
            response = app.make_response((f"{title}: {message}\n", code, {"Content-Type": "text/plain; charset=utf-8"}))
        else:
            template = "_error_fragment.html" if request.headers.get("HX-Request") else "error.html"
            response = app.make_response((render_template(template, code=code, title=title, message=message), code))
        if code == 503:
            response.headers["Retry-After"] = "60"
        return response

    def render_error(error: HTTPException):
        code = error.code or 500
        # A view's own abort(503, description=...) is shown; Werkzeug's stock descriptions are not.
        own = error.description if error.description != type(error).description else None
        return error_response(code, own or errors.get(code, errors[500])[1])

    def redis_unavailable(error: RedisError):
        app.logger.error("Redis is unavailable: %s", error)
        return error_response(503, errors[503][1])

    def disk_full(error: DiskFull):
        app.logger.error("The disk is full: %s", error.__cause__ or error)
        return error_response(507, errors[507][1])

    for code in errors.keys() - {507}:  # Werkzeug has no exception for 507: DiskFull stands for it
        app.register_error_handler(code, render_error)
    app.register_error_handler(RedisError, redis_unavailable)
    app.register_error_handler(DiskFull, disk_full)
