"""Campaign sending on PostgreSQL and Redis with 2 real workers, beside a bare loop of the same client.

Issue 10, item 10 and the measurable parts of item 3. One run, one sandbox in its own process, a fresh
PostgreSQL database, a real Redis, two `campaigns worker` processes and the app under gunicorn:
  (a) a campaign's messages/s (first send to last, on the sandbox's clock) beside a bare loop of
      webapp.provider.multitel.MultitelClient at the same total concurrency (2 processes x the threads
      the two workers post from, half of it run just before the campaign and half just after):
      goal >= 0.8 of it;
  (b) with 100 ms added provider latency and 64-way concurrency: goal >= 500 messages/s (ceiling 640);
  (c) the goals are judged with the sandbox's callbacks off; the same campaigns with callbacks flowing
      back to the app are printed beside them;
  (d) a team limited to 200 messages/s: the achieved rate within 5% of it;
  (e) duplicates and losses counted from the sandbox's log of accepted sends: 0 and 0;
  and RQ's cost per job (dequeue, fork a work horse, open its connections, run a job that finds
  nothing to do, store the result), beside the length of a batch job.

Two workers run one job each at a time, so the campaign posts from 2 x SEND_CONCURRENCY threads at
most however many batches are queued (SEND_PARALLEL_BATCHES only keeps both workers fed); the bare
loop uses that many threads, split over 2 processes as the workers are.

    python bench/send_campaign.py [--quick] [--server postgresql://postgres@127.0.0.1:5432/postgres]
                                  [--redis redis://127.0.0.1:6379/12]
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
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

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import answers, free_port, stop_group, wait_until  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "send_campaign.json"
RATIO_LIMIT = 0.8
LATENCY_RATE_LIMIT = 500.0
RATE_TOLERANCE = 0.05
CONFIGURED_RATE = 200
LATENCY_MS = 100
BODY = "Hi {{ first_name }}, spring sale: 20% off everything this weekend only."
BARE_TEXT = "Hi Ana, spring sale: 20% off everything this weekend only."
SENDER = "+14155550111"
WORKERS = 2

# Quick campaigns are whole rounds of 2 x 2,048-message batches, so no round has one worker idle (the full
# throughput campaign is the 100,000: its last round is short).
FULL = {"throughput": 100_000, "with_callbacks": 20_480, "latency": 32_768, "latency_with_callbacks": 12_288,
        "rate_seconds": 60, "noop_jobs": 300}
QUICK = {"throughput": 8_192, "with_callbacks": 4_096, "latency": 4_096, "latency_with_callbacks": 4_096,
         "rate_seconds": 12, "noop_jobs": 80}
# 2 workers x 32 = 64 POSTs at once (the sandbox's waitress keeps at most 100 connections open: more
# would wait there for a read timeout); batches long enough that RQ's cost per job is a few percent of one.
SETTINGS = {"SEND_CONCURRENCY": 32, "SEND_BATCH_SIZE": 2048, "SEND_PARALLEL_BATCHES": 2}


# --- the sandbox and the bare loop, each in processes of their own ----------------------------------


def serve_sandbox(connection) -> None:
    """Child process: the sandbox (64 server threads) until the parent says stop."""
    import logging

    from webapp.provider.sandbox import SandboxConfig, SandboxServer

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is N" under load
    server = SandboxServer(SandboxConfig(seed=1), threads=64).start()
    connection.send(server.url)
    connection.recv()
    server.stop()


class Sandbox:
    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self.parent_end, child_end = context.Pipe()
        self.process = context.Process(target=serve_sandbox, args=(child_end,), daemon=True)
        self.process.start()
        self.url = self.parent_end.recv()

    def configure(self, **changes) -> None:
        """Forget every send and set the behaviour for the next phase."""
        requests.post(f"{self.url}/_sandbox/reset", timeout=30).raise_for_status()
        requests.post(f"{self.url}/_sandbox/config", json=changes, timeout=10).raise_for_status()

    def sends(self) -> list[dict]:
        return requests.get(f"{self.url}/_sandbox/sends", timeout=120).json()

    def stop(self) -> None:
        self.parent_end.send("stop")
        self.process.join(timeout=15)


def bare_loop_process(url: str, threads: int, count: int, prefix: str, notify_url: str, barrier) -> None:
    """Child process: `threads` threads sending `count` messages in all through MultitelClient."""
    from webapp.provider.multitel import Credentials, MultitelClient, Outcome

    client = MultitelClient(url, Credentials("sandbox", "sandbox"))
    start = threading.Barrier(threads + 1)
    failures = []

    def work(index: int) -> None:
        client.send(sender=SENDER, to="+15550100000", text=BARE_TEXT, notify_url=notify_url,
                    reference=f"warm-{prefix}-{index}")
        start.wait()
        for number in range(index, count, threads):
            result = client.send(sender=SENDER, to=f"+1555{number:07d}", text=BARE_TEXT, notify_url=notify_url,
                                 reference=f"bare-{prefix}-{number}")
            if result.outcome is not Outcome.ACCEPTED:
                failures.append(result.reason)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()  # every process has warmed up: all start together
    start.wait()
    for thread in pool:
        thread.join()
    client.close()
    if failures:
        print(f"bare loop {prefix}: {len(failures)} not accepted, e.g. {failures[0]}", file=sys.stderr)


def bare_loop(sandbox: Sandbox, threads_per_process: int, count: int, notify_url: str) -> dict:
    """The same client at the same concurrency from 2 processes; rate on the sandbox's clock."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    share = count // WORKERS
    processes = [context.Process(target=bare_loop_process,
                                 args=(sandbox.url, threads_per_process, share, f"p{n}", notify_url, barrier))
                 for n in range(WORKERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=1800)
    times = sorted(_when(send) for send in sandbox.sends() if (send["reference"] or "").startswith("bare-"))
    return _rate(times, share * WORKERS) | {"threads": threads_per_process * WORKERS}


# --- workers and the app, as in production ----------------------------------------------------------


class Processes:
    """`campaigns worker` (x2) and the app under gunicorn, in process groups of their own."""

    def __init__(self, env: dict, logs: Path):
        self.env = env
        self.logs = logs
        self.workers: list[subprocess.Popen] = []
        self.web: subprocess.Popen | None = None

    def start_workers(self, settings: dict) -> None:
        env = dict(self.env, **{name: str(value) for name, value in settings.items()})
        command = [str(Path(sys.executable).with_name("campaigns")), "worker"]
        for n in range(WORKERS):
            log = (self.logs / f"worker-{n}.log").open("a")
            self.workers.append(subprocess.Popen(command, env=env, start_new_session=True, stdout=log,
                                                 stderr=subprocess.STDOUT))

    def stop_workers(self) -> None:
        for process in self.workers:
            stop_group(process)
        self.workers = []

    def start_web(self, port: int) -> str:
        command = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}", "--workers", "2",
                   "--worker-class", "gthread", "--threads", "4", "webapp:create_app()"]
        log = (self.logs / "web.log").open("a")
        self.web = subprocess.Popen(command, env=self.env, start_new_session=True, stdout=log,
                                    stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/healthz"), 60, "the app under gunicorn")
        return url

    def stop(self) -> None:
        self.stop_workers()
        if self.web is not None:
            stop_group(self.web)


# --- data and campaigns -----------------------------------------------------------------------------


_prefixes = iter(range(200, 1000))


def make_team(name: str, rate: float) -> int:
    from webapp.encryption import encrypt
    from webapp.extensions import db
    from webapp.models import SenderNumber, Team

    team = Team(name=name, api_username="sandbox", api_password_encrypted=encrypt("sandbox"),
                send_rate=Decimal(str(rate)))
    db.session.add(team)
    db.session.flush()
    db.session.add(SenderNumber(team_id=team.id, number=SENDER))
    db.session.commit()
    return team.id


def make_campaign(team_id: int, recipients: int, name: str) -> int:
    """A draft to one new list of `recipients` distinct US mobiles (bulk INSERT), quiet hours off."""
    from sqlalchemy import insert, select

    from webapp.extensions import db
    from webapp.models import Campaign, CampaignList, Contact, ContactList, SenderNumber

    contact_list = ContactList(team_id=team_id, name=name)
    db.session.add(contact_list)
    db.session.flush()
    area = next(_prefixes)
    for start in range(0, recipients, 10_000):
        db.session.execute(insert(Contact), [
            {"team_id": team_id, "list_id": contact_list.id, "phone": f"+1{area}{n:07d}", "region": "US",
             "number_type": "mobile", "attributes": {"first_name": f"Ana{n}"}}
            for n in range(start, min(recipients, start + 10_000))])
    sender_id = db.session.scalar(select(SenderNumber.id).where(SenderNumber.team_id == team_id))
    campaign = Campaign(team_id=team_id, name=name, body=BODY, sender_number_id=sender_id, include_footer=False,
                        quiet_hours=False, audience=[CampaignList(list_id=contact_list.id, position=0)])
    db.session.add(campaign)
    db.session.commit()
    return campaign.id


def run_campaign(sandbox: Sandbox, campaign_id: int, deadline: float, settle: float = 0.0) -> dict:
    """Launch, wait until completed, and read the sandbox's log: rate, duplicates, losses."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Campaign, CampaignStatus, Message, MessageStatus
    from webapp.services import campaign_states

    campaign_states.launch(campaign_id, None)
    began = time.monotonic()
    last_print = began

    def done() -> bool:
        nonlocal last_print
        db.session.expire_all()
        status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        if status in (CampaignStatus.PAUSED, CampaignStatus.FAILED, CampaignStatus.CANCELLED):
            raise RuntimeError(f"campaign {campaign_id} is {status}")
        if time.monotonic() - last_print > 15:
            last_print = time.monotonic()
            posted = db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id,
                                                                  Message.status != MessageStatus.CREATED))
            print(f"    ... {posted:,} posted after {last_print - began:.0f} s", flush=True)
        return status is CampaignStatus.COMPLETED

    wait_until(done, deadline, f"campaign {campaign_id} to complete", interval=0.5)
    rows = dict(db.session.execute(select(Message.reference, Message.status)
                                   .where(Message.campaign_id == campaign_id)).all())
    settled = None
    if settle:
        final = (MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)

        def count_final() -> int:
            db.session.expire_all()
            return db.session.scalar(select(func.count()).where(Message.campaign_id == campaign_id,
                                                                Message.status.in_(final)))
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: count_final() == len(rows), settle, "callbacks", interval=1)
        settled = count_final()
    sends = sandbox.sends()
    witnessed = Counter(send["reference"] for send in sends)
    times = sorted(_when(send) for send in sends if send["reference"] in rows)
    duplicates = sum(count - 1 for reference, count in witnessed.items() if reference in rows and count > 1)
    strays = sum(count for reference, count in witnessed.items() if reference not in rows)
    losses = sum(1 for reference in rows if reference not in witnessed)
    statuses = Counter(str(status) for status in rows.values())
    result = _rate(times, len(rows)) | {"duplicates": duplicates, "losses": losses, "strays": strays,
                                        "statuses": dict(statuses)}
    if settle:
        result["final_status_by_callback"] = settled
    return result


def _combined(before: dict, after: dict) -> dict:
    """Two bare runs (before and after a campaign, so a machine whose load drifts is fair to both) as one."""
    messages, seconds = before["messages"] + after["messages"], before["seconds"] + after["seconds"]
    return {"messages": messages, "expected": before["expected"] + after["expected"], "seconds": round(seconds, 3),
            "per_second": round((messages - 2) / seconds, 1), "threads": before["threads"],
            "runs": [before, after]}


def _when(send: dict) -> float:
    return datetime.fromisoformat(send["time"]).timestamp()


def _rate(times: list[float], expected: int) -> dict:
    """Messages per second from the first accepted send to the last, on the sandbox's clock."""
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {"messages": len(times), "expected": expected, "seconds": round(span, 3),
            "per_second": round((len(times) - 1) / span, 1) if span else 0.0}


# --- RQ's cost per job ------------------------------------------------------------------------------


def rq_job_cost(count: int) -> dict:
    """Time `count` batch jobs that find nothing to send (campaign 0 does not exist) on both workers."""
    from rq.job import Job, JobStatus

    from webapp.queues import get_queue, redis_connection

    queue = get_queue("sends")
    jobs = [queue.enqueue("jobs.sending.send_batch", 0) for _ in range(count)]
    ids = [job.id for job in jobs]

    def finished() -> list[Job] | None:
        fetched = Job.fetch_many(ids, connection=redis_connection())
        if all(job is not None and job.ended_at is not None and job.started_at is not None for job in fetched):
            return fetched
        return None

    fetched = wait_until(finished, 300, "the no-op jobs", interval=0.2)
    failed = sum(job.get_status() == JobStatus.FAILED for job in fetched)
    starts = [job.started_at.timestamp() for job in fetched]
    ends = [job.ended_at.timestamp() for job in fetched]
    span = max(ends) - min(starts)
    in_job = sum(end - start for start, end in zip(starts, ends, strict=True)) / count
    per_job = WORKERS * span / count  # both workers busy throughout
    return {"jobs": count, "failed": failed, "seconds": round(span, 3), "jobs_per_second": round(count / span, 1),
            "per_job_ms": round(per_job * 1000, 1), "inside_job_ms": round(in_job * 1000, 1),
            "outside_job_ms": round((per_job - in_job) * 1000, 1)}


# --- the run ----------------------------------------------------------------------------------------


def machine_info() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average_1m_before": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same checks on small campaigns, in under 2 minutes")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, help="keep the workers' and the app's logs in this folder")
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    machine = machine_info()
    started = time.monotonic()

    from redis import Redis

    from tests.conftest import _fresh_postgres_database

    Redis.from_url(options.redis).flushdb()
    database_url, drop = _fresh_postgres_database(options.server)
    instance = Path(tempfile.mkdtemp(prefix="bench-send-"))
    sandbox = Sandbox()
    secret = secrets.token_urlsafe(48)
    web_port = free_port()
    public_url = f"http://127.0.0.1:{web_port}"
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=options.redis, SECRET_KEY=secret,
               INSTANCE_PATH=str(instance), UPLOAD_FOLDER=str(instance / "uploads"), MULTITEL_API_URL=sandbox.url,
               PUBLIC_BASE_URL=public_url, APP_ENV="development")
    env.pop("ENCRYPTION_KEY", None)
    logs = options.logs or instance
    logs.mkdir(parents=True, exist_ok=True)
    processes = Processes(env, logs)
    figures: dict = {"sizes": sizes, "settings": SETTINGS}
    try:
        from webapp import create_app
        from webapp.extensions import db

        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "REDIS_URL": options.redis, "SECRET_KEY": secret,
                          "INSTANCE_PATH": str(instance), "MULTITEL_API_URL": sandbox.url,
                          "PUBLIC_BASE_URL": public_url, **SETTINGS})
        with app.app_context():
            db.create_all()
            figures["by_phase"] = run_phases(app, sandbox, processes, sizes, web_port)
    finally:
        processes.stop()
        sandbox.stop()
        drop()
        shutil.rmtree(instance, ignore_errors=True)
    phases = figures["by_phase"]
    return report(options, sizes, figures, phases, machine, time.monotonic() - started)


def run_phases(app, sandbox: Sandbox, processes: Processes, sizes: dict, web_port: int) -> dict:
    from webapp.extensions import db
    from webapp.models import Team
    from webapp.services.teams import notify_url

    phases: dict = {}
    fast = make_team("Unlimited", 100_000)
    limited = make_team("Limited", CONFIGURED_RATE)
    notify = notify_url(db.session.get(Team, fast))
    rate_recipients = CONFIGURED_RATE * sizes["rate_seconds"]
    print(f"creating contacts ({sizes['throughput'] + sizes['with_callbacks'] + sizes['latency']:,} and more)",
          flush=True)
    campaigns = {
        "throughput": make_campaign(fast, sizes["throughput"], "throughput"),
        "with_callbacks": make_campaign(fast, sizes["with_callbacks"], "with callbacks"),
        "latency": make_campaign(fast, sizes["latency"], "latency"),
        "latency_with_callbacks": make_campaign(fast, sizes["latency_with_callbacks"], "latency with callbacks"),
        "rate_limit": make_campaign(limited, rate_recipients, "rate limit"),
    }
    processes.start_web(web_port)
    processes.start_workers(SETTINGS)
    threads = SETTINGS["SEND_CONCURRENCY"]

    print(f"RQ per-job cost: {sizes['noop_jobs']} jobs that find nothing to send", flush=True)
    phases["rq_job"] = rq_job_cost(sizes["noop_jobs"])

    print(f"(a) bare loop, {WORKERS} x {threads} threads, half before and half after the campaign", flush=True)
    sandbox.configure(callbacks=False)
    before = bare_loop(sandbox, threads, sizes["throughput"] // 2, notify)
    print(f"(a) campaign of {sizes['throughput']:,}, callbacks off", flush=True)
    sandbox.configure(callbacks=False)
    phases["throughput"] = run_campaign(sandbox, campaigns["throughput"], 1800)
    sandbox.configure(callbacks=False)
    phases["throughput_bare"] = _combined(before, bare_loop(sandbox, threads, sizes["throughput"] // 2, notify))

    sandbox.configure(callbacks=True)
    print(f"(c) campaign of {sizes['with_callbacks']:,}, callbacks to the app", flush=True)
    phases["with_callbacks"] = run_campaign(sandbox, campaigns["with_callbacks"], 1800, settle=30)

    sandbox.configure(callbacks=False)
    print(f"(d) campaign of {rate_recipients:,} at {CONFIGURED_RATE}/s", flush=True)
    phases["rate_limit"] = run_campaign(sandbox, campaigns["rate_limit"], sizes["rate_seconds"] * 3 + 60)

    print(f"(b) bare loop, {WORKERS} x {threads} threads, {LATENCY_MS} ms latency, around the campaign", flush=True)
    sandbox.configure(callbacks=False, latency_ms=LATENCY_MS)
    before = bare_loop(sandbox, threads, sizes["latency"] // 2, notify)
    print(f"(b) campaign of {sizes['latency']:,}, {LATENCY_MS} ms latency, callbacks off", flush=True)
    sandbox.configure(callbacks=False, latency_ms=LATENCY_MS)
    phases["latency"] = run_campaign(sandbox, campaigns["latency"], 1800)
    sandbox.configure(callbacks=False, latency_ms=LATENCY_MS)
    phases["latency_bare"] = _combined(before, bare_loop(sandbox, threads, sizes["latency"] // 2, notify))
    sandbox.configure(callbacks=True, latency_ms=LATENCY_MS)
    print(f"(c) campaign of {sizes['latency_with_callbacks']:,}, {LATENCY_MS} ms latency, callbacks to the app",
          flush=True)
    phases["latency_with_callbacks"] = run_campaign(sandbox, campaigns["latency_with_callbacks"], 1800, settle=30)
    return phases


def report(options, sizes: dict, figures: dict, phases: dict, machine: dict, seconds: float) -> int:
    campaign_phases = ("throughput", "with_callbacks", "rate_limit", "latency", "latency_with_callbacks")
    ratio = phases["throughput"]["per_second"] / phases["throughput_bare"]["per_second"]
    achieved = phases["rate_limit"]["per_second"]
    rate_error = abs(achieved - CONFIGURED_RATE) / CONFIGURED_RATE
    duplicates = sum(phases[name]["duplicates"] + phases[name]["strays"] for name in campaign_phases)
    losses = sum(phases[name]["losses"] for name in campaign_phases)
    job = phases["rq_job"]
    batch_seconds = SETTINGS["SEND_BATCH_SIZE"] / (phases["throughput"]["per_second"] / WORKERS)
    overhead_share = job["per_job_ms"] / 1000 / (job["per_job_ms"] / 1000 + batch_seconds)
    checks = {
        "throughput_ratio": {"value": round(ratio, 3), "limit": f">= {RATIO_LIMIT}", "ok": ratio >= RATIO_LIMIT},
        "latency_100ms_messages_per_s": {"value": phases["latency"]["per_second"],
                                         "limit": f">= {LATENCY_RATE_LIMIT:.0f}",
                                         "ok": phases["latency"]["per_second"] >= LATENCY_RATE_LIMIT},
        "rate_limit_error": {"value": round(rate_error, 4), "limit": f"<= {RATE_TOLERANCE}",
                             "ok": rate_error <= RATE_TOLERANCE},
        "duplicates": {"value": duplicates, "limit": "== 0", "ok": duplicates == 0},
        "losses": {"value": losses, "limit": "== 0", "ok": losses == 0},
    }
    passed = all(check["ok"] for check in checks.values())
    mode = "quick" if options.quick else "full"
    print(f"\nCampaign sending ({mode}), PostgreSQL + Redis, {WORKERS} workers, sandbox in its own process, "
          f"{machine['cpus']} CPUs, load {machine['load_average_1m_before']} before the run\n")
    rows = [
        (f"(a) campaign {sizes['throughput']:,}, callbacks off", f"{phases['throughput']['per_second']:,.0f}/s", ""),
        (f"    bare loop, {phases['throughput_bare']['threads']} threads",
         f"{phases['throughput_bare']['per_second']:,.0f}/s", ""),
        ("    campaign / bare", f"{ratio:.2f}", checks["throughput_ratio"]),
        (f"(c) campaign {sizes['with_callbacks']:,}, callbacks to the app",
         f"{phases['with_callbacks']['per_second']:,.0f}/s", ""),
        (f"(b) campaign {sizes['latency']:,}, {LATENCY_MS} ms, 64-way, callbacks off",
         f"{phases['latency']['per_second']:,.0f}/s", checks["latency_100ms_messages_per_s"]),
        (f"    bare loop, {phases['latency_bare']['threads']} threads (ceiling 640)",
         f"{phases['latency_bare']['per_second']:,.0f}/s", ""),
        (f"(c) campaign {sizes['latency_with_callbacks']:,}, {LATENCY_MS} ms, callbacks to the app",
         f"{phases['latency_with_callbacks']['per_second']:,.0f}/s", ""),
        (f"(d) rate limit {CONFIGURED_RATE}/s over {phases['rate_limit']['seconds']:.0f} s",
         f"{achieved:,.1f}/s", ""),
        ("    |achieved - configured| / configured", f"{rate_error:.2%}", checks["rate_limit_error"]),
        ("(e) duplicates (all campaigns)", f"{duplicates}", checks["duplicates"]),
        ("    losses (all campaigns)", f"{losses}", checks["losses"]),
        ("RQ per job (2 workers, no-op batch)", f"{job['per_job_ms']:.0f} ms", ""),
        ("    of which outside the job (fork, bookkeeping)", f"{job['outside_job_ms']:.0f} ms", ""),
        (f"    share of a {SETTINGS['SEND_BATCH_SIZE']}-message batch job", f"{overhead_share:.1%}", ""),
    ]
    print(f"{'figure':<58}{'measured':>12}  {'limit':<8}result")
    for name, value, check in rows:
        limit, result = (check["limit"], "pass" if check["ok"] else "FAIL") if check else ("", "")
        print(f"{name:<58}{value:>12}  {limit:<8}{result}")
    for name in ("with_callbacks", "latency_with_callbacks"):
        settled = phases[name].get("final_status_by_callback")
        print(f"    {name}: {settled:,} of {phases[name]['messages']:,} final statuses applied from callbacks "
              "within 30 s of the last send")
    print(f"\noverall: {'pass' if passed else 'FAIL'} in {seconds:.0f} s; load {os.getloadavg()[0]:.2f} after")

    figures["rq_job_overhead_share"] = round(overhead_share, 4)
    machine["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps({
        "benchmark": "send_campaign", "mode": mode, "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "checks": checks, "pass": passed, "figures": figures, "machine": machine,
    }, indent=2) + "\n")
    print(f"written to {options.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
