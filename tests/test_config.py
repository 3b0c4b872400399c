"""Settings: development makes its own secrets, production refuses to start without them."""

import pytest

from webapp.config import ConfigError, load_config


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("APP_ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "MULTITEL_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_development_defaults(clean_env, tmp_path):
    """With no environment: SQLite and embedded Redis in the instance folder, the sandbox as provider."""
    config = load_config(str(tmp_path))
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'campaigns.sqlite3'}"
    assert config["REDIS_URL"] == ""
    assert config["MULTITEL_API_URL"] == config["SANDBOX_URL"]
    assert config["SANDBOX_ENABLED"] is True


def test_development_secret_is_generated_once(clean_env, tmp_path):
    """The dev secret key is made on first start and kept, so sessions survive restarts."""
    first = load_config(str(tmp_path))["SECRET_KEY"]
    assert len(first) >= 40
    assert load_config(str(tmp_path))["SECRET_KEY"] == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_refuses_without_secrets(clean_env, tmp_path):
    """Production names every missing setting instead of falling back to a default."""
    clean_env.setenv("APP_ENV", "production")
    with pytest.raises(ConfigError) as error:
        load_config(str(tmp_path))
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL"):
        assert name in str(error.value)
    assert not (tmp_path / "secret_key").exists()


def test_production_refuses_short_secret(clean_env, tmp_path):
    """A short SECRET_KEY is refused in production."""
    for name, value in {"APP_ENV": "production", "SECRET_KEY": "short", "DATABASE_URL": "postgresql://db/x",
                        "REDIS_URL": "redis://r:6379/0", "PUBLIC_BASE_URL": "https://sms.example.com"}.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match="at least 32"):
        load_config(str(tmp_path))


def test_production_with_everything(clean_env, tmp_path):
    """Production starts with its settings given; the sandbox is off and cookies are Secure."""
    for name, value in {"APP_ENV": "production", "SECRET_KEY": "s" * 40, "DATABASE_URL": "postgres://u@db/x",
                        "REDIS_URL": "redis://r:6379/0", "PUBLIC_BASE_URL": "https://sms.example.com/"}.items():
        clean_env.setenv(name, value)
    config = load_config(str(tmp_path))
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/x"
    assert config["PUBLIC_BASE_URL"] == "https://sms.example.com"
    assert config["SANDBOX_ENABLED"] is False
    assert config["SESSION_COOKIE_SECURE"] is True
