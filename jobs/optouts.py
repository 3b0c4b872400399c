"""Jobs for the opt-out list."""

from rq import get_current_job

from jobs import with_app
from webapp.services import optouts


@with_app
def import_optouts(import_id: int) -> None:
    """Add every number of an uploaded opt-out file to the team's list (webapp.services.optouts has the rules)."""
    job = get_current_job()
    optouts.run_optout_import(import_id, job.id if job else None)


@with_app
def import_stopped(job, connection, error_type, value, traceback) -> None:
    """RQ's failure callback, also called for a job whose worker was killed: make the import say so."""
    optouts.mark_stopped(job.args[0], "The worker stopped during the import (it was killed or ran out of time). "
                                      "Numbers committed before are kept and counted.")
