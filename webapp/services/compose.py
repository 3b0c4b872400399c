"""Composing a message: templates, the footer, prices, and the live counts for one rendered text.

Every figure is measured on the text a recipient gets: the template rendered with their fields, plus
the opt-out footer unless the campaign leaves it off (DOMAIN.md §2, §7).
"""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import phonenumbers
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Contact, ContactImport, ContactList, ImportStatus, MessageTemplate, Team, utcnow
from webapp.provider import segments
from webapp.provider.gsm_equivalents import EQUIVALENTS, to_gsm7
from webapp.services.csvfiles import field_names
from webapp.services.phones import Rejection, normalize
from webapp.services.templating import BUILTIN_FIELDS, MAX_TEMPLATE_CHARS, CompiledTemplate, check

FOOTER_SEPARATOR = "\n"
MAX_TEST_NUMBERS = 10
FIELD_SAMPLE = 200  # contacts per list read to find fields that no import names (added by hand)


class ComposeProblem(ValueError):
    """A template or settings change that is refused; the message is for the user."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("; ".join(messages))


# --- prices -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prices:
    """What the team pays: per part (optionally per destination country) and per MMS."""

    per_part: Decimal
    by_country: dict[str, Decimal]
    mms: Decimal
    currency: str

    def part_price(self, region: str | None) -> Decimal:
        return self.by_country.get(region or "", self.per_part)

    def estimate(self, parts: int, region: str | None, is_mms: bool) -> tuple[int, Decimal]:
        """(parts billed, cost): an MMS is one message at the MMS price, whatever its text."""
        if is_mms:
            return 1, self.mms
        return parts, segments.cost(parts, self.part_price(region))


def team_prices(team: Team) -> Prices:
    by_country = {region: Decimal(price) for region, price in (team.country_prices or {}).items()}
    return Prices(team.price_per_part, by_country, team.mms_price, team.currency)


def footer_for(team: Team, include_footer: bool) -> str:
    """The footer a message carries: the team's text, or nothing when the campaign explicitly leaves it off."""
    return (team.optout_footer or "").strip() if include_footer else ""


def with_footer(text: str, footer: str) -> str:
    """The message as sent: the rendered text, a line break, the footer."""
    if not footer:
        return text
    return f"{text}{FOOTER_SEPARATOR}{footer}" if text else footer


# --- fields -------------------------------------------------------------------------------------


def known_fields(team_id: int, list_ids: list[int] | None = None) -> list[str]:
    """Field names the team's (or these lists') contacts can have: from the imports' mappings, plus
    the keys of a sample of contacts, plus the built-ins."""
    imports = select(ContactImport.headers, ContactImport.field_columns).where(
        ContactImport.team_id == team_id, ContactImport.status == ImportStatus.DONE)
    if list_ids is not None:
        imports = imports.where(ContactImport.list_id.in_(list_ids))
    names: dict[str, None] = dict.fromkeys(BUILTIN_FIELDS)
    for headers, columns in db.session.execute(imports):
        all_names = field_names(headers or [])
        names.update(dict.fromkeys(all_names[i] for i in columns or [] if i < len(all_names)))
    sample = select(Contact.attributes).where(Contact.team_id == team_id)
    if list_ids is not None:
        sample = sample.where(Contact.list_id.in_(list_ids))
    for attributes in db.session.scalars(sample.limit(FIELD_SAMPLE)):
        names.update(dict.fromkeys(attributes or {}))
    return list(names)


# --- the live counts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Culprit:
    """A character that forces UCS-2, how often it appears, and its GSM-7 stand-in (None: no safe one)."""

    char: str
    name: str
    count: int
    replacement: str | None

    @property
    def shown(self) -> str:
        """The character made visible: spaces and invisible characters are shown by code point."""
        return self.char if self.char.isprintable() and not self.char.isspace() else f"U+{ord(self.char):04X}"


@dataclass(frozen=True)
class Counts:
    """Everything the composer shows for one rendered message."""

    text: str  # as sent: rendered, footer included
    footer: str
    measurement: segments.Measurement
    parts: int  # billed parts: 1 for an MMS
    cost: Decimal
    price: Decimal  # per part, or per message for an MMS
    currency: str
    is_mms: bool
    chars: int  # characters as a person counts them (code points)
    runs: list[tuple[str, bool]]  # the text cut into runs; True marks characters that force UCS-2
    template_culprits: list[Culprit]  # in the template's own text: one click can fix these
    data_culprits: list[Culprit]  # in the contact's values: no click can fix these
    errors: list[str] = field(default_factory=list)  # the template is refused; counts are of the raw text
    unknown_fields: list[str] = field(default_factory=list)
    missing_fields: list[str] = field(default_factory=list)  # this contact lacks them and there is no fallback

    @property
    def replaceable(self) -> bool:
        return any(culprit.replacement is not None for culprit in self.template_culprits)


def measure_message(
    team: Team,
    body: str,
    *,
    values: dict | None = None,
    phone: str = "",
    region: str | None = None,
    include_footer: bool = True,
    is_mms: bool = False,
    known: list[str] | None = None,
) -> Counts:
    """Render `body` for one contact's values, add the footer, and measure, price and explain it."""
    template, errors, warnings = check(body, known)
    footer = footer_for(team, include_footer)
    if template is None:
        body = body[:MAX_TEMPLATE_CHARS]  # refused anyway: measure no more than a template may hold
        rendered, used, missing, literal = body, (), (), body
        unknown: list[str] = []
    else:
        detail = template.render_detail(values or {}, phone)
        rendered, used, missing, literal = detail.text, detail.values, detail.missing, template.literal_text
        unknown = template.unknown_fields(known) if known is not None else []
    text = with_footer(rendered, footer)
    measurement = segments.measure(text)
    prices = team_prices(team)
    parts, cost = prices.estimate(measurement.parts, region, is_mms)
    forcing = {item.char for item in measurement.forcing_chars}
    return Counts(
        text=text,
        footer=footer,
        measurement=measurement,
        parts=parts,
        cost=cost,
        price=prices.mms if is_mms else prices.part_price(region),
        currency=prices.currency,
        is_mms=is_mms,
        chars=len(text),
        runs=_runs(text, forcing),
        template_culprits=_culprits(literal + footer, forcing),
        data_culprits=_culprits("".join(used), forcing - set(literal + footer)),
        errors=errors,
        unknown_fields=unknown,
        missing_fields=list(dict.fromkeys(missing)),
    )


def _culprits(text: str, forcing: set[str]) -> list[Culprit]:
    counts = Counter(char for char in text if char in forcing)
    return [Culprit(char, unicodedata.name(char, "") or f"U+{ord(char):04X}", count, EQUIVALENTS.get(char))
            for char, count in counts.items()]


def _runs(text: str, forcing: set[str]) -> list[tuple[str, bool]]:
    """The text as alternating plain and forcing runs, for the preview's highlighting (done in the template)."""
    if not forcing:
        return [(text, False)] if text else []
    pattern = re.compile("(" + "|".join(re.escape(char) for char in sorted(forcing)) + ")+")
    runs, last = [], 0
    for match in pattern.finditer(text):
        if match.start() > last:
            runs.append((text[last:match.start()], False))
        runs.append((match.group(), True))
        last = match.end()
    if last < len(text):
        runs.append((text[last:], False))
    return runs


def replace_with_gsm(body: str) -> str:
    """The body with every known GSM-7 stand-in applied (placeholders are ASCII, so they are untouched)."""
    return to_gsm7(body)


# --- templates ------------------------------------------------------------------------------------


def _checked(team_id: int, name: str, body: str, template_id: int | None = None) -> tuple[str, str]:
    name = " ".join((name or "").split())
    problems = []
    if not name:
        problems.append("Give the template a name.")
    elif len(name) > 120:
        problems.append("The name is longer than 120 characters.")
    else:
        clash = select(MessageTemplate.id).where(MessageTemplate.team_id == team_id,
                                                 func.lower(MessageTemplate.name) == name.lower())
        if template_id is not None:
            clash = clash.where(MessageTemplate.id != template_id)
        if db.session.scalar(clash) is not None:
            problems.append(f"There is already a template called “{name}”.")
    if not body.strip():
        problems.append("Write the message.")
    _, errors, _ = check(body)
    problems.extend(errors)
    if problems:
        raise ComposeProblem(problems)
    return name, body


def create_template(team_id: int, user_id: int | None, name: str, body: str) -> MessageTemplate:
    """Save a new template after checking its name and its placeholders."""
    name, body = _checked(team_id, name, body)
    template = MessageTemplate(team_id=team_id, created_by_id=user_id, name=name, body=body)
    db.session.add(template)
    db.session.commit()
    return template


def update_template(template: MessageTemplate, name: str, body: str) -> MessageTemplate:
    """Change a template; campaigns made from it keep their own copy of the body."""
    template.name, template.body = _checked(template.team_id, name, body, template.id)
    template.updated_at = utcnow()
    db.session.commit()
    return template


def duplicate_template(template: MessageTemplate, user_id: int | None) -> MessageTemplate:
    """A copy named "Copy of …", numbered when that name is taken."""
    base = f"Copy of {template.name}"[:110]
    taken = {name.lower() for name in db.session.scalars(
        select(MessageTemplate.name).where(MessageTemplate.team_id == template.team_id))}
    name, number = base, 2
    while name.lower() in taken:
        name, number = f"{base} ({number})", number + 1
    copy = MessageTemplate(team_id=template.team_id, created_by_id=user_id, name=name, body=template.body)
    db.session.add(copy)
    db.session.commit()
    return copy


def delete_template(template: MessageTemplate) -> None:
    """Delete a template; drafts made from it keep their body."""
    db.session.delete(template)
    db.session.commit()


def compiled(body: str) -> CompiledTemplate | None:
    template, _, _ = check(body)
    return template


# --- team settings for composing ------------------------------------------------------------------


def parse_test_numbers(text: str, default_region: str) -> list[str]:
    """One number a line (or comma-separated), each normalized to E.164; raises ComposeProblem naming bad ones."""
    numbers, problems = [], []
    for raw in re.split(r"[\n,;]+", text or ""):
        raw = raw.strip()
        if not raw:
            continue
        try:
            e164 = normalize(raw, default_region).e164
        except Rejection as rejection:
            problems.append(f"Test number “{raw}”: {rejection.message}")
            continue
        if e164 not in numbers:
            numbers.append(e164)
    if len(numbers) > MAX_TEST_NUMBERS:
        problems.append(f"At most {MAX_TEST_NUMBERS} test numbers.")
    if problems:
        raise ComposeProblem(problems)
    return numbers


def parse_country_prices(text: str) -> dict[str, str]:
    """Lines of "GB 0.04" (region code and price per part) into {"GB": "0.04"}; ComposeProblem on a bad line."""
    prices, problems = {}, []
    for number, line in enumerate((text or "").splitlines(), 1):
        words = line.replace("=", " ").replace(":", " ").split()
        if not words:
            continue
        region = words[0].upper()
        try:
            price = Decimal(words[1]) if len(words) == 2 else None
        except InvalidOperation:
            price = None
        if region not in phonenumbers.SUPPORTED_REGIONS or price is None or not price.is_finite() \
                or not Decimal(0) <= price <= Decimal(100):
            problems.append(f"Country prices, line {number}: write a country code and a price, like “GB 0.04”.")
            continue
        prices[region] = str(price)
    if problems:
        raise ComposeProblem(problems)
    return prices


def format_country_prices(prices: dict[str, str]) -> str:
    return "\n".join(f"{region} {price}" for region, price in sorted((prices or {}).items()))


def update_message_settings(team: Team, *, footer: str, test_numbers: str, mms_price: Decimal,
                            country_prices: str) -> None:
    """Save the footer, test numbers and prices together, or nothing when any of them is wrong."""
    problems = []
    footer = " ".join((footer or "").split())
    if not footer:
        problems.append("The opt-out footer can't be empty; a campaign can still leave it off explicitly.")
    try:
        numbers = parse_test_numbers(test_numbers, team.default_country)
    except ComposeProblem as problem:
        problems.extend(problem.messages)
    try:
        prices = parse_country_prices(country_prices)
    except ComposeProblem as problem:
        problems.extend(problem.messages)
    if problems:
        raise ComposeProblem(problems)
    team.optout_footer = footer
    team.test_numbers = numbers
    team.mms_price = mms_price
    team.country_prices = prices
    db.session.commit()


# --- the composer's sample contact -----------------------------------------------------------------

SAMPLE_CHOICES = 50


@dataclass(frozen=True)
class ComposerState:
    """The composer's sample choices and the counts for the chosen contact."""

    lists: list  # the team's lists, (id, name)
    list_id: int | None  # the list the sample contacts come from
    contacts: list[Contact]  # the first SAMPLE_CHOICES contacts of that list
    contact: Contact | None  # the sample the counts are for
    counts: Counts


def composer_state(team: Team, body: str, *, list_id: int | None = None, contact_id: int | None = None,
                   include_footer: bool = True, is_mms: bool = False,
                   field_lists: list[int] | None = None) -> ComposerState:
    """Counts for `body` rendered for the chosen sample contact (the list's first when none is chosen or the
    choice is not in the list); unknown fields are judged against `field_lists`, else all the team's lists."""
    lists = db.session.execute(select(ContactList.id, ContactList.name).where(ContactList.team_id == team.id)
                               .order_by(ContactList.name)).all()
    if list_id not in {row.id for row in lists}:
        list_id = lists[0].id if lists else None
    contacts = []
    if list_id is not None:
        contacts = db.session.scalars(select(Contact).where(Contact.team_id == team.id, Contact.list_id == list_id)
                                      .order_by(Contact.id).limit(SAMPLE_CHOICES)).all()
    contact = next((c for c in contacts if c.id == contact_id), None)
    if contact is None and contact_id:
        contact = db.session.scalar(select(Contact).where(Contact.team_id == team.id, Contact.id == contact_id,
                                                          Contact.list_id == list_id))
    if contact is None and contacts:
        contact = contacts[0]
    counts = measure_message(
        team, body,
        values=contact.attributes if contact else {}, phone=contact.phone if contact else "",
        region=contact.region if contact else None, include_footer=include_footer, is_mms=is_mms,
        known=known_fields(team.id, field_lists or None),
    )
    return ComposerState(list(lists), list_id, list(contacts), contact, counts)
