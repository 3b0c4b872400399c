"""The database schema: typed SQLAlchemy 2.0 models, one module for the whole app.

Every table that holds a team's data carries team_id; webapp.web.access scopes queries by it.
"""

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import JSON, Enum, ForeignKey, Index, Numeric, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.provider.delivery_reports import DeliveryState
from webapp.provider.segments import Encoding


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def enum_column(enum: type[StrEnum], length: int = 16) -> Enum:
    """A VARCHAR that stores the enum's lower-case value and reads back the StrEnum member.

    No native database enum and no CHECK constraint, so adding a value never needs a migration,
    and rows written before this type existed read back unchanged.
    """
    return Enum(enum, native_enum=False, create_constraint=False, length=length, validate_strings=True,
                values_callable=lambda members: [member.value for member in members])


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_edit(self) -> bool:
        """Editors and above upload, compose and launch."""
        return self is not Role.VIEWER

    @property
    def can_admin(self) -> bool:
        """Owners and admins manage users and team settings."""
        return self in (Role.OWNER, Role.ADMIN)


DEFAULT_OPTOUT_FOOTER = "Reply STOP to opt out"


class Team(db.Model):
    """A workspace: its members, provider account, contacts and campaigns."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    default_country: Mapped[str] = mapped_column(String(2), default="US")
    api_username: Mapped[str | None] = mapped_column(String(120))
    # A Fernet token (webapp.encryption); the plaintext password is never stored.
    api_password_encrypted: Mapped[str | None] = mapped_column(Text)
    price_per_part: Mapped[Decimal] = mapped_column(Numeric(12, 5), default=Decimal("0.015"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # Unguessable part of the notify URL: the provider doesn't sign its callbacks.
    callback_token: Mapped[str] = mapped_column(
        String(64), unique=True, default=lambda: secrets.token_urlsafe(32)
    )
    # A second token for inbound messages: the notify URL travels with every message we send, and
    # whoever holds the inbound URL can opt numbers out and back in.
    inbound_token: Mapped[str] = mapped_column(
        String(64), unique=True, default=lambda: secrets.token_urlsafe(32)
    )
    # Compose (issue 9): appended to every message unless a campaign explicitly leaves it off.
    optout_footer: Mapped[str] = mapped_column(String(160), default=DEFAULT_OPTOUT_FOOTER)
    test_numbers: Mapped[list] = mapped_column(JSON, default=list)  # E.164 strings, for test sends
    mms_price: Mapped[Decimal] = mapped_column(Numeric(12, 5), default=Decimal("0.05"))  # per message
    # {"GB": "0.04", ...}: a price per part for a destination country, as strings so money stays exact;
    # a country not listed costs price_per_part.
    country_prices: Mapped[dict] = mapped_column(JSON, default=dict)
    # Sending (webapp.services.sending): the team's zone for schedules and quiet-hours fallbacks, its share
    # of the provider's rate (messages per second, across all workers), and the optional frequency cap.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # False until a person chose the zone (Settings asks): until then it is the default country's main zone.
    timezone_chosen: Mapped[bool] = mapped_column(default=False, server_default=false())
    send_rate: Mapped[Decimal] = mapped_column(Numeric(8, 2), default=Decimal("10"))
    frequency_cap_hours: Mapped[int | None]
    # Unmatched status callbacks deleted because the team held more than CALLBACK_ORPHAN_LIMIT
    # (webapp.services.callbacks.prune_orphans): kept as a count so the loss is never silent.
    callbacks_expired: Mapped[int] = mapped_column(default=0, server_default="0")

    users: Mapped[list["User"]] = relationship(back_populates="team")
    sender_numbers: Mapped[list["SenderNumber"]] = relationship(
        back_populates="team", cascade="all, delete-orphan", order_by="SenderNumber.id"
    )


class User(UserMixin, db.Model):
    """A person who logs in; belongs to exactly one team."""

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(enum_column(Role), default=Role.EDITOR)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship(back_populates="users")

    @property
    def is_active(self) -> bool:
        """Flask-Login refuses disabled users, including sessions that were already open."""
        return not self.disabled

    @property
    def can_edit(self) -> bool:
        return self.role.can_edit

    @property
    def can_admin(self) -> bool:
        return self.role.can_admin

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    # The login this object was loaded for: not a column, set by webapp.services.accounts.
    session_token = None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and the remember cookie: this login's revocable token,
        never the user id, so a copied cookie dies with its LoginSession row."""
        if not self.session_token:
            raise RuntimeError("start a login session (webapp.services.accounts) before signing a user in")
        return self.session_token

    # UserMixin compares get_id(), which only a signed-in user has; rows are equal when they are the same.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


class LoginSession(db.Model):
    """One sign-in on one browser. The session and remember cookies carry its token; deleting the row
    ends that sign-in wherever the cookies were copied (logout, sign out everywhere, new password,
    disabled account). Only a hash of the token is stored."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class SenderNumber(db.Model):
    """A number the team may send from (MultiTEL's 'from'), in E.164."""

    __table_args__ = (UniqueConstraint("team_id", "number", name="uq_sender_number_team_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    number: Mapped[str] = mapped_column(String(20))
    label: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    team: Mapped[Team] = relationship(back_populates="sender_numbers")


class ProviderCallback(db.Model):
    """Every status callback exactly as it arrived (append-only), with what the parser read from it."""

    __table_args__ = (
        Index("ix_provider_callback_team_unique_id", "team_id", "unique_id"),
        # Oldest-first pruning per team walks this index (team_id alone can't give id order on PostgreSQL).
        Index("ix_provider_callback_team_id_id", "team_id", "id"),
        # The review page: a team's flagged callbacks, newest first (keyset pages), only flagged rows indexed.
        Index("ix_provider_callback_team_flagged", "team_id", "id",
              postgresql_where=db.text("problem IS NOT NULL"), sqlite_where=db.text("problem IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_type: Mapped[str] = mapped_column(String(200), default="")
    query_string: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    unique_id: Mapped[str | None] = mapped_column(String(100))
    reference: Mapped[str | None] = mapped_column(String(100), index=True)
    state: Mapped[DeliveryState] = mapped_column(enum_column(DeliveryState))
    raw_status: Mapped[str | None] = mapped_column(String(100))
    cause_code: Mapped[str | None] = mapped_column(String(100))
    # Why a person should look at it (webapp.services.callbacks.PROBLEMS): unreadable, unknown word, a
    # billed figure that disagrees with the send reply. None: nothing to look at.
    problem: Mapped[str | None] = mapped_column(String(40))
    cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 5))  # as the callback reported them
    parts: Mapped[int | None]
    # The message it was applied to (webapp.services.delivery); None: an orphan, matched later or expired.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"), index=True)


class ContactList(db.Model):
    """A named set of recipients, filled by imports and by hand."""

    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_contact_list_team_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Contact(db.Model):
    """One recipient in one list; attributes are the template fields taken from the CSV."""

    __table_args__ = (
        UniqueConstraint("list_id", "phone", name="uq_contact_list_phone"),
        Index("ix_contact_team_phone", "team_id", "phone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"))
    list_id: Mapped[int] = mapped_column(ForeignKey("contact_list.id", ondelete="CASCADE"))
    # The import that added it: lets a re-run or an undo remove exactly that import's rows.
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("contact_import.id", ondelete="SET NULL"), index=True
    )
    phone: Mapped[str] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(2))
    number_type: Mapped[str] = mapped_column(String(32), default="unknown")
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    source_line: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def is_landline(self) -> bool:
        return self.number_type == "fixed_line"


class SuppressionSource(StrEnum):
    MANUAL = "manual"
    CSV = "csv"
    INBOUND = "inbound"  # a STOP text: the only kind a START text lifts


class Suppression(db.Model):
    """A number that opted out: never sent to, whatever list it is in."""

    __table_args__ = (UniqueConstraint("team_id", "phone", name="uq_suppression_team_phone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    phone: Mapped[str] = mapped_column(String(20))
    source: Mapped[SuppressionSource] = mapped_column(enum_column(SuppressionSource))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundAction(StrEnum):
    NONE = "none"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    BAD_SENDER = "bad_sender"  # a keyword from a sender that is not a valid number


class InboundMessage(db.Model):
    """An inbound SMS as the provider posted it, and what we did about it (opt-out, opt-in, nothing)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_type: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str | None] = mapped_column(String(40))
    text: Mapped[str | None] = mapped_column(Text)
    action: Mapped[InboundAction] = mapped_column(enum_column(InboundAction), default=InboundAction.NONE)


class ImportStatus(StrEnum):
    UPLOADED = "uploaded"  # stored, waiting for the user to confirm the mapping
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"  # the mapping step was discarded or abandoned: file deleted, nothing imported

    @property
    def is_final(self) -> bool:
        return self in (ImportStatus.DONE, ImportStatus.FAILED, ImportStatus.CANCELLED, ImportStatus.DISCARDED)


class ContactImport(db.Model):
    """One uploaded file and its import into a list: mapping, progress and outcome."""

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    list_id: Mapped[int | None] = mapped_column(ForeignKey("contact_list.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(default=0)
    encoding: Mapped[str] = mapped_column(String(40), default="")
    encoding_label: Mapped[str] = mapped_column(String(80), default="")
    encoding_detected: Mapped[bool] = mapped_column(default=False)  # guessed: the preview asks to check it
    delimiter: Mapped[str] = mapped_column(String(1), default=",")
    headers: Mapped[list] = mapped_column(JSON, default=list)
    phone_column: Mapped[int | None]
    field_columns: Mapped[list] = mapped_column(JSON, default=list)
    default_country: Mapped[str] = mapped_column(String(2), default="US")
    status: Mapped[ImportStatus] = mapped_column(enum_column(ImportStatus), default=ImportStatus.UPLOADED)
    job_id: Mapped[str | None] = mapped_column(String(64))
    total_rows: Mapped[int | None]
    rows_done: Mapped[int] = mapped_column(default=0)
    accepted: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    landlines: Mapped[int] = mapped_column(default=0)
    suppressed: Mapped[int] = mapped_column(default=0)
    removed: Mapped[int] = mapped_column(default=0)  # contacts taken out again with "Remove"
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The worker's sign of life, written with every batch and while idle: a sweep fails an import whose
    # worker went silent (a SIGKILLed work horse runs no failure callback).
    heartbeat_at: Mapped[datetime | None]
    # The list this import created, by name: one it left empty is removed at the end, and the page says so.
    created_list_name: Mapped[str | None] = mapped_column(String(200))
    empty_list_removed: Mapped[bool] = mapped_column(default=False)

    contact_list: Mapped[ContactList | None] = relationship()


class IssueKind(StrEnum):
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class ImportIssue(db.Model):
    """A data row that did not become a contact: rejected (with its reason) or a duplicate."""

    __table_args__ = (Index("ix_import_issue_import_line", "import_id", "line"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("contact_import.id", ondelete="CASCADE"))
    line: Mapped[int]
    kind: Mapped[IssueKind] = mapped_column(enum_column(IssueKind))
    reason_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(500))
    raw: Mapped[str] = mapped_column(Text, default="")


class OptOutImport(db.Model):
    """One CSV of opted-out numbers added to the team's suppression list by a job: progress and outcome.

    added + already + rejected = rows_done; each batch commits its numbers and these counters together.
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(default=0)
    default_country: Mapped[str] = mapped_column(String(2), default="US")
    status: Mapped[ImportStatus] = mapped_column(enum_column(ImportStatus), default=ImportStatus.QUEUED)
    job_id: Mapped[str | None] = mapped_column(String(64))
    total_rows: Mapped[int | None]
    rows_done: Mapped[int] = mapped_column(default=0)
    added: Mapped[int] = mapped_column(default=0)
    already: Mapped[int] = mapped_column(default=0)  # on the list before, or earlier in the same file
    rejected: Mapped[int] = mapped_column(default=0)
    # The first rejected rows, [line, value, reason], for the page (the counters hold the full count).
    first_rejects: Mapped[list] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Written with every batch: a running import whose heartbeat stops had its worker killed.
    heartbeat_at: Mapped[datetime | None]


# Compose (issue 9): templates, campaign drafts, the audience summary and the messages sent.


class MessageTemplate(db.Model):
    """A reusable message body with {{ field }} placeholders (webapp.services.templating)."""

    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_message_template_team_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    body: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_editable(self) -> bool:
        """Only a draft changes; from launch on, the frozen text is what goes out."""
        return self is CampaignStatus.DRAFT


class CampaignList(db.Model):
    """One list of a campaign's audience; position orders them, and the first list wins a duplicate."""

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("contact_list.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(default=0)

    contact_list: Mapped[ContactList] = relationship()


class Waiting(StrEnum):
    """What a sending campaign that posts nothing is waiting for (shown on its page, with since when)."""

    DATABASE = "database"
    REDIS = "redis"
    RATE = "rate"  # the team's send rate has no slot for it
    QUIET_HOURS = "quiet_hours"
    RETRY = "retry"  # "not sent" answers, retried with backoff
    STALLED_BATCH = "stalled_batch"  # never stored: read from send_batch's heartbeats


class Campaign(db.Model):
    """A message to one or more lists: a draft until launch, when its text is frozen."""

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[CampaignStatus] = mapped_column(enum_column(CampaignStatus), default=CampaignStatus.DRAFT)
    # Where the body came from; the body is a copy, so editing the template never changes the campaign.
    template_id: Mapped[int | None] = mapped_column(ForeignKey("message_template.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text, default="")
    sender_number_id: Mapped[int | None] = mapped_column(ForeignKey("sender_number.id", ondelete="SET NULL"))
    # Leaving the opt-out footer off is an explicit choice, kept here; its text is frozen at launch.
    include_footer: Mapped[bool] = mapped_column(default=True)
    footer_text: Mapped[str | None] = mapped_column(String(160))
    # One MMS image, stored under UPLOAD_FOLDER as image_name (a random name), checked by its bytes.
    image_name: Mapped[str | None] = mapped_column(String(64))
    image_mime: Mapped[str | None] = mapped_column(String(32))
    image_size: Mapped[int | None]
    image_filename: Mapped[str | None] = mapped_column(String(255))  # as uploaded, for display only
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    frozen_text: Mapped[str | None] = mapped_column(Text)  # the template body + footer at launch
    # The engine (webapp.services.campaign_states and sending).
    scheduled_at: Mapped[datetime | None]
    prepared_at: Mapped[datetime | None]  # the audience was frozen into message rows
    heartbeat_at: Mapped[datetime | None]  # the last batch activity: the sweep restarts a silent campaign
    finished_at: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)
    failed_reason: Mapped[str | None] = mapped_column(Text)
    quiet_hours: Mapped[bool] = mapped_column(default=True)
    quiet_start: Mapped[str] = mapped_column(String(5), default="08:00")
    quiet_end: Mapped[str] = mapped_column(String(5), default="21:00")
    budget_cap: Mapped[Decimal | None] = mapped_column(Numeric(12, 5))
    # Estimated cost of what was posted, corrected by billed figures: what the budget cap is checked against.
    reserved_cost: Mapped[Decimal] = mapped_column(Numeric(14, 5), default=Decimal(0))
    recipients: Mapped[int | None]
    exclusions: Mapped[dict] = mapped_column(JSON, default=dict)  # reason -> count, at freeze
    opt_outs_caused: Mapped[int] = mapped_column(default=0)  # STOPs that arrived after launch
    zone_fallbacks: Mapped[int] = mapped_column(default=0)  # recipients timed by the team's zone
    launched_at: Mapped[datetime | None]
    # What a sending campaign waits for (the database, Redis, the rate, quiet hours) and since when; cleared
    # by the next batch that posts (webapp.services.batches).
    waiting_for: Mapped[Waiting | None] = mapped_column(enum_column(Waiting))
    waiting_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    audience: Mapped[list[CampaignList]] = relationship(
        order_by=CampaignList.position, cascade="all, delete-orphan"
    )
    template: Mapped[MessageTemplate | None] = relationship()
    sender_number: Mapped[SenderNumber | None] = relationship()

    @property
    def list_ids(self) -> list[int]:
        return [entry.list_id for entry in self.audience]

    @property
    def is_mms(self) -> bool:
        return self.image_name is not None


class SummaryStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (SummaryStatus.DONE, SummaryStatus.FAILED)


class AudienceSummary(db.Model):
    """The audience summary of a draft as it was when computed; `fingerprint` tells when it is stale."""

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[SummaryStatus] = mapped_column(enum_column(SummaryStatus), default=SummaryStatus.QUEUED)
    job_id: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int | None]
    done: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class MessageKind(StrEnum):
    TEST = "test"
    CAMPAIGN = "campaign"


class MessageStatus(StrEnum):
    CREATED = "created"  # row written, not yet posted
    SENDING = "sending"  # marked immediately before the POST: it may have reached the provider
    ACCEPTED = "accepted"  # the provider queued it (unique_id kept)
    FAILED = "failed"  # refused or not sent; `error` says why
    UNKNOWN = "unknown"  # ambiguous reply: reconcile by reference, never resend automatically
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    OPTED_OUT = "opted_out"  # a STOP arrived after launch: not sent
    CANCELLED = "cancelled"  # the campaign was cancelled before this one was posted


class Message(db.Model):
    """One message to one number (a test send or a campaign's), created before it is posted."""

    __table_args__ = (
        Index("ix_message_team_unique_id", "team_id", "unique_id"),
        # The claim query: a campaign's CREATED rows in id order.
        Index("ix_message_campaign_status_id", "campaign_id", "status", "id"),
        # The recovery sweep, every 15 s: rows in flight too long, and claims too old (no full scan). Partial,
        # so they hold only the few rows in flight or claimed: an index led by a column that a whole campaign
        # shares (its status, its team) makes every write of a row find its place among a million equal keys.
        Index("ix_message_sending_sent_at", "sent_at",
              postgresql_where=db.text("status = 'sending'"), sqlite_where=db.text("status = 'sending'")),
        Index("ix_message_claimed_at", "claimed_at",
              postgresql_where=db.text("claim_token IS NOT NULL"), sqlite_where=db.text("claim_token IS NOT NULL")),
        # The messages table: a campaign's rows in id order (keyset pages), and by number prefix.
        Index("ix_message_campaign_id_id", "campaign_id", "id"),
        Index("ix_message_campaign_phone", "campaign_id", "phone", postgresql_ops={"phone": "varchar_pattern_ops"}),
        # Callback coverage and unconfirmed messages: sent rows still without a final state, oldest first
        # (kind and resent included: the page's capped counts read the index alone). Only rows that were
        # posted: the million queued ones would share one key.
        Index("ix_message_campaign_status_sent_at", "campaign_id", "status", "sent_at",
              postgresql_include=["kind", "resent"], postgresql_where=db.text("sent_at IS NOT NULL"),
              sqlite_where=db.text("sent_at IS NOT NULL")),
        # When the first message held for quiet hours goes out, without reading the campaign's queue.
        Index("ix_message_campaign_held_until", "campaign_id", "status", "not_before",
              postgresql_where=db.text("held IS true"), sqlite_where=db.text("held IS 1")),
        # A team's test sends of the last minute and day (webapp.services.test_sends): only test rows held.
        Index("ix_message_team_test_sends", "team_id", "created_at",
              postgresql_where=db.text("kind = 'test'"), sqlite_where=db.text("kind = 'test'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"))  # indexed first in ix_message_team_unique_id
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"))
    kind: Mapped[MessageKind] = mapped_column(enum_column(MessageKind))
    phone: Mapped[str] = mapped_column(String(20))
    sender: Mapped[str] = mapped_column(String(20), default="")
    text: Mapped[str] = mapped_column(Text)
    encoding: Mapped[Encoding] = mapped_column(enum_column(Encoding, 8))
    parts: Mapped[int]
    estimated_cost: Mapped[Decimal] = mapped_column(Numeric(12, 5))
    is_mms: Mapped[bool] = mapped_column(default=False)
    # Our own id, sent as MultiTEL's `reference` so a callback matches even if unique_id was never saved.
    reference: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: secrets.token_urlsafe(16))
    status: Mapped[MessageStatus] = mapped_column(enum_column(MessageStatus), default=MessageStatus.CREATED)
    unique_id: Mapped[str | None] = mapped_column(String(100))
    # What the provider bills: its latest figure (a callback's, else the send reply's); the reply's own
    # figures stay beside it, so a disagreement between the two is kept and shown.
    billed_parts: Mapped[int | None]
    billed_cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 5))
    reply_parts: Mapped[int | None]
    reply_cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 5))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Exactly once (webapp.services.sending): the batch that claimed the row, when, and what is left to try.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # backing off, or held for quiet hours until then
    held: Mapped[bool] = mapped_column(default=False)  # not_before comes from quiet hours
    attempts: Mapped[int] = mapped_column(default=0)  # POSTs that were not sent (retried with backoff)
    pid: Mapped[str | None] = mapped_column(String(120))
    finished_at: Mapped[datetime | None]
    # "Resend unconfirmed" makes a new row (its own reference) pointing at the unknown one it replaces.
    resend_of_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"))
    resent: Mapped[bool] = mapped_column(default=False)
    sent_twice: Mapped[bool] = mapped_column(default=False)  # the replaced attempt was confirmed after all


class SendBatch(db.Model):
    """A batch in progress, by its claim token: its heartbeat tells the sweep whether its claims are still held.

    Written with the claim (same transaction) and deleted with the release, so a claim token without a
    live row here belongs to a batch that is gone: its rows never marked in flight are released.
    """

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(db.Model):
    """Who did what to a campaign, and when (user None: the engine itself, such as an automatic pause)."""

    __table_args__ = (Index("ix_audit_entry_campaign_at", "campaign_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User | None] = relationship()


# --- Campaign figures kept by the database (webapp.tally_triggers, webapp.services.tallies) -------------


class TallyDelta(db.Model):
    """What one statement changed in a campaign's figures, appended by a trigger on message and folded later.

    Appending never waits on another writer (no shared counter row), so a storm of callbacks and the
    engine's writes run side by side; the fold adds the deltas into CampaignTally and CampaignMinute.
    No foreign key: a delta of a deleted campaign is dropped by the fold.
    """

    __table_args__ = (Index("ix_tally_delta_campaign_id", "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int]
    bucket: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(120), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)
    messages: Mapped[int] = mapped_column(default=0)
    parts: Mapped[int] = mapped_column(default=0)
    estimated: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))
    billed: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))
    unbilled: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))  # estimates of rows not billed yet
    mismatched: Mapped[int] = mapped_column(default=0)  # billed differs from the estimate
    sent_twice: Mapped[int] = mapped_column(default=0)


class CampaignTally(db.Model):
    """A campaign's messages by bucket (status, with held and replaced apart) and failure reason, folded."""

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(120), primary_key=True, default="")
    messages: Mapped[int] = mapped_column(default=0)
    parts: Mapped[int] = mapped_column(default=0)
    estimated: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))
    billed: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))
    unbilled: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))
    mismatched: Mapped[int] = mapped_column(default=0)
    sent_twice: Mapped[int] = mapped_column(default=0)


class CampaignMinute(db.Model):
    """Messages posted, delivered and failed in each minute of a campaign: the chart, and the send rate."""

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    posted: Mapped[int] = mapped_column(default=0)
    delivered: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    spend: Mapped[Decimal] = mapped_column(Numeric(18, 5), default=Decimal(0))  # billed, else estimated, as posted


from webapp import tally_triggers  # noqa: E402  (the triggers are created with the message table)

tally_triggers.attach(Message.__table__, TallyDelta.__table__)
