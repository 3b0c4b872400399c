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
| 401 or 403                                       | ACCOUNT   | credentials refused: pause the campaign     |
| 3xx; 404/405 without the envelope; a base        | ACCOUNT   | the API URL in settings is wrong, and every |
| URL requests cannot use                          |           | message would fail the same way             |
| read timeout; connection reset or closed         | AMBIGUOUS | the provider may have queued the message:   |
| after the body was sent; 502, 504, 500 or        |           | never resend automatically; reconcile by    |
| other 5xx without the envelope; unreadable       |           | `reference` from callbacks (DOMAIN.md §6)   |
| 2xx body; "Success" with a code not "200"        |           |                                             |

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

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


@dataclass(frozen=True)
class ConnectionCheck:
    """The answer to the settings page's 'Test connection' button."""

    ok: bool
    message: str


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
    if not media.startswith(MEDIA_SIGNATURES):
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
        """POST one message and classify the result; transport errors are returned, not raised."""
        form = {"from": sender, "to": to, "text": text}
        if media is not None:
            form["media"] = encode_media(media)
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
        else:
            elapsed = time.perf_counter() - started
            retry_after = reply.headers.get("Retry-After")
            result = classify_reply(reply.status_code, content, retry_after, elapsed=elapsed)
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


def classify_reply(
    http_status: int, body: bytes, retry_after: str | None = None, *, elapsed: float = 0.0
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
            return SendResult(Outcome.ACCEPTED, f"Accepted by MultiTEL{counted}", **common)
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
    if http_status in (404, 405) and envelope is None:
        return SendResult(
            Outcome.ACCOUNT,
            f"No MultiTEL API at this URL (HTTP {http_status}); check the API URL in settings",
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


def check_connection(base_url: str, credentials: Credentials, timeouts: Timeouts | None = None) -> ConnectionCheck:
    """Test the credentials with an empty form: no 'to' or 'text', so nothing can be sent."""
    url = send_url(base_url)
    timeouts = timeouts or Timeouts(read=10.0)
    try:
        with requests.Session() as session:
            session.trust_env = False
            reply = session.post(
                url,
                data={},
                auth=(credentials.username, credentials.password),
                timeout=timeouts.as_tuple(),
                allow_redirects=False,
            )
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

    status = reply.status_code
    if status in (401, 403):
        return ConnectionCheck(False, "username or password was refused")
    if status in (408, 429, 503):  # turned away before the credentials were necessarily checked
        return ConnectionCheck(False, f"MultiTEL is busy (HTTP {status}); try again in a minute")
    envelope = parse_envelope(reply.content)
    if envelope is not None and (200 <= status < 300 or 400 <= status < 500):
        # MultiTEL checks the credentials first, so a validation refusal means they passed.
        return ConnectionCheck(True, "credentials accepted")
    return ConnectionCheck(False, f"unexpected answer from {url}: HTTP {status}")


def parse_envelope(body: bytes) -> _Envelope | None:
    """The {"status": ..., "response": ...} reply, or None when the body is anything else."""
    try:
        data = json.loads(body, parse_float=Decimal)
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
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or infinity
        return None
    return max(0.0, seconds)


def _envelope_fields(envelope: _Envelope) -> dict[str, Any]:
    response = envelope.response
    cause = response.get("causecode")
    message = response.get("message") or envelope.msg or None
    return {
        "unique_id": _text(response.get("uniqueid")),
        "pid": _text(response.get("pid")),
        "parts": _integer(response.get("parts")),
        "cost": _decimal(response.get("cost")),
        "price_per_part": _decimal(response.get("permsg")),
        "cause_code": None if cause is None or cause == "" else str(cause),
        "provider_message": None if message is None else str(message),
    }


def _refusal_reason(envelope: _Envelope) -> str:
    response = envelope.response
    message = str(response.get("message") or envelope.msg or "no reason given")
    cause = response.get("causecode")
    suffix = f" (cause {cause})" if cause not in (None, "") else ""
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


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _integer(value: Any) -> int | None:
    try:
        number = Decimal(str(value))
        return int(number) if number == number.to_integral_value() else None
    except (InvalidOperation, ValueError, TypeError):
        return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


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
