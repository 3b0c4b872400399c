"""A real `campaigns worker` whose work horse is killed with SIGKILL mid-import: the sweep finds it."""

import contextlib
import io
import os
import re
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.factories import make_team, make_user
from tests.processes import wait_until
from webapp.extensions import db
from webapp.models import Contact, ContactImport, ImportStatus, Role, utcnow
from webapp.services import imports as importer

ROWS = 400_000  # long enough on a fast machine to be caught mid-way


@pytest.fixture
def editor(app, auth):
    with app.app_context():
        make_user(make_team("Acme"), Role.EDITOR, "ed@example.com")
    auth.login("ed@example.com")


def _import(app, client, data: bytes, **form) -> int:
    response = client.post("/imports/", data={"file": (io.BytesIO(data), "big.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)[:1000]
    import_id = int(re.search(r"/imports/(\d+)$", response.headers["Location"]).group(1))
    started = client.post(f"/imports/{import_id}/start", data={
        "phone_column": "1", "field_columns": ["0"], "default_country": "US", **form})
    assert started.status_code == 302, started.get_data(as_text=True)[:3000]
    return import_id


def _row(app, import_id: int) -> ContactImport:
    with app.app_context():
        row = db.session.get(ContactImport, import_id)
        db.session.expunge(row)
        return row


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid (the work horse, and the scheduler RQ starts beside the worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def _work_horse(worker_pid: int, path: Path) -> int | None:
    """The worker's child process that has the uploaded file open: the work horse running the import."""
    for child in _children(worker_pid):
        try:
            if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{child}/fd").iterdir()):
                return child
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return None


def _big_import(app, client) -> tuple[int, Path]:
    """Start a long import and return it once two batches are committed, with its file."""
    lines = ["name,phone"] + [f"Person {i},+1 415 55{i // 10000 % 10}{i % 10000:04d}" for i in range(ROWS)]
    import_id = _import(app, client, ("\r\n".join(lines) + "\r\n").encode(), list_id="new", new_list_name="Big")
    with app.app_context():
        path = importer.upload_path(db.session.get(ContactImport, import_id))
    running = wait_until(lambda: (row := _row(app, import_id)).rows_done >= 2 * importer.BATCH_SIZE and row,
                        120, "two committed batches", interval=0.05)
    assert running.status == ImportStatus.RUNNING and running.heartbeat_at > running.started_at
    return import_id, path


def test_sigkilled_work_horse_is_failed_by_the_sweep(app, client, editor, worker):
    """SIGKILL mid-import runs no failure callback; the sweep marks the import failed within a minute,
    with exactly the committed rows counted and its file deleted, and the list takes a new import."""
    import_id, path = _big_import(app, client)
    horse = wait_until(lambda: _work_horse(worker.pid, path), 30, "the work horse with the file open", interval=0.05)
    os.kill(horse, signal.SIGKILL)
    killed_at = time.monotonic()
    assert _row(app, import_id).status == ImportStatus.RUNNING  # nothing else will ever change it

    def swept():
        with app.app_context():
            return import_id in importer.sweep_dead_imports()["failed"]

    wait_until(swept, 60, "the sweep to fail the import", interval=0.05)
    detected_after = time.monotonic() - killed_at
    failed = _row(app, import_id)
    assert failed.status == ImportStatus.FAILED and "worker stopped during the import" in failed.error
    assert 0 < failed.rows_done < ROWS
    assert failed.accepted + failed.duplicates + failed.rejected == failed.rows_done
    with app.app_context():
        stored = db.session.scalar(select(func.count(Contact.id)).where(Contact.import_id == import_id))
    assert stored == failed.accepted  # counted exactly what was committed
    assert not path.exists()
    print(f"\nkilled after {failed.rows_done:,} rows; failed by the sweep {detected_after:.2f} s later")

    # The list is free again: a new import into it is accepted and runs to the end.
    again = _import(app, client, b"name,phone\r\nNew,+14155550199\r\n", list_id=str(failed.list_id))
    done = wait_until(lambda: (row := _row(app, again)).status.is_final and row, 60, "the next import", interval=0.05)
    assert done.status == ImportStatus.DONE and done.accepted == 1


def test_a_whole_dead_worker_is_found_by_its_silent_heartbeat(app, client, editor, worker):
    """Worker and horse both SIGKILLed: RQ still says "started", so only the heartbeat tells. A live
    import is never failed early; one silent for DEAD_AFTER is, counted, and its file deleted."""
    import_id, path = _big_import(app, client)
    horse = wait_until(lambda: _work_horse(worker.pid, path), 30, "the work horse with the file open", interval=0.05)
    for pid in dict.fromkeys([horse, *_children(worker.pid), worker.pid]):  # the scheduler too: nothing may outlive it
        with contextlib.suppress(ProcessLookupError):  # a child that exited with its parent is already gone
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=30)
    with app.app_context():
        assert importer.sweep_dead_imports()["failed"] == []  # it beat moments ago
        assert importer.sweep_dead_imports(now=utcnow() + importer.DEAD_AFTER + timedelta(seconds=1)) == {
            "failed": [import_id], "requeued": []}
    failed = _row(app, import_id)
    assert failed.status == ImportStatus.FAILED and 0 < failed.rows_done < ROWS
    with app.app_context():
        stored = db.session.scalar(select(func.count(Contact.id)).where(Contact.import_id == import_id))
    assert stored == failed.accepted
    assert not path.exists()
