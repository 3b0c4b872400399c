"""Status callbacks stored and applied: every wire style the parser reads, duplicates, disorder, lateness,
orphans matched later, unknown words and unreadable bodies, and billed figures against the send reply."""

import json
import os
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from tests.factories import make_message, make_team
from webapp.extensions import db
from webapp.models import Message, MessageStatus, ProviderCallback, utcnow
from webapp.services import callbacks
from webapp.services.callbacks import (
    NO_MESSAGE_ID,
    NO_STATUS_WORD,
    REPLY_DISAGREES,
    UNKNOWN_WORD,
    UNREADABLE,
    rematch_orphans,
    store_status_callback,
)
from webapp.services.sending import record_accepted

FORM = "application/x-www-form-urlencoded"
STYLES = ("form", "json", "data", "envelope", "query", "multipart")


def wire(style: str, uniqueid=None, reference=None, status=None, cost=None,
         parts=None) -> tuple[str | None, str, bytes]:
    """(content type, query string, body) of one callback as each style the parser reads would carry it."""
    if style == "form":  # upper-case keys, as a PHP gateway might send
        fields = {"UNIQUEID": uniqueid, "Reference": reference, "STATUS": status, "Cost": cost, "PARTS": parts}
        body = "&".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        return FORM, "", body.encode()
    if style == "json":  # flat, CamelCase, numbers as numbers
        fields = {"UniqueId": uniqueid, "Reference": reference, "Status": status,
                  "Cost": float(cost) if cost else None, "Parts": int(parts) if parts else None}
        return "application/json", "", json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    if style == "data":  # nested one level, other key spellings
        fields = {"unique_id": uniqueid, "ref": reference, "state": status, "price": cost, "segments": parts}
        return "application/json", "", json.dumps({"data": {k: v for k, v in fields.items() if v is not None}}).encode()
    if style == "envelope":  # the API's own reply envelope
        fields = {"uniqueid": uniqueid, "reference": reference, "status": status, "cost": cost, "parts": parts}
        response = {k: v for k, v in fields.items() if v is not None}
        envelope = {"status": {"code": "200", "msg": ""}, "response": response}
        return "application/json", "", json.dumps(envelope).encode()
    if style == "query":  # a GET with everything in the query string
        fields = {"uniqueid": uniqueid, "reference": reference, "status": status, "cost": cost, "parts": parts}
        return None, "&".join(f"{key}={value}" for key, value in fields.items() if value is not None), b""
    assert style == "multipart"
    fields = {"uniqueid": uniqueid, "reference": reference, "status": status, "cost": cost, "parts": parts}
    body = "".join(f'--XyZ\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                   for key, value in fields.items() if value is not None) + "--XyZ--\r\n"
    return "multipart/form-data; boundary=XyZ", "", body.encode()


def _store(team_id: int, style: str, **fields):
    return store_status_callback(team_id, *wire(style, **fields))


def _message(message_id: int) -> Message:
    db.session.expire_all()
    return db.session.get(Message, message_id)


def _stored(team_id: int) -> list[ProviderCallback]:
    db.session.expire_all()
    return db.session.scalars(select(ProviderCallback).where(ProviderCallback.team_id == team_id)
                              .order_by(ProviderCallback.id)).all()


@pytest.fixture
def team(app):
    with app.app_context():
        yield make_team()


@pytest.mark.parametrize("style", STYLES)
def test_each_wire_style_moves_its_message_and_bills_it(app, team, style):
    """Sent then delivered, in each style: the message climbs to delivered, billed as reported, both kept."""
    row = make_message(team, status=MessageStatus.SENDING)
    sent = _store(team.id, style, reference=row.reference, status="ENROUTE")
    assert (sent.message_id, sent.problem) == (row.id, None)
    assert _message(row.id).status is MessageStatus.ACCEPTED
    _store(team.id, style, uniqueid="u-77", reference=row.reference, status="DELIVRD", cost="0.03", parts="2")
    message = _message(row.id)
    assert (message.status, message.unique_id) == (MessageStatus.DELIVERED, "u-77")
    assert (message.billed_parts, message.billed_cost) == (2, Decimal("0.03"))
    assert message.finished_at is not None
    stored = _stored(team.id)
    assert [(r.state, r.message_id, r.problem) for r in stored] == [("sent", row.id, None), ("delivered", row.id, None)]
    assert (stored[1].cost, stored[1].parts) == (Decimal("0.03"), 2)


def test_a_duplicate_is_stored_and_changes_nothing(app, team):
    """The same delivered report twice: two rows, both matched; the message's update time is the first's."""
    row = make_message(team, status=MessageStatus.ACCEPTED, unique_id="u-d")
    _store(team.id, "form", uniqueid="u-d", status="DELIVRD", cost="0.015", parts="1")
    first = _message(row.id).updated_at
    _store(team.id, "form", uniqueid="u-d", status="DELIVRD", cost="0.015", parts="1")
    assert _message(row.id).updated_at == first
    assert [r.message_id for r in _stored(team.id)] == [row.id, row.id]


def test_out_of_order_reports_end_final(app, team):
    """Failed arrives before the interim 'sent': the message stays undelivered with the provider's reason."""
    row = make_message(team, status=MessageStatus.ACCEPTED)
    _store(team.id, "json", reference=row.reference, status="UNDELIV")
    _store(team.id, "json", reference=row.reference, status="sent")
    message = _message(row.id)
    assert message.status is MessageStatus.UNDELIVERED
    assert message.error == "Not delivered: the provider reported UNDELIV"


def test_a_report_days_late_still_applies_and_a_late_interim_changes_nothing(app, team):
    """An unknown message from two days ago becomes delivered; a 'sent' arriving after that changes nothing."""
    row = make_message(team, status=MessageStatus.UNKNOWN, sent_at=utcnow() - timedelta(days=2))
    _store(team.id, "envelope", reference=row.reference, uniqueid="u-late", status="DELIVERED")
    finished = _message(row.id).finished_at
    _store(team.id, "envelope", reference=row.reference, status="ENROUTE")
    message = _message(row.id)
    assert (message.status, message.unique_id, message.finished_at) == (MessageStatus.DELIVERED, "u-late", finished)


def test_an_unknown_message_is_accepted_then_delivered_by_its_callbacks(app, team):
    """The engine's 'unknown' (no reply) learns from the reports: accepted by 'sent', then delivered."""
    row = make_message(team, status=MessageStatus.UNKNOWN)
    _store(team.id, "data", reference=row.reference, status="sent")
    assert _message(row.id).status is MessageStatus.ACCEPTED
    _store(team.id, "data", reference=row.reference, status="delivered")
    assert _message(row.id).status is MessageStatus.DELIVERED


def test_an_orphan_is_kept_and_matched_once_its_message_has_the_uniqueid(app, team):
    """A report keyed by uniqueid alone, ahead of the send reply: kept unmatched, then the reply is recorded
    (reply figures billed until then), and the sweep applies it with its own billed figures, flagged."""
    row = make_message(team, status=MessageStatus.SENDING, claim_token="claim-1", estimated_cost=Decimal("0.015"))
    early = _store(team.id, "form", uniqueid="u-early", status="DELIVRD", cost="0.03", parts="2")
    assert early.message_id is None and early.problem is None
    assert _message(row.id).status is MessageStatus.SENDING

    record_accepted("claim-1", [{"id": row.id, "unique_id": "u-early", "pid": "p", "parts": 1,
                                   "cost": Decimal("0.015")}])
    db.session.commit()
    message = _message(row.id)
    assert (message.status, message.billed_parts, message.billed_cost) == (MessageStatus.ACCEPTED, 1, Decimal("0.015"))

    assert rematch_orphans() == 1
    message = _message(row.id)
    assert (message.status, message.billed_parts, message.billed_cost) == (MessageStatus.DELIVERED, 2, Decimal("0.03"))
    assert (message.reply_parts, message.reply_cost) == (1, Decimal("0.015"))
    [stored] = _stored(team.id)
    assert (stored.message_id, stored.problem) == (row.id, REPLY_DISAGREES)
    assert rematch_orphans() == 0


def test_an_orphan_never_overrides_a_later_callbacks_figures(app, team):
    """Orphan (cost 0.03) then, once the id is known, a newer report (0.045): the sweep keeps 0.045 billed."""
    row = make_message(team, status=MessageStatus.ACCEPTED)
    _store(team.id, "form", uniqueid="u-o", status="sent", cost="0.03", parts="2")
    row.unique_id = "u-o"
    db.session.commit()
    _store(team.id, "form", uniqueid="u-o", status="DELIVRD", cost="0.045", parts="3")
    assert rematch_orphans() == 1
    message = _message(row.id)
    assert (message.status, message.billed_parts, message.billed_cost) == (MessageStatus.DELIVERED, 3, Decimal("0.045"))


def test_the_reply_then_a_callback_that_disagrees_is_flagged_and_billed(app, team):
    """Reply: 1 part, 0.015. Callback: 2 parts, 0.030. Both kept, the callback billed, its row flagged;
    a callback that agrees with the reply is not flagged."""
    row = make_message(team, status=MessageStatus.SENDING, claim_token="claim-2")
    record_accepted("claim-2", [{"id": row.id, "unique_id": "u-r", "pid": "p", "parts": 1,
                                   "cost": Decimal("0.015")}])
    db.session.commit()
    agrees = _store(team.id, "json", uniqueid="u-r", status="sent", cost="0.015", parts="1")
    disagrees = _store(team.id, "json", uniqueid="u-r", status="DELIVRD", cost="0.030", parts="2")
    assert (agrees.problem, disagrees.problem) == (None, REPLY_DISAGREES)
    message = _message(row.id)
    assert (message.reply_parts, message.reply_cost) == (1, Decimal("0.015"))
    assert (message.billed_parts, message.billed_cost) == (2, Decimal("0.03"))


def test_a_callback_before_the_reply_stays_billed(app, team):
    """The report's figures arrive first; the reply recorded afterwards keeps its own beside them."""
    row = make_message(team, status=MessageStatus.SENDING, claim_token="claim-3")
    _store(team.id, "form", reference=row.reference, uniqueid="u-f", status="sent", cost="0.03", parts="2")
    record_accepted("claim-3", [{"id": row.id, "unique_id": "u-f", "pid": "p", "parts": 1,
                                   "cost": Decimal("0.015")}])
    db.session.commit()
    message = _message(row.id)
    assert (message.status, message.billed_parts, message.billed_cost) == (MessageStatus.ACCEPTED, 2, Decimal("0.03"))
    assert (message.reply_parts, message.reply_cost) == (1, Decimal("0.015"))


@pytest.mark.parametrize("style", STYLES)
def test_an_unknown_word_is_stored_flagged_and_not_applied(app, team, style):
    """'DELIVERED_TO_NETWORK' is not in the vocabulary: matched to its message, flagged, the message unchanged."""
    row = make_message(team, status=MessageStatus.ACCEPTED)
    stored = _store(team.id, style, reference=row.reference, status="DELIVERED_TO_NETWORK", cost="0.5", parts="9")
    assert (stored.message_id, stored.problem) == (row.id, UNKNOWN_WORD)
    message = _message(row.id)
    assert (message.status, message.billed_cost) == (MessageStatus.ACCEPTED, None)
    [kept] = _stored(team.id)
    assert (kept.state, kept.raw_status) == ("unknown", "DELIVERED_TO_NETWORK")


@pytest.mark.parametrize(("content_type", "body", "problem"), [
    (FORM, b"\xff\xfe\x00\x01garbage without fields", UNREADABLE),
    ("application/json", b'{"uniqueid": "u-1", "status": ', UNREADABLE),
    ("multipart/form-data; boundary=missing", b"--other\r\nnot a part\r\n", UNREADABLE),
    ("text/plain", b"DELIVRD", UNREADABLE),
    ("application/json", b'{"status": "DELIVRD", "cost": 0.015}', NO_MESSAGE_ID),
    (FORM, b"uniqueid=u-x&cost=0.015", NO_STATUS_WORD),
])
def test_a_body_the_parser_cannot_use_is_stored_and_flagged(app, team, content_type, body, problem):
    """Unreadable, no message id, or no status word: stored as it came, flagged for a person, applied to nothing."""
    stored = store_status_callback(team.id, content_type, "", body)
    assert (stored.message_id, stored.problem) == (None, problem)
    [kept] = _stored(team.id)
    assert kept.body == body.decode("utf-8", "replace").replace("\x00", "") and kept.problem == problem


def test_a_callback_is_kept_when_applying_it_fails_and_applied_by_the_sweep(app, team):
    """The database refuses the message UPDATE (a trigger raising): the raw callback is still stored,
    unmatched, and the sweep applies it once the UPDATE works again."""
    row = make_message(team, status=MessageStatus.ACCEPTED)
    postgres = db.engine.dialect.name == "postgresql"
    if postgres:
        db.session.execute(text("CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"))
        db.session.execute(text("CREATE TRIGGER refuse_update BEFORE UPDATE ON message "
                                "FOR EACH ROW EXECUTE FUNCTION refuse_update()"))
    else:
        db.session.execute(text("CREATE TRIGGER refuse_update BEFORE UPDATE ON message "
                                "BEGIN SELECT RAISE(ABORT, 'refused'); END"))
    db.session.commit()
    try:
        stored = _store(team.id, "form", reference=row.reference, status="DELIVRD")
    finally:
        db.session.execute(text("DROP TRIGGER refuse_update" + (" ON message" if postgres else "")))
        if postgres:
            db.session.execute(text("DROP FUNCTION refuse_update()"))
        db.session.commit()
    assert stored.message_id is None
    assert _message(row.id).status is MessageStatus.ACCEPTED
    assert rematch_orphans() == 1
    assert _message(row.id).status is MessageStatus.DELIVERED


def test_values_the_columns_cannot_hold_are_fitted(app, team):
    """A lone surrogate, a NUL and a cost of 1e-999999999 are stored (as ?, nothing and 0), never an error."""
    body = b'{"uniqueid": "u-\\ud800", "reference": "r\\u0000x", "status": "sent", "cost": "1e-999999999"}'
    stored = store_status_callback(team.id, "application/json", "", body)
    [kept] = _stored(team.id)
    assert kept.id == stored.id
    assert (kept.unique_id, kept.reference, kept.cost) == ("u-?", "rx", Decimal("0"))


def test_a_new_token_works_at_once_and_a_replaced_one_only_while_cached(app, team):
    """Tokens are cached per process; a token that doesn't match is re-read, so a new one works at once,
    and the old one stops working once the cache entry is older than TOKEN_CACHE_SECONDS."""
    old = team.callback_token
    assert callbacks.token_matches(team.id, old, "callback")
    team.callback_token = "new-token-" + "x" * 30
    db.session.commit()
    assert callbacks.token_matches(team.id, "new-token-" + "x" * 30, "callback")
    original = callbacks.TOKEN_CACHE_SECONDS
    callbacks.TOKEN_CACHE_SECONDS = 0
    try:
        assert not callbacks.token_matches(team.id, old, "callback")
        assert not callbacks.token_matches(team.id + 10**6, old, "callback")
        assert not callbacks.token_matches(team.id, team.inbound_token, "callback")
        assert callbacks.token_matches(team.id, team.inbound_token, "inbound")
    finally:
        callbacks.TOKEN_CACHE_SECONDS = original


# The per-thread callback connection exists only on PostgreSQL (SQLite stores callbacks through the pool); the
# suite runs on both backends in CI, so this path is tested there.
postgresql_only = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"),
    reason="the per-thread PostgreSQL connection of the callback path; SQLite has none (set TEST_DATABASE_URL)")


@postgresql_only
def test_a_lost_connection_costs_no_callback(app, team):
    """The server ends the thread's callback connection: that callback is stored through the pool, and the
    next one opens a new connection; both are applied."""
    first, second = (make_message(team, status=MessageStatus.ACCEPTED) for _ in range(2))
    _store(team.id, "form", reference=first.reference, status="sent")
    pid = callbacks._thread_connection(callbacks._postgresql_dsn()).info.backend_pid
    db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    db.session.commit()
    assert _store(team.id, "form", reference=first.reference, status="DELIVRD").message_id == first.id
    assert _store(team.id, "form", reference=second.reference, status="DELIVRD").message_id == second.id
    assert callbacks._thread_connection(callbacks._postgresql_dsn()).info.backend_pid != pid
    assert {_message(first.id).status, _message(second.id).status} == {MessageStatus.DELIVERED}


def test_callbacks_posted_at_once_from_many_threads_are_all_kept_and_applied(app, team):
    """24 threads store a callback each at the same moment: 24 rows, 24 messages moved."""
    import threading

    rows = [make_message(team, status=MessageStatus.UNKNOWN) for _ in range(24)]
    start = threading.Barrier(len(rows))
    stored = []

    def post(reference: str) -> None:
        with app.app_context():
            start.wait()
            stored.append(store_status_callback(team.id, FORM, "", f"reference={reference}&status=sent".encode()))

    threads = [threading.Thread(target=post, args=(row.reference,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(s.message_id for s in stored) == sorted(row.id for row in rows)
    assert {_message(row.id).status for row in rows} == {MessageStatus.ACCEPTED}
