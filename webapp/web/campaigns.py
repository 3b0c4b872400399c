"""Campaign drafts: audience, message, sender, image, footer choice; preview, summary and test sends."""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from webapp.extensions import db
from webapp.models import Campaign, ContactList, MessageTemplate, SenderNumber
from webapp.services import audience, campaigns, compose
from webapp.web.access import team_get_or_404, team_select
from webapp.web.forms import CampaignForm, CampaignImageForm, ComposerForm, TestSendForm

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
        test_form=TestSendForm(formdata=None), summary=summary,
        summary_stale=summary is not None and summary.fingerprint != audience.fingerprint(campaign),
        mms_max_kb=current_app.config["MMS_MAX_BYTES"] // 1024,
    ), status


@bp.get("/<int:campaign_id>")
@login_required
def show(campaign_id: int):
    """The draft: composer, image, test send, audience preview and summary."""
    return _page(team_get_or_404(Campaign, campaign_id))


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
    return render_template("campaigns/_test_send.html", messages=messages, problem=None)
