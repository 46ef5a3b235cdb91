"""Nova's own services for the local cloud.

``python -m deploy.localcloud.novaservices --config-dir DIR [--api PORT]
[--conductor] [--scheduler] [--compute HOST ...] [--libvirt-hosts DIR]``

With ``--libvirt-hosts`` (``up --hypervisor qemu``) each compute host talks
to its own real libvirtd (``deploy.localcloud.libvirthost``, under
``DIR/<host>``) and only Neutron below is a fake; without it, as follows.

One process may run several services (the default SQLite mode runs all of
them in one process on Oslo's in-process ``fake:`` transport, as Nova's
functional tests do); the MariaDB mode starts one process per service over
RabbitMQ, as production does.  Every service is Nova's own
``nova.service.Service`` (the API is Nova's WSGI application served by
cheroot), running in Nova's native threading mode.

What is *not* real, because this machine has no hypervisor or network
service (the image service is the local cloud's own Glance, found in the
catalog):

* libvirt is Nova's fake libvirt (``nova.tests.fixtures.libvirt``), patched
  in with Nova's ``LibvirtFixture`` and the few stubs Nova's libvirt
  functional tests use (``nova.tests.functional.libvirt.base``).  Nova's
  libvirt driver code, and this project's driver subclass, run unchanged on
  top of it.  Each host's domains are saved to the state directory after
  every change and defined again on start (``deploy.localcloud.hypervisor``),
  so a restarted compute, even one that was killed, finds its guests as
  QEMU would have kept them.
* Neutron is Nova's ``NeutronFixture``: an in-process fake inside every
  Nova process.  Its data is static (one network), so separate processes
  agree on it; ports created by a compute live in that compute's process
  only, which nothing else reads back (Nova caches the network info in its
  database).
"""

import argparse
import os
import signal
import sys
import threading
import traceback
import uuid
from pathlib import Path
from unittest import mock

from deploy.localcloud import instancedisks
from deploy.localcloud.hypervisor import FakeHypervisor

# Native threading, as every Nova service of 2026.2 defaults to; the fake
# libvirt and the cheroot server need no green threads.  This must be set
# before anything imports nova.
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

NODE_NAMESPACE = uuid.UUID("4c4bbd6c-4cbb-4b0a-9b45-6a3c3b0f2a11")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="localcloud-nova")
    parser.add_argument("--config-dir", required=True, type=Path)
    parser.add_argument("--api", type=int, metavar="PORT")
    parser.add_argument("--conductor", action="store_true")
    parser.add_argument("--scheduler", action="store_true")
    parser.add_argument("--compute", action="append", default=[],
                        metavar="HOST")
    parser.add_argument("--hypervisor-state", type=Path,
                        help="directory where each host's fake domains are "
                             "kept across restarts")
    parser.add_argument("--libvirt-hosts", type=Path,
                        help="run real guests: each compute host's libvirtd "
                             "(deploy.localcloud.libvirthost) lives in "
                             "DIR/<host>; without it, Nova's fake libvirt")
    return parser.parse_args(argv)


class _FixtureHost:
    """The small part of a test case that Nova's service fixtures call."""

    def __init__(self) -> None:
        import fixtures
        self._fixtures = fixtures
        self._cleanups: list = []

    def useFixture(self, fixture):  # noqa: N802 (Nova's fixtures call this)
        fixture.setUp()
        self._cleanups.append(fixture.cleanUp)
        return fixture

    def stub_out(self, old: str, new: object) -> None:
        self.useFixture(self._fixtures.MonkeyPatch(old, new))

    def flags(self, **kwargs: object) -> None:
        from nova.tests import fixtures as nova_fixtures
        group = kwargs.pop("group", None)
        self.useFixture(nova_fixtures.ConfPatcher(group=group, **kwargs))

    def cleanup(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()


def install_fakes(host: _FixtureHost) -> None:
    """Nova's fixtures for what this machine lacks (see module docstring)."""
    import fixtures
    from nova.tests import fixtures as nova_fixtures

    host.useFixture(nova_fixtures.PrivsepFixture())
    host.useFixture(nova_fixtures.NeutronFixture(host))
    host.useFixture(nova_fixtures.LibvirtImageBackendFixture())
    host.useFixture(nova_fixtures.CGroupsFixture())
    host.useFixture(nova_fixtures.LibvirtFixture())
    elastic = _elastic_fake_libvirt()
    if elastic is not None:
        host.useFixture(elastic)
    host.useFixture(nova_fixtures.OSBrickFixture())
    # Where Nova's functional tests stub _create_image out, the disk files
    # the driver later stats and copies are made, empty.
    host.useFixture(fixtures.MonkeyPatch(
        "nova.virt.libvirt.LibvirtDriver._create_image",
        instancedisks.create_image))
    # The same stubs as nova.tests.functional.libvirt.base.ServersTestBase:
    # the host looks like a 16-CPU Linux box.
    for target, kwargs in (
        ("nova.virt.libvirt.LibvirtDriver._get_local_gb_info",
         {"return_value": {"total": 512, "used": 12, "free": 500}}),
        ("nova.virt.libvirt.driver.libvirt_utils.is_valid_hostname",
         {"return_value": True}),
        ("nova.privsep.utils.supports_direct_io", {"return_value": True}),
        # The disk files hold nothing, so each would count as all
        # overcommitted.
        ("nova.virt.libvirt.LibvirtDriver._get_disk_over_committed_size_total",
         {"return_value": 0}),
        ("nova.virt.libvirt.host.Host.get_online_cpus",
         {"return_value": set(range(16))}),
    ):
        host.useFixture(fixtures.MockPatch(target, **kwargs))
    host.useFixture(fixtures.MockPatch(
        "nova.virt.libvirt.driver.libvirt_utils.file_open",
        side_effect=lambda *a, **k: __import__("io").BytesIO(b"")))


def install_network_fake() -> _FixtureHost:
    """Nova's Neutron fixture alone, for computes on a real hypervisor.

    Its ports are never plugged: the real-hypervisor cloud boots its
    guests without a network (``networks: none``).
    """
    from nova.tests import fixtures as nova_fixtures

    host = _FixtureHost()
    host.useFixture(nova_fixtures.NeutronFixture(host))
    return host


def _elastic_fake_libvirt():
    """This project's extension of the fake libvirt, when the checkout has it.

    Nova's fake domains ignore ``<vcpu current>`` and have no
    ``setVcpusFlags``/``setMemoryFlags``; ``tests/nova/fakelibvirt.py``
    (shared with the Nova test suite) teaches them libvirt's behaviour.
    """
    try:
        from tests.nova import fakelibvirt as elastic
    except ImportError:
        return None
    return elastic.ElasticLibvirtFixture()


def start_real_compute(hostname: str, connection_uri: str):
    """Start nova-compute for one host on its own libvirtd.

    The connection URI is read once, when the driver is created, so hosts
    sharing one process each keep theirs.
    """
    from nova import service
    from nova.compute import rpcapi as compute_rpcapi
    from nova.conf import CONF

    CONF.set_override("host", hostname)
    CONF.set_override("connection_uri", connection_uri, group="libvirt")
    node_uuid = str(uuid.uuid5(NODE_NAMESPACE, hostname))
    # As for the fake hosts: one state_path, node identities derived.
    with mock.patch("nova.virt.node.get_local_node_uuid",
                    return_value=node_uuid), \
            mock.patch("nova.virt.node.read_local_node_uuid",
                       return_value=node_uuid):
        server = service.Service.create(
            binary="nova-compute", host=hostname,
            topic=compute_rpcapi.RPC_TOPIC,
            topic_alt=compute_rpcapi.RPC_TOPIC_ALT)
        server.start()
    return server


def start_compute(hostname: str, hypervisor: FakeHypervisor):
    """Start nova-compute for one host on its own fake connection.

    As ``ServersTestBase.start_compute`` does: the connection is patched in
    while the service starts, then bound to that host's driver only, so
    several hosts can share one process.  The node UUID is derived from the
    host name so that a restarted host keeps its compute node record.
    """
    from nova import service
    from nova.compute import rpcapi as compute_rpcapi
    from nova.conf import CONF

    CONF.set_override("host", hostname)
    node_uuid = str(uuid.uuid5(NODE_NAMESPACE, hostname))
    # Hosts share one state_path, so the node identity file Nova would
    # write there (state_path/compute_id) is replaced by the derived UUID.
    with mock.patch("nova.virt.node.get_local_node_uuid",
                    return_value=node_uuid), \
            mock.patch("nova.virt.node.read_local_node_uuid",
                       return_value=node_uuid), \
            mock.patch("nova.virt.libvirt.host.Host.get_connection",
                       return_value=hypervisor.connection):
        server = service.Service.create(
            binary="nova-compute", host=hostname,
            topic=compute_rpcapi.RPC_TOPIC,
            topic_alt=compute_rpcapi.RPC_TOPIC_ALT)
        server.start()
        server.manager.driver._host.get_connection = (
            lambda: hypervisor.connection)
        server.manager.driver._host.get_node_uuid()
    return server


def map_hosts() -> None:
    """``nova-manage cell_v2 discover_hosts`` for the freshly started hosts."""
    from nova import context
    from nova.objects import host_mapping
    host_mapping.discover_hosts(context.get_admin_context())


def serve_api(port: int):
    """Nova's own WSGI application (``nova.wsgi.osapi_compute``)."""
    from cheroot import wsgi as cheroot_wsgi
    from nova.api.openstack import wsgi_app

    app = wsgi_app.init_application("osapi_compute", "nova-api")
    server = cheroot_wsgi.Server(("127.0.0.1", port), app, numthreads=16,
                                 server_name="localcloud-nova-api")
    server.prepare()
    threading.Thread(target=server.serve, daemon=True,
                     name="nova-api").start()
    return server


def main(argv: list[str]) -> int:
    try:
        return _run(_parse(argv))
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        # Services already started run in non-daemon threads; leave at once
        # so that the launcher sees the failure instead of a silent process.
        os._exit(1)


def _run(args: argparse.Namespace) -> int:
    if not (args.api or args.conductor or args.scheduler or args.compute):
        print("nothing to run: give --api, --conductor, --scheduler or "
              "--compute", file=sys.stderr)
        return 2
    os.environ["OS_NOVA_CONFIG_DIR"] = str(args.config_dir)
    sys.argv = ["nova-localcloud"]

    from nova import monkey_patch
    monkey_patch.patch(backend="threading")

    from deploy.localcloud import sqlite_locking
    sqlite_locking.serialize_sqlite_writers()

    from nova.api.openstack import wsgi_app
    wsgi_app.init_global_data(
        [str(args.config_dir / "nova.conf")], "nova-localcloud",
        "nova-localcloud")

    from nova import objects, service
    from nova.conf import CONF
    objects.register_all()

    if args.libvirt_hosts:
        fakes = install_network_fake()
    else:
        fakes = _FixtureHost()
        install_fakes(fakes)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    services = []
    if args.conductor:
        services.append(service.Service.create(binary="nova-conductor"))
        services[-1].start()
        print("nova: conductor started", flush=True)
    if args.scheduler:
        services.append(service.Service.create(binary="nova-scheduler"))
        services[-1].start()
        print("nova: scheduler started", flush=True)

    hypervisors = []
    for hostname in args.compute:
        if not args.conductor:
            # A compute on its own reaches the database through the
            # conductor only, like a production nova-compute.
            from nova.conductor import rpcapi as conductor_rpcapi
            from nova.db.main import api as db_api
            from nova.objects import base as objects_base
            db_api.DISABLE_DB_ACCESS = True
            objects_base.NovaObject.indirection_api = (
                conductor_rpcapi.ConductorAPI())
        if args.libvirt_hosts:
            from deploy.localcloud import libvirthost
            uri = libvirthost.connection_uri(args.libvirt_hosts / hostname)
            services.append(start_real_compute(hostname, uri))
            print(f"nova: compute {hostname} started on {uri}", flush=True)
            continue
        hypervisor = FakeHypervisor(hostname, args.hypervisor_state)
        restored = hypervisor.restore()
        services.append(start_compute(hostname, hypervisor))
        hypervisors.append(hypervisor)
        print(f"nova: compute {hostname} started "
              f"({restored} guests restored)", flush=True)
    if args.compute and args.conductor:
        map_hosts()
        print("nova: compute hosts mapped to cell1", flush=True)

    api_server = None
    if args.api:
        CONF.set_override("host", "localcloud-api")
        api_server = serve_api(args.api)
        print(f"nova: API serving on http://127.0.0.1:{args.api}/v2.1",
              flush=True)

    print("nova: ready", flush=True)
    stop.wait()

    print("nova: stopping", flush=True)
    if api_server is not None:
        api_server.stop()
    for hypervisor in hypervisors:
        try:
            hypervisor.save()
        except Exception as exc:  # still stop the services
            print(f"nova: could not save the domains of "
                  f"{hypervisor.hostname}: {exc}", flush=True)
    for svc in reversed(services):
        try:
            svc.stop()
        except Exception as exc:  # keep stopping the others
            print(f"nova: error stopping {svc.binary}: {exc}", flush=True)
    fakes.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
