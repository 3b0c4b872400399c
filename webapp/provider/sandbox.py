"""The built-in MultiTEL-compatible provider: a small WSGI app served by waitress in a thread.

It answers POST /v3/sendsms like the real API (Basic auth, the same JSON envelope, parts and cost
counted by its own sandbox_billing, never by the estimator it is meant to check), records every
accepted send, posts delivery callbacks to the notify URL, and
injects the failures the client must survive (429, 503, 500, and a hang *after* accepting, which is
the ambiguous case). Control endpoints let tests and demos steer it at run time:

    GET  /_sandbox/sends[?reference=R]   accepted sends as JSON, oldest first
    GET  /_sandbox/config                the current settings
    POST /_sandbox/config                JSON object of SandboxConfig fields to change
    POST /_sandbox/reset                 forget sends and pending callbacks, back to the start config

NEVER ENABLE THIS IN PRODUCTION. The control endpoints have no authentication and the provider sends
nothing to anyone; the app decides whether it runs (SANDBOX_ENABLED, off when APP_ENV=production).

Sandbox cause codes (the real ones are not public): 0 success, 1001 'from' missing, 1002 'to'
missing, 1003 'text' missing, 1004 'to' not a plausible number, 1005 media not base64 jpg/png,
1006 media over the size cap, 1010 destination refused (refuse_prefix), 1401 bad credentials,
1429 rate limited, 1503 unavailable. In callbacks: 1 UNDELIV, 2 REJECTD, 3 EXPIRED.

Plain WSGI rather than Flask: a Flask request costs several times more CPU, and the sandbox must
take over 1,000 sends/s on two cores with the client on the same machine (bench/sandbox_throughput.py).
"""

import base64
import binascii
import contextlib
import copy
import dataclasses
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl

import requests
import waitress
from waitress.channel import HTTPChannel

from webapp.provider.sandbox_billing import billed_cost

logger = logging.getLogger(__name__)

MEDIA_MAX_BYTES = 600 * 1024  # carriers cap MMS around 600 KB (DOMAIN.md §7), counted before base64
BODY_MAX_BYTES = 2 * 1024 * 1024  # the base64 media plus form escaping stays well under this
INTERIM_STATUS = "ENROUTE"  # SMPP's interim word (DOMAIN.md §5)
FAILED_STATUSES = {"UNDELIV": 1, "REJECTD": 2, "EXPIRED": 3}
CALLBACK_ATTEMPTS = 3
CALLBACK_RETRY_DELAY = 0.1  # seconds, doubled after each failed attempt
DUPLICATE_GAP = 0.01  # seconds between a callback and its duplicate

_PLAUSIBLE_NUMBER = re.compile(r"\+?[1-9]\d{6,14}")
_NUMBER_PUNCTUATION = re.compile(r"[\s().-]")
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass
class SandboxConfig:
    """How the sandbox behaves; every field can be changed at run time through /_sandbox/config."""

    accounts: dict[str, str] = field(default_factory=lambda: {"sandbox": "sandbox"})
    price_per_part: Decimal = Decimal("0.015")
    mms_price: Decimal = Decimal("0.05")  # an MMS is billed per message, whatever its text
    callback_delay: float = 0.2  # seconds from acceptance to the final callback
    callbacks: bool = True  # False: record sends but post no callback (benchmarks of the send path alone)
    delivered_rate: float = 0.95  # the rest end UNDELIV, REJECTD or EXPIRED
    duplicate_callbacks: bool = False  # post every callback twice
    out_of_order: bool = False  # post the final status before the interim one
    error_500_rate: float = 0.0  # plain-text 500, nothing recorded
    error_503_rate: float = 0.0
    error_429_rate: float = 0.0
    hang_rate: float = 0.0  # accept and record, then hold the reply for hang_seconds
    hang_seconds: float = 30.0
    latency_ms: int = 0  # added before every answer to /v3/sendsms
    callback_format: Literal["form", "json"] = "form"
    refuse_prefix: str | None = None  # a 'to' starting with this is refused with cause 1010
    retry_after: int | None = 1  # Retry-After seconds on 429 and 503; None leaves the header out
    seed: int | None = None

    def __post_init__(self) -> None:
        self.price_per_part = Decimal(str(self.price_per_part))
        self.mms_price = Decimal(str(self.mms_price))
        for name in ("delivered_rate", "error_500_rate", "error_503_rate", "error_429_rate", "hang_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.error_429_rate + self.error_503_rate + self.error_500_rate > 1.0:
            raise ValueError("error_429_rate + error_503_rate + error_500_rate must not exceed 1")
        if self.callback_format not in ("form", "json"):
            raise ValueError(f"callback_format must be 'form' or 'json', got {self.callback_format!r}")
        if self.callback_delay < 0 or self.hang_seconds < 0 or self.latency_ms < 0:
            raise ValueError("callback_delay, hang_seconds and latency_ms must not be negative")

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["price_per_part"] = str(self.price_per_part)
        data["mms_price"] = str(self.mms_price)
        data["accounts"] = sorted(self.accounts)  # names only: passwords stay out of the API
        return data


@dataclass(frozen=True)
class SentMessage:
    """One send the sandbox accepted, as the real provider would have queued it."""

    reference: str | None
    to: str
    sender: str
    text: str
    unique_id: str
    pid: str
    parts: int
    cost: Decimal
    time: datetime
    notify_url: str | None
    media_bytes: int
    final_status: str  # what the final callback says (DELIVRD, UNDELIV, ...)
    final_cause: int

    def as_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "to": self.to,
            "from": self.sender,
            "text": self.text,
            "uniqueid": self.unique_id,
            "pid": self.pid,
            "parts": self.parts,
            "cost": str(self.cost),
            "time": self.time.isoformat(),
            "notifyurl": self.notify_url,
            "media_bytes": self.media_bytes,
            "final_status": self.final_status,
            "final_causecode": self.final_cause,
        }


@dataclass(frozen=True)
class CallbackAttempt:
    """One POST to a notify URL, kept so tests can see retries and give-ups."""

    url: str
    fields: dict[str, Any]
    attempt: int
    http_status: int | None
    error: str | None


@dataclass(order=True)
class _Due:
    due: float
    seq: int
    url: str = field(compare=False)
    fields: dict[str, Any] = field(compare=False)
    body_format: str = field(compare=False)
    generation: int = field(compare=False)
    attempt: int = field(default=1, compare=False)


class CallbackDispatcher:
    """Posts callbacks when they fall due: one timer thread over a heap, a small pool for the POSTs."""

    def __init__(self, workers: int = 4, timeout: tuple[float, float] = (2.0, 5.0)) -> None:
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._workers = workers
        self._timeout = timeout
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._generation = 0  # bumped by clear() so posts from before a reset leave no trace
        self._local = threading.local()
        self.attempts: deque[CallbackAttempt] = deque(maxlen=10_000)

    def schedule(self, url: str, fields: dict[str, Any], body_format: str, delay: float) -> None:
        with self._cv:
            if self._closed:
                return
            self._start_locked()
            due = _Due(time.monotonic() + delay, next(self._seq), url, fields, body_format, self._generation)
            heapq.heappush(self._heap, due)
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def clear(self) -> None:
        """Drop pending callbacks; a POST already in flight is neither recorded nor retried."""
        with self._cv:
            self._generation += 1
            self._heap.clear()
            self.attempts.clear()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start_locked(self) -> None:
        if self._thread is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="sandbox-callback")
            self._thread = threading.Thread(target=self._run, name="sandbox-callback-timer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0].due > time.monotonic()):
                    self._cv.wait(self._heap[0].due - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                item = heapq.heappop(self._heap)
            assert self._pool is not None
            self._pool.submit(self._post, item)

    def _post(self, item: _Due) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        body = {"json": item.fields} if item.body_format == "json" else {"data": item.fields}
        status: int | None = None
        error: str | None = None
        try:
            reply = session.post(item.url, timeout=self._timeout, allow_redirects=False, **body)
            status = reply.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except requests.RequestException as exc:
            error = type(exc).__name__
        with self._cv:
            if item.generation != self._generation or self._closed:
                return
            self.attempts.append(CallbackAttempt(item.url, item.fields, item.attempt, status, error))
        if error is None:
            return
        if item.attempt >= CALLBACK_ATTEMPTS:
            logger.warning(
                "sandbox gave up on callback %s %s to %s after %d attempts: %s",
                item.fields.get("uniqueid"),
                item.fields.get("status"),
                item.url,
                item.attempt,
                error,
            )
            return
        with self._cv:
            if self._closed or item.generation != self._generation:
                return
            retry = dataclasses.replace(
                item,
                due=time.monotonic() + CALLBACK_RETRY_DELAY * 2 ** (item.attempt - 1),
                seq=next(self._seq),
                attempt=item.attempt + 1,
            )
            heapq.heappush(self._heap, retry)
            self._cv.notify()


class SandboxState:
    """Everything the sandbox remembers; `reset` returns it to how it started."""

    def __init__(self, config: SandboxConfig) -> None:
        self.initial_config = copy.deepcopy(config)
        self.config = config
        self.lock = threading.Lock()
        self.random = random.Random(config.seed)
        self.sends: list[SentMessage] = []
        self.callbacks = CallbackDispatcher()
        self.release = threading.Event()  # set to end every hang at once (reset, stop)

    def record(self, message: SentMessage) -> None:
        with self.lock:
            self.sends.append(message)

    def sends_for(self, reference: str | None = None) -> list[SentMessage]:
        with self.lock:
            return [s for s in self.sends if reference is None or s.reference == reference]

    def draw(self) -> float:
        with self.lock:
            return self.random.random()

    def choose(self, options: list[str]) -> str:
        with self.lock:
            return self.random.choice(options)

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply validated changes all at once; raises ValueError naming the bad field."""
        names = {f.name for f in dataclasses.fields(SandboxConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        with self.lock:
            values = dataclasses.asdict(self.config)
            values.update({name: _coerce(name, value) for name, value in changes.items()})
            self.config = SandboxConfig(**values)
            if "seed" in changes:
                self.random.seed(self.config.seed)

    def reset(self) -> None:
        old_release = self.release
        with self.lock:
            self.config = copy.deepcopy(self.initial_config)
            self.random.seed(self.config.seed)
            self.sends.clear()
            self.release = threading.Event()
        old_release.set()
        self.callbacks.clear()

    def close(self) -> None:
        self.release.set()
        self.callbacks.close()


class SandboxApp:
    """The WSGI callable; `state` is there for tests to inspect."""

    def __init__(self, config: SandboxConfig) -> None:
        self.state = SandboxState(config)
        self._routes: dict[tuple[str, str], Callable[[Environ], tuple[int, Any, list]]] = {
            ("POST", "/v3/sendsms"): self._send_sms,
            ("GET", "/_sandbox/sends"): self._list_sends,
            ("GET", "/_sandbox/config"): self._show_config,
            ("POST", "/_sandbox/config"): self._change_config,
            ("POST", "/_sandbox/reset"): self._reset,
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        handler = self._routes.get((environ.get("REQUEST_METHOD", "GET"), path))
        if handler is None:
            known = any(route_path == path for _, route_path in self._routes)
            status, payload, headers = (
                (405, {"error": "method not allowed"}, []) if known else (404, {"error": "not found"}, [])
            )
        else:
            status, payload, headers = handler(environ)
        if isinstance(payload, bytes):
            body, content_type = payload, "text/plain; charset=utf-8"
        else:
            body, content_type = json.dumps(payload, default=_json_default).encode(), "application/json"
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
        )
        return [body]

    def close(self) -> None:
        self.state.close()

    def _send_sms(self, environ: Environ) -> tuple[int, Any, list]:
        state = self.state
        config = state.config
        if not self._authorized(environ.get("HTTP_AUTHORIZATION", ""), config):
            return (
                401,
                _envelope(401, "Unauthorized", "Failed", "Invalid API username or password", 1401),
                [("WWW-Authenticate", 'Basic realm="MultiTEL sandbox"')],
            )
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)

        fault = state.draw()
        retry_after = [("Retry-After", str(config.retry_after))] if config.retry_after is not None else []
        if fault < config.error_429_rate:
            return 429, _refusal(429, "Rate limit exceeded", 1429), retry_after
        if fault < config.error_429_rate + config.error_503_rate:
            return 503, _refusal(503, "Try again later", 1503), retry_after
        if fault < config.error_429_rate + config.error_503_rate + config.error_500_rate:
            return 500, b"Internal Server Error", []

        body = _read_body(environ)
        if body is None:
            return 413, _refusal(413, "Request body too large", 1006), []
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        refusal = _validate(form)
        if refusal is not None:
            return 400, refusal, []
        to = form["to"].strip()
        if config.refuse_prefix and to.startswith(config.refuse_prefix):
            return 400, _refusal(400, "Destination refused", 1010), []

        message = self._accept(form, config)
        state.record(message)
        if message.notify_url and config.callbacks:
            self._schedule_callbacks(message, config)
        if config.hang_rate and state.draw() < config.hang_rate:
            state.release.wait(config.hang_seconds)  # accepted, but the reply comes too late
        return 200, _success(message, config.mms_price if message.media_bytes else config.price_per_part), []

    def _accept(self, form: dict[str, str], config: SandboxConfig) -> SentMessage:
        text = form["text"]
        media = form.get("media")
        parts, cost = billed_cost(text, config.price_per_part, media=bool(media), mms_price=config.mms_price)
        unique_id = str(uuid.uuid4())
        if self.state.draw() < config.delivered_rate:
            final_status, final_cause = "DELIVRD", 0
        else:
            final_status = self.state.choose(sorted(FAILED_STATUSES))
            final_cause = FAILED_STATUSES[final_status]
        return SentMessage(
            reference=form.get("reference") or None,
            to=form["to"].strip(),
            sender=form["from"].strip(),
            text=text,
            unique_id=unique_id,
            pid="SBX" + uuid.uuid4().hex[:7].upper() + unique_id,
            parts=parts,
            cost=cost,
            time=datetime.now(UTC),
            notify_url=form.get("notifyurl") or None,
            media_bytes=len(base64.b64decode(media)) if media else 0,
            final_status=final_status,
            final_cause=final_cause,
        )

    def _schedule_callbacks(self, message: SentMessage, config: SandboxConfig) -> None:
        """The interim status at a quarter of callback_delay, the final at callback_delay.

        Timestamps say when each status happened, in the natural order; out_of_order swaps only
        when they are posted, as a provider retrying a failed callback would.
        """
        assert message.notify_url is not None
        interim_at, final_at = config.callback_delay / 4, config.callback_delay
        posted_at = (final_at, interim_at) if config.out_of_order else (interim_at, final_at)
        copies = 2 if config.duplicate_callbacks else 1
        statuses = ((INTERIM_STATUS, 0, interim_at), (message.final_status, message.final_cause, final_at))
        for (status, cause, happened_at), delay in zip(statuses, posted_at, strict=True):
            happened = message.time + timedelta(seconds=happened_at)
            fields = {
                "uniqueid": message.unique_id,
                "reference": message.reference or "",
                "status": status,
                "causecode": cause,
                "cost": str(message.cost),
                "parts": message.parts,
                "timestamp": happened.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            for copy_number in range(copies):
                self.state.callbacks.schedule(
                    message.notify_url, fields, config.callback_format, delay + copy_number * DUPLICATE_GAP
                )

    def _list_sends(self, environ: Environ) -> tuple[int, Any, list]:
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        sends = self.state.sends_for(query.get("reference"))
        return 200, [message.as_json() for message in sends], []

    def _show_config(self, environ: Environ) -> tuple[int, Any, list]:
        return 200, self.state.config.as_json(), []

    def _change_config(self, environ: Environ) -> tuple[int, Any, list]:
        try:
            changes = json.loads(_read_body(environ) or b"")
            if not isinstance(changes, dict):
                raise ValueError("send a JSON object of config fields")
            self.state.update_config(changes)
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}, []
        return 200, self.state.config.as_json(), []

    def _reset(self, environ: Environ) -> tuple[int, Any, list]:
        self.state.reset()
        return 200, {"reset": True}, []

    @staticmethod
    def _authorized(header: str, config: SandboxConfig) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = config.accounts.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


def create_sandbox_app(config: SandboxConfig | None = None) -> SandboxApp:
    """The sandbox as a WSGI callable, to serve with any WSGI server."""
    return SandboxApp(config or SandboxConfig())


class SandboxServer:
    """The sandbox on waitress in a background thread; `url` is the base URL (no /v3).

    waitress serves one request per thread, and injected latency sleeps in that thread: 64 threads let
    64 senders wait on a slow provider at once (8 capped a 100 ms sandbox at 80 sends/s).
    """

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0, threads: int = 64
    ) -> None:
        self.app = create_sandbox_app(config)
        self.host = host
        self.port = port
        self.threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> SandboxState:
        return self.app.state

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "SandboxServer":
        self._bind()
        self._thread = threading.Thread(target=self._server.run, name="sandbox-server", daemon=True)
        self._thread.start()
        return self

    def run_forever(self) -> None:
        """Serve in this thread until interrupted (the dev command)."""
        self._bind()
        logger.warning("MultiTEL sandbox listening on %s (never enable in production)", self.url)
        try:
            self._server.run()
        finally:
            self.app.close()

    def stop(self) -> None:
        """Release hangs, let in-flight requests finish, then close every connection and thread."""
        self.app.close()
        server, self._server = self._server, None
        if server is None:
            return
        # Workers first: a worker finishing its request pulls the trigger, which must still be open.
        server.task_dispatcher.shutdown(timeout=2)
        # The loop thread may run the thunk and close the trigger before this write returns.
        with contextlib.suppress(OSError):
            server.trigger.pull_trigger(lambda: _close_channels(server))
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> None:
        # waitress sets TCP_NODELAY on every accepted socket (Adjustments.socket_options); without it
        # Nagle's algorithm and delayed ACKs add ~40 ms to small keep-alive replies.
        self._server = waitress.create_server(
            self.app, host=self.host, port=self.port, threads=self.threads, ident="MultiTEL sandbox"
        )
        self.port = int(self._server.effective_port)


def run_forever(config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Run the sandbox in the foreground on the port the development config expects."""
    SandboxServer(config, host=host, port=port).run_forever()


def _close_channels(server: Any) -> None:
    """Runs in the server's loop thread: an empty socket map ends waitress's loop."""
    for channel in list(server._map.values()):
        # A connection flushes and drops its buffers in handle_close; the listening socket and
        # the trigger only need close (their handle_close would log "unhandled close event").
        with contextlib.suppress(OSError):
            channel.handle_close() if isinstance(channel, HTTPChannel) else channel.close()


def _read_body(environ: Environ) -> bytes | None:
    """The request body, or None when it is over BODY_MAX_BYTES."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > BODY_MAX_BYTES:
        return None
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _validate(form: dict[str, str]) -> dict[str, Any] | None:
    """The refusal envelope for an invalid send, or None when the form is fine."""
    for name, cause in (("from", 1001), ("to", 1002), ("text", 1003)):
        if not form.get(name, "").strip():
            return _refusal(400, f"'{name}' is required", cause)
    if not _PLAUSIBLE_NUMBER.fullmatch(_NUMBER_PUNCTUATION.sub("", form["to"])):
        return _refusal(400, "'to' is not a valid phone number", 1004)
    media = form.get("media")
    if media:
        try:
            image = base64.b64decode(media, validate=True)
        except (binascii.Error, ValueError):
            return _refusal(400, "'media' is not valid base64", 1005)
        if not image.startswith(_IMAGE_SIGNATURES):
            return _refusal(400, "'media' must be a JPEG or PNG image", 1005)
        if len(image) > MEDIA_MAX_BYTES:
            return _refusal(400, f"'media' is over {MEDIA_MAX_BYTES // 1024} KB", 1006)
    return None


def _envelope(code: int, msg: str, status: str, message: str, cause: int) -> dict[str, Any]:
    return {
        "status": {"code": str(code), "msg": msg},
        "response": {"status": status, "message": message, "causecode": cause},
    }


def _refusal(code: int, message: str, cause: int) -> dict[str, Any]:
    return _envelope(code, HTTPStatus(code).phrase, "Failed", message, cause)


def _success(message: SentMessage, price: Decimal) -> dict[str, Any]:
    return {
        "status": {"code": "200", "msg": ""},
        "response": {
            "status": "Success",
            "message": "Message queued",
            "causecode": 0,
            "uniqueid": message.unique_id,
            "cost": message.cost,
            "chars": 0,  # the real API's sample says 0 too
            "parts": message.parts,
            "permsg": price,
            "pid": message.pid,
        },
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # the real API sends numbers; shortest repr keeps 0.045 as 0.045
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _coerce(name: str, value: Any) -> Any:
    """A JSON value for a config field, converted to the field's type or ValueError."""
    if name in ("price_per_part", "mms_price"):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{name} must be a number") from None
    if name == "accounts":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("accounts must be an object of username: password")
        return {str(k): v for k, v in value.items()}
    if name in ("duplicate_callbacks", "out_of_order", "callbacks"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name in ("refuse_prefix", "callback_format"):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if name in ("latency_ms", "retry_after", "seed"):
        if value is None and name != "latency_ms":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)
