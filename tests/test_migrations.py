"""The schema comes from the migrations: they build exactly what the models declare, and undo it."""

import os

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from tests.conftest import _fresh_postgres_database
from webapp import create_app
from webapp.extensions import db


def _fresh_database_url(tmp_path):
    server = os.environ.get("TEST_DATABASE_URL")
    if server:
        return _fresh_postgres_database(server)
    return f"sqlite:///{tmp_path / 'migrated.sqlite3'}", lambda: None


def test_migrations_match_the_models(app_config, tmp_path):
    """`db upgrade` on an empty database gives the models' schema, and `db downgrade base` empties it."""
    url, drop = _fresh_database_url(tmp_path)
    try:
        app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=url))
        with app.app_context():
            upgrade()
            with db.engine.connect() as connection:
                differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
            assert differences == [], "the models changed without a migration: run `campaigns db migrate`"
            downgrade(revision="base")
            assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
            db.engine.dispose()
    finally:
        drop()


def test_a_database_with_rows_upgrades_in_place(app_config, tmp_path):
    """Rows written by the first release survive the upgrade, and new columns take their defaults."""
    from sqlalchemy import text

    url, drop = _fresh_database_url(tmp_path)
    try:
        app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=url))
        with app.app_context():
            upgrade(revision="0001")
            with db.engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO team (id, name, created_at, default_country, price_per_part, currency, "
                    "callback_token, inbound_token) VALUES (1, 'Old', '2026-01-01', 'US', 0.015, 'USD', 'c', 'i')"))
                connection.execute(text(
                    "INSERT INTO \"user\" (id, team_id, email, name, password_hash, role, disabled, created_at) "
                    "VALUES (1, 1, 'old@example.com', '', 'x', 'viewer', false, '2026-01-01')"))
            upgrade()
            with db.engine.connect() as connection:
                team = connection.execute(text("SELECT timezone, send_rate, optout_footer FROM team")).one()
                role = connection.execute(text("SELECT role FROM \"user\"")).scalar_one()
            assert (team.timezone, float(team.send_rate), team.optout_footer) == ("UTC", 10.0, "Reply STOP to opt out")
            assert role == "viewer"
            downgrade(revision="base")
            db.engine.dispose()
    finally:
        drop()
