"""Where the local cloud keeps its state, which ports it serves, who logs in.

Everything a run writes lives under one state directory (``var/localcloud/``
by default), so ``--wipe`` (or deleting the directory) is a complete reset.
"""

import dataclasses
import json
import secrets
import socket
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / "var" / "localcloud"
HOST = "127.0.0.1"
REGION = "RegionOne"

# The seeded people.  Passwords are fixed so that the README can print them;
# the cloud only ever listens on loopback.
ADMIN_USER = "admin"
ADMIN_PASSWORD = "xloud-admin"
ADMIN_PROJECT = "admin"
MEMBER_USER = "demo"
MEMBER_PASSWORD = "xloud-demo"
PROJECTS = ("demo", "research")
SERVICE_PROJECT = "service"
SERVICE_USERS = ("nova", "placement", "glance")

COMPUTE_HOSTS = ("compute1", "compute2")

MODES = ("sqlite", "mariadb")
# fake: Nova's fake libvirt, guests live inside nova-compute (quick on two
# cores); qemu: each host its own libvirtd running real QEMU guests.
HYPERVISORS = ("fake", "qemu")
MARIADB_HOST_PORT = (HOST, 3306)
RABBITMQ_HOST_PORT = (HOST, 5672)


@dataclasses.dataclass(frozen=True)
class Ports:
    keystone: int = 5000
    placement: int = 8778
    nova: int = 8774
    glance: int = 9292
    horizon: int = 8000

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name))
                for f in dataclasses.fields(self)]


class PortInUse(RuntimeError):
    """A port the cloud needs is taken by another program."""


def check_ports_free(ports: Ports) -> None:
    """Raise PortInUse naming the service and its flag when a port is taken.

    Binding (rather than connecting) is the honest test: it also catches a
    socket bound to 0.0.0.0 by something that is not listening yet.
    """
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                raise PortInUse(
                    f"port {port} on {HOST}, needed by {name}, is already in "
                    f"use ({exc.strerror}). Stop the program using it "
                    f"(`ss -ltnp 'sport = :{port}'` shows which) or pick "
                    f"another with --{name}-port.") from None


def free_port() -> int:
    """A port that is free on loopback right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def reachable(host_port: tuple[str, int], timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(host_port, timeout=timeout):
            return True
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths, ports and mode of one local cloud."""

    state: Path
    ports: Ports
    mode: str = "sqlite"
    hypervisor: str = "fake"

    @property
    def etc(self) -> Path:
        return self.state / "etc"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run_file(self) -> Path:
        """Written once the cloud is up; read by the end-to-end tests."""
        return self.state / "cloud.json"

    @property
    def lock_file(self) -> Path:
        return self.state / "up.lock"

    @property
    def control_socket(self) -> Path:
        """Where the launcher takes ``control`` requests (control.py)."""
        return self.state / "control.sock"

    @property
    def hypervisor_state(self) -> Path:
        """Each compute host's fake domains, ``<host>.json``."""
        return self.state / "nova" / "hypervisors"

    @property
    def libvirt_hosts(self) -> Path:
        """Each real compute host's libvirtd state, ``<host>/``."""
        return self.state / "nova" / "hosts"

    def url(self, service: str) -> str:
        port = getattr(self.ports, service)
        suffix = {"keystone": "/v3", "nova": "/v2.1"}.get(service, "")
        return f"http://{HOST}:{port}{suffix}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.ports.horizon}/"

    def secret(self, name: str) -> str:
        """A per-state-directory secret (service passwords, Django key)."""
        path = self.state / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        if name not in values:
            values[name] = secrets.token_urlsafe(24)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))
            path.chmod(0o600)
        return values[name]

    def run_id(self) -> str:
        """A short id unique to this state directory.

        The MariaDB/RabbitMQ mode prefixes its databases and names its
        RabbitMQ exchange with it, so that two clouds (or a cloud and a test
        run) on one server never share state.
        """
        return "xl" + self.secret("run_id").lower().replace(
            "-", "").replace("_", "")[:10]

    def database_url(self, name: str) -> str:
        if self.mode == "mariadb":
            host, port = MARIADB_HOST_PORT
            return (f"mysql+pymysql://root@{host}:{port}/"
                    f"{self.run_id()}_{name}?charset=utf8")
        # Several services write one file at once: wait for the lock (the
        # files are in WAL mode, see bootstrap.sqlite_wal) rather than fail
        # after pysqlite's default 5 s.
        return f"sqlite:///{self.state / 'db' / name}.sqlite?timeout=60"

    def transport_url(self) -> str:
        if self.mode == "mariadb":
            host, port = RABBITMQ_HOST_PORT
            return f"rabbit://guest:guest@{host}:{port}/"
        return "fake:/"

    def describe(self) -> dict:
        """What the run file records: enough for a client to log in."""
        return {
            "mode": self.mode,
            "hypervisor": self.hypervisor,
            "state_dir": str(self.state),
            "region": REGION,
            "auth_url": self.url("keystone"),
            "compute_url": self.url("nova"),
            "placement_url": self.url("placement"),
            "dashboard_url": self.dashboard_url,
            "admin": {"username": ADMIN_USER, "password": ADMIN_PASSWORD,
                      "project": ADMIN_PROJECT},
            "member": {"username": MEMBER_USER, "password": MEMBER_PASSWORD,
                       "project": PROJECTS[0]},
            "projects": list(PROJECTS),
            "compute_hosts": list(COMPUTE_HOSTS),
            "control_socket": str(self.control_socket),
            "hypervisor_state": str(self.hypervisor_state),
        }
