"""Child processes of the local cloud: start, watch, stop.

Each service is a child process whose output goes to ``logs/<name>.log``
under the state directory; lines a service prints about itself (``nova:
compute compute1 started``) are echoed as progress.  Children ask the
kernel to send them SIGTERM if the launcher dies, so a killed launcher
leaves nothing behind either.  A child can also be killed, started again,
paused and resumed on request (``control.py``), as a crash or a hung host
would do to it, without the launcher taking that for a failure.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from deploy.localcloud import layout as layout_mod

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServiceFailed(RuntimeError):
    pass


def stop_process(proc: subprocess.Popen, grace: float,
                 signum: int = signal.SIGTERM) -> int:
    """Send ``signum``, give it ``grace`` seconds, then SIGKILL.

    Returns its exit status; one that has already exited is only reaped.
    """
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class Child:
    def __init__(self, name: str, argv: list[str], log: Path,
                 env: dict[str, str], ready: Callable[["Child"], bool],
                 timeout: float, stop_last: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.ready = ready
        self.timeout = timeout
        # Others call it while they stop (see Supervisor.stop_all).
        self.stop_last = stop_last
        self.proc: subprocess.Popen | None = None
        self._echoed = 0
        self.paused = False
        # Killed on request: its exit is not a failure of the cloud.
        self.stopped_on_request = False

    def start(self) -> None:
        """Start the process; again after a kill, with the same command
        line, environment and log."""
        self.paused = False
        self.stopped_on_request = False
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        out.write(f"\n==> {time.ctime()}: {' '.join(self.argv)}\n".encode())
        out.flush()
        self._echoed = self.log.stat().st_size
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self.env,
            cwd=layout_mod.REPO_ROOT, preexec_fn=_die_with_parent)
        out.close()

    def new_progress_lines(self) -> list[str]:
        """Lines ``<service>: ...`` written since the last call."""
        with self.log.open("rb") as f:
            f.seek(self._echoed)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._echoed += cut
        prefix = self.name.split("-")[0] + ":"
        return [line for line in data[:cut].decode(errors="replace")
                .splitlines() if line.startswith(prefix)]

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n    ".join(text)

    def wait_ready(self, say: Callable[[str], None]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for line in self.new_progress_lines():
                say(line)
            if self.proc.poll() is not None:
                raise ServiceFailed(
                    f"{self.name} exited with code {self.proc.returncode} "
                    f"while starting; last lines of {self.log}:\n    "
                    f"{self.tail()}")
            if self.ready(self):
                for line in self.new_progress_lines():
                    say(line)
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"{self.name} was not ready after {self.timeout:.0f} s; "
                    f"last lines of {self.log}:\n    {self.tail()}")
            time.sleep(0.3)

    def terminate(self) -> bool:
        """Ask the process to stop; False if it had already exited."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        if self.paused:
            # A stopped process acts on SIGTERM only once continued.
            self.resume()
        return True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL, as a crash would end it; returns its exit status."""
        self.proc.kill()
        self.proc.wait()
        self.paused = False
        self.stopped_on_request = True
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: it keeps its sockets open and answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def state(self) -> str:
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            if self.stopped_on_request:
                return "killed"
            return f"exited ({self.proc.returncode})"
        return "paused" if self.paused else "running"

    def wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def http_ready(url: str, ok: tuple[int, ...] = (200, 300, 401)
               ) -> Callable[[Child], bool]:
    def check(child: Child) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.status in ok
        except urllib.error.HTTPError as exc:
            return exc.code in ok
        except (OSError, urllib.error.URLError):
            return False
    return check


def log_ready(marker: str) -> Callable[[Child], bool]:
    def check(child: Child) -> bool:
        return marker in child.log.read_text(errors="replace")[
            -20000:].split("==> ")[-1]
    return check


class Supervisor:
    """Starts children in order and stops them in reverse order."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        """Start a child and wait until it is ready; also one killed on
        request, which keeps its place in the stopping order."""
        self.say(f"{child.name}: starting (log: {child.log})")
        child.start()
        if child not in self.children:
            self.children.append(child)
        started = time.monotonic()
        child.wait_ready(self.say)
        self.say(f"{child.name}: up after {time.monotonic() - started:.1f} s")
        return child

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def failed(self) -> Child | None:
        for child in self.children:
            if child.proc.poll() is not None and not child.stopped_on_request:
                return child
        return None

    def stop_all(self, grace: float = 30.0) -> None:
        """SIGTERM to every child at once, SIGKILL to those left at the end.

        Nova services take several seconds each to drain their RPC servers;
        stopping them in parallel keeps Ctrl-C quick.  Children marked
        ``stop_last`` are stopped once the others have exited: a
        nova-compute whose heartbeat is in a call to a conductor already
        gone would wait out the RPC timeout.
        """
        for last in (False, True):
            wave = [child for child in reversed(self.children)
                    if child.stop_last == last]
            for child in wave:
                if child.terminate():
                    self.say(f"{child.name}: stopping")
            deadline = time.monotonic() + grace
            for child in wave:
                child.wait_stopped(deadline)
        self.children.clear()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Children import this checkout first, whatever the venv holds."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(layout_mod.REPO_ROOT) + (
        os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


PYTHON = sys.executable
