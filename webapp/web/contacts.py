"""Contact lists: browse, search, export, delete."""

from datetime import datetime

from flask import (
    Blueprint,
    Response,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from werkzeug.utils import secure_filename

from webapp.extensions import db
from webapp.models import Contact, ContactList, Suppression
from webapp.services.contacts import contains_pattern, suppressed_phones
from webapp.services.csvfiles import field_headers, stream_csv
from webapp.services.imports import active_import_into, export_separator, field_labels
from webapp.web.access import htmx_target, team_get_or_404, team_select
from webapp.web.forms import ListForm

bp = Blueprint("contacts", __name__)

PAGE_SIZE = 50


@bp.get("/lists")
@login_required
def lists():
    """Every list of the team with its number of contacts and of opted-out numbers."""
    contact_count = func.count(Contact.id)
    suppressed = (
        select(func.count(Contact.id)).join(Suppression, (Suppression.team_id == Contact.team_id)
                                            & (Suppression.phone == Contact.phone))
        .where(Contact.list_id == ContactList.id).scalar_subquery()
    )
    rows = db.session.execute(
        team_select(ContactList).add_columns(contact_count, suppressed)
        .outerjoin(Contact, Contact.list_id == ContactList.id).group_by(ContactList.id).order_by(ContactList.name)
    ).all()
    return render_template("contacts/lists.html", rows=rows, form=ListForm())


@bp.post("/lists")
@login_required
def create_list():
    """Create an empty list."""
    form = ListForm()
    if not form.validate():
        flash(" ".join(form.name.errors) or "The form expired; try again.", "error")
        return redirect(url_for("contacts.lists"))
    name = form.name.data
    try:
        db.session.add(ContactList(team_id=current_user.team_id, name=name))
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        flash(f"A list named {name!r} already exists.", "error")
    else:
        flash(f"List {name!r} created.", "success")
    return redirect(url_for("contacts.lists"))


@bp.get("/lists/<int:list_id>")
@login_required
def show(list_id: int):
    """One list's contacts, searchable by number or field value, 50 to a page."""
    contact_list = team_get_or_404(ContactList, list_id)
    query = request.args.get("q", "").strip()
    statement = select(Contact).where(Contact.list_id == contact_list.id, Contact.team_id == contact_list.team_id)
    if query:
        pattern = contains_pattern(query)
        statement = statement.where(or_(Contact.phone.ilike(pattern, escape="\\"),
                                        cast(Contact.attributes, String).ilike(pattern, escape="\\")))
    results = db.paginate(statement.order_by(Contact.id), per_page=PAGE_SIZE, error_out=False)
    contacts = results.items
    suppressed = suppressed_phones(contact_list.team_id, [c.phone for c in contacts])
    context = dict(contact_list=contact_list, contacts=contacts, suppressed=suppressed, query=query,
                   results=results, field_names=_field_names(contacts))
    template = "contacts/_table.html" if htmx_target() == "contacts-table" else "contacts/show.html"
    response = make_response(render_template(template, **context))
    response.vary.update(("HX-Request", "HX-Target"))  # one URL, two bodies: caches must keep them apart
    return response


def _field_names(contacts: list[Contact]) -> list[str]:
    names: dict[str, None] = {}
    for contact in contacts:
        names.update(dict.fromkeys(contact.attributes or {}))
    return list(names)


@bp.post("/lists/<int:list_id>/delete")
@login_required
def delete_list(list_id: int):
    """Delete a list and its contacts (opt-outs are kept: they belong to the team)."""
    contact_list = team_get_or_404(ContactList, list_id)
    if active_import_into(contact_list.id):
        flash("An import into this list is still running; stop it or wait for it before deleting the list.", "error")
        return redirect(url_for("contacts.show", list_id=list_id))
    db.session.execute(db.delete(Contact).where(Contact.list_id == contact_list.id))
    db.session.delete(contact_list)
    db.session.commit()
    flash(f"List {contact_list.name!r} deleted.", "success")
    return redirect(url_for("contacts.lists"))


@bp.post("/contacts/<int:contact_id>/delete")
@login_required
def delete_contact(contact_id: int):
    """Remove one contact from its list."""
    contact = team_get_or_404(Contact, contact_id)
    db.session.delete(contact)
    db.session.commit()
    flash(f"{contact.phone} removed from the list.", "success")
    return redirect(url_for("contacts.show", list_id=contact.list_id))


@bp.get("/lists/<int:list_id>/export.csv")
@login_required
def export(list_id: int):
    """The list as CSV: number, country, type, opted out, then every field under the name it was uploaded
    with, separated like the team's uploads (or ?separator=). Cells are neutralised against spreadsheet
    formula injection (an E.164 number is written as '+1415…, see csvfiles)."""
    contact_list = team_get_or_404(ContactList, list_id)
    team_id, name = contact_list.team_id, contact_list.name

    def rows():
        # Queried here: a streamed response runs after the view's database session has closed.
        field_names: dict[str, None] = {}
        for attributes in db.session.scalars(select(Contact.attributes).where(Contact.list_id == list_id)
                                             .execution_options(yield_per=5000)):
            field_names.update(dict.fromkeys(attributes or {}))
        suppressed = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))
        contacts = db.session.scalars(select(Contact).where(Contact.list_id == list_id).order_by(Contact.id)
                                      .execution_options(yield_per=5000))
        labels = field_labels([list_id])
        ours = ["Phone number", "Country", "Number type", "Opted out"]
        yield [*ours, *field_headers(ours, (labels.get(name, name) for name in field_names))]
        for contact in contacts:
            attributes = contact.attributes or {}
            yield [contact.phone, contact.region or "", contact.number_type,
                   "yes" if contact.phone in suppressed else "no",
                   *(str(attributes.get(name, "")) for name in field_names)]

    name = secure_filename(f"{name}-{datetime.now():%Y%m%d}.csv") or "contacts.csv"
    separator = export_separator(team_id, request.args.get("separator"))
    return Response(stream_with_context(stream_csv(rows(), separator)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
