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


def _tune_sqlite(app: Flask) -> None:
    """SQLite serves the web and a worker process at once in development: WAL lets readers run beside
    the writer, and busy_timeout makes a writer wait instead of failing with 'database is locked'."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    from sqlalchemy import event

    from webapp.extensions import db

    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()


def _register_error_pages(app: Flask) -> None:
    """Plain, friendly pages for the errors a user can meet."""
    messages = {
        400: "The request could not be understood. If you were submitting a form, reload the page and try again.",
        403: "You don't have permission to do that. Ask an admin of your team.",
        404: "There is nothing here, or it belongs to another team.",
        413: "That upload is larger than this server accepts.",
    }

    def render_error(error):
        code = getattr(error, "code", 500) or 500
        return render_template("error.html", code=code, message=messages.get(code, "Something went wrong.")), code

    for code in messages:
        app.register_error_handler(code, render_error)
