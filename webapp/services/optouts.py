"""Opt-outs: the team's suppression list, kept by hand, by CSV and by inbound STOP messages.

A suppressed number is never sent to, whatever list it is in; the campaign engine checks
is_suppressed() again at send time.

A CSV of opted-out numbers (hundreds of thousands of rows) is read by a job, never inside a web
request: store_optout_file() saves it and queues jobs.optouts.import_optouts; run_optout_import()
streams it, and each batch of BATCH_SIZE rows commits its numbers together with the import's
counters, so the page's counts always match what is stored, and a second run carries on from the
last committed row. The stored file is deleted at every end state.
"""

import itertools
import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from redis.exceptions import RedisError
from rq import Callback
from sqlalchemy import String, any_, bindparam, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp.extensions import db
from webapp.models import (
    ImportStatus,
    InboundAction,
    InboundMessage,
    OptOutImport,
    Suppression,
    SuppressionSource,
    utcnow,
)
from webapp.provider.delivery_reports import parse_callback
from webapp.queues import get_queue
from webapp.services.csvfiles import (
    CsvProblem,
    count_records,
    guess_phone_column,
    iter_records,
    read_preview,
    sniff_format,
)
from webapp.services.disk import IMPORT_STOPPED, chunks_up_to, is_no_room, write_new_file
from webapp.services.phones import PhoneNumber, Rejection, normalize

BATCH_SIZE = 5000
FIRST_REJECTS = 20  # rejected rows kept with line and reason for the page
ACTIVE = (ImportStatus.QUEUED, ImportStatus.RUNNING)
JOB_TIMEOUT = 6 * 3600
STALE_AFTER = timedelta(seconds=60)  # a running import's heartbeat is at most one batch old

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
_SENDER_KEYS = ("from", "sender", "msisdn", "originator", "source", "src", "mobile", "phone")
_TEXT_KEYS = ("text", "message", "body", "msg", "content", "sms")


def keyword_action(text: str | None) -> InboundAction:
    """'opt_out', 'opt_in' or 'none': the first word decides, case and punctuation ignored ('Stop.' opts out)."""
    words = (text or "").strip().split()
    word = "".join(ch for ch in words[0] if ch.isalnum()).upper() if words else ""
    if word in OPT_OUT_WORDS:
        return InboundAction.OPT_OUT
    if word in OPT_IN_WORDS:
        return InboundAction.OPT_IN
    return InboundAction.NONE


def is_suppressed(team_id: int, phone: str) -> bool:
    """True when the number opted out of this team's messages (checked again at send time)."""
    return db.session.scalar(
        select(Suppression.id).where(Suppression.team_id == team_id, Suppression.phone == phone)
    ) is not None


def suppress(team_id: int, phone: str, source: SuppressionSource, note: str = "") -> bool:
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


def record_inbound(team, body: bytes, content_type: str | None, query_string: str) -> InboundMessage:
    """Keep an inbound SMS raw; STOP and its synonyms opt the sender out, START and UNSTOP opt back in."""
    fields = parse_callback(body, content_type, query_string).fields
    sender = next((fields[key] for key in _SENDER_KEYS if fields.get(key)), None)
    text = next((fields[key] for key in _TEXT_KEYS if fields.get(key) is not None), None)
    text = text and _storable(text)
    action = keyword_action(text)
    message = InboundMessage(team_id=team.id, content_type=_storable(content_type or "")[:200],
                             body=_storable(body.decode("utf-8", "replace") or query_string),
                             sender=_storable(sender or "")[:40] or None, text=text, action=action)
    db.session.add(message)
    if action == InboundAction.NONE or not sender:
        return message
    try:
        phone = normalize(sender, team.default_country).e164
    except Rejection:
        message.action = InboundAction.BAD_SENDER
        return message
    if action == InboundAction.OPT_OUT:
        suppress(team.id, phone, SuppressionSource.INBOUND, f"replied {text.strip()[:80]!r}")
    else:
        # START undoes only an opt-out that came by text message; one recorded by hand or from a
        # file stays until a person removes it.
        db.session.execute(delete(Suppression).where(Suppression.team_id == team.id, Suppression.phone == phone,
                                                     Suppression.source == SuppressionSource.INBOUND))
    return message


def _storable(value: str) -> str:
    """Text a column can hold: no NUL, and no lone surrogate (a JSON body can spell one as \\ud800)."""
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "") if "\x00" in value else value


def opt_out_number(team_id: int, raw: str, country: str, note: str = "") -> tuple[PhoneNumber, bool]:
    """Put one typed number on the list (read as `country` without +): the number, and False when it was there.

    Raises Rejection, with the reason, for anything that is not a valid number.
    """
    number = normalize(raw, country)
    added = suppress(team_id, number.e164, SuppressionSource.MANUAL, note)
    db.session.commit()
    return number, added


# Files of numbers ------------------------------------------------------------------------------


class OptOutFileProblem(ValueError):
    """The file can't be queued; the message is for the page."""


NOTHING_ADDED = "The server's disk is full; no number was added."


def upload_path(optout_import: OptOutImport) -> Path:
    return Path(current_app.config["UPLOAD_FOLDER"]) / optout_import.stored_name


def store_optout_file(upload: FileStorage, team_id: int, user_id: int | None, country: str) -> OptOutImport:
    """Save the file (owner-readable only, at most IMPORT_MAX_BYTES) and queue its import; nothing is read yet.

    Raises OptOutFileProblem, and keeps nothing, when the file is missing, empty, too large or the queue is down.
    """
    if not upload or not upload.filename:
        raise OptOutFileProblem("Choose a CSV file of numbers.")
    limit = current_app.config["IMPORT_MAX_BYTES"]
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stored_name = f"optouts-{secrets.token_hex(16)}.csv"
    path = folder / stored_name
    too_large = OptOutFileProblem(f"The file is larger than the {limit // (1024 * 1024)} MB limit.")
    size = write_new_file(path, chunks_up_to(upload.stream, limit, too_large), NOTHING_ADDED)
    try:
        if size == 0:
            raise OptOutFileProblem("The file is empty.")
        optout_import = OptOutImport(team_id=team_id, created_by_id=user_id, stored_name=stored_name,
                                     filename=Path(upload.filename).name[:255] or "opt-outs.csv", size_bytes=size,
                                     default_country=country, job_id=str(uuid.uuid4()))
        db.session.add(optout_import)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        path.unlink(missing_ok=True)
        raise
    try:
        get_queue("imports").enqueue("jobs.optouts.import_optouts", optout_import.id, job_id=optout_import.job_id,
                                     job_timeout=JOB_TIMEOUT, on_failure=Callback("jobs.optouts.import_stopped"))
    except RedisError as error:
        path.unlink(missing_ok=True)
        db.session.delete(optout_import)
        db.session.commit()
        raise OptOutFileProblem("The job queue can't be reached right now; try again in a minute.") from error
    return optout_import


def cancel_optout_import(optout_import: OptOutImport) -> bool:
    """Stop a queued or running import: batches committed so far stay, counted; the file goes at once.

    On PostgreSQL this waits for a batch being committed (it holds the import's row), so no batch lands after.
    """
    stopped = db.session.execute(
        update(OptOutImport).where(OptOutImport.id == optout_import.id, OptOutImport.status.in_(ACTIVE))
        .values(status=ImportStatus.CANCELLED, finished_at=utcnow())
    ).rowcount
    db.session.commit()
    if stopped:
        upload_path(optout_import).unlink(missing_ok=True)
    return bool(stopped)


def mark_stopped(import_id: int, message: str) -> None:
    """The worker died or timed out (RQ's failure callback): say so instead of 'running' for ever."""
    _fail(import_id, message)


def fail_stalled_imports(now: datetime | None = None) -> int:
    """Mark failed every running import whose heartbeat stopped (a worker killed with SIGKILL never calls back).

    For the periodic sweeps; returns how many were marked.
    """
    cutoff = (now or utcnow()) - STALE_AFTER
    stalled = db.session.scalars(select(OptOutImport.id).where(
        OptOutImport.status == ImportStatus.RUNNING, OptOutImport.heartbeat_at < cutoff)).all()
    for import_id in stalled:
        _fail(import_id, "The worker stopped during the import. Numbers committed before are kept and counted.",
              stale_before=cutoff)
    return len(stalled)


def run_optout_import(import_id: int, job_id: str | None = None) -> None:
    """The job's body: add every number of the file, or record why not. Safe to run twice.

    A RUNNING import is carried on (from its last committed batch) only by its own job or by a direct call.
    """
    optout_import = db.session.get(OptOutImport, import_id)
    if optout_import is None:
        return
    if optout_import.status.is_final:
        upload_path(optout_import).unlink(missing_ok=True)
        return
    if optout_import.status == ImportStatus.RUNNING:
        if job_id is not None and job_id != optout_import.job_id:
            return
    else:
        claimed = db.session.execute(
            update(OptOutImport).where(OptOutImport.id == import_id, OptOutImport.status == ImportStatus.QUEUED)
            .values(status=ImportStatus.RUNNING, started_at=utcnow(), heartbeat_at=utcnow())
        ).rowcount
        db.session.commit()
        if not claimed:
            return
        db.session.refresh(optout_import)
    try:
        _OptOutReader(optout_import).run()
    except CsvProblem as problem:
        _fail(import_id, f"The file could not be read: {problem.message}")
    except Exception as error:
        cause = IMPORT_STOPPED if is_no_room(error) else f"The import stopped unexpectedly ({type(error).__name__})."
        if _fail(import_id, f"{cause} Numbers committed before the failure are kept and counted."):
            raise
        # else it was cancelled meanwhile, and its file went with it: nothing failed
    finally:
        _discard_file_when_final(import_id)


def _fail(import_id: int, message: str, stale_before: datetime | None = None) -> bool:
    """Mark a queued or running import failed (a cancelled one stays cancelled); False when it wasn't active."""
    db.session.rollback()
    statement = update(OptOutImport).where(OptOutImport.id == import_id, OptOutImport.status.in_(ACTIVE))
    if stale_before is not None:
        statement = statement.where(OptOutImport.heartbeat_at < stale_before)
    failed = db.session.execute(statement.values(status=ImportStatus.FAILED, error=message,
                                                 finished_at=utcnow())).rowcount
    db.session.commit()
    _discard_file_when_final(import_id)
    return bool(failed)


def _discard_file_when_final(import_id: int) -> None:
    """The file holds personal data: keep it only while the import may still need it."""
    optout_import = db.session.get(OptOutImport, import_id)
    if optout_import is not None:
        db.session.refresh(optout_import)
        if optout_import.status.is_final:
            upload_path(optout_import).unlink(missing_ok=True)


class _OptOutReader:
    """One streamed pass over the file: normalize each row, dedupe each batch against the list with one query."""

    def __init__(self, optout_import: OptOutImport):
        self.import_id = optout_import.id
        self.team_id = optout_import.team_id
        self.country = optout_import.default_country
        self.path = upload_path(optout_import)
        self.resume_after = optout_import.rows_done  # rows a previous run of this import committed
        self.counts = {"rows_done": optout_import.rows_done, "added": optout_import.added,
                       "already": optout_import.already, "rejected": optout_import.rejected}
        self.first_rejects = list(optout_import.first_rejects or [])
        self.batch: dict[str, None] = {}  # the batch's new numbers, in file order
        self.postgres = db.session.get_bind().dialect.name == "postgresql"

    def run(self) -> None:
        fmt = sniff_format(self.path)
        headers, _ = read_preview(self.path, fmt, rows=0)
        column = guess_phone_column(headers)
        records = iter_records(self.path, fmt)
        header_is_data = column is None and self._is_number(headers[0] if headers else "")
        if header_is_data:  # a bare column of numbers: its first line is a number too
            records = itertools.chain([(1, headers)], records)
        column = column or 0
        db.session.execute(update(OptOutImport).where(OptOutImport.id == self.import_id).values(
            total_rows=count_records(self.path, fmt) + header_is_data, heartbeat_at=utcnow()))
        db.session.commit()
        for line, record in itertools.islice(records, self.resume_after, None):
            self._row(line, record[column] if column < len(record) else "")
            if self.counts["rows_done"] % BATCH_SIZE == 0 and not self._commit():
                return  # cancelled
        self._commit(final=True)

    def _is_number(self, raw: str) -> bool:
        try:
            normalize(raw, self.country)
        except Rejection:
            return False
        return True

    def _row(self, line: int, raw: str) -> None:
        self.counts["rows_done"] += 1
        try:
            phone = normalize(raw, self.country).e164
        except Rejection as rejection:
            self.counts["rejected"] += 1
            if len(self.first_rejects) < FIRST_REJECTS:
                self.first_rejects.append([line, raw[:100], rejection.message])
            return
        if phone in self.batch:
            self.counts["already"] += 1
        else:
            self.batch[phone] = None

    def _on_the_list(self, phones: list[str]) -> set[str]:
        """Which of the batch's numbers the team's list holds already: one query, never the whole list."""
        # PostgreSQL gets one array parameter: psycopg parses a statement of 5,000 parameters slowly.
        among = (Suppression.phone == any_(bindparam("phones", phones, type_=ARRAY(String))) if self.postgres
                 else Suppression.phone.in_(phones))
        return set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == self.team_id, among)))

    def _insert(self, phones: list[str]) -> int:
        """Add these numbers, skipping any that a STOP text or another file added meanwhile: how many went in."""
        columns = ["team_id", "phone", "source", "note", "created_at"]
        now = utcnow()
        if self.postgres:
            numbers = (func.unnest(bindparam("phones", phones, type_=ARRAY(String))).table_valued("phone")
                       .render_derived())
            rows = select(literal(self.team_id), numbers.c.phone, literal(SuppressionSource.CSV.value), literal(""),
                          literal(now))
            statement = postgresql.insert(Suppression).from_select(columns, rows)
            parameters = None
        else:
            statement = sqlite.insert(Suppression)
            parameters = [dict(zip(columns, (self.team_id, phone, SuppressionSource.CSV, "", now), strict=True))
                          for phone in phones]
        statement = statement.on_conflict_do_nothing(index_elements=["team_id", "phone"]).returning(Suppression.id)
        return len(db.session.execute(statement, parameters).all())

    def _commit(self, final: bool = False) -> bool:
        """Add the batch's numbers that are not on the list yet, with the counters; False once cancelled."""
        phones = list(self.batch)
        self.batch = {}
        known = self._on_the_list(phones) if phones else set()
        new = [phone for phone in phones if phone not in known]
        added = self._insert(new) if new else 0
        self.counts["added"] += added
        self.counts["already"] += len(phones) - added
        values = dict(self.counts, first_rejects=self.first_rejects, heartbeat_at=utcnow())
        if final:
            values.update(status=ImportStatus.DONE, finished_at=utcnow())
        still_running = db.session.execute(
            update(OptOutImport).where(OptOutImport.id == self.import_id, OptOutImport.status == ImportStatus.RUNNING)
            .values(**values)
        ).rowcount
        if not still_running:
            db.session.rollback()
            return False
        db.session.commit()
        return True
