"""Periodic sweeps, and PERIODIC: the one list of what `campaigns scheduler` enqueues, and how often.

Each sweep is a job like any other (run by `campaigns worker` from the "default" queue) and is safe to
run twice or side by side: the services it calls change only rows that still need it, with guarded
updates. Stuck campaigns and unconfirmed sends join the list when the campaign engine lands.
"""

from jobs import with_app
from webapp.queues import Periodic
from webapp.services import imports


@with_app
def sweep_dead_imports() -> object:
    """Fail imports whose worker died (a SIGKILL runs no failure callback), counting their committed rows."""
    return imports.sweep_dead_imports()


@with_app
def sweep_abandoned_uploads() -> object:
    """Delete uploads (personal data) left by mapping steps nobody finished."""
    return imports.sweep_abandoned_uploads()


PERIODIC = (
    # A dead import must read "failed" within a minute (issue 8, item 9): the sweep runs every 15 s.
    Periodic("jobs.maintenance.sweep_dead_imports", every=15),
    Periodic("jobs.maintenance.sweep_abandoned_uploads", every=3600),
)
