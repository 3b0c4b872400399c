"""Status callbacks: authenticated by the team's token, stored raw, and the sandbox round trip."""

import time

import requests
from sqlalchemy import event, func, select

from tests.factories import make_team
from webapp.extensions import db
from webapp.models import InboundMessage, ProviderCallback, Team
from webapp.provider import multitel
from webapp.services.teams import notify_url

FORM = "application/x-www-form-urlencoded"


def _team(app):
    with app.app_context():
        team = make_team("Acme")
        return team.id, team.callback_token


def _callbacks(app, team_id):
    with app.app_context():
        return db.session.scalars(
            select(ProviderCallback).where(ProviderCallback.team_id == team_id).order_by(ProviderCallback.id)
        ).all()


def test_callback_is_stored_raw_and_parsed(app, client):
    """A form callback is kept byte for byte with the fields the parser read."""
    team_id, token = _team(app)
    body = "UNIQUEID=abc-1&reference=m-42&status=DELIVRD&causecode=0"
    response = client.post(f"/callbacks/multitel/{team_id}/{token}", data=body,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    [row] = _callbacks(app, team_id)
    assert row.body == body
    assert (row.unique_id, row.reference, row.state, row.raw_status) == ("abc-1", "m-42", "delivered", "DELIVRD")


def test_unknown_status_is_kept_not_dropped(app, client):
    """A status word we don't know is stored as 'unknown' with the raw word."""
    team_id, token = _team(app)
    client.post(f"/callbacks/multitel/{team_id}/{token}", json={"uniqueid": "u", "status": "WEIRD"})
    [row] = _callbacks(app, team_id)
    assert (row.state, row.raw_status) == ("unknown", "WEIRD")


def test_oversized_and_nul_values_are_still_stored(app, client):
    """A 300-character id or a NUL byte can't make the callback fail to store (PostgreSQL is strict)."""
    team_id, token = _team(app)
    response = client.post(f"/callbacks/multitel/{team_id}/{token}",
                           data=f"uniqueid={'u' * 300}&status=DELIVRD&note=a%00b".encode(),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    [row] = _callbacks(app, team_id)
    assert row.unique_id == "u" * 100 and "\x00" not in row.body and "DELIVRD" in row.body


def test_query_string_callback(app, client):
    """A callback sent as a GET with a query string is accepted too."""
    team_id, token = _team(app)
    assert client.get(f"/callbacks/multitel/{team_id}/{token}?uniqueid=q1&status=sent").status_code == 200
    [row] = _callbacks(app, team_id)
    assert (row.unique_id, row.state) == ("q1", "sent")


def test_wrong_token_is_refused_and_nothing_stored(app, client):
    """A callback without the team's token is refused and not stored."""
    team_id, token = _team(app)
    assert client.post(f"/callbacks/multitel/{team_id}/{token[:-1]}x", data={"status": "DELIVRD"}).status_code == 404
    assert client.post(f"/callbacks/multitel/999999/{token}", data={"status": "DELIVRD"}).status_code == 404
    assert _callbacks(app, team_id) == []


def test_send_through_sandbox_and_receive_callbacks(app, sandbox, live_server):
    """End to end over real HTTP: the client sends, the sandbox calls our notify URL, the callbacks are stored."""
    team_id, _ = _team(app)
    app.config["PUBLIC_BASE_URL"] = live_server.url
    with app.test_request_context():
        url = notify_url(db.session.get(Team, team_id))
    client = multitel.MultitelClient(sandbox.url, multitel.Credentials("sandbox", "sandbox"))
    result = client.send(sender="+14155550100", to="+14155550123", text="Hello from the test",
                         notify_url=url, reference="ref-1")
    assert result.accepted, result.reason
    assert result.parts == 1 and result.unique_id

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_callbacks(app, team_id)) < 2:
        time.sleep(0.1)
    rows = _callbacks(app, team_id)
    assert {row.unique_id for row in rows} == {result.unique_id}
    assert {row.reference for row in rows} == {"ref-1"}
    # The interim and the final report travel on separate requests, so either may be stored first.
    states = {row.state for row in rows}
    assert "sent" in states and states & {"delivered", "failed"}, states


# --- bounds: what a flood can make us keep ------------------------------------------------------------


def _team_row(app, team_id) -> Team:
    with app.app_context():
        team = db.session.get(Team, team_id)
        db.session.expunge(team)
        return team


def _count(app, model, team_id) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(model.team_id == team_id))


def test_body_over_8_kb_is_refused_and_not_stored(app, client):
    """An 8 KB body is stored; one byte more is 413 and leaves no row (a status callback is well under 2 KB)."""
    team_id, token = _team(app)
    url = f"/callbacks/multitel/{team_id}/{token}"
    padding = "x" * (8 * 1024 - len("uniqueid=u1&status=sent&pad="))
    assert client.post(url, data=f"uniqueid=u1&status=sent&pad={padding}",
                       content_type="application/x-www-form-urlencoded").status_code == 200
    assert client.post(url, data=f"uniqueid=u2&status=sent&pad={padding}x",
                       content_type="application/x-www-form-urlencoded").status_code == 413
    assert [row.unique_id for row in _callbacks(app, team_id)] == ["u1"]


def test_query_string_over_4_kb_is_refused_and_not_stored(app, client):
    """A 4 KB query string is stored; one byte more is 414 and leaves no row."""
    team_id, token = _team(app)
    url = f"/callbacks/multitel/{team_id}/{token}"
    query = "uniqueid=q1&status=sent&pad="
    query += "x" * (4 * 1024 - len(query))
    assert client.get(f"{url}?{query}").status_code == 200
    assert client.get(f"{url}?{query.replace('q1', 'q2')}x").status_code == 414
    assert [row.unique_id for row in _callbacks(app, team_id)] == ["q1"]


def test_chunked_body_over_the_cap_is_refused_over_real_http(app, live_server):
    """A chunked body (no Content-Length to check) is read only past the cap, then refused with 413."""
    team_id, token = _team(app)
    url = f"{live_server.url}/callbacks/multitel/{team_id}/{token}"

    def chunks(total):
        for _ in range(total // 1024):
            yield b"x" * 1024

    refused = requests.post(url, data=chunks(200 * 1024), headers={"Content-Type": "text/plain"}, timeout=10)
    accepted = requests.post(url, data=iter([b"uniqueid=c1&", b"status=sent"]),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert (refused.status_code, accepted.status_code) == (413, 200)
    assert [row.unique_id for row in _callbacks(app, team_id)] == ["c1"]


def test_head_request_stores_nothing(app, client):
    """HEAD (routed to the GET view by Flask) answers like GET and stores no callback and no inbound message."""
    with app.app_context():
        team = make_team("Heads")
        team_id, token, inbound_token = team.id, team.callback_token, team.inbound_token
    assert client.head(f"/callbacks/multitel/{team_id}/{token}?uniqueid=h1&status=sent").status_code == 200
    assert client.head(f"/callbacks/inbound/{team_id}/{inbound_token}?from=%2B14155550123&text=STOP").status_code == 200
    assert client.head(f"/callbacks/multitel/{team_id}/{token}x?uniqueid=h1").status_code == 404
    assert _count(app, ProviderCallback, team_id) == 0 and _count(app, InboundMessage, team_id) == 0


def test_empty_request_stores_nothing(app, client):
    """A bare GET or an empty POST carries nothing about any message: 200, and no row."""
    team_id, token = _team(app)
    assert client.get(f"/callbacks/multitel/{team_id}/{token}").status_code == 200
    assert client.post(f"/callbacks/multitel/{team_id}/{token}").status_code == 200
    assert _callbacks(app, team_id) == []


def test_team_id_beyond_a_database_integer_is_404(app, client):
    """A team id of 2^63 (or 2^31, past PostgreSQL's integer) in either URL is 404, not a 500 overflow."""
    _, token = _team(app)
    for team_id in (2**63, 2**31, 2**64 + 1):
        assert client.post(f"/callbacks/multitel/{team_id}/{token}", data={"status": "sent"}).status_code == 404
        assert client.post(f"/callbacks/inbound/{team_id}/{token}", data={"text": "STOP"}).status_code == 404


def test_json_callback_with_a_byte_that_is_not_utf8_keeps_its_fields(app, client):
    """One Latin-1 byte in a JSON callback: the row still has its uniqueid, reference and state."""
    team_id, token = _team(app)
    body = b'{"uniqueid": "j-1", "reference": "r-1", "status": "DELIVRD", "note": "caf\xe9"}'
    client.post(f"/callbacks/multitel/{team_id}/{token}", data=body, content_type="application/json")
    [row] = _callbacks(app, team_id)
    assert (row.unique_id, row.reference, row.state) == ("j-1", "r-1", "delivered")


def test_huge_parts_value_does_not_stall_the_webhook(app, client):
    """parts=1e1000000 is stored at once (it held a web thread for 30 s), with the status still read."""
    team_id, token = _team(app)
    started = time.perf_counter()
    response = client.post(f"/callbacks/multitel/{team_id}/{token}", data="uniqueid=p1&status=DELIVRD&parts=1e1000000",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and time.perf_counter() - started < 2
    [row] = _callbacks(app, team_id)
    assert row.state == "delivered"


def test_unmatched_callbacks_beyond_the_limit_expire_oldest_first_and_are_counted(app, client):
    """With a limit of 5, the sweep keeps each team's 5 newest callbacks and counts the rest as expired."""
    from webapp.services.callbacks import prune_orphans

    app.config.update(CALLBACK_ORPHAN_LIMIT=5, CALLBACK_PRUNE_EVERY=10**9)
    team_id, token = _team(app)
    with app.app_context():
        other = make_team("Quiet")
        other_id, other_token = other.id, other.callback_token
    for number in range(12):
        client.post(f"/callbacks/multitel/{team_id}/{token}", data={"uniqueid": f"u{number}", "status": "sent"})
    for number in range(3):
        client.post(f"/callbacks/multitel/{other_id}/{other_token}", data={"uniqueid": f"o{number}"})
    assert len(_callbacks(app, team_id)) == 12

    with app.app_context():
        assert prune_orphans() == {team_id: 7}
        assert prune_orphans() == {}  # already within bounds: nothing more expires
    assert [row.unique_id for row in _callbacks(app, team_id)] == [f"u{n}" for n in range(7, 12)]
    assert _team_row(app, team_id).callbacks_expired == 7
    assert len(_callbacks(app, other_id)) == 3 and _team_row(app, other_id).callbacks_expired == 0


def test_the_sweep_works_in_batches(app, client):
    """More to expire than one batch holds: the sweep repeats until the team is within bounds."""
    from webapp.services import callbacks

    team_id, token = _team(app)
    app.config["CALLBACK_PRUNE_EVERY"] = 10**9
    for number in range(9):
        client.post(f"/callbacks/multitel/{team_id}/{token}", data={"uniqueid": f"b{number}"})
    with app.app_context():
        assert callbacks.prune_team(team_id, limit=2, batch=3) == 3  # one batch, oldest first
        assert [r.unique_id for r in _callbacks(app, team_id)][0] == "b3"
        original = callbacks.PRUNE_BATCH
        callbacks.PRUNE_BATCH = 2
        try:
            assert callbacks.prune_orphans(limit=2) == {team_id: 4}
        finally:
            callbacks.PRUNE_BATCH = original
    assert [row.unique_id for row in _callbacks(app, team_id)] == ["b7", "b8"]
    assert _team_row(app, team_id).callbacks_expired == 7


def test_a_flood_is_cut_back_as_it_arrives(app, client):
    """Between sweeps, every CALLBACK_PRUNE_EVERY-th row prunes its team: 60 callbacks never pass limit + every."""
    app.config.update(CALLBACK_ORPHAN_LIMIT=5, CALLBACK_PRUNE_EVERY=4)
    team_id, token = _team(app)
    most = 0
    for number in range(60):
        client.post(f"/callbacks/multitel/{team_id}/{token}", data={"uniqueid": f"f{number}", "status": "sent"})
        most = max(most, _count(app, ProviderCallback, team_id))
    kept = _callbacks(app, team_id)
    assert most <= 5 + 4 - 1
    assert kept[-1].unique_id == "f59"
    assert _team_row(app, team_id).callbacks_expired == 60 - len(kept)


def _statements(app, action) -> list[str]:
    """The first word of each SQL statement `action` sends."""
    with app.app_context():
        engine = db.engine
    statements = []
    listener = lambda conn, cursor, statement, *args: statements.append(statement.split()[0].upper())  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return statements


def test_a_callback_reads_nothing_first_once_the_token_is_cached(app, client):
    """The first callback reads the team's token; after that a callback goes straight to storing: on SQLite
    an UPDATE (and a SELECT when it changed nothing) and the INSERT; on PostgreSQL no statement through
    SQLAlchemy at all (its one statement goes on the request thread's own driver connection)."""
    from tests.factories import make_message
    from webapp.models import MessageStatus

    team_id, token = _team(app)
    app.config["CALLBACK_PRUNE_EVERY"] = 10**9
    with app.app_context():
        reference = make_message(db.session.get(Team, team_id), status=MessageStatus.ACCEPTED).reference
    url = f"/callbacks/multitel/{team_id}/{token}"
    first = _statements(app, lambda: client.post(url, data={"reference": reference, "status": "sent"}))
    assert first[0] == "SELECT"
    applied = _statements(app, lambda: client.post(url, data={"reference": reference, "status": "DELIVRD"}))
    duplicate = _statements(app, lambda: client.post(url, data={"reference": reference, "status": "DELIVRD"}))
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        assert applied == duplicate == []
    else:
        assert (applied, duplicate) == (["UPDATE", "INSERT"], ["UPDATE", "SELECT", "INSERT"])
    assert [row.message_id is not None for row in _callbacks(app, team_id)] == [True, True, True]


NASTY_BODIES = [
    (FORM, b"\xff\xfe\x00garbage"),
    ("application/json", b"{"),
    ("application/json", b"[]"),
    ("application/json", b"[1, 2, 3]"),
    ("application/json", b'{"data": [1]}'),
    ("application/json", b'{"uniqueid": "\\ud800", "reference": "\\udfff", "status": "sent"}'),
    ("application/json", b"[" * 4000 + b"]" * 4000),
    ("application/json; charset=klingon", b'{"uniqueid": "k", "status": "sent"}'),
    (f"{FORM}; charset=klingon", b"uniqueid=k&status=sent"),
    (FORM, b"uniqueid=x&cost=1e-999999999&parts=1e5&status=sent"),
    (FORM, b"uniqueid=x&cost=NaN&parts=-1&status=sent"),
    (FORM, b"uniqueid=x&cost=999999.999999&parts=999999&status=DELIVRD"),
    (FORM, b"uniqueid=x&cost=-Infinity&parts=99999999999999999999&status=failed"),
    (FORM, b"reference=" + b"r" * 8000),
    (FORM, b"uniqueid=%ZZ%00&status=%FF"),
    (FORM, b"\x00" * 100),
    ("multipart/form-data; boundary=", b"--\r\n\r\n"),
    ("multipart/form-data", b"no boundary at all"),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="status"\r\n'
                                        b"Content-Type: text/plain; charset=klingon\r\n\r\nsent\r\n--b--"),
    ("\u00ff/\u00fe", b"status=sent"),
    (None, b"uniqueid=nothing-declared&status=sent"),
]


def test_the_endpoint_never_answers_500_to_any_input(app, client):
    """Garbage, broken JSON, bad charsets, absurd numbers, lone surrogates, NULs: 200 and stored, every one."""
    team_id, token = _team(app)
    url = f"/callbacks/multitel/{team_id}/{token}"
    for content_type, body in NASTY_BODIES:
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post(url, data=body, headers=headers)
        assert response.status_code == 200, (content_type, body[:60], response.status_code)
    for query in ("uniqueid=%ff%fe&status=sent", "status", "=&=&", "a=" + "%" * 100):
        assert client.get(f"{url}?{query}").status_code == 200, query
    assert len(_callbacks(app, team_id)) == len(NASTY_BODIES) + 4


def test_an_unreadable_body_is_answered_200_and_flagged(app, client):
    """A body the parser can't read is still kept (the wire format is not published) and flagged for a person."""
    team_id, token = _team(app)
    response = client.post(f"/callbacks/multitel/{team_id}/{token}", data=b"<xml>DELIVRD</xml>",
                           content_type="application/xml")
    assert response.status_code == 200
    [row] = _callbacks(app, team_id)
    assert (row.body, row.problem, row.message_id) == ("<xml>DELIVRD</xml>", "unreadable body", None)


def test_a_database_that_is_down_answers_503_so_the_provider_retries(app_config):
    """Nothing can be read or stored: 503 with Retry-After (a provider retries it), never a 500 or a silent 200."""
    from webapp import create_app

    down = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:9/none"))
    response = down.test_client().post("/callbacks/multitel/1/some-token", data={"uniqueid": "u", "status": "sent"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"


def test_store_status_callback_is_a_plain_service(app):
    """The service stores what it is given without a request, and says what the parser read."""
    from webapp.services.callbacks import store_status_callback

    team_id, _ = _team(app)
    with app.app_context():
        stored = store_status_callback(team_id, "application/json", "reference=r-7",
                                       b'{"uniqueid": "svc-1", "status": "UNDELIV", "causecode": "1"}')
        assert stored.parsed.unique_id == "svc-1" and stored.parsed.state == "failed"
        assert store_status_callback(team_id, None, "", b"") is None
    [row] = _callbacks(app, team_id)
    assert (row.id, row.reference, row.cause_code) == (stored.id, "r-7", "1")


def test_inbound_stop_through_the_service_opts_the_sender_out(app, client):
    """The inbound webhook still records the message and opts a STOP sender out, through the service."""
    from webapp.services.optouts import is_suppressed

    with app.app_context():
        team = make_team("Inbound")
        team_id, inbound_token = team.id, team.inbound_token
    response = client.post(f"/callbacks/inbound/{team_id}/{inbound_token}",
                           data={"from": "+14155550123", "text": "Stop please"})
    assert response.status_code == 200
    with app.app_context():
        assert is_suppressed(team_id, "+14155550123")
    assert _count(app, InboundMessage, team_id) == 1
    too_big = client.post(f"/callbacks/inbound/{team_id}/{inbound_token}", data="text=" + "x" * (32 * 1024),
                          content_type="application/x-www-form-urlencoded")
    assert too_big.status_code == 413 and _count(app, InboundMessage, team_id) == 1


def test_a_callback_moves_its_message_and_is_kept_as_its_history(app, client):
    """Matched by our reference: the message becomes delivered and the stored callback points at it,
    so it never expires as an orphan; a callback for an unknown reference is an orphan matched later."""
    from tests.factories import make_message
    from webapp.models import Message, MessageStatus, ProviderCallback, Team
    from webapp.services.callbacks import rematch_orphans

    team_id, token = _team(app)
    with app.app_context():
        message = make_message(db.session.get(Team, team_id), status=MessageStatus.ACCEPTED)
        reference, message_id = message.reference, message.id
    client.post(f"/callbacks/multitel/{team_id}/{token}", data={"reference": reference, "status": "DELIVRD"})
    client.post(f"/callbacks/multitel/{team_id}/{token}", data={"reference": "later-ref", "status": "DELIVRD"})
    with app.app_context():
        assert db.session.get(Message, message_id).status is MessageStatus.DELIVERED
        rows = {row.reference: row.message_id for row in db.session.scalars(select(ProviderCallback))}
        assert rows == {reference: message_id, "later-ref": None}
        late = make_message(db.session.get(Team, team_id), status=MessageStatus.UNKNOWN, reference="later-ref")
        assert rematch_orphans() == 1
        assert db.session.get(Message, late.id).status is MessageStatus.DELIVERED
