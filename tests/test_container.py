"""What can be checked of the image without a Docker engine: the files it copies and the settings it needs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_runs_as_non_root_and_serves():
    """The image runs as an unprivileged user and its command is the migrating entrypoint."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER campaigns$", dockerfile, re.M)
    assert 'CMD ["campaigns", "serve"]' in dockerfile
    for part in ("webapp", "jobs", "templates", "static", "migrations"):
        assert f"COPY {part} ./{part}" in dockerfile, part


def test_compose_gives_every_production_setting():
    """web and worker get each setting that production refuses to start without."""
    compose = (REPO / "compose.yaml").read_text()
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "APP_ENV: production"):
        assert name in compose
    assert '"campaigns", "worker"' in compose
