"""Templates pages and the live composer's counts."""

import pytest
from sqlalchemy import select

from tests.factories import make_contact, make_list, make_team, make_template, make_user
from webapp.extensions import db
from webapp.models import ContactList, MessageTemplate, Role, Team


@pytest.fixture
def editor(app, auth):
    """An editor of a team with one list: Ana (plain) and Zoé (an emoji in her name)."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.EDITOR, "ed@example.com")
        contacts = make_list(team, "Spring")
        ana = make_contact(contacts, "+14155550001", first_name="Ana")
        zoe = make_contact(contacts, "+14155550002", first_name="Zoé 😀")
        ids = {"team": team.id, "list": contacts.id, "ana": ana.id, "zoe": zoe.id}
    auth.login("ed@example.com")
    return ids


def measure(client, body, **fields):
    return client.post("/compose/measure", data={"body": body, "footer": "on", **fields},
                       headers={"HX-Request": "true"}).get_data(as_text=True)


def test_create_edit_duplicate_and_delete_a_template(app, client, editor):
    """The whole life of a template through its pages."""
    response = client.post("/templates/", data={"name": "Welcome", "body": "Hi {{ first_name }}"})
    assert response.status_code == 302
    with app.app_context():
        template_id = db.session.scalar(select(MessageTemplate.id).where(MessageTemplate.name == "Welcome"))
    assert "Hi {{ first_name }}" in client.get(f"/templates/{template_id}").get_data(as_text=True)

    client.post(f"/templates/{template_id}", data={"name": "Welcome", "body": "Hello {{ first_name }}"})
    client.post(f"/templates/{template_id}/duplicate")
    page = client.get("/templates/").get_data(as_text=True)
    assert "Copy of Welcome" in page and "Hello {{ first_name }}" in page

    client.post(f"/templates/{template_id}/delete")
    with app.app_context():
        names = db.session.scalars(select(MessageTemplate.name)).all()
    assert names == ["Copy of Welcome"]


def test_a_refused_template_is_not_saved_and_says_where(app, client, editor):
    """{% for %} and {{ 9**9**9 }} are refused on save, each with line and column."""
    response = client.post("/templates/", data={"name": "Bad", "body": "Hi\n{% for x in y %}{{ 9**9**9 }}"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "Not saved" in page
    assert "Line 2, column 1: Found a {% … %} block" in page
    assert "Line 2, column 17: Found “{{ 9**9**9 }}”, which is not a field name" in page
    with app.app_context():
        assert db.session.scalar(select(MessageTemplate.id)) is None


def test_duplicate_names_are_refused(client, editor):
    """Template names are unique in a team, whatever the case."""
    client.post("/templates/", data={"name": "Welcome", "body": "Hi"})
    response = client.post("/templates/", data={"name": "WELCOME", "body": "Hi"})
    assert response.status_code == 400 and "already a template called" in response.get_data(as_text=True)


def test_counts_are_for_the_chosen_sample_contact(client, editor):
    """The same text measures differently for Ana (GSM-7) and Zoé, whose own data forces UCS-2."""
    ana = measure(client, "Hi {{ first_name }}", sample_list=editor["list"], sample_contact=editor["ana"])
    assert 'id="count-encoding" class="badge badge-ok">GSM-7' in ana and "Hi Ana\nReply STOP to opt out" in ana
    zoe = measure(client, "Hi {{ first_name }}", sample_list=editor["list"], sample_contact=editor["zoe"])
    assert ">UCS-2<" in zoe and 'id="data-culprits"' in zoe and "grinning face" in zoe
    assert 'id="replace-gsm"' not in zoe  # no click can fix a contact's own data


def test_a_curly_quote_is_flagged_and_offered_a_replacement(client, editor):
    """A ’ in the template forces UCS-2: it is highlighted and listed with its GSM-7 stand-in."""
    page = measure(client, "It’s here", sample_list=editor["list"], sample_contact=editor["ana"])
    assert ">UCS-2<" in page
    assert '<mark class="culprit">’</mark> right single quotation mark' in page
    assert 'id="replace-gsm"' in page and 'hx-include="#composer-form"' in page
    assert "<textarea" not in page  # typing never swaps the textarea, so it keeps focus and caret


def test_replacing_returns_the_fixed_textarea_and_fresh_counts(client, editor):
    """The replacement answers with the new textarea and the counts out of band, now GSM-7."""
    page = client.post("/compose/gsm", data={"body": "It’s “50%” off — now…", "footer": "on",
                                             "sample_list": editor["list"], "sample_contact": editor["ana"]}
                       ).get_data(as_text=True)
    assert "It&#39;s &#34;50%&#34; off - now...</textarea>" in page
    assert 'id="counts" class="card composer-counts"' in page and 'hx-swap-oob="true"' in page
    assert ">GSM-7<" in page


def test_the_footer_is_counted_and_can_be_left_off(client, editor):
    """150 characters are 1 part alone and 2 with the footer."""
    with_footer = measure(client, "x" * 150, sample_list=editor["list"])
    without = client.post("/compose/measure", data={"body": "x" * 150, "footer": "off",
                                                    "sample_list": editor["list"]}).get_data(as_text=True)
    assert 'id="count-parts">2<' in with_footer and "Reply STOP to opt out" in with_footer
    assert 'id="count-parts">1<' in without and "Reply STOP" not in without


def test_unknown_placeholders_and_missing_values_are_flagged(app, client, editor):
    """{{ config }} is an unknown field (never the app's config); a contact without a value is named."""
    page = measure(client, "{{ config }} {{ first_name }}", sample_list=editor["list"])
    assert 'id="unknown-fields"' in page and "<code>config</code>" in page
    assert app.config["SECRET_KEY"] not in page
    with app.app_context():
        blank = make_contact(_list(editor), "+14155550003", first_name=" ").id
    page = measure(client, "Hi {{ first_name }}", sample_list=editor["list"], sample_contact=blank)
    assert 'id="missing-fields"' in page


def _list(editor):
    return db.session.get(ContactList, editor["list"])


def test_a_refused_template_shows_its_errors_in_the_counts(client, editor):
    """While typing, a refused construct is reported live with its location."""
    page = measure(client, "Hi {{ ''.__class__ }}")
    assert 'id="template-errors"' in page and "Line 1, column 4" in page


def test_changing_the_sample_list_refreshes_the_contact_choices(app, client, editor):
    """When the sample list changed, the contact select comes back out of band for the new list."""
    with app.app_context():
        other = make_list(_team(editor), "Autumn")
        make_contact(other, "+14155550077", first_name="Otto")
        other_id = other.id
    page = measure(client, "Hi {{ first_name }}", sample_list=other_id, shown_list=editor["list"])
    assert 'id="sample-contact-field" hx-swap-oob="true"' in page and "Otto" in page
    same = measure(client, "Hi", sample_list=editor["list"], shown_list=editor["list"])
    assert "sample-contact-field" not in same


def _team(editor):
    return db.session.get(Team, editor["team"])


def test_another_teams_template_is_not_found(app, client, editor):
    """A template of another team is 404 on every route."""
    with app.app_context():
        foreign = make_template(make_team("Other")).id
    assert client.get(f"/templates/{foreign}").status_code == 404
    assert client.post(f"/templates/{foreign}/delete").status_code == 404


def test_viewers_read_but_cannot_change_templates(app, client, auth):
    """A viewer sees the list of templates; creating one is refused."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.VIEWER, "viewer@example.com")
        make_template(team, name="Welcome")
    auth.login("viewer@example.com")
    page = client.get("/templates/").get_data(as_text=True)
    assert "Welcome" in page and "New template" not in page
    assert client.post("/templates/", data={"name": "x", "body": "y"}).status_code == 403


def test_a_viewer_reads_a_template_without_forms(app, client, auth):
    """A viewer's template page shows the text and counts, no form, no 'Replace with GSM'; /templates/new
    says who creates templates."""
    with app.app_context():
        team = make_team("Acme")
        make_user(team, Role.VIEWER, "viewer@example.com")
        make_list(team, "Spring")
        template = make_template(team, name="Welcome", body="It’s here")
        template_id = template.id
    auth.login("viewer@example.com")
    page = client.get(f"/templates/{template_id}").get_data(as_text=True)
    main = page.split('<main id="main"')[1].split("</main>")[0]
    assert 'id="template-body">It’s here<' in main and 'id="template-culprits"' in main
    assert "<form" not in main and "<textarea" not in main and "Replace with GSM" not in main
    assert "Save template" not in main and 'id="read-only"' in main
    main = client.get("/templates/new").get_data(as_text=True).split('<main id="main"')[1].split("</main>")[0]
    assert "<form" not in main and 'id="read-only"' in main


def test_an_editor_is_offered_the_gsm_replacement(client, editor):
    """The same curly quote gives an editor the button (the viewer's page hides only the button)."""
    assert 'id="replace-gsm"' in measure(client, "It’s here")
