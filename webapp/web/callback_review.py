"""Delivery reports a person should look at: the team's callbacks the parser couldn't read, that named no
message, carried no or an unknown status word, or billed other than the send reply said (newest first)."""

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user, login_required

from webapp.services import callbacks, message_log

bp = Blueprint("callback_review", __name__, url_prefix="/delivery-reports")

MAX_CURSOR = 2**63 - 1


@bp.get("/")
@login_required
def index():
    """Flagged callbacks, 50 to a page, by keyset (?before= older, ?after= newer): read-only, viewers too."""
    page = callbacks.flagged_callbacks(current_user.team_id, before=_cursor("before"), after=_cursor("after"))
    zone = message_log.zone_of(current_user.team.timezone)
    return render_template("callback_review/index.html", page=page, expired=current_user.team.callbacks_expired,
                           received=lambda moment: message_log.local_time(moment, zone), zone=zone.key,
                           message_page="messages.show" in current_app.view_functions)


def _cursor(name: str) -> int | None:
    """A page cursor from the query string; anything but a row id is 404, never a 500."""
    value = request.args.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) > MAX_CURSOR:
        abort(404)
    return int(value)
