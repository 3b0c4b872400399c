"""The embedded Redis: whoever starts it stops it, on every way out."""

import os
import subprocess
import sys
import textwrap
import time

from redis import Redis

from webapp.queues import embedded_redis_url, stop_embedded_redis


def _gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_stop_ends_the_server_while_clients_are_connected(tmp_path):
    """stop_embedded_redis ends the redis-server process even though another client holds a connection."""
    db_path = str(tmp_path / "redis.db")
    client = Redis.from_url(embedded_redis_url(db_path))
    pid = client.info()["process_id"]
    try:
        stop_embedded_redis(db_path)
        assert _gone(pid), f"redis-server {pid} still running after stop_embedded_redis"
    finally:
        client.close()
        if not _gone(pid, 0):
            os.kill(pid, 9)


def test_a_process_that_exits_stops_the_server_it_started(tmp_path):
    """A process that started the embedded server and exits without stopping it (clients open) leaves none behind."""
    script = textwrap.dedent(f"""
        from redis import Redis
        from webapp.queues import embedded_redis_url
        client = Redis.from_url(embedded_redis_url({str(tmp_path / "redis.db")!r}))
        print(client.info()["process_id"], flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.split()[-1])
    try:
        assert _gone(pid), f"redis-server {pid} outlived the process that started it"
    finally:
        if not _gone(pid, 0):
            os.kill(pid, 9)


def test_a_joined_server_is_left_to_its_owner(tmp_path):
    """A process that only joined a running embedded server does not stop it on its way out."""
    db_path = str(tmp_path / "redis.db")
    owner = Redis.from_url(embedded_redis_url(db_path))
    pid = owner.info()["process_id"]
    script = textwrap.dedent(f"""
        from redis import Redis
        from webapp.queues import embedded_redis_url, stop_embedded_redis
        Redis.from_url(embedded_redis_url({db_path!r})).ping()
        stop_embedded_redis()
    """)
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert owner.ping()
    finally:
        owner.close()
        stop_embedded_redis(db_path)
    assert _gone(pid)
