"""Child processes and waiting, shared by the tests and the benchmarks (bench/): ports, readiness, a clean
stop, and real `campaigns worker` processes."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


class Workers:
    """`campaigns worker` processes in their own process group, so a signal reaches the work horse too."""

    def __init__(self, env: dict, log: Path | None = None):
        self.env = env
        self.log = log  # where their output goes (appended), else nowhere
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen([Path(sys.executable).with_name("campaigns"), "worker"], env=self.env,
                                            start_new_session=True, stdout=output, stderr=subprocess.STDOUT)
        finally:
            if self.log:
                output.close()

    def signal(self, signum: int) -> None:
        """Signal the worker's group and every process under it: RQ puts each work horse in a group of its own."""
        os.killpg(self.process.pid, signum)
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGCONT)  # a stopped process would never see the SIGTERM
            stop_group(self.process)


def _descendants(pid: int) -> list[int]:
    """The processes under `pid` (children first found, then theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
