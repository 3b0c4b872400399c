"""Sends per second through the MultiTEL client into the sandbox, against the 1,000 sends/s limit.

The sandbox runs in its own process, as it does in development (`campaigns sandbox`) while RQ
workers send from theirs; both share this machine's cores. The judged figure is the product's
client (webapp.provider.multitel, requests) from 4 threads. A second phase drives the same sandbox with bare
http.client connections, which cost a fraction of the CPU per request, to show how much of the
time is the sandbox's own and how much is the client's. `--in-process` puts the sandbox in this
process instead, where the client threads and waitress share one GIL. `--quick` sends 2,000
messages per phase instead of 5,000: the same checks, in a fraction of the time.

    python bench/sandbox_throughput.py [--quick | --messages 5000] [--threads 4] [--in-process]
"""

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import requests

from webapp.provider.multitel import Credentials, MultitelClient, Outcome
from webapp.provider.sandbox import SandboxConfig, SandboxServer

LIMIT_SENDS_PER_SECOND = 1000.0
FULL_MESSAGES, QUICK_MESSAGES = 5000, 2000
RESULTS = Path(__file__).parent / "results" / "sandbox_throughput.json"
TEXT = "Spring sale: 20% off everything this weekend. Reply STOP to opt out"
SENDER, RECIPIENT = "+15550100000", "+15550100001"
WARM_UP_PER_THREAD = 50
AUTH = ("sandbox", "sandbox")


def serve_in_child(connection, server_threads: int) -> None:
    """Child process: run the sandbox until the parent says stop."""
    server = SandboxServer(SandboxConfig(seed=1), threads=server_threads).start()
    connection.send(server.url)
    connection.recv()
    server.stop()


def run_threads(threads: int, per_thread: int, send_one: Callable[[str], bool], prefix: str) -> dict:
    """Call send_one(reference) per_thread times from each thread; wall time, latencies, failures."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        barrier.wait()
        for number in range(per_thread):
            began = time.perf_counter()
            ok = send_one(f"{prefix}-{index}-{number}")
            latencies[index].append(time.perf_counter() - began)
            failures[index] += not ok

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    flat = [value for chunk in latencies for value in chunk]
    return {"elapsed": elapsed, "latencies": flat, "failures": sum(failures)}


def product_client_sender(url: str) -> tuple[Callable[[str], bool], Callable[[], None]]:
    client = MultitelClient(url, Credentials(*AUTH))

    def send_one(reference: str) -> bool:
        result = client.send(sender=SENDER, to=RECIPIENT, text=TEXT, reference=reference)
        return result.outcome is Outcome.ACCEPTED

    return send_one, client.close


def bare_http_sender(url: str) -> tuple[Callable[[str], bool], Callable[[], None]]:
    """One kept-alive http.client connection per thread: the least a Python client can do per send."""
    parts = urlsplit(url)
    local = threading.local()
    headers = {
        "Authorization": "Basic " + base64.b64encode(":".join(AUTH).encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }

    def send_one(reference: str) -> bool:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        body = urlencode({"from": SENDER, "to": RECIPIENT, "text": TEXT, "reference": reference})
        connection.request("POST", "/v3/sendsms", body=body, headers=headers)
        reply = connection.getresponse()
        data = json.loads(reply.read())
        return reply.status == 200 and data["status"]["code"] == "200" and data["response"]["status"] == "Success"

    return send_one, lambda: None


def measure(url: str, threads: int, messages: int, make_sender) -> dict:
    """Warm up, reset the sandbox, send, and check the sandbox recorded each reference once."""
    send_one, close = make_sender(url)
    try:
        run_threads(threads, WARM_UP_PER_THREAD, send_one, "warm-up")
        requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()
        run = run_threads(threads, messages // threads, send_one, "bench")
        recorded = requests.get(f"{url}/_sandbox/sends", timeout=30).json()
    finally:
        close()
    latencies = run["latencies"]
    sent = len(latencies)
    distinct = len({entry["reference"] for entry in recorded})
    return {
        "messages": sent,
        "seconds": round(run["elapsed"], 3),
        "sends_per_second": round(sent / run["elapsed"], 1),
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "not_accepted": run["failures"],
        "recorded_by_sandbox": len(recorded),
        "recorded_once_each": distinct == sent == len(recorded),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "load_average_1m_before": os.getloadavg()[0],
        "waitress": version("waitress"),
        "requests": version("requests"),
        "urllib3": version("urllib3"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, help=f"default {FULL_MESSAGES:,}, or {QUICK_MESSAGES:,} with --quick")
    parser.add_argument("--quick", action="store_true", help="the same checks on fewer messages")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--server-threads", type=int, default=8)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    args.messages = args.messages or (QUICK_MESSAGES if args.quick else FULL_MESSAGES)
    began = time.monotonic()
    machine = machine_info()

    child = server = None
    if args.in_process:
        server = SandboxServer(SandboxConfig(seed=1), threads=args.server_threads).start()
        url = server.url
    else:
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        child = context.Process(target=serve_in_child, args=(child_end, args.server_threads), daemon=True)
        child.start()
        url = parent_end.recv()
    try:
        client = measure(url, args.threads, args.messages, product_client_sender)
        bare = measure(url, args.threads, args.messages, bare_http_sender)
    finally:
        if server is not None:
            server.stop()
        if child is not None:
            parent_end.send("stop")
            child.join(timeout=10)

    client_ok = client["sends_per_second"] >= LIMIT_SENDS_PER_SECOND
    correct = client["not_accepted"] == 0 and client["recorded_once_each"]
    checks = {
        "sends_per_second": {"value": client["sends_per_second"], "limit": f">= {LIMIT_SENDS_PER_SECOND:.0f}",
                             "ok": client_ok},
        "not_accepted": {"value": client["not_accepted"], "limit": "== 0", "ok": client["not_accepted"] == 0},
        "recorded_once_each": {"value": client["recorded_once_each"], "limit": "== true",
                               "ok": client["recorded_once_each"]},
    }
    passed = all(check["ok"] for check in checks.values())
    sandbox = "in the client's process" if args.in_process else "in its own process"
    print(
        f"sandbox throughput: {client['messages']:,} sends from {args.threads} threads, sandbox "
        f"{sandbox}, {os.cpu_count()} CPUs, load {machine['load_average_1m_before']:.2f} before the run"
    )
    rows = [
        ("sends/s, webapp.provider.multitel", f"{client['sends_per_second']:,.0f}", LIMIT_SENDS_PER_SECOND, client_ok),
        ("  latency p50", f"{client['latency_p50_ms']:.2f} ms", None, None),
        ("  latency p99", f"{client['latency_p99_ms']:.2f} ms", None, None),
        ("  accepted, recorded once", f"{client['recorded_by_sandbox']:,}/{client['messages']:,}", None, correct),
        (
            "sends/s, bare http.client",
            f"{bare['sends_per_second']:,.0f}",
            LIMIT_SENDS_PER_SECOND,
            bare["sends_per_second"] >= LIMIT_SENDS_PER_SECOND,
        ),
        ("  latency p50", f"{bare['latency_p50_ms']:.2f} ms", None, None),
        ("  latency p99", f"{bare['latency_p99_ms']:.2f} ms", None, None),
    ]
    print(f"{'metric':<28}{'measured':>14}{'limit':>12}  result")
    for name, measured, limit, ok in rows:
        limit_text = f">= {limit:,.0f}" if limit else ""
        result = "" if ok is None else "pass" if ok else "FAIL"
        print(f"{name:<28}{measured:>14}{limit_text:>12}  {result}")
    print(f"overall: {'pass' if passed else 'FAIL'} (judged on webapp.provider.multitel; bare http.client is context)")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "sandbox_throughput",
        "pass": passed,
        "checks": checks,
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.monotonic() - began, 1),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "limit": {"sends_per_second": LIMIT_SENDS_PER_SECOND, "judged_on": "webapp_multitel"},
        "setup": {"client_threads": args.threads, "server_threads": args.server_threads, "sandbox": sandbox},
        "figures": {"webapp_multitel": client, "bare_http_client": bare},
        "machine": machine,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
