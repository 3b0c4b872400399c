"""A draft's audience: who gets it, who is left out and why, and what every rendered message costs.

Each figure measures each recipient's own text (template rendered with their fields, plus the footer),
never the template's length plus the longest field. Recipients come list by list in the campaign's
order; a number already met in an earlier list is a duplicate, so the first list supplies the fields.

The summary reads the audience in one streamed query per list and keeps only counters (and the set of
numbers met, when there is more than one list), so a million contacts take seconds and little memory;
bench/audience_summary.py measures it beside a bare render + measure loop.
"""

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from redis.exceptions import RedisError
from sqlalchemy import func, select, update

from webapp.extensions import db
from webapp.models import (
    AudienceSummary,
    Campaign,
    CampaignList,
    CampaignStatus,
    Contact,
    ContactList,
    Message,
    MessageKind,
    MessageStatus,
    SummaryStatus,
    Suppression,
    Team,
    utcnow,
)
from webapp.provider import segments
from webapp.services.campaigns import message_body
from webapp.services.compose import Prices, footer_for, known_fields, team_prices, with_footer
from webapp.services.contacts import suppressed_phones
from webapp.services.templating import CompiledTemplate, TemplateError, compile_template

logger = logging.getLogger(__name__)

# A message in one of these states may have reached the recipient: it counts for the frequency cap.
SENT_STATUSES = (MessageStatus.SENDING, MessageStatus.ACCEPTED, MessageStatus.UNKNOWN, MessageStatus.DELIVERED,
                 MessageStatus.UNDELIVERED)
INLINE_LIMIT = 5_000  # contacts summarized during the request; bigger audiences go to a job
PROGRESS_EVERY = 20_000  # rows between progress writes
SAMPLE_LIMIT = 100  # contacts listed by name for "their own data forces UCS-2"
_E164 = re.compile(r"\+[1-9]\d{6,14}")


class Exclusion(StrEnum):
    OPTED_OUT = "opted_out"
    LANDLINE = "landline"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    FREQUENCY_CAP = "frequency_cap"  # at launch only: messaged within the team's frequency cap

    @property
    def label(self) -> str:
        return {
            "opted_out": "Opted out",
            "landline": "Landline (can't receive SMS)",
            "invalid": "Invalid number",
            "duplicate": "Duplicate of a number in an earlier list",
            "frequency_cap": "Messaged recently (frequency cap)",
        }[self.value]


class AudienceProblem(ValueError):
    """The draft can't be summarized yet (no lists, a refused template); the message says what to fix."""


@dataclass(frozen=True)
class _Setup:
    team: Team
    template: CompiledTemplate
    footer: str
    prices: Prices
    is_mms: bool
    list_ids: list[int]


def _setup(campaign: Campaign) -> _Setup:
    if not campaign.audience:
        raise AudienceProblem("Choose at least one list.")
    body, footer = message_body(campaign)
    try:
        template = compile_template(body or "")
    except TemplateError as error:
        raise AudienceProblem(f"The message is refused: {error}") from None
    team = db.session.get(Team, campaign.team_id)
    return _Setup(team, template, footer, team_prices(team), campaign.is_mms, campaign.list_ids)


def fingerprint(campaign: Campaign) -> str:
    """What the summary depends on: a new one is needed when the message, the prices, the lists' contacts,
    the opt-outs or the frequency cap change (counts and highest ids tell an added or removed row)."""
    team = db.session.get(Team, campaign.team_id)
    prices = team_prices(team)
    contacts = db.session.execute(select(func.count(Contact.id), func.max(Contact.id))
                                  .where(Contact.list_id.in_(campaign.list_ids))).one()
    opt_outs = db.session.execute(select(func.count(Suppression.id), func.max(Suppression.id))
                                  .where(Suppression.team_id == team.id)).one()
    material = [campaign.body, footer_for(team, campaign.include_footer), campaign.list_ids, campaign.is_mms,
                str(prices.per_part), sorted((k, str(v)) for k, v in prices.by_country.items()), str(prices.mms),
                list(contacts), list(opt_outs), team.frequency_cap_hours]
    return hashlib.sha256(json.dumps(material, ensure_ascii=False).encode()).hexdigest()


def audience_size(campaign: Campaign) -> int:
    """Contacts in the chosen lists, before exclusions."""
    if not campaign.audience:
        return 0
    return db.session.scalar(select(func.count()).select_from(Contact).where(Contact.list_id.in_(campaign.list_ids)))


# --- preview ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewItem:
    """One audience row as it will go out (or why it won't)."""

    contact_id: int
    phone: str
    region: str | None
    list_name: str
    exclusion: Exclusion | None
    text: str
    measurement: segments.Measurement
    parts: int
    cost: Decimal
    missing: tuple[str, ...]
    data_forces_ucs2: bool


@dataclass(frozen=True)
class PreviewPage:
    items: list[PreviewItem]
    page: int
    pages: int
    total: int
    currency: str


def preview_page(campaign: Campaign, page: int = 1, per_page: int = 10) -> PreviewPage:
    """A page of the audience in send order, each message rendered, measured and priced."""
    setup = _setup(campaign)
    total = audience_size(campaign)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = db.session.execute(
        select(Contact.id, Contact.phone, Contact.region, Contact.number_type, Contact.attributes,
               CampaignList.position, ContactList.name)
        .join(CampaignList, (CampaignList.list_id == Contact.list_id) & (CampaignList.campaign_id == campaign.id))
        .join(ContactList, ContactList.id == Contact.list_id)
        .order_by(CampaignList.position, Contact.id)
        .offset((page - 1) * per_page).limit(per_page)
    ).all()
    suppressed = suppressed_phones(campaign.team_id, [row.phone for row in rows])
    duplicates = _earlier_numbers(setup.list_ids, rows)
    items = []
    for row in rows:
        detail = setup.template.render_detail(row.attributes or {}, row.phone)
        text = with_footer(detail.text, setup.footer)
        measurement = segments.measure(text)
        parts, cost = setup.prices.estimate(measurement.parts, row.region, setup.is_mms)
        items.append(PreviewItem(
            contact_id=row.id, phone=row.phone, region=row.region, list_name=row.name,
            exclusion=_exclusion(row.phone, row.number_type, suppressed, (row.position, row.phone) in duplicates),
            text=text, measurement=measurement, parts=parts, cost=cost, missing=detail.missing,
            data_forces_ucs2=measurement.encoding is segments.Encoding.UCS2
            and not all(segments.is_gsm7(value) for value in detail.values),
        ))
    return PreviewPage(items, page, pages, total, setup.prices.currency)


def _earlier_numbers(list_ids: list[int], rows) -> set[tuple[int, str]]:
    """(position, phone) of the rows whose number is in a list placed before theirs."""
    found = set()
    for position in {row.position for row in rows if row.position > 0}:
        phones = [row.phone for row in rows if row.position == position]
        earlier = list_ids[:position]
        for phone in db.session.scalars(select(Contact.phone).where(Contact.list_id.in_(earlier),
                                                                    Contact.phone.in_(phones))):
            found.add((position, phone))
    return found


def _exclusion(phone: str, number_type: str, suppressed: set[str], duplicate: bool) -> Exclusion | None:
    if duplicate:
        return Exclusion.DUPLICATE
    if phone in suppressed:
        return Exclusion.OPTED_OUT
    if number_type == "fixed_line":
        return Exclusion.LANDLINE
    if not _E164.fullmatch(phone or ""):
        return Exclusion.INVALID
    return None


# --- summary ---------------------------------------------------------------------------------------


def summarize(campaign: Campaign, progress: Callable[[int], None] | None = None) -> dict:
    """Counts over the whole audience, as JSON-ready data (see the module docstring for the rules)."""
    started = time.perf_counter()
    setup = _setup(campaign)
    template, footer, prices = setup.template, setup.footer, setup.prices
    suppressed = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == campaign.team_id)))
    capped = recently_messaged(setup.team)
    unknown = template.unknown_fields(known_fields(campaign.team_id, setup.list_ids))
    no_fallback = [p.name for p in template.placeholders if p.fallback is None and p.name != "phone"]
    no_fallback = list(dict.fromkeys(no_fallback))
    used_fields = [name for name in template.fields if name != "phone"]

    excluded = Counter()
    histogram = Counter()
    region_parts: Counter = Counter()
    region_recipients: Counter = Counter()
    missing_by_field = Counter()
    missing_contacts = 0
    ucs2 = 0
    data_ucs2 = 0
    data_ucs2_sample: list[dict] = []
    worst_parts, worst_text = 0, ""
    read = 0
    seen: set[str] = set()
    measure = segments.measure
    render = template.render
    valid = _E164.fullmatch
    ucs2_encoding = segments.Encoding.UCS2

    for batch in _batches(setup.list_ids):
        for contact_id, phone, region, number_type, attributes, remember in batch:
            if phone in seen:
                excluded[Exclusion.DUPLICATE] += 1
                continue
            if remember:
                seen.add(phone)
            if phone in suppressed:
                excluded[Exclusion.OPTED_OUT] += 1
                continue
            if number_type == "fixed_line":
                excluded[Exclusion.LANDLINE] += 1
                continue
            if not valid(phone):
                excluded[Exclusion.INVALID] += 1
                continue
            if phone in capped:
                excluded[Exclusion.FREQUENCY_CAP] += 1
                continue
            attributes = attributes or {}
            text = render(attributes, phone)
            if footer:  # with_footer(), inlined: this loop runs once per recipient
                text = f"{text}\n{footer}" if text else footer
            measurement = measure(text)
            parts = measurement.parts
            histogram[parts] += 1
            region_parts[region] += parts
            region_recipients[region] += 1
            if parts > worst_parts:
                worst_parts, worst_text = parts, text
            if no_fallback:
                missing_here = False
                for name in no_fallback:
                    value = attributes.get(name)
                    if value is None or not str(value).strip():
                        missing_by_field[name] += 1
                        missing_here = True
                missing_contacts += missing_here
            if measurement.encoding is ucs2_encoding:
                ucs2 += 1
                culprits = _data_culprits(attributes, used_fields)
                if culprits:
                    data_ucs2 += 1
                    if len(data_ucs2_sample) < SAMPLE_LIMIT:
                        data_ucs2_sample.append({"contact_id": contact_id, "phone": phone, "chars": culprits})
        read += len(batch)
        if progress is not None:
            progress(read)

    recipients = sum(histogram.values())
    total_parts = sum(region_parts.values())
    by_country = []
    total_cost = Decimal(0)
    for region in sorted(region_recipients, key=lambda r: (-region_recipients[r], r or "")):
        billed_parts = region_recipients[region] if setup.is_mms else region_parts[region]
        price = prices.mms if setup.is_mms else prices.part_price(region)
        cost = billed_parts * price
        total_cost += cost
        by_country.append({"region": region or "", "recipients": region_recipients[region],
                           "parts": region_parts[region], "billed": billed_parts,  # what price multiplies
                           "price": str(price), "cost": str(cost),
                           "country_price": (region or "") in prices.by_country})
    default_priced = [entry["region"] or "unknown" for entry in by_country if not entry["country_price"]]
    warning = None
    if not setup.is_mms and len(default_priced) > 1:
        warning = (f"This audience spans {len(default_priced)} countries ({', '.join(default_priced[:8])}"
                   f"{'…' if len(default_priced) > 8 else ''}) at one price of {prices.per_part} {prices.currency} "
                   "a part. Prices differ by country: set country prices in Settings.")
    return {
        "audience": read,
        "recipients": recipients,
        "parts_histogram": {str(parts): count for parts, count in sorted(histogram.items())},
        "ucs2": ucs2,
        "gsm7": recipients - ucs2,
        "total_parts": total_parts,
        "billed_units": recipients if setup.is_mms else total_parts,
        "total_cost": str(total_cost),
        "currency": prices.currency,
        "is_mms": setup.is_mms,
        "mms_price": str(prices.mms),
        "by_country": by_country,
        "price_warning": warning,
        "excluded": {reason.value: excluded[reason] for reason in Exclusion
                     if reason is not Exclusion.FREQUENCY_CAP or setup.team.frequency_cap_hours},
        "excluded_total": sum(excluded.values()),
        "unknown_fields": unknown,
        "missing_fields": dict(missing_by_field),
        "missing_contacts": missing_contacts,
        "data_ucs2": data_ucs2,
        "data_ucs2_sample": data_ucs2_sample,
        "worst_parts": worst_parts,
        "worst_text": worst_text,
        "footer": footer,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _batches(list_ids: list[int]):
    """The audience's contacts, list by list in campaign order, streamed in batches of PROGRESS_EVERY rows:
    (id, phone, region, number_type, attributes, remember) where remember is False in the last list,
    whose numbers can't be met again."""
    for position, list_id in enumerate(list_ids):
        remember = position < len(list_ids) - 1
        result = db.session.execute(
            select(Contact.id, Contact.phone, Contact.region, Contact.number_type, Contact.attributes)
            .where(Contact.list_id == list_id).order_by(Contact.id)
            .execution_options(yield_per=PROGRESS_EVERY)
        )
        for batch in result.partitions():
            yield [(*row, remember) for row in batch]


@dataclass(frozen=True)
class RecipientMessage:
    """One recipient's message as it will be sent, with its estimate."""

    contact_id: int
    phone: str
    region: str | None
    text: str
    encoding: segments.Encoding
    parts: int
    cost: Decimal


def recently_messaged(team: Team, now: datetime | None = None) -> set[str]:
    """Numbers this team sent a campaign message to within its frequency cap (held out at launch)."""
    if not team.frequency_cap_hours:
        return set()
    since = (now or utcnow()) - timedelta(hours=team.frequency_cap_hours)
    sent = set(db.session.scalars(select(Message.phone).where(
        Message.team_id == team.id, Message.kind == MessageKind.CAMPAIGN, Message.sent_at >= since,
        Message.status.in_(SENT_STATUSES))))
    # Also those about to get one: waiting in a campaign that is sending or paused right now.
    waiting = set(db.session.scalars(select(Message.phone).join(Campaign, Campaign.id == Message.campaign_id).where(
        Message.team_id == team.id, Message.kind == MessageKind.CAMPAIGN, Message.status == MessageStatus.CREATED,
        Campaign.status.in_((CampaignStatus.SENDING, CampaignStatus.PAUSED)))))
    return sent | waiting


def recipient_messages(campaign: Campaign, excluded: Counter | None = None, held_out: frozenset[str] = frozenset()):
    """Every message the campaign sends, in send order, with the same exclusions and estimates as the
    summary; left-out recipients are counted by reason into `excluded`, and numbers in `held_out`
    (the frequency cap) are left out as FREQUENCY_CAP. Once launched, the frozen text is used."""
    setup = _setup(campaign)
    excluded = Counter() if excluded is None else excluded
    suppressed = set(db.session.scalars(select(Suppression.phone).where(Suppression.team_id == campaign.team_id)))
    seen: set[str] = set()
    for batch in _batches(setup.list_ids):
        for contact_id, phone, region, number_type, attributes, remember in batch:
            reason = _exclusion(phone, number_type, suppressed, phone in seen)
            if remember:
                seen.add(phone)
            if reason is None and phone in held_out:
                reason = Exclusion.FREQUENCY_CAP
            if reason is not None:
                excluded[reason.value] += 1
                continue
            text = with_footer(setup.template.render(attributes or {}, phone), setup.footer)
            measurement = segments.measure(text)
            parts, cost = setup.prices.estimate(measurement.parts, region, setup.is_mms)
            yield RecipientMessage(contact_id, phone, region, text, measurement.encoding, parts, cost)


def _data_culprits(attributes: dict, fields: list[str]) -> str:
    """The characters of the contact's own values (in the template's fields) that are not GSM-7."""
    chars = []
    for name in fields:
        value = attributes.get(name)
        if value and not segments.is_gsm7(str(value)):
            chars.extend(char for char in str(value) if not segments.is_gsm7(char))
    return "".join(dict.fromkeys(chars))


# --- the summary as a row, computed now or by a job ------------------------------------------------


def latest_summary(campaign: Campaign) -> AudienceSummary | None:
    return db.session.scalar(select(AudienceSummary).where(AudienceSummary.campaign_id == campaign.id)
                             .order_by(AudienceSummary.id.desc()).limit(1))


def request_summary(campaign: Campaign, inline_limit: int = INLINE_LIMIT) -> AudienceSummary:
    """The summary for the draft as it is now: reused when nothing changed, computed now when the
    audience is small, else queued for a worker (the page polls its progress)."""
    _setup(campaign)  # refuse early, with the reason, when there is nothing to summarize
    current = fingerprint(campaign)
    latest = latest_summary(campaign)
    if latest is not None and latest.fingerprint == current and latest.status is not SummaryStatus.FAILED:
        return latest
    total = audience_size(campaign)
    summary = AudienceSummary(team_id=campaign.team_id, campaign_id=campaign.id, fingerprint=current, total=total)
    db.session.add(summary)
    db.session.commit()
    if total <= inline_limit:
        run_summary(summary.id)
        return summary
    from rq import Callback

    from webapp.queues import get_queue

    try:
        job = get_queue("default").enqueue("jobs.audience.summarize_audience", summary.id, job_timeout=3600,
                                           on_failure=Callback("jobs.audience.summary_stopped"))
    except RedisError:
        summary.status = SummaryStatus.FAILED
        summary.error = "The job queue can't be reached right now; try again in a minute."
        db.session.commit()
        return summary
    summary.job_id = job.id
    db.session.commit()
    return summary


def run_summary(summary_id: int) -> None:
    """Compute a queued summary and store it, or store why it failed. Safe to run twice."""
    summary = db.session.get(AudienceSummary, summary_id)
    if summary is None or summary.status is SummaryStatus.DONE:
        return
    summary.status = SummaryStatus.RUNNING
    summary.done = 0
    db.session.commit()

    def progress(done: int) -> None:
        # A connection of its own: the summary's session is in the middle of a streamed read.
        with db.engine.begin() as connection:
            connection.execute(update(AudienceSummary).where(AudienceSummary.id == summary_id).values(done=done))

    campaign = db.session.get(Campaign, summary.campaign_id)
    try:
        result = summarize(campaign, progress)
    except AudienceProblem as problem:
        db.session.rollback()
        _finish(summary_id, SummaryStatus.FAILED, error=str(problem))
        return
    except Exception:
        db.session.rollback()
        logger.exception("audience summary %s failed", summary_id)
        _finish(summary_id, SummaryStatus.FAILED, error="The summary failed; the error is in the worker's log.")
        raise
    db.session.rollback()  # end the read transaction before writing
    _finish(summary_id, SummaryStatus.DONE, result=result)


def _finish(summary_id: int, status: SummaryStatus, *, result: dict | None = None, error: str | None = None) -> None:
    summary = db.session.get(AudienceSummary, summary_id)
    summary.status = status
    summary.result = result
    summary.error = error
    if result is not None:
        summary.done = result["audience"]
        summary.total = result["audience"]
    summary.finished_at = utcnow()
    db.session.commit()


def mark_stopped(summary_id: int, message: str) -> None:
    """The worker died or timed out (RQ's failure callback): the page says so instead of polling for ever."""
    db.session.execute(update(AudienceSummary).where(
        AudienceSummary.id == summary_id, AudienceSummary.status.in_([SummaryStatus.QUEUED, SummaryStatus.RUNNING])
    ).values(status=SummaryStatus.FAILED, error=message, finished_at=utcnow()))
    db.session.commit()
