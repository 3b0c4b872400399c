"""A campaign's messages: the table (status filter, number search, keyset pages), one message's callback
history, and the whole campaign as CSV. Read-only, so viewers see all of it."""

from datetime import datetime

from flask import Blueprint, Response, abort, make_response, render_template, request, stream_with_context
from flask_login import current_user, login_required
from werkzeug.utils import secure_filename

from webapp.models import Campaign, Message
from webapp.services import message_log
from webapp.services.contacts import search_text
from webapp.services.csvfiles import stream_csv
from webapp.services.imports import export_separator
from webapp.web.access import htmx_target, team_get_or_404

bp = Blueprint("messages", __name__)

STATUS_CHOICES = [
    ("", "Any status"),
    ("queued", "Queued"),
    ("held", "Held for quiet hours"),
    ("in_flight", "In flight"),
    ("sent", "Sent, awaiting report"),
    ("delivered", "Delivered"),
    ("undelivered", "Undelivered"),
    ("failed", "Failed (not sent)"),
    ("unknown", "Unknown (no answer)"),
    ("opted_out", "Opted out"),
    ("cancelled", "Cancelled"),
]


@bp.context_processor
def _helpers() -> dict:
    """Times in the team's zone, status words, and cost flags, for the templates."""
    zone = message_log.zone_of(current_user.team.timezone) if current_user.is_authenticated else None
    return {
        "team_time": lambda moment: message_log.local_time(moment, zone),
        "team_zone": lambda: zone.key,
        "status_word": message_log.status_word,
        "cost_flags": message_log.cost_flags,
    }


@bp.get("/campaigns/<int:campaign_id>/messages")
@login_required
def index(campaign_id: int):
    """Every message of a campaign, 50 to a page, filtered by status and searched by number prefix."""
    campaign = team_get_or_404(Campaign, campaign_id)
    query, query_cut = search_text(request.args.get("q"))
    status = request.args.get("status", "")
    status = status if status in message_log.FILTERS else ""
    prefix = message_log.number_prefix(query)
    if query and not prefix:  # letters only: no number can match
        result = message_log.MessagePage([], None, None)
    else:
        result = message_log.page(campaign.id, status, prefix, after=message_log.cursor_id(request.args.get("after")),
                                  before=message_log.cursor_id(request.args.get("before")))
    context = dict(campaign=campaign, page=result, query=query, query_cut=query_cut, prefix=prefix, status=status,
                   status_choices=STATUS_CHOICES,
                   searching=bool(query), max_chars=message_log.SEARCH_MAX_CHARS)
    template = "messages/_table.html" if htmx_target() == "messages-table" else "messages/index.html"
    response = make_response(render_template(template, **context))
    response.vary.update(("HX-Request", "HX-Target"))  # one URL, two bodies: caches must keep them apart
    return response


@bp.get("/messages/<int:message_id>")
@login_required
def show(message_id: int):
    """One message and the provider's callbacks about it, newest first (the table loads the history by htmx)."""
    message = team_get_or_404(Message, message_id)
    if message.campaign_id is None:
        abort(404)
    callbacks, more = message_log.callback_history(message.id, message.team_id)
    context = dict(message=message, callbacks=callbacks, more=more, limit=message_log.HISTORY_LIMIT)
    if htmx_target() == f"history-{message.id}":
        template = "messages/_history_row.html"
    else:
        template, context["campaign"] = "messages/show.html", team_get_or_404(Campaign, message.campaign_id)
    response = make_response(render_template(template, **context))
    response.vary.update(("HX-Request", "HX-Target"))
    return response


@bp.get("/campaigns/<int:campaign_id>/messages.csv")
@login_required
def export(campaign_id: int):
    """The whole campaign as CSV, streamed, with each recipient's contact fields, separated like the team's
    uploads (or ?separator=comma|semicolon|tab|pipe); cells a spreadsheet would run as formulas are
    neutralised (an E.164 number is written '+1415…, as in every export: see csvfiles.neutralize_cell)."""
    campaign = team_get_or_404(Campaign, campaign_id)
    team = current_user.team
    separator = export_separator(team.id, request.args.get("separator"))
    rows = message_log.export_rows(campaign.id, team.timezone, team.currency)
    name = secure_filename(f"{campaign.name}-messages-{datetime.now():%Y%m%d}.csv") or "messages.csv"
    return Response(stream_with_context(stream_csv(rows, separator)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
