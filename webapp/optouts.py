"""Opt-outs: the team's suppression list, kept by hand, by CSV and by inbound STOP messages.

A suppressed number is never sent to, whatever list it is in; the campaign engine checks
is_suppressed() again at send time.
"""

import tempfile

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from webapp.access import team_get_or_404, team_select
from webapp.contacts import contains_pattern
from webapp.csvfiles import CsvProblem, guess_phone_column, iter_records, read_preview, sniff_format
from webapp.extensions import db
from webapp.models import InboundMessage, Suppression
from webapp.phones import Rejection, normalize
from webapp.status_callbacks import parse_callback

bp = Blueprint("optouts", __name__, url_prefix="/opt-outs")

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
PAGE_SIZE = 50
MAX_OPT_OUT_FILE_BYTES = 5 * 10**6
_SENDER_KEYS = ("from", "sender", "msisdn", "originator", "source", "src", "mobile", "phone")
_TEXT_KEYS = ("text", "message", "body", "msg", "content", "sms")


def keyword_action(text: str | None) -> str:
    """'opt_out', 'opt_in' or 'none': the first word decides, case and punctuation ignored ('Stop.' opts out)."""
    words = (text or "").strip().split()
    word = "".join(ch for ch in words[0] if ch.isalnum()).upper() if words else ""
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    return "none"


def is_suppressed(team_id: int, phone: str) -> bool:
    """True when the number opted out of this team's messages (checked again at send time)."""
    return db.session.scalar(
        select(Suppression.id).where(Suppression.team_id == team_id, Suppression.phone == phone)
    ) is not None


def suppress(team_id: int, phone: str, source: str, note: str = "") -> bool:
    """Add a number to the suppression list; False when it was already there.

    A savepoint absorbs the race of two STOPs for the same number arriving at once (providers retry).
    """
    if is_suppressed(team_id, phone):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(Suppression(team_id=team_id, phone=phone, source=source, note=note[:500]))
    except IntegrityError:
        return False
    return True


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
    if suppress(current_user.team_id, number.e164, "manual", request.form.get("note", "")):
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
            added, already, rejected = _suppress_file(temp.name)
        except CsvProblem as problem:
            flash(f"The file could not be read: {problem.message}", "error")
            return redirect(url_for("optouts.index"))
    db.session.commit()
    flash(f"{added} numbers added, {already} already opted out, {rejected} rows not a valid number.",
          "success" if not rejected else "warning")
    return redirect(url_for("optouts.index"))


def _suppress_file(path: str) -> tuple[int, int, int]:
    fmt = sniff_format(path)
    headers, _ = read_preview(path, fmt, rows=0)
    column = guess_phone_column(headers)
    records = iter_records(path, fmt)
    if column is None:  # no header we recognise: treat the first line as data too
        column = 0
        records = _with_first(headers, records)
    team_id, country = current_user.team_id, current_user.team.default_country
    known = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == team_id)))
    added = already = rejected = 0
    for _, record in records:
        try:
            phone = normalize(record[column] if column < len(record) else "", country).e164
        except Rejection:
            rejected += 1
            continue
        if phone in known:
            already += 1
            continue
        known.add(phone)
        db.session.add(Suppression(team_id=team_id, phone=phone, source="csv"))
        added += 1
    return added, already, rejected


def _with_first(first: list[str], records):
    yield 1, first
    yield from records


@bp.post("/<int:suppression_id>/delete")
@login_required
def remove(suppression_id: int):
    """Take a number off the list (only with the person's renewed consent)."""
    row = team_get_or_404(Suppression, suppression_id)
    db.session.delete(row)
    db.session.commit()
    flash(f"{row.phone} can receive messages again.", "success")
    return redirect(url_for("optouts.index"))


def record_inbound(team, body: bytes, content_type: str | None, query_string: str) -> InboundMessage:
    """Keep an inbound SMS raw; STOP and its synonyms opt the sender out, START and UNSTOP opt back in."""
    fields = parse_callback(body, content_type, query_string).fields
    sender = next((fields[key] for key in _SENDER_KEYS if fields.get(key)), None)
    text = next((fields[key] for key in _TEXT_KEYS if fields.get(key) is not None), None)
    action = keyword_action(text)
    message = InboundMessage(team_id=team.id, content_type=(content_type or "")[:200],
                             body=(body.decode("utf-8", "replace") or query_string).replace("\x00", ""),
                             sender=(sender or "").replace("\x00", "")[:40] or None,
                             text=text and text.replace("\x00", ""), action=action)
    db.session.add(message)
    if action == "none" or not sender:
        return message
    try:
        phone = normalize(sender, team.default_country).e164
    except Rejection:
        message.action = "bad_sender"
        return message
    if action == "opt_out":
        suppress(team.id, phone, "inbound", f"replied {text.strip()[:80]!r}")
    else:
        # START undoes only an opt-out that came by text message; one recorded by hand or from a
        # file stays until a person removes it.
        db.session.execute(delete(Suppression).where(Suppression.team_id == team.id, Suppression.phone == phone,
                                                     Suppression.source == "inbound"))
    return message
