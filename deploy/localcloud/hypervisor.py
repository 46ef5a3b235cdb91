"""The fake hypervisor of a local cloud compute host, kept across restarts.

Each host's libvirt connection is Nova's fake (``nova.tests.fixtures.libvirt``)
with this project's elastic domains (``tests/nova/fakelibvirt.py``).  Real
guests run in QEMU processes that outlive nova-compute; here they live in
the nova-compute process, so each host writes its domains (definition,
state, live vCPUs, the memory the guest holds and its balloon target, the
vCPUs the guest runs offline, the kind of guest) to
``<state>/nova/hypervisors/<host>.json`` after every change, atomically
(write, then rename).  A nova-compute started again,
whether the previous process stopped cleanly or was killed, defines and
starts them as QEMU would have kept them running.

The guest inside a domain decides how it answers live changes, and the
guest is what its image holds.  The local cloud's Glance holds an image of
each guest kind (``seed.GUEST_KINDS``); a domain booted from one of
:data:`GUEST_IMAGES` gets that guest's behaviour, any other the default
one.

This module imports Nova only inside its functions: a Nova process sets its
concurrency mode before the first import of Nova, and the end-to-end tests
read the saved domains without Nova.
"""

import contextlib
import functools
import json
import os
import threading
from pathlib import Path

from lxml import etree

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"

# An image whose guest has no balloon driver (a kernel built without
# virtio_balloon, or a Windows guest without the virtio-win driver): libvirt
# takes a new balloon target, the guest never moves towards it and keeps all
# of its <memory>, as QEMU gave it at start.
WITHOUT_BALLOON_DRIVER_IMAGE = "5c0a64f2-0c4e-4b4e-9d53-3b5e0a6c2f71"
# An image whose guest runs no QEMU guest agent, and which does not ask
# Nova for the agent's channel (no hw_qemu_guest_agent): libvirt answers
# every agent call "QEMU guest agent is not configured".  Should the
# property be set on it all the same, the guest still runs no agent and
# libvirt answers "not connected".
WITHOUT_GUEST_AGENT_IMAGE = "8e3f1b6a-2d7c-4f0e-a5b9-6c1d2e4f7a93"
# image id: (image name, GuestBehaviour fields of tests/nova/fakelibvirt.py)
# Every other image, the default guest's too, boots a guest with a balloon
# driver and the guest agent (seed.GUEST_KINDS builds each as listed).
GUEST_IMAGES = {
    WITHOUT_BALLOON_DRIVER_IMAGE: (
        "localcloud-guest-without-balloon-driver",
        {"balloon_driver": False}),
    WITHOUT_GUEST_AGENT_IMAGE: (
        "localcloud-guest-without-agent",
        {"guest_agent": False}),
}

# The domain calls that change what the state file records.
_DOMAIN_CHANGES = (
    "create", "createWithFlags", "destroy", "shutdown", "reset", "suspend",
    "resume", "undefine", "undefineFlags", "managedSave", "managedSaveRemove",
    "attachDevice", "attachDeviceFlags", "detachDevice", "detachDeviceFlags",
    "setVcpusFlags", "setMemoryFlags", "setMemory", "setMetadata",
    "setGuestVcpus", "setMemoryStatsPeriod",
)
# What the guest inside a domain is (GuestBehaviour): saved with the
# domain, as a restarted nova-compute finds the same guest running.
_GUEST_FIELDS = ("balloon_driver", "releases_vcpus", "guest_agent",
                 "onlines_vcpus", "memory_stats")

RUNNING, PAUSED, SHUTOFF = "running", "paused", "shutoff"


def guest_behaviour_of(xml: str) -> dict:
    """The guest behaviour of a domain definition Nova generated.

    Nova writes the image a guest boots from into the domain's metadata
    (``<nova:root type="image" uuid=...>``).
    """
    root = etree.fromstring(xml).find(
        f"./metadata/{{{NOVA_NS}}}instance/{{{NOVA_NS}}}root")
    if root is None or root.get("type") != "image":
        return {}
    return dict(GUEST_IMAGES.get(root.get("uuid"), ("", {}))[1])


@functools.cache
def _domain_class(base: type) -> type:
    """``base`` (the fake libvirt's domain) that saves after every change."""

    class LocalCloudDomain(base):
        def __init__(self, connection, xml, running=False, transient=False):
            super().__init__(connection, xml, running=running,
                             transient=transient)
            self.set_guest(guest_behaviour_of(xml))

        def set_guest(self, fields: dict) -> None:
            behaviour = getattr(self, "behaviour", None)
            for name, value in fields.items():
                if behaviour is not None and name in _GUEST_FIELDS:
                    setattr(behaviour, name, value)

        def guest(self) -> dict | None:
            behaviour = getattr(self, "behaviour", None)
            if behaviour is None:
                return None
            return {name: getattr(behaviour, name) for name in _GUEST_FIELDS}

        # tests/nova/fakelibvirt.py keeps the running guest in ``_live``
        # (vCPUs, the memory it holds, its balloon target, in KiB, the
        # vCPUs the guest runs offline, the balloon's statistics period)
        # and has no public call to read or set it whole; QEMU and the
        # guest keep all of it across a nova-compute restart, so it is
        # saved and put back as it was.
        def live_state(self) -> dict | None:
            if getattr(self, "_live", None) is None:
                return None
            return {"vcpus": self._live["vcpus"],
                    "memory_kib": self._live_memory(),
                    "balloon_target_kib": self._live["balloon_target"],
                    "guest_offline_vcpus": sorted(
                        self._live["guest_offline"]),
                    "stats_period": self._live["stats_period"]}

        def restore_live_state(self, live: dict) -> None:
            if getattr(self, "_live", None) is None:
                return
            # A file saved before a key was kept: the value a domain
            # starts with.
            self._live.update(
                vcpus=live["vcpus"], memory=live["memory_kib"],
                balloon_target=live.get("balloon_target_kib",
                                        live["memory_kib"]),
                guest_offline=frozenset(live.get("guest_offline_vcpus", ())),
                stats_period=live.get("stats_period",
                                      self._live["stats_period"]))

        # libvirt's managed save calls take ``flags=0`` and return 0, and
        # a domain saved is shut off.  Nova's fake requires the flags,
        # returns None, leaves the domain's state running, and its own
        # undefineFlags(VIR_DOMAIN_UNDEFINE_MANAGED_SAVE), which Nova runs
        # to delete a suspended server, calls managedSaveRemove() without
        # them (tests/libvirt/test_fake_parity.py).
        def managedSave(self, flags: int = 0) -> int:  # noqa: N802
            from nova.tests.fixtures import libvirt as fakelibvirt
            super().managedSave(flags)
            self._state = fakelibvirt.VIR_DOMAIN_SHUTOFF
            return 0

        def managedSaveRemove(self, flags: int = 0) -> int:  # noqa: N802
            super().managedSaveRemove(flags)
            return 0

        def hasManagedSaveImage(self, flags: int = 0) -> int:  # noqa: N802
            return super().hasManagedSaveImage(flags)

        def undefineFlags(self, flags: int = 0) -> int:  # noqa: N802
            super().undefineFlags(flags)
            return 0

    def saves_after(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            changing = getattr(self._connection, "changing", None)
            if changing is None:
                return method(self, *args, **kwargs)
            with changing():
                return method(self, *args, **kwargs)
        return call

    for name in _DOMAIN_CHANGES:
        if hasattr(LocalCloudDomain, name):
            setattr(LocalCloudDomain, name,
                    saves_after(getattr(LocalCloudDomain, name)))
    return LocalCloudDomain


@functools.cache
def _connection_class() -> type:
    from nova.tests.fixtures import libvirt as fakelibvirt

    class LocalCloudConnection(fakelibvirt.Connection):
        """A fake connection whose domains save the host after a change.

        Its domains are built from the fake module's ``Domain`` of the
        moment, which ``ElasticLibvirtFixture`` replaces with the elastic
        one.
        """

        def __init__(self, hypervisor: "FakeHypervisor", **kwargs) -> None:
            super().__init__(**kwargs)
            self.changing = hypervisor.changing
            self._domain_class = _domain_class(fakelibvirt.Domain)

        def defineXML(self, xml):  # noqa: N802 (libvirt's name)
            with self.changing():
                dom = self._domain_class(connection=self, running=False,
                                         transient=False, xml=xml)
                self._vms[dom.name()] = dom
                self._emit_lifecycle(
                    dom, fakelibvirt.VIR_DOMAIN_EVENT_DEFINED, 0)
                return dom

        def createXML(self, xml, flags):  # noqa: N802 (libvirt's name)
            with self.changing():
                dom = self._domain_class(connection=self, running=True,
                                         transient=True, xml=xml)
                self._vms[dom.name()] = dom
                self._emit_lifecycle(
                    dom, fakelibvirt.VIR_DOMAIN_EVENT_STARTED, 0)
                return dom

    return LocalCloudConnection


class FakeHypervisor:
    """One compute host's fake libvirt connection, persisted as JSON."""

    def __init__(self, hostname: str, state_dir: Path | None) -> None:
        from nova.tests.fixtures import libvirt as fakelibvirt
        self.hostname = hostname
        self.path = state_dir / f"{hostname}.json" if state_dir else None
        # Held while a change and its save run, so that a save never sees
        # a change half made and two saves never interleave.
        self._lock = threading.RLock()
        self._depth = 0
        self.connection = _connection_class()(
            self,
            uri="qemu:///system",
            version=fakelibvirt.FAKE_LIBVIRT_VERSION,
            hv_version=fakelibvirt.FAKE_QEMU_VERSION,
            host_info=fakelibvirt.HostInfo(
                cpu_nodes=2, cpu_sockets=1, cpu_cores=2, cpu_threads=2,
                kB_mem=32 * 1024 * 1024),
            hostname=hostname)

    @contextlib.contextmanager
    def changing(self):
        """Run a change; save once the outermost change is done."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._save_or_report()

    def restore(self) -> int:
        """Define the saved domains again, running ones as they ran.

        A running domain gets its live size and balloon target back, which
        may differ from its persistent definition after a live change; a
        paused one is paused again, a suspended one keeps its managed save
        image.  The file is written once, at the end:
        a process killed halfway leaves it as it was.
        """
        if not self.path or not self.path.exists():
            return 0
        domains = json.loads(self.path.read_text())
        with self.changing():
            for saved in domains:
                dom = self.connection.defineXML(saved["xml"])
                dom.set_guest(saved.get("guest") or {})
                state = saved.get("state") or (
                    RUNNING if saved.get("active") else SHUTOFF)
                if saved.get("managed_save"):
                    # libvirt keeps the save image of a suspended guest.
                    dom.create()
                    dom.managedSave(0)
                if state == SHUTOFF:
                    continue
                dom.create()
                if saved.get("live"):
                    dom.restore_live_state(saved["live"])
                if state == PAUSED:
                    dom.suspend()
        return len(domains)

    def save(self) -> None:
        if not self.path:
            return
        from nova.tests.fixtures import libvirt as fakelibvirt
        every = (fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
                 | fakelibvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
        states = {fakelibvirt.VIR_DOMAIN_RUNNING: RUNNING,
                  fakelibvirt.VIR_DOMAIN_PAUSED: PAUSED}
        with self._lock:
            domains = []
            for dom in self.connection.listAllDomains(every):
                state = states.get(dom.info()[0], SHUTOFF)
                domains.append({
                    "uuid": dom.UUIDString(),
                    "name": dom.name(),
                    "state": state,
                    "xml": dom.XMLDesc(fakelibvirt.VIR_DOMAIN_XML_INACTIVE),
                    "live": dom.live_state() if state != SHUTOFF else None,
                    "guest": dom.guest(),
                    "managed_save": bool(dom.hasManagedSaveImage(0)),
                })
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.partial")
            partial.write_text(json.dumps(domains, indent=1))
            os.replace(partial, self.path)

    def _save_or_report(self) -> None:
        # A domain call must not fail because the state file could not be
        # written; the next change tries again.
        try:
            self.save()
        except OSError as exc:
            print(f"nova: could not save the domains of {self.hostname}: "
                  f"{exc}", flush=True)


def saved_domains(path: Path) -> dict[str, dict]:
    """The domains a host saved, by instance UUID (for tests and people).

    Each entry is what :meth:`FakeHypervisor.save` wrote, plus ``vcpus``,
    ``memory_mb`` (what the guest holds) and ``balloon_target_mb`` of a
    running or paused domain (None otherwise).
    """
    domains = {}
    for saved in json.loads(path.read_text()):
        live = saved.get("live")
        saved["vcpus"] = live["vcpus"] if live else None
        saved["memory_mb"] = _mib(live["memory_kib"]) if live else None
        saved["balloon_target_mb"] = (
            _mib(live["balloon_target_kib"]) if live else None)
        uuid = saved.get("uuid") or etree.fromstring(
            saved["xml"]).findtext("uuid")
        domains[uuid] = saved
    return domains


def _mib(kib: int) -> int:
    # As nova_ext.virt.live rounds what libvirt reports.
    return (kib + 512) // 1024
