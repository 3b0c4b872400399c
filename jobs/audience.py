"""Jobs for a campaign's audience."""

from jobs import with_app
from webapp.services import audience


@with_app
def summarize_audience(summary_id: int) -> None:
    """Count and price the whole audience of a draft (webapp.services.audience.summarize has the rules)."""
    audience.run_summary(summary_id)


@with_app
def summary_stopped(job, connection, error_type, value, traceback) -> None:
    """RQ's failure callback, also for a killed worker: the summary says so instead of polling for ever."""
    audience.mark_stopped(job.args[0], "The worker stopped while summarizing (it was killed or ran out of time). "
                                       "Try again.")
