"""Child processes and waiting, shared by the benchmarks (bench/): ports, readiness, a clean stop."""

import os
import signal
import socket
import subprocess
import time

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    """True when a GET of `url` answers 200 within 2 s."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_until(condition, seconds: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something true (returned), or raise TimeoutError after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM a child started with start_new_session=True and its whole group; SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
