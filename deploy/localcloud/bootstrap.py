"""First-start set-up: databases, Keystone's keys and bootstrap, the catalog.

Every step is what an operator runs for a new deployment (``keystone-manage
db_sync/fernet_setup/bootstrap``, ``placement-manage db sync``,
``glance-manage db_sync``, ``nova-manage api_db sync``, ``cell_v2
map_cell0/create_cell``, ``db sync``)
and is skipped when the state directory says it was already done, so a
restart is quick and a ``--wipe`` starts from nothing.
"""

import getpass
import grp
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.localcloud import layout as layout_mod
from deploy.localcloud.layout import Layout

BIN = Path(sys.executable).parent

Say = Callable[[str], None]


class BootstrapError(RuntimeError):
    pass


def _run(lay: Layout, name: str, argv: list[str],
         env: dict[str, str] | None = None) -> None:
    # One log per service: the services' set-ups run side by side.
    log = lay.logs / f"bootstrap-{name.split('-')[0]}.log"
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})},
                                cwd=lay.state, check=False)
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise BootstrapError(
            f"{name} failed (exit {result.returncode}); last lines of "
            f"{log}:\n  " + "\n  ".join(tail))


def _once(lay: Layout, step: str) -> Path:
    return lay.state / "db" / f".done-{step}"


def create_mariadb_databases(lay: Layout, say: Say) -> None:
    import pymysql

    host, port = layout_mod.MARIADB_HOST_PORT
    names = ("keystone", "placement", "glance", "nova_api", "nova_cell0",
             "nova_cell1")
    conn = pymysql.connect(host=host, port=port, user="root")
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS "
                            f"`{lay.run_id()}_{name}` CHARACTER SET utf8")
    finally:
        conn.close()
    say(f"MariaDB databases {lay.run_id()}_* ready")


def drop_mariadb_databases(lay: Layout) -> list[str]:
    """Drop this state directory's databases (``--wipe`` in MariaDB mode)."""
    import pymysql

    host, port = layout_mod.MARIADB_HOST_PORT
    conn = pymysql.connect(host=host, port=port, user="root")
    dropped = []
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (f"{lay.run_id()}\\_%",))
            for (name,) in cur.fetchall():
                cur.execute(f"DROP DATABASE `{name}`")
                dropped.append(name)
    finally:
        conn.close()
    return dropped


def sqlite_wal(lay: Layout, *names: str) -> None:
    """Switch the SQLite files to write-ahead logging (persistent per file).

    Readers then never block the writer, which the many threads of the
    all-in-one Nova process need; writers queue on the URL's ``timeout``.
    """
    if lay.mode != "sqlite":
        return
    for name in names:
        conn = sqlite3.connect(lay.state / "db" / f"{name}.sqlite",
                               timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()


def keystone(lay: Layout, say: Say) -> None:
    conf = str(lay.etc / "keystone" / "keystone.conf")
    manage = [str(BIN / "keystone-manage"), "--config-file", conf]
    done = _once(lay, "keystone")
    if done.exists():
        return
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    say("keystone: creating its database and fernet keys (first start)")
    _run(lay, "keystone-manage db_sync", [*manage, "db_sync"])
    for keys in ("fernet_setup", "credential_setup"):
        _run(lay, f"keystone-manage {keys}",
             [*manage, keys, "--keystone-user", user,
              "--keystone-group", group])
    say("keystone: bootstrapping the admin user and the identity endpoint")
    url = lay.url("keystone")
    _run(lay, "keystone-manage bootstrap", [
        *manage, "bootstrap",
        "--bootstrap-username", layout_mod.ADMIN_USER,
        "--bootstrap-password", layout_mod.ADMIN_PASSWORD,
        "--bootstrap-project-name", layout_mod.ADMIN_PROJECT,
        "--bootstrap-region-id", layout_mod.REGION,
        "--bootstrap-admin-url", url,
        "--bootstrap-internal-url", url,
        "--bootstrap-public-url", url,
    ])
    done.touch()


def _database_once(lay: Layout, say: Say, service: str,
                   argv: list[str]) -> None:
    """Create ``service``'s database with its own manage command, once."""
    done = _once(lay, service)
    if done.exists():
        return
    say(f"{service}: creating its database (first start)")
    # Named as a person would type it: "placement-manage db sync".
    _run(lay, " ".join([Path(argv[0]).name, *argv[3:]]), argv)
    done.touch()


def placement(lay: Layout, say: Say) -> None:
    _database_once(lay, say, "placement", [
        str(BIN / "placement-manage"), "--config-file",
        str(lay.etc / "placement" / "placement.conf"), "db", "sync"])


def glance(lay: Layout, say: Say) -> None:
    _database_once(lay, say, "glance", [
        str(BIN / "glance-manage"), "--config-file",
        str(lay.etc / "glance" / "glance-api.conf"), "db_sync"])


def nova(lay: Layout, say: Say) -> None:
    done = _once(lay, "nova")
    if done.exists():
        return
    manage = [str(BIN / "nova-manage"), "--config-file",
              str(lay.etc / "nova" / "nova.conf")]
    # nova-manage must not monkey patch: the services run in threading mode.
    env = {"OS_NOVA_DISABLE_EVENTLET_PATCHING": "1"}
    say("nova: creating the API database (first start)")
    _run(lay, "nova-manage api_db sync", [*manage, "api_db", "sync"], env)
    say("nova: mapping cell0 and creating cell1")
    _run(lay, "nova-manage cell_v2 map_cell0", [
        *manage, "cell_v2", "map_cell0",
        "--database_connection", lay.database_url("nova_cell0")], env)
    _run(lay, "nova-manage cell_v2 create_cell", [
        *manage, "cell_v2", "create_cell", "--name", "cell1",
        "--database_connection", lay.database_url("nova_cell1"),
        "--transport-url", lay.transport_url()], env)
    say("nova: creating the cell databases")
    _run(lay, "nova-manage db sync", [*manage, "db", "sync"], env)
    done.touch()


def discover_hosts(lay: Layout) -> None:
    _run(lay, "nova-manage cell_v2 discover_hosts", [
        str(BIN / "nova-manage"), "--config-file",
        str(lay.etc / "nova" / "nova.conf"), "cell_v2", "discover_hosts"],
        {"OS_NOVA_DISABLE_EVENTLET_PATCHING": "1"})


def catalog(lay: Layout, say: Say) -> None:
    """Service users and the compute, placement and image endpoints,
    idempotently."""
    import openstack

    conn = openstack.connect(
        auth_url=lay.url("keystone"), username=layout_mod.ADMIN_USER,
        password=layout_mod.ADMIN_PASSWORD,
        project_name=layout_mod.ADMIN_PROJECT, user_domain_id="default",
        project_domain_id="default", region_name=layout_mod.REGION)
    ident = conn.identity
    project = (ident.find_project(layout_mod.SERVICE_PROJECT)
               or ident.create_project(name=layout_mod.SERVICE_PROJECT,
                                       domain_id="default"))
    roles = {name: ident.find_role(name) or ident.create_role(name=name)
             for name in ("admin", "service", "member", "reader")}
    for name in layout_mod.SERVICE_USERS:
        password = lay.secret(f"{name}_password")
        user = ident.find_user(name, domain_id="default")
        if user is None:
            user = ident.create_user(name=name, password=password,
                                     domain_id="default",
                                     default_project_id=project.id)
        else:
            ident.update_user(user, password=password)
        for role in ("admin", "service"):
            ident.assign_project_role_to_user(project, user, roles[role])

    for name, stype, url in (
        ("nova", "compute", lay.url("nova")),
        ("placement", "placement", lay.url("placement")),
        ("glance", "image", lay.url("glance")),
    ):
        svc = ident.find_service(name) or ident.create_service(
            name=name, type=stype, enabled=True)
        existing = {ep.interface: ep
                    for ep in ident.endpoints(service_id=svc.id)}
        for interface in ("public", "internal"):
            if interface in existing:
                if existing[interface].url != url:
                    ident.update_endpoint(existing[interface], url=url)
            else:
                ident.create_endpoint(service_id=svc.id, interface=interface,
                                      url=url, region_id=layout_mod.REGION)
    # A port change between runs moves the identity endpoint too.
    keystone_svc = ident.find_service("keystone")
    if keystone_svc is not None:
        for ep in ident.endpoints(service_id=keystone_svc.id):
            if ep.url != lay.url("keystone"):
                ident.update_endpoint(ep, url=lay.url("keystone"))
    say("keystone: catalog has identity, compute, placement and image")
