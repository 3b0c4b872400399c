"""Browser security headers: every kind of response carries the CSP, framing, sniffing and referrer rules."""

import pytest

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Contact, ContactList, Role


def _directives(policy: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in policy.split(";") if part.strip()}


def assert_secure_headers(response) -> None:
    policy = _directives(response.headers.get("Content-Security-Policy", ""))
    assert policy.get("default-src") == "'self'"
    assert policy.get("script-src") == "'self'"  # no inline script, no eval
    assert policy.get("style-src") == "'self'"
    assert policy.get("frame-ancestors") == "'none'"
    assert policy.get("object-src") == "'none'"
    assert policy.get("base-uri") == "'self'" and policy.get("form-action") == "'self'"
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "same-origin"


@pytest.fixture
def signed_in(app, auth):
    """An owner with one list of one contact, signed in; returns the list id."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.OWNER, "owner@example.com")
        contact_list = ContactList(team_id=team.id, name="Spring")
        db.session.add(contact_list)
        db.session.flush()
        db.session.add(Contact(team_id=team.id, list_id=contact_list.id, phone="+14155551000", region="US",
                               number_type="fixed_line_or_mobile", attributes={}))
        db.session.commit()
        team_id, token, list_id = team.id, team.callback_token, contact_list.id
    auth.login("owner@example.com")
    return list_id, team_id, token


def test_page_has_the_headers(client, signed_in):
    """The signed-in settings page can't be framed, sniffed or made to run inline script."""
    response = client.get("/settings/")
    assert response.status_code == 200
    assert_secure_headers(response)


def test_csv_download_has_the_headers(client, signed_in):
    """A streamed CSV download carries them too."""
    list_id, _, _ = signed_in
    response = client.get(f"/lists/{list_id}/export.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert_secure_headers(response)


def test_static_file_has_the_headers(client):
    """Static files, served without a session, carry them."""
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert_secure_headers(response)


@pytest.mark.parametrize("path", ["/no-such-page", "/lists/999999"])
def test_errors_have_the_headers(client, signed_in, path):
    """A 404 page carries them."""
    response = client.get(path)
    assert response.status_code == 404
    assert_secure_headers(response)


def test_login_redirect_has_the_headers(client):
    """A redirect to the login page carries them."""
    response = client.get("/settings/")
    assert response.status_code == 302
    assert_secure_headers(response)


def test_webhook_response_has_the_headers(client, signed_in):
    """The provider's webhooks answer with them, accepted or refused."""
    _, team_id, token = signed_in
    accepted = client.post(f"/callbacks/multitel/{team_id}/{token}", data={"uniqueid": "u-1", "status": "DELIVRD"})
    assert accepted.status_code == 200
    assert_secure_headers(accepted)
    refused = client.post(f"/callbacks/multitel/{team_id}/wrong-token", data={"status": "DELIVRD"})
    assert refused.status_code >= 400
    assert_secure_headers(refused)


def test_unhandled_error_has_the_headers(app, client):
    """Even a crash (500) is answered with them."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("boom")

    response = client.get("/boom-for-test")
    assert response.status_code == 500
    assert_secure_headers(response)
