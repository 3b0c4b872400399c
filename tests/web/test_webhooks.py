"""Status callbacks: authenticated by the team's token, stored raw, and the sandbox round trip."""

import time

from sqlalchemy import select

from tests.factories import make_team
from webapp.extensions import db
from webapp.models import ProviderCallback, Team
from webapp.provider import multitel
from webapp.services.teams import notify_url


def _team(app):
    with app.app_context():
        team = make_team("Acme")
        return team.id, team.callback_token


def _callbacks(app, team_id):
    with app.app_context():
        return db.session.scalars(
            select(ProviderCallback).where(ProviderCallback.team_id == team_id).order_by(ProviderCallback.id)
        ).all()


def test_callback_is_stored_raw_and_parsed(app, client):
    """A form callback is kept byte for byte with the fields the parser read."""
    team_id, token = _team(app)
    body = "UNIQUEID=abc-1&reference=m-42&status=DELIVRD&causecode=0"
    response = client.post(f"/callbacks/multitel/{team_id}/{token}", data=body,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    [row] = _callbacks(app, team_id)
    assert row.body == body
    assert (row.unique_id, row.reference, row.state, row.raw_status) == ("abc-1", "m-42", "delivered", "DELIVRD")


def test_unknown_status_is_kept_not_dropped(app, client):
    """A status word we don't know is stored as 'unknown' with the raw word."""
    team_id, token = _team(app)
    client.post(f"/callbacks/multitel/{team_id}/{token}", json={"uniqueid": "u", "status": "WEIRD"})
    [row] = _callbacks(app, team_id)
    assert (row.state, row.raw_status) == ("unknown", "WEIRD")


def test_oversized_and_nul_values_are_still_stored(app, client):
    """A 300-character id or a NUL byte can't make the callback fail to store (PostgreSQL is strict)."""
    team_id, token = _team(app)
    response = client.post(f"/callbacks/multitel/{team_id}/{token}",
                           data=f"uniqueid={'u' * 300}&status=DELIVRD&note=a%00b".encode(),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    [row] = _callbacks(app, team_id)
    assert row.unique_id == "u" * 100 and "\x00" not in row.body and "DELIVRD" in row.body


def test_query_string_callback(app, client):
    """A callback sent as a GET with a query string is accepted too."""
    team_id, token = _team(app)
    assert client.get(f"/callbacks/multitel/{team_id}/{token}?uniqueid=q1&status=sent").status_code == 200
    [row] = _callbacks(app, team_id)
    assert (row.unique_id, row.state) == ("q1", "sent")


def test_wrong_token_is_refused_and_nothing_stored(app, client):
    """A callback without the team's token is refused and not stored."""
    team_id, token = _team(app)
    assert client.post(f"/callbacks/multitel/{team_id}/{token[:-1]}x", data={"status": "DELIVRD"}).status_code == 404
    assert client.post(f"/callbacks/multitel/999999/{token}", data={"status": "DELIVRD"}).status_code == 404
    assert _callbacks(app, team_id) == []


def test_send_through_sandbox_and_receive_callbacks(app, sandbox, live_server):
    """End to end over real HTTP: the client sends, the sandbox calls our notify URL, the callbacks are stored."""
    team_id, _ = _team(app)
    app.config["PUBLIC_BASE_URL"] = live_server.url
    with app.test_request_context():
        url = notify_url(db.session.get(Team, team_id))
    client = multitel.MultitelClient(sandbox.url, multitel.Credentials("sandbox", "sandbox"))
    result = client.send(sender="+14155550100", to="+14155550123", text="Hello from the test",
                         notify_url=url, reference="ref-1")
    assert result.accepted, result.reason
    assert result.parts == 1 and result.unique_id

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_callbacks(app, team_id)) < 2:
        time.sleep(0.1)
    rows = _callbacks(app, team_id)
    assert {row.unique_id for row in rows} == {result.unique_id}
    assert {row.reference for row in rows} == {"ref-1"}
    assert rows[-1].state in ("delivered", "failed")
    assert "sent" in {row.state for row in rows}
