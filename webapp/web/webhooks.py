"""Webhooks the provider calls: delivery status (notify URL) and inbound messages (opt-outs).

The provider doesn't sign callbacks, so each URL carries the team's id and its unguessable token,
compared in constant time. The answer is 200 even for a message we don't know yet: a 404 can make a
provider stop retrying, and it is 200 for a body the parser can't read too (stored and flagged for a
person). Bodies and query strings over the bounds in webapp.services.callbacks are refused (413, 414)
unread and unstored; HEAD (which Flask routes to these GET views) stores nothing. When the database
can't be reached the answer is 503, so the provider tries again later: nothing is lost.
"""

import logging

from flask import Blueprint, abort, request
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import csrf
from webapp.services.callbacks import (
    INBOUND_MAX_BODY_BYTES,
    INBOUND_MAX_QUERY_BYTES,
    MAX_BODY_BYTES,
    MAX_QUERY_BYTES,
    MAX_TEAM_ID,
    store_inbound_message,
    store_status_callback,
    token_matches,
)

logger = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/callbacks")
csrf.exempt(bp)

OK = ("OK", 200, {"Content-Type": "text/plain"})
TRY_AGAIN = ("Try again later", 503, {"Content-Type": "text/plain", "Retry-After": "30"})


@bp.errorhandler(SQLAlchemyError)
def database_unavailable(error: SQLAlchemyError):
    """The database failed (down, restarting): 503 asks the provider to retry, where a 500 might not."""
    logger.error("webhook could not reach the database: %s", error)
    return TRY_AGAIN


@bp.route(f"/multitel/<int(max={MAX_TEAM_ID}):team_id>/<token>", methods=["GET", "POST"])
def status(team_id: int, token: str):
    """Store a status callback as it arrived, with what the tolerant parser read from it, and apply it."""
    if not token_matches(team_id, token, "callback"):
        abort(404)
    if request.method != "HEAD":
        query = _query_string(MAX_QUERY_BYTES)
        store_status_callback(team_id, request.content_type, query, _body(MAX_BODY_BYTES))
    return OK


@bp.route(f"/inbound/<int(max={MAX_TEAM_ID}):team_id>/<token>", methods=["GET", "POST"])
def inbound(team_id: int, token: str):
    """An inbound SMS: stored raw; STOP and its synonyms add the sender to the opt-outs."""
    if not token_matches(team_id, token, "inbound"):
        abort(404)
    if request.method != "HEAD":
        query = _query_string(INBOUND_MAX_QUERY_BYTES)
        store_inbound_message(team_id, request.content_type, query, _body(INBOUND_MAX_BODY_BYTES))
    return OK


def _query_string(limit: int) -> str:
    """The raw query string as text; over `limit` bytes is 414."""
    if len(request.query_string) > limit:
        abort(414)
    return request.query_string.decode("utf-8", "replace")


def _body(limit: int) -> bytes:
    """The body, reading at most limit + 1 bytes even when chunked (no Content-Length); over `limit` is 413."""
    if (request.content_length or 0) > limit:
        abort(413)
    chunks, size = [], 0
    while size <= limit:
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        abort(413)
    return b"".join(chunks)
