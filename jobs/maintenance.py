"""Periodic sweeps, and PERIODIC: the one list of what `campaigns scheduler` enqueues, and how often.

Each sweep is a job like any other (run by `campaigns worker` from the "default" queue) and is safe to
run twice or side by side: the services it calls change only rows that still need it, with guarded
updates. The campaign sweep (jobs.sending.sweep_campaigns) carries sending on after dead workers or a
lost Redis; the callback sweeps match late-matching delivery reports and bound the unmatched ones.
"""

from jobs import with_app
from webapp.queues import Periodic
from webapp.services import callbacks, imports, tallies


@with_app
def sweep_dead_imports() -> object:
    """Fail imports whose worker died (a SIGKILL runs no failure callback), counting their committed rows."""
    return imports.sweep_dead_imports()


@with_app
def sweep_abandoned_uploads() -> object:
    """Delete uploads (personal data) left by mapping steps nobody finished."""
    return imports.sweep_abandoned_uploads()


@with_app
def prune_callbacks() -> object:
    """Expire each team's oldest unmatched callbacks beyond CALLBACK_ORPHAN_LIMIT (counted on the team)."""
    return callbacks.prune_orphans()


@with_app
def rematch_callbacks() -> int:
    """Apply unmatched callbacks whose message exists now (a report can arrive before its row is committed)."""
    return callbacks.rematch_orphans()


@with_app
def fold_tallies() -> None:
    """Add the figures' deltas into the campaign tallies, so a campaign page never sums many of them."""
    tallies.fold()


PERIODIC = (
    # Campaign pages read tally + unfolded deltas: folding often keeps that sum a few thousand rows at most.
    Periodic("jobs.maintenance.fold_tallies", every=5),
    # A dead import must read "failed" within a minute (issue 8, item 9): the sweep runs every 15 s.
    Periodic("jobs.maintenance.sweep_dead_imports", every=15),
    Periodic("jobs.maintenance.sweep_abandoned_uploads", every=3600),
    # Campaigns carry on within seconds of a dead worker or a lost Redis (webapp.services.sending.recover).
    Periodic("jobs.sending.sweep_campaigns", every=15),
    Periodic("jobs.maintenance.rematch_callbacks", every=60),
    Periodic("jobs.maintenance.prune_callbacks", every=3600),
)
