"""Opt-outs page: the team's suppression list, by hand and by CSV (the rules are in services.optouts)."""

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import or_

from webapp.extensions import db
from webapp.models import OptOutImport, Suppression
from webapp.services import optouts
from webapp.services.contacts import SEARCH_MAX_CHARS, contains_pattern, search_text
from webapp.services.disk import DiskFull
from webapp.services.phones import Rejection
from webapp.web.access import htmx_target, team_get_or_404, team_select
from webapp.web.forms import OptOutForm, OptOutUploadForm

bp = Blueprint("optouts", __name__, url_prefix="/opt-outs")

PAGE_SIZE = 50
RECENT_IMPORTS = 5


@bp.get("/")
@login_required
def index():
    """The suppression list, searchable as you type, 50 to a page; htmx searches get the table alone."""
    return _page()


def _page(add_form: OptOutForm | None = None, upload_form: OptOutUploadForm | None = None, status: int = 200):
    """The page (or, for a search aimed at the table, the table fragment) with the given forms' errors."""
    query, cut = search_text(request.args.get("q"))
    statement = team_select(Suppression)
    if query:
        pattern = contains_pattern(query)
        statement = statement.where(or_(Suppression.phone.ilike(pattern, escape="\\"),
                                        Suppression.note.ilike(pattern, escape="\\")))
    results = db.paginate(statement.order_by(Suppression.id.desc()), per_page=PAGE_SIZE, error_out=False)
    table = {"results": results, "query": query, "query_cut": cut, "max_chars": SEARCH_MAX_CHARS}
    if htmx_target() == "optouts-table":
        return render_template("optouts/_table.html", **table), status
    imports = db.session.scalars(team_select(OptOutImport).order_by(OptOutImport.id.desc())
                                 .limit(RECENT_IMPORTS)).all()
    return render_template("optouts/index.html", add_form=add_form or OptOutForm(formdata=None),
                           upload_form=upload_form or OptOutUploadForm(formdata=None), imports=imports,
                           max_mb=_max_mb(), **table), status


def _max_mb() -> int:
    return current_app.config["IMPORT_MAX_BYTES"] // (1024 * 1024)


@bp.post("/")
@login_required
def add():
    """Add one number by hand; a number that isn't one is shown beside the field with the reason."""
    form = OptOutForm()
    if not form.validate_on_submit():
        return _page(add_form=form, status=400)
    try:
        number, added = optouts.opt_out_number(current_user.team_id, form.phone.data,
                                               current_user.team.default_country, form.note.data)
    except Rejection as rejection:
        form.phone.errors.append(f"Not added: {rejection.message}.")
        return _page(add_form=form, status=400)
    if added:
        flash(f"{number.e164} will not receive messages.", "success")
    else:
        flash(f"{number.e164} had already opted out.", "info")
    return redirect(url_for("optouts.index"))


@bp.post("/upload")
@login_required
def upload():
    """Store a CSV of numbers and queue the job that adds them; the import's page shows its progress."""
    form = OptOutUploadForm()
    if not form.validate_on_submit():
        return _page(upload_form=form, status=400)
    try:
        optout_import = optouts.store_optout_file(form.file.data, current_user.team_id, current_user.id,
                                                  current_user.team.default_country)
    except optouts.OptOutFileProblem as problem:
        form.file.errors.append(str(problem))
        return _page(upload_form=form, status=400)
    return redirect(url_for("optouts.show_import", optout_import_id=optout_import.id))


@bp.errorhandler(413)
def too_large(_error):
    """The request is over MAX_CONTENT_LENGTH: refused before any of it is stored."""
    form = OptOutUploadForm(formdata=None)
    form.file.errors = [f"The file is larger than the {_max_mb()} MB limit."]
    return _page(upload_form=form, status=413)


@bp.errorhandler(DiskFull)
def disk_full(_error):
    """No room for the file: nothing was kept, and the form says so (507 Insufficient Storage)."""
    form = OptOutUploadForm(formdata=None)
    form.file.errors = [optouts.NOTHING_ADDED]
    return _page(upload_form=form, status=507)


@bp.get("/imports/<int:optout_import_id>")
@login_required
def show_import(optout_import_id: int):
    """One uploaded file's progress, then its counts and first rejected rows."""
    optout_import = team_get_or_404(OptOutImport, optout_import_id)
    return render_template("optouts/import.html", imp=optout_import)


@bp.get("/imports/<int:optout_import_id>/progress")
@login_required
def import_progress(optout_import_id: int):
    """The progress fragment that htmx polls; it stops polling once the import is final."""
    optout_import = team_get_or_404(OptOutImport, optout_import_id)
    return render_template("optouts/_import_progress.html", imp=optout_import)


@bp.post("/imports/<int:optout_import_id>/cancel")
@login_required
def cancel_import(optout_import_id: int):
    """Stop a queued or running import after its current batch; the numbers added so far stay."""
    optout_import = team_get_or_404(OptOutImport, optout_import_id)
    if optouts.cancel_optout_import(optout_import):
        flash("The import is stopped; numbers added so far stay on the list and are counted.", "info")
    return redirect(url_for("optouts.show_import", optout_import_id=optout_import_id))


@bp.post("/<int:suppression_id>/delete")
@login_required
def remove(suppression_id: int):
    """Take a number off the list (only with the person's renewed consent)."""
    row = team_get_or_404(Suppression, suppression_id)
    db.session.delete(row)
    db.session.commit()
    flash(f"{row.phone} can receive messages again.", "success")
    return redirect(url_for("optouts.index"))
