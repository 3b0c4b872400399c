"""Importing contacts: upload, confirm the mapping, watch the progress, download the rejects."""

import json
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import ContactImport, ContactList, ImportIssue, ImportStatus, IssueKind, utcnow
from webapp.services import imports as importer
from webapp.services.csvfiles import DELIMITERS, field_names, stream_csv
from webapp.services.disk import NOTHING_IMPORTED, DiskFull
from webapp.web.access import team_get_or_404, team_select
from webapp.web.forms import DELIMITER_CHOICES, ContactUploadForm, DelimiterForm, MappingForm

bp = Blueprint("imports", __name__, url_prefix="/imports")

FIRST_ISSUES = 20  # the rows not imported that the summary lists, of each kind


@bp.get("/")
@login_required
def index():
    """The team's imports, newest first."""
    imports = db.session.scalars(team_select(ContactImport).order_by(ContactImport.id.desc()).limit(100)).all()
    return render_template("imports/index.html", imports=imports)


@bp.get("/new")
@login_required
def new():
    """The upload form."""
    return render_template("imports/new.html", max_mb=_max_mb())


def _max_mb() -> int:
    return current_app.config["IMPORT_MAX_BYTES"] // (1024 * 1024)


@bp.post("/")
@login_required
def upload():
    """Store the file and go to the mapping step; a file we can't read is refused with the reason."""
    form = ContactUploadForm()
    if not form.validate_on_submit():
        error = next(error for field in form for error in field.errors)
        return render_template("imports/new.html", max_mb=_max_mb(), error=error), 400
    try:
        contact_import = importer.store_upload(
            form.file.data, current_user.team_id, current_user.id, current_user.team.default_country
        )
    except importer.UploadProblem as problem:
        return render_template("imports/new.html", max_mb=_max_mb(), error=str(problem)), 400
    return redirect(url_for("imports.show", import_id=contact_import.id))


@bp.errorhandler(413)
def too_large(_error):
    """The request is over MAX_CONTENT_LENGTH: refused before any of it is stored."""
    message = f"The file is larger than the {_max_mb()} MB limit."
    return render_template("imports/new.html", max_mb=_max_mb(), error=message), 413


@bp.errorhandler(DiskFull)
def disk_full(_error):
    """No room for the upload: nothing was kept, and the form says so (507 Insufficient Storage)."""
    return render_template("imports/new.html", max_mb=_max_mb(), error=NOTHING_IMPORTED), 507


@bp.get("/<int:import_id>")
@login_required
def show(import_id: int):
    """The mapping step before the import starts; progress and summary after."""
    contact_import = team_get_or_404(ContactImport, import_id)
    if contact_import.status == ImportStatus.UPLOADED:
        return _mapping_page(contact_import, _mapping_form(contact_import, submitted=False))
    return render_template("imports/show.html", **_progress_context(contact_import))


def _mapping_form(contact_import: ContactImport, submitted: bool = True) -> MappingForm:
    """The mapping form for this file and team: what was posted, or the guesses for a first view."""
    defaults = {
        "phone_column": contact_import.phone_column,
        "field_columns": [i for i in range(len(contact_import.headers)) if i != contact_import.phone_column],
        "list_id": "new",
        "new_list_name": contact_import.filename.rsplit(".", 1)[0][:200],
        "default_country": contact_import.default_country,
    }
    lists = db.session.execute(
        team_select(ContactList).with_only_columns(ContactList.id, ContactList.name).order_by(ContactList.name)
    ).all()
    form = MappingForm(data=defaults) if submitted else MappingForm(formdata=None, data=defaults)
    return form.with_choices(importer.column_labels(contact_import), lists)


def _mapping_page(contact_import: ContactImport, form: MappingForm, errors: list[str] | None = None,
                  status: int = 200):
    """The preview and the mapping form; every part bounded by the column cap and the cell cut."""
    errors = list(dict.fromkeys([*(e for field in form for e in field.errors), *(errors or [])]))
    try:
        rows = importer.preview(contact_import)
    except importer.UploadProblem as problem:
        rows, errors, status = [], [*errors, str(problem)], 400
    delimiter_form = DelimiterForm(formdata=None, data={"delimiter": contact_import.delimiter})
    return render_template(
        "imports/mapping.html", imp=contact_import, rows=rows, form=form, delimiter_form=delimiter_form,
        columns=importer.column_labels(contact_import), fields=field_names(contact_import.headers),
        delimiters=dict((choice.value, choice.label) for choice in DELIMITER_CHOICES), errors=errors,
    ), status


@bp.post("/<int:import_id>/delimiter")
@login_required
def delimiter(import_id: int):
    """Re-read the file with the delimiter the user picked."""
    contact_import = _uploaded(import_id)
    form = DelimiterForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        importer.change_delimiter(contact_import, form.delimiter.data)
    except importer.UploadProblem as problem:
        db.session.refresh(contact_import)
        return _mapping_page(contact_import, _mapping_form(contact_import, submitted=False), [str(problem)], 400)
    return redirect(url_for("imports.show", import_id=import_id))


@bp.post("/<int:import_id>/start")
@login_required
def start(import_id: int):
    """Confirm the mapping and queue the import."""
    contact_import = team_get_or_404(ContactImport, import_id)
    if contact_import.status != ImportStatus.UPLOADED:  # a second click: show what the first one started
        return redirect(url_for("imports.show", import_id=import_id))
    form = _mapping_form(contact_import)
    if not form.validate_on_submit():
        return _mapping_page(contact_import, form, status=400)
    mapping = importer.Mapping(form.phone_column.data, form.field_columns.data, form.existing_list_id,
                               form.new_list_name.data, form.default_country.data)
    try:
        importer.start_import(contact_import, mapping)
    except importer.UploadProblem as problem:
        if contact_import.status != ImportStatus.UPLOADED:
            return redirect(url_for("imports.show", import_id=import_id))
        return _mapping_page(contact_import, form, [str(problem)], 409)
    return redirect(url_for("imports.show", import_id=import_id))


@bp.post("/<int:import_id>/discard")
@login_required
def discard(import_id: int):
    """Leave the mapping step without importing: the uploaded file is deleted now."""
    contact_import = team_get_or_404(ContactImport, import_id)
    if importer.discard_upload(contact_import):
        flash(f"{contact_import.filename} was discarded and deleted from the server; nothing was imported.", "info")
    return redirect(url_for("imports.index"))


def _uploaded(import_id: int) -> ContactImport:
    contact_import = team_get_or_404(ContactImport, import_id)
    if contact_import.status != ImportStatus.UPLOADED:
        abort(409)
    return contact_import


@bp.get("/<int:import_id>/progress")
@login_required
def progress(import_id: int):
    """The progress fragment that htmx polls; it stops polling once the import is final."""
    contact_import = team_get_or_404(ContactImport, import_id)
    return render_template("imports/_progress.html", **_progress_context(contact_import))


def _progress_context(contact_import: ContactImport) -> dict:
    """What the progress fragment shows: counters, rate, and once final the first rows not imported,
    rejected ones apart from duplicates (twenty duplicates must not hide four real rejections)."""
    issues = {kind: [] for kind in IssueKind}
    if contact_import.status.is_final:
        for kind in IssueKind:
            issues[kind] = db.session.scalars(
                select(ImportIssue).where(ImportIssue.import_id == contact_import.id, ImportIssue.kind == kind)
                .order_by(ImportIssue.line).limit(FIRST_ISSUES)
            ).all()
    return {"imp": contact_import, "progress": _progress(contact_import),
            "rejected": issues[IssueKind.REJECTED], "duplicates": issues[IssueKind.DUPLICATE]}


def _progress(contact_import: ContactImport) -> dict:
    """Rows done of total, rows per second and time left, from the stored counters."""
    done, total = contact_import.rows_done, contact_import.total_rows
    end = contact_import.finished_at or utcnow()
    elapsed = (end - contact_import.started_at).total_seconds() if contact_import.started_at else 0.0
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate and total and not contact_import.status.is_final else None
    percent = 100 if contact_import.status == ImportStatus.DONE else (100 * done // total if total else 0)
    return {"done": done, "total": total, "rate": rate, "seconds_left": left, "percent": min(percent, 100),
            "elapsed": elapsed}


@bp.post("/<int:import_id>/cancel")
@login_required
def cancel(import_id: int):
    """Stop a queued or running import after its current batch."""
    contact_import = team_get_or_404(ContactImport, import_id)
    if importer.cancel_import(contact_import):
        flash("The import is cancelled; rows committed so far are kept and counted.", "info")
    return redirect(url_for("imports.show", import_id=import_id))


@bp.post("/<int:import_id>/remove-contacts")
@login_required
def remove_contacts(import_id: int):
    """Take out the contacts this import added."""
    contact_import = team_get_or_404(ContactImport, import_id)
    if not contact_import.status.is_final:
        flash("Stop the import first.", "error")
        return redirect(url_for("imports.show", import_id=import_id))
    removed = importer.remove_imported_contacts(contact_import)
    flash(f"Removed {removed} contacts added by this import.", "success")
    return redirect(url_for("imports.show", import_id=import_id))


@bp.get("/<int:import_id>/rejects.csv")
@login_required
def rejects(import_id: int):
    """Every rejected and duplicate row with its line, kind and reason, beside the original columns."""
    contact_import = team_get_or_404(ContactImport, import_id)
    headers = contact_import.headers

    def rows():
        # Queried here: a streamed response runs after the view's database session has closed.
        issues = db.session.scalars(
            select(ImportIssue).where(ImportIssue.import_id == import_id).order_by(ImportIssue.line)
            .execution_options(yield_per=2000)
        )
        yield ["line", "kind", "reason_code", "reason", *headers]
        for issue in issues:
            yield [issue.line, issue.kind, issue.reason_code, issue.reason, *json.loads(issue.raw or "[]")]

    name = f"rejects-{contact_import.id}-{datetime.now():%Y%m%d}.csv"
    separator = contact_import.delimiter if contact_import.delimiter in DELIMITERS else ","  # as the upload
    return Response(stream_with_context(stream_csv(rows(), separator)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
