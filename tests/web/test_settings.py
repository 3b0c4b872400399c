"""Team settings: provider credentials encrypted at rest, sender numbers, the connection test."""

import re

from sqlalchemy import text

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Role, SenderNumber, Team

SECRET = "sandbox"


def _admin(app, auth, country="US"):
    with app.app_context():
        team = make_team("Acme")
        team.default_country = country
        db.session.commit()
        make_user(team, Role.ADMIN, "admin@example.com")
        team_id = team.id
    auth.login("admin@example.com")
    return team_id


def _save(client, password=SECRET, username="sandbox", **extra):
    data = {"api_username": username, "api_password": password, "price_per_part": "0.02", "currency": "eur",
            "default_country": "US"}
    data.update(extra)
    return client.post("/settings/", data=data)


def test_password_is_encrypted_at_rest(app, client, auth):
    """The raw column holds a Fernet token, never the password; the app can still read it back."""
    team_id = _admin(app, auth)
    assert _save(client, password="p@ss-w0rd-unique-123").status_code == 302
    with app.app_context():
        raw = db.session.execute(text("SELECT api_password_encrypted FROM team WHERE id = :id"),
                                 {"id": team_id}).scalar_one()
        assert "p@ss-w0rd-unique-123" not in raw
        assert raw.startswith("gAAAAA")  # Fernet
        from webapp.services.teams import team_credentials

        assert team_credentials(db.session.get(Team, team_id)).password == "p@ss-w0rd-unique-123"


def test_password_is_write_only(app, client, auth):
    """The settings page never shows the stored password, and an empty field keeps it."""
    team_id = _admin(app, auth)
    _save(client, password="p@ss-w0rd-unique-123")
    page = client.get("/settings/").get_data(as_text=True)
    assert "p@ss-w0rd-unique-123" not in page
    assert "A password is stored" in page
    _save(client, password="")
    with app.app_context():
        from webapp.services.teams import team_credentials

        assert team_credentials(db.session.get(Team, team_id)).password == "p@ss-w0rd-unique-123"


def test_prices_and_currency_are_saved(app, client, auth):
    """Price per part and currency are stored as entered (currency upper-cased)."""
    team_id = _admin(app, auth)
    _save(client)
    with app.app_context():
        team = db.session.get(Team, team_id)
        assert str(team.price_per_part).startswith("0.02") and team.currency == "EUR"


def test_sender_numbers_are_validated_and_stored_in_e164(app, client, auth):
    """A national number is stored in E.164; an invalid one is refused with the reason on the form."""
    team_id = _admin(app, auth)
    assert client.post("/settings/senders", data={"number": "(415) 555-2671", "label": "Main"}).status_code == 302
    refused = client.post("/settings/senders", data={"number": "555-1234"})
    assert refused.status_code == 400 and "Not a valid number" in refused.get_data(as_text=True)
    again = client.post("/settings/senders", data={"number": "+1 415 555 2671"})
    assert "already a sender number" in again.get_data(as_text=True)
    with app.app_context():
        numbers = db.session.scalars(db.select(SenderNumber.number).where(SenderNumber.team_id == team_id)).all()
        assert numbers == ["+14155552671"]


def test_connection_test_against_the_sandbox(app, client, auth, sandbox):
    """'Test connection' says the sandbox accepted the credentials, or plainly that they were refused."""
    _admin(app, auth)
    _save(client)
    ok = client.post("/settings/test-connection").get_data(as_text=True)
    assert "Connected." in ok and "accepted the username and password" in ok
    _save(client, password="wrong-password")
    refused = client.post("/settings/test-connection").get_data(as_text=True)
    assert "Not connected." in refused and "username or password was refused" in refused
    assert "wrong-password" not in refused


def test_connection_test_says_what_it_verified_and_what_it_did_not(app, client, auth, sandbox):
    """The answer names the URL, the requests that proved it, and what an empty test can't know."""
    _admin(app, auth)
    _save(client)
    answer = client.post("/settings/test-connection").get_data(as_text=True)
    assert f"answered at {sandbox.url}/v3/sendsms" in answer
    assert "Verified by two empty messages (no recipient, no text, so nothing could be sent or billed)" in answer
    assert "Not verified: that the sender numbers may send, the account balance" in answer
    assert sandbox.state.sends_for() == []


def test_connection_test_says_the_url_is_wrong_with_a_wrong_password(app, client, auth, sandbox):
    """MULTITEL_API_URL ending in /v3: 'the API URL is wrong' even with a wrong password, never 'Connected'."""
    _admin(app, auth)
    _save(client, password="wrong-password")
    app.config["MULTITEL_API_URL"] = sandbox.url + "/v3"
    answer = client.post("/settings/test-connection").get_data(as_text=True)
    assert "Connected." not in answer
    assert "The API URL is wrong" in answer and "ends in /v3" in answer


def test_connection_test_without_credentials(app, client, auth):
    """Without saved credentials the button says what to do."""
    _admin(app, auth)
    answer = client.post("/settings/test-connection").get_data(as_text=True)
    assert "Enter the API username and password first" in answer


def test_connection_test_unreachable(app, client, auth):
    """An unreachable API URL is named in the message."""
    _admin(app, auth)
    _save(client)
    app.config["MULTITEL_API_URL"] = "http://127.0.0.1:9"
    message = client.post("/settings/test-connection").get_data(as_text=True)
    assert re.search(r"cannot reach http://127\.0\.0\.1:9", message)


def test_sandbox_banner_shows_when_on_the_sandbox(app, client, auth, sandbox):
    """Every page says clearly when the team is on the sandbox."""
    _admin(app, auth)
    app.config["SANDBOX_URL"] = sandbox.url
    assert "Sandbox mode" in client.get("/").get_data(as_text=True)
    app.config["MULTITEL_API_URL"] = "https://api.multitel.net"
    assert "Sandbox mode" not in client.get("/").get_data(as_text=True)


def _typed(username="sandbox", password="", **extra):
    """The provider form as htmx posts it with the Test connection button: whatever is typed, saved or not."""
    return {"api_username": username, "api_password": password, "price_per_part": "0.02", "currency": "EUR",
            "default_country": "US", **extra}


def test_connection_test_tries_the_values_typed_before_saving(app, client, auth, sandbox):
    """Nothing saved yet: the typed username and password are tried, the page says they are not saved, the
    password is never echoed back, and nothing is stored."""
    team_id = _admin(app, auth)
    answer = client.post("/settings/test-connection", data=_typed(username="", password=SECRET)).get_data(as_text=True)
    assert "Enter the API username first" in answer
    answer = client.post("/settings/test-connection", data=_typed(password=SECRET)).get_data(as_text=True)
    assert "Connected." in answer and "not saved yet" in answer
    assert "Tried username “sandbox” with the password typed on the form; not saved yet" in answer
    with app.app_context():
        team = db.session.get(Team, team_id)
        assert team.api_username is None and team.api_password_encrypted is None


def test_connection_test_tries_a_typed_wrong_password_over_the_stored_right_one(app, client, auth, sandbox):
    """A saved, working account and a wrong password typed over it: the typed one is refused, the stored one
    untouched; with the password field empty the stored password is tried, with the typed username."""
    _admin(app, auth)
    _save(client)
    answer = client.post("/settings/test-connection", data=_typed(password="not-the-password")).get_data(as_text=True)
    assert "Not connected." in answer and "refused" in answer and "not-the-password" not in answer
    answer = client.post("/settings/test-connection", data=_typed()).get_data(as_text=True)
    assert "Connected." in answer and "with the stored password." in answer
    answer = client.post("/settings/test-connection", data=_typed(username="someone-else")).get_data(as_text=True)
    assert "Not connected." in answer and "“someone-else” with the stored password; not saved yet" in answer


def test_a_new_team_starts_in_its_default_country_zone_and_is_asked_to_choose(app, client, auth):
    """Not silently UTC: a team made for a country starts in its main zone, Settings and the dashboard ask to
    confirm it, the zone follows the default country until someone saves it, and then it stays."""
    from webapp.services.accounts import get_or_create_team

    with app.app_context():
        team = get_or_create_team("Londoners", default_country="GB")
        make_user(team, Role.ADMIN, "admin@example.com")
        db.session.commit()
        team_id = team.id
        assert (team.timezone, team.timezone_chosen) == ("Europe/London", False)
    auth.login("admin@example.com")
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="timezone-prompt"' in page and "Europe/London" in page and "(United Kingdom)" in page
    assert '<option selected value="Europe/London">' in page
    assert 'id="timezone-prompt"' in client.get("/").get_data(as_text=True)

    assert _save(client, default_country="IN").status_code == 302
    with app.app_context():
        assert db.session.get(Team, team_id).timezone == "Asia/Kolkata"  # canonical, not Asia/Calcutta

    assert client.post("/settings/sending", data={"timezone": "Europe/Paris", "send_rate": "10"}).status_code == 302
    assert _save(client, default_country="US").status_code == 302
    with app.app_context():
        team = db.session.get(Team, team_id)
        assert (team.timezone, team.timezone_chosen) == ("Europe/Paris", True)
    assert 'id="timezone-prompt"' not in client.get("/settings/").get_data(as_text=True)
    assert 'id="timezone-prompt"' not in client.get("/").get_data(as_text=True)


def test_every_country_suggests_a_zone_the_settings_offer():
    """The suggested zone of every country libphonenumber knows is one of the zones the Sending form lists."""
    import phonenumbers

    from webapp.services.countries import main_zone
    from webapp.web.forms import timezone_choices

    offered = {choice.value for choice in timezone_choices()}
    assert {region: main_zone(region) for region in phonenumbers.SUPPORTED_REGIONS
            if main_zone(region) not in offered} == {}
    assert [main_zone(region) for region in ("US", "CA", "GB", "AU", "BR", "RU")] == [
        "America/New_York", "America/Toronto", "Europe/London", "Australia/Sydney", "America/Sao_Paulo",
        "Europe/Moscow"]
