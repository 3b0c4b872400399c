"""The team's members: list, add, disable and enable (owners and admins only)."""

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.extensions import db
from webapp.models import Role, User
from webapp.services.accounts import AccountError, create_user, set_user_disabled
from webapp.web.access import admin_required, team_get_or_404, team_select
from webapp.web.forms import UserForm

bp = Blueprint("users", __name__, url_prefix="/users")


@bp.route("/", methods=["GET", "POST"])
@login_required
@admin_required
def index():
    """List the team's users and add a new one."""
    form = UserForm()
    if form.validate_on_submit():
        if form.role.data == Role.OWNER and current_user.role != Role.OWNER:
            form.role.errors.append("Only an owner can add another owner.")
        else:
            try:
                user = create_user(current_user.team, form.email.data, form.password.data, form.role.data,
                                   form.name.data or "")
            except AccountError as error:
                form.email.errors.append(str(error))
            else:
                db.session.commit()
                flash(f"{user.email} can now sign in as {user.role}.", "success")
                return redirect(url_for("users.index"))
    users = db.session.scalars(team_select(User).order_by(User.email)).all()
    return render_template("users/index.html", users=users, form=form)


@bp.post("/<int:user_id>/disable")
@login_required
@admin_required
def disable(user_id: int):
    """Disable a user: every sign-in of theirs ends (copied cookies included) and they cannot sign in."""
    user = team_get_or_404(User, user_id)
    if user.id == current_user.id:
        flash("You cannot disable your own account.", "error")
    elif user.role == Role.OWNER and current_user.role != Role.OWNER:
        flash("Only an owner can disable an owner.", "error")
    else:
        set_user_disabled(user.id, True)
        db.session.commit()
        flash(f"{user.email} is disabled.", "success")
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/enable")
@login_required
@admin_required
def enable(user_id: int):
    """Enable a disabled user again."""
    user = team_get_or_404(User, user_id)
    if user.role == Role.OWNER and current_user.role != Role.OWNER:
        flash("Only an owner can enable an owner.", "error")
        return redirect(url_for("users.index"))
    set_user_disabled(user.id, False)
    db.session.commit()
    flash(f"{user.email} can sign in again.", "success")
    return redirect(url_for("users.index"))
