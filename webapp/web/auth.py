"""Signing in and out, the account page (password, sign out everywhere), and who the session is."""

import hashlib
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from flask_login.utils import login_url
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import RedisError

from webapp.extensions import db, login_manager
from webapp.models import User
from webapp.services.accounts import (
    AccountError,
    Refusal,
    change_password,
    client_key,
    count_login_sessions,
    end_all_login_sessions,
    end_login_session,
    login_lifetime,
    normalize_email,
    sign_in,
    user_for_login_session,
    wait_text,
)
from webapp.web.forms import ChangePasswordForm, LoginForm

bp = Blueprint("auth", __name__)

SIGN_IN_UNAVAILABLE = ("Sign-in is unavailable: the service that limits password guessing is down, and without "
                       "it nobody may sign in. People already signed in can keep working. Try again in a few minutes.")

# A browser that has signed in as an email before is exempt from that email's per-minute limit, so a
# stranger hammering the address never slows its owner down (OWASP's "device cookie").
DEVICE_COOKIE = "login_device"
DEVICE_COOKIE_DAYS = 180
DEVICE_COOKIE_EMAILS = 5


@login_manager.user_loader
def load_user(token: str) -> User | None:
    """The session and remember cookies carry a sign-in token; a signed-out token loads nobody."""
    return user_for_login_session(token)


@login_manager.unauthorized_handler
def unauthorized():
    """Send a signed-out visitor to the login page; an htmx request gets a small fragment and HX-Redirect,
    never the login page swapped into the element that asked."""
    if request.headers.get("HX-Request"):
        page = urlsplit(request.headers.get("HX-Current-URL", ""))
        back = page.path + (f"?{page.query}" if page.query else "") if page.path else None
        response = make_response(render_template(
            "_error_fragment.html", code=401, title="Signed out", message="Sign in again to continue."), 401)
        response.headers["HX-Redirect"] = url_for("auth.login", next=back)
        return response
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(login_url("auth.login", request.url))


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="login-device")


def _email_digest(email: str) -> str:
    return hashlib.sha256(normalize_email(email).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _device_emails() -> list[str]:
    try:
        emails = _device_serializer().loads(request.cookies.get(DEVICE_COOKIE, ""),
                                            max_age=DEVICE_COOKIE_DAYS * 86400)
    except BadSignature:
        return []
    return emails if isinstance(emails, list) else []


def _remember_device(response, email: str) -> None:
    emails = [_email_digest(email)] + [e for e in _device_emails() if e != _email_digest(email)]
    response.set_cookie(DEVICE_COOKIE, _device_serializer().dumps(emails[:DEVICE_COOKIE_EMAILS]),
                        max_age=DEVICE_COOKIE_DAYS * 86400, httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])


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


def _start_browser_session(user: User, remember: bool) -> None:
    """A fresh Flask session for a new sign-in: nothing planted before it survives, and the CSRF token
    (kept in the session by Flask-WTF) is new."""
    session.clear()
    login_user(user, remember=remember, duration=login_lifetime(remember=True))


REFUSALS = {
    Refusal.LOCKED: "Too many failed attempts for this email from your network. Try again in {wait}.",
    Refusal.CLIENT: "Too many failed sign-ins from your network. Try again in {wait}.",
    Refusal.EMAIL: ("This account is getting many sign-in attempts. Try again in {wait}; a browser you have "
                    "signed in with before is not slowed down."),
}


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password; see LoginThrottle for the limits on guessing."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data
        try:
            result = sign_in(email, form.password.data, client_key(request.remote_addr), form.remember.data,
                             trusted_device=_email_digest(email) in _device_emails())
        except RedisError:
            db.session.rollback()
            current_app.logger.exception("sign-in refused: Redis is unreachable")
            abort(503, description=SIGN_IN_UNAVAILABLE)
        if result.refused == Refusal.BAD_CREDENTIALS:
            flash("Wrong email or password, or the account is disabled.", "error")
            return render_template("auth/login.html", form=form), 401
        if result.refused:
            flash(REFUSALS[result.refused].format(wait=wait_text(result.retry_after)), "error")
            response = make_response(render_template("auth/login.html", form=form), 429)
            response.headers["Retry-After"] = str(result.retry_after)
            return response
        db.session.commit()
        _start_browser_session(result.user, form.remember.data)
        response = redirect(_safe_next(request.args.get("next")))
        _remember_device(response, email)
        return response
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    """Sign out this browser for good: its cookies stop working even where they were copied (a POST,
    so no link or image can sign anyone out)."""
    end_login_session(current_user.session_token)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    """End every sign-in of this user, on every browser, this one included."""
    end_all_login_sessions(current_user.id)
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out on every browser.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """The signed-in user's own account: change the password (which signs out every other browser)."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        remember = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in request.cookies
        try:
            user = change_password(current_user.id, form.current_password.data, form.new_password.data,
                                   client_key(request.remote_addr), remember)
        except AccountError as error:
            db.session.rollback()
            form.current_password.errors.append(str(error))
        else:
            db.session.commit()
            _start_browser_session(user, remember)
            flash("Your password is changed. Every other browser is signed out.", "success")
            return redirect(url_for("auth.account"))
    return render_template("auth/account.html", form=form, sign_ins=count_login_sessions(current_user.id))
