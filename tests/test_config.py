"""Settings: development makes its own secrets, production refuses to start without them."""

import pytest

from webapp.config import ConfigError, load_config

PRODUCTION_KEY = "k3y-for-tests-" + "0123456789abcdef" * 2
PRODUCTION = {"APP_ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "DATABASE_URL": "postgresql://db/x",
              "REDIS_URL": "redis://r:6379/0", "PUBLIC_BASE_URL": "https://sms.example.com"}


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
    for name, value in {"APP_ENV": "production", "SECRET_KEY": PRODUCTION_KEY, "DATABASE_URL": "postgres://u@db/x",
                        "REDIS_URL": "redis://r:6379/0", "PUBLIC_BASE_URL": "https://sms.example.com/"}.items():
        clean_env.setenv(name, value)
    config = load_config(str(tmp_path))
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/x"
    assert config["PUBLIC_BASE_URL"] == "https://sms.example.com"
    assert config["SANDBOX_ENABLED"] is False
    assert config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("value", ["Production", "prod", "PRODUCTION", "production ", "dev", "staging", "test"])
def test_unknown_app_env_is_refused(clean_env, tmp_path, value):
    """APP_ENV must be written exactly as documented; a near miss never falls back to development."""
    for name, setting in PRODUCTION.items():
        clean_env.setenv(name, setting)
    clean_env.setenv("APP_ENV", value)
    with pytest.raises(ConfigError, match="APP_ENV") as error:
        load_config(str(tmp_path))
    assert "development, production" in str(error.value)
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("value", ["development", "production"])
def test_documented_app_envs_are_accepted(clean_env, tmp_path, value):
    """The two documented values start."""
    for name, setting in PRODUCTION.items():
        clean_env.setenv(name, setting)
    clean_env.setenv("APP_ENV", value)
    assert load_config(str(tmp_path))["APP_ENV"] == value


@pytest.mark.parametrize("app_env", ["development", "production"])
@pytest.mark.parametrize("key", ["s" * 40, "x" * 64, "0" * 32], ids=["s*40", "x*64", "0*32"])
def test_secret_key_of_one_repeated_character_is_refused(clean_env, tmp_path, app_env, key):
    """A SECRET_KEY made of one character repeated is refused, whatever its length and environment."""
    for name, setting in PRODUCTION.items():
        clean_env.setenv(name, setting)
    clean_env.setenv("APP_ENV", app_env)
    clean_env.setenv("SECRET_KEY", key)
    with pytest.raises(ConfigError, match="SECRET_KEY is one character repeated"):
        load_config(str(tmp_path))


def test_secret_key_given_by_the_caller_is_checked_too(clean_env, tmp_path):
    """A key passed to the factory obeys the same rule as one from the environment."""
    with pytest.raises(ConfigError, match="repeated"):
        load_config(str(tmp_path), {"SECRET_KEY": "b" * 40})


@pytest.mark.parametrize("value", ["dashboard", "Callbacks", "webhooks"])
def test_unknown_serve_only_is_refused(clean_env, tmp_path, value):
    """SERVE_ONLY is empty (everything) or exactly "callbacks"; anything else stops the start with its name."""
    clean_env.setenv("SERVE_ONLY", value)
    with pytest.raises(ConfigError, match="SERVE_ONLY"):
        load_config(str(tmp_path))
    clean_env.setenv("SERVE_ONLY", "callbacks")
    assert load_config(str(tmp_path))["SERVE_ONLY"] == "callbacks"
