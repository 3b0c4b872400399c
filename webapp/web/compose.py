"""Message templates (create, edit, duplicate, delete) and the live composer's counts."""

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.extensions import db
from webapp.models import Campaign, MessageTemplate
from webapp.services import compose
from webapp.web.access import team_get_or_404, team_select
from webapp.web.forms import ComposerForm, TemplateForm

bp = Blueprint("compose", __name__)


def _campaign(form: ComposerForm) -> Campaign | None:
    """The draft the composer belongs to, when it names one (the team's, or 404)."""
    return team_get_or_404(Campaign, form.campaign_id.data) if form.campaign_id.data else None


def _unsaved(form: ComposerForm, campaign: Campaign | None) -> bool:
    """The typed message or footer choice differs from the saved draft, which the review and test sends read."""
    if campaign is None:
        return False
    typed, saved = ((text or "").replace("\r\n", "\n") for text in (form.body.data, campaign.body))
    return typed != saved or (form.footer.data != "off") != campaign.include_footer


def _state(form: ComposerForm, body: str | None = None, campaign: Campaign | None = None) -> compose.ComposerState:
    """The composer's counts for what the form holds (a campaign's lists and image when it names one)."""
    campaign = campaign or _campaign(form)
    return compose.composer_state(
        current_user.team, (form.body.data or "") if body is None else body,
        list_id=form.sample_list.data or None, contact_id=form.sample_contact.data or None,
        include_footer=form.footer.data != "off", is_mms=bool(campaign and campaign.is_mms),
        field_lists=campaign.list_ids if campaign else None,
    )


def _editor(template: MessageTemplate | None, form: TemplateForm, composer: ComposerForm,
            errors: list[str] | None = None, status: int = 200):
    state = _state(composer, form.body.data or "")
    return render_template("compose/edit.html", template=template, form=form, composer=composer, state=state,
                           errors=errors or []), status


@bp.get("/templates/")
@login_required
def index():
    """The team's message templates."""
    templates = db.session.scalars(team_select(MessageTemplate).order_by(MessageTemplate.name)).all()
    return render_template("compose/index.html", templates=templates)


@bp.get("/templates/new")
@login_required
def new():
    """An empty composer."""
    return _editor(None, TemplateForm(formdata=None), ComposerForm(formdata=None))


@bp.post("/templates/")
@login_required
def create():
    """Save a new template; refused placeholders are listed with line and column."""
    form, composer = TemplateForm(), ComposerForm()
    if not form.validate():
        return _editor(None, form, composer, status=400)
    try:
        template = compose.create_template(current_user.team_id, current_user.id, form.name.data, form.body.data)
    except compose.ComposeProblem as problem:
        return _editor(None, form, composer, problem.messages, 400)
    flash(f"Template “{template.name}” saved.", "success")
    return redirect(url_for("compose.edit", template_id=template.id))


@bp.get("/templates/<int:template_id>")
@login_required
def edit(template_id: int):
    """The composer for one template."""
    template = team_get_or_404(MessageTemplate, template_id)
    return _editor(template, TemplateForm(formdata=None, obj=template), ComposerForm(formdata=None))


@bp.post("/templates/<int:template_id>")
@login_required
def update(template_id: int):
    """Save the template; campaigns made from it keep their own copy."""
    template = team_get_or_404(MessageTemplate, template_id)
    form, composer = TemplateForm(), ComposerForm()
    if not form.validate():
        return _editor(template, form, composer, status=400)
    try:
        compose.update_template(template, form.name.data, form.body.data)
    except compose.ComposeProblem as problem:
        db.session.rollback()
        return _editor(template, form, composer, problem.messages, 400)
    flash(f"Template “{template.name}” saved.", "success")
    return redirect(url_for("compose.edit", template_id=template.id))


@bp.post("/templates/<int:template_id>/duplicate")
@login_required
def duplicate(template_id: int):
    """Copy a template and open the copy."""
    copy = compose.duplicate_template(team_get_or_404(MessageTemplate, template_id), current_user.id)
    flash(f"Copied as “{copy.name}”.", "success")
    return redirect(url_for("compose.edit", template_id=copy.id))


@bp.post("/templates/<int:template_id>/delete")
@login_required
def delete(template_id: int):
    """Delete a template; drafts made from it keep their text."""
    template = team_get_or_404(MessageTemplate, template_id)
    compose.delete_template(template)
    flash(f"Template “{template.name}” deleted.", "success")
    return redirect(url_for("compose.index"))


@bp.post("/compose/measure")
@login_required
def measure():
    """The counts fragment for the text as typed (htmx, debounced); the sample contact choices too when the
    sample list changed."""
    composer = ComposerForm()
    campaign = _campaign(composer)
    state = _state(composer, campaign=campaign)
    list_changed = composer.shown_list.data != state.list_id
    return render_template("compose/_measure.html", composer=composer, state=state, list_changed=list_changed,
                           unsaved=_unsaved(composer, campaign))


@bp.post("/compose/gsm")
@login_required
def replace_gsm():
    """Replace the template's UCS-2 culprits with GSM-7 equivalents: the new textarea, and fresh counts."""
    composer = ComposerForm()
    composer.body.data = compose.replace_with_gsm(composer.body.data or "")
    campaign = _campaign(composer)
    state = _state(composer, campaign=campaign)
    return render_template("compose/_replaced.html", composer=composer, state=state,
                           unsaved=_unsaved(composer, campaign))

