"""Service processes for the demo: start a command, wait for its "listening" line, stop it cleanly."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServiceError(RuntimeError):
    """A service did not start, or a command failed; the message carries the tail of its log."""


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Offline, unbuffered, one torch thread per process: the demo's services share the machine's cores."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "1"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


class Service:
    """One long-running ``python -m PACKAGE ...`` process with its output in ``log``."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = [sys.executable, "-m", *args]
        self.log = log
        self.env = env
        self.process: subprocess.Popen[str] | None = None

    def start(self, ready: re.Pattern[str] | None = None, timeout_s: float = 300.0) -> re.Match[str] | None:
        """Start; with ``ready``, wait until a stdout line matches it and return the match."""
        handle = self.log.open("a")
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=handle, text=True, env=self.env, start_new_session=True
        )
        if ready is None:
            return None
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if readable:
                line = self.process.stdout.readline()
                handle.write(line)
                handle.flush()
                match = ready.search(line)
                if match:
                    return match
                if not line and self.process.poll() is not None:
                    break
            elif self.process.poll() is not None:
                break
        self.stop()
        raise ServiceError(f"{self.name} did not start; its log ({self.log}):\n{_tail(self.log)}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, wait for a clean exit, SIGKILL only if it does not come."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_command(args: list[str], env: dict[str, str], log: Path, timeout_s: float = 120.0) -> str:
    """Run ``python -m ...`` to completion and return its stdout; a failure raises with its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(args)}\n{result.stderr}")
    if result.returncode != 0:
        raise ServiceError(f"`{' '.join(args[:3])} ...` failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout
