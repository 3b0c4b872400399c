"""Client for MultiTEL v3 SendSMS: one POST per message, every reply sorted into exactly one Outcome.

A POST to the provider is not idempotent and MultiTEL documents no idempotency key, so what matters
most is knowing whether a failed send *may have reached* the provider (DOMAIN.md §6). Each reply or
transport error maps to one outcome:

| reply or error                                   | outcome   | why                                         |
|--------------------------------------------------|-----------|---------------------------------------------|
| 2xx, status.code == "200" (a string) and         | ACCEPTED  | the only reply that proves the message was  |
| response.status == "Success"                     |           | queued; keep uniqueid, pid, parts, cost     |
| connection refused, DNS failure, connect         | NOT_SENT  | no request bytes reached the provider       |
| timeout, TLS handshake failure                   |           |                                             |
| 429 or 503 (Retry-After parsed into              | NOT_SENT  | the server says it did not take the request |
| `retry_after`), 408                              |           |                                             |
| 500 *with* the JSON error envelope               | NOT_SENT  | the API itself answered and queued nothing; |
|                                                  |           | the cause is on its side, so retry later    |
| other 4xx; a 2xx/4xx envelope whose              | REFUSED   | refused for this message: the same request  |
| response.status is not "Success"                 |           | gets the same answer (causecode kept)       |
| invalid input, found before any request: a       | REFUSED   | "invalid input": the same message can never |
| missing or blank from/to/text, a string that is  |           | be sent, and nothing reached the provider   |
| not valid Unicode (a lone surrogate), bad media  |           | (http_status is None)                       |
| 401 or 403                                       | ACCOUNT   | credentials refused: pause the campaign     |
| 3xx; 404 or 405, with or without the envelope    | ACCOUNT   | the API URL is wrong (a base URL ending in  |
| (the API answers an unknown path with it); a     |           | /v3 or /api), and every message would fail  |
| base URL requests cannot use                     |           | the same way                                |
| read timeout; connection reset or closed         | AMBIGUOUS | the provider may have queued the message:   |
| after the body was sent; 502, 504, 500 or        |           | never resend automatically; reconcile by    |
| other 5xx without the envelope; unreadable       |           | `reference` from callbacks (DOMAIN.md §6)   |
| 2xx body; "Success" with a code not "200"        |           |                                             |

A reply the client cannot read never raises. In a 2xx "Success" reply, `parts`, `cost` or `permsg`
that is not a plausible number (`"parts": 1e5000`, over a million, not a number) is left None and
named in `unreadable`: the message was still accepted, and raising there would let a retrying
engine send it twice. Integers of any length are parsed as Decimal, so no reply reaches int()'s
4,300-digit limit, and a lone surrogate in a reply's text is replaced before it reaches a log line.

Sessions are per thread (`requests.Session` is not documented as thread-safe) and pooled with an
HTTPAdapter that never retries on its own: a transparent retry would turn a read timeout into a
possible double send. The password never appears in a repr, a log line, a result or a reason.
"""

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError, ProtocolError

logger = logging.getLogger(__name__)

SEND_PATH = "/v3/sendsms"
MEDIA_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
_DETAIL_LIMIT = 500  # characters of a reply or error kept for logs and the message's history


class Outcome(StrEnum):
    """What a send attempt means for the message; see the module docstring for the mapping."""

    ACCEPTED = "accepted"
    NOT_SENT = "not_sent"  # safe to retry with backoff
    REFUSED = "refused"  # failed for this message, with the provider's reason
    ACCOUNT = "account"  # pause the campaign: credentials or API URL are wrong
    AMBIGUOUS = "ambiguous"  # may have been sent: mark unknown, never resend automatically


@dataclass(frozen=True)
class Credentials:
    """The MultiTEL API username and password; the password is left out of repr."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Timeouts:
    """(connect, read) in seconds; connect just above 3 s, TCP's classic retransmission window."""

    connect: float = 3.05
    read: float = 15.0

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class SendResult:
    """One send attempt, classified; `reason` is written for the UI, `detail` for the logs."""

    outcome: Outcome
    reason: str
    http_status: int | None = None
    unique_id: str | None = None
    pid: str | None = None
    parts: int | None = None
    cost: Decimal | None = None
    price_per_part: Decimal | None = None  # the reply's "permsg"
    cause_code: str | None = None
    provider_message: str | None = None  # response.message, else status.msg
    retry_after: float | None = None  # seconds, from a Retry-After header
    detail: str = ""
    elapsed: float = 0.0
    unreadable: tuple[str, ...] = ()  # reply fields present but not plausible numbers ("parts", "cost")

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


@dataclass(frozen=True)
class ConnectionCheck:
    """The answer to the settings page's 'Test connection' button: the finding, how, and what it can't know."""

    ok: bool
    message: str
    verified_by: str = ""  # the requests made and what each answered
    not_verified: str = ""  # what a test that sends nothing cannot know


@dataclass(frozen=True)
class _Envelope:
    """The provider's JSON reply: {"status": {"code", "msg"}, "response": {...}}."""

    code: object  # kept as sent: the contract says a string "200", and a number 200 is not that
    msg: str
    response: dict[str, Any]

    @property
    def success(self) -> bool:
        return str(self.response.get("status", "")) == "Success"


def send_url(base_url: str) -> str:
    """The SendSMS endpoint under a base URL given without /v3 (settings store it that way)."""
    return base_url.rstrip("/") + SEND_PATH


def encode_media(media: bytes) -> str:
    """Base64 of a jpg or png; anything else is the caller's bug, raised before any request."""
    if not isinstance(media, bytes | bytearray) or not media.startswith(MEDIA_SIGNATURES):
        raise ValueError("media must be the bytes of a JPEG or PNG image")
    return base64.b64encode(media).decode("ascii")


class MultitelClient:
    """Sends messages to one MultiTEL account; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = send_url(self.base_url)
        self.timeouts = timeouts or Timeouts()
        self._credentials = credentials
        self._secrets = _secret_forms(credentials)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MultitelClient(url={self.url!r}, username={self._credentials.username!r})"

    def session(self) -> requests.Session:
        """This thread's session, made on first use so that connections are reused per thread."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # One kept-alive connection per thread is all a sequential sender needs; max_retries=0
            # because urllib3 must never resend a POST behind our back.
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False  # no proxy or .netrc from the worker's environment
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session (their pooled connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def send(
        self,
        *,
        sender: str,
        to: str,
        text: str,
        media: bytes | None = None,
        notify_url: str | None = None,
        reference: str | None = None,
    ) -> SendResult:
        """POST one message and classify the result; invalid input and every reply or error are returned, not raised."""
        problem = invalid_input(sender=sender, to=to, text=text, notify_url=notify_url, reference=reference)
        form = {"from": sender, "to": to, "text": text}
        if problem is None and media is not None:
            try:
                form["media"] = encode_media(media)
            except ValueError as error:
                problem = str(error)
        if problem is not None:
            result = SendResult(
                Outcome.REFUSED, f"The message was not sent (invalid input): {problem}",
                detail="refused before contacting MultiTEL",
            )
            _log(result, None if "'reference'" in problem else reference)
            return result
        if notify_url:
            form["notifyurl"] = notify_url
        if reference:
            form["reference"] = reference
        body = urlencode(form).encode("ascii")
        started = time.perf_counter()
        try:
            adapter, template = self._thread_state()
            request = template.copy()
            request.body = body
            request.headers["Content-Length"] = str(len(body))
            # The session's adapter is called directly: Session.send adds only cookie, hook and
            # redirect handling, which this API never uses, at ~50 us per send.
            reply = adapter.send(request, timeout=self.timeouts.as_tuple())
            content = reply.content
        except requests.RequestException as exc:
            elapsed = time.perf_counter() - started
            result = classify_error(exc, self.url, self.timeouts, elapsed=elapsed)
        except Exception as exc:  # noqa: BLE001 - the request may have left: say so, never raise
            logger.exception("unexpected error sending to %s", self.url)
            result = SendResult(
                Outcome.AMBIGUOUS,
                "Sending failed with an unexpected error after the request may have left; it may have been sent",
                detail=_excerpt(f"{type(exc).__name__}: {exc}"),
                elapsed=round(time.perf_counter() - started, 6),
            )
        else:
            elapsed = time.perf_counter() - started
            result = _classify_reply_safely(reply.status_code, content, reply.headers.get("Retry-After"),
                                            elapsed=elapsed, url=self.url)
        result = _redacted(result, self._secrets)
        _log(result, reference)
        return result

    def _thread_state(self) -> tuple[HTTPAdapter, requests.PreparedRequest]:
        """This thread's adapter and prepared POST (URL, auth, headers), copied for each message.

        Preparing a request from scratch costs requests several hundred microseconds of
        isinstance checks against typing Protocols; a copy halves the client's CPU per send.
        """
        state = getattr(self._local, "state", None)
        if state is None:
            session = self.session()
            request = requests.Request(
                "POST",
                self.url,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                auth=(self._credentials.username, self._credentials.password),
            )
            state = self._local.state = (session.get_adapter(self.url), session.prepare_request(request))
        return state


def invalid_input(
    *, sender: object, to: object, text: object, notify_url: object = None, reference: object = None
) -> str | None:
    """Why these fields can never make a valid send (the field named as MultiTEL calls it), or None."""
    for name, value, required in (
        ("from", sender, True),
        ("to", to, True),
        ("text", text, True),
        ("notifyurl", notify_url, False),
        ("reference", reference, False),
    ):
        if value is None or value == "":
            if required:
                return f"'{name}' is missing"
            continue
        if not isinstance(value, str):
            return f"'{name}' must be text, not {type(value).__name__}"
        if required and not value.strip():
            return f"'{name}' is blank"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return (
                f"'{name}' has a character that is not valid Unicode at position {error.start} "
                f"(a lone UTF-16 surrogate, U+{ord(value[error.start]):04X})"
            )
    return None


def _classify_reply_safely(
    http_status: int, body: bytes, retry_after: str | None, *, elapsed: float, url: str
) -> SendResult:
    """classify_reply, with a last resort: a reply arrived, so a reader's bug must not become an exception."""
    try:
        return classify_reply(http_status, body, retry_after, elapsed=elapsed, url=url)
    except Exception:  # noqa: BLE001 - tests/provider/test_multitel.py fuzzes for this never being reached
        logger.exception("reply from %s could not be classified (HTTP %s)", url, http_status)
        return SendResult(
            Outcome.AMBIGUOUS,
            f"MultiTEL answered HTTP {http_status} with a reply that could not be classified; "
            "the message may have been sent",
            http_status=http_status,
            detail=_excerpt(body),
            elapsed=round(elapsed, 6),
        )


def classify_reply(
    http_status: int, body: bytes, retry_after: str | None = None, *, elapsed: float = 0.0, url: str | None = None
) -> SendResult:
    """Sort a reply that arrived into one Outcome (the table in the module docstring)."""
    envelope = parse_envelope(body)
    fields = _envelope_fields(envelope) if envelope else {}
    common = {"http_status": http_status, "detail": _excerpt(body), "elapsed": round(elapsed, 6), **fields}

    if 200 <= http_status < 300:
        if envelope is None:
            return SendResult(
                Outcome.AMBIGUOUS,
                f"MultiTEL answered HTTP {http_status} but the reply could not be read; the message may have been sent",
                **common,
            )
        if envelope.success and envelope.code == "200":
            parts = fields["parts"]
            counted = f" ({parts} part{'s' if parts != 1 else ''})" if parts else ""
            flagged = "".join(f"; {name} unreadable" for name in fields["unreadable"])
            return SendResult(Outcome.ACCEPTED, f"Accepted by MultiTEL{counted}{flagged}", **common)
        if envelope.success:
            return SendResult(
                Outcome.AMBIGUOUS,
                f'MultiTEL said Success with status code {envelope.code!r} instead of "200"; '
                "the message may have been sent",
                **common,
            )
        return SendResult(Outcome.REFUSED, _refusal_reason(envelope), **common)

    if 300 <= http_status < 400:
        return SendResult(
            Outcome.ACCOUNT,
            f"The MultiTEL API URL redirects (HTTP {http_status}); check the API URL in settings",
            **common,
        )
    if http_status in (401, 403):
        return SendResult(
            Outcome.ACCOUNT,
            f"MultiTEL refused the API username or password (HTTP {http_status}); check them in settings",
            **common,
        )
    if http_status in (404, 405):
        # Checked before the envelope: the API answers a path it doesn't have with its own 404
        # envelope, and calling that REFUSED would fail every message instead of pausing.
        return SendResult(Outcome.ACCOUNT, wrong_url_reason(url, http_status), **common)
    if http_status in (408, 429, 503) or (http_status == 500 and envelope is not None):
        seconds = parse_retry_after(retry_after)
        wait = f"; retry after {seconds:g} s" if seconds is not None else ""
        why = {408: "timed out waiting for the request", 429: "is rate limiting", 503: "is unavailable"}
        return SendResult(
            Outcome.NOT_SENT,
            f"MultiTEL {why.get(http_status, 'reported a server error')} (HTTP {http_status}); "
            f"the message was not sent{wait}",
            retry_after=seconds,
            **common,
        )
    if 400 <= http_status < 500:
        if envelope is not None:
            return SendResult(Outcome.REFUSED, _refusal_reason(envelope), **common)
        return SendResult(Outcome.REFUSED, f"MultiTEL refused the message (HTTP {http_status})", **common)
    return SendResult(
        Outcome.AMBIGUOUS,
        f"MultiTEL answered HTTP {http_status} without its usual reply; the message may have been sent",
        **common,
    )


def classify_error(exc: requests.RequestException, url: str, timeouts: Timeouts, *, elapsed: float = 0.0) -> SendResult:
    """Sort a transport error: did any request bytes possibly reach the provider?"""
    result = _classify_error(exc, url, timeouts)
    return replace(result, elapsed=round(elapsed, 6))


def _classify_error(exc: requests.RequestException, url: str, timeouts: Timeouts) -> SendResult:
    where = urlsplit(url).netloc or url
    detail = _excerpt(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, requests.ConnectTimeout):
        return SendResult(
            Outcome.NOT_SENT,
            f"Could not connect to {where} within {timeouts.connect:g} s; the message was not sent",
            detail=detail,
        )
    if isinstance(exc, requests.ReadTimeout):
        return SendResult(
            Outcome.AMBIGUOUS,
            f"MultiTEL did not answer within {timeouts.read:g} s; the message may have been sent",
            detail=detail,
        )
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return SendResult(
            Outcome.NOT_SENT,
            f"Could not open a secure connection to {where}; the message was not sent",
            detail=detail,
        )
    if isinstance(
        exc,
        requests.exceptions.InvalidURL | requests.exceptions.MissingSchema | requests.exceptions.InvalidSchema,
    ):
        return SendResult(Outcome.ACCOUNT, f"The MultiTEL API URL {url!r} is not usable", detail=detail)
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError):
            return SendResult(
                Outcome.NOT_SENT,
                f"Could not connect to {where} ({_connect_failure(reason)}); the message was not sent",
                detail=detail,
            )
        if exc.args and isinstance(exc.args[0], ProtocolError):
            return SendResult(
                Outcome.AMBIGUOUS,
                "The connection to MultiTEL broke after the message was sent; it may have been delivered",
                detail=detail,
            )
    return SendResult(
        Outcome.AMBIGUOUS,
        "The connection to MultiTEL failed part way; the message may have been sent",
        detail=detail,
    )


def wrong_url_reason(url: str | None, http_status: int) -> str:
    """Say that the API URL is wrong, and why when the base URL shows it (a trailing /v3 or /api)."""
    where = url or "The MultiTEL API URL"
    hint = ""
    if url and url.endswith(SEND_PATH):
        base = url[: -len(SEND_PATH)].rstrip("/")
        suffix = next((s for s in ("/v3/sendsms", "/sendsms", "/v3", "/api") if base.lower().endswith(s)), None)
        if suffix:
            hint = f"; the base URL ends in {suffix}, but {SEND_PATH} is added to it"
    return (
        f"The API URL is wrong: {where} answered HTTP {http_status} (no such address){hint}. "
        "MULTITEL_API_URL must be the API's base address, such as https://api.multitel.net"
    )


_NOT_VERIFIED = (
    "Not verified: that the sender numbers may send, the account balance, or that a real message would be accepted."
)
_PROBE_USERNAME = "connection-check-not-a-user"


def check_connection(base_url: str, credentials: Credentials, timeouts: Timeouts | None = None) -> ConnectionCheck:
    """Find out, without sending anything, whether base_url is MultiTEL's API and takes these credentials.

    Two POSTs of an empty form (no 'to', no 'text': nothing can be queued or billed). The first, with
    the team's credentials, must reach the API: 401/403 means refused; 404/405/3xx means the URL is
    wrong; an envelope refusing the missing fields means the API is there. That alone does not prove
    the password was checked (an API may validate the form first), so a second POST with a made-up
    username must be refused as unauthorised; a made-up username, not a wrong password, so the
    team's account never collects a failed login.
    """
    url = send_url(base_url)
    timeouts = timeouts or Timeouts(read=10.0)
    tried = f"one POST of an empty message (no recipient, no text) to {url}"
    with requests.Session() as session:
        session.trust_env = False
        reply = _post_empty(session, url, credentials, timeouts)
        if isinstance(reply, ConnectionCheck):
            return replace(reply, verified_by=f"Tried {tried}.", not_verified="Not verified: anything else.")
        status, envelope = reply.status_code, parse_envelope(reply.content)
        answered = f"Tried {tried}: it answered HTTP {status}{_said(envelope)}."
        nothing_else = "Not verified: anything else, since the API did not answer as expected."
        if status in (401, 403):
            return ConnectionCheck(False, f"The API at {url} answered, but the username or password was refused "
                                   f"(HTTP {status}).", answered, nothing_else)
        if status in (404, 405) or 300 <= status < 400:
            moved = reply.headers.get("Location")
            message = wrong_url_reason(url, status) if status in (404, 405) else (
                f"The API URL is wrong: {url} redirects (HTTP {status}){f' to {moved}' if moved else ''}. "
                "MULTITEL_API_URL must be the API's base address, such as https://api.multitel.net")
            return ConnectionCheck(False, message, answered,
                                   "Not verified: the username and password, since the request reached no API.")
        if status in (408, 429, 503):  # turned away before the credentials were necessarily checked
            return ConnectionCheck(False, f"MultiTEL is busy (HTTP {status}); try again in a minute.", answered,
                                   "Not verified: the username and password.")
        if envelope is None or not (200 <= status < 300 or 400 <= status < 500):
            return ConnectionCheck(False, f"{url} answered HTTP {status}, which is not MultiTEL's API reply; "
                                   "check MULTITEL_API_URL.", answered, nothing_else)
        probe = _post_empty(session, url, Credentials(_PROBE_USERNAME, credentials.password), timeouts)
    yours = f"with yours it answered HTTP {status}{_said(envelope)}"
    if isinstance(probe, ConnectionCheck) or probe.status_code not in (401, 403):
        probe_answer = "no answer" if isinstance(probe, ConnectionCheck) else f"HTTP {probe.status_code}"
        return ConnectionCheck(
            False,
            f"MultiTEL's API answered at {url}, but the username and password could not be checked "
            "without sending a real message.",
            f"Tried two empty messages (no recipient, no text, so nothing could be sent or billed): {yours}; "
            f"with a made-up username it gave {probe_answer} instead of refusing it, so an empty message "
            "does not show whether credentials are right.",
            "Not verified: the username and password, that the sender numbers may send, the account balance.",
        )
    return ConnectionCheck(
        True,
        f"MultiTEL's API answered at {url} and accepted the username and password.",
        f"Verified by two empty messages (no recipient, no text, so nothing could be sent or billed): with a "
        f"made-up username the API answered HTTP {probe.status_code} (refused), {yours}.",
        _NOT_VERIFIED,
    )


def _post_empty(
    session: requests.Session, url: str, credentials: Credentials, timeouts: Timeouts
) -> requests.Response | ConnectionCheck:
    """POST an empty form; a transport failure comes back as the ConnectionCheck that explains it."""
    try:
        return session.post(url, data={}, auth=(credentials.username, credentials.password),
                            timeout=timeouts.as_tuple(), allow_redirects=False)
    except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
        logger.info("connection check to %s failed: %s", url, type(exc).__name__)
        return ConnectionCheck(False, f"cannot reach {url}")
    except requests.ReadTimeout:
        return ConnectionCheck(False, f"{url} took the connection but did not answer in {timeouts.read:g} s")
    except requests.ConnectionError as exc:
        logger.info("connection check to %s failed: %s", url, type(exc).__name__)
        return ConnectionCheck(False, f"cannot reach {url}")
    except requests.RequestException as exc:
        return ConnectionCheck(False, f"{url} is not a usable URL ({type(exc).__name__})")


def _said(envelope: "_Envelope | None") -> str:
    """What the provider's reply said, for a sentence: " ('from' is required; cause 1001)"."""
    if envelope is None:
        return ""
    message = _text(envelope.response.get("message") or envelope.msg)
    cause = _text(envelope.response.get("causecode"))
    said = "; ".join(part for part in (message and message[:200], cause and f"cause {cause[:20]}") if part)
    return f" ({said})" if said else ""


def parse_envelope(body: bytes) -> _Envelope | None:
    """The {"status": ..., "response": ...} reply, or None when the body is anything else."""
    try:
        data = json.loads(body, parse_float=Decimal, parse_int=_json_int)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    status, response = data.get("status"), data.get("response")
    if not isinstance(status, dict) and not isinstance(response, dict):
        return None
    status = status if isinstance(status, dict) else {}
    return _Envelope(
        code=status.get("code"),
        msg=str(status.get("msg") or ""),
        response=response if isinstance(response, dict) else {},
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or infinity
        return None
    return max(0.0, seconds)


def _envelope_fields(envelope: _Envelope) -> dict[str, Any]:
    response = envelope.response
    numbers = {
        "parts": _integer(response.get("parts")),
        "cost": _decimal(response.get("cost")),
        "price_per_part": _decimal(response.get("permsg")),
    }
    unreadable = tuple(
        wire for wire, name in (("parts", "parts"), ("cost", "cost"), ("permsg", "price_per_part"))
        if numbers[name] is None and response.get(wire) not in (None, "")
    )
    return {
        "unique_id": _text(response.get("uniqueid")),
        "pid": _text(response.get("pid")),
        **numbers,
        "cause_code": _text(response.get("causecode")),
        "provider_message": _text(response.get("message") or envelope.msg),
        "unreadable": unreadable,
    }


def _refusal_reason(envelope: _Envelope) -> str:
    response = envelope.response
    message = _text(response.get("message") or envelope.msg) or "no reason given"
    cause = _text(response.get("causecode"))
    suffix = f" (cause {cause})" if cause else ""
    return f"MultiTEL refused the message: {message}{suffix}"


def _connect_failure(reason: NewConnectionError) -> str:
    if isinstance(reason, NameResolutionError):
        return "host name not found"
    text = str(reason).lower()
    if "refused" in text:
        return "connection refused"
    if "unreachable" in text:
        return "network unreachable"
    return "connection failed"


# No message has a million parts or costs a million; a larger number is unreadable. The bound keeps
# int() and str() away from numbers like 1e5000 (str() of a 5,000-digit int raises ValueError).
_MAX_NUMBER_CHARS = 40
_MAX_ADJUSTED_EXPONENT = 5  # below 1,000,000


def _json_int(digits: str) -> int | Decimal:
    """A JSON integer; a long one stays a Decimal (int() refuses over 4,300 digits)."""
    return int(digits) if len(digits) <= _MAX_NUMBER_CHARS else Decimal(digits)


def _text(value: Any) -> str | None:
    """A reply value as text, with any lone surrogate ("\\ud800" is valid JSON) replaced."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _decimal(value: Any) -> Decimal | None:
    """A plausible amount, or None: not a number, infinite, NaN, or a million or more."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    # adjusted() reads the exponent without arithmetic, which could overflow the context.
    return number if number.is_finite() and number.adjusted() <= _MAX_ADJUSTED_EXPONENT else None


def _integer(value: Any) -> int | None:
    """A plausible count (a whole number from 0 below a million), or None."""
    number = _decimal(value)
    if number is None or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _excerpt(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text[:_DETAIL_LIMIT]


def _secret_forms(credentials: Credentials) -> tuple[str, ...]:
    """The password as it could be echoed back: plain, base64, and inside the Authorization header."""
    if len(credentials.password) < 3:  # too short to tell apart from ordinary text
        return ()
    userpass = f"{credentials.username}:{credentials.password}".encode()
    return (
        base64.b64encode(userpass).decode(),
        credentials.password,
        base64.b64encode(credentials.password.encode()).decode(),
    )


def _redacted(result: SendResult, secrets: tuple[str, ...]) -> SendResult:
    """Scrub the password from anything the reply or an error echoed back (a proxy might)."""
    changes = {}
    for name in ("reason", "detail", "provider_message"):
        value = getattr(result, name)
        if value and any(secret in value for secret in secrets):
            for secret in secrets:
                value = value.replace(secret, "***")
            changes[name] = value
    return replace(result, **changes) if changes else result


def _log(result: SendResult, reference: str | None) -> None:
    if result.outcome is Outcome.ACCEPTED:
        logger.debug("sent reference=%s uniqueid=%s parts=%s", reference, result.unique_id, result.parts)
    else:
        logger.warning("send %s reference=%s http=%s: %s", result.outcome, reference, result.http_status, result.reason)
