"""The production entrypoint (`campaigns serve`, the Docker image's command)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

CAMPAIGNS = Path(sys.executable).with_name("campaigns")


def _production_env(tmp_path, redis_url, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update(APP_ENV="production", INSTANCE_PATH=str(tmp_path / "instance"), PATH=f"{CAMPAIGNS.parent}:{env['PATH']}")
    env.update(extra)
    return env


def test_production_refuses_to_start_without_secrets(tmp_path, redis_url):
    """Without SECRET_KEY and DATABASE_URL the entrypoint exits and names them."""
    result = subprocess.run([CAMPAIGNS, "serve"], env=_production_env(tmp_path, redis_url), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "DATABASE_URL" in result.stderr


@pytest.mark.slow
def test_serve_migrates_then_runs_gunicorn(tmp_path, redis_url):
    """serve applies the migrations to an empty database and then answers /healthz through gunicorn."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _production_env(
        tmp_path, redis_url, SECRET_KEY="s" * 40, DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        REDIS_URL=redis_url, PUBLIC_BASE_URL="https://sms.example.com",
    )
    process = subprocess.Popen([CAMPAIGNS, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.3)
        assert health.json()["status"] == "ok"
        login = requests.get(f"http://127.0.0.1:{port}/login", timeout=2)
        assert "Secure" in login.headers["Set-Cookie"]
    finally:
        process.terminate()
        process.wait(timeout=30)
