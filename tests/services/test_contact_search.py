"""Contact queries: the literal, bounded search pattern shared by the list and opt-out pages."""

import pytest
from sqlalchemy import select

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Contact, ContactList, Role, Suppression
from webapp.services.contacts import SEARCH_MAX_CHARS, contains_pattern, search_text


def test_search_text_is_trimmed_and_cut():
    """Search text loses its padding and is cut to SEARCH_MAX_CHARS, saying whether it was cut."""
    assert search_text("  Noël ") == ("Noël", False)
    assert search_text("x" * SEARCH_MAX_CHARS) == ("x" * SEARCH_MAX_CHARS, False)
    assert search_text("y" * 50_000) == ("y" * SEARCH_MAX_CHARS, True)
    assert search_text(None) == ("", False)


def test_pattern_is_literal_and_bounded(app):
    """% and _ match themselves, and even 50,000 backslashes make a short pattern the database accepts."""
    assert contains_pattern("50%_off") == "%50\\%\\_off%"
    assert len(contains_pattern("\\" * 50_000)) <= 2 * SEARCH_MAX_CHARS + 2
    with app.app_context():
        team = make_team("Acme")
        db.session.add(Suppression(team_id=team.id, phone="+14155552671", source="manual", note="50%_off"))
        db.session.commit()
        for text in ("50%_off", "\\" * 50_000, "%" * 50_000, "_" * 50_000, "a" * 50_000):
            found = db.session.scalars(select(Suppression.note).where(
                Suppression.note.ilike(contains_pattern(text), escape="\\"))).all()
            assert found == (["50%_off"] if text == "50%_off" else [])


@pytest.fixture
def list_id(app, auth):
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        contact_list = ContactList(team_id=team.id, name="Spring")
        db.session.add(contact_list)
        db.session.flush()
        db.session.add(Contact(team_id=team.id, list_id=contact_list.id, phone="+14155552671",
                               attributes={"name": "Noël"}))
        db.session.commit()
        list_id = contact_list.id
    auth.login("ed@example.com")
    return list_id


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_a_50000_character_list_search_is_not_a_500(client, list_id, htmx):
    """The list page searches the first 100 characters of a huge query instead of failing."""
    headers = {"HX-Request": "true", "HX-Target": "div#contacts-table"} if htmx else {}
    response = client.get(f"/lists/{list_id}", query_string={"q": "Noël" + "z" * 50_000}, headers=headers)
    assert response.status_code == 200
    assert "No contacts" in response.get_data(as_text=True)
    found = client.get(f"/lists/{list_id}", query_string={"q": "Noël"}).get_data(as_text=True)
    assert "+14155552671" in found
