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
PRODUCTION_KEY = "serve-test-" + "0123456789abcdef" * 2


def _production_env(tmp_path, redis_url, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update(APP_ENV="production", INSTANCE_PATH=str(tmp_path / "instance"), PATH=f"{CAMPAIGNS.parent}:{env['PATH']}")
    env.update(extra)
    return env


def test_production_refuses_to_start_without_secrets(tmp_path, redis_url):
    """Without SECRET_KEY and DATABASE_URL the entrypoint exits and names them."""
    result = subprocess.run([CAMPAIGNS, "serve"], env=_production_env(tmp_path, redis_url), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "DATABASE_URL" in result.stderr


def test_misspelt_app_env_refuses_to_start(tmp_path, redis_url):
    """APP_ENV=Production stops the entrypoint with a message naming APP_ENV, instead of running as development."""
    result = subprocess.run([CAMPAIGNS, "serve"], env=_production_env(tmp_path, redis_url, APP_ENV="Production"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "APP_ENV='Production' is not one of development, production" in result.stderr


def _get_within(url: str, seconds: float, process: subprocess.Popen) -> requests.Response:
    """GET url until it answers, however slowly; fail only after `seconds` or when the server exits."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=30)
        except requests.RequestException:
            assert process.poll() is None, f"serve exited with {process.returncode}"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_serve_migrates_then_runs_gunicorn(tmp_path, redis_url):
    """serve applies the migrations to an empty database and then answers /healthz through gunicorn."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _production_env(
        tmp_path, redis_url, SECRET_KEY=PRODUCTION_KEY, DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        REDIS_URL=redis_url, PUBLIC_BASE_URL="https://sms.example.com",
    )
    process = subprocess.Popen([CAMPAIGNS, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = _get_within(f"http://127.0.0.1:{port}/healthz", 180, process)
        assert health.json()["status"] == "ok"
        login = _get_within(f"http://127.0.0.1:{port}/login", 60, process)
        assert "Secure" in login.headers["Set-Cookie"]
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert process.returncode == 0, output


@pytest.mark.slow
def test_serve_only_callbacks_takes_callbacks_and_serves_no_pages(app_config, tmp_path, redis_url):
    """`serve` with SERVE_ONLY=callbacks answers the provider's webhooks and /healthz, and 404 for pages."""
    from flask_migrate import upgrade

    from tests.factories import make_team
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import InboundMessage, ProviderCallback

    database_url = f"sqlite:///{tmp_path / 'prod.sqlite3'}"
    app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI=database_url))
    with app.app_context():
        upgrade()  # the dashboard's `serve` (or `campaigns db upgrade`) migrates; a callbacks server does not
        team = make_team("Acme")
        team_id, callback_token, inbound_token = team.id, team.callback_token, team.inbound_token
        db.engine.dispose()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _production_env(tmp_path, redis_url, SECRET_KEY=PRODUCTION_KEY, DATABASE_URL=database_url,
                          REDIS_URL=redis_url, PUBLIC_BASE_URL="https://sms.example.com", SERVE_ONLY="callbacks")
    process = subprocess.Popen([CAMPAIGNS, "serve", "--bind", f"127.0.0.1:{port}",
                                "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert _get_within(f"{base}/healthz", 180, process).json()["status"] == "ok"
        status = requests.post(f"{base}/callbacks/multitel/{team_id}/{callback_token}", timeout=30,
                               data={"reference": "m-1", "status": "DELIVRD", "uniqueid": "u-1"})
        assert (status.status_code, status.text) == (200, "OK")
        inbound = requests.post(f"{base}/callbacks/inbound/{team_id}/{inbound_token}", timeout=30,
                                data={"from": "+14155552671", "to": "+14155550111", "text": "STOP"})
        assert inbound.status_code == 200
        assert requests.post(f"{base}/callbacks/multitel/{team_id}/wrong-token", timeout=30).status_code == 404
        for path in ("/", "/login", "/campaigns/", "/imports/", "/delivery-reports/", "/settings/"):
            page = requests.get(base + path, timeout=30, allow_redirects=False)
            assert page.status_code == 404, path
            assert page.headers["Content-Type"].startswith("text/plain") and "Set-Cookie" not in page.headers, path
        assert requests.post(f"{base}/login", data={"email": "a@b.c", "password": "x"}, timeout=30).status_code == 404
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert process.returncode == 0, output
    assert "Running upgrade" not in output  # it left the schema to the dashboard's deploy
    assert f"/callbacks/multitel/{team_id}/…" in output  # the access log shows the callback, not its secret
    assert callback_token not in output and inbound_token not in output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ProviderCallback)) == 1
        assert db.session.scalar(db.select(db.func.count()).select_from(InboundMessage)) == 1
        db.engine.dispose()
