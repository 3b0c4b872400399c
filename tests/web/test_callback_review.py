"""The review page of flagged delivery reports: the team's own, newest first, keyset pages, no 500."""

import pytest

from tests.factories import make_message, make_team, make_user
from webapp.extensions import db
from webapp.models import MessageStatus, Role
from webapp.services import callbacks
from webapp.services.callbacks import REPLY_DISAGREES, UNKNOWN_WORD, UNREADABLE, store_status_callback

FORM = "application/x-www-form-urlencoded"


def _badge(flag: str) -> str:
    return f'<span class="badge badge-warn">{flag}</span>'


@pytest.fixture
def teams(app, auth):
    """Team A (signed in as a viewer: the page is read-only) and team B, each with flagged and good reports."""
    with app.app_context():
        team, other = make_team("Alpha"), make_team("Beta")
        user = make_user(team, Role.VIEWER)
        message = make_message(team, status=MessageStatus.ACCEPTED, reply_parts=1, reply_cost=0.015)
        store_status_callback(team.id, FORM, "", f"reference={message.reference}&status=DELIVRD".encode())
        store_status_callback(team.id, "application/xml", "", b"<report>DELIVRD</report>")
        store_status_callback(team.id, FORM, "", f"reference={message.reference}&status=WEIRD".encode())
        store_status_callback(team.id, FORM, "", f"reference={message.reference}&status=DELIVRD&parts=2".encode())
        store_status_callback(other.id, "text/plain", "", b"team B's secret garbage")
        ids, email = (team.id, other.id, message.id), user.email
    auth.login(email)
    return ids


def test_the_page_lists_the_teams_flagged_reports_newest_first(app, client, teams):
    """Three flagged reports of the team, newest first with their flags; the good one and team B's are absent."""
    _team_id, _other_id, message_id = teams
    page = client.get("/delivery-reports/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    flags = [html.index(_badge(flag)) for flag in (REPLY_DISAGREES, UNKNOWN_WORD, UNREADABLE)]
    assert flags == sorted(flags), "newest first"
    assert "WEIRD" in html and "&lt;report&gt;DELIVRD&lt;/report&gt;" in html
    assert "team B" not in html and html.count('<tr id="callback-') == 3
    assert f"#{message_id}" in html
    assert 'id="older-callbacks"' not in html and 'id="newer-callbacks"' not in html


def test_pages_are_keyset_and_walk_back_and_forth(app, client, teams, monkeypatch):
    """With two to a page: newest two, then the oldest one, then back to the newest two (by id cursors)."""
    team_id, _other_id, _message_id = teams
    monkeypatch.setattr(callbacks, "REVIEW_PAGE_SIZE", 2)
    with app.app_context():
        first = callbacks.flagged_callbacks(team_id)
        assert [row[0].problem for row in first.rows] == [REPLY_DISAGREES, UNKNOWN_WORD] and first.newer is None
        second = callbacks.flagged_callbacks(team_id, before=first.older)
        assert [row[0].problem for row in second.rows] == [UNREADABLE] and second.older is None
        back = callbacks.flagged_callbacks(team_id, after=second.newer)
        assert [row[0].id for row in back.rows] == [row[0].id for row in first.rows]
        assert back.newer is None and back.older == first.older
    older = client.get(f"/delivery-reports/?before={first.older}").get_data(as_text=True)
    assert _badge(UNREADABLE) in older and _badge(UNKNOWN_WORD) not in older and 'id="newer-callbacks"' in older


def test_bad_cursors_are_404_not_500(client, teams):
    """A cursor that is not a row id, or one past any integer column, is 404."""
    for query in ("before=abc", "after=-1", f"before={2**64}", "after=1e9"):
        assert client.get(f"/delivery-reports/?{query}").status_code == 404, query
    assert client.get("/delivery-reports/?before=1").status_code == 200


def test_signed_out_visitors_are_sent_to_sign_in(app):
    """The page needs a session like every other page."""
    response = app.test_client().get("/delivery-reports/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    with app.app_context():
        db.session.remove()
