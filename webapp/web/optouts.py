"""Opt-outs page: the team's suppression list, by hand and by CSV (the rules are in services.optouts)."""

import tempfile

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.extensions import db
from webapp.models import Suppression, SuppressionSource
from webapp.services.contacts import contains_pattern
from webapp.services.csvfiles import CsvProblem
from webapp.services.optouts import suppress, suppress_file
from webapp.services.phones import Rejection, normalize
from webapp.web.access import team_get_or_404, team_select

bp = Blueprint("optouts", __name__, url_prefix="/opt-outs")

PAGE_SIZE = 50
MAX_OPT_OUT_FILE_BYTES = 5 * 10**6


@bp.get("/")
@login_required
def index():
    """The suppression list, searchable, 50 to a page."""
    query = request.args.get("q", "").strip()
    statement = team_select(Suppression)
    if query:
        pattern = contains_pattern(query)
        statement = statement.where(Suppression.phone.ilike(pattern, escape="\\")
                                    | Suppression.note.ilike(pattern, escape="\\"))
    results = db.paginate(statement.order_by(Suppression.id.desc()), per_page=PAGE_SIZE, error_out=False)
    return render_template("optouts/index.html", results=results, query=query)


@bp.post("/")
@login_required
def add():
    """Add one number by hand."""
    try:
        number = normalize(request.form.get("phone", ""), current_user.team.default_country)
    except Rejection as rejection:
        flash(f"Not added: {rejection.message}.", "error")
        return redirect(url_for("optouts.index"))
    if suppress(current_user.team_id, number.e164, SuppressionSource.MANUAL, request.form.get("note", "")):
        db.session.commit()
        flash(f"{number.e164} will not receive messages.", "success")
    else:
        flash(f"{number.e164} had already opted out.", "info")
    return redirect(url_for("optouts.index"))


@bp.post("/upload")
@login_required
def upload():
    """Add every number of a CSV file (its phone column, else its first column); report what happened."""
    file = request.files.get("file")
    if not file or not file.filename:
        flash("Choose a CSV file of numbers.", "error")
        return redirect(url_for("optouts.index"))
    if (request.content_length or 0) > MAX_OPT_OUT_FILE_BYTES:
        flash(f"Opt-out files are read while you wait, so they are limited to {MAX_OPT_OUT_FILE_BYTES // 10**6} MB "
              "(about 200,000 numbers); split larger files.", "error")
        return redirect(url_for("optouts.index"))
    with tempfile.NamedTemporaryFile(suffix=".csv") as temp:
        file.save(temp)
        temp.flush()
        try:
            added, already, rejected = suppress_file(temp.name, current_user.team_id, current_user.team.default_country)
        except CsvProblem as problem:
            flash(f"The file could not be read: {problem.message}", "error")
            return redirect(url_for("optouts.index"))
    db.session.commit()
    flash(f"{added} numbers added, {already} already opted out, {rejected} rows not a valid number.",
          "success" if not rejected else "warning")
    return redirect(url_for("optouts.index"))


@bp.post("/<int:suppression_id>/delete")
@login_required
def remove(suppression_id: int):
    """Take a number off the list (only with the person's renewed consent)."""
    row = team_get_or_404(Suppression, suppression_id)
    db.session.delete(row)
    db.session.commit()
    flash(f"{row.phone} can receive messages again.", "success")
    return redirect(url_for("optouts.index"))
