"""HTTP: one blueprint per feature, the forms and the access helpers. Nothing outside web/ imports it
except create_app, and no blueprint imports another (shared view helpers live in access and forms)."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register every blueprint and the viewer guard."""
    from webapp.web import security

    security.init_app(app)  # first, so every response gets the headers
    from webapp.web import money

    money.init_app(app)
    from webapp.provider.reasons import plain_reason

    app.jinja_env.filters["failure_reason"] = plain_reason  # "Not delivered: number unreachable (UNDELIV, cause 1)"
    from webapp.web import (
        access,
        auth,
        callback_review,
        campaigns,
        compose,
        contacts,
        dashboard,
        health,
        imports,
        messages,
        optouts,
        settings,
        users,
        webhooks,
    )

    app.before_request(access.refuse_viewer_changes)
    for module in (auth, callback_review, contacts, dashboard, health, imports, optouts, settings, users, webhooks):
        app.register_blueprint(module.bp)
    for module in (compose, campaigns, messages):
        app.register_blueprint(module.bp)
