"""Flask-WTF forms shared by the views; each carries the CSRF token."""

from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, available_timezones

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateField,
    DecimalField,
    EmailField,
    FieldList,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
    ValidationError,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    Email,
    EqualTo,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    StopValidation,
)
from wtforms.widgets import CheckboxInput, HiddenInput, ListWidget

from webapp.models import Role
from webapp.services.countries import country_choices

# "United Kingdom (+44)", in alphabetical order of the name: people look for names, not "GB".
COUNTRY_CHOICES = [SelectChoice(code, label) for code, label in country_choices()]

ROLE_CHOICES = [
    SelectChoice(Role.OWNER.value, "Owner — everything; the only role that can add or disable owners"),
    SelectChoice(Role.ADMIN.value, "Admin — everything, including users and settings, but not owners"),
    SelectChoice(Role.EDITOR.value, "Editor — uploads, composes and launches"),
    SelectChoice(Role.VIEWER.value, "Viewer — read-only"),
]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me signed in")


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)])
    confirm = PasswordField("New password again",
                            validators=[DataRequired(), EqualTo("new_password", "The two new passwords differ.")])


class UserForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(min=10, max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.EDITOR.value)


def _stripped_or_none(value: str | None) -> str | None:
    return (value or "").strip() or None


def _upper(value: str | None) -> str | None:
    return value.strip().upper() if value else value


class ProviderSettingsForm(FlaskForm):
    api_username = StringField("API username", validators=[Length(max=120)], filters=[_stripped_or_none])
    # Write-only: the page never shows the stored password; leaving it empty keeps it.
    api_password = PasswordField("API password", validators=[Length(max=200)])
    price_per_part = DecimalField("Price per message part", places=5,
                                  validators=[InputRequired(), NumberRange(min=0, max=100)])
    currency = StringField("Currency", validators=[DataRequired(), Length(min=3, max=3)], filters=[_upper])
    default_country = SelectField("Default country for numbers without +", validators=[DataRequired()])


class ListForm(FlaskForm):
    name = StringField("New empty list", validators=[DataRequired(message="Give the list a name."), Length(max=200)],
                       filters=[lambda value: (value or "").strip()])


class SenderNumberForm(FlaskForm):
    number = StringField("Sender number", validators=[DataRequired(), Length(max=40)])
    label = StringField("Label", validators=[Length(max=80)])


def _stripped(value: str | None) -> str:
    return (value or "").strip()


class OptOutForm(FlaskForm):
    """One number put on the suppression list by hand."""

    phone = StringField("Number", validators=[DataRequired("Type the number that opted out."), Length(max=40)],
                        filters=[_stripped])
    note = StringField("Note", validators=[Length(max=500)], filters=[_stripped])


class OptOutUploadForm(FlaskForm):
    """A CSV of numbers that opted out; a job adds them."""

    file = FileField("File with a phone column", validators=[FileRequired("Choose a CSV file of numbers.")])


# --- contact import: the mapping step --------------------------------------------------------

DELIMITER_CHOICES = [SelectChoice(",", "Comma"), SelectChoice(";", "Semicolon"), SelectChoice("\t", "Tab"),
                     SelectChoice("|", "Pipe")]
_CHOOSE_PHONE = "Choose the column that holds the phone numbers."


def _column(value: str | int | None) -> int | None:
    """A column index from the form; "" (nothing chosen yet) is None."""
    return None if value in ("", None) else int(value)


class ContactUploadForm(FlaskForm):
    """A CSV or TSV file of contacts; the mapping step comes next."""

    file = FileField("CSV or TSV file", validators=[FileRequired("Choose a CSV or TSV file to upload.")])


class MultiCheckboxField(SelectMultipleField):
    """A checkbox per choice instead of a multiple select."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class DelimiterForm(FlaskForm):
    """Re-read the file with another delimiter than the sniffed one."""

    delimiter = SelectField("Columns are separated by", choices=DELIMITER_CHOICES)


class MappingForm(FlaskForm):
    """The mapping step: the phone column, the columns kept as fields, the list and the default country.

    The choices depend on the file and the team: call with_choices() before validating or rendering.
    The column cap (webapp.services.imports.MAX_COLUMNS) keeps the field list bounded.
    """

    phone_column = SelectField("Phone number column", coerce=_column, validators=[InputRequired(_CHOOSE_PHONE)],
                               invalid_value_message=_CHOOSE_PHONE, invalid_choice_message=_CHOOSE_PHONE)
    field_columns = MultiCheckboxField("Columns to keep as template fields", coerce=int,
                                       invalid_value_message="Choose columns of this file.",
                                       invalid_choice_message="Choose columns of this file.")
    list_id = RadioField("Import into", validators=[InputRequired("Choose a list to import into.")],
                         invalid_choice_message="Choose a list to import into.")
    new_list_name = StringField("New list name", validators=[Length(max=200)], filters=[_stripped])
    default_country = SelectField(
        "Country for numbers written without +", choices=COUNTRY_CHOICES,
        invalid_choice_message="Choose the default country for numbers written without +.")

    def with_choices(self, columns: list[str], lists: list[tuple[int, str]]) -> "MappingForm":
        """Offer this file's columns (by label) and the team's lists (id, name)."""
        self.phone_column.choices = [SelectChoice("", "Choose…")] + [
            SelectChoice(str(index), label) for index, label in enumerate(columns)]
        self.field_columns.choices = [SelectChoice(str(index), label) for index, label in enumerate(columns)]
        self.list_id.choices = [SelectChoice("new", "A new list named")] + [
            SelectChoice(str(list_id), name) for list_id, name in lists]
        return self

    def validate_new_list_name(self, field) -> None:
        if self.list_id.data == "new" and not field.data:
            raise ValidationError("Name the new list, or choose an existing one.")

    @property
    def existing_list_id(self) -> int | None:
        """The chosen list, or None for a new one."""
        return None if self.list_id.data == "new" else int(self.list_id.data)


# Compose (issue 9): templates, the live composer, campaign drafts, test sends, message settings.


class TemplateForm(FlaskForm):
    name = StringField("Template name", validators=[DataRequired(), Length(max=120)])
    body = TextAreaField("Message", validators=[Length(max=2000)])


class ComposerForm(FlaskForm):
    """What the live counts are computed from: the text, a sample contact, the footer choice."""

    body = TextAreaField("Message")
    sample_list = SelectField("Sample list", coerce=int, validate_choice=False, default=0)
    sample_contact = SelectField("Sample contact", coerce=int, validate_choice=False, default=0)
    shown_list = IntegerField(widget=HiddenInput(), validators=[Optional()])
    footer = RadioField("Opt-out footer", choices=[SelectChoice("on", "Append the team's opt-out footer"),
                                                   SelectChoice("off", "Leave the footer off")], default="on")
    campaign_id = IntegerField(widget=HiddenInput(), validators=[Optional()])


class CampaignForm(FlaskForm):
    name = StringField("Campaign name", validators=[DataRequired(), Length(max=200)])
    lists = FieldList(SelectField("List", coerce=int, validate_choice=False), min_entries=5, max_entries=5)
    template_id = SelectField("Start from template", coerce=int, validate_choice=False, default=0)
    sender_number_id = SelectField("Sender number", coerce=int, validate_choice=False, default=0)
    body = TextAreaField("Message")
    footer = RadioField("Opt-out footer", choices=[SelectChoice("on", "Append the team's opt-out footer (recommended)"),
                                                   SelectChoice("off", "Leave the footer off for this campaign")],
                        default="on")


class CampaignImageForm(FlaskForm):
    image = FileField("Image (JPEG or PNG)", validators=[FileRequired("Choose an image file.")])


class TestSendForm(FlaskForm):
    sample_contact = SelectField("Render for contact", coerce=int, validate_choice=False, default=0)
    sample_values = TextAreaField("…or typed values, one “field: value” a line")


class MessageSettingsForm(FlaskForm):
    optout_footer = StringField("Opt-out footer", validators=[DataRequired(), Length(max=160)])
    test_numbers = TextAreaField("Test numbers, one a line")
    mms_price = DecimalField("Price per MMS message", places=5,
                             validators=[InputRequired(), NumberRange(min=0, max=100)])
    country_prices = TextAreaField("Price per part by destination country, one “GB 0.04” a line")


# The campaign engine (issue 10): the launch confirmation, a running campaign's budget cap, team sending.

# Names a person would not choose ("localtime" is this machine's, "Factory" means "no zone set").
_NOT_ZONES = {"localtime", "Factory", "posixrules"}


def _canonical_zones() -> set[str]:
    """The Area/Location names of tzdata's zone.tab and zone1970.tab: every place people pick, without the
    deprecated links (Asia/Calcutta, US/Pacific), the Etc/ offsets or names like EST5EDT."""
    sources = [Path(folder) for folder in TZPATH]
    if find_spec("tzdata") is not None:  # zoneinfo's own fallback when the system has no zone files
        sources.append(Path(str(resources.files("tzdata").joinpath("zoneinfo"))))
    for folder in sources:
        tables = [folder / name for name in ("zone.tab", "zone1970.tab") if (folder / name).is_file()]
        if tables:
            return {line.split("\t")[2] for table in tables for line in table.read_text(encoding="utf-8").splitlines()
                    if line and not line.startswith("#")}
    return {name for name in available_timezones() if "/" in name and not name.startswith(_LEGACY_AREAS)}


_LEGACY_AREAS = ("US/", "Etc/", "SystemV/", "Brazil/", "Canada/", "Chile/", "Mexico/", "posix/", "right/")


@cache
def timezone_choices() -> list[SelectChoice]:
    """UTC (every team's default), then the canonical Area/Location zones this Python knows, sorted; shown
    with spaces (America/Los Angeles), submitted as named (America/Los_Angeles)."""
    zones = sorted((_canonical_zones() & available_timezones()) - _NOT_ZONES)
    return [SelectChoice("UTC", "UTC"), *(SelectChoice(name, name.replace("_", " ")) for name in zones)]


def _finite(form, field) -> None:
    """Refuse NaN and Infinity before a range check compares them (Decimal raises on NaN)."""
    if field.data is not None and not field.data.is_finite():
        raise StopValidation("Type a number.")


def _to_cents(value: Decimal | None) -> Decimal | None:
    """Round to what the column keeps, so 0.004 is refused as zero instead of being stored as 0.00."""
    try:
        return value.quantize(Decimal("0.01")) if value is not None and value.is_finite() else value
    except InvalidOperation:
        return value


class LaunchForm(FlaskForm):
    """The launch confirmation: when to send, and this campaign's caps.

    The view sets `zone` (the team's time zone) before validating: the date and time are read in it.
    """

    when = RadioField("When", choices=[SelectChoice("now", "Send now"),
                                       SelectChoice("later", "Schedule for a date and time")], default="now")
    send_date = DateField("Date", validators=[Optional()])
    send_time = TimeField("Time", validators=[Optional()])
    budget_cap = DecimalField("Budget cap (optional)", places=2, filters=[_to_cents], validators=[
        Optional(), _finite, NumberRange(min=Decimal("0.01"), max=Decimal("10000000"),
                                         message="Between 0.01 and 10,000,000, or empty for no cap.")])
    quiet_hours = BooleanField("Quiet hours: send only inside this window, in each recipient's local time",
                               default=True)
    quiet_start = TimeField("From", default=time(8))
    quiet_end = TimeField("Until", default=time(21))

    zone: ZoneInfo = ZoneInfo("UTC")

    def validate(self, extra_validators=None) -> bool:
        """The date and time matter only when scheduling, the window only with quiet hours on."""
        super().validate(extra_validators)
        if self.when.data == "later" and not (self.send_date.errors or self.send_time.errors):
            problem = self._schedule_problem()
            if problem:
                self.send_time.errors.append(problem)
        start, end = self.quiet_start, self.quiet_end
        if not self.quiet_hours.data:
            start.errors, end.errors = [], []
        elif not (start.errors or end.errors):
            if start.data is None or end.data is None:
                end.errors.append("Give both ends of the window, as hours and minutes.")
            elif start.data == end.data:
                end.errors.append("The window would be empty: choose two different times.")
        return not any(field.errors for field in self) and not self.form_errors

    def _schedule_problem(self) -> str | None:
        if self.send_date.data is None or self.send_time.data is None:
            return "Choose the date and the time to send."
        local = datetime.combine(self.send_date.data, self.send_time.data, tzinfo=self.zone)
        if local.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) != local.replace(tzinfo=None):
            return (f"{self.send_time.data:%H:%M} doesn't exist on that day in {self.zone.key} "
                    "(the clocks move forward); choose another time.")
        if local <= datetime.now(UTC):
            return f"That moment has passed in {self.zone.key}; choose a later one, or send now."
        return None

    def send_at(self) -> datetime | None:
        """The chosen moment as an aware UTC datetime, or None to send now."""
        if self.when.data != "later":
            return None
        return datetime.combine(self.send_date.data, self.send_time.data, tzinfo=self.zone).astimezone(UTC)


class BudgetCapForm(FlaskForm):
    """Raise, lower or remove the budget cap of a launched campaign (a cap pause says to)."""

    budget_cap = DecimalField("Budget cap", places=2, filters=[_to_cents], validators=[
        Optional(), _finite, NumberRange(min=Decimal("0.01"), max=Decimal("10000000"),
                                         message="Between 0.01 and 10,000,000, or empty for no cap.")])


class SendingSettingsForm(FlaskForm):
    """The team's time zone, send rate and frequency cap; populate_obj writes them onto the team."""

    timezone = SelectField("Team time zone", choices=timezone_choices,
                           invalid_choice_message="Choose a time zone from the list.")
    send_rate = DecimalField("Send rate, messages per second", places=2, filters=[_to_cents], validators=[
        InputRequired("Give the send rate."), _finite,
        NumberRange(min=Decimal("0.01"), max=Decimal("1000"), message="Between 0.01 and 1,000 messages per second.")])
    frequency_cap_hours = IntegerField("Frequency cap, hours (optional)", validators=[
        Optional(), NumberRange(min=1, max=168, message="Between 1 and 168 hours (a week), or empty for no cap.")])
