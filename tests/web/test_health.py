"""/healthz reports whether the database and Redis are reachable."""

from webapp import create_app


def test_healthy(client):
    """Both dependencies up: 200 and ok."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": {"ok": True}, "redis": {"ok": True}}}


def test_redis_down_is_reported(app_config):
    """An unreachable Redis gives 503 and names the failing check."""
    app = create_app(dict(app_config, REDIS_URL="redis://127.0.0.1:1/0"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"]["redis"]["ok"] is False
    assert response.json["checks"]["database"]["ok"] is True


def test_database_down_is_reported(app_config, tmp_path):
    """An unreachable database gives 503 and names the failing check."""
    app = create_app(dict(app_config, SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"]["database"]["ok"] is False
