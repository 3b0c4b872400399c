"""Fuzz: the provider's two webhooks answer 200 and keep the request, whatever its body spells."""

import json
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.factories import make_team
from tests.fuzzing import bounded_time, fuzz_settings
from webapp.extensions import db
from webapp.models import InboundMessage, ProviderCallback

FORM = "application/x-www-form-urlencoded"
KEYS = ["from", "sender", "msisdn", "text", "message", "sms", "uniqueid", "reference", "status", "cost", "parts", "x"]
# What a JSON body can spell that a database column can't hold: NUL, lone surrogates; and numbers no column fits.
nasty_text = st.one_of(st.text(max_size=30), st.sampled_from(["\x00", "STOP\x00", "\ud800", "STOP \udfff", "\udbff\x00",
                                                              "+1415555\ud8002671", "\U0001f600", "é" * 40]))
nasty_values = st.one_of(nasty_text, st.integers(-(10**50), 10**50), st.sampled_from([1e308, -0.0, True, None, [], {}]))


@st.composite
def requests(draw) -> tuple[bytes, str | None, str]:
    """(body, content type, query string) as a broken or hostile sender might post them."""
    fields = draw(st.dictionaries(st.sampled_from(KEYS), nasty_values, max_size=5))
    style = draw(st.sampled_from(["json", "form", "query", "bytes"]))
    if style == "json":
        return json.dumps(fields, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass"), \
            draw(st.sampled_from(["application/json", None, FORM])), ""
    pairs = "&".join(f"{key}={quote_from_bytes(str(value).encode('utf-8', 'surrogatepass'))}"
                     for key, value in fields.items())
    if style == "form":
        return pairs.encode(), draw(st.sampled_from([FORM, f"{FORM}; charset=latin-1", None])), ""
    if style == "query":
        return b"", None, pairs
    content_type = draw(st.sampled_from([FORM, "application/json", "multipart/form-data", None]))
    return draw(st.binary(min_size=1, max_size=500)), content_type, draw(st.text(max_size=40))


def _team(app) -> tuple[int, str, str]:
    with app.app_context():
        team = make_team()
        return team.id, team.callback_token, team.inbound_token


def _count(app, model, team_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(model.team_id == team_id))


@fuzz_settings(20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests())
@example((b'{"from": "+14155552671", "text": "STOP \\ud800"}', "application/json", ""))  # was a 500: a lone surrogate
@example((b'{"from": "+1415555\\udfff2671", "text": "STOP"}', "application/json", ""))
def test_any_request_is_answered_and_kept(app, client, request_parts):
    """Status and inbound webhooks: 200 and one stored row for anything they carry, NULs and lone surrogates too."""
    body, content_type, query = request_parts
    team_id, callback_token, inbound_token = _team(app)
    headers = {"Content-Type": content_type} if content_type else {}
    for url, model in ((f"/callbacks/multitel/{team_id}/{callback_token}", ProviderCallback),
                       (f"/callbacks/inbound/{team_id}/{inbound_token}", InboundMessage)):
        with bounded_time(10.0, f"a webhook POST of {len(body):,} bytes"):
            response = client.post(f"{url}?{query}" if query else url, data=body, headers=headers)
        assert response.status_code == 200, (url, response.status_code)
        assert _count(app, model, team_id) == (1 if body or query else 0)
