"""Team sending settings: time zone, send rate and frequency cap, validated and saved together."""

from decimal import Decimal

import pytest

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Role, Team

VALID = {"timezone": "Europe/Paris", "send_rate": "25.5", "frequency_cap_hours": "24"}


@pytest.fixture
def team_id(app, auth):
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.ADMIN, "admin@example.com")
        make_user(team, Role.EDITOR, "ed@example.com")
        team_id = team.id
    auth.login("admin@example.com")
    return team_id


def _team(app, team_id) -> Team:
    with app.app_context():
        team = db.session.get(Team, team_id)
        db.session.expunge(team)
        return team


def test_the_settings_page_has_a_sending_section_with_every_zone(client, team_id):
    """The section shows the current values and offers the IANA zones by name, the team's selected."""
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="sending-heading"' in page
    assert '<option selected value="UTC">UTC</option>' in page
    assert '<option value="America/New_York">America/New York</option>' in page
    assert '<option value="Asia/Kolkata">Asia/Kolkata</option>' in page
    assert 'value="localtime"' not in page and 'value="Factory"' not in page
    assert 'id="send_rate"' in page and 'id="frequency_cap_hours"' in page


def test_sending_settings_are_saved(app, client, team_id):
    """Zone, rate and cap are written onto the team; the page shows them back."""
    response = client.post("/settings/sending", data=VALID)
    assert response.status_code == 302
    team = _team(app, team_id)
    assert (team.timezone, team.send_rate, team.frequency_cap_hours) == ("Europe/Paris", Decimal("25.5"), 24)
    page = client.get("/settings/").get_data(as_text=True)
    assert '<option selected value="Europe/Paris">' in page and 'value="25.50"' in page


def test_an_empty_frequency_cap_removes_it(app, client, team_id):
    """Leaving the cap empty means no cap (None), not zero."""
    client.post("/settings/sending", data=VALID)
    assert client.post("/settings/sending", data={**VALID, "frequency_cap_hours": ""}).status_code == 302
    assert _team(app, team_id).frequency_cap_hours is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("timezone", "Mars/Olympus_Mons", "Choose a time zone from the list."),
    ("timezone", "localtime", "Choose a time zone from the list."),
    ("send_rate", "0", "Between 0.01 and 1,000 messages per second."),
    ("send_rate", "0.004", "Between 0.01 and 1,000 messages per second."),  # would be stored as 0.00
    ("send_rate", "-3", "Between 0.01 and 1,000 messages per second."),
    ("send_rate", "1000.01", "Between 0.01 and 1,000 messages per second."),
    ("send_rate", "NaN", "Type a number."),
    ("send_rate", "", "Give the send rate."),
    ("frequency_cap_hours", "0", "Between 1 and 168 hours"),
    ("frequency_cap_hours", "169", "Between 1 and 168 hours"),
    ("frequency_cap_hours", "1.5", "Not a valid integer value."),
])
def test_refused_values_change_nothing(app, client, team_id, field, value, message):
    """Each refused value answers 400 with the reason beside the field, and nothing is saved."""
    response = client.post("/settings/sending", data={**VALID, field: value})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    team = _team(app, team_id)
    assert (team.timezone, team.send_rate, team.frequency_cap_hours) == ("UTC", Decimal("10"), None)


def test_the_bounds_are_accepted(app, client, team_id):
    """1,000 messages per second and a week-long cap are allowed."""
    assert client.post("/settings/sending", data={**VALID, "send_rate": "1000",
                                                  "frequency_cap_hours": "168"}).status_code == 302
    team = _team(app, team_id)
    assert (team.send_rate, team.frequency_cap_hours) == (Decimal("1000"), 168)


def test_an_editor_cannot_change_sending_settings(app, client, auth, team_id):
    """Team settings are for admins: an editor's POST is refused and changes nothing."""
    auth.logout()
    auth.login("ed@example.com")
    assert client.post("/settings/sending", data=VALID).status_code == 403
    assert _team(app, team_id).timezone == "UTC"
