"""/healthz: is the database reachable, is Redis reachable. For load balancers and humans."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from webapp.extensions import db
from webapp.queues import redis_connection

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """JSON with one entry per dependency; 503 when any is down."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        db.session.rollback()
        checks["database"] = {"ok": False, "error": type(error).__name__}
    try:
        redis_connection().ping()
        checks["redis"] = {"ok": True}
    except Exception as error:  # noqa: BLE001
        checks["redis"] = {"ok": False, "error": type(error).__name__}
    healthy = all(check["ok"] for check in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", checks=checks), 200 if healthy else 503
