"""Jobs for contacts."""

from rq import get_current_job

from jobs import with_app
from webapp.services import imports as importer


@with_app
def import_contacts(import_id: int) -> None:
    """Stream an uploaded file into its list (webapp.services.imports.run_import has the rules)."""
    job = get_current_job()
    importer.run_import(import_id, job.id if job else None)


@with_app
def import_stopped(job, connection, error_type, value, traceback) -> None:
    """RQ's failure callback (the job raised or timed out): make the import say so. A work horse killed
    with SIGKILL runs no callback; webapp.services.imports.sweep_dead_imports finds those."""
    importer.mark_stopped(job.args[0], "The worker stopped during the import (it was killed or ran out of "
                                       "time). Contacts committed before are kept and counted.")
