"""Opt-outs: by hand, by CSV, and by inbound STOP messages parsed tolerantly."""

import io

import pytest
from sqlalchemy import select

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import InboundMessage, Role, Suppression, Team
from webapp.services.optouts import is_suppressed, keyword_action


@pytest.fixture
def team(app, auth):
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        ids = team.id, team.inbound_token
    auth.login("ed@example.com")
    return ids


def _phones(app, team_id):
    with app.app_context():
        return set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))


@pytest.mark.parametrize(
    ("text", "action"),
    [("STOP", "opt_out"), ("stop", "opt_out"), ("  Stop.", "opt_out"), ("STOPALL", "opt_out"),
     ("unsubscribe me", "opt_out"), ("CANCEL", "opt_out"), ("end", "opt_out"), ("QUIT!", "opt_out"),
     ("START", "opt_in"), ("unstop", "opt_in"), ("Stopping by later", "none"), ("", "none"), (None, "none")],
)
def test_keywords(text, action):
    """The first word decides, ignoring case and punctuation."""
    assert keyword_action(text) == action


def test_add_by_hand(app, client, team):
    """A number typed in the national format is stored in E.164; a second add says it is already there."""
    client.post("/opt-outs/", data={"phone": "(415) 555-2671", "note": "asked by phone"})
    again = client.post("/opt-outs/", data={"phone": "+14155552671"}, follow_redirects=True)
    assert "had already opted out" in again.get_data(as_text=True)
    assert _phones(app, team[0]) == {"+14155552671"}
    bad = client.post("/opt-outs/", data={"phone": "12"}, follow_redirects=True)
    assert "Not added" in bad.get_data(as_text=True)


def test_add_by_csv(app, client, team):
    """A CSV's phone column is added; invalid rows and known numbers are counted, not dropped silently."""
    client.post("/opt-outs/", data={"phone": "+14155552671"})
    data = b"name,phone\r\nA,+14155552671\r\nB,415-555-2672\r\nC,nope\r\n"
    page = client.post("/opt-outs/upload", data={"file": (io.BytesIO(data), "stop.csv")},
                       content_type="multipart/form-data", follow_redirects=True).get_data(as_text=True)
    assert "1 numbers added, 1 already opted out, 1 rows not a valid number" in page
    assert _phones(app, team[0]) == {"+14155552671", "+14155552672"}


@pytest.mark.parametrize(
    "post",
    [
        lambda c, url: c.post(url, data={"from": "+14155552671", "text": "STOP"}),
        lambda c, url: c.post(url, json={"Sender": "14155552671", "Message": "Stop please"}),
        lambda c, url: c.get(url + "?MSISDN=%2B14155552671&TEXT=unsubscribe"),
    ],
    ids=["form", "json", "query"],
)
def test_inbound_stop_opts_out(app, client, team, post):
    """An inbound STOP in any body style adds the sender; the raw message is kept."""
    team_id, token = team
    assert post(client, f"/callbacks/inbound/{team_id}/{token}").status_code == 200
    assert _phones(app, team_id) == {"+14155552671"}
    with app.app_context():
        [message] = db.session.scalars(select(InboundMessage)).all()
        assert message.action == "opt_out" and message.sender


def test_inbound_start_opts_back_in(app, client, team):
    """START removes the number again; an ordinary reply changes nothing."""
    team_id, token = team
    url = f"/callbacks/inbound/{team_id}/{token}"
    client.post(url, data={"from": "+14155552671", "text": "STOP"})
    client.post(url, data={"from": "+14155552671", "text": "thanks!"})
    assert _phones(app, team_id) == {"+14155552671"}
    client.post(url, data={"from": "+14155552671", "text": "START"})
    assert _phones(app, team_id) == set()
    with app.app_context():
        assert not is_suppressed(team_id, "+14155552671")
        actions = [m.action for m in db.session.scalars(select(InboundMessage).order_by(InboundMessage.id))]
    assert actions == ["opt_out", "none", "opt_in"]


def test_inbound_needs_the_team_token(app, client, team):
    """A forged inbound message is refused and changes nothing."""
    team_id, _ = team
    forged = client.post(f"/callbacks/inbound/{team_id}/guess", data={"from": "+14155552671", "text": "STOP"})
    assert forged.status_code == 404
    assert _phones(app, team_id) == set()


def test_opt_out_is_per_team(app, client, team):
    """One team's opt-outs don't suppress the number for another team."""
    team_id, token = team
    client.post(f"/callbacks/inbound/{team_id}/{token}", data={"from": "+14155552671", "text": "STOP"})
    with app.app_context():
        other = make_team("Other")
        assert is_suppressed(team_id, "+14155552671")
        assert not is_suppressed(other.id, "+14155552671")
        assert db.session.get(Team, team_id).name == "Acme"


def test_start_keeps_opt_outs_recorded_by_hand(app, client, team):
    """START by text message never lifts an opt-out that a person recorded by hand."""
    team_id, token = team
    client.post("/opt-outs/", data={"phone": "+14155552671", "note": "asked by phone"})
    client.post(f"/callbacks/inbound/{team_id}/{token}", data={"from": "+14155552671", "text": "START"})
    assert _phones(app, team_id) == {"+14155552671"}


def test_the_notify_token_does_not_open_the_inbound_webhook(app, client, team):
    """The notify URL travels with every message, so its token is refused for inbound messages."""
    team_id, _ = team
    with app.app_context():
        notify_token = db.session.get(Team, team_id).callback_token
    stop = {"from": "+14155552671", "text": "STOP"}
    response = client.post(f"/callbacks/inbound/{team_id}/{notify_token}", data=stop)
    assert response.status_code == 404


def test_repeated_stop_is_harmless(app, client, team):
    """The provider retrying a STOP changes nothing after the first one."""
    team_id, token = team
    for _ in range(3):
        assert client.post(f"/callbacks/inbound/{team_id}/{token}",
                           data={"from": "+14155552671", "text": "STOP"}).status_code == 200
    assert _phones(app, team_id) == {"+14155552671"}
