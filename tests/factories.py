"""Test data made through the same services the app uses. Call inside an app context."""

import itertools
from functools import cache

from werkzeug.security import generate_password_hash

from webapp.extensions import db
from webapp.models import (
    Contact,
    ContactImport,
    ContactList,
    ImportIssue,
    ImportStatus,
    InboundAction,
    InboundMessage,
    IssueKind,
    ProviderCallback,
    Role,
    SenderNumber,
    Suppression,
    SuppressionSource,
    Team,
    User,
)
from webapp.provider.delivery_reports import DeliveryState
from webapp.services.accounts import get_or_create_team

PASSWORD = "correct horse battery"
_sequence = itertools.count(1)


def make_team(name: str | None = None, timezone: str = "UTC") -> Team:
    """A team in `timezone` (UTC unless a test says otherwise, so times read the same whatever the country)."""
    team = get_or_create_team(name or f"Team {next(_sequence)}")
    team.timezone = timezone
    db.session.commit()
    return team


@cache
def _password_hash() -> str:
    """One real scrypt hash of PASSWORD, reused: hashing per user made the URL-map walk slow."""
    return generate_password_hash(PASSWORD, method="scrypt")


def make_user(team: Team, role: Role | str = Role.EDITOR, email: str | None = None) -> User:
    user = User(team_id=team.id, email=email or f"user{next(_sequence)}@example.com", role=Role(role).value,
                password_hash=_password_hash())
    db.session.add(user)
    db.session.commit()
    return user


def _saved(row):
    db.session.add(row)
    db.session.commit()
    return row


def make_list(team: Team, name: str | None = None) -> ContactList:
    return _saved(ContactList(team_id=team.id, name=name or f"List {next(_sequence)}"))


def make_contact(contact_list: ContactList, phone: str | None = None, region: str = "US",
                 number_type: str = "mobile", **attributes: str) -> Contact:
    """A contact in a list; keyword arguments become its template fields."""
    return _saved(Contact(team_id=contact_list.team_id, list_id=contact_list.id,
                          phone=phone or f"+1415555{next(_sequence) % 10_000:04d}", region=region,
                          number_type=number_type, attributes=attributes))


def make_suppression(team: Team, phone: str, source: SuppressionSource = SuppressionSource.MANUAL,
                     note: str = "") -> Suppression:
    return _saved(Suppression(team_id=team.id, phone=phone, source=source, note=note))


def make_sender(team: Team, number: str = "+14155550111", label: str = "") -> SenderNumber:
    return _saved(SenderNumber(team_id=team.id, number=number, label=label))


def make_import(team: Team, status: ImportStatus = ImportStatus.UPLOADED, contact_list: ContactList | None = None,
                filename: str = "contacts.csv", headers: list[str] | None = None) -> ContactImport:
    """An import row (its file is not on disk: for pages and rules that only read the row)."""
    return _saved(ContactImport(team_id=team.id, filename=filename, stored_name=f"missing-{next(_sequence)}.csv",
                                status=status, list_id=contact_list.id if contact_list else None,
                                headers=headers or ["phone", "first_name"]))


def make_optout_import(team: Team, status: ImportStatus = ImportStatus.QUEUED, filename: str = "stop.csv"):
    """An opt-out file's import row (its file is not on disk: for pages that only read the row)."""
    from webapp.models import OptOutImport

    return _saved(OptOutImport(team_id=team.id, filename=filename, stored_name=f"missing-{next(_sequence)}.csv",
                               status=status))


def make_issue(contact_import: ContactImport, line: int, kind: IssueKind = IssueKind.REJECTED,
               reason_code: str = "invalid", reason: str = "Not a phone number") -> ImportIssue:
    return _saved(ImportIssue(import_id=contact_import.id, line=line, kind=kind, reason_code=reason_code,
                              reason=reason, raw="[]"))


def make_callback(team: Team, reference: str | None = None, unique_id: str | None = None,
                  state: DeliveryState = DeliveryState.DELIVERED) -> ProviderCallback:
    return _saved(ProviderCallback(team_id=team.id, reference=reference, unique_id=unique_id, state=state,
                                   body=f"reference={reference or ''}&status={state.value}"))


def make_inbound(team: Team, sender: str = "+14155550123", text: str = "STOP",
                 action: InboundAction = InboundAction.OPT_OUT) -> InboundMessage:
    return _saved(InboundMessage(team_id=team.id, sender=sender, text=text, action=action,
                                 body=f"from={sender}&text={text}"))


def make_template(team: Team, name: str | None = None, body: str = "Hi {{ first_name | default(\"there\") }}!"):
    from webapp.models import MessageTemplate

    return _saved(MessageTemplate(team_id=team.id, name=name or f"Template {next(_sequence)}", body=body))


def make_campaign(team: Team, lists: list[ContactList] = (), body: str = "Hi {{ first_name }}!",
                  name: str | None = None, sender: SenderNumber | None = None, include_footer: bool = True,
                  image: bytes | None = None):
    """A draft to these lists, in this order; with `image` (JPEG or PNG bytes) stored, an MMS."""
    from flask import current_app

    from webapp.models import Campaign, CampaignList
    from webapp.services.campaigns import store_image

    campaign = _saved(Campaign(team_id=team.id, name=name or f"Campaign {next(_sequence)}", body=body,
                               sender_number_id=sender.id if sender else None, include_footer=include_footer,
                               audience=[CampaignList(list_id=item.id, position=i) for i, item in enumerate(lists)]))
    if image is not None:
        store_image(campaign, image, "image.png", current_app.config["UPLOAD_FOLDER"], len(image))
    return campaign


PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8"
                        "ffff3f0005fe02fea7d6a4560000000049454e44ae426082")


def make_message(team: Team, phone: str = "+14155550123", text: str = "Hi", campaign=None, **fields):
    """A test message row as a test send leaves it before posting."""
    from webapp.models import Message, MessageKind
    from webapp.provider.segments import Encoding

    values = {"kind": MessageKind.TEST, "encoding": Encoding.GSM7, "parts": 1, "estimated_cost": 0, **fields}
    return _saved(Message(team_id=team.id, phone=phone, text=text, campaign_id=campaign.id if campaign else None,
                          **values))


def make_launched_campaign(team: Team, recipients: int, first_number: int = 5_560_000):
    """A sending campaign to `recipients` US mobiles whose audience is frozen (quiet hours off)."""
    from webapp.models import CampaignStatus, utcnow
    from webapp.services import recipients as freezing

    contacts = make_list(team)
    for n in range(recipients):
        make_contact(contacts, phone=f"+1415{first_number + n:07d}", first_name=f"Ana{n}")
    campaign = make_campaign(team, [contacts], body="Hi {{ first_name }}", sender=make_sender(team))
    campaign.quiet_hours = False
    campaign.status, campaign.launched_at = CampaignStatus.SENDING, utcnow()
    db.session.commit()
    assert freezing.freeze(campaign.id)
    return campaign
