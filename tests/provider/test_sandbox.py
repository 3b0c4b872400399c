"""The sandbox provider over real HTTP: the API contract, callbacks, fault injection and control endpoints."""

import base64
import json
import logging
import socket
import threading
import time
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from webapp.provider.delivery_reports import DeliveryState, parse_callback
from webapp.provider.multitel import Credentials, MultitelClient, Outcome, Timeouts
from webapp.provider.sandbox import MEDIA_MAX_BYTES, SandboxConfig, SandboxServer, create_sandbox_app

AUTH = ("sandbox", "sandbox")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
FAILED_WORDS = {"UNDELIV", "REJECTD", "EXPIRED"}


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer(SandboxConfig(callback_delay=0.05, seed=3)) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox):
    sandbox.state.reset()
    yield
    sandbox.state.reset()


@pytest.fixture
def client(sandbox):
    client = MultitelClient(sandbox.url, Credentials(*AUTH), timeouts=Timeouts(1.0, 3.0))
    yield client
    client.close()


class Receiver:
    """A notify URL on 127.0.0.1 that keeps every POST (content type and body); can fail the first few."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[tuple[str, bytes]] = []
        self.failures_left = fail_first
        self.cv = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.cv:
                    failing = receiver.failures_left > 0
                    receiver.failures_left -= 1
                    if not failing:
                        receiver.posts.append((self.headers.get("Content-Type", ""), body))
                        receiver.cv.notify_all()
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 3.0) -> list[tuple[str, bytes]]:
        with self.cv:
            self.cv.wait_for(lambda: len(self.posts) >= count, timeout)
            return list(self.posts)

    def parsed(self) -> list:
        return [parse_callback(body, content_type) for content_type, body in self.posts]


def post_send(sandbox, auth=AUTH, **form):
    fields = {"from": "+14155550100", "to": "+14155550123", "text": "Hello", **form}
    return requests.post(f"{sandbox.url}/v3/sendsms", data=fields, auth=auth, timeout=5)


def send(client, **fields):
    message = {"sender": "+14155550100", "to": "+14155550123", "text": "Hello", "reference": "ref-1"}
    return client.send(**{**message, **fields})


def finals(sandbox) -> list[str]:
    return [entry["final_status"] for entry in requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()]


# --- the API contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("sandbox", "wrong"), ("nobody", "sandbox")], ids=["none", "password", "user"])
def test_sendsms_requires_basic_auth(sandbox, auth):
    """No credentials or wrong ones get 401 with a Basic challenge, and nothing is queued."""
    reply = post_send(sandbox, auth=auth)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert reply.json()["status"]["code"] == "401"
    assert sandbox.state.sends_for() == []


def test_success_reply_has_the_real_envelope(sandbox):
    """A good send answers the documented envelope: string code "200", Success, numbers, chars 0."""
    reply = post_send(sandbox, text="Hello there", reference="r1")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    data = json.loads(reply.content, parse_float=Decimal)
    assert data["status"] == {"code": "200", "msg": ""}
    response = data["response"]
    assert set(response) == {
        "status",
        "message",
        "causecode",
        "uniqueid",
        "cost",
        "chars",
        "parts",
        "permsg",
        "pid",
    }
    assert response["status"] == "Success" and response["causecode"] == 0 and response["chars"] == 0
    assert response["parts"] == 1 and response["cost"] == Decimal("0.015") == response["permsg"]
    assert response["pid"].endswith(response["uniqueid"])


@pytest.mark.parametrize(
    ("form", "cause"),
    [
        ({"from": ""}, 1001),
        ({"to": ""}, 1002),
        ({"text": ""}, 1003),
        ({"to": "hello"}, 1004),
        ({"to": "123"}, 1004),
        ({"media": "***not base64***"}, 1005),
        ({"media": base64.b64encode(b"GIF89a" + b"\x00" * 10).decode()}, 1005),
        ({"media": base64.b64encode(PNG + b"\x00" * MEDIA_MAX_BYTES).decode()}, 1006),
    ],
    ids=["no-from", "no-to", "no-text", "to-words", "to-short", "media-base64", "media-gif", "media-too-big"],
)
def test_invalid_sends_are_refused_with_the_envelope(sandbox, form, cause):
    """Validation failures are 400 with status.code "400", response.status Failed and a causecode."""
    reply = post_send(sandbox, **form)
    assert reply.status_code == 400
    data = reply.json()
    assert data["status"]["code"] == "400"
    assert data["response"]["status"] == "Failed" and data["response"]["causecode"] == cause
    assert data["response"]["message"]
    assert sandbox.state.sends_for() == []


def test_png_media_is_accepted_and_its_size_recorded(sandbox):
    """A base64 PNG under the cap is accepted; the record keeps its decoded size."""
    reply = post_send(sandbox, media=base64.b64encode(PNG).decode(), reference="mms-1")
    assert reply.status_code == 200
    (entry,) = requests.get(f"{sandbox.url}/_sandbox/sends", params={"reference": "mms-1"}, timeout=5).json()
    assert entry["media_bytes"] == len(PNG)


def test_unknown_paths_and_methods(sandbox):
    """An unknown path is 404; GET on the send endpoint is 405."""
    assert requests.get(f"{sandbox.url}/nope", timeout=5).status_code == 404
    assert requests.get(f"{sandbox.url}/v3/sendsms", timeout=5).status_code == 405


def test_tcp_nodelay_is_on_for_accepted_connections(sandbox, client):
    """waitress sets TCP_NODELAY on every accepted socket, so small replies are not held by Nagle."""
    assert send(client).accepted
    channels = list(sandbox._server.active_channels.values())
    assert channels
    for channel in channels:
        assert channel.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_latency_is_added_to_each_answer(sandbox, client):
    """latency_ms delays the reply by at least that much."""
    sandbox.state.update_config({"latency_ms": 80})
    started = time.monotonic()
    assert send(client).accepted
    assert time.monotonic() - started >= 0.08


def test_config_rejects_impossible_rates():
    """A rate outside 0..1, or error rates adding up past 1, is refused at construction."""
    with pytest.raises(ValueError, match="delivered_rate"):
        SandboxConfig(delivered_rate=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        SandboxConfig(error_429_rate=0.6, error_503_rate=0.6)


def test_create_sandbox_app_is_a_wsgi_callable_with_state():
    """The app factory returns a WSGI callable whose state starts empty with the given config."""
    app = create_sandbox_app(SandboxConfig(price_per_part=Decimal("0.02")))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/_sandbox/sends", "QUERY_STRING": ""}
    seen = []
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    assert seen == ["200 OK"] and json.loads(body) == []
    assert app.state.config.price_per_part == Decimal("0.02") and app.state.sends == []
    app.close()


# --- callbacks -----------------------------------------------------------------------------------


def test_callbacks_post_interim_then_final_as_a_form(sandbox, client):
    """With a notify URL, the sandbox form-posts ENROUTE then DELIVRD carrying every documented field."""
    sandbox.state.update_config({"delivered_rate": 1.0})
    with Receiver() as receiver:
        result = send(client, notify_url=receiver.url, reference="cb-1")
        posts = receiver.wait_for(2)
        time.sleep(0.1)  # and nothing more arrives
        assert len(receiver.posts) == 2
    assert all(content_type == "application/x-www-form-urlencoded" for content_type, _ in posts)
    interim, final = receiver.parsed()
    assert set(interim.fields) == {
        "uniqueid",
        "reference",
        "status",
        "causecode",
        "cost",
        "parts",
        "timestamp",
    }
    assert (interim.raw_status, interim.state) == ("ENROUTE", DeliveryState.SENT)
    assert (final.raw_status, final.state, final.cause_code) == ("DELIVRD", DeliveryState.DELIVERED, "0")
    for callback in (interim, final):
        assert callback.unique_id == result.unique_id and callback.reference == "cb-1"
        assert callback.cost == result.cost and callback.parts == result.parts
        assert callback.fields["timestamp"].endswith("Z")


def test_callbacks_can_be_json(sandbox, client):
    """callback_format json posts application/json bodies with the same fields."""
    sandbox.state.update_config({"callback_format": "json", "delivered_rate": 1.0})
    with Receiver() as receiver:
        result = send(client, notify_url=receiver.url)
        posts = receiver.wait_for(2)
    assert [content_type for content_type, _ in posts] == ["application/json"] * 2
    final = json.loads(posts[1][1])
    assert final["status"] == "DELIVRD" and final["uniqueid"] == result.unique_id and final["causecode"] == 0


def test_failed_finals_use_smpp_words_and_causecodes(sandbox, client):
    """With delivered_rate 0 every final is UNDELIV, REJECTD or EXPIRED with a non-zero causecode."""
    sandbox.state.update_config({"delivered_rate": 0.0})
    with Receiver() as receiver:
        for number in range(3):
            send(client, notify_url=receiver.url, reference=f"f-{number}")
        receiver.wait_for(6)
    final = [c for c in receiver.parsed() if c.raw_status != "ENROUTE"]
    assert len(final) == 3
    assert all(c.raw_status in FAILED_WORDS and c.state is DeliveryState.FAILED for c in final)
    assert all(c.cause_code not in (None, "0") for c in final)


def test_delivered_rate_is_seeded_and_reproducible(sandbox, client):
    """With a seed, about delivered_rate of finals are DELIVRD, and the same seed gives the same sequence."""
    runs = []
    for _ in range(2):
        sandbox.state.reset()
        sandbox.state.update_config({"seed": 42, "delivered_rate": 0.5})
        for number in range(120):
            send(client, reference=f"s-{number}")
        runs.append(finals(sandbox))
    assert runs[0] == runs[1]
    delivered = runs[0].count("DELIVRD")
    assert 36 <= delivered <= 84
    assert set(runs[0]) - {"DELIVRD"} <= FAILED_WORDS


def test_duplicate_callbacks_repeat_each_status(sandbox, client):
    """duplicate_callbacks posts every status twice with identical bodies."""
    sandbox.state.update_config({"duplicate_callbacks": True, "delivered_rate": 1.0})
    with Receiver() as receiver:
        send(client, notify_url=receiver.url)
        posts = receiver.wait_for(4)
    assert len(posts) == 4
    bodies = Counter(body for _, body in posts)
    assert sorted(bodies.values()) == [2, 2]
    assert Counter(c.raw_status for c in receiver.parsed()) == {"ENROUTE": 2, "DELIVRD": 2}


def test_out_of_order_sends_the_final_first(sandbox, client):
    """out_of_order posts the final status first, though its timestamp still says it happened last."""
    sandbox.state.update_config({"out_of_order": True, "delivered_rate": 1.0})
    with Receiver() as receiver:
        send(client, notify_url=receiver.url)
        receiver.wait_for(2)
    final, interim = receiver.parsed()
    assert [final.raw_status, interim.raw_status] == ["DELIVRD", "ENROUTE"]
    assert interim.fields["timestamp"] < final.fields["timestamp"]  # when each happened, in order


def test_failed_callback_posts_are_retried(sandbox, client):
    """A notify URL answering 500 is retried, so both statuses still arrive."""
    sandbox.state.update_config({"delivered_rate": 1.0})
    with Receiver(fail_first=2) as receiver:
        send(client, notify_url=receiver.url)
        receiver.wait_for(2)
    assert sorted(c.raw_status for c in receiver.parsed()) == ["DELIVRD", "ENROUTE"]
    attempts = list(sandbox.state.callbacks.attempts)
    assert [a.http_status for a in attempts].count(500) == 2
    assert max(a.attempt for a in attempts) == 2


def test_callbacks_give_up_after_a_few_attempts_and_log_it(sandbox, client, caplog):
    """A notify URL that always fails gets three attempts per status, then a warning in the log."""
    with Receiver(fail_first=1000) as receiver:
        send(client, notify_url=receiver.url, reference="gone")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(sandbox.state.callbacks.attempts) < 6:
            time.sleep(0.02)
        time.sleep(0.05)
    attempts = list(sandbox.state.callbacks.attempts)
    assert len(attempts) == 6 and max(a.attempt for a in attempts) == 3
    assert caplog.text.count("gave up on callback") == 2


# --- faults and control endpoints ----------------------------------------------------------------


def test_fault_rates_are_seeded(sandbox, client):
    """error_429_rate 0.3 with a seed refuses roughly 30% with 429 and records only the rest."""
    sandbox.state.update_config({"seed": 5, "error_429_rate": 0.3})
    outcomes = Counter(send(client, reference=f"x-{n}").outcome for n in range(100))
    assert 15 <= outcomes[Outcome.NOT_SENT] <= 45
    assert outcomes[Outcome.ACCEPTED] + outcomes[Outcome.NOT_SENT] == 100
    assert len(sandbox.state.sends_for()) == outcomes[Outcome.ACCEPTED]


def test_sends_endpoint_lists_accepted_sends_and_filters_by_reference(sandbox, client):
    """GET /_sandbox/sends lists accepted sends oldest first; ?reference= narrows it to one message."""
    results = [send(client, reference=ref, text=f"text {ref}") for ref in ("a", "b", "c")]
    sandbox.state.update_config({"refuse_prefix": "+1"})
    send(client, reference="refused")
    everything = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()
    assert [e["reference"] for e in everything] == ["a", "b", "c"]
    (only_b,) = requests.get(f"{sandbox.url}/_sandbox/sends", params={"reference": "b"}, timeout=5).json()
    assert only_b["uniqueid"] == results[1].unique_id
    assert only_b["text"] == "text b" and only_b["from"] == "+14155550100" and only_b["to"] == "+14155550123"
    assert only_b["parts"] == 1 and only_b["cost"] == "0.015" and only_b["time"]


def test_config_endpoint_changes_behaviour_at_run_time(sandbox, client):
    """POST /_sandbox/config switches a 503 on for the next send; GET shows it; bad input is a 400."""
    reply = requests.post(
        f"{sandbox.url}/_sandbox/config", json={"error_503_rate": 1, "price_per_part": "0.02"}, timeout=5
    )
    assert reply.status_code == 200 and reply.json()["error_503_rate"] == 1.0
    assert requests.get(f"{sandbox.url}/_sandbox/config", timeout=5).json()["price_per_part"] == "0.02"
    result = send(client)
    assert result.http_status == 503 and result.outcome is Outcome.NOT_SENT and result.retry_after == 1.0
    for bad in ({"nonsense": 1}, {"delivered_rate": 2}, {"duplicate_callbacks": "yes"}, [1, 2]):
        reply = requests.post(f"{sandbox.url}/_sandbox/config", json=bad, timeout=5)
        assert reply.status_code == 400 and reply.json()["error"]
    shown = requests.get(f"{sandbox.url}/_sandbox/config", timeout=5).json()
    assert shown["accounts"] == ["sandbox"]  # account names only, never their passwords


def test_reset_forgets_sends_and_restores_the_starting_config(sandbox, client):
    """POST /_sandbox/reset empties the record and undoes run-time config changes."""
    send(client)
    requests.post(f"{sandbox.url}/_sandbox/config", json={"error_429_rate": 1}, timeout=5)
    assert requests.post(f"{sandbox.url}/_sandbox/reset", timeout=5).json() == {"reset": True}
    assert requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json() == []
    assert send(client).accepted


def test_each_reference_is_recorded_exactly_once(sandbox, client):
    """100 distinct references sent from 4 threads appear exactly once each in /_sandbox/sends."""
    results = {}

    def work(thread: int) -> None:
        for number in range(25):
            reference = f"once-{thread}-{number}"
            results[reference] = send(client, reference=reference)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.accepted for result in results.values())
    recorded = requests.get(f"{sandbox.url}/_sandbox/sends", timeout=5).json()
    counts = Counter(entry["reference"] for entry in recorded)
    assert set(counts) == set(results) and set(counts.values()) == {1}
    assert {e["uniqueid"] for e in recorded} == {r.unique_id for r in results.values()}


def test_stop_releases_a_hanging_request_promptly():
    """A request held by hang_seconds does not keep stop() waiting for the full hang."""
    server = SandboxServer(SandboxConfig(hang_rate=1.0, hang_seconds=30)).start()
    client = MultitelClient(server.url, Credentials(*AUTH), timeouts=Timeouts(1.0, 0.2))
    assert send(client, reference="h").outcome is Outcome.AMBIGUOUS
    assert len(server.state.sends_for("h")) == 1
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/_sandbox/sends", timeout=1)


def test_sandbox_logs_nothing_at_warning_for_a_normal_send(sandbox, client, caplog):
    """An ordinary accepted send is quiet: no warnings from the sandbox or the client."""
    caplog.set_level(logging.WARNING)
    assert send(client).accepted
    assert caplog.records == []


def test_the_sandbox_bills_with_its_own_count_of_parts():
    """Its part counter is a separate implementation, so comparing estimates with bills proves something."""
    import ast
    from pathlib import Path

    import webapp.provider.sandbox as sandbox_module

    tree = ast.parse(Path(sandbox_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name and name.endswith("segments") for name in imported)


@pytest.mark.parametrize("seed", range(5))
def test_billed_parts_agree_with_the_estimator_on_random_texts(seed):
    """Two independent implementations agree on texts built from the characters that trip counters up."""
    import random

    from webapp.provider.sandbox_billing import billed_parts
    from webapp.provider.segments import measure

    alphabet = ["a", "Z", "7", " ", "€", "[", "|", "^", "é", "ç", "’", "—", "…", "\u00a0", "😀", "🇫🇷", "\n", "£", "`"]
    rng = random.Random(seed)
    for _ in range(400):
        gsm_only = rng.random() < 0.5
        pool = [c for c in alphabet if c in "aZ7 €[|^é\n£"] if gsm_only else alphabet
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 480)))
        assert billed_parts(text) == measure(text).parts, repr(text)


def test_an_mms_is_billed_per_message_at_the_mms_price():
    """The sandbox charges an MMS one message at its own MMS price, whatever the text length."""
    from webapp.provider.sandbox_billing import billed_cost

    assert billed_cost("x" * 400, Decimal("0.015"), media=True, mms_price=Decimal("0.05")) == (1, Decimal("0.05"))
    assert billed_cost("x" * 400, Decimal("0.015")) == (3, Decimal("0.045"))
