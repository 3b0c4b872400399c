"""Delivery callbacks per second into the app under gunicorn on PostgreSQL, beside a no-op Flask endpoint.

Issue 11, item 7 (first half). One run, a fresh PostgreSQL database (the tally triggers on `message`
included), the app under gunicorn as `campaigns serve` runs it (2 workers x 8 threads), and a load
generator of 2 processes x 4 threads: 8 keep-alive connections posting at once.
  1. callbacks: notify callbacks for messages that exist (a campaign's, accepted or unknown), in the
     wire styles the parser reads (form as the sandbox posts them, flat JSON, GET query strings): an
     interim "sent" and a final delivered (DELIVRD) or failed (UNDELIV) for most, a few posted final
     first, a tenth repeated later, some matched by reference and some by uniqueid alone, a few whose
     final report bills 2 parts where the send reply said 1;
  2. no-op: the same requests (same bodies, same connections) to a Flask view that does nothing, added
     to the app by this script's own factory wrapper (bench_app), in turn with the callbacks (no-op,
     callbacks, no-op, ... in ROUNDS rounds), so a shared machine whose load drifts weighs on both alike.
Goal: callbacks/s >= 0.5 of no-op/s, with nothing lost: stored callback rows == callbacks posted, every
answer 200, every message at the status and billed cost its callbacks imply, every disagreeing report
flagged.

    python bench/callback_ingest.py [--quick] [--server postgresql://postgres@127.0.0.1:5432/postgres]
                                    [--redis redis://127.0.0.1:6379/11]
"""

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import queue
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import free_port, stop_group  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "callback_ingest.json"
RATIO_LIMIT = 0.5
PROCESSES, THREADS = 2, 4  # 8 connections posting at once
WEB_WORKERS, WEB_THREADS = 2, 8
FULL = {"messages": 25_000}
QUICK = {"messages": 4_000}
ROUNDS = 3  # the callbacks in three parts, each between two parts of the no-op requests
WARM_MESSAGES = 100  # posted before timing starts: token caches, connection pools, gunicorn threads
NOOP_PATH = "/_bench/noop"
REPLY_COST, REPLY_PARTS = Decimal("0.015"), 1
OTHER_COST, OTHER_PARTS = Decimal("0.030"), 2  # what a disagreeing final report bills


def bench_app():
    """The product's app plus a no-op view: the floor a callback is measured against (gunicorn loads this)."""
    from webapp import create_app
    from webapp.extensions import csrf

    app = create_app()

    def noop():
        return "OK", 200, {"Content-Type": "text/plain"}

    app.add_url_rule(NOOP_PATH, "bench_noop", noop, methods=["GET", "POST"])
    csrf.exempt(noop)
    return app


# --- the data and the callbacks to post -------------------------------------------------------------


def make_messages(app, count: int) -> dict:
    """A team, a campaign and `count` + WARM_MESSAGES messages, bulk-inserted; returns what the plan needs."""
    from sqlalchemy import insert, select

    from webapp.extensions import db
    from webapp.models import Campaign, CampaignStatus, Message, MessageKind, MessageStatus, Team
    from webapp.provider.segments import Encoding

    rng = random.Random(11)
    with app.app_context():
        db.create_all()
        team = Team(name="Bench callbacks")
        db.session.add(team)
        db.session.flush()
        campaign = Campaign(team_id=team.id, name="Bench", body="Hi", status=CampaignStatus.SENDING)
        db.session.add(campaign)
        db.session.commit()
        rows = []
        for number in range(count + WARM_MESSAGES):
            rows.append({
                "team_id": team.id, "campaign_id": campaign.id, "kind": MessageKind.CAMPAIGN,
                "phone": f"+1415{number:07d}", "sender": "+14155550100", "text": "Hi", "encoding": Encoding.GSM7,
                "parts": REPLY_PARTS, "estimated_cost": REPLY_COST, "reference": f"ref-{number:08d}",
                "unique_id": f"uid-{number:08d}", "reply_parts": REPLY_PARTS, "reply_cost": REPLY_COST,
                "billed_parts": REPLY_PARTS, "billed_cost": REPLY_COST,
                "status": MessageStatus.UNKNOWN if rng.random() < 0.15 else MessageStatus.ACCEPTED,
            })
        for start in range(0, len(rows), 5_000):
            db.session.execute(insert(Message), rows[start:start + 5_000])
        db.session.commit()
        ids = db.session.execute(select(Message.reference, Message.id).where(Message.team_id == team.id)).all()
        return {"team_id": team.id, "token": team.callback_token, "campaign_id": campaign.id,
                "ids": dict(ids)}


def plan(team_id: int, token: str, count: int, first: int = 0, seed: int = 7) -> dict:
    """The callbacks for messages first..first+count-1, split over the 8 connections, and what they imply.

    A message's callbacks all go through one connection, in order (a twentieth final first), so its
    status is what they say whatever the other connections do; a repeat goes later on the same connection.
    A final report billing 2 parts (3%) is what the message is billed, whatever order the others came in."""
    rng = random.Random(seed)
    path = f"/callbacks/multitel/{team_id}/{token}"
    slices: list[list[tuple]] = [[] for _ in range(PROCESSES * THREADS)]
    repeats: list[list[tuple]] = [[] for _ in range(PROCESSES * THREADS)]
    expected: dict[str, tuple[str, Decimal]] = {}
    disagreeing = 0  # reports whose figures differ from the send reply's: each must be flagged
    for number in range(first, first + count):
        reference, unique_id = f"ref-{number:08d}", f"uid-{number:08d}"
        draw = rng.random()
        final, final_status = (("DELIVRD", "delivered") if draw < 0.80 else ("UNDELIV", "undelivered")
                               if draw < 0.92 else (None, "accepted"))
        other = final is not None and rng.random() < 0.03
        matched_by = reference if rng.random() < 0.5 else None  # else by uniqueid alone
        reports = [("ENROUTE", REPLY_COST, REPLY_PARTS, False)]
        if final:
            reports.append((final, OTHER_COST, OTHER_PARTS, True) if other else (final, REPLY_COST, REPLY_PARTS, False))
            if rng.random() < 0.05:
                reports.reverse()
        if rng.random() < 0.10:
            reports.append(rng.choice(reports))
        lane = number % len(slices)
        for position, (status, cost, parts, differs) in enumerate(reports):
            request = _request(path, rng, unique_id, matched_by, status, cost, parts)
            (repeats if position == 2 else slices)[lane].append(request)
            disagreeing += differs
        expected[reference] = (final_status, OTHER_COST if other else REPLY_COST)
    for lane, late in zip(slices, repeats, strict=True):
        for request in late:  # somewhere in the second half of the connection's run
            lane.insert(rng.randrange(len(lane) // 2, len(lane) + 1), request)
    return {"slices": slices, "expected": expected, "disagreeing": disagreeing,
            "posted": sum(len(lane) for lane in slices)}


def _request(path: str, rng: random.Random, unique_id: str, reference: str | None, status: str, cost: Decimal,
             parts: int) -> tuple:
    """(method, path, content type, body) in one of the wire styles the parser reads."""
    fields = {"uniqueid": unique_id, "reference": reference or "", "status": status, "causecode": "1"
              if status == "UNDELIV" else "0", "cost": str(cost), "parts": str(parts),
              "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")}
    if not reference:
        del fields["reference"]
    draw = rng.random()
    if draw < 0.7:  # as the sandbox posts them
        return ("POST", path, "application/x-www-form-urlencoded", urlencode(fields).encode())
    if draw < 0.9:
        body = {"UniqueId": unique_id, "Status": status, "Cost": float(cost), "Parts": parts}
        if reference:
            body["Reference"] = reference
        return ("POST", path, "application/json", json.dumps(body).encode())
    return ("GET", f"{path}?{urlencode(fields)}", None, b"")


# --- the load generator -----------------------------------------------------------------------------


def post_process(port: int, slices: list[list[tuple]], path_override: str | None, barrier, results) -> None:
    """Child process: one thread and keep-alive connection per slice, all starting at the barrier."""
    start = threading.Barrier(len(slices) + 1)
    statuses: Counter = Counter()
    latencies: list[float] = []
    lock = threading.Lock()

    def work(requests: list[tuple]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        start.wait()
        mine, times = Counter(), []
        for method, path, content_type, body in requests:
            if path_override:
                method, path = "POST", path_override
            headers = {"Content-Type": content_type} if content_type else {}
            began = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - began)
            mine[response.status] += 1
        connection.close()
        with lock:
            statuses.update(mine)
            latencies.extend(times)

    threads = [threading.Thread(target=work, args=(requests,)) for requests in slices]
    for thread in threads:
        thread.start()
    barrier.wait()
    start.wait()
    began = os.times()
    for thread in threads:
        thread.join()
    ended = os.times()
    latencies.sort()
    results.put({"statuses": dict(statuses), "count": len(latencies),
                 "cpu_seconds": ended.user - began.user + ended.system - began.system,
                 "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
                 "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None})


def run_load(port: int, slices: list[list[tuple]], path_override: str | None = None,
             watch: "CpuWatch | None" = None) -> dict:
    """Post every slice at once from PROCESSES processes; requests per second from the common start, and
    (with `watch`) the CPU the app, PostgreSQL and the load generator spent per request meanwhile."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    per_process = [slices[n::PROCESSES] for n in range(PROCESSES)]
    processes = [context.Process(target=post_process, args=(port, mine, path_override, barrier, results))
                 for mine in per_process]
    for process in processes:
        process.start()
    barrier.wait()
    before = watch.sample() if watch else None
    began = time.perf_counter()
    outcomes = []
    while len(outcomes) < len(processes):  # a load process that died says so instead of hanging the run
        try:
            outcomes.append(results.get(timeout=1))
        except queue.Empty:
            dead = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load generator process failed (exit {dead[0]})") from None
    seconds = time.perf_counter() - began
    after = watch.sample() if watch else None
    for process in processes:
        process.join(timeout=30)
    statuses: Counter = Counter()
    for outcome in outcomes:
        statuses.update({int(code): n for code, n in outcome["statuses"].items()})
    count = sum(outcome["count"] for outcome in outcomes)
    figures = {"requests": count, "seconds": round(seconds, 3), "per_second": round(count / seconds, 1),
               "statuses": dict(statuses), "p50_ms": round(max(o["p50_ms"] for o in outcomes), 2),
               "p99_ms": round(max(o["p99_ms"] for o in outcomes), 2)}
    if watch:
        per_request = {name: round((after[name] - before[name]) / count * 1e6) for name in before}
        per_request["load_generator"] = round(sum(o["cpu_seconds"] for o in outcomes) / count * 1e6)
        figures["cpu_us_per_request"] = per_request
    return figures


class CpuWatch:
    """CPU seconds so far of the app's gunicorn processes, the PostgreSQL backends of the bench's database,
    and the whole machine (busy, and idle), read from /proc (Linux)."""

    def __init__(self, web_pid: int, database: str):
        self.web_pid = web_pid
        self.database = database
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict:
        app, postgres = 0, 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            used = int(stat[11]) + int(stat[12])
            if int(pid) == self.web_pid or int(stat[1]) == self.web_pid:  # gunicorn and its workers
                app += used
            elif cmdline.startswith("postgres:") and f" {self.database} " in cmdline:
                postgres += used
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return {"app": app / self.tick, "postgres_backends": postgres / self.tick,
                "machine_busy": (sum(fields) - idle) / self.tick}


def _part(slices: list[list[tuple]], number: int, parts: int) -> list[list[tuple]]:
    """The number-th of `parts` consecutive pieces of every connection's requests (order kept)."""
    return [requests[len(requests) * number // parts: len(requests) * (number + 1) // parts] for requests in slices]


def _combined(rounds: list[dict]) -> dict:
    """Several runs as one: requests over seconds, the worst percentiles, CPU per request weighted by count."""
    requests, seconds = sum(r["requests"] for r in rounds), sum(r["seconds"] for r in rounds)
    statuses: Counter = Counter()
    for r in rounds:
        statuses.update(r["statuses"])
    cpu = {name: round(sum(r["cpu_us_per_request"][name] * r["requests"] for r in rounds) / requests)
           for name in rounds[0]["cpu_us_per_request"]}
    return {"requests": requests, "seconds": round(seconds, 3), "per_second": round(requests / seconds, 1),
            "statuses": dict(statuses), "p50_ms": max(r["p50_ms"] for r in rounds),
            "p99_ms": max(r["p99_ms"] for r in rounds), "cpu_us_per_request": cpu}


# --- gunicorn ---------------------------------------------------------------------------------------


def start_web(env: dict, port: int, log: Path) -> subprocess.Popen:
    """The app (with the no-op view) under gunicorn, in a process group of its own; waits until it answers."""
    command = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}",
               "--workers", str(WEB_WORKERS), "--worker-class", "gthread", "--threads", str(WEB_THREADS),
               "--keep-alive", "30", "--pythonpath", str(Path(__file__).parent), "callback_ingest:bench_app()"]
    web = subprocess.Popen(command, env=env, start_new_session=True, stdout=log.open("a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {web.returncode}: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return web
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("gunicorn did not answer /healthz within 60 s")


# --- what was stored --------------------------------------------------------------------------------


def verify(app, team_id: int, planned: dict, warm_posted: int) -> dict:
    """Stored rows, unmatched rows, flags, and messages whose status or billed cost is not what was posted."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Message, ProviderCallback
    from webapp.services.callbacks import REPLY_DISAGREES

    with app.app_context():
        def count(*where) -> int:
            return db.session.scalar(select(func.count()).select_from(ProviderCallback)
                                     .where(ProviderCallback.team_id == team_id, *where))

        stored = count()
        unmatched = count(ProviderCallback.message_id.is_(None))
        flagged = count(ProviderCallback.problem.is_not(None))
        disagreeing = count(ProviderCallback.problem == REPLY_DISAGREES)
        rows = db.session.execute(select(Message.reference, Message.status, Message.billed_cost)
                                  .where(Message.team_id == team_id)).all()
    wrong = [(reference, str(status), str(cost)) for reference, status, cost in rows
             if reference in planned["expected"] and (str(status), cost) != planned["expected"][reference]]
    return {"stored": stored, "posted": planned["posted"] + warm_posted, "unmatched": unmatched,
            "flagged": flagged, "flagged_disagreeing": disagreeing, "wrong_messages": len(wrong),
            "wrong_examples": wrong[:5], "statuses": dict(Counter(str(status) for _, status, _ in rows))}


# --- the run ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same checks on 4,000 messages, in under 2 minutes")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    started = time.monotonic()
    load_before = os.getloadavg()[0]

    from tests.conftest import _fresh_postgres_database
    from webapp import create_app
    from webapp.extensions import db

    database_url, drop = _fresh_postgres_database(options.server)
    instance = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    secret = secrets.token_urlsafe(48)
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=options.redis, SECRET_KEY=secret,
               INSTANCE_PATH=str(instance), PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", APP_ENV="development",
               CALLBACK_PRUNE_EVERY=str(10**9))
    env.pop("ENCRYPTION_KEY", None)
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": options.redis, "SECRET_KEY": secret,
                      "INSTANCE_PATH": str(instance)})
    web = None
    try:
        print(f"creating {sizes['messages']:,} messages", flush=True)
        data = make_messages(app, sizes["messages"])
        warm = plan(data["team_id"], data["token"], WARM_MESSAGES, first=sizes["messages"], seed=3)
        planned = plan(data["team_id"], data["token"], sizes["messages"])
        web = start_web(env, port, instance / "web.log")
        print(f"warming up: {warm['posted']} callbacks and as many no-op requests", flush=True)
        run_load(port, warm["slices"])
        run_load(port, warm["slices"], NOOP_PATH)
        watch = CpuWatch(web.pid, database_url.rsplit("/", 1)[1])
        print(f"{ROUNDS} rounds of no-op and callbacks in turn, then no-op again "
              f"({planned['posted']:,} of each, {PROCESSES * THREADS} connections)", flush=True)
        callback_rounds, noop_rounds = [], []
        for number in range(ROUNDS):  # a machine whose load drifts weighs on both alike
            noop_rounds.append(run_load(port, _part(planned["slices"], number, ROUNDS + 1), NOOP_PATH, watch))
            callback_rounds.append(run_load(port, _part(planned["slices"], number, ROUNDS), watch=watch))
        noop_rounds.append(run_load(port, _part(planned["slices"], ROUNDS, ROUNDS + 1), NOOP_PATH, watch))
        callbacks, noop = _combined(callback_rounds), _combined(noop_rounds)
        stop_group(web)
        web = None
        stored = verify(app, data["team_id"], planned, warm["posted"])
    finally:
        if web is not None:
            stop_group(web)
        with app.app_context():
            db.engine.dispose()
        drop()
        shutil.rmtree(instance, ignore_errors=True)

    noop_requests, noop_rate = noop["requests"], noop["per_second"]
    ratio = callbacks["per_second"] / noop_rate
    not_ok = sum(n for code, n in callbacks["statuses"].items() if code != 200)
    lost = stored["posted"] - stored["stored"]
    checks = {
        "callbacks_over_noop": {"value": round(ratio, 3), "limit": f">= {RATIO_LIMIT}", "ok": ratio >= RATIO_LIMIT},
        "lost_callbacks": {"value": lost, "limit": "== 0", "ok": lost == 0},
        "answers_not_200": {"value": not_ok, "limit": "== 0", "ok": not_ok == 0},
        "messages_not_as_expected": {"value": stored["wrong_messages"], "limit": "== 0",
                                     "ok": stored["wrong_messages"] == 0},
        "unmatched_callbacks": {"value": stored["unmatched"], "limit": "== 0", "ok": stored["unmatched"] == 0},
        "disagreements_flagged": {"value": stored["flagged_disagreeing"],
                                  "limit": f"== {planned['disagreeing'] + warm['disagreeing']}",
                                  "ok": stored["flagged_disagreeing"] == planned["disagreeing"] + warm["disagreeing"]},
    }
    passed = all(check["ok"] for check in checks.values())
    mode = "quick" if options.quick else "full"
    seconds = time.monotonic() - started
    print(f"\nCallback ingest ({mode}), PostgreSQL, gunicorn {WEB_WORKERS} workers x {WEB_THREADS} threads, "
          f"{PROCESSES * THREADS} connections, {os.cpu_count()} CPUs, load {load_before:.2f} before the run\n")
    rows = [
        (f"callbacks ({callbacks['requests']:,})", f"{callbacks['per_second']:,.0f}/s",
         f"p50 {callbacks['p50_ms']} ms, p99 {callbacks['p99_ms']} ms", None),
        (f"no-op Flask endpoint ({noop_requests:,}, in turn with them)", f"{noop_rate:,.0f}/s",
         f"p50 {noop['p50_ms']} ms, p99 {noop['p99_ms']} ms", None),
        ("callbacks / no-op", f"{ratio:.2f}", "", checks["callbacks_over_noop"]),
        ("callback rows stored / posted", f"{stored['stored']:,} / {stored['posted']:,}", "", checks["lost_callbacks"]),
        ("answers other than 200", f"{not_ok}", "", checks["answers_not_200"]),
        ("messages not at the status / billed cost posted", f"{stored['wrong_messages']}", "",
         checks["messages_not_as_expected"]),
        ("callbacks left unmatched", f"{stored['unmatched']}", "", checks["unmatched_callbacks"]),
        ("billed-differs-from-reply flags", f"{stored['flagged_disagreeing']}", "", checks["disagreements_flagged"]),
    ]
    print(f"{'figure':<56}{'measured':>16}  {'limit':<8}result")
    for name, value, note, check in rows:
        limit, result = (check["limit"], "pass" if check["ok"] else "FAIL") if check else ("", note)
        print(f"{name:<56}{value:>16}  {limit:<8}{result}")
    print(f"message statuses: {stored['statuses']}")
    print(f"CPU per request (us): callbacks {callbacks['cpu_us_per_request']}, "
          f"no-op {noop['cpu_us_per_request']}")
    if stored["wrong_examples"]:
        print(f"e.g. not as expected: {stored['wrong_examples']}")
    print(f"\noverall: {'pass' if passed else 'FAIL'} in {seconds:.0f} s; load {os.getloadavg()[0]:.2f} after")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps({
        "benchmark": "callback_ingest", "mode": mode, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "checks": checks, "pass": passed,
        "figures": {"callbacks": callbacks, "noop": noop, "rounds": {"callbacks": callback_rounds,
                    "noop": noop_rounds}, "ratio": round(ratio, 3), "stored": stored,
                    "messages": sizes["messages"], "connections": PROCESSES * THREADS,
                    "gunicorn": f"{WEB_WORKERS} workers x {WEB_THREADS} threads (gthread)"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1m_before": round(load_before, 2),
                    "load_average_1m_after": round(os.getloadavg()[0], 2)},
    }, indent=2) + "\n")
    print(f"written to {options.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
