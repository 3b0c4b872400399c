"""Logging in and out."""

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from webapp.extensions import db, login_manager
from webapp.models import User
from webapp.services.accounts import LoginThrottle, authenticate
from webapp.web.forms import LoginForm

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.scalar(select(User).where(User.id == int(user_id)))


def _throttle() -> LoginThrottle:
    return LoginThrottle(current_app.config["LOGIN_MAX_FAILURES"], current_app.config["LOGIN_LOCK_SECONDS"])


def _safe_next(target: str | None) -> str:
    """Only follow a local path after login, never another site (browsers read /\\x as //x)."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password; repeated failures lock the email out for a while."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        throttle = _throttle()
        email = form.email.data
        if not throttle.allow_attempt(email):
            minutes = max(1, current_app.config["LOGIN_LOCK_SECONDS"] // 60)
            flash(f"Too many failed attempts. Try again in {minutes} minutes.", "error")
            return render_template("auth/login.html", form=form), 429
        user = authenticate(email, form.password.data)
        if user is None:
            flash("Wrong email or password, or the account is disabled.", "error")
            return render_template("auth/login.html", form=form), 401
        throttle.reset(email)
        db.session.commit()
        login_user(user, remember=form.remember.data)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    """Sign out (a POST, so no link or image can sign anyone out)."""
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
