"""The tolerant callback parser: every body style, key spelling and status vocabulary, and garbage."""

import json
import time
from decimal import Decimal

import pytest

from webapp.provider.delivery_reports import DeliveryState, ParsedCallback, map_status, parse_callback

FORM = "application/x-www-form-urlencoded"


def test_form_body_is_parsed():
    """A form body gives every standard field, typed, and keeps all fields lower-cased."""
    body = b"uniqueid=u-1&reference=ref-1&status=DELIVRD&causecode=0&cost=0.030&parts=2&timestamp=2024-01-01T00%3A00Z"
    parsed = parse_callback(body, FORM)
    assert parsed == ParsedCallback(
        unique_id="u-1",
        reference="ref-1",
        state=DeliveryState.DELIVERED,
        raw_status="DELIVRD",
        cause_code="0",
        cost=Decimal("0.030"),
        parts=2,
        fields={
            "uniqueid": "u-1",
            "reference": "ref-1",
            "status": "DELIVRD",
            "causecode": "0",
            "cost": "0.030",
            "parts": "2",
            "timestamp": "2024-01-01T00:00Z",
        },
    )


def test_form_body_with_charset_and_utf8_values():
    """Percent-encoded UTF-8 values are decoded, and a charset parameter is honoured."""
    parsed = parse_callback(b"UNIQUEID=u&status=failed&error=Num%C3%A9ro+bloqu%C3%A9", f"{FORM}; charset=utf-8")
    assert parsed.fields["error"] == "Numéro bloqué" and parsed.state is DeliveryState.FAILED


def test_json_body_is_parsed_with_numbers_kept_exact():
    """A flat JSON body works, numbers become exact Decimals and ints, and keys are lower-cased."""
    body = json.dumps(
        {
            "UniqueId": "u-2",
            "Reference": "r",
            "Status": "Delivered",
            "Cost": 0.045,
            "Parts": 3,
            "CauseCode": 0,
        }
    ).encode()
    parsed = parse_callback(body, "application/json")
    assert (parsed.unique_id, parsed.reference, parsed.state) == ("u-2", "r", DeliveryState.DELIVERED)
    assert parsed.cost == Decimal("0.045") and parsed.parts == 3 and parsed.cause_code == "0"
    assert parsed.fields["uniqueid"] == "u-2" and parsed.fields["cost"] == "0.045"


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {"unique_id": "u-3", "ref": "r-3", "state": "UNDELIV", "error_code": "34"}},
        {
            "status": {"code": "200", "msg": ""},
            "response": {"uniqueid": "u-3", "reference": "r-3", "status": "UNDELIV", "causecode": 34},
        },
    ],
    ids=["data-wrapper", "api-envelope"],
)
def test_json_nested_one_level_is_read(payload):
    """{"data": {...}} and the API's own {"status", "response"} envelope are read one level down."""
    parsed = parse_callback(json.dumps(payload).encode(), "application/json")
    assert (parsed.unique_id, parsed.reference) == ("u-3", "r-3")
    assert parsed.state is DeliveryState.FAILED and parsed.raw_status == "UNDELIV"
    assert parsed.cause_code == "34"


def test_envelope_status_object_does_not_shadow_the_response_status():
    """In the envelope, the top-level "status" is an object; the word comes from response.status."""
    body = json.dumps({"status": {"code": "200"}, "response": {"status": "sent", "uniqueid": "u"}}).encode()
    parsed = parse_callback(body, "application/json")
    assert parsed.raw_status == "sent" and parsed.state is DeliveryState.SENT
    assert parsed.fields["status.code"] == "200" and parsed.fields["response.status"] == "sent"


def test_top_level_fields_win_over_nested_ones():
    """A top-level key beats the same key nested one level down."""
    body = json.dumps({"status": "DELIVRD", "data": {"status": "ENROUTE", "uniqueid": "u"}}).encode()
    assert parse_callback(body, "application/json").raw_status == "DELIVRD"


def test_json_batch_uses_its_first_event():
    """A JSON list of events is read from its first object."""
    body = json.dumps([{"uniqueid": "first", "status": "sent"}, {"uniqueid": "second"}]).encode()
    assert parse_callback(body, "application/json").unique_id == "first"


def test_query_string_alone_is_enough():
    """A GET-style callback with only a query string is parsed."""
    parsed = parse_callback(b"", None, "messageid=m-1&clientref=c-1&dlrstatus=ACCEPTD&segments=1&price=0.015")
    assert (parsed.unique_id, parsed.reference, parsed.state) == ("m-1", "c-1", DeliveryState.SENT)
    assert parsed.parts == 1 and parsed.cost == Decimal("0.015")


def test_body_wins_over_query_string_and_both_are_merged():
    """Query-string fields are merged in, and the body's value wins on a clash."""
    parsed = parse_callback(b"status=DELIVRD&uniqueid=from-body", FORM, "uniqueid=from-query&token=abc")
    assert parsed.unique_id == "from-body" and parsed.state is DeliveryState.DELIVERED
    assert parsed.fields["token"] == "abc"


def test_wrong_content_type_is_survived():
    """JSON labelled as a form, and a form with no content type, are both read by sniffing."""
    assert parse_callback(b'{"uniqueid": "j", "status": "sent"}', FORM).unique_id == "j"
    assert parse_callback(b"uniqueid=f&status=sent", None).unique_id == "f"
    assert parse_callback(b'\xef\xbb\xbf{"uniqueid": "bom"}', "text/plain").unique_id == "bom"


def test_multipart_form_is_parsed():
    """A multipart/form-data body (curl -F style) gives its named fields."""
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="UniqueID"\r\n\r\nu-9\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="Status"\r\n\r\nREJECTD\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    parsed = parse_callback(body, f"multipart/form-data; boundary={boundary}")
    assert parsed.unique_id == "u-9" and parsed.state is DeliveryState.FAILED


def test_messageid_is_only_a_fallback_for_uniqueid():
    """uniqueid is preferred over messageid when both are present."""
    assert parse_callback(b"messageid=m&uniqueid=u", FORM).unique_id == "u"


@pytest.mark.parametrize(
    ("word", "state"),
    [
        *[(w, DeliveryState.DELIVERED) for w in ["delivered", "DELIVRD", "Delivered", "DELIVERED", "success"]],
        *[
            (w, DeliveryState.FAILED)
            for w in [
                "failed",
                "undelivered",
                "UNDELIV",
                "REJECTD",
                "REJECTED",
                "EXPIRED",
                "DELETED",
                "error",
                "Undeliverable",
            ]
        ],
        *[
            (w, DeliveryState.SENT)
            for w in [
                "sent",
                "ACCEPTD",
                "ENROUTE",
                "queued",
                "sending",
                "accepted",
                "buffered",
                " Sent ",
                "en_route",
                "en-route",
            ]
        ],
        *[(w, DeliveryState.UNKNOWN) for w in ["UNKNOWN", "read", "8", "1", "", None, "partially delivered?"]],
    ],
)
def test_map_status_vocabulary(word, state):
    """SMPP, Twilio and plain words map to four states ignoring case and separators; the rest is UNKNOWN."""
    assert map_status(word) is state


def test_unknown_word_is_kept_raw():
    """An unrecognised status maps to UNKNOWN but raw_status keeps the word for display."""
    parsed = parse_callback(b"uniqueid=u&status=PDLIVRD", FORM)
    assert parsed.state is DeliveryState.UNKNOWN and parsed.raw_status == "PDLIVRD"


def test_missing_status_is_unknown_with_no_raw_status():
    """A callback without any status key is UNKNOWN with raw_status None."""
    parsed = parse_callback(b"uniqueid=u", FORM)
    assert parsed.state is DeliveryState.UNKNOWN and parsed.raw_status is None


def test_bad_numbers_become_none():
    """Unreadable cost or parts are None rather than errors; a currency sign is tolerated."""
    parsed = parse_callback(b"status=sent&cost=abc&parts=1.5", FORM)
    assert parsed.cost is None and parsed.parts is None
    assert parse_callback(b"status=sent&cost=%240.015&parts=NaN", FORM).cost == Decimal("0.015")
    assert parse_callback(b"cost=Infinity", FORM).cost is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", None),
        (b"\x00\xff\xfe\x81 garbage", None),
        (b"\x00\xff\xfe\x81 garbage", FORM),
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"[" * 100_000, "application/json"),
        (b"--x\r\nnonsense", "multipart/form-data; boundary=x"),
        (b"<xml><status>DELIVRD</status></xml>", "text/xml"),
    ],
    ids=[
        "empty",
        "binary",
        "binary-as-form",
        "broken-json",
        "json-list",
        "json-string",
        "deep-json",
        "broken-multipart",
        "xml",
    ],
)
def test_garbage_never_raises(body, content_type):
    """A body it cannot read gives UNKNOWN with no fields instead of an exception."""
    parsed = parse_callback(body, content_type)
    assert parsed.state is DeliveryState.UNKNOWN
    assert parsed.fields == {} and parsed.unique_id is None


def test_garbage_query_string_never_raises():
    """Malformed percent escapes in the query string are tolerated."""
    parsed = parse_callback(b"", None, "status=%E0%A4%A&uniqueid=%ZZ")
    assert parsed.state is DeliveryState.UNKNOWN and parsed.unique_id == "%ZZ"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"status=DELIVRD&parts=1e1000000&cost=1e1000000", FORM),
        (b'{"status": "DELIVRD", "parts": 1e1000000, "cost": 1e1000000}', "application/json"),
        (b"status=DELIVRD&parts=" + b"9" * 5000, FORM),
    ],
    ids=["form-exponent", "json-exponent", "form-5000-digits"],
)
def test_huge_numbers_are_unreadable_quickly(body, content_type):
    """parts=1e1000000 (int() of it took 30 s) or 5,000 digits is read as no number, at once."""
    started = time.perf_counter()
    parsed = parse_callback(body, content_type)
    assert time.perf_counter() - started < 0.5
    assert parsed.parts is None and parsed.cost is None
    assert parsed.state is DeliveryState.DELIVERED


def test_plausible_parts_and_cost_are_still_read():
    """The bound on numbers leaves every real value alone: 10 parts, a cost of 1234.5."""
    parsed = parse_callback(b"parts=10&cost=1234.5", FORM)
    assert parsed.parts == 10 and parsed.cost == Decimal("1234.5")


def test_json_with_one_byte_that_is_not_utf8_keeps_its_fields():
    """One Latin-1 byte in a JSON callback costs that character, not every field."""
    body = b'{"uniqueid": "u-9", "reference": "r-9", "status": "DELIVRD", "note": "caf\xe9"}'
    parsed = parse_callback(body, "application/json")
    assert (parsed.unique_id, parsed.reference, parsed.state) == ("u-9", "r-9", DeliveryState.DELIVERED)
    assert parsed.fields["note"] == "caf\ufffd"
