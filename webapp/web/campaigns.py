"""Campaigns: drafts (audience, message, sender, image, footer; preview, summary, test sends), the launch
confirmation, and a launched campaign's page (state, live counts, actions, audit log)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from wtforms.fields.choices import SelectChoice

from webapp.extensions import db
from webapp.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    ContactList,
    MessageTemplate,
    SenderNumber,
    utcnow,
)
from webapp.services import audience, batches, campaign_states, campaigns, compose, progress, tallies, test_sends
from webapp.services.disk import NOTHING_SAVED, DiskFull
from webapp.services.teams import team_credentials
from webapp.tally_triggers import BUCKETS
from webapp.web import charts
from webapp.web.access import team_get_or_404, team_select
from webapp.web.forms import BudgetCapForm, CampaignForm, CampaignImageForm, ComposerForm, LaunchForm, TestSendForm

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")


def _choices(form: CampaignForm) -> None:
    """The team's lists, templates and senders as select choices (0: none)."""
    lists = db.session.execute(team_select(ContactList).with_only_columns(ContactList.id, ContactList.name)
                               .order_by(ContactList.name)).all()
    for position, entry in enumerate(form.lists):
        entry.label.text = "First list" if position == 0 else f"List {position + 1}"
        entry.choices = [SelectChoice(0, "— none —" if position else "— choose a list —"),
                         *(SelectChoice(row.id, row.name) for row in lists)]
    templates = db.session.execute(team_select(MessageTemplate).with_only_columns(
        MessageTemplate.id, MessageTemplate.name).order_by(MessageTemplate.name)).all()
    form.template_id.choices = [SelectChoice(0, "— an empty message —"),
                                *(SelectChoice(row.id, row.name) for row in templates)]
    senders = db.session.scalars(team_select(SenderNumber).order_by(SenderNumber.id)).all()
    form.sender_number_id.choices = [SelectChoice(0, "— choose a sender —"),
                                     *(SelectChoice(s.id, f"{s.number} {s.label}".strip()) for s in senders)]


def _list_ids(form: CampaignForm) -> list[int]:
    return [entry.data for entry in form.lists if entry.data]


@bp.get("/")
@login_required
def index():
    """The team's campaigns, newest first."""
    rows = db.session.scalars(team_select(Campaign).order_by(Campaign.id.desc()).limit(200)).all()
    return render_template("campaigns/index.html", campaigns=rows)


@bp.get("/new")
@login_required
def new():
    """Name, audience, template and sender of a new draft."""
    form = CampaignForm(formdata=None)
    _choices(form)
    if len(form.sender_number_id.choices) == 2:  # the team's only sender: nothing to choose
        form.sender_number_id.data = form.sender_number_id.choices[1].value
    return render_template("campaigns/new.html", form=form, errors=[])


@bp.post("/")
@login_required
def create():
    """Create the draft (the template's text is copied into it) and open it."""
    form = CampaignForm()
    _choices(form)
    if not form.validate():
        return render_template("campaigns/new.html", form=form, errors=[]), 400
    try:
        campaign = campaigns.create_draft(
            current_user.team_id, current_user.id, name=form.name.data, list_ids=_list_ids(form),
            template_id=form.template_id.data or None, sender_number_id=form.sender_number_id.data or None,
            include_footer=form.footer.data != "off")
    except campaigns.DraftProblem as problem:
        db.session.rollback()
        return render_template("campaigns/new.html", form=form, errors=problem.messages), 400
    return redirect(url_for("campaigns.show", campaign_id=campaign.id))


def _page(campaign: Campaign, form: CampaignForm | None = None, composer: ComposerForm | None = None,
          errors: list[str] | None = None, status: int = 200, image_errors: list[str] | None = None):
    if form is None:
        form = CampaignForm(formdata=None, obj=campaign)
        for entry, list_id in zip(form.lists, [*campaign.list_ids, 0, 0, 0, 0, 0], strict=False):
            entry.data = list_id
        form.footer.data = "on" if campaign.include_footer else "off"
        form.sender_number_id.data = campaign.sender_number_id or 0
    _choices(form)
    composer = composer or ComposerForm(formdata=None)
    state = compose.composer_state(
        current_user.team, form.body.data or "", list_id=composer.sample_list.data or (campaign.list_ids or [None])[0],
        contact_id=composer.sample_contact.data or None, include_footer=form.footer.data != "off",
        is_mms=campaign.is_mms, field_lists=campaign.list_ids or None)
    summary = audience.latest_summary(campaign)
    return render_template(
        "campaigns/show.html", campaign=campaign, form=form, composer=composer, state=state, errors=errors or [],
        image_form=CampaignImageForm(formdata=None), image_errors=image_errors or [],
        test_form=TestSendForm(formdata=None), test_allowance=_test_allowance(), summary=summary,
        summary_stale=summary is not None and summary.fingerprint != audience.fingerprint(campaign),
        mms_max_kb=current_app.config["MMS_MAX_BYTES"] // 1024,
    ), status


@bp.get("/<int:campaign_id>")
@login_required
def show(campaign_id: int):
    """A draft: composer, image, test send, audience preview and summary; once launched, its state and log."""
    campaign = team_get_or_404(Campaign, campaign_id)
    if campaign.status.is_editable:
        return _page(campaign)
    return render_template("campaigns/show.html", campaign=campaign, budget_form=BudgetCapForm(
        formdata=None, budget_cap=campaign.budget_cap), **_status_context(campaign))


@bp.post("/<int:campaign_id>")
@login_required
def update(campaign_id: int):
    """Save the draft; a refused message is not saved and the reasons say where."""
    campaign = team_get_or_404(Campaign, campaign_id)
    form, composer = CampaignForm(), ComposerForm()
    _choices(form)
    if not form.validate():
        return _page(campaign, form, composer, status=400)
    try:
        campaigns.update_draft(campaign, name=form.name.data, list_ids=_list_ids(form), body=form.body.data or "",
                               sender_number_id=form.sender_number_id.data or None,
                               include_footer=form.footer.data != "off")
    except campaigns.DraftProblem as problem:
        db.session.rollback()
        return _page(campaign, form, composer, problem.messages, 400)
    flash("Draft saved." if campaign.include_footer else
          "Draft saved. The opt-out footer is left off this campaign, as you chose.", "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign.id))


@bp.post("/<int:campaign_id>/delete")
@login_required
def delete(campaign_id: int):
    """Delete a draft."""
    campaign = team_get_or_404(Campaign, campaign_id)
    try:
        campaigns.delete_draft(campaign, current_app.config["UPLOAD_FOLDER"])
    except campaigns.DraftProblem as problem:
        flash(str(problem), "error")
        return redirect(url_for("campaigns.show", campaign_id=campaign_id))
    flash(f"Draft “{campaign.name}” deleted.", "success")
    return redirect(url_for("campaigns.index"))


@bp.post("/<int:campaign_id>/image")
@login_required
def upload_image(campaign_id: int):
    """Attach the MMS image, checked by its content and size."""
    campaign = team_get_or_404(Campaign, campaign_id)
    form = CampaignImageForm()
    if not form.validate():
        return _page(campaign, image_errors=form.image.errors, status=400)
    upload = form.image.data
    data = upload.stream.read(current_app.config["MMS_MAX_BYTES"] + 1)
    try:
        campaigns.store_image(campaign, data, upload.filename, current_app.config["UPLOAD_FOLDER"],
                              current_app.config["MMS_MAX_BYTES"])
    except campaigns.DraftProblem as problem:
        return _page(campaign, image_errors=problem.messages, status=400)
    flash("Image attached: the campaign is now an MMS.", "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@bp.errorhandler(DiskFull)
def disk_full(_error):
    """No room for the image (or for its copy while the form is read): the draft says so; nothing was kept."""
    campaign_id = (request.view_args or {}).get("campaign_id")
    if request.endpoint != "campaigns.upload_image" or campaign_id is None:
        return render_template("error.html", code=507, title="Disk full", message=NOTHING_SAVED), 507
    return _page(team_get_or_404(Campaign, campaign_id), image_errors=[campaigns.IMAGE_NOT_SAVED], status=507)


@bp.post("/<int:campaign_id>/image/delete")
@login_required
def remove_image(campaign_id: int):
    """Remove the image: back to SMS."""
    campaign = team_get_or_404(Campaign, campaign_id)
    campaigns.remove_image(campaign, current_app.config["UPLOAD_FOLDER"])
    flash("Image removed: the campaign is an SMS again.", "success")
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


@bp.get("/<int:campaign_id>/image")
@login_required
def image(campaign_id: int):
    """The campaign's image, for its preview."""
    campaign = team_get_or_404(Campaign, campaign_id)
    path = campaigns.image_path(campaign, current_app.config["UPLOAD_FOLDER"])
    if path is None or not path.exists():
        abort(404)
    return send_file(path, mimetype=campaign.image_mime, max_age=0)


@bp.get("/<int:campaign_id>/preview")
@login_required
def preview(campaign_id: int):
    """A page of the audience's rendered messages (an htmx fragment)."""
    campaign = team_get_or_404(Campaign, campaign_id)
    try:
        page = audience.preview_page(campaign, request.args.get("page", 1, type=int))
    except audience.AudienceProblem as problem:
        return render_template("campaigns/_preview.html", campaign=campaign, page=None, problem=str(problem))
    return render_template("campaigns/_preview.html", campaign=campaign, page=page, problem=None)


@bp.post("/<int:campaign_id>/summary")
@login_required
def summarize(campaign_id: int):
    """Summarize the whole audience: now when it is small, else in a job whose progress the fragment polls."""
    campaign = team_get_or_404(Campaign, campaign_id)
    try:
        summary = audience.request_summary(campaign, current_app.config["AUDIENCE_INLINE_LIMIT"])
    except audience.AudienceProblem as problem:
        return render_template("campaigns/_summary.html", campaign=campaign, summary=None, stale=False,
                               problem=str(problem))
    return render_template("campaigns/_summary.html", campaign=campaign, summary=summary, stale=False, problem=None)


@bp.get("/<int:campaign_id>/summary")
@login_required
def summary(campaign_id: int):
    """The latest summary (polled while a job computes it)."""
    campaign = team_get_or_404(Campaign, campaign_id)
    latest = audience.latest_summary(campaign)
    stale = latest is not None and latest.fingerprint != audience.fingerprint(campaign)
    return render_template("campaigns/_summary.html", campaign=campaign, summary=latest, stale=stale, problem=None)


@bp.post("/<int:campaign_id>/test-send")
@login_required
def test_send(campaign_id: int):
    """Send the message rendered for a sample to the team's test numbers; the outcomes inline."""
    campaign = team_get_or_404(Campaign, campaign_id)
    form = TestSendForm()
    try:
        sample = campaigns.sample_for(campaign, form.sample_contact.data or None, form.sample_values.data or "")
        messages = campaigns.send_test(campaign, sample, current_app.config["MULTITEL_API_URL"],
                                       current_app.config["UPLOAD_FOLDER"])
    except campaigns.DraftProblem as problem:
        return render_template("campaigns/_test_send.html", messages=[], problem=str(problem))
    except test_sends.Refused as refused:  # a limit, the rate or the budget cap: nothing was sent
        db.session.rollback()
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
        return render_template("campaigns/_test_send.html", messages=[], problem=str(refused), refused=True,
                               allowance=_test_allowance()), refused.status, headers
    return render_template("campaigns/_test_send.html", messages=messages, problem=None,
                           allowance=_test_allowance())


def _test_allowance() -> test_sends.Allowance:
    """The team's test messages left now, for the line under the test-send form."""
    return test_sends.allowance(current_user.team_id, test_sends.Limits.from_config(current_app.config))


# --- launching and steering a campaign (issue 10) ---------------------------------------------------

# The page polls its status fragment while something can change by itself: every 2 s while it sends or
# waits for its time; every 10 s while paused, or while a finished campaign's messages still await their
# delivery reports (for 48 hours after it ended: later reports are rare, and a reload shows them).
LIVE = (CampaignStatus.SENDING, CampaignStatus.SCHEDULED)
FINAL = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED)
AWAITING_REPORT = ("sending", "accepted", "unknown")  # tally buckets that still expect a delivery report
LIVE_POLL_SECONDS, SLOW_POLL_SECONDS, SCHEDULED_POLL_SECONDS = 2, 10, 30
SCHEDULED_SOON = timedelta(minutes=2)  # closer than this to its time, a scheduled campaign is polled live
REPORTS_AWAITED_FOR = timedelta(hours=48)
AUDIT_SHOWN = 100
REASONS_SHOWN = 10
# The chart's cumulative lines: (label, column of tallies.minutes() rows, CSS class).
CHART_SERIES = (("Posts (retries too)", 1, "line-posted"), ("Delivered", 2, "line-delivered"),
                ("Failed", 3, "line-failed"))


def _team_zone() -> ZoneInfo:
    try:
        return ZoneInfo(current_user.team.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _team_time(moment: datetime | None) -> str:
    """A stored (naive UTC) moment as the team's wall-clock time."""
    if moment is None:
        return ""
    return moment.replace(tzinfo=UTC).astimezone(_team_zone()).strftime("%Y-%m-%d %H:%M")


def _exclusion_label(reason: str) -> str:
    try:
        return audience.Exclusion(reason).label
    except ValueError:
        return reason


def _duration(seconds: float) -> str:
    """A time left as people say it: "40 s", "12 min", "3 h 5 min", "2 days 4 h"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{max(seconds, 1)} s"
    minutes, hours = seconds // 60, seconds // 3600
    if hours < 1:
        return f"{minutes} min"
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} days {hours % 24} h"


@bp.context_processor
def _engine_helpers() -> dict:
    """Times in the team's zone, durations and exclusion labels, for the campaign templates."""
    return {"team_time": _team_time, "team_zone": lambda: _team_zone().key, "exclusion_label": _exclusion_label,
            "duration": _duration, "clock_time": _clock_time}


def _require_editor() -> None:
    if not current_user.can_edit:
        abort(403)


def _back(campaign_id: int):
    return redirect(url_for("campaigns.show", campaign_id=campaign_id))


def _not_a_draft(campaign: Campaign):
    """A second launch (a double submit, another editor) lands on the campaign's state, not an error."""
    flash(f"This campaign is {campaign.status.value} already, so there is nothing to launch.", "warning")
    return _back(campaign.id)


def _confirm_page(campaign: Campaign, form: LaunchForm, status: int = 200, problem: str | None = None):
    team = current_user.team
    body, footer = campaigns.message_body(campaign)
    return render_template(
        "campaigns/confirm.html", campaign=campaign, form=form, team=team, body=body, footer=footer,
        problems=campaign_states.launch_problems(campaign), summary=audience.latest_summary(campaign),
        summary_problem=problem, has_credentials=team_credentials(team) is not None,
        zone_now=datetime.now(_team_zone()).strftime("%Y-%m-%d %H:%M"),
    ), status


@bp.get("/<int:campaign_id>/launch")
@login_required
def confirm(campaign_id: int):
    """Review before launch: recipients, exclusions, estimate, schedule and caps."""
    _require_editor()
    campaign = team_get_or_404(Campaign, campaign_id)
    if not campaign.status.is_editable:
        return _not_a_draft(campaign)
    problem = None
    try:  # reused when nothing changed; computed now for a small audience, else by a job the page polls
        audience.request_summary(campaign, current_app.config["AUDIENCE_INLINE_LIMIT"])
    except audience.AudienceProblem as error:
        problem = str(error)
    form = LaunchForm(formdata=None, budget_cap=campaign.budget_cap, quiet_hours=campaign.quiet_hours,
                      quiet_start=_clock(campaign.quiet_start), quiet_end=_clock(campaign.quiet_end),
                      send_date=datetime.now(_team_zone()).date())
    return _confirm_page(campaign, form, problem=problem)


def _clock(value: str | None):
    try:
        return datetime.strptime(value, "%H:%M").time() if value else None
    except ValueError:
        return None


@bp.get("/<int:campaign_id>/launch/figures")
@login_required
def launch_figures(campaign_id: int):
    """The confirmation's figures, polled while a job summarizes a big audience."""
    campaign = team_get_or_404(Campaign, campaign_id)
    return render_template("campaigns/_launch_figures.html", campaign=campaign,
                           summary=audience.latest_summary(campaign), summary_problem=None)


@bp.post("/<int:campaign_id>/launch")
@login_required
def launch(campaign_id: int):
    """Launch now or schedule, with this campaign's caps; refused moves land on the campaign's state."""
    _require_editor()
    campaign = team_get_or_404(Campaign, campaign_id)
    if not campaign.status.is_editable:
        return _not_a_draft(campaign)
    form = LaunchForm()
    form.zone = _team_zone()
    if not form.validate():
        return _confirm_page(campaign, form, 400)
    campaign.budget_cap = form.budget_cap.data
    campaign.quiet_hours = form.quiet_hours.data
    if form.quiet_hours.data:
        campaign.quiet_start, campaign.quiet_end = f"{form.quiet_start.data:%H:%M}", f"{form.quiet_end.data:%H:%M}"
    try:  # the caps are written in the same transaction as launch's guarded UPDATE, or not at all
        at = form.send_at()  # in the team's zone, so the log reads "for 2030-07-01 09:30 EDT"
        status = campaign_states.launch(campaign.id, current_user.id, at=at and at.astimezone(_team_zone()))
    except campaign_states.CampaignProblem as problem:
        db.session.rollback()
        flash(str(problem), "warning")
        return _back(campaign_id)
    if status is CampaignStatus.SCHEDULED:
        flash(f"Scheduled for {_team_time(campaign.scheduled_at)} ({_team_zone().key}).", "success")
    else:  # no "then sending starts": the flash stays on screen while the polled state moves on
        flash("Launched.", "success")
    return _back(campaign_id)


def _poll_seconds(campaign: Campaign, figures: tallies.Figures) -> int | None:
    """How often the page asks for fresh figures, or None to stop: the fragment then has no trigger."""
    if campaign.status is CampaignStatus.SCHEDULED and campaign.scheduled_at - utcnow() > SCHEDULED_SOON:
        return SCHEDULED_POLL_SECONDS  # nothing changes until then, but someone else may launch or unschedule
    if campaign.status in LIVE:
        return LIVE_POLL_SECONDS
    if campaign.status is CampaignStatus.PAUSED:
        return SLOW_POLL_SECONDS
    if (campaign.status in FINAL and campaign.finished_at is not None and figures.count(*AWAITING_REPORT)
            and utcnow() - campaign.finished_at < REPORTS_AWAITED_FOR):
        return SLOW_POLL_SECONDS  # sending ended; delivery reports still arrive
    return None


def _status_context(campaign: Campaign) -> dict:
    """Figures (from the tallies, never a count of the messages), the timeline chart, and who did what."""
    overdue_after = current_app.config["REPORT_OVERDUE_SECONDS"]
    shown = progress.progress(campaign, overdue_after)
    figures = shown.figures
    audit = db.session.scalars(
        select(AuditEntry).options(joinedload(AuditEntry.user)).where(AuditEntry.campaign_id == campaign.id)
        .order_by(AuditEntry.id.desc()).limit(AUDIT_SHOWN)).all()
    return {
        "shown": shown, "figures": figures, "counts": {bucket: figures.count(bucket) for bucket in BUCKETS},
        "total": figures.messages, "done": figures.done, "percent": figures.percent_for(campaign.status) or 0,
        "stopped": campaign.status in tallies.STOPPED, "only_held": _only_held(campaign, figures),
        "in_flight_minutes": -(-current_app.config["SEND_IN_FLIGHT_SECONDS"] // 60),
        "billed": figures.billed, "spend": figures.spend, "estimated": figures.estimated,
        "fate_unknown": figures.count(*tallies.UNCONFIRMED), "up_to_more": figures.unconfirmed_spend,
        "replaced": figures.count("replaced"), "replaced_estimate": figures.total("unbilled", ("replaced",)),
        "held": figures.count("held"), "held_until": shown.held_until,
        "sent_twice": int(figures.total("sent_twice")), "mismatched": int(figures.total("mismatched")),
        "reasons": figures.reasons[:REASONS_SHOWN], "more_reasons": max(0, len(figures.reasons) - REASONS_SHOWN),
        "chart": charts.cumulative_chart(shown.timeline, CHART_SERIES, campaign.launched_at or utcnow(),
                                         campaign.finished_at or utcnow(), _team_zone()),
        "cap_percent": progress.spend_against(figures, campaign.budget_cap),
        "unconfirmed": shown.unconfirmed, "grace_minutes": current_app.config["UNCONFIRMED_GRACE_SECONDS"] // 60,
        "overdue_minutes": overdue_after // 60, "count_cap": progress.COUNT_CAP,
        "audit": audit, "poll_seconds": _poll_seconds(campaign, figures), "currency": current_user.team.currency,
        "final": campaign.status in FINAL,
        "waiting": batches.waiting(campaign, utcnow()),
        # Before the audience is frozen there are no rows to add up: the review's estimate stands in.
        "summary": audience.latest_summary(campaign) if campaign.prepared_at is None else None,
    }


def _only_held(campaign: Campaign, figures: tallies.Figures) -> bool:
    """Sending, and nothing is left but messages held for quiet hours: the state line says so and offers a choice."""
    return (campaign.status is CampaignStatus.SENDING and campaign.prepared_at is not None
            and figures.count("held") > 0 and not figures.count("created", "sending"))


def _clock_time(moment: datetime | None) -> str:
    """A stored moment as the team's wall clock: "22:00" today, with its date on another day."""
    if moment is None:
        return ""
    zone = _team_zone()
    local = moment.replace(tzinfo=UTC).astimezone(zone)
    return f"{local:%H:%M}" if local.date() == datetime.now(zone).date() else f"{local:%Y-%m-%d %H:%M}"


@bp.get("/<int:campaign_id>/status")
@login_required
def status(campaign_id: int):
    """The campaign's state, counts, actions and log (the fragment the page polls while it sends)."""
    campaign = team_get_or_404(Campaign, campaign_id)
    return render_template("campaigns/_status.html", campaign=campaign, oob=True, **_status_context(campaign))


def _act(campaign_id: int, action, done: str):
    """Run one state change for the current user; a refusal (it moved on meanwhile) is said, not raised."""
    campaign = team_get_or_404(Campaign, campaign_id)
    try:
        result = action(campaign.id, current_user.id)
    except campaign_states.CampaignProblem as problem:
        db.session.rollback()
        flash(str(problem), "warning")
    else:
        flash(done.format(result=result, plural="s" if result != 1 else ""), "success")
    return _back(campaign_id)


@bp.post("/<int:campaign_id>/pause")
@login_required
def pause(campaign_id: int):
    """Pause: a batch in progress stops before its next group."""
    who = current_user.name or current_user.email
    return _act(campaign_id, lambda cid, uid: campaign_states.pause(cid, uid, f"Paused by {who}."),
                "Paused. Messages already on their way finish; nothing else leaves until you resume.")


@bp.post("/<int:campaign_id>/resume")
@login_required
def resume(campaign_id: int):
    """Resume from where it stopped."""
    return _act(campaign_id, campaign_states.resume, "Resumed from where it stopped.")


@bp.post("/<int:campaign_id>/cancel")
@login_required
def cancel(campaign_id: int):
    """Cancel for good; what was sent stays accounted for."""
    campaign = team_get_or_404(Campaign, campaign_id)
    try:
        not_sent = campaign_states.cancel(campaign.id, current_user.id)
    except campaign_states.CampaignProblem as problem:
        db.session.rollback()
        flash(str(problem), "warning")
        return _back(campaign_id)
    flash(_cancelled_text(campaign.id, not_sent), "success")
    return _back(campaign_id)


def _cancelled_text(campaign_id: int, not_sent: int) -> str:
    """What a cancel did: nothing, when the audience was never frozen; else what was and wasn't sent."""
    figures = tallies.figures(campaign_id)
    if not figures.messages:
        return "Cancelled before sending started: nothing was sent."
    sent = figures.sent + figures.count("sending")
    return (f"Cancelled: {not_sent:,} message{'s' if not_sent != 1 else ''} will not be sent; "
            f"{sent:,} had been sent.")


@bp.post("/<int:campaign_id>/cancel-held")
@login_required
def cancel_held(campaign_id: int):
    """Cancel the messages held for quiet hours instead of sending them at their window (audited)."""
    _require_editor()
    return _act(campaign_id, campaign_states.cancel_held,
                "{result:,} held message{plural} will not be sent.")


@bp.post("/<int:campaign_id>/unschedule")
@login_required
def unschedule(campaign_id: int):
    """A scheduled campaign goes back to draft, to be edited."""
    return _act(campaign_id, campaign_states.unschedule, "Back to draft: edit it and launch again when ready.")


@bp.post("/<int:campaign_id>/resend")
@login_required
def resend(campaign_id: int):
    """Resend the messages no callback confirmed (an audited choice; each gets a new reference)."""
    return _act(campaign_id, campaign_states.resend_unconfirmed,
                "{result:,} unconfirmed messages queued again, each with a new reference.")


@bp.post("/<int:campaign_id>/budget")
@login_required
def budget(campaign_id: int):
    """Raise, lower or remove a launched campaign's budget cap (a cap pause asks for it), audited."""
    campaign = team_get_or_404(Campaign, campaign_id)
    form = BudgetCapForm()
    if campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED):
        flash(f"This campaign is {campaign.status.value}; its budget cap can't change now.", "warning")
    elif not form.validate():
        flash(" ".join(form.budget_cap.errors), "error")
    else:
        campaign.budget_cap = form.budget_cap.data
        currency = current_user.team.currency
        cap = "removed" if form.budget_cap.data is None else f"set to {form.budget_cap.data} {currency}"
        campaign_states.audit(campaign.id, current_user.id, "budget cap", cap)
        db.session.commit()
        flash(f"Budget cap {cap}." + (" Resume the campaign to carry on." if campaign.status is
                                      CampaignStatus.PAUSED else ""), "success")
    return _back(campaign_id)
