"""Crash, restart, pause and resume one service of a running local cloud.

``python -m deploy.localcloud control [--state-dir DIR] ACTION [SERVICE]``

The launcher listens on ``<state>/control.sock`` (a Unix socket, so only
whoever may read the state directory can use it) and serves one JSON
request per connection, between its checks of the services:

* ``status``: every service's process id and state;
* ``kill SERVICE``: SIGKILL, as a crash ends a process (a compute host's
  guests keep running: its fake hypervisor is saved after every change);
* ``start SERVICE``: start a killed service again with the same command
  line, configuration and state directory, and wait until it is ready;
* ``pause SERVICE``: SIGSTOP, a host that hangs: its connections stay open
  and it answers nothing;
* ``resume SERVICE``: SIGCONT.

Services are named as in the launcher's output and ``logs/`` (``keystone``,
``nova-compute1``, ...; the default mode runs Nova as one ``nova``).  A
service killed on request is no failure of the cloud; one that does not
come up again after ``start`` stays down and the reply says why.
"""

import json
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

from deploy.localcloud.supervisor import ServiceFailed, Supervisor

ACTIONS = ("status", "kill", "start", "pause", "resume")
# Longer than any service takes to become ready (supervisor timeouts).
REQUEST_TIMEOUT = 330.0
# sun_path of struct sockaddr_un, less its final NUL.
_MAX_SOCKET_PATH = 107


class ControlError(RuntimeError):
    """The request could not be made or was refused; printed as is."""


class ControlServer:
    """The launcher's end: answers requests between its service checks."""

    def __init__(self, path: Path, supervisor: Supervisor,
                 say: Callable[[str], None]) -> None:
        self.path = path
        self.supervisor = supervisor
        self.say = say
        self._listener: socket.socket | None = None

    def open(self) -> None:
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            self.say(f"control: not offered, the socket path {self.path} is "
                     f"longer than {_MAX_SOCKET_PATH} bytes; use a shorter "
                     f"--state-dir to have it")
            return
        # The state lock is held: a socket left here is from a launcher
        # that died.
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        self.path.chmod(0o600)
        listener.listen()
        self._listener = listener

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.path.unlink(missing_ok=True)

    def serve(self, timeout: float) -> None:
        """Answer the requests waiting, or wait up to ``timeout`` for one."""
        if self._listener is None:
            time.sleep(timeout)
            return
        readable, _, _ = select.select([self._listener], [], [], timeout)
        if not readable:
            return
        conn, _ = self._listener.accept()
        with conn:
            try:
                conn.settimeout(10)
                reply = self.handle(_read_line(conn))
                conn.settimeout(None)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError) as exc:
                self.say(f"control: bad request: {exc}")

    def handle(self, request: dict) -> dict:
        action = request.get("action")
        name = request.get("service")
        if action == "status":
            return {"ok": True, "services": [
                {"service": c.name, "pid": c.proc.pid if c.proc else None,
                 "state": c.state()} for c in self.supervisor.children]}
        if action not in ACTIONS:
            return _refused(f"unknown action {action!r}; one of "
                            f"{', '.join(ACTIONS)}")
        try:
            child = self.supervisor.child(name)
        except KeyError:
            names = ", ".join(c.name for c in self.supervisor.children)
            return _refused(f"no service {name!r}; the services are "
                            f"{names}")
        if action == "start":
            if child.running():
                return _refused(f"{name} is already running "
                                f"(pid {child.proc.pid})")
            self.say(f"control: starting {name} again")
            try:
                self.supervisor.start(child)
            except ServiceFailed as exc:
                if child.running():
                    child.kill()
                child.stopped_on_request = True
                return _refused(str(exc))
            return {"ok": True, "service": name, "pid": child.proc.pid,
                    "state": child.state()}
        if not child.running():
            return _refused(f"{name} is not running ({child.state()})")
        pid = child.proc.pid
        if action == "kill":
            status = child.kill()
            self.say(f"control: {name} (pid {pid}) killed with SIGKILL")
            return {"ok": True, "service": name, "pid": pid,
                    "state": child.state(), "returncode": status}
        if action == "pause":
            child.pause()
            self.say(f"control: {name} (pid {pid}) paused with SIGSTOP")
        else:
            child.resume()
            self.say(f"control: {name} (pid {pid}) resumed with SIGCONT")
        return {"ok": True, "service": name, "pid": pid,
                "state": child.state()}


def request(socket_path: Path, action: str, service: str | None = None,
            timeout: float = REQUEST_TIMEOUT) -> dict:
    """Send one request to a running launcher; its reply, or ControlError."""
    if not socket_path.exists():
        raise ControlError(
            f"no local cloud takes control requests at {socket_path} (is "
            f"it running from that state directory?)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(str(socket_path))
            conn.sendall(json.dumps({"action": action,
                                     "service": service}).encode() + b"\n")
            reply = _read_line(conn)
        except (OSError, ValueError) as exc:
            raise ControlError(
                f"the launcher at {socket_path} did not answer {action} "
                f"{service or ''}: {exc}") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "refused"))
    return reply


def _refused(message: str) -> dict:
    return {"ok": False, "error": message}


def _read_line(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("connection closed before a complete line")
        data += chunk
    return json.loads(data)
