"""The MultiTEL client against the live sandbox and tiny raw-socket servers: every outcome, over real HTTP."""

import base64
import json
import logging
import random
import socket
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from urllib.parse import parse_qs

import pytest

from webapp.provider import segments
from webapp.provider.multitel import (
    Credentials,
    MultitelClient,
    Outcome,
    SendResult,
    Timeouts,
    check_connection,
    parse_retry_after,
)
from webapp.provider.sandbox import SandboxConfig, SandboxServer

SECRET = "Hunter2-very-secret-pw"
FAST = Timeouts(connect=1.0, read=3.0)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
GSM_LONG = "A" * 161  # one over a single part: two parts of 153
UCS2_TEXT = "Hello 👋 " * 10  # the emoji forces UCS-2; 90 UTF-16 units, two parts of 67


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer(SandboxConfig(accounts={"sandbox": "sandbox", "acme": SECRET}, seed=7)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox):
    sandbox.state.reset()
    yield
    sandbox.state.reset()  # also releases any request still hanging


@pytest.fixture
def client(sandbox):
    client = MultitelClient(sandbox.url, Credentials("sandbox", "sandbox"), timeouts=FAST)
    yield client
    client.close()


def send(client: MultitelClient, **fields) -> SendResult:
    message = {"sender": "+14155550100", "to": "+14155550123", "text": "Hello", "reference": "ref-1"}
    return client.send(**{**message, **fields})


def http_reply(status: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def envelope(code: str, status: str, message: str, cause: int) -> bytes:
    return (
        f'{{"status": {{"code": "{code}", "msg": ""}}, "response": {{"status": "{status}", '
        f'"message": "{message}", "causecode": {cause}}}}}'
    ).encode()


class RawServer:
    """Reads each request in full, then writes `reply` (bytes, or a function of the request) or hangs up."""

    def __init__(self, reply=None, reset: bool = False):
        self.reply = reply
        self.reset = reset
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
        self.sock.close()
        self.thread.join(timeout=2)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = self._read_request(conn)
                self.requests.append(request)
                if self.reply is None:
                    if self.reset:  # linger 0: close with RST instead of FIN
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.sendall(self.reply(request) if callable(self.reply) else self.reply)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body


def closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- accepted ------------------------------------------------------------------------------------


def test_gsm_send_is_accepted_with_parts_and_cost(client, sandbox):
    """A 161-character GSM-7 text is accepted as 2 parts costing 2 x 0.015, with the provider's ids."""
    result = send(client, text=GSM_LONG)
    assert result.outcome is Outcome.ACCEPTED and result.accepted
    assert result.http_status == 200
    assert result.parts == segments.measure(GSM_LONG).parts == 2
    assert result.cost == Decimal("0.030") and result.price_per_part == Decimal("0.015")
    assert result.cause_code == "0" and result.provider_message == "Message queued"
    recorded = sandbox.state.sends_for("ref-1")
    assert [m.unique_id for m in recorded] == [result.unique_id]
    assert result.pid and result.pid.endswith(result.unique_id)
    assert result.reason.startswith("Accepted")


def test_ucs2_send_is_accepted_with_parts_counted_in_utf16_units(client):
    """An emoji text is billed as UCS-2: parts from UTF-16 units (67 per part), cost parts x price."""
    measurement = segments.measure(UCS2_TEXT)
    assert measurement.encoding == segments.Encoding.UCS2
    result = send(client, text=UCS2_TEXT)
    assert result.outcome is Outcome.ACCEPTED
    assert result.parts == measurement.parts == 2
    assert result.cost == Decimal("0.015") * 2


def test_every_form_field_and_basic_auth_go_on_the_wire():
    """from, to, text, base64 media, notifyurl and reference are form fields; credentials go in Basic auth."""
    ok = http_reply("200 OK", b'{"status": {"code": "200", "msg": ""}, "response": {"status": "Success"}}')
    with RawServer(ok) as server:
        client = MultitelClient(server.url, Credentials("acme", SECRET), timeouts=FAST)
        result = send(client, text="Hi €", media=PNG, notify_url="https://app.example/hook?t=1", reference="r-9")
    assert result.outcome is Outcome.ACCEPTED and result.unique_id is None
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/sendsms HTTP/1.1")
    assert b"application/x-www-form-urlencoded" in head
    expected_auth = base64.b64encode(f"acme:{SECRET}".encode())
    assert b"Authorization: Basic " + expected_auth in head
    form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
    assert form == {
        "from": "+14155550100",
        "to": "+14155550123",
        "text": "Hi €",
        "media": base64.b64encode(PNG).decode(),
        "notifyurl": "https://app.example/hook?t=1",
        "reference": "r-9",
    }


def test_each_thread_gets_its_own_reused_session(client):
    """One requests.Session per thread, kept for that thread's next sends."""
    mine = client.session()
    assert client.session() is mine
    other = []
    thread = threading.Thread(target=lambda: other.append(client.session()))
    thread.start()
    thread.join()
    assert other[0] is not mine
    adapter = mine.get_adapter("http://x")
    assert adapter.max_retries.total == 0  # urllib3 never resends a POST on its own


# --- not sent --------------------------------------------------------------------------------------


def test_connection_refused_is_not_sent():
    """A closed port means no bytes left: NOT_SENT, safe to retry."""
    client = MultitelClient(f"http://127.0.0.1:{closed_port()}", Credentials("a", "b"), timeouts=FAST)
    result = send(client)
    assert result.outcome is Outcome.NOT_SENT
    assert "connection refused" in result.reason and result.http_status is None


def test_connect_timeout_is_not_sent():
    """A listener whose accept queue is full never completes the handshake: connect timeout, NOT_SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.05)
    try:
        port = listener.getsockname()[1]
        client = MultitelClient(f"http://127.0.0.1:{port}", Credentials("a", "b"), timeouts=Timeouts(0.3, 1))
        result = send(client)
    finally:
        for sock in [*fillers, listener]:
            sock.close()
    assert result.outcome is Outcome.NOT_SENT
    assert "within 0.3 s" in result.reason


def test_dns_failure_is_not_sent():
    """A host name that cannot resolve is NOT_SENT with a plain reason."""
    client = MultitelClient("http://multitel.invalid", Credentials("a", "b"), timeouts=FAST)
    result = send(client)
    assert result.outcome is Outcome.NOT_SENT
    assert "host name not found" in result.reason


def test_429_is_not_sent_with_retry_after_seconds(client, sandbox):
    """A 429 carries Retry-After into the result, and the sandbox queued nothing."""
    sandbox.state.update_config({"error_429_rate": 1.0, "retry_after": 7})
    result = send(client)
    assert result.outcome is Outcome.NOT_SENT
    assert result.http_status == 429 and result.retry_after == 7.0
    assert "retry after 7 s" in result.reason
    assert sandbox.state.sends_for() == []


def test_503_without_retry_after_is_not_sent(client, sandbox):
    """A 503 is NOT_SENT; without the header retry_after stays None so the caller's backoff decides."""
    sandbox.state.update_config({"error_503_rate": 1.0, "retry_after": None})
    result = send(client)
    assert result.outcome is Outcome.NOT_SENT
    assert result.http_status == 503 and result.retry_after is None
    assert sandbox.state.sends_for() == []


def test_500_with_the_error_envelope_is_not_sent():
    """The API itself answering 500 with its envelope refused the request: NOT_SENT, cause kept."""
    with RawServer(http_reply("500 Internal Server Error", envelope("500", "Failed", "Internal error", 9))) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.NOT_SENT
    assert result.cause_code == "9"


def test_408_is_not_sent():
    """A 408 says the server gave up before taking the request: NOT_SENT."""
    with RawServer(http_reply("408 Request Timeout")) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.NOT_SENT


# --- refused -------------------------------------------------------------------------------------


def test_refusal_envelope_is_refused_with_causecode(client, sandbox):
    """A destination the provider refuses comes back REFUSED with its causecode and message."""
    sandbox.state.update_config({"refuse_prefix": "+1415555"})
    result = send(client)
    assert result.outcome is Outcome.REFUSED
    assert result.http_status == 400 and result.cause_code == "1010"
    assert result.provider_message == "Destination refused"
    assert "Destination refused" in result.reason and "1010" in result.reason


def test_implausible_number_is_refused(client):
    """The sandbox's validation refusal ('to' not a number) is REFUSED with cause 1004."""
    result = send(client, to="call me")
    assert result.outcome is Outcome.REFUSED and result.cause_code == "1004"


def test_2xx_envelope_that_is_not_success_is_refused():
    """HTTP 200 whose envelope says Failed is REFUSED, not accepted."""
    with RawServer(http_reply("200 OK", envelope("400", "Failed", "Invalid sender", 21))) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.REFUSED and result.cause_code == "21"


def test_other_4xx_without_envelope_is_refused():
    """A 413 with no envelope is refused for this message."""
    with RawServer(http_reply("413 Payload Too Large", b"too big")) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.REFUSED and "HTTP 413" in result.reason


# --- account -------------------------------------------------------------------------------------


def test_wrong_password_is_an_account_problem(sandbox):
    """401 pauses the campaign (ACCOUNT) rather than failing each recipient."""
    client = MultitelClient(sandbox.url, Credentials("acme", "wrong"), timeouts=FAST)
    result = send(client)
    assert result.outcome is Outcome.ACCOUNT and result.http_status == 401
    assert "username or password" in result.reason


@pytest.mark.parametrize(
    "reply",
    [
        http_reply("403 Forbidden", b"no"),
        http_reply("302 Found", headers={"Location": "https://elsewhere.example/"}),
        http_reply("404 Not Found", b"<html>not found</html>"),
    ],
    ids=["403", "redirect", "404-page"],
)
def test_forbidden_redirect_and_missing_endpoint_are_account_problems(reply):
    """403, a redirect, or a 404 page without the envelope mean the settings are wrong: ACCOUNT."""
    with RawServer(reply) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.ACCOUNT


def test_unusable_base_url_is_an_account_problem():
    """A base URL without a scheme can never work: ACCOUNT, and nothing raised."""
    result = send(MultitelClient("api.multitel.net", Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.ACCOUNT


# --- ambiguous -----------------------------------------------------------------------------------


def test_500_without_envelope_is_ambiguous(client, sandbox):
    """A bare 500 may come after the provider queued the message: AMBIGUOUS."""
    sandbox.state.update_config({"error_500_rate": 1.0})
    result = send(client)
    assert result.outcome is Outcome.AMBIGUOUS and result.http_status == 500
    assert "may have been sent" in result.reason


@pytest.mark.parametrize("status", ["502 Bad Gateway", "504 Gateway Timeout"])
def test_gateway_errors_are_ambiguous(status):
    """502 and 504 come from a proxy that may have forwarded the request: AMBIGUOUS."""
    with RawServer(http_reply(status, b"<html>gateway</html>")) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.AMBIGUOUS


def test_unparseable_2xx_is_ambiguous():
    """A 200 whose body is not the envelope cannot prove acceptance or refusal: AMBIGUOUS."""
    with RawServer(http_reply("200 OK", b"<html>ok</html>")) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.AMBIGUOUS


def test_success_with_a_non_string_code_is_ambiguous():
    """Success with status.code 200 as a number contradicts the contract: AMBIGUOUS, not accepted."""
    body = b'{"status": {"code": 200, "msg": ""}, "response": {"status": "Success", "uniqueid": "u"}}'
    with RawServer(http_reply("200 OK", body)) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.AMBIGUOUS and result.unique_id == "u"


def test_read_timeout_after_acceptance_is_ambiguous_and_the_send_was_recorded(sandbox):
    """The sandbox queues the message, then stalls past the read timeout: AMBIGUOUS, yet it was sent."""
    sandbox.state.update_config({"hang_rate": 1.0, "hang_seconds": 5.0})
    client = MultitelClient(sandbox.url, Credentials("sandbox", "sandbox"), timeouts=Timeouts(1.0, 0.3))
    started = time.monotonic()
    result = send(client, reference="hung-1")
    assert time.monotonic() - started < 2
    assert result.outcome is Outcome.AMBIGUOUS
    assert "did not answer within 0.3 s" in result.reason
    assert len(sandbox.state.sends_for("hung-1")) == 1


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_connection_lost_after_the_body_was_sent_is_ambiguous(reset):
    """The server reads the whole request, then closes or resets: AMBIGUOUS, since it may have acted."""
    with RawServer(reply=None, reset=reset) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert b"text=Hello" in server.requests[0]  # the body did arrive
    assert result.outcome is Outcome.AMBIGUOUS
    assert "may have been delivered" in result.reason


# --- secrets -------------------------------------------------------------------------------------


def test_password_never_appears_in_reprs_results_or_logs(sandbox, caplog):
    """Across every outcome, even a server echoing the Authorization header, the password stays hidden."""
    caplog.set_level(logging.DEBUG)
    credentials = Credentials("acme", SECRET)
    encoded = base64.b64encode(f"acme:{SECRET}".encode()).decode()
    secrets = [SECRET, encoded, base64.b64encode(SECRET.encode()).decode()]
    results = []

    client = MultitelClient(sandbox.url, credentials, timeouts=FAST)
    results.append(send(client))
    results.append(send(MultitelClient(sandbox.url, Credentials("acme", SECRET + "x"), timeouts=FAST)))
    sandbox.state.update_config({"refuse_prefix": "+1"})
    results.append(send(client))

    def echo(request: bytes) -> bytes:
        message = f"bad request: {request.decode()} password={SECRET}"
        return http_reply(
            "400 Bad Request", envelope("400", "Failed", message.replace('"', "'").replace("\r\n", " "), 5)
        )

    with RawServer(echo) as server:
        results.append(send(MultitelClient(server.url, credentials, timeouts=FAST)))
    with RawServer(reply=None) as server:
        results.append(send(MultitelClient(server.url, credentials, timeouts=FAST)))
    results.append(send(MultitelClient(f"http://127.0.0.1:{closed_port()}", credentials, timeouts=FAST)))
    checks = [
        check_connection(sandbox.url, credentials),
        check_connection(sandbox.url, Credentials("acme", "no")),
    ]

    assert {r.outcome for r in results} == {
        Outcome.ACCEPTED,
        Outcome.ACCOUNT,
        Outcome.REFUSED,
        Outcome.AMBIGUOUS,
        Outcome.NOT_SENT,
    }
    texts = [repr(credentials), str(credentials), repr(client), caplog.text]
    texts += [repr(r) for r in results] + [str(r) for r in results] + [repr(c) for c in checks]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "***" in results[3].provider_message  # the echoed password was scrubbed, not just hidden


# --- check_connection ----------------------------------------------------------------------------


def test_check_connection_accepts_good_credentials_and_sends_nothing(sandbox):
    """Good credentials: ok, saying which two empty requests proved it and what stays unverified; nothing queued."""
    check = check_connection(sandbox.url, Credentials("acme", SECRET))
    url = f"{sandbox.url}/v3/sendsms"
    assert check.ok
    assert check.message == f"MultiTEL's API answered at {url} and accepted the username and password."
    assert "made-up username the API answered HTTP 401" in check.verified_by
    assert "with yours it answered HTTP 400 ('from' is required; cause 1001)" in check.verified_by
    assert check.not_verified.startswith("Not verified: that the sender numbers may send, the account balance")
    assert sandbox.state.sends_for() == []


def test_check_connection_reports_refused_credentials(sandbox):
    """A 401 reads as 'the username or password was refused', after one request."""
    check = check_connection(sandbox.url, Credentials("acme", "nope"))
    assert not check.ok and "username or password was refused (HTTP 401)" in check.message
    assert check.verified_by.startswith("Tried one POST of an empty message")


def test_check_connection_reports_an_unreachable_url():
    """A closed port reads as 'cannot reach' with the URL tried."""
    url = f"http://127.0.0.1:{closed_port()}"
    check = check_connection(url, Credentials("a", "b"), Timeouts(0.5, 1))
    assert not check.ok and check.message == f"cannot reach {url}/v3/sendsms"


@pytest.mark.parametrize("suffix", ["/v3", "/api"])
def test_check_connection_says_the_url_is_wrong_when_the_api_answers_404_with_its_envelope(suffix):
    """A base URL ending in /v3 or /api: the API's 404 envelope is 'the API URL is wrong', never 'accepted'."""
    reply = http_reply("404 Not Found", envelope("404", "Failed", "Not found", 404))
    with RawServer(reply) as server:
        check = check_connection(server.url + suffix, Credentials("a", "wrong password"), FAST)
    assert not check.ok and check.message.startswith("The API URL is wrong")
    assert f"ends in {suffix}" in check.message
    assert "Not verified: the username and password" in check.not_verified
    assert len(server.requests) == 1


def test_check_connection_says_the_url_is_wrong_for_the_sandbox_under_v3(sandbox):
    """The sandbox with /v3 on its base URL: 'the API URL is wrong', not a bare HTTP 404."""
    check = check_connection(sandbox.url + "/v3", Credentials("acme", SECRET), FAST)
    assert not check.ok and "The API URL is wrong" in check.message and "ends in /v3" in check.message


def test_check_connection_does_not_claim_credentials_an_api_never_checks():
    """An API answering the empty form the same whatever the username: reached, but credentials not verified."""
    reply = http_reply("400 Bad Request", envelope("400", "Failed", "to is required", 1002))
    with RawServer(reply) as server:
        check = check_connection(server.url, Credentials("a", "any password"), FAST)
    assert not check.ok
    assert "could not be checked without sending a real message" in check.message
    assert "made-up username it gave HTTP 400" in check.verified_by
    assert check.not_verified.startswith("Not verified: the username and password")
    assert b"Authorization: Basic " + base64.b64encode(b"connection-check-not-a-user:any password") \
        in server.requests[1]


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (http_reply("500 Internal Server Error", b"oops"), "HTTP 500"),
        (http_reply("429 Too Many Requests", envelope("429", "Failed", "slow down", 1429)), "busy"),
        (http_reply("200 OK", b"<html>a web page</html>"), "HTTP 200, which is not MultiTEL's API"),
        (http_reply("302 Found", headers={"Location": "https://x.example/"}), "redirects (HTTP 302) to https://x"),
    ],
    ids=["500", "429", "2xx-not-the-api", "redirect"],
)
def test_check_connection_interprets_other_answers(reply, fragment):
    """A 500, a 429, a web page or a redirect is a plain failure that says what answered; no message fields sent."""
    with RawServer(reply) as server:
        check = check_connection(server.url, Credentials("a", "b"), FAST)
    assert not check.ok and fragment in check.message
    assert check.verified_by.startswith(f"Tried one POST of an empty message (no recipient, no text) to {server.url}")
    assert b"to=" not in server.requests[0] and b"text=" not in server.requests[0]


def test_retry_after_accepts_seconds_and_http_dates():
    """Retry-After is read as delta-seconds or an HTTP date; junk is None and the past is 0."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past) == 0.0


# --- any reply, any input: a result, never an exception ----------------------------------------------


def success(**response) -> bytes:
    fields = {"status": "Success", "message": "Message queued", "causecode": 0, "uniqueid": "u-1", **response}
    inner = ", ".join(f'"{key}": {value if not isinstance(value, str) else json.dumps(value)}'
                      for key, value in fields.items())
    return f'{{"status": {{"code": "200", "msg": ""}}, "response": {{{inner}}}}}'.encode()


@pytest.mark.parametrize("number", ["1e5000", "1" + "0" * 5000, "1e1000000"], ids=["exponent", "digits", "huge"])
def test_absurd_parts_in_a_success_reply_is_accepted_with_parts_flagged(number):
    """The provider accepted, so the result is ACCEPTED (a retry would send twice); parts is flagged unreadable."""
    reply = success(parts=f"@{number}@", cost=f"@{number}@").replace(b'"@', b"").replace(b'@"', b"")
    with RawServer(http_reply("200 OK", reply)) as server:
        started = time.perf_counter()
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST))
    assert time.perf_counter() - started < 2
    assert result.outcome is Outcome.ACCEPTED and result.unique_id == "u-1"
    assert result.parts is None and result.cost is None
    assert set(result.unreadable) == {"parts", "cost"}
    assert "parts unreadable" in result.reason


@pytest.mark.parametrize(
    "fields",
    [{"text": "Hi \ud800 there"}, {"reference": "ref-\udc00"}, {"to": "+1415555\ud83d"}],
    ids=["text", "reference", "to"],
)
def test_lone_surrogate_is_refused_before_the_post(client, sandbox, fields):
    """A string that cannot be UTF-8 is REFUSED with the field named, and nothing reaches the provider."""
    result = send(client, **fields)
    [name] = fields
    assert result.outcome is Outcome.REFUSED and result.http_status is None
    assert "invalid input" in result.reason and f"'{name}'" in result.reason
    assert "not sent" in result.reason
    assert sandbox.state.sends_for() == []


@pytest.mark.parametrize("sender", [None, "", "   "], ids=["none", "empty", "blank"])
def test_missing_sender_is_refused_before_the_post(sender):
    """from=None (or blank) is never posted: REFUSED with 'from' named, and the server saw no request."""
    with RawServer(http_reply("200 OK", success(parts=1))) as server:
        result = send(MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST), sender=sender)
    assert result.outcome is Outcome.REFUSED and result.http_status is None
    assert "'from'" in result.reason and "invalid input" in result.reason
    assert server.requests == []


def test_bad_media_is_refused_before_the_post(client, sandbox):
    """A GIF is REFUSED as invalid input rather than raised, and nothing reaches the provider."""
    result = send(client, media=b"GIF89a....")
    assert result.outcome is Outcome.REFUSED and "JPEG or PNG" in result.reason
    assert sandbox.state.sends_for() == []


def _random_value(rng: random.Random, depth: int = 0) -> str:
    """A JSON value chosen to hurt: huge numbers, lone surrogates, nesting, wrong types."""
    choices = [
        lambda: "1e" + str(rng.choice([5, 400, 5000, 1000000])),
        lambda: "-" + "9" * rng.choice([1, 20, 5000]),
        lambda: rng.choice(["null", "true", "false", "NaN", "Infinity", "-0", "0.1e-999999"]),
        lambda: json.dumps(rng.choice(["Success", "Failed", "200", "", "\ud800", "\x00", "é" * 50])),
        lambda: '"\\ud83d"',
        lambda: "[" * 50 + "]" * 50,
        lambda: "{" + ", ".join(f'"{k}": {_random_value(rng, depth + 1)}' for k in ("status", "code")) + "}"
        if depth < 2 else "{}",
    ]
    return rng.choice(choices)()


def _random_reply(rng: random.Random) -> bytes:
    status = rng.choice([200, 200, 201, 204, 301, 400, 401, 404, 405, 408, 413, 429, 500, 502, 503, 504, 599, 999])
    kind = rng.randrange(6)
    if kind == 0:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    elif kind == 1:
        body = f'{{"status": {{"code": {_random_value(rng)}, "msg": {_random_value(rng)}}}, "response": {{' \
               + ", ".join(f'"{key}": {_random_value(rng)}' for key in
                           ("status", "message", "causecode", "uniqueid", "cost", "parts", "permsg", "pid")) \
               + "}}"
        body = body.encode("utf-8", "surrogatepass")
    elif kind == 2:
        body = success(parts=_random_value(rng), cost=_random_value(rng), permsg=_random_value(rng),
                       uniqueid=_random_value(rng), pid=_random_value(rng)).decode().encode("utf-8", "surrogatepass")
    elif kind == 3:
        body = rng.choice([b"", b"null", b"[]", b'{"status": 1, "response": 2}', b'{"response": {}}',
                           b"\xef\xbb\xbf{}"])
    elif kind == 4:
        body = b'{"status": {"code": "200"}, "response": {"status": "Success", "parts": ' + b"7" * 5000 + b"}}"
    else:
        body = success(parts=1)
    headers = {}
    if rng.random() < 0.4:
        headers["Retry-After"] = rng.choice(["5", "-1", "1e400", "nan", "Wed, 21 Oct 2015 07:28:00 GMT",
                                             "Fri, 31 Dec 9999 23:59:59 GMT", "soon", "Mon, 99 Foo 0 0:0:0",
                                             "Mon, 01 Jan 99999999999 00:00:00 GMT"])
    head = [f"HTTP/1.1 {status} Whatever", "Connection: close"]
    declared = len(body) + (rng.choice([0, 0, 0, 10]))  # sometimes the body comes up short
    head.append(f"Content-Length: {declared}")
    if rng.random() < 0.1:
        head.append("Content-Encoding: gzip")  # a body that does not decompress
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_send_never_raises_whatever_the_server_answers():
    """400 random replies (status, body, headers) from a real HTTP server: each gives one classified result."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    replies = [_random_reply(rng) for _ in range(400)]
    queue = iter(replies)
    with RawServer(lambda request: next(queue)) as server:
        client = MultitelClient(server.url, Credentials("a", "b"), timeouts=FAST)
        for number, reply in enumerate(replies):
            try:
                result = send(client)
            except Exception as error:  # noqa: BLE001 - the point of the test
                pytest.fail(f"seed {seed}, reply {number} raised {error!r}: {reply[:300]!r}")
            assert isinstance(result.outcome, Outcome), (seed, number)
            assert "could not be classified" not in result.reason, (seed, number)  # the last resort stays unused
            assert result.reason and (result.parts is None or 0 <= result.parts < 1_000_000)
            str(result)  # printable: no lone surrogate trips a log line
            result.reason.encode("utf-8")
            (result.provider_message or "").encode("utf-8")
            (result.unique_id or "").encode("utf-8")
        client.close()
    assert len(server.requests) == len(replies)


# --- a wrong API URL pauses, never fails each message ------------------------------------------------


@pytest.mark.parametrize("suffix", ["/v3", "/api"])
def test_wrong_api_path_answering_404_with_the_envelope_is_an_account_problem(suffix):
    """A base URL ending in /v3 or /api gets the API's 404 envelope: ACCOUNT ('the API URL is wrong'), not REFUSED."""
    reply = http_reply("404 Not Found", envelope("404", "Failed", "Not found", 404))
    with RawServer(reply) as server:
        result = send(MultitelClient(server.url + suffix, Credentials("a", "b"), timeouts=FAST))
    assert result.outcome is Outcome.ACCOUNT and result.http_status == 404
    assert "API URL is wrong" in result.reason and f"{suffix}/v3/sendsms" in result.reason
    assert f"ends in {suffix}" in result.reason


def test_sandbox_under_a_v3_base_url_is_an_account_problem(sandbox):
    """The sandbox with /v3 on its base URL: ACCOUNT, saying the URL is wrong, and nothing queued."""
    result = send(MultitelClient(sandbox.url + "/v3", Credentials("sandbox", "sandbox"), timeouts=FAST))
    assert result.outcome is Outcome.ACCOUNT and "API URL is wrong" in result.reason
    assert sandbox.state.sends_for() == []
