"""The app's own error pages, sign-in without Redis, and errors answered to htmx as fragments."""

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.factories import PASSWORD, make_team, make_user
from webapp import create_app
from webapp.extensions import db
from webapp.models import ContactImport, Role

HTMX = {"HX-Request": "true", "HX-Current-URL": "http://localhost/imports/7?tab=rows"}
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once


def _is_page(body: str) -> bool:
    return "<html" in body and "<main" in body


def _is_fragment(body: str) -> bool:
    return not any(tag in body for tag in ("<html", "<body", "<main", "<header", "<nav"))


@pytest.fixture
def failing_app(app_config, app):
    """An app that really lets exceptions reach its error handlers (as in production), with two routes
    that fail: one with a bug, one with Redis down."""
    failing = create_app(dict(app_config, PROPAGATE_EXCEPTIONS=False))

    def bug():
        raise ZeroDivisionError("a bug")

    def redis_down():
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    failing.add_url_rule("/test-bug", view_func=bug)
    failing.add_url_rule("/test-redis-down", view_func=redis_down)
    return failing


def test_login_without_redis_is_a_clear_503(app_config, app):
    """With Redis down, POST /login answers the app's own 503 'Sign-in is unavailable' page, not a crash."""
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ann@example.com")
    client = create_app(dict(app_config, REDIS_URL=DEAD_REDIS)).test_client()
    assert client.get("/login").status_code == 200  # the page itself needs no Redis
    response = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD})
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "Sign-in is unavailable" in body and _is_page(body)
    assert response.headers["Retry-After"].isdigit()
    with client.session_transaction() as session:
        assert "_user_id" not in session


def test_own_500_page(failing_app):
    """An unexpected error shows the app's page, inside its layout, without a traceback."""
    response = failing_app.test_client().get("/test-bug")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert _is_page(body) and "Something went wrong" in body
    assert "ZeroDivisionError" not in body and "Internal Server Error" not in body


def test_redis_down_on_any_page_is_503(failing_app):
    """Any page that needs Redis while it is down answers the app's 503 page, not a 500."""
    response = failing_app.test_client().get("/test-redis-down")
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert _is_page(body) and "unavailable" in body
    assert "6379" not in body


@pytest.mark.parametrize(("path", "code"), [("/test-bug", 500), ("/test-redis-down", 503), ("/nowhere", 404)])
def test_htmx_errors_are_fragments(failing_app, path, code):
    """An htmx request that fails gets a few lines to swap in, never a whole page inside the fragment."""
    response = failing_app.test_client().get(path, headers=HTMX)
    body = response.get_data(as_text=True)
    assert response.status_code == code
    assert _is_fragment(body) and f"error {code}" in body


def test_htmx_forbidden_is_a_fragment(app, client, auth):
    """A viewer's htmx request to a change (403) gets a fragment."""
    with app.app_context():
        make_user(make_team("Acme"), Role.VIEWER, "vic@example.com")
    auth.login("vic@example.com")
    response = client.post("/settings/test-connection", headers=HTMX)
    assert response.status_code == 403
    assert _is_fragment(response.get_data(as_text=True))


def test_htmx_not_found_on_a_fragment_endpoint(app, client, auth):
    """Polling another team's (or a deleted) import's progress gets a 404 fragment."""
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    auth.login("ed@example.com")
    response = client.get("/imports/987654/progress", headers=HTMX)
    assert response.status_code == 404
    assert _is_fragment(response.get_data(as_text=True))


def test_signed_out_htmx_poll_gets_401_and_a_redirect(app, client, auth):
    """A poll after the session ended gets 401, a fragment and HX-Redirect to the login page that
    returns to the page the user was on, never the login page swapped into the fragment."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        imp = ContactImport(team_id=team.id, filename="x.csv", stored_name="x.csv")
        db.session.add(imp)
        db.session.commit()
        import_id = imp.id
    auth.login("ed@example.com")
    assert client.get(f"/imports/{import_id}/progress", headers=HTMX).status_code == 200
    auth.logout()

    response = client.get(f"/imports/{import_id}/progress", headers=HTMX)
    body = response.get_data(as_text=True)
    assert response.status_code == 401
    assert _is_fragment(body) and "Sign in" in body and 'type="password"' not in body
    assert response.headers["HX-Redirect"] == "/login?next=/imports/7?tab%3Drows"


def test_signed_out_page_load_still_redirects(client):
    """Without htmx, a signed-out visitor is still sent to the login page with ?next."""
    response = client.get("/imports/")
    assert response.status_code == 302
    assert "/login?next=" in response.headers["Location"]
