"""Contact import: store the upload, then stream it into a list with every row accounted for.

accepted + duplicates + rejected = data rows, always. Each batch of BATCH_SIZE rows commits its
contacts, its rejected and duplicate rows, and the import's counters in one transaction, so the
numbers on the page always match what is stored. If an import fails mid-way, it is marked failed
with the reason; the batches committed before the failure stay, counted, and "Remove these
contacts" takes them out again. A re-run of the job after a crashed worker starts over from the
first row, deleting the rows the crashed run had committed.

Duplicates: the first row with a number wins; later rows with the same number, and rows whose
number is already in the target list, are counted and listed as duplicates.

The uploaded file is personal data: it is readable by the owner only, and deleted at every end
state (done, failed, cancelled, discarded, a dead worker found by sweep_dead_imports, a mapping
step left for a day found by sweep_abandoned_uploads).
"""

import contextlib
import gc
import json
import queue
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path

from flask import current_app
from redis.exceptions import RedisError
from rq import Callback
from rq.job import Job, JobStatus
from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp.extensions import db
from webapp.models import Contact, ContactImport, ContactList, ImportIssue, ImportStatus, IssueKind, Suppression, utcnow
from webapp.queues import get_queue, redis_connection
from webapp.services.csvfiles import (
    CsvProblem,
    FileFormat,
    count_records,
    field_names,
    guess_phone_column,
    iter_records,
    read_preview,
)
from webapp.services.csvfiles import sniff_format as sniff
from webapp.services.disk import IMPORT_STOPPED, chunks_up_to, is_no_room, write_new_file
from webapp.services.phones import Rejection, normalize

BATCH_SIZE = 5000
PREVIEW_ROWS = 10
# What one import may be, and what the mapping page shows of it: a form with a field per column must
# never meet a million columns, and one 10 MB cell must not become a 10 MB page.
MAX_COLUMNS = 200
MAX_HEADER_CHARS = 100  # a column name is kept (and shown) up to this many characters
PREVIEW_CELL_CHARS = 200
MAX_RAW_CELL = 500  # a rejected row is kept for the report, each cell cut to this many characters
COUNTERS = ("rows_done", "accepted", "duplicates", "rejected", "landlines", "suppressed")
ACTIVE = (ImportStatus.QUEUED, ImportStatus.RUNNING)  # an import that may still write rows
# A running import's writer marks it alive at least this often; one silent for DEAD_AFTER is dead.
HEARTBEAT_SECONDS = 10
DEAD_AFTER = timedelta(seconds=60)
ABANDONED_AFTER = timedelta(hours=24)  # a mapping step nobody confirmed: its upload is deleted
_STORED_NAME = re.compile(r"[0-9a-f]{32}\.csv")  # how store_upload names files (opt-out uploads differ)
_OVER = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED)
_GONE = "gone"  # RQ no longer knows the job (Redis restarted empty, or the result expired)


class UploadProblem(ValueError):
    """The upload can't be imported; the message is for the page."""


def upload_path(contact_import: ContactImport) -> Path:
    return Path(current_app.config["UPLOAD_FOLDER"]) / contact_import.stored_name


def file_format(contact_import: ContactImport) -> FileFormat:
    return FileFormat(contact_import.encoding, contact_import.encoding_label, contact_import.encoding_detected,
                      contact_import.delimiter)


def _upload_folder() -> Path:
    """The uploads folder, readable by the owner only (it holds people's numbers)."""
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        with contextlib.suppress(PermissionError):  # a folder someone else owns is theirs to secure
            folder.chmod(0o700)
    return folder


def store_upload(upload: FileStorage, team_id: int, user_id: int, default_country: str) -> ContactImport:
    """Save the file in the instance folder, sniff it and read its header; raises UploadProblem, or DiskFull.

    Whatever stops it (a bad file, a full disk, a failed commit) leaves neither the file nor a row.
    """
    if not upload or not upload.filename:
        raise UploadProblem("Choose a CSV or TSV file to upload.")
    stored_name = secrets.token_hex(16) + ".csv"
    path = _upload_folder() / stored_name
    limit = current_app.config["IMPORT_MAX_BYTES"]
    too_large = UploadProblem(f"The file is larger than the {limit // (1024 * 1024)} MB limit.")
    size = write_new_file(path, chunks_up_to(upload.stream, limit, too_large))
    try:
        if size == 0:
            raise CsvProblem("The file is empty.")
        fmt = sniff(path)
        headers, rows = read_preview(path, fmt, rows=1)
        _check_width(headers)
        if not rows:
            raise CsvProblem("The file has a header row but no data rows.")
        contact_import = ContactImport(
            team_id=team_id, created_by_id=user_id, filename=Path(upload.filename).name[:255] or "upload.csv",
            stored_name=stored_name, size_bytes=size, default_country=default_country,
        )
        _apply_format(contact_import, fmt, headers)
        db.session.add(contact_import)
        db.session.commit()
    except CsvProblem as problem:
        path.unlink(missing_ok=True)
        raise UploadProblem(problem.message) from problem
    except BaseException:
        db.session.rollback()
        path.unlink(missing_ok=True)
        raise
    return contact_import


def _check_width(headers: list[str]) -> None:
    """Refuse a header wider than MAX_COLUMNS before anything renders a field per column."""
    if len(headers) > MAX_COLUMNS:
        raise CsvProblem(
            f"The file has {len(headers):,} columns; an import can have at most {MAX_COLUMNS}. Delete the "
            "columns you don't need, or check which character separates the columns."
        )


def change_delimiter(contact_import: ContactImport, delimiter: str) -> None:
    """Re-read the header with the delimiter the user chose instead of the sniffed one."""
    path = upload_path(contact_import)
    try:
        fmt = sniff(path, delimiter=delimiter)
        headers, _ = read_preview(path, fmt, rows=1)
        _check_width(headers)
    except CsvProblem as problem:
        raise UploadProblem(problem.message) from problem
    except FileNotFoundError as error:
        raise UploadProblem("The uploaded file is no longer on the server; upload it again.") from error
    _apply_format(contact_import, fmt, headers)
    db.session.commit()


# What ?separator= may ask of a download, by name (a tab can't be typed in an address).
SEPARATOR_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}


def export_separator(team_id: int, asked: str | None = None) -> str:
    """The separator for the team's downloads: the one asked for by name, else the one its latest
    confirmed upload used (a European Excel saves ";" and opens ";"), else a comma."""
    if asked in SEPARATOR_NAMES:
        return SEPARATOR_NAMES[asked]
    latest = db.session.scalar(
        select(ContactImport.delimiter)
        .where(ContactImport.team_id == team_id,
               ContactImport.status.not_in((ImportStatus.UPLOADED, ImportStatus.DISCARDED)))
        .order_by(ContactImport.id.desc()).limit(1))
    return latest if latest in SEPARATOR_NAMES.values() else ","


def field_labels(list_ids: list[int]) -> dict[str, str]:
    """Contact field key -> the column name as it was uploaded ("first_name" -> "First Name"), for the
    fields the imports into these lists kept, in upload order (the first upload's spelling wins)."""
    labels: dict[str, str] = {}
    if not list_ids:
        return labels
    imports = db.session.execute(
        select(ContactImport.headers, ContactImport.field_columns)
        .where(ContactImport.list_id.in_(list_ids), ContactImport.accepted > 0).order_by(ContactImport.id))
    for headers, columns in imports:
        keys = field_names(headers or [])
        for index in columns or []:
            if index < len(keys):
                labels.setdefault(keys[index], headers[index] or keys[index])
    return labels


def _apply_format(contact_import: ContactImport, fmt: FileFormat, headers: list[str]) -> None:
    contact_import.encoding = fmt.encoding
    contact_import.encoding_label = fmt.encoding_label
    contact_import.encoding_detected = fmt.detected
    contact_import.delimiter = fmt.delimiter
    contact_import.headers = [_cut(header.strip(), MAX_HEADER_CHARS) for header in headers]
    contact_import.phone_column = guess_phone_column(contact_import.headers)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_labels(contact_import: ContactImport) -> list[str]:
    """A name per column for the mapping page: the header, or "(column 3)" where it is blank."""
    return [header or f"(column {number})" for number, header in enumerate(contact_import.headers, 1)]


def preview(contact_import: ContactImport) -> list[list[str]]:
    """The first rows for the mapping page, as wide as the header and each cell cut to PREVIEW_CELL_CHARS.

    Raises UploadProblem when the file can't be read any more.
    """
    width = len(contact_import.headers)
    try:
        rows = read_preview(upload_path(contact_import), file_format(contact_import), rows=PREVIEW_ROWS)[1]
    except CsvProblem as problem:
        raise UploadProblem(problem.message) from problem
    except FileNotFoundError as error:
        raise UploadProblem("The uploaded file is no longer on the server; upload it again.") from error
    return [[_cut(cell, PREVIEW_CELL_CHARS) for cell in row[:width]] for row in rows]


@dataclass(frozen=True)
class Mapping:
    """What the user confirmed on the mapping page."""

    phone_column: int
    field_columns: list[int]
    list_id: int | None
    new_list_name: str
    default_country: str


def start_import(contact_import: ContactImport, mapping: Mapping) -> None:
    """Record the mapping, create the list if asked, and queue the import job; raises UploadProblem.

    One import at a time per list: two would dedupe against the list as it was before either ran.
    """
    team_id = contact_import.team_id
    if mapping.list_id is None:
        if db.session.scalar(select(ContactList.id).where(ContactList.team_id == team_id,
                                                          ContactList.name == mapping.new_list_name)):
            raise UploadProblem(f"A list named {mapping.new_list_name!r} already exists; choose it instead, "
                                "or use another name.")
    elif active_import_into(mapping.list_id):
        raise UploadProblem("Another import into this list is still running; start this one when it is done.")
    job_id = _new_job_id(contact_import.id)
    claimed = db.session.execute(
        update(ContactImport).where(ContactImport.id == contact_import.id,
                                    ContactImport.status == ImportStatus.UPLOADED)
        .values(status=ImportStatus.QUEUED, job_id=job_id, heartbeat_at=utcnow())
    ).rowcount
    if not claimed:  # a second click, or another tab
        db.session.rollback()
        raise UploadProblem("This import has already been started.")
    db.session.refresh(contact_import)
    if mapping.list_id is None:
        contact_list = ContactList(team_id=team_id, name=mapping.new_list_name)
        db.session.add(contact_list)
        try:
            db.session.flush()
        except IntegrityError as error:  # the same name, created in another tab meanwhile
            db.session.rollback()
            raise UploadProblem(f"A list named {mapping.new_list_name!r} already exists; choose it instead, "
                                "or use another name.") from error
        contact_import.list_id = contact_list.id
        contact_import.created_list_name = contact_list.name
    else:
        contact_import.list_id = mapping.list_id
    contact_import.phone_column = mapping.phone_column
    contact_import.field_columns = sorted(set(mapping.field_columns) - {mapping.phone_column})
    contact_import.default_country = mapping.default_country
    db.session.commit()

    try:
        _enqueue(contact_import.id, job_id)
    except RedisError as error:
        contact_import.status = ImportStatus.UPLOADED
        contact_import.job_id = None
        db.session.commit()
        raise UploadProblem("The job queue can't be reached right now; try again in a minute.") from error


def _new_job_id(import_id: int) -> str:
    """Chosen before the job is queued, so the row names its job from the moment it is queued."""
    return f"import-{import_id}-{secrets.token_hex(6)}"


def _enqueue(import_id: int, job_id: str) -> None:
    get_queue("imports").enqueue("jobs.contacts.import_contacts", import_id, job_id=job_id, job_timeout=6 * 3600,
                                 on_failure=Callback("jobs.contacts.import_stopped"))


def active_import_into(list_id: int) -> ContactImport | None:
    """The queued or running import into this list, if any."""
    return db.session.scalar(select(ContactImport).where(
        ContactImport.list_id == list_id, ContactImport.status.in_(ACTIVE)))


def cancel_import(contact_import: ContactImport) -> bool:
    """Stop a queued or running import. On PostgreSQL this waits for a batch being committed (it holds
    the import's row), so once it returns no further batch lands."""
    stopped = db.session.execute(
        update(ContactImport).where(ContactImport.id == contact_import.id,
                                    ContactImport.status.in_(ACTIVE))
        .values(status=ImportStatus.CANCELLED, finished_at=utcnow())
    ).rowcount
    db.session.commit()
    if stopped:
        _settle(contact_import.id)  # a running job may still read the file: on POSIX its open handle keeps it
    return bool(stopped)


def discard_upload(contact_import: ContactImport) -> bool:
    """Drop an upload at the mapping step: nothing is imported and its file is deleted now."""
    discarded = db.session.execute(
        update(ContactImport).where(ContactImport.id == contact_import.id,
                                    ContactImport.status == ImportStatus.UPLOADED)
        .values(status=ImportStatus.DISCARDED, finished_at=utcnow())
    ).rowcount
    db.session.commit()
    if discarded:
        _settle(contact_import.id)
    return bool(discarded)


def mark_stopped(import_id: int, message: str) -> None:
    """The worker died or timed out mid-import (RQ's failure callback): say so instead of 'running' for ever."""
    db.session.execute(
        update(ContactImport).where(ContactImport.id == import_id,
                                    ContactImport.status.in_(ACTIVE))
        .values(status=ImportStatus.FAILED, error=message, finished_at=utcnow())
    )
    db.session.commit()
    _settle(import_id)


def sweep_dead_imports(now: datetime | None = None) -> dict[str, list[int]]:
    """Fail the imports whose worker is gone, so none reads "running" for ever; queue lost ones again.

    A work horse killed with SIGKILL runs no failure callback. An import is dead when RQ says its job
    is over (failed, stopped, finished) while the row still says running, or when its heartbeat is
    older than DEAD_AFTER. The batches it committed stay, counted; its file is deleted. A queued
    import whose job Redis no longer has (restarted empty) is queued again. Safe to run twice or side
    by side: every change is a guarded update.
    """
    now = now or utcnow()
    silent_since = now - DEAD_AFTER
    active = db.session.execute(
        select(ContactImport.id, ContactImport.status, ContactImport.job_id, ContactImport.heartbeat_at)
        .where(ContactImport.status.in_(ACTIVE))
    ).all()
    states = _job_states([job_id for _, _, job_id, _ in active if job_id])
    failed, requeued = [], []
    for import_id, status, job_id, heartbeat_at in active:
        silent = heartbeat_at is None or heartbeat_at < silent_since
        state = None if states is None else states.get(job_id, _GONE) if job_id else _GONE
        if status == ImportStatus.QUEUED and silent and state == _GONE:
            if _requeue(import_id, job_id):
                requeued.append(import_id)
        elif (state in _OVER or (status == ImportStatus.RUNNING and silent)) and _fail_dead(
                import_id, status, None if state in _OVER else silent_since):
            failed.append(import_id)
    return {"failed": failed, "requeued": requeued}


def _job_states(job_ids: list[str]) -> dict[str, str] | None:
    """RQ's status of each job (_GONE when Redis no longer has it); None when Redis can't be asked."""
    if not job_ids:
        return {}
    try:
        jobs = Job.fetch_many(job_ids, connection=redis_connection())
        return {job_id: _GONE if job is None else job.get_status(refresh=False)
                for job_id, job in zip(job_ids, jobs, strict=True)}
    except RedisError:
        return None  # the heartbeat alone decides


def _fail_dead(import_id: int, status: ImportStatus, silent_since: datetime | None) -> bool:
    """Mark one dead import failed, unless it moved on or beat meanwhile; delete its file."""
    guard = [ContactImport.id == import_id, ContactImport.status == status]
    if silent_since is not None:
        guard.append((ContactImport.heartbeat_at.is_(None)) | (ContactImport.heartbeat_at < silent_since))
    seconds = int(DEAD_AFTER.total_seconds())
    changed = db.session.execute(
        update(ContactImport).where(*guard).values(
            status=ImportStatus.FAILED, finished_at=utcnow(),
            error=f"The worker stopped during the import (it was killed, or gave no sign of life for {seconds} s). "
                  "The rows it committed before are kept and counted below.")
    ).rowcount
    db.session.commit()
    if changed:
        _settle(import_id)
    return bool(changed)


def _requeue(import_id: int, lost_job_id: str | None) -> bool:
    """Queue an import again whose job was lost; the guarded update lets one sweep of two do it."""
    job_id = _new_job_id(import_id)
    won = db.session.execute(
        update(ContactImport).where(ContactImport.id == import_id, ContactImport.status == ImportStatus.QUEUED,
                                    ContactImport.job_id.is_(None) if lost_job_id is None
                                    else ContactImport.job_id == lost_job_id)
        .values(job_id=job_id, heartbeat_at=utcnow())
    ).rowcount
    db.session.commit()
    if won:
        try:
            _enqueue(import_id, job_id)
        except RedisError:
            return False  # the next sweep finds the job missing again
    return bool(won)


def sweep_abandoned_uploads(now: datetime | None = None) -> dict[str, int]:
    """Discard mapping steps left for ABANDONED_AFTER and delete upload files no import needs.

    The files are personal data. A file with no import still using it (a crash between storing it
    and the final commit) goes once it is as old as an abandoned upload.
    """
    now = now or utcnow()
    cutoff = now - ABANDONED_AFTER
    stale = db.session.scalars(select(ContactImport.id).where(
        ContactImport.status == ImportStatus.UPLOADED, ContactImport.created_at < cutoff)).all()
    discarded = 0
    for import_id in stale:
        changed = db.session.execute(
            update(ContactImport).where(ContactImport.id == import_id, ContactImport.status == ImportStatus.UPLOADED)
            .values(status=ImportStatus.DISCARDED, finished_at=utcnow(),
                    error="Discarded: the columns were not confirmed within a day, so the file was deleted.")
        ).rowcount
        db.session.commit()
        if changed:
            _settle(import_id)
            discarded += 1
    folder = Path(current_app.config["UPLOAD_FOLDER"])
    needed = set(db.session.scalars(select(ContactImport.stored_name).where(
        ContactImport.status.in_((ImportStatus.UPLOADED, *ACTIVE)))))
    deleted = 0
    for path in folder.iterdir() if folder.is_dir() else ():
        if not _STORED_NAME.fullmatch(path.name) or path.name in needed:
            continue
        with contextlib.suppress(FileNotFoundError):
            if datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None) < cutoff:
                path.unlink()
                deleted += 1
    return {"discarded": discarded, "files_deleted": deleted}


def _settle(import_id: int) -> None:
    """What every end state owes: the upload deleted, and a list this import created but left empty removed."""
    contact_import = db.session.get(ContactImport, import_id)
    if contact_import is None or not contact_import.status.is_final:
        return
    upload_path(contact_import).unlink(missing_ok=True)
    list_id = contact_import.list_id
    if contact_import.created_list_name is None or list_id is None:
        return
    try:
        removed = db.session.execute(delete(ContactList).where(
            ContactList.id == list_id,
            ~exists().where(Contact.list_id == list_id),
            ~exists().where(ContactImport.list_id == list_id, ContactImport.id != import_id,
                            ContactImport.status.in_(ACTIVE)),
        )).rowcount
    except IntegrityError:  # something else (a campaign) points at the list now: keep it
        db.session.rollback()
        return
    if removed:
        contact_import.list_id = None
        contact_import.empty_list_removed = True
    db.session.commit()


def remove_imported_contacts(contact_import: ContactImport) -> int:
    """Delete the contacts a failed or cancelled import added, and record how many."""
    removed = db.session.execute(delete(Contact).where(Contact.import_id == contact_import.id)).rowcount
    contact_import.removed += removed
    db.session.commit()
    return removed


def run_import(import_id: int, job_id: str | None = None) -> None:
    """The job's body: import every row, or record why not. Safe to run twice.

    A RUNNING import is started over only by its own job (RQ re-running it after a crash) or by a
    direct call (job_id None); any other job leaves it alone.
    """
    contact_import = db.session.get(ContactImport, import_id)
    if contact_import is None or contact_import.status.is_final:
        return
    if contact_import.status == ImportStatus.RUNNING:
        if job_id is not None and job_id != contact_import.job_id:
            return
        _forget_partial_run(contact_import)
    else:
        claimed = db.session.execute(
            update(ContactImport).where(ContactImport.id == import_id, ContactImport.status == ImportStatus.QUEUED)
            .values(status=ImportStatus.RUNNING)
        ).rowcount
        if not claimed:
            db.session.rollback()  # cancelled (or started elsewhere) meanwhile
            return
        db.session.refresh(contact_import)
    contact_import.started_at = contact_import.heartbeat_at = utcnow()
    contact_import.error = None
    db.session.commit()
    try:
        if contact_import.list_id is None:
            raise CsvProblem("The list was deleted before the import could run.")
        _RowImporter(contact_import).run()
    except CsvProblem as problem:
        _fail(import_id, problem.message)
    except Exception as error:
        cause = IMPORT_STOPPED if is_no_room(error) else f"The import stopped unexpectedly ({type(error).__name__})."
        stopped_here = _fail(import_id, f"{cause} Contacts committed before the failure are kept and counted.")
        if stopped_here:
            raise
        # Already cancelled or failed by someone else (its file deleted under it): nothing left to report.
    finally:
        _settle(import_id)


def _fail(import_id: int, message: str) -> bool:
    """Mark the running import failed; False if it was no longer running (cancelled, or swept meanwhile)."""
    db.session.rollback()
    changed = db.session.execute(
        update(ContactImport).where(ContactImport.id == import_id, ContactImport.status == ImportStatus.RUNNING)
        .values(status=ImportStatus.FAILED, error=message, finished_at=utcnow())
    ).rowcount
    db.session.commit()
    return bool(changed)


def _forget_partial_run(contact_import: ContactImport) -> None:
    db.session.execute(delete(Contact).where(Contact.import_id == contact_import.id))
    db.session.execute(delete(ImportIssue).where(ImportIssue.import_id == contact_import.id))
    for counter in COUNTERS:
        setattr(contact_import, counter, 0)


class _RowImporter:
    """One pass over the file: normalize and dedupe here, write batches on a second thread.

    The database's work on a batch (COPY, index and foreign-key checks) runs on the other core while
    this thread normalizes the next batch; at most two batches wait, so memory stays flat.
    """

    def __init__(self, contact_import: ContactImport):
        self.imp = contact_import
        self.import_id = contact_import.id
        self.team_id = contact_import.team_id
        self.list_id = contact_import.list_id
        self.country = contact_import.default_country
        self.phone_column = contact_import.phone_column
        self.width = len(contact_import.headers)
        names = field_names(contact_import.headers)
        self.fields = [(index, names[index]) for index in contact_import.field_columns]
        self.path = upload_path(contact_import)
        self.fmt = file_format(contact_import)
        # E.164 digits as ints: a million numbers fit in well under 100 MB.
        self.in_list = {int(p[1:]) for p in db.session.scalars(select(Contact.phone).where(
            Contact.list_id == self.list_id))}
        self.suppressed = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == self.team_id)))
        self.seen: dict[int, int] = {}  # number -> the line that has it first
        self.contacts: list[tuple] = []
        self.issues: list[dict] = []
        self.counts = dict.fromkeys(COUNTERS, 0)

    def run(self) -> None:
        # The writer starts first: its heartbeat covers the count too, which takes seconds on a big file.
        with _BatchWriter(self.import_id, self.team_id, self.list_id) as writer:
            self.imp.total_rows = count_records(self.path, self.fmt)
            db.session.commit()
            # The loop makes no reference cycles, and with Flask and SQLAlchemy loaded every full
            # collection walks hundreds of thousands of objects: pausing the collector is ~5% faster.
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._read_all(writer)
            finally:
                if collecting:
                    gc.enable()
        if not writer.stopped:
            db.session.execute(
                update(ContactImport).where(ContactImport.id == self.import_id, ContactImport.status ==
                                            ImportStatus.RUNNING)
                .values(status=ImportStatus.DONE, finished_at=utcnow(), total_rows=self.counts["rows_done"])
            )
            db.session.commit()

    def _read_all(self, writer: "_BatchWriter") -> None:
        for line, record in iter_records(self.path, self.fmt):
            self._row(line, record)
            if self.counts["rows_done"] % BATCH_SIZE == 0:
                if writer.stopped:
                    return  # cancelled by the user, or failed by a sweep
                self._hand_over(writer)
        self._hand_over(writer)

    def _hand_over(self, writer: "_BatchWriter") -> None:
        writer.put(self.contacts, self.issues, dict(self.counts))
        self.contacts, self.issues = [], []

    def _row(self, line: int, record: list[str]) -> None:
        counts = self.counts
        counts["rows_done"] += 1
        if "\x00" in "".join(record):  # NUL is no one's data, and PostgreSQL text can't hold it (a UTF-16 file can)
            record = [cell.replace("\x00", "") for cell in record]
        if self.phone_column >= len(record):
            self._issue(line, record, IssueKind.REJECTED, "missing_column",
                        f"No phone column: the row has {_count(len(record), 'column')}, the header "
                        f"{_count(self.width, 'column')}")
            return
        try:
            number = normalize(record[self.phone_column], self.country)
        except Rejection as rejection:
            self._issue(line, record, IssueKind.REJECTED, rejection.code, rejection.message)
            return
        key = int(number.e164[1:])
        # Reasons start with a word: one starting with "+" would be neutralised as a formula on export.
        if key in self.in_list:
            self._issue(line, record, IssueKind.DUPLICATE, "in_list", f"Already in the list ({number.e164})")
            return
        if (first := self.seen.get(key)) is not None:
            self._issue(line, record, IssueKind.DUPLICATE, "repeated", f"Same number as line {first} ({number.e164})")
            return
        self.seen[key] = line
        counts["accepted"] += 1
        if number.number_type == "fixed_line":
            counts["landlines"] += 1
        if number.e164 in self.suppressed:
            counts["suppressed"] += 1
        # Trimmed like the headers: " Noël " is "Noël" in a message.
        attributes = {name: record[index].strip() if index < len(record) else "" for index, name in self.fields}
        self.contacts.append((number.e164, number.region, number.number_type, attributes, line))

    def _issue(self, line: int, record: list[str], kind: str, code: str, reason: str) -> None:
        self.counts["rejected" if kind == IssueKind.REJECTED else "duplicates"] += 1
        raw = json.dumps([cell[:MAX_RAW_CELL] for cell in record[:MAX_COLUMNS]], ensure_ascii=False)
        self.issues.append(dict(import_id=self.import_id, line=line, kind=kind, reason_code=code,
                                reason=reason[:500], raw=raw))


class _BatchWriter:
    """A thread with its own database session that commits each batch with the counters it brings.

    Leaving the `with` block waits until every batch handed over is committed, also when the reader
    failed, so the stored counters always match the stored rows. An error here is raised there.
    """

    _DONE = None

    def __init__(self, import_id: int, team_id: int, list_id: int):
        self.import_id, self.team_id, self.list_id = import_id, team_id, list_id
        self.app = current_app._get_current_object()
        self.batches: queue.Queue = queue.Queue(maxsize=2)
        self.stopped = False  # the import was cancelled (or the writer failed): stop reading
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"import-{import_id}-writer", daemon=True)

    def __enter__(self) -> "_BatchWriter":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.batches.put(self._DONE)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error

    def put(self, contacts: list[tuple], issues: list[dict], counts: dict) -> None:
        if self.error is not None:
            raise self.error
        self.batches.put((contacts, issues, counts))

    def _next(self):
        """The next batch; while none comes, mark the import alive every HEARTBEAT_SECONDS."""
        while True:
            try:
                return self.batches.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                if not self.stopped:
                    self._beat()

    def _beat(self) -> None:
        alive = db.session.execute(
            update(ContactImport)
            .where(ContactImport.id == self.import_id, ContactImport.status == ImportStatus.RUNNING)
            .values(heartbeat_at=utcnow())
        ).rowcount
        db.session.commit()
        if not alive:
            self.stopped = True  # cancelled, or failed by a sweep: stop reading

    def _run(self) -> None:
        with self.app.app_context():
            try:
                while (batch := self._next()) is not self._DONE:
                    if not self.stopped:
                        self._commit(*batch)
            except BaseException as error:  # noqa: BLE001 - handed to the reading thread
                self.error, self.stopped = error, True
                try:
                    db.session.rollback()
                finally:
                    while self.batches.get() is not self._DONE:  # let the reader finish handing over
                        pass
            finally:
                db.session.remove()

    def _commit(self, contacts: list[tuple], issues: list[dict], counts: dict) -> None:
        # FOR UPDATE: a cancel waits for this batch instead of slipping in between check and commit.
        status = db.session.scalar(
            select(ContactImport.status).where(ContactImport.id == self.import_id).with_for_update()
        )
        if status != ImportStatus.RUNNING:
            db.session.rollback()
            self.stopped = True
            return
        _write_contacts(self.team_id, self.list_id, self.import_id, contacts)
        if issues:
            db.session.execute(insert(ImportIssue), issues)
        db.session.execute(update(ContactImport).where(ContactImport.id == self.import_id)
                           .values(**counts, heartbeat_at=utcnow()))
        db.session.commit()


def _write_contacts(team_id: int, list_id: int, import_id: int, rows: list[tuple]) -> None:
    """Insert a batch: COPY on PostgreSQL (several times faster), a multi-row INSERT elsewhere."""
    if not rows:
        return
    now = utcnow()
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        # COPY's text format, written by hand: psycopg's write_row adapts value by value and cost
        # more than parsing the row. JSON never holds a raw tab or newline, so only \ needs escaping.
        prefix = f"{team_id}\t{list_id}\t{import_id}\t"
        suffix = f"\t{now.isoformat(' ')}\n"
        text = "".join(
            f"{prefix}{phone}\t{region or NULL}\t{number_type}\t"
            f"{_json_object(attributes).replace(BACKSLASH, DOUBLE_BACKSLASH)}\t{line}{suffix}"
            for phone, region, number_type, attributes, line in rows
        )
        columns = "team_id, list_id, import_id, phone, region, number_type, attributes, source_line, created_at"
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(f"COPY contact ({columns}) FROM STDIN") as copy:
            copy.write(text)
        return
    db.session.execute(insert(Contact), [
        dict(team_id=team_id, list_id=list_id, import_id=import_id, phone=phone, region=region,
             number_type=number_type, attributes=attributes, source_line=line, created_at=now)
        for phone, region, number_type, attributes, line in rows
    ])


NULL, BACKSLASH, DOUBLE_BACKSLASH = "\\N", "\\", "\\\\"


def _count(number: int, noun: str) -> str:
    """'1 column', '3 columns'."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _json_object(attributes: dict[str, str]) -> str:
    """json.dumps(attributes, ensure_ascii=False) for a flat dict of strings, in a third of the time."""
    return "{" + ", ".join(f"{encode_basestring(key)}: {encode_basestring(value)}"
                           for key, value in attributes.items()) + "}"
