"""The home page: what the team has and what is running."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def index():
    """The team's overview."""
    return render_template("dashboard/index.html")
