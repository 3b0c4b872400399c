"""Flask-WTF forms shared by the views; each carries the CSRF token."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length

from webapp.models import Role

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
