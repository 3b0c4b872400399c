"""The home page: what the team has and what is running."""

from flask import Blueprint, render_template
from flask_login import current_user, login_required
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Contact, ContactImport, ContactList, Suppression
from webapp.web.access import team_select

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def index():
    """The team's overview: counts and the latest imports."""
    team_id = current_user.team_id

    def count(model) -> int:
        return db.session.scalar(select(func.count(model.id)).where(model.team_id == team_id))

    stats = {"lists": count(ContactList), "contacts": count(Contact), "opt_outs": count(Suppression)}
    imports = db.session.scalars(team_select(ContactImport).order_by(ContactImport.id.desc()).limit(5)).all()
    return render_template("dashboard/index.html", stats=stats, imports=imports)
