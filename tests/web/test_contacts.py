"""Contact lists: counts, search, pagination, export, deletion."""

import csv
import io

import pytest
from sqlalchemy import func, select

from tests.factories import make_team, make_user
from webapp.extensions import db
from webapp.models import Contact, ContactList, Role, Suppression


@pytest.fixture
def filled_list(app, auth):
    """A list of 120 contacts, one of them opted out and one a formula-looking name."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        contact_list = ContactList(team_id=team.id, name="Spring sale")
        db.session.add(contact_list)
        db.session.flush()
        for i in range(120):
            name = "=HYPERLINK(\"http://evil\")" if i == 7 else f"Person {i}"
            db.session.add(Contact(team_id=team.id, list_id=contact_list.id, phone=f"+1415555{1000 + i}",
                                   region="US", number_type="fixed_line_or_mobile", attributes={"name": name}))
        db.session.add(Suppression(team_id=team.id, phone="+14155551005", source="manual"))
        db.session.commit()
        list_id = contact_list.id
    auth.login("ed@example.com")
    return list_id


def test_lists_page_counts(client, filled_list):
    """The lists page shows each list with its contacts and opted-out numbers."""
    page = client.get("/lists").get_data(as_text=True)
    assert "Spring sale" in page and ">120<" in page and ">1<" in page


def test_list_pages_and_search(client, filled_list):
    """50 contacts to a page; searching by number or by field narrows the list."""
    page = client.get(f"/lists/{filled_list}").get_data(as_text=True)
    assert "120 contacts" in page and "Page 1 of 3" in page
    assert page.count('<td class="mono">') == 50
    found = client.get(f"/lists/{filled_list}?q=Person 11").get_data(as_text=True)
    assert "11 contacts" in found  # Person 11 and Person 110-119
    by_number = client.get(f"/lists/{filled_list}?q=5551005").get_data(as_text=True)
    assert "1 contact" in by_number and "opted out" in by_number


def test_htmx_search_returns_the_table_fragment(client, filled_list):
    """An htmx 4 search (HX-Target: div#contacts-table) gets just the table, not the whole page."""
    fragment = client.get(f"/lists/{filled_list}?q=Person 2", headers={"HX-Request": "true",
                                                                        "HX-Target": "div#contacts-table"})
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith("<div id=\"contacts-table\">") and "<html" not in text and "<main" not in text
    assert {"HX-Request", "HX-Target"} <= set(fragment.vary)


@pytest.mark.parametrize("target", [None, "body", "div", "div#something-else"])
def test_other_htmx_requests_get_the_whole_page(client, filled_list, target):
    """A history restore (HX-Target: body) or any other target gets the full page, exactly once."""
    headers = {"HX-Request": "true"} | ({"HX-Target": target} if target else {})
    text = client.get(f"/lists/{filled_list}?q=Person 2", headers=headers).get_data(as_text=True)
    assert text.count("<main") == 1 and text.count('id="contacts-table"') == 1


def test_export_neutralises_formulas(client, filled_list):
    """The export has every contact; cells that a spreadsheet would run are prefixed with an apostrophe."""
    response = client.get(f"/lists/{filled_list}/export.csv")
    rows = list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert rows[0] == ["Phone number", "Country", "Number type", "Opted out", "name"]
    assert len(rows) == 121
    assert rows[1][0] == "'+14155551000"
    assert rows[8][4] == "'=HYPERLINK(\"http://evil\")"
    assert rows[6][3] == "yes"


def test_export_names_fields_as_uploaded_and_uses_the_uploads_separator(app, client, filled_list):
    """After a ";" upload into the list, its fields are named as in that file's header and ";" separates them."""
    from tests.factories import make_import
    from webapp.models import ImportStatus, Team

    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.name == "Acme"))
        contact_list = db.session.get(ContactList, filled_list)
        upload = make_import(team, ImportStatus.DONE, contact_list, headers=["Mobile", "Name"])
        upload.delimiter, upload.field_columns, upload.accepted = ";", [1], 120
        db.session.commit()
    text = client.get(f"/lists/{filled_list}/export.csv").get_data().decode("utf-8-sig")
    assert text.startswith("Phone number;Country;Number type;Opted out;Name\r\n'+14155551000;US;")
    assert client.get(f"/lists/{filled_list}/export.csv?separator=comma").get_data().decode("utf-8-sig").startswith(
        "Phone number,Country,")


def test_delete_contact_and_list(app, client, filled_list):
    """Deleting a contact removes it; deleting the list removes its contacts but keeps opt-outs."""
    with app.app_context():
        contact_id = db.session.scalar(select(Contact.id).where(Contact.list_id == filled_list).limit(1))
    client.post(f"/contacts/{contact_id}/delete")
    with app.app_context():
        assert db.session.scalar(select(func.count(Contact.id))) == 119
    client.post(f"/lists/{filled_list}/delete")
    with app.app_context():
        assert db.session.scalar(select(func.count(Contact.id))) == 0
        assert db.session.scalar(select(func.count(ContactList.id))) == 0
        assert db.session.scalar(select(func.count(Suppression.id))) == 1


def test_create_empty_list(app, client, filled_list):
    """An empty list can be made by name; a taken name is explained."""
    client.post("/lists", data={"name": "VIPs"})
    again = client.post("/lists", data={"name": "VIPs"}, follow_redirects=True)
    assert "already exists" in again.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(ContactList.id))) == 2


def test_search_treats_wildcards_literally(client, filled_list):
    """% and _ in a search are ordinary characters."""
    assert "0 contacts" in client.get(f"/lists/{filled_list}?q=%25").get_data(as_text=True)
    assert "0 contacts" in client.get(f"/lists/{filled_list}?q=_").get_data(as_text=True)


def test_a_list_name_is_trimmed_and_required(app, client, filled_list):
    """The new-list form (Flask-WTF) trims the name and explains an empty one instead of storing it."""
    client.post("/lists", data={"name": "  Summer  "})
    empty = client.post("/lists", data={"name": "   "}, follow_redirects=True)
    assert "Give the list a name." in empty.get_data(as_text=True)
    with app.app_context():
        names = set(db.session.scalars(select(ContactList.name)))
        assert "Summer" in names and "" not in names


def test_no_view_reads_the_form_by_hand():
    """Every form goes through Flask-WTF: no view module reads request.form field by field."""
    from pathlib import Path

    import webapp.web

    for module in Path(webapp.web.__file__).parent.glob("*.py"):
        if module.name != "forms.py":
            assert "request.form" not in module.read_text(), module.name
