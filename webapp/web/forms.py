"""Flask-WTF forms shared by the views; each carries the CSRF token."""

import phonenumbers
from flask_wtf import FlaskForm
from wtforms import BooleanField, DecimalField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange

from webapp.models import Role

COUNTRY_CHOICES = sorted(
    (region, f"{region} (+{phonenumbers.country_code_for_region(region)})")
    for region in phonenumbers.SUPPORTED_REGIONS
)

ROLE_CHOICES = [
    SelectChoice(Role.OWNER.value, "Owner — everything, including users and settings"),
    SelectChoice(Role.ADMIN.value, "Admin — everything, including users and settings"),
    SelectChoice(Role.EDITOR.value, "Editor — uploads, composes and launches"),
    SelectChoice(Role.VIEWER.value, "Viewer — read-only"),
]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class UserForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(min=10, max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.EDITOR.value)


class ProviderSettingsForm(FlaskForm):
    api_username = StringField("API username", validators=[Length(max=120)])
    # Write-only: the page never shows the stored password; leaving it empty keeps it.
    api_password = PasswordField("API password", validators=[Length(max=200)])
    price_per_part = DecimalField("Price per message part", places=5,
                                  validators=[InputRequired(), NumberRange(min=0, max=100)])
    currency = StringField("Currency", validators=[DataRequired(), Length(min=3, max=3)])
    default_country = SelectField("Default country for numbers without +", validators=[DataRequired()])


class SenderNumberForm(FlaskForm):
    number = StringField("Sender number", validators=[DataRequired(), Length(max=40)])
    label = StringField("Label", validators=[Length(max=80)])
