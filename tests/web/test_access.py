"""Team scoping and roles, proven over the whole URL map.

Walks every route of the app, so a new route is covered the day it is added: a route taking an id must
answer 404 to a user of another team, a viewer can change nothing, and nothing is open to anonymous
visitors except the few public endpoints listed here.
"""

import tempfile

import pytest

from tests.factories import (
    PNG_1X1,
    make_campaign,
    make_contact,
    make_import,
    make_list,
    make_message,
    make_optout_import,
    make_sender,
    make_suppression,
    make_team,
    make_template,
    make_user,
)
from webapp import create_app
from webapp.extensions import db
from webapp.models import Role
from webapp.web.access import SELF_SERVICE_ENDPOINTS

# Reached without a session: login, health, static files, and the provider's webhooks (which
# authenticate with the team's unguessable token instead).
PUBLIC_ENDPOINTS = {"auth.login", "health.healthz", "static", "webhooks.status", "webhooks.inbound"}
CHANGE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _id_factories():
    """One maker per URL argument: each makes a row of the given team (tests/factories.py) and returns it."""
    return {
        "user_id": lambda team: make_user(team, Role.EDITOR),
        "list_id": make_list,
        "contact_id": lambda team: make_contact(make_list(team)),
        "import_id": make_import,
        "suppression_id": lambda team: make_suppression(team, "+14155550199"),
        "sender_id": make_sender,
        "template_id": make_template,
        "campaign_id": lambda team: make_campaign(team, [make_list(team)], image=PNG_1X1),
        "optout_import_id": make_optout_import,
        "message_id": lambda team: make_message(team, campaign=make_campaign(team)),
    }


def _rules():
    app = create_app({"INSTANCE_PATH": tempfile.mkdtemp(), "SECRET_KEY": "url-map-walk-" + "k3y" * 10, "TESTING": True})
    return sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule)


ALL_RULES = [rule for rule in _rules() if rule.endpoint not in PUBLIC_ENDPOINTS]
ID_RULES = [rule for rule in ALL_RULES if rule.arguments]
# A viewer may still sign itself out and change its own password.
CHANGE_RULES = [rule for rule in ALL_RULES
                if rule.methods & CHANGE_METHODS and rule.endpoint not in SELF_SERVICE_ENDPOINTS]


def _ids_of(team) -> dict[str, int]:
    ids = {}
    for name, make in _id_factories().items():
        row = make(team)
        db.session.flush()
        ids[name] = row.id
    db.session.commit()
    return ids


def _url(rule, ids) -> str:
    missing = set(rule.arguments) - set(ids)
    assert not missing, f"{rule.rule}: add a factory for {missing} to _id_factories in tests/web/test_access.py"
    return rule.build(ids, append_unknown=False)[1]


@pytest.fixture
def teams(app):
    """Team A with one of everything; signed-in users are made per test."""
    with app.app_context():
        team_a = make_team("Team A")
        team_b = make_team("Team B")
        ids = _ids_of(team_a)
        make_user(team_a, Role.VIEWER, "viewer-a@example.com")
        make_user(team_a, Role.OWNER, "owner-a@example.com")
        make_user(team_b, Role.OWNER, "owner-b@example.com")
    return ids


def test_the_walk_covers_id_routes():
    """The walk found id routes to check (a broken walk would prove nothing)."""
    assert any("user_id" in rule.arguments for rule in ID_RULES)


@pytest.mark.parametrize("rule", ID_RULES, ids=lambda rule: f"{rule.endpoint}")
def test_other_team_gets_404(client, auth, teams, rule):
    """An owner of team B asking for team A's rows by id gets 404, for every method."""
    auth.login("owner-b@example.com")
    url = _url(rule, teams)
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        response = client.open(url, method=method)
        assert response.status_code == 404, f"{method} {url} answered {response.status_code}"


@pytest.mark.parametrize("rule", ID_RULES, ids=lambda rule: f"{rule.endpoint}")
def test_own_team_reaches_its_rows(client, auth, teams, rule):
    """The control for the test above: team A's owner is not refused its own rows, so 404 means scoping."""
    auth.login("owner-a@example.com")
    url = _url(rule, teams)
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        response = client.open(url, method=method)
        assert response.status_code != 404, f"{method} {url} answered 404 to its own team"


@pytest.mark.parametrize("rule", CHANGE_RULES, ids=lambda rule: f"{rule.endpoint}")
def test_viewer_cannot_change_anything(client, auth, teams, rule):
    """A viewer is refused every state-changing request, on their own team's rows too."""
    auth.login("viewer-a@example.com")
    url = _url(rule, teams)
    for method in sorted(rule.methods & CHANGE_METHODS):
        response = client.open(url, method=method)
        assert response.status_code == 403, f"{method} {url} answered {response.status_code}"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: f"{rule.endpoint}")
def test_anonymous_is_sent_to_login(client, teams, rule):
    """Every non-public route needs a session."""
    url = _url(rule, teams)
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        response = client.open(url, method=method)
        assert response.status_code in (302, 401), f"{method} {url} answered {response.status_code}"
        if response.status_code == 302:
            assert "/login" in response.headers["Location"]
