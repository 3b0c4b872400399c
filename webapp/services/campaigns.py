"""Campaign drafts: audience, message, sender, MMS image and footer choice; test sends; the text frozen at launch."""

import secrets
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from flask import current_app
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import (
    Campaign,
    CampaignList,
    Contact,
    ContactList,
    Message,
    MessageKind,
    MessageStatus,
    MessageTemplate,
    SenderNumber,
    Team,
    utcnow,
)
from webapp.provider import multitel, segments
from webapp.services import test_sends
from webapp.services.compose import footer_for, team_prices, with_footer
from webapp.services.disk import write_new_file
from webapp.services.ratelimit import RateLimiter, team_limiter
from webapp.services.teams import notify_url, team_credentials
from webapp.services.templating import check

IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": ("image/png", "png"), b"\xff\xd8\xff": ("image/jpeg", "jpg")}
IMAGE_FOLDER = "campaign-images"
MAX_LISTS = 5


class DraftProblem(ValueError):
    """A draft change or test send that is refused; the messages are for the user."""

    def __init__(self, *messages: str) -> None:
        self.messages = list(messages)
        super().__init__("; ".join(messages))


def _team_row(model, team_id: int, row_id: int | None, what: str):
    if row_id is None:
        return None
    row = db.session.scalar(select(model).where(model.team_id == team_id, model.id == row_id))
    if row is None:
        raise DraftProblem(f"That {what} doesn't exist (any more).")
    return row


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise DraftProblem("Give the campaign a name.")
    if len(name) > 200:
        raise DraftProblem("The name is longer than 200 characters.")
    return name


def _set_audience(campaign: Campaign, list_ids: list[int]) -> None:
    """Replace the audience with these lists, in this order; repeats are dropped, the first place kept."""
    ordered = list(dict.fromkeys(list_id for list_id in list_ids if list_id))
    if len(ordered) > MAX_LISTS:
        raise DraftProblem(f"A campaign goes to at most {MAX_LISTS} lists.")
    for list_id in ordered:
        _team_row(ContactList, campaign.team_id, list_id, "list")
    campaign.audience = [CampaignList(list_id=list_id, position=position) for position, list_id in enumerate(ordered)]


def _require_draft(campaign: Campaign) -> None:
    """Refuse changes unless the campaign is a draft, reading its state afresh and, on PostgreSQL, locking
    the row until this change commits: a launch that commits first is seen, one that comes after waits."""
    db.session.refresh(campaign, attribute_names=["status"], with_for_update=True)
    if not campaign.status.is_editable:
        raise DraftProblem(f"This campaign is {campaign.status.value}; only a draft can be changed.")


def create_draft(team_id: int, user_id: int | None, *, name: str, list_ids: list[int], template_id: int | None,
                 sender_number_id: int | None, include_footer: bool = True) -> Campaign:
    """A new draft; the template's body is copied, so later edits of the template never reach it."""
    template = _team_row(MessageTemplate, team_id, template_id, "template")
    _team_row(SenderNumber, team_id, sender_number_id, "sender number")
    campaign = Campaign(team_id=team_id, created_by_id=user_id, name=_clean_name(name), template_id=template_id,
                        body=template.body if template else "", sender_number_id=sender_number_id,
                        include_footer=include_footer)
    _set_audience(campaign, list_ids)
    db.session.add(campaign)
    db.session.commit()
    return campaign


def update_draft(campaign: Campaign, *, name: str, list_ids: list[int], body: str, sender_number_id: int | None,
                 include_footer: bool) -> Campaign:
    """Save the draft; a message the template rules refuse is not saved, and the reasons say where."""
    _require_draft(campaign)
    _, errors, _ = check(body)
    if errors:
        raise DraftProblem(*errors)
    _team_row(SenderNumber, campaign.team_id, sender_number_id, "sender number")
    campaign.name = _clean_name(name)
    campaign.body = body
    campaign.sender_number_id = sender_number_id
    campaign.include_footer = include_footer
    _set_audience(campaign, list_ids)
    db.session.commit()
    return campaign


def delete_draft(campaign: Campaign, upload_folder: str) -> None:
    """Delete a draft and its image; a launched campaign stays, as the record of what was sent."""
    _require_draft(campaign)
    _discard_image_file(campaign, upload_folder)
    db.session.delete(campaign)
    db.session.commit()


def frozen_values(campaign: Campaign) -> dict:
    """What launch writes in its guarded UPDATE: the message and the footer as they are now, so later
    edits of the template or of the team's footer change nothing that is sent."""
    team = db.session.get(Team, campaign.team_id)
    return {"frozen_text": campaign.body, "footer_text": footer_for(team, campaign.include_footer) or None}


def message_body(campaign: Campaign) -> tuple[str, str]:
    """(template text, footer) the campaign sends: frozen once launched, the draft's until then."""
    if campaign.frozen_text is not None:
        return campaign.frozen_text, campaign.footer_text or ""
    team = db.session.get(Team, campaign.team_id)
    return campaign.body, footer_for(team, campaign.include_footer)


# --- the MMS image ---------------------------------------------------------------------------------

IMAGE_NOT_SAVED = "The server's disk is full; the image was not saved."


def image_type(data: bytes) -> tuple[str, str] | None:
    """(mime, extension) of a JPEG or PNG, judged by its first bytes, never by its name."""
    for signature, kind in IMAGE_TYPES.items():
        if data.startswith(signature):
            return kind
    return None


def store_image(campaign: Campaign, data: bytes, filename: str, upload_folder: str, max_bytes: int) -> None:
    """Attach one image (the campaign becomes an MMS), replacing any earlier one."""
    _require_draft(campaign)
    if not data:
        raise DraftProblem("Choose an image file.")
    kind = image_type(data)
    if kind is None:
        raise DraftProblem("The image must be a JPEG or PNG (checked by its content, not its name).")
    if len(data) > max_bytes:
        raise DraftProblem(f"The image is {len(data) / 1024:,.0f} KB; the limit is {max_bytes / 1024:,.0f} KB "
                           "before encoding (carriers refuse bigger MMS).")
    folder = Path(upload_folder) / IMAGE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stored = f"{secrets.token_hex(16)}.{kind[1]}"
    write_new_file(folder / stored, [data], IMAGE_NOT_SAVED)
    earlier = image_path(campaign, upload_folder)
    try:
        campaign.image_name, campaign.image_mime, campaign.image_size = stored, kind[0], len(data)
        campaign.image_filename = Path(filename or "image").name[:255]
        db.session.commit()
    except BaseException:
        db.session.rollback()
        (folder / stored).unlink(missing_ok=True)
        raise
    if earlier is not None:  # only once the campaign names the new one
        earlier.unlink(missing_ok=True)


def remove_image(campaign: Campaign, upload_folder: str) -> None:
    """Back to SMS."""
    _require_draft(campaign)
    _discard_image_file(campaign, upload_folder)
    campaign.image_name = campaign.image_mime = campaign.image_size = campaign.image_filename = None
    db.session.commit()


def image_path(campaign: Campaign, upload_folder: str) -> Path | None:
    if campaign.image_name is None:
        return None
    return Path(upload_folder) / IMAGE_FOLDER / campaign.image_name


def _discard_image_file(campaign: Campaign, upload_folder: str) -> None:
    path = image_path(campaign, upload_folder)
    if path is not None:
        path.unlink(missing_ok=True)


# --- test sends ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleValues:
    """What to render a test with: a contact's fields, or values typed on the page."""

    values: dict
    phone: str | None  # the contact's number for {{ phone }}; None: each test number's own


def parse_sample_values(text: str) -> dict[str, str]:
    """Lines of "field: value" (or field=value) typed for a test send."""
    values = {}
    for line in (text or "").splitlines():
        for separator in (":", "="):
            if separator in line:
                name, value = line.split(separator, 1)
                if name.strip():
                    values[name.strip()] = value.strip()
                break
    return values


def sample_for(campaign: Campaign, contact_id: int | None, typed: str = "") -> SampleValues:
    """The chosen contact's fields (only one of the campaign's team), or the typed values."""
    if contact_id:
        contact = _team_row(Contact, campaign.team_id, contact_id, "contact")
        return SampleValues(dict(contact.attributes or {}), contact.phone)
    return SampleValues(parse_sample_values(typed), None)


def send_test(campaign: Campaign, sample: SampleValues, api_url: str, upload_folder: str,
              timeouts: multitel.Timeouts | None = None, *, limits: test_sends.Limits | None = None,
              limiter: RateLimiter | None = None) -> list[Message]:
    """Send the message rendered for one sample to each of the team's test numbers, through the same
    client as campaigns; each is a Message row (created before the POST) with its outcome.

    Within the team's test-send limits (config, unless given) and send rate (its campaigns' bucket), and
    counted against the campaign's budget cap; test_sends.Refused says why a test was not sent."""
    team = db.session.get(Team, campaign.team_id)
    if not team.test_numbers:
        raise DraftProblem("Add test numbers in Settings first.")
    sender = db.session.get(SenderNumber, campaign.sender_number_id) if campaign.sender_number_id else None
    if sender is None:
        raise DraftProblem("Choose a sender number for the campaign first.")
    credentials = team_credentials(team)
    if credentials is None:
        raise DraftProblem("Enter the MultiTEL username and password in Settings first.")
    body, footer = message_body(campaign)
    template, errors, _ = check(body)
    if template is None:
        raise DraftProblem(*errors)
    media = None
    if campaign.is_mms:
        path = image_path(campaign, upload_folder)
        if path is None or not path.exists():
            raise DraftProblem("The campaign's image is missing; upload it again.")
        media = path.read_bytes()
    prices = team_prices(team)

    messages = []
    for number in team.test_numbers:
        text = with_footer(template.render(sample.values, sample.phone or number), footer)
        measurement = segments.measure(text)
        parts, cost = prices.estimate(measurement.parts, _region(number), campaign.is_mms)
        messages.append(Message(team_id=team.id, campaign_id=campaign.id, kind=MessageKind.TEST, phone=number,
                                sender=sender.number, text=text, encoding=measurement.encoding, parts=parts,
                                estimated_cost=cost, is_mms=campaign.is_mms))

    limits = limits or test_sends.Limits.from_config(current_app.config)
    team_id, campaign_id, notify = team.id, campaign.id, notify_url(team)
    test_sends.check(team_id, len(messages), limits)  # a loop of clicks is refused before it takes any rate
    limiter = limiter or team_limiter(team)
    db.session.commit()  # end the reads: the reservation's transaction starts with its lock
    test_sends.take_rate(limiter, team_id, len(messages), limits.rate_wait_seconds)
    test_sends.reserve(team_id, campaign_id, messages, limits)  # the rows exist before anything is posted

    client = multitel.MultitelClient(api_url, credentials, timeouts=timeouts)
    try:
        for message in messages:
            message.status = MessageStatus.SENDING
            message.sent_at = utcnow()
            db.session.commit()
            result = client.send(sender=message.sender, to=message.phone, text=message.text, media=media,
                                 notify_url=notify, reference=message.reference)
            record_result(message, result)
            test_sends.settle(campaign_id, message)
            db.session.commit()
    finally:
        client.close()
    return messages


def record_result(message: Message, result: multitel.SendResult) -> None:
    """What one POST means for its message (DOMAIN.md §6): accepted, failed with the reason, or unknown."""
    if result.outcome is multitel.Outcome.ACCEPTED:
        message.status = MessageStatus.ACCEPTED
        message.unique_id = result.unique_id
        message.billed_parts = result.parts
        message.billed_cost = result.cost
        message.error = None
    elif result.outcome is multitel.Outcome.AMBIGUOUS:
        message.status = MessageStatus.UNKNOWN
        message.error = result.reason
    else:
        message.status = MessageStatus.FAILED
        message.error = result.reason


def _region(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
