"""Webhooks the provider calls: delivery status (notify URL) and inbound messages (opt-outs).

The provider doesn't sign callbacks, so each URL carries the team's id and its unguessable token,
compared in constant time. Every body is stored raw before anything else is done with it, and the
answer is 200 even for a message we don't know yet: a 404 can make a provider stop retrying.
"""

import hmac

from flask import Blueprint, abort, request

from webapp.extensions import csrf, db
from webapp.models import ProviderCallback, Team
from webapp.provider.delivery_reports import parse_callback
from webapp.services.optouts import record_inbound

bp = Blueprint("webhooks", __name__, url_prefix="/callbacks")
csrf.exempt(bp)

MAX_CALLBACK_BYTES = 64 * 1024


def team_for(team_id: int, token: str, kind: str = "callback") -> Team:
    """The team whose `kind` token ('callback' or 'inbound') this is, compared in constant time; else 404."""
    team = db.session.get(Team, team_id)
    expected = getattr(team, f"{kind}_token", None) if team else None
    if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
        abort(404)
    return team


def _text(value: str | None, length: int) -> str | None:
    """Fit a parsed value into its column; PostgreSQL refuses what is longer, and NUL anywhere."""
    return None if value is None else value.replace("\x00", "")[:length]


def raw_body() -> bytes:
    if (request.content_length or 0) > MAX_CALLBACK_BYTES:
        abort(413)
    return request.get_data(cache=True)[:MAX_CALLBACK_BYTES]


@bp.route("/multitel/<int:team_id>/<token>", methods=["GET", "POST"])
def status(team_id: int, token: str):
    """Store a status callback as it arrived, with what the tolerant parser read from it."""
    team = team_for(team_id, token)
    body = raw_body()
    query = request.query_string.decode("utf-8", "replace")
    parsed = parse_callback(body, request.content_type, query)
    db.session.add(
        ProviderCallback(
            team_id=team.id,
            content_type=_text(request.content_type or "", 200),
            query_string=_text(query, 100_000),
            # Kept as text for people to read; NUL is the one character PostgreSQL text can't hold.
            body=_text(body.decode("utf-8", "replace"), MAX_CALLBACK_BYTES),
            unique_id=_text(parsed.unique_id, 100),
            reference=_text(parsed.reference, 100),
            state=parsed.state.value,
            raw_status=_text(parsed.raw_status, 100),
            cause_code=_text(parsed.cause_code, 100),
        )
    )
    db.session.commit()
    return "OK", 200, {"Content-Type": "text/plain"}


@bp.route("/inbound/<int:team_id>/<token>", methods=["GET", "POST"])
def inbound(team_id: int, token: str):
    """An inbound SMS: stored raw; STOP and its synonyms add the sender to the opt-outs."""
    team = team_for(team_id, token, "inbound")
    record_inbound(team, raw_body(), request.content_type, request.query_string.decode("utf-8", "replace"))
    db.session.commit()
    return "OK", 200, {"Content-Type": "text/plain"}
