"""Who may see and change what: team scoping for every query, and role checks.

Every view that reads team data goes through team_select() or team_get_or_404(), so a user of another
team gets 404, never someone else's row. tests/test_access.py walks the URL map to prove it.
"""

from functools import wraps
from urllib.parse import unquote

from flask import abort, request
from flask_login import current_user
from sqlalchemy import Select, select

from webapp.extensions import db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What any signed-in user may change, viewers included: only their own sign-ins and password.
SELF_SERVICE_ENDPOINTS = frozenset({"auth.logout", "auth.sign_out_everywhere", "auth.account"})


def htmx_target() -> str | None:
    """The id of the element an htmx request will swap into, or None for a full-page load.

    htmx 4 sends HX-Target as `tag#id` (`div#contacts-table`, the id URI-encoded), or the bare tag
    (`body` for history restores) when the target has no id; htmx 2 sent the bare id. Compare ids,
    never the raw header."""
    if not request.headers.get("HX-Request"):
        return None
    _tag, hash_sign, element_id = request.headers.get("HX-Target", "").partition("#")
    return (unquote(element_id) or None) if hash_sign else None


def team_select(model) -> Select:
    """A SELECT of `model` limited to the current user's team."""
    return select(model).where(model.team_id == current_user.team_id)


def team_get_or_404(model, object_id: int):
    """The current team's row with this id, or 404 (also for another team's row)."""
    obj = db.session.scalar(team_select(model).where(model.id == object_id))
    if obj is None:
        abort(404)
    return obj


def admin_required(view):
    """Owners and admins only (user management, team settings)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.can_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def refuse_viewer_changes() -> None:
    """before_request: a viewer is read-only everywhere, so no new route can forget the check."""
    if (
        request.method not in SAFE_METHODS
        and current_user.is_authenticated
        and not current_user.can_edit
        and request.endpoint not in SELF_SERVICE_ENDPOINTS
    ):
        abort(403)
