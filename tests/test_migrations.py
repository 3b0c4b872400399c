"""The schema comes from the migrations: they build exactly what the models declare, and undo it."""

import os
from decimal import Decimal

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


def test_campaigns_sent_before_the_tallies_are_counted_and_then_kept(app_config, tmp_path):
    """Upgrading from 0002 counts existing campaigns' messages once; from then on the triggers keep count."""
    from sqlalchemy import text

    from webapp.services import tallies

    url, drop = _fresh_database_url(tmp_path)
    try:
        app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=url))
        with app.app_context():
            upgrade(revision="0002")
            with db.engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO team (id, name, created_at, default_country, price_per_part, currency, "
                    "callback_token, inbound_token) VALUES (1, 'Old', '2026-01-01', 'US', 0.015, 'USD', 'c', 'i')"))
                connection.execute(text(
                    "INSERT INTO campaign (id, team_id, name, status, body, include_footer, quiet_hours, quiet_start, "
                    "quiet_end, reserved_cost, exclusions, opt_outs_caused, zone_fallbacks, created_at, updated_at) "
                    "VALUES (1, 1, 'Spring', 'completed', 'Hi', true, true, '08:00', '21:00', 0, '{}', 0, 0, "
                    "'2026-01-01', '2026-01-01')"))
                for n, (status, held) in enumerate([("accepted", False), ("created", True), ("undelivered", False)]):
                    connection.execute(text(
                        "INSERT INTO message (team_id, campaign_id, kind, phone, sender, text, encoding, parts, "
                        "estimated_cost, is_mms, reference, status, held, attempts, resent, sent_twice, error, "
                        "created_at, updated_at, sent_at) VALUES (1, 1, 'campaign', :phone, '', 'Hi', 'gsm7', 1, "
                        "0.015, false, :reference, :status, :held, 0, false, false, 'cause 34', '2026-01-01', "
                        "'2026-01-01', :sent_at)"),
                        {"phone": f"+1415555000{n}", "reference": f"r{n}", "status": status, "held": held,
                         "sent_at": None if held else "2026-01-01 10:00:00"})
            upgrade()
            figures = tallies.figures(1)
            assert (figures.count("accepted"), figures.count("held"), figures.count("undelivered")) == (1, 1, 1)
            assert [row[1:4] for row in tallies.minutes(1)] == [(2, 0, 1)]  # posted at one minute, one failed
            assert figures.reasons == [("undelivered", "cause 34", 1)]
            db.session.execute(text("UPDATE message SET status = 'delivered' WHERE reference = 'r0'"))
            db.session.commit()
            assert tallies.differences(1) == {} and tallies.figures(1).count("delivered") == 1
            db.session.remove()
            downgrade(revision="base")
            db.engine.dispose()
    finally:
        drop()


def test_a_campaign_resent_before_the_upgrade_keeps_its_launch_estimate(app_config, tmp_path):
    """Upgrading to 0010 takes the estimates of attempts resent earlier out of the kept figures, exactly once:
    the estimated total is as launched and still equals a recount."""
    from sqlalchemy import text

    from webapp.services import tallies

    url, drop = _fresh_database_url(tmp_path)
    try:
        app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=url))
        with app.app_context():
            upgrade(revision="0002")
            with db.engine.begin() as connection:
                connection.execute(text(
                    "INSERT INTO team (id, name, created_at, default_country, price_per_part, currency, "
                    "callback_token, inbound_token) VALUES (1, 'Old', '2026-01-01', 'US', 0.015, 'USD', 'c', 'i')"))
                connection.execute(text(
                    "INSERT INTO campaign (id, team_id, name, status, body, include_footer, quiet_hours, quiet_start, "
                    "quiet_end, reserved_cost, exclusions, opt_outs_caused, zone_fallbacks, created_at, updated_at) "
                    "VALUES (1, 1, 'Spring', 'completed', 'Hi', true, true, '08:00', '21:00', 0, '{}', 0, 0, "
                    "'2026-01-01', '2026-01-01')"))
                # Two recipients: one delivered; one whose first attempt is unknown and resent, the resend delivered.
                for n, (status, resent) in enumerate([("delivered", False), ("unknown", True), ("delivered", False)]):
                    connection.execute(text(
                        "INSERT INTO message (team_id, campaign_id, kind, phone, sender, text, encoding, parts, "
                        "estimated_cost, is_mms, reference, status, held, attempts, resent, sent_twice, "
                        "created_at, updated_at, sent_at) VALUES (1, 1, 'campaign', :phone, '', 'Hi', 'gsm7', 1, "
                        "0.015, false, :reference, :status, false, 0, :resent, false, '2026-01-01', "
                        "'2026-01-01', '2026-01-01 10:00:00')"),
                        {"phone": f"+1415555000{min(n, 1)}", "reference": f"r{n}", "status": status, "resent": resent})
            upgrade()
            figures = tallies.figures(1)
            assert figures.estimated == 2 * Decimal("0.015") and figures.unconfirmed_spend == Decimal("0.015")
            assert tallies.differences(1) == {}
            tallies.fold()
            assert tallies.figures(1).estimated == 2 * Decimal("0.015") and tallies.differences(1) == {}
            db.session.remove()
            downgrade(revision="0004")
            db.session.remove()
            assert tallies.figures(1).estimated == 3 * Decimal("0.015")  # as the old triggers counted
            db.session.remove()
            downgrade(revision="base")
            db.engine.dispose()
    finally:
        drop()


def test_test_sends_made_before_0008_count_in_their_campaign_spend(app_config, tmp_path):
    """Upgrading to 0008 adds earlier test sends to their campaign's tallies (spend only) once, equal to a
    recount; a team whose zone is not UTC had it chosen, a UTC one is asked."""
    from decimal import Decimal

    from sqlalchemy import text

    from webapp.services import tallies

    url, drop = _fresh_database_url(tmp_path)
    try:
        app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=url))
        with app.app_context():
            upgrade(revision="0004")
            with db.engine.begin() as connection:
                for team_id, zone in ((1, "UTC"), (2, "Europe/Paris")):
                    connection.execute(text(
                        "INSERT INTO team (id, name, created_at, default_country, price_per_part, currency, "
                        "callback_token, inbound_token, timezone, send_rate, optout_footer, test_numbers, mms_price, "
                        "country_prices, callbacks_expired) VALUES (:id, :name, '2026-01-01', 'US', 0.015, 'USD', "
                        ":token, :inbound, :zone, 10, '', '[]', 0.05, '{}', 0)"),
                        {"id": team_id, "name": f"T{team_id}", "token": f"c{team_id}", "inbound": f"i{team_id}",
                         "zone": zone})
                connection.execute(text(
                    "INSERT INTO campaign (id, team_id, name, status, body, include_footer, quiet_hours, quiet_start, "
                    "quiet_end, reserved_cost, exclusions, opt_outs_caused, zone_fallbacks, created_at, updated_at) "
                    "VALUES (1, 1, 'Draft', 'draft', 'Hi', true, true, '08:00', '21:00', 0, '{}', 0, 0, "
                    "'2026-01-01', '2026-01-01')"))
                for n, (status, billed) in enumerate([("delivered", "0.015"), ("failed", None)]):
                    connection.execute(text(
                        "INSERT INTO message (team_id, campaign_id, kind, phone, sender, text, encoding, parts, "
                        "estimated_cost, is_mms, reference, status, held, attempts, resent, sent_twice, error, "
                        "created_at, updated_at, sent_at, billed_cost) VALUES (1, 1, 'test', '+14155550901', '', "
                        "'Hi', 'gsm7', 1, 0.015, false, :reference, :status, false, 0, false, false, NULL, "
                        "'2026-01-01', '2026-01-01', '2026-01-01 10:00:00', :billed)"),
                        {"reference": f"t{n}", "status": status, "billed": billed})
            upgrade()
            figures = tallies.figures(1)
            assert (figures.test_sends, figures.messages, figures.test_spend) == (1, 0, Decimal("0.015"))
            assert tallies.differences(1) == {}
            tallies.fold()
            assert tallies.differences(1) == {} and tallies.figures(1).spend == Decimal("0.015")
            chosen = dict(db.session.execute(text("SELECT id, timezone_chosen FROM team")).all())
            assert {key: bool(value) for key, value in chosen.items()} == {1: False, 2: True}
            db.session.remove()
            downgrade(revision="base")
            db.engine.dispose()
    finally:
        drop()
