"""The home page: the team's overview of campaigns (state, progress, spend, what runs now) and of its contacts."""

from datetime import UTC, datetime

from flask import Blueprint, render_template
from flask_login import current_user, login_required
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Contact, ContactImport, ContactList, Suppression
from webapp.services import overview
from webapp.web.access import team_select

bp = Blueprint("dashboard", __name__)

RUNNING_POLL_SECONDS = 5


def _team_time(moment: datetime | None) -> str:
    """A stored (naive UTC) moment as the team's wall-clock time."""
    if moment is None:
        return ""
    return moment.replace(tzinfo=UTC).astimezone(overview.team_zone(current_user.team.timezone)).strftime(
        "%Y-%m-%d %H:%M")


@bp.context_processor
def _helpers() -> dict:
    """Times in the team's zone, for the dashboard's templates (money is the app's `money` filter)."""
    return {"team_time": _team_time,
            "team_zone": lambda: overview.team_zone(current_user.team.timezone).key,
            "poll_seconds": RUNNING_POLL_SECONDS}


@bp.get("/")
@login_required
def index():
    """The team's overview: what runs now, recent campaigns, spend by month and sender, lists and imports."""
    team_id = current_user.team_id

    def count(model) -> int:
        return db.session.scalar(select(func.count(model.id)).where(model.team_id == team_id))

    stats = {"lists": count(ContactList), "contacts": count(Contact), "opt_outs": count(Suppression)}
    imports = db.session.scalars(team_select(ContactImport).order_by(ContactImport.id.desc()).limit(5)).all()
    return render_template("dashboard/index.html", stats=stats, imports=imports, view=overview.overview(team_id),
                           recent_shown=overview.RECENT, months_shown=overview.MONTHS)


@bp.get("/running")
@login_required
def running():
    """The "running now" section alone, polled while a campaign sends or is about to start."""
    return render_template("dashboard/_running.html", running=overview.running_now(current_user.team_id))
