"""`campaigns dev`, the README's first command: it serves a login page and the printed login works."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

CAMPAIGNS = Path(sys.executable).with_name("campaigns")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_dev_runs_everything_and_stops_cleanly(tmp_path):
    """dev prints a URL and a login that work, runs web, worker, Redis and sandbox, and SIGTERM stops them all."""
    port, sandbox_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "MULTITEL_API_URL")}
    env["INSTANCE_PATH"] = str(tmp_path / "instance")
    process = subprocess.Popen(
        [CAMPAIGNS, "dev", "--port", str(port), "--sandbox-port", str(sandbox_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 90
        login = None
        while time.monotonic() < deadline and login is None:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            output.append(line)
            login = re.search(r"Sign in as (\S+) with password (\S+)", line)
        assert login, "dev never printed a login:\n" + "".join(output)
        url = re.search(r"running at (\S+)", "".join(output)).group(1)
        assert url == f"http://127.0.0.1:{port}"

        session = requests.Session()
        page = session.get(f"{url}/login", timeout=5).text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = session.post(
            f"{url}/login", data={"csrf_token": token, "email": login.group(1), "password": login.group(2)},
            timeout=5, allow_redirects=False,
        )
        assert response.status_code == 302, response.text[:500]
        dashboard = session.get(url, timeout=5).text
        assert "Demo team" in dashboard and "Sandbox mode" in dashboard
        assert session.get(f"{url}/healthz", timeout=5).json()["status"] == "ok"
        sandbox = requests.post(f"http://127.0.0.1:{sandbox_port}/v3/sendsms", timeout=5)
        assert sandbox.status_code == 401  # the sandbox is up and wants its credentials
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            rest = process.stdout.read()
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, "".join(output) + rest
    assert "Stopped." in rest
    deadline = time.monotonic() + 10
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(process.pid), "a child of dev outlived it"
