"""Team settings: the MultiTEL account, sender numbers, price per part, default country, and sending
(time zone, send rate, frequency cap)."""

from dataclasses import replace

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp.encryption import DecryptionError, encrypt
from webapp.extensions import db
from webapp.models import SenderNumber, Team
from webapp.provider import multitel
from webapp.services import compose
from webapp.services.countries import country_name, main_zone
from webapp.services.phones import Rejection, normalize
from webapp.services.teams import credentials_to_test, inbound_url
from webapp.web.access import admin_required, team_get_or_404
from webapp.web.forms import (
    COUNTRY_CHOICES,
    MessageSettingsForm,
    ProviderSettingsForm,
    SenderNumberForm,
    SendingSettingsForm,
)

bp = Blueprint("settings", __name__, url_prefix="/settings")

def _provider_form(team: Team) -> ProviderSettingsForm:
    form = ProviderSettingsForm(obj=team)
    form.default_country.choices = COUNTRY_CHOICES
    return form


def _message_form(team: Team) -> MessageSettingsForm:
    return MessageSettingsForm(optout_footer=team.optout_footer, test_numbers="\n".join(team.test_numbers or []),
                               mms_price=team.mms_price,
                               country_prices=compose.format_country_prices(team.country_prices))


def _render(provider_form=None, sender_form=None, status=200, message_form=None, sending_form=None):
    team = current_user.team
    return render_template(
        "settings/index.html",
        team=team,
        provider_form=provider_form or _provider_form(team),
        sender_form=sender_form or SenderNumberForm(),
        message_form=message_form or _message_form(team),
        sending_form=sending_form or SendingSettingsForm(formdata=None, obj=team),
        has_password=bool(team.api_password_encrypted),
        inbound_url=inbound_url(team),
        default_country_name=country_name(team.default_country),
    ), status


@bp.get("/")
@login_required
@admin_required
def index():
    """Show the team's provider account, senders and prices."""
    return _render()


@bp.post("/")
@login_required
@admin_required
def update():
    """Save the provider account; an empty password field keeps the stored password."""
    team = current_user.team
    form = _provider_form(team)
    if not form.validate():
        return _render(provider_form=form, status=400)
    password = form.api_password.data
    del form.api_password  # write-only: stored encrypted below, never copied onto the row
    form.populate_obj(team)
    if not team.timezone_chosen:  # nobody chose the zone yet: it follows the default country
        team.timezone = main_zone(team.default_country)
    if password:
        team.api_password_encrypted = encrypt(password)
    db.session.commit()
    flash("Settings saved.", "success")
    return redirect(url_for("settings.index"))


@bp.post("/senders")
@login_required
@admin_required
def add_sender():
    """Add a sender number, checked and stored in E.164."""
    team = current_user.team
    form = SenderNumberForm()
    if form.validate():
        try:
            number = normalize(form.number.data, team.default_country)
        except Rejection as rejection:
            form.number.errors.append(f"Not a valid number: {rejection.message}")
        else:
            exists = db.session.scalar(
                select(SenderNumber.id).where(SenderNumber.team_id == team.id, SenderNumber.number == number.e164)
            )
            if exists:
                form.number.errors.append(f"{number.e164} is already a sender number.")
            else:
                db.session.add(SenderNumber(team_id=team.id, number=number.e164, label=form.label.data or ""))
                db.session.commit()
                flash(f"{number.e164} added.", "success")
                return redirect(url_for("settings.index"))
    return _render(sender_form=form, status=400)


@bp.post("/senders/<int:sender_id>/delete")
@login_required
@admin_required
def delete_sender(sender_id: int):
    """Remove a sender number."""
    sender = team_get_or_404(SenderNumber, sender_id)
    db.session.delete(sender)
    db.session.commit()
    flash(f"{sender.number} removed.", "success")
    return redirect(url_for("settings.index"))


@bp.post("/test-connection")
@login_required
@admin_required
def test_connection():
    """Try the username and password typed on the form, saved or not, against the provider and say plainly
    what is wrong (an htmx fragment: htmx posts the form's current values). The password is never
    written back into the page."""
    team = current_user.team
    form = _provider_form(team)
    try:  # an empty field means the stored value, as saving does for the password
        credentials, saved = credentials_to_test(team, form.api_username.data or team.api_username,
                                                 form.api_password.data)
    except (ValueError, DecryptionError) as problem:
        return render_template("settings/_connection.html", check=multitel.ConnectionCheck(False, str(problem)))
    check = multitel.check_connection(current_app.config["MULTITEL_API_URL"], credentials)
    password = "the password typed on the form" if form.api_password.data else "the stored password"
    tried = (f"Tried username “{credentials.username}” with {password}"
             + ("." if saved else "; not saved yet: press Save to keep them."))
    check = replace(check, verified_by=" ".join(filter(None, [check.verified_by, tried])))
    return render_template("settings/_connection.html", check=check)


@bp.post("/messages")
@login_required
@admin_required
def update_messages():
    """Save the opt-out footer, test numbers, MMS price and country prices (all or nothing)."""
    team = current_user.team
    form = MessageSettingsForm()
    if form.validate():
        try:
            compose.update_message_settings(team, footer=form.optout_footer.data, test_numbers=form.test_numbers.data,
                                            mms_price=form.mms_price.data, country_prices=form.country_prices.data)
        except compose.ComposeProblem as problem:
            form.test_numbers.errors = list(problem.messages)
        else:
            flash("Message settings saved.", "success")
            return redirect(url_for("settings.index"))
    return _render(message_form=form, status=400)


@bp.post("/sending")
@login_required
@admin_required
def update_sending():
    """Save the team's time zone, send rate and frequency cap (all or nothing)."""
    team = current_user.team
    form = SendingSettingsForm()
    if not form.validate():
        return _render(sending_form=form, status=400)
    form.populate_obj(team)
    team.timezone_chosen = True
    db.session.commit()
    flash("Sending settings saved.", "success")
    return redirect(url_for("settings.index"))
