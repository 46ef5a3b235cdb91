"""A small in-memory Nova that speaks the parts of the API the panel uses.

``FakeCloud`` keeps state (flavors, servers with the flavor copy Nova
embeds in them at boot and their elastic size, instance actions) and
answers HTTP-shaped calls with the contract of ``doc/design.md`` and
``doc/api.md``; ``FakeNovaServer`` serves it over HTTP on loopback so the
real ``xloud_dashboard.api`` code (openstacksdk, keystoneauth) talks to it.

Sizes follow the extension's rules: floors from the embedded flavor's
``xloud:minimum_*`` (the seed's unscoped keys as a fallback), the memory
floor, and the settings that make a dimension non-elastic
(``nova_ext.sizing`` / ``nova_ext.compatibility``, mirrored here because
the Django process does not import Nova; ``test_api`` compares the two).
A flavor's ``xloud:memory_model`` is written under the API's rules
(known values; with virtio-mem, ram and minimum in 2 MiB blocks); a
server booted with virtio-mem reports its device in readiness
(``virtio_mem_driver``, ``virtio_mem_unreturned_mb`` set its guest).
Adjustments stay ``adjusting`` until ``settle()`` runs, so tests see rows
refresh themselves; ``fail_next_adjust`` makes the compute side fail.
``add_drift`` makes the audit (``GET /os-xloud-audit``, ``doc/audit.md``)
report a finding, which ``POST /os-xloud-audit`` with ``fix`` heals
(``heal_errors`` makes a heal fail). Each server has the guest state its
compute host would read (balloon, guest agent, vCPU hotplug, what it
uses): readiness, utilisation and the recommendation derive from it, in
the single GET and, with ``readiness=true``, the list
(``readiness_offered = False``: an older extension). Compute hosts
(``add_host``) have placement inventories;
``GET /os-xloud-host-exposure`` (``nova_ext.exposure``) counts what their
servers hold now (placement follows the live size) and what the elastic
ones would add at their maximum. The autopilot: a host's
``[xloud_autopilot] mode`` (``FakeHost.autopilot_mode``), each server's
override (``PUT /os-xloud-adjust/{id}/autopilot``, refused as the
extension refuses it) and the decisions its host last reported
(``FakeServer.autopilot_decisions``) make the ``autopilot`` block, built
by ``nova_ext.readiness.autopilot_view`` itself; ``autosize()`` starts
an automatic change (an ``xloud-autosize`` action without a user, its
event named after the reason) that ``settle()`` finishes like any other;
``xloud:autosize`` is validated as Nova's validator does. Every answer
of the extension is checked against the extension's own response
schemas (``test_api``). The browser tests, the API tests and the
benchmark all use it.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import json
import math
import threading
import types
import urllib.parse
import uuid
from typing import Any

from nova_ext import compatibility, conf, sizing
from nova_ext import readiness as ext_readiness

ADMIN_PROJECT = 'admin-project'
ADJUST_ACTION = 'xloud-adjust'
ADJUST_EVENT = 'compute_xloud_adjust'
AUTO_ACTION = sizing.AUTO_ACTION
AUTOSIZE = sizing.AUTOSIZE
AUTOSIZE_VALUES = sizing.AUTOSIZE_VALUES
AUTOPILOT_MODES = sizing.AUTOPILOT_MODES
SYSMETA_AUTOSIZE = sizing.SYSMETA_AUTOSIZE
SYSMETA_AUTOSIZE_MODE = sizing.SYSMETA_AUTOSIZE_MODE
# The task state of an instance being adjusted (a resize being prepared).
ADJUSTING_TASK_STATE = 'resize_prep'
# The compute keeps the change records of the newest 20 adjustments.
CHANGE_HISTORY_LIMIT = 20

# The extension's own keys and rules (nova_ext.sizing,
# nova_ext.compatibility), and the [xloud] defaults (nova_ext.conf).
MINIMUM_CPU = sizing.MINIMUM_CPU
MINIMUM_MEMORY = sizing.MINIMUM_MEMORY
LEGACY_KEYS = sizing.LEGACY_KEYS
MEMORY_MODEL = sizing.MEMORY_MODEL
MEMORY_MODEL_BALLOON = sizing.MEMORY_MODEL_BALLOON
MEMORY_MODEL_VIRTIO_MEM = sizing.MEMORY_MODEL_VIRTIO_MEM
MEMORY_MODELS = sizing.MEMORY_MODELS
VIRTIO_MEM_BLOCK_MB = sizing.VIRTIO_MEM_BLOCK_MB
# What ``nova_ext.flavor_minimums`` carries into the embedded copies.
_ALL_MINIMUM_KEYS = (MINIMUM_CPU, MINIMUM_MEMORY, *LEGACY_KEYS.values(),
                     MEMORY_MODEL)
_DEFAULTS = {opt.name: opt.default for opt in conf.OPTS}
MEMORY_FLOOR_MB = _DEFAULTS['memory_floor_mb']
VCPU_FLOOR = _DEFAULTS['vcpu_floor']
VCPUS = compatibility.VCPUS
MEMORY = compatibility.MEMORY
spec_conflicts = compatibility.spec_conflicts

# The guest's verdicts of readiness (nova_ext.readiness), and the
# [xloud] defaults it recommends with.
READY_UNKNOWN = 'unknown'
BALLOON_ACTIVE = 'active'
BALLOON_SILENT = 'silent'
BALLOON_NO_STATISTICS = 'no_statistics'
BALLOON_NO_DEVICE = 'no_device'
HOTPLUG_NOT_POSSIBLE = 'not_possible'
VIRTIO_MEM_PLUGGED = 'plugged'
VIRTIO_MEM_IDLE = 'idle'
VIRTIO_MEM_PLUGGING = 'plugging'
VIRTIO_MEM_NOT_PLUGGING = 'not_plugging'
VIRTIO_MEM_UNPLUGGING = 'unplugging'
UTILISATION_WINDOW_SECONDS = _DEFAULTS['utilisation_window_seconds']
RECOMMEND_MEMORY_HEADROOM_PERCENT = _DEFAULTS[
    'recommend_memory_headroom_percent']
RECOMMEND_SPARE_VCPUS = _DEFAULTS['recommend_spare_vcpus']
RECOMMEND_MEMORY_STEP_MB = sizing.MEMORY_STEP_MB
# What ``readiness`` takes (nova_ext.api.schemas.index_query).
READINESS_VALUES = ('true', 'false', 'True', 'False', '1', '0')
# What the guest's kernel keeps of its memory (MemTotal below the
# domain's maximum).
GUEST_KERNEL_MB = 64
# Nova's vm_state of each API status the fake's servers take.
VM_STATES = {'ACTIVE': 'active', 'SHUTOFF': 'stopped', 'PAUSED': 'paused',
             'ERROR': 'error', 'SUSPENDED': 'suspended'}

CELLS = {'cell1': '8e1c2d4a-6f0b-4b8e-9a53-1d7f0c2b3a41',
         'cell2': '2b6f9e0d-3c1a-4d7e-8f25-6a9b0c1d2e53'}

class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_FAULT_NAMES = {400: 'badRequest', 401: 'unauthorized', 403: 'forbidden',
                404: 'itemNotFound', 409: 'conflictingRequest'}

# What the audit says of each kind (nova_ext.audit has the full sentences).
AUDIT_SEVERITIES = {
    'placement_below_live': 'critical', 'allocation_missing': 'critical',
    'placement_above_live': 'warning', 'record_live_differs': 'warning',
    'record_boot_differs': 'warning', 'domain_missing': 'warning',
    'adjustment_stuck': 'warning', 'host_unreachable': 'warning',
}


# What the audit's fix leaves alone (doc/audit.md).
UNHEALABLE = ('allocation_missing', 'domain_missing', 'host_unreachable')


def _range_reason(floor: int, maximum: int, unit: str) -> str | None:
    """``nova_ext.readiness._range_reason``."""
    if floor < maximum:
        return None
    return (f'Its flavor gives it no range to adjust in: {floor} to '
            f'{maximum} {unit}.')


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(
        '%Y-%m-%dT%H:%M:%S.%f')


def minimum_spec(specs: dict, key: str) -> tuple[str, str] | None:
    """``nova_ext.sizing.flavor_minimum_spec``: the scoped key wins."""
    for name in (key, LEGACY_KEYS[key]):
        if name in specs:
            return name, specs[name]
    return None


def memory_model(specs: dict) -> str:
    """``nova_ext.sizing.memory_model``: the balloon unless the specs
    name a model the extension knows."""
    value = specs.get(MEMORY_MODEL, MEMORY_MODEL_BALLOON)
    return value if value in MEMORY_MODELS else MEMORY_MODEL_BALLOON


def target_specs(specs: dict) -> dict[str, str]:
    """``nova_ext.flavor_minimums.target_specs``."""
    target = {}
    for key in (MINIMUM_CPU, MINIMUM_MEMORY):
        found = minimum_spec(specs, key)
        if found is not None:
            target[key] = str(found[1])
    if MEMORY_MODEL in specs:
        target[MEMORY_MODEL] = specs[MEMORY_MODEL]
    return target


def with_minimums(specs: dict, target: dict[str, str]) -> dict[str, str]:
    """``nova_ext.flavor_minimums.with_minimums``."""
    result = {key: value for key, value in specs.items()
              if key not in _ALL_MINIMUM_KEYS}
    result.update(target)
    return result


@dataclasses.dataclass
class FakeFlavor:
    id: str
    name: str
    vcpus: int
    memory_mb: int
    extra_specs: dict[str, str] = dataclasses.field(default_factory=dict)

    def minimum(self, key: str, specs: dict | None = None) -> int | None:
        """``nova_ext.sizing.flavor_minimum`` of ``specs`` (by default the
        flavor's own)."""
        found = minimum_spec(self.extra_specs if specs is None else specs,
                             key)
        if found is None:
            return None
        try:
            value = int(str(found[1]).strip())
        except ValueError:
            return None
        if value < 1:
            return None
        return min(value, self.vcpus if key == MINIMUM_CPU
                   else self.memory_mb)

    def as_nova(self) -> dict[str, Any]:
        return {'id': self.id, 'name': self.name, 'vcpus': self.vcpus,
                'ram': self.memory_mb, 'disk': 1,
                'os-flavor-access:is_public': True,
                'extra_specs': dict(self.extra_specs)}


@dataclasses.dataclass(frozen=True)
class Limits:
    """``nova_ext.sizing.ElasticSize``'s minimums, floors and reasons."""

    minimum_vcpus: int | None
    minimum_memory_mb: int | None
    floor_vcpus: int
    floor_memory_mb: int
    conflicts: dict[str, str]

    @classmethod
    def of(cls, flavor: FakeFlavor, specs: dict,
           image_properties: dict) -> Limits:
        conflicts = spec_conflicts(specs, image_properties)
        minimum_vcpus = flavor.minimum(MINIMUM_CPU, specs)
        minimum_memory = flavor.minimum(MINIMUM_MEMORY, specs)
        # [xloud] allow_shrink_without_minimum = False: a flavor without a
        # minimum keeps its size.
        floor_vcpus = minimum_vcpus or flavor.vcpus
        floor_memory = min(max(minimum_memory or flavor.memory_mb,
                               MEMORY_FLOOR_MB), flavor.memory_mb)
        if VCPUS in conflicts:
            minimum_vcpus, floor_vcpus = None, flavor.vcpus
        if MEMORY in conflicts:
            minimum_memory, floor_memory = None, flavor.memory_mb
        return cls(minimum_vcpus, minimum_memory, floor_vcpus, floor_memory,
                   conflicts)

    def boot_size(self, flavor: FakeFlavor) -> tuple[int, int]:
        """What an instance with no record boots at."""
        return (self.minimum_vcpus or flavor.vcpus,
                self.floor_memory_mb if self.minimum_memory_mb is not None
                else flavor.memory_mb)


@dataclasses.dataclass
class FakeServer:
    id: str
    name: str
    project_id: str
    host: str
    flavor: FakeFlavor
    # The flavor's extra specs as Nova copied them into the instance at
    # boot: they govern its size, whatever the flavor holds now.
    embedded_specs: dict[str, str]
    vcpus: int
    memory_mb: int
    boot_vcpus: int
    boot_memory_mb: int
    image_properties: dict[str, str] = dataclasses.field(
        default_factory=dict)
    cell: str = 'cell1'
    vm_status: str = 'ACTIVE'
    # A Nova operation in progress (set by tests), besides an adjustment.
    operation: str | None = None
    # Whether the compute recorded the size (after an adjustment, or
    # pinned by applying flavor minimums); else it derives from the
    # embedded minimums.
    recorded: bool = False
    updated_at: str | None = None
    adjustment_status: str | None = None
    request_id: str | None = None
    error: str | None = None
    pending: tuple[int, int] | None = None
    persist: bool = True
    locked: bool = False
    locked_reason: str | None = None
    # The RequestSpec's copy of the flavor's extra specs.
    request_spec_specs: dict[str, str] = dataclasses.field(
        default_factory=dict)
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The single GET's ``changes``, newest first.
    changes: list[dict[str, str]] = dataclasses.field(default_factory=list)
    # The guest as its compute host reads it (readiness): the balloon's
    # verdict, the guest agent (and why it did not answer), whether its
    # domain has hot-pluggable vCPUs; live-migrated since it started.
    # ``guest_read_error``: why the host did not answer (down, timed
    # out); None when it does.
    balloon: str = 'active'
    guest_agent: str = 'answering'
    agent_error: str | None = None
    vcpu_hotplug: str = 'possible'
    machine_type: str = 'pc-q35-7.2'
    migrated_since_boot: bool = False
    # What its programs use of its memory (the balloon statistics, when
    # they flow), and its vCPUs busy on average over the window (None: no
    # sample old enough yet).
    memory_used_mb: int = 256
    vcpus_busy: float | None = None
    guest_read_error: str | None = None
    # A virtio-mem guest: whether it runs a virtio_mem driver (without
    # one it plugs nothing), and the MiB it holds plugged beyond what its
    # device is asked for (blocks it has not given back).
    virtio_mem_driver: bool = True
    virtio_mem_unreturned_mb: int = 0
    # Its autopilot override as the system metadata holds it (''
    # follows the flavor, 'none' opts it out; '' mode follows the
    # host's), and the decisions its host's autopilot last reported (None:
    # no report yet); a decision() each.
    autosize: str = ''
    autosize_mode: str = ''
    autopilot_decisions: list[dict[str, Any]] | None = None

    @property
    def task_state(self) -> str | None:
        if self.adjustment_status == 'adjusting':
            return ADJUSTING_TASK_STATE
        return self.operation

    @property
    def status(self) -> str:
        # As Nova's status_from_state: a resize being prepared reads RESIZE.
        if self.task_state == ADJUSTING_TASK_STATE:
            return 'RESIZE'
        return self.vm_status

    @status.setter
    def status(self, value: str) -> None:
        self.vm_status = value

    def limits(self, specs: dict | None = None) -> Limits:
        return Limits.of(self.flavor, self.embedded_specs if specs is None
                         else specs, self.image_properties)

    def as_instance(self) -> types.SimpleNamespace:
        """What ``nova_ext.sizing.autosize`` reads of a Nova instance."""
        return types.SimpleNamespace(
            uuid=self.id,
            system_metadata={SYSMETA_AUTOSIZE: self.autosize,
                             SYSMETA_AUTOSIZE_MODE: self.autosize_mode},
            flavor=types.SimpleNamespace(
                extra_specs=dict(self.embedded_specs)))


def decision(dimension: str, action: str, current: int | None,
             target: int | None, reason: str) -> dict[str, Any]:
    """One autopilot decision as a compute host reports it
    (``nova_ext.readiness.AUTOPILOT_DECISION_SCHEMA``)."""
    return {'dimension': dimension, 'action': action, 'current': current,
            'target': target, 'reason': reason}


@dataclasses.dataclass
class FakeHost:
    """A compute host's placement inventory (one compute node), and what
    consumers other than its servers hold there (a migration's claim)."""

    name: str
    vcpus: int = 16
    memory_mb: int = 32768
    reserved_vcpus: int = 0
    reserved_memory_mb: int = 512
    # Nova's initial_cpu_allocation_ratio / initial_ram_allocation_ratio.
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    other_vcpus: int = 0
    other_memory_mb: int = 0
    # Placement could not be read for it (HostExposure.error).
    placement_error: str | None = None
    # Its [xloud_autopilot] mode.
    autopilot_mode: str = sizing.AUTOPILOT_OFF

    @property
    def resource_provider(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, self.name))


def exposure_dimension(total: int, reserved: int, ratio: float,
                       allocated: int, headroom: int) -> dict[str, Any]:
    """``nova_ext.exposure.Dimension.to_dict``."""
    capacity = max(0, math.floor((total - reserved) * ratio))
    return {'total': total, 'reserved': reserved, 'allocation_ratio': ratio,
            'capacity': capacity, 'allocated': allocated,
            'headroom': headroom, 'potential': allocated + headroom,
            'over_capacity': allocated + headroom > capacity}


class FakeCloud:
    """State plus the request handlers of the fake Nova."""

    def __init__(self) -> None:
        self.flavors: dict[str, FakeFlavor] = {}
        self.servers: dict[str, FakeServer] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next_adjust: str | None = None
        self.extension_offered = True
        # False: an extension older than readiness (issue 15): the list
        # refuses ``readiness`` (400) and no answer carries its keys.
        self.readiness_offered = True
        # False: an extension older than the audit (404); a status: the
        # audit's policy refuses the caller (403) or nova-api fails.
        self.audit_offered = True
        self.audit_error: int | None = None
        # False: an extension older than os-xloud-flavor-minimums (404).
        self.flavor_minimums_offered = True
        # False: an extension older than the autopilot: no ``autopilot``
        # block, its PUT unknown (404).
        self.autopilot_offered = True
        # server id -> the findings the audit reports, and the instances
        # it skips with why.
        self.drift: dict[str, list[dict[str, Any]]] = {}
        self.audit_skipped: dict[str, str] = {}
        # server id -> why the audit's fix cannot heal it (e.g. placement
        # has no room): its findings remain.
        self.heal_errors: dict[str, str] = {}
        # Compute hosts by name; a server's host not added has the
        # defaults of FakeHost. False: an extension older than
        # os-xloud-host-exposure (404); a status: its policy refuses the
        # caller (403) or nova-api fails.
        self.hosts: dict[str, FakeHost] = {}
        self.host_exposure_offered = True
        self.host_exposure_error: int | None = None
        # When set, each POST waits for this many concurrent POSTs: a
        # client that sends them one after another never gets through.
        self.adjust_barrier: threading.Barrier | None = None
        self._lock = threading.RLock()

    def add_flavor(self, name: str, vcpus: int, memory_mb: int, *,
                   minimum_cpu: int | None = None,
                   minimum_memory: int | None = None,
                   flavor_id: str | None = None, legacy: bool = False,
                   extra_specs: dict[str, str] | None = None) -> FakeFlavor:
        """A flavor; ``legacy`` spells its minimums with the seed's
        unscoped keys."""
        specs = dict(extra_specs or {})
        for key, value in ((MINIMUM_CPU, minimum_cpu),
                           (MINIMUM_MEMORY, minimum_memory)):
            if value is not None:
                specs[LEGACY_KEYS[key] if legacy else key] = str(value)
        flavor = FakeFlavor(flavor_id or str(len(self.flavors) + 1), name,
                            vcpus, memory_mb, specs)
        self.flavors[flavor.id] = flavor
        return flavor

    def add_server(self, name: str, flavor: FakeFlavor, *,
                   project_id: str = ADMIN_PROJECT, host: str = 'compute-1',
                   server_id: str | None = None, cell: str = 'cell1',
                   image_properties: dict[str, str] | None = None
                   ) -> FakeServer:
        """Boot a server: Nova copies the flavor into it and its
        RequestSpec; it runs at the boot size its minimums give."""
        image_properties = dict(image_properties or {})
        limits = Limits.of(flavor, flavor.extra_specs, image_properties)
        vcpus, memory_mb = limits.boot_size(flavor)
        server = FakeServer(
            id=server_id or str(uuid.uuid4()), name=name,
            project_id=project_id, host=host, flavor=flavor,
            embedded_specs=dict(flavor.extra_specs), vcpus=vcpus,
            memory_mb=memory_mb, boot_vcpus=vcpus, boot_memory_mb=memory_mb,
            image_properties=image_properties, cell=cell,
            request_spec_specs=dict(flavor.extra_specs))
        self.servers[server.id] = server
        return server

    def add_host(self, name: str, **inventory: Any) -> FakeHost:
        """A compute host with this inventory (``FakeHost``'s fields)."""
        host = FakeHost(name, **inventory)
        self.hosts[name] = host
        return host

    @classmethod
    def demo(cls, servers: int = 6) -> FakeCloud:
        cloud = cls()
        small = cloud.add_flavor('elastic.small', 4, 4096, minimum_cpu=1,
                                 minimum_memory=1024, flavor_id='10')
        large = cloud.add_flavor('elastic.large', 8, 16384, minimum_cpu=2,
                                 minimum_memory=4096, flavor_id='11')
        cloud.add_flavor('m1.tiny', 1, 512, flavor_id='1')
        for index in range(servers):
            cloud.add_server(f'vm-{index:04d}', small if index % 3 else large,
                             host=f'compute-{index % 2 + 1}',
                             project_id=('demo-project' if index % 2
                                         else ADMIN_PROJECT),
                             server_id=f'00000000-0000-4000-8000-{index:012d}')
        return cloud

    def add_drift(self, server_id: str, kind: str,
                  message: str | None = None, **observed: Any) -> None:
        """Make the audit report a finding of ``kind`` for the server."""
        server = self.servers[server_id]
        self.drift.setdefault(server_id, []).append({
            'server_id': server_id, 'host': server.host, 'kind': kind,
            'severity': AUDIT_SEVERITIES[kind],
            'message': message or f'{kind} on {server.host}',
            'observed': observed})

    def settle(self) -> None:
        """Finish every adjustment in flight, as the compute would."""
        with self._lock:
            for server in self.servers.values():
                if server.adjustment_status != 'adjusting':
                    continue
                action = server.actions[0]
                event = action['events'][0]
                event['finish_time'] = _now()
                # As Nova: event details only for a failure; what changed
                # goes to the instance's change records.
                if server.error:
                    server.adjustment_status = 'error'
                    event['result'] = 'Error'
                    event['details'] = server.error
                    details = f'failed, nothing applied: {server.error}'
                else:
                    old = (server.vcpus, server.memory_mb)
                    server.vcpus, server.memory_mb = server.pending
                    if server.persist:
                        server.boot_vcpus, server.boot_memory_mb = (
                            server.pending)
                    server.recorded = True
                    server.adjustment_status = 'success'
                    server.updated_at = _now()
                    event['result'] = 'Success'
                    details = ', '.join(
                        f'{key} {before} -> {after}' for key, before, after
                        in (('vcpus', old[0], server.vcpus),
                            ('memory_mb', old[1], server.memory_mb))
                        if before != after) or 'no change'
                    details += (', persisted' if server.persist
                                else ', not persisted')
                    if action['action'] == AUTO_ACTION:
                        details += f"; autopilot: {action['reason']}"
                server.changes.insert(0, {
                    'request_id': action['request_id'],
                    'changed_at': _now() + 'Z', 'details': details[:255]})
                del server.changes[CHANGE_HISTORY_LIMIT:]
                server.pending = None

    def size(self, server: FakeServer, source: str) -> dict[str, Any]:
        """The SIZE of ``nova_ext.api.views``, from the embedded flavor."""
        flavor = server.flavor
        limits = server.limits()
        return {
            'id': server.id, 'name': server.name,
            'project_id': server.project_id, 'host': server.host,
            'status': server.status,
            'flavor': {'id': flavor.id, 'name': flavor.name,
                       'vcpus': flavor.vcpus, 'memory_mb': flavor.memory_mb,
                       'minimum_cpu': limits.minimum_vcpus,
                       'minimum_memory': limits.minimum_memory_mb,
                       'memory_model': memory_model(server.embedded_specs)},
            'current_vcpus': server.vcpus,
            'current_memory_mb': server.memory_mb,
            'max_vcpus': flavor.vcpus, 'max_memory_mb': flavor.memory_mb,
            'min_vcpus': limits.floor_vcpus,
            'min_memory_mb': limits.floor_memory_mb,
            'boot_vcpus': server.boot_vcpus,
            'boot_memory_mb': server.boot_memory_mb,
            'source': source,
            'updated_at': server.updated_at if server.recorded else None,
            'not_adjustable': {'vcpus': limits.conflicts.get(VCPUS),
                               'memory_mb': limits.conflicts.get(MEMORY)},
            'adjustment': {'status': server.adjustment_status,
                           'request_id': server.request_id,
                           'error': server.error},
        }

    # -- readiness (nova_ext.readiness, doc/readiness.md) ---------------

    @staticmethod
    def _vm_state(server: FakeServer) -> str:
        return VM_STATES.get(server.vm_status, server.vm_status.lower())

    def _read_error(self, server: FakeServer) -> str | None:
        """Why its compute host did not read the guest (the controller's
        ``_observe``), or None when it did."""
        vm_state = self._vm_state(server)
        if vm_state not in ('active', 'paused'):
            return (f'The server is {vm_state}: its guest is read while it '
                    f'runs.')
        if not server.host:
            return 'The server has no compute host.'
        if vm_state == 'paused':
            return 'The guest is paused.'
        return server.guest_read_error

    def guest(self, server: FakeServer) -> dict[str, Any]:
        """``guest``: what the guest showed when its host read it just now;
        all null when not read (the fake keeps no older record)."""
        if self._read_error(server) is not None:
            return dict.fromkeys(('agent', 'online_vcpus',
                                  'available_memory_mb', 'usable_memory_mb',
                                  'as_of'))
        statistics = server.balloon == BALLOON_ACTIVE
        # MemTotal stays near the flavor's maximum (the balloon deflates
        # on OOM); MemAvailable follows the balloon. A virtio-mem guest's
        # MemTotal is its base memory and the blocks it holds.
        device = self.virtio_mem_device(server)
        total = (server.flavor.memory_mb if device is None else
                 server.limits().floor_memory_mb + device['plugged_mb'])
        return {
            'agent': server.guest_agent,
            'online_vcpus': (server.vcpus
                             if server.guest_agent == 'answering' else None),
            'available_memory_mb': (total - GUEST_KERNEL_MB
                                    if statistics else None),
            'usable_memory_mb': (max(0, server.memory_mb -
                                     server.memory_used_mb)
                                 if statistics else None),
            'as_of': _now() + 'Z',
        }

    @staticmethod
    def _hotplug(server: FakeServer) -> str:
        """Whether its domain has hot-pluggable vCPUs: all but the first
        of the flavor's (``nova_ext.virt.guest_config``), unless it was
        started without them."""
        if server.flavor.vcpus <= 1:
            return HOTPLUG_NOT_POSSIBLE
        return server.vcpu_hotplug

    def _common_reason(self, server: FakeServer) -> str | None:
        """``nova_ext.readiness._common_reason``."""
        vm_state = self._vm_state(server)
        if server.locked:
            return 'The server is locked.'
        if server.task_state is not None:
            if server.task_state == ADJUSTING_TASK_STATE:
                return 'An adjustment is in progress.'
            return (f'The server is busy with another operation '
                    f'({server.task_state}).')
        if vm_state == 'paused':
            return 'The server is paused: unpause it first.'
        if vm_state not in ('active', 'stopped'):
            return (f'The server is {vm_state}: only running and stopped '
                    f'servers are adjusted.')
        return None

    def readiness(self, server: FakeServer) -> dict[str, Any]:
        """``readiness`` as ``nova_ext.readiness.describe`` builds it."""
        limits = server.limits()
        error = self._read_error(server)
        read = error is None
        balloon = server.balloon if read else READY_UNKNOWN
        agent = server.guest_agent if read else READY_UNKNOWN
        hotplug = self._hotplug(server) if read else READY_UNKNOWN
        common = self._common_reason(server)
        vcpus = (common or limits.conflicts.get(VCPUS) or _range_reason(
            limits.floor_vcpus, server.flavor.vcpus, 'vCPUs'))
        if vcpus is None and hotplug == HOTPLUG_NOT_POSSIBLE:
            vcpus = (f'Its domain has no hot-pluggable vCPUs (machine type '
                     f'{server.machine_type or "unknown"}): it was started '
                     f'without them; a hard reboot starts it with them.')
        memory = (common or limits.conflicts.get(MEMORY) or _range_reason(
            limits.floor_memory_mb, server.flavor.memory_mb, 'MiB'))
        virtio_mem = self.virtio_mem(server)
        if virtio_mem is not None:
            # Its memory is plugged, not ballooned: the balloon only
            # sends statistics.
            if memory is None and (
                    virtio_mem['state'] == VIRTIO_MEM_NOT_PLUGGING):
                memory = (f"Its guest has plugged none of the "
                          f"{virtio_mem['requested_mb']} MiB its virtio-mem "
                          f"device was asked to add since it started: it "
                          f"has no virtio_mem driver (Linux 5.8 or later), "
                          f"and would not take up a new memory size.")
        elif memory is None and balloon == BALLOON_NO_DEVICE:
            memory = 'Its domain has no memory balloon.'
        elif memory is None and balloon == BALLOON_SILENT:
            memory = ('Its balloon driver has sent no statistics since the '
                      'guest started: the guest has no balloon driver, and '
                      'would not take up a new memory size.')
        warnings = []
        if server.migrated_since_boot:
            warnings.append('Live-migrated since it started: some guest '
                            'kernels cannot bring vCPUs hot-plugged after a '
                            'migration online.')
        if agent == 'not_configured':
            warnings.append('No guest agent (image property '
                            'hw_qemu_guest_agent): hot-plugged vCPUs come '
                            'online only if the guest onlines them itself, '
                            'and that cannot be checked.')
        elif agent == 'not_answering':
            warnings.append(f'The guest agent does not answer: '
                            f'{server.agent_error or "no reason given"}')
        if virtio_mem is not None:
            warnings.extend(self._virtio_mem_warnings(balloon, virtio_mem))
        elif balloon == BALLOON_NO_STATISTICS:
            warnings.append('No balloon statistics (collection is off, '
                            '[libvirt] mem_stats_period_seconds = 0, or the '
                            'guest has only just started): whether it takes '
                            'up a new memory size shows only when it is '
                            'asked to.')
        return {
            'as_of': _now() + 'Z' if read else None,
            'error': error,
            'balloon': balloon,
            'guest_agent': agent,
            'vcpu_hotplug': hotplug,
            'machine_type': server.machine_type if read else None,
            'virtio_mem': virtio_mem,
            'migrated_since_boot': server.migrated_since_boot,
            'last_outcome': server.adjustment_status,
            'adjustable': {VCPUS: vcpus is None, MEMORY: memory is None},
            'reasons': {VCPUS: vcpus, MEMORY: memory},
            'warnings': warnings,
        }

    def virtio_mem_device(self, server: FakeServer) -> dict[str, int] | None:
        """The virtio-mem device its host reads (``nova_ext.virt.live
        .virtio_mem_figures``), None without one: a domain gets one from a
        virtio-mem flavor with a memory range (``nova_ext.virt
        .guest_config.uses_virtio_mem``), asked for what the guest has
        beyond its base memory (the floor). An adjustment in flight has
        asked the device already; the guest still holds what it had."""
        limits = server.limits()
        if (memory_model(server.embedded_specs) != MEMORY_MODEL_VIRTIO_MEM
                or limits.floor_memory_mb >= server.flavor.memory_mb):
            return None
        base = limits.floor_memory_mb
        asked = (server.pending[1] if server.pending is not None
                 else server.memory_mb)
        plugged = (server.memory_mb - base + server.virtio_mem_unreturned_mb
                   if server.virtio_mem_driver else 0)
        return {'requested_mb': asked - base, 'plugged_mb': plugged,
                'size_mb': server.flavor.memory_mb - base}

    def virtio_mem(self, server: FakeServer) -> dict[str, Any] | None:
        """``readiness.virtio_mem`` (``nova_ext.readiness._virtio_mem``):
        None for a balloon guest, ``unknown`` for a virtio-mem one not
        read. Every fake guest started long ago: one that has plugged
        nothing of what it was asked has no driver."""
        if memory_model(server.embedded_specs) != MEMORY_MODEL_VIRTIO_MEM:
            return None
        if self._read_error(server) is not None:
            return {'state': READY_UNKNOWN, 'requested_mb': None,
                    'plugged_mb': None}
        device = self.virtio_mem_device(server)
        if device is None:
            return None
        requested, plugged = device['requested_mb'], device['plugged_mb']
        if plugged > requested:
            state = VIRTIO_MEM_UNPLUGGING
        elif plugged == requested:
            state = VIRTIO_MEM_PLUGGED if requested else VIRTIO_MEM_IDLE
        elif plugged:
            state = VIRTIO_MEM_PLUGGING
        else:
            state = VIRTIO_MEM_NOT_PLUGGING
        return {'state': state, 'requested_mb': requested,
                'plugged_mb': plugged}

    @staticmethod
    def _virtio_mem_warnings(balloon: str, virtio_mem: dict) -> list[str]:
        """``nova_ext.readiness._virtio_mem_warnings``."""
        warnings = []
        state = virtio_mem['state']
        plugged, requested = (virtio_mem['plugged_mb'],
                              virtio_mem['requested_mb'])
        if state == VIRTIO_MEM_PLUGGING:
            warnings.append(f'The guest has plugged {plugged} of the '
                            f'{requested} MiB its virtio-mem device was '
                            f'asked to add.')
        elif state == VIRTIO_MEM_UNPLUGGING:
            warnings.append(f'The guest holds {plugged} MiB through its '
                            f'virtio-mem device, which was asked for '
                            f'{requested}: blocks in use that it has not '
                            f'given back yet. They stay counted in '
                            f'placement.')
        if balloon in (BALLOON_NO_DEVICE, BALLOON_SILENT,
                       BALLOON_NO_STATISTICS):
            warnings.append('Its memory is not shrunk while the guest sends '
                            'no balloon statistics: with virtio-mem they say '
                            'how much it uses, and unplugged blocks do not '
                            'come back.')
        return warnings

    def utilisation(self, server: FakeServer) -> dict[str, Any]:
        """``nova_ext.readiness._utilisation``."""
        guest = self.guest(server)
        if guest['as_of'] is None:
            return {'memory': None, 'vcpus': None,
                    'reason': 'The guest was not read.'}
        reasons = []
        memory = vcpus = None
        if guest['usable_memory_mb'] is None:
            reasons.append('The guest sends no memory statistics.')
        else:
            memory = {'used_mb': max(server.memory_mb -
                                     guest['usable_memory_mb'], 0),
                      'current_mb': server.memory_mb}
        if server.vcpus_busy is None:
            reasons.append(f'vCPU use is averaged over '
                           f'{UTILISATION_WINDOW_SECONDS} seconds; the host '
                           f'has no sample of this guest old enough yet.')
        else:
            vcpus = {'busy': server.vcpus_busy, 'current': server.vcpus,
                     'window_seconds': UTILISATION_WINDOW_SECONDS}
        return {'memory': memory, 'vcpus': vcpus,
                'reason': ' '.join(reasons) or None}

    def recommendation(self, server: FakeServer) -> dict[str, Any]:
        """``nova_ext.readiness._recommendation``: none for a dimension its
        flavor or image keeps fixed (or gives no range); one for a
        dimension only momentarily refused (locked, busy)."""
        usage = self.utilisation(server)
        limits = server.limits()
        flavor = server.flavor
        fixed = {VCPUS: (VCPUS in limits.conflicts or
                         limits.floor_vcpus >= flavor.vcpus),
                 MEMORY: (MEMORY in limits.conflicts or
                          limits.floor_memory_mb >= flavor.memory_mb)}
        answer: dict[str, Any] = dict.fromkeys(
            ('vcpus', 'memory_mb', 'vcpus_rule', 'memory_rule'))
        memory = usage['memory']
        if memory is not None and not fixed[MEMORY]:
            headroom = RECOMMEND_MEMORY_HEADROOM_PERCENT
            needed = memory['used_mb'] * 100 / (100 - headroom)
            step = RECOMMEND_MEMORY_STEP_MB
            kept = f'{headroom}% of it kept free'
            if self.virtio_mem(server) is not None:
                # The least the compute host lets a virtio-mem shrink
                # reach.
                margin = sizing.VIRTIO_MEM_SHRINK_MARGIN_MB
                needed = max(needed, memory['used_mb'] + margin)
                kept += f' and at least {margin} MiB (virtio-mem)'
            value = min(max(math.ceil(needed / step) * step,
                            limits.floor_memory_mb), flavor.memory_mb)
            answer['memory_mb'] = value
            answer['memory_rule'] = (
                f"Uses {memory['used_mb']} of {memory['current_mb']} MiB; "
                f"{kept}, in steps of {step} MiB, within "
                f"{limits.floor_memory_mb}-{flavor.memory_mb} MiB: "
                f"{value} MiB.")
        vcpus = usage['vcpus']
        if vcpus is not None and not fixed[VCPUS]:
            spare = RECOMMEND_SPARE_VCPUS
            step = compatibility.vcpu_step(server.embedded_specs,
                                           server.image_properties)
            wanted = math.ceil(vcpus['busy']) + spare
            value = min(max(math.ceil(wanted / step) * step,
                            limits.floor_vcpus), flavor.vcpus)
            answer['vcpus'] = value
            answer['vcpus_rule'] = (
                f"{vcpus['busy']:.2f} vCPUs busy on average over the last "
                f"{vcpus['window_seconds']} seconds, plus {spare} spare, "
                f"within {limits.floor_vcpus}-{flavor.vcpus}: {value}.")
        return answer

    def with_readiness(self, server: FakeServer,
                       size: dict[str, Any]) -> dict[str, Any]:
        """SIZE with the keys of readiness (the single GET always, the list
        with ``readiness=true``); an extension older than readiness sends
        none of them, one older than the autopilot no ``autopilot``."""
        if not self.readiness_offered:
            return size
        answer = {**size, 'readiness': self.readiness(server),
                  'utilisation': self.utilisation(server),
                  'recommendation': self.recommendation(server)}
        if self.autopilot_offered:
            answer['autopilot'] = self.autopilot(server)
        return answer

    # -- the autopilot (nova_ext.readiness.autopilot_view) --------------

    def host_autopilot(self, server: FakeServer) -> dict[str, Any] | None:
        """The ``autopilot`` part of what its compute host answers
        (``readiness.GUEST_SCHEMA``); None when the host was not read."""
        if self._read_error(server) is not None:
            return None
        host_mode = (self.hosts.get(server.host) or
                     FakeHost(server.host)).autopilot_mode
        report = None
        if server.autopilot_decisions is not None:
            setting = sizing.autosize(server.as_instance(), host_mode)
            report = {'mode': setting.mode,
                      'dimensions': list(setting.dimensions),
                      'decisions': [dict(decided) for decided
                                    in server.autopilot_decisions],
                      'as_of': _now() + 'Z'}
        return {'host_mode': host_mode, 'report': report}

    def autopilot(self, server: FakeServer) -> dict[str, Any]:
        """``autopilot``: the extension's own view of the setting and of
        what the host answered."""
        answered = self.host_autopilot(server)
        return ext_readiness.autopilot_view(
            server.as_instance(),
            None if answered is None else {'autopilot': answered})

    def _set_autopilot(self, server_id: str, body: Any) -> dict[str, Any]:
        """``PUT /os-xloud-adjust/{id}/autopilot``
        (``nova_ext.api.controller.update_autopilot``): the body's schema
        (400), the server (404), a dimension its flavor, image or devices
        keep fixed (409)."""
        wanted = body.get('autopilot') if isinstance(body, dict) else None
        if not isinstance(wanted, dict) or set(body) != {'autopilot'}:
            raise HTTPError(400, f"Invalid input for field/attribute "
                                 f"autopilot. Value: {body}. 'autopilot' "
                                 f"is a required property")
        if set(wanted) != {'dimensions', 'mode'}:
            raise HTTPError(400, f"Invalid input for field/attribute "
                                 f"autopilot. Value: {wanted}. 'dimensions'"
                                 f" and 'mode' are required, nothing else "
                                 f"is allowed")
        dimensions, mode = wanted['dimensions'], wanted['mode']
        if dimensions is not None and (
                not isinstance(dimensions, list) or
                any(dimension not in (VCPUS, MEMORY)
                    for dimension in dimensions) or
                len(set(dimensions)) != len(dimensions)):
            raise HTTPError(400, f"Invalid input for field/attribute "
                                 f"dimensions. Value: {dimensions}.")
        if mode is not None and mode not in AUTOPILOT_MODES:
            raise HTTPError(400, f"Invalid input for field/attribute mode. "
                                 f"Value: {mode}. {mode!r} is not one of "
                                 f"{[*AUTOPILOT_MODES, None]}")
        server = self._server(server_id)
        if dimensions is not None:
            conflicts = server.limits().conflicts
            fixed = [dimension for dimension in dimensions
                     if dimension in conflicts]
            if fixed:
                raise HTTPError(409, (
                    f'{fixed[0]} of server {server.id} cannot be sized '
                    f'automatically: {conflicts[fixed[0]]}.'))
        server.autosize = ('' if dimensions is None
                           else sizing.autosize_value(dimensions))
        server.autosize_mode = mode or ''
        setting = sizing.autosize(server.as_instance(), sizing.AUTOPILOT_ON)
        return {'autopilot': {
            'dimensions': list(setting.dimensions),
            'dimensions_from': setting.dimensions_from,
            'instance_mode': setting.instance_mode}}

    def autosize(self, server: FakeServer, reason: str, *,
                 vcpus: int | None = None,
                 memory_mb: int | None = None) -> str:
        """Start an automatic change, as the compute host's autopilot
        does (``ElasticSizingEndpoint.adjust_automatically``): an
        ``xloud-autosize`` action without a user, its event named after
        ``reason``; ``settle()`` finishes it. Returns its request id."""
        with self._lock:
            if server.locked or server.task_state is not None:
                raise ValueError(f'{server.name} is locked or busy')
            request_id = f'req-{uuid.uuid4()}'
            server.adjustment_status = 'adjusting'
            server.request_id = request_id
            server.error = self.fail_next_adjust
            self.fail_next_adjust = None
            server.pending = (server.vcpus if vcpus is None else vcpus,
                              server.memory_mb if memory_mb is None
                              else memory_mb)
            server.persist = True
            server.actions.insert(0, {
                'action': AUTO_ACTION, 'instance_uuid': server.id,
                'request_id': request_id, 'user_id': None,
                'project_id': server.project_id, 'start_time': _now(),
                'updated_at': _now(), 'message': None,
                'events': [{'event': sizing.auto_event(reason),
                            'start_time': _now(), 'finish_time': None,
                            'result': None, 'host': server.host,
                            'details': None}],
                # The fake's own: what settle() writes in the record.
                'reason': reason})
            return request_id

    def handle(self, method: str, path: str, query: dict[str, str],
               body: Any) -> tuple[int, Any]:
        """Answer one call; raises ``HTTPError`` for Nova's error answers."""
        if method == 'POST' and self.adjust_barrier is not None:
            try:
                self.adjust_barrier.wait()
            except threading.BrokenBarrierError:
                raise HTTPError(409, 'Adjustments arrived one at a time.')
        with self._lock:
            self.calls.append((method, path))
            parts = [part for part in path.split('/') if part]
            if parts[:1] == ['v2.1']:
                parts = parts[1:]
            route = (method, *parts)
            if parts and parts[0] == 'os-xloud-adjust':
                if not self.extension_offered:
                    raise HTTPError(404, 'The resource could not be found.')
                if route == ('GET', 'os-xloud-adjust'):
                    return 200, self._list_sizes(query)
                if len(parts) == 2 and method == 'GET':
                    server = self._server(parts[1])
                    size = self.size(server, 'live')
                    size['changes'] = [dict(change)
                                       for change in server.changes]
                    size['guest'] = self.guest(server)
                    return 200, {'server': self.with_readiness(server,
                                                               size)}
                if len(parts) == 2 and method == 'POST':
                    return 202, self._adjust(self._server(parts[1]), body)
                if (len(parts) == 3 and parts[2] == 'autopilot' and
                        method == 'PUT' and self.autopilot_offered):
                    return 200, self._set_autopilot(parts[1], body)
            if parts and parts[0] == 'os-xloud-audit':
                if not (self.extension_offered and self.audit_offered):
                    raise HTTPError(404, 'The resource could not be found.')
                if self.audit_error is not None:
                    raise HTTPError(self.audit_error, {
                        403: "Policy doesn't allow xloud:elastic_sizing:"
                             "audit to be performed.",
                    }.get(self.audit_error, 'Unexpected API Error.'))
                if route == ('GET', 'os-xloud-audit'):
                    return 200, self._audit(query)
                if route == ('POST', 'os-xloud-audit'):
                    return 200, self._audit_fix(body)
            if route == ('GET', 'os-xloud-host-exposure'):
                if not (self.extension_offered and
                        self.host_exposure_offered):
                    raise HTTPError(404, 'The resource could not be found.')
                if self.host_exposure_error is not None:
                    raise HTTPError(self.host_exposure_error, {
                        403: "Policy doesn't allow xloud:elastic_sizing:"
                             "host_exposure to be performed.",
                    }.get(self.host_exposure_error,
                          'Unexpected API Error.'))
                return 200, self._host_exposure(query)
            if parts and parts[0] == 'os-xloud-flavor-minimums':
                if not (self.extension_offered and
                        self.flavor_minimums_offered):
                    raise HTTPError(404, 'The resource could not be found.')
                if len(parts) == 2 and method == 'GET':
                    flavor = self._flavor(parts[1])
                    return 200, {'flavor_minimums': self._minimums_report(
                        flavor)}
                if len(parts) == 3 and parts[2] == 'action' and \
                        method == 'POST':
                    if body != {'apply': {}}:
                        raise HTTPError(400, 'Invalid input for field/'
                                             'attribute apply.')
                    flavor = self._flavor(parts[1])
                    return 200, {'flavor_minimums': self._apply_minimums(
                        flavor)}
            if route == ('GET', 'flavors', 'detail'):
                return 200, {'flavors': [flavor.as_nova() for flavor
                                         in self.flavors.values()]}
            if len(parts) == 2 and route[:2] == ('GET', 'flavors'):
                return 200, {'flavor': self._flavor(parts[1]).as_nova()}
            if len(parts) == 3 and parts[2] == 'os-extra_specs' and \
                    method == 'GET':
                flavor = self._flavor(parts[1])
                return 200, {'extra_specs': dict(flavor.extra_specs)}
            if len(parts) == 3 and parts[2] == 'os-extra_specs' and \
                    method == 'POST':
                flavor = self._flavor(parts[1])
                self._check_minimum_specs(flavor, body['extra_specs'])
                flavor.extra_specs.update(body['extra_specs'])
                return 200, {'extra_specs': dict(flavor.extra_specs)}
            if len(parts) == 4 and parts[2] == 'os-extra_specs' and \
                    method == 'DELETE':
                flavor = self._flavor(parts[1])
                if parts[3] not in flavor.extra_specs:
                    raise HTTPError(404, f'Flavor {flavor.id} has no extra '
                                         f'spec {parts[3]}.')
                del flavor.extra_specs[parts[3]]
                return 200, None
            if route == ('GET', 'servers'):
                return 200, self._list_servers(query)
            if len(parts) == 2 and route[:2] == ('GET', 'servers'):
                server = self._server(parts[1])
                return 200, {'server': {
                    'id': server.id, 'name': server.name,
                    'status': server.status, 'locked': server.locked,
                    'locked_reason': server.locked_reason}}
            if len(parts) >= 3 and parts[0] == 'servers' and \
                    parts[2] == 'os-instance-actions' and method == 'GET':
                server = self._server(parts[1])
                if len(parts) == 3:
                    return 200, {'instanceActions': [
                        {key: value for key, value in action.items()
                         if key not in ('events', 'reason')}
                        for action in server.actions]}
                for action in server.actions:
                    if action['request_id'] == parts[3]:
                        return 200, {'instanceAction': {
                            key: value for key, value in action.items()
                            if key != 'reason'}}
                raise HTTPError(404, f'Action {parts[3]} not found')
            raise HTTPError(404, f'No fake route for {method} {path}')

    def _server(self, server_id: str) -> FakeServer:
        try:
            return self.servers[server_id]
        except KeyError:
            raise HTTPError(404, f'Instance {server_id} could not be found.')

    def _flavor(self, flavor_id: str) -> FakeFlavor:
        try:
            return self.flavors[flavor_id]
        except KeyError:
            raise HTTPError(404, f'Flavor {flavor_id} could not be found.')

    def _check_minimum_specs(self, flavor: FakeFlavor, specs: dict) -> None:
        """What ``nova_ext.api.filter`` refuses before Nova stores specs."""
        limits = {MINIMUM_CPU: 'vcpus', MINIMUM_MEMORY: 'memory_mb',
                  LEGACY_KEYS[MINIMUM_CPU]: 'vcpus',
                  LEGACY_KEYS[MINIMUM_MEMORY]: 'memory_mb'}
        if MEMORY_MODEL in specs and specs[MEMORY_MODEL] not in MEMORY_MODELS:
            # Nova's enum validator's reason (nova.api.validation
            # .extra_specs.base).
            raise HTTPError(400, (
                f"Invalid extra spec {MEMORY_MODEL}={specs[MEMORY_MODEL]}: "
                f"Validation failed; '{specs[MEMORY_MODEL]}' is not one of: "
                f"{', '.join(MEMORY_MODELS)}."))
        if AUTOSIZE in specs and specs[AUTOSIZE] not in AUTOSIZE_VALUES:
            raise HTTPError(400, (
                f"Invalid extra spec {AUTOSIZE}={specs[AUTOSIZE]}: "
                f"Validation failed; '{specs[AUTOSIZE]}' is not one of: "
                f"{', '.join(AUTOSIZE_VALUES)}."))
        for key, field in limits.items():
            if key not in specs:
                continue
            text = str(specs[key])
            if not text.isdigit() or int(text) < 1:
                raise HTTPError(400, f'Invalid extra spec {key}={text}: '
                                     f'must be an integer >= 1.')
            limit = getattr(flavor, field)
            if int(text) > limit:
                raise HTTPError(400, (
                    f"Validation failed; extra spec {key}={text} is above "
                    f"the flavor's {field} {limit}: the minimum cannot "
                    f"exceed the maximum."))
            if field == 'memory_mb' and int(text) < MEMORY_FLOOR_MB:
                raise HTTPError(400, (
                    f'Validation failed; extra spec {key}={text} is below '
                    f'[xloud] memory_floor_mb {MEMORY_FLOOR_MB} MiB, the '
                    f'least any guest is given.'))
        merged = {**flavor.extra_specs, **specs}
        conflicts = spec_conflicts(merged)
        for key, field in limits.items():
            if key in merged and field in conflicts:
                raise HTTPError(400, (
                    f'Validation failed; extra spec {key} cannot be set on '
                    f'this flavor: {conflicts[field]}.'))
        if merged.get(MEMORY_MODEL) == MEMORY_MODEL_VIRTIO_MEM and (
                MEMORY_MODEL in specs or set(specs) & set(limits)):
            self._check_virtio_mem(flavor, merged)

    @staticmethod
    def _check_virtio_mem(flavor: FakeFlavor, specs: dict) -> None:
        """``nova_ext.api.filter._check_virtio_mem``: the flavor's ram
        and its memory minimum in whole blocks."""
        sizes = [("the flavor's ram", flavor.memory_mb)]
        for key in (MINIMUM_MEMORY, LEGACY_KEYS[MINIMUM_MEMORY]):
            value = str(specs.get(key, '')).strip()
            if value.isdigit():
                sizes.append((f'{key}={value}', int(value)))
                break
        for name, megabytes in sizes:
            if megabytes % VIRTIO_MEM_BLOCK_MB:
                raise HTTPError(400, (
                    f'Validation failed; {name} is not a multiple of '
                    f'{VIRTIO_MEM_BLOCK_MB} MiB: {MEMORY_MODEL}='
                    f'{MEMORY_MODEL_VIRTIO_MEM} plugs memory in blocks of '
                    f'{VIRTIO_MEM_BLOCK_MB} MiB.'))

    def _list_sizes(self, query: dict[str, str]) -> dict[str, Any]:
        readiness = query.get('readiness')
        if readiness is not None and not self.readiness_offered:
            # The query schema of an older extension.
            raise HTTPError(400, "Invalid input for query parameters "
                                 "readiness. Value: readiness. Additional "
                                 "properties are not allowed ('readiness' "
                                 "was unexpected)")
        if readiness not in (None, *READINESS_VALUES):
            raise HTTPError(400, f'Invalid input for query parameters '
                                 f'readiness. Value: {readiness}.')
        readiness = readiness in ('true', 'True', '1')
        servers = sorted(self.servers.values(), key=lambda s: s.name)
        for key, attribute in (('host', 'host'), ('project_id', 'project_id'),
                               ('name', 'name')):
            if query.get(key):
                servers = [server for server in servers
                           if query[key] in getattr(server, attribute)]
        if query.get('flavor'):
            servers = [server for server in servers
                       if server.flavor.id == query['flavor']]
        page, links = self._page(servers, query, '/os-xloud-adjust')
        if not readiness:
            return {'servers': [self.size(server, 'recorded')
                                for server in page],
                    'servers_links': links}
        return {'servers': [
            self.with_readiness(server, {**self.size(server, 'recorded'),
                                         'guest': self.guest(server)})
            for server in page], 'servers_links': links}

    @staticmethod
    def _page(servers: list[FakeServer], query: dict[str, str], path: str):
        if query.get('marker'):
            ids = [server.id for server in servers]
            if query['marker'] not in ids:
                raise HTTPError(400, f"marker [{query['marker']}] not found")
            servers = servers[ids.index(query['marker']) + 1:]
        limit = int(query.get('limit', 1000))
        page = servers[:limit]
        links = []
        if len(servers) > limit:
            links.append({'rel': 'next',
                          'href': f'{path}?marker={page[-1].id}'})
        return page, links

    def _list_servers(self, query: dict[str, str]) -> dict[str, Any]:
        """Nova's ``GET /servers``: ids, names and links; ``locked``
        filters (microversion 2.73)."""
        servers = sorted(self.servers.values(), key=lambda s: s.id)
        if 'locked' in query:
            wanted = query['locked'].strip().lower() in (
                '1', 'true', 'yes', 'on', 'y')
            servers = [server for server in servers
                       if server.locked == wanted]
        page, links = self._page(servers, query, '/servers')
        return {'servers': [{'id': server.id, 'name': server.name,
                             'links': []} for server in page],
                'servers_links': links}

    # -- os-xloud-flavor-minimums (nova_ext.flavor_minimums) -------------

    def _flavor_servers(self, flavor: FakeFlavor) -> list[FakeServer]:
        return sorted((server for server in self.servers.values()
                       if server.flavor.id == flavor.id),
                      key=lambda server: (server.cell, server.id))

    @staticmethod
    def _carries(server: FakeServer, target: dict[str, str]) -> bool:
        return {key: server.embedded_specs[key] for key in _ALL_MINIMUM_KEYS
                if key in server.embedded_specs} == target

    @staticmethod
    def _below(server: FakeServer, target: dict[str, str]) -> bool:
        limits = server.limits(with_minimums(server.embedded_specs, target))
        return (min(server.vcpus, server.boot_vcpus) < limits.floor_vcpus or
                min(server.memory_mb, server.boot_memory_mb) <
                limits.floor_memory_mb)

    def _minimums_report(self, flavor: FakeFlavor) -> dict[str, Any]:
        target = target_specs(flavor.extra_specs)
        cells = {name: {'uuid': cell_uuid, 'name': name, 'instances': 0,
                        'current': 0, 'stale': 0, 'busy': 0,
                        'below_minimum': 0, 'error': None}
                 for name, cell_uuid in sorted(CELLS.items())}
        for server in self._flavor_servers(flavor):
            cell = cells[server.cell]
            cell['instances'] += 1
            if self._carries(server, target):
                cell['current'] += 1
            else:
                cell['stale'] += 1
                if server.task_state is not None:
                    cell['busy'] += 1
            if self._below(server, target):
                cell['below_minimum'] += 1
        keys = ('instances', 'current', 'stale', 'busy', 'below_minimum')
        return {
            'flavor': {'id': flavor.id, 'name': flavor.name,
                       'vcpus': flavor.vcpus, 'memory_mb': flavor.memory_mb,
                       'minimum_cpu': flavor.minimum(MINIMUM_CPU),
                       'minimum_memory': flavor.minimum(MINIMUM_MEMORY),
                       'memory_model': memory_model(flavor.extra_specs)},
            'memory_floor_mb': MEMORY_FLOOR_MB,
            **{key: sum(cell[key] for cell in cells.values())
               for key in keys},
            'cells': list(cells.values()),
            'errors': [],
        }

    def _apply_minimums(self, flavor: FakeFlavor) -> dict[str, Any]:
        target = target_specs(flavor.extra_specs)
        outcomes = []
        for server in self._flavor_servers(flavor):
            if self._carries(server, target):
                continue
            below = self._below(server, target)
            outcome = {
                'server_id': server.id, 'cell': server.cell,
                'below_minimum': below, 'recorded': server.recorded,
                'current_vcpus': server.vcpus,
                'current_memory_mb': server.memory_mb,
                'boot_vcpus': server.boot_vcpus,
                'boot_memory_mb': server.boot_memory_mb}
            if server.task_state is not None:
                outcomes.append({**outcome, 'result': 'busy', 'message': (
                    f'An operation is in progress (task_state '
                    f'{server.task_state}): skipped, nothing changed; '
                    f'apply again once it has ended.')})
                continue
            notes = []
            if below:
                limits = server.limits(with_minimums(server.embedded_specs,
                                                     target))
                notes.append(
                    f'Its recorded size ({server.vcpus} vCPUs / '
                    f'{server.memory_mb} MiB, booting at {server.boot_vcpus}'
                    f' vCPUs / {server.boot_memory_mb} MiB) is below the '
                    f'minimum of {limits.floor_vcpus} vCPUs / '
                    f'{limits.floor_memory_mb} MiB: it keeps running as it '
                    f'is; adjust it to the minimum.')
            if not server.recorded:
                # The size it has is recorded, so it does not move.
                server.recorded = True
                notes.append(
                    f'Its size was not recorded; the size it has '
                    f'({server.vcpus} vCPUs / {server.memory_mb} MiB) is '
                    f'now, so that the new minimums do not change it.')
            server.embedded_specs = with_minimums(server.embedded_specs,
                                                  target)
            server.request_spec_specs = with_minimums(
                server.request_spec_specs, target)
            outcomes.append({**outcome, 'result': 'updated',
                             'message': ' '.join(notes) or None})
        report = self._minimums_report(flavor)
        report['updated'] = sum(outcome['result'] == 'updated'
                                for outcome in outcomes)
        report['servers'] = outcomes
        return report

    def _audit(self, query: dict[str, Any]) -> dict[str, Any]:
        """The report of an audit without fix, as nova_ext.audit builds
        it: elastic servers only, hosts in order, findings per server."""
        wanted = query.get('server_id')
        if isinstance(wanted, str):
            wanted = [wanted]
        servers = [server for server in self.servers.values()
                   if self.is_elastic(server)
                   and (wanted is None or server.id in wanted)
                   and (not query.get('host') or
                        server.host == query['host'])]
        servers.sort(key=lambda server: (server.host, server.id))
        findings = [finding for server in servers
                    for finding in self.drift.get(server.id, [])]
        skipped = [{'server_id': server.id, 'host': server.host,
                    'reason': self.audit_skipped[server.id]}
                   for server in servers if server.id in self.audit_skipped]
        unreachable = {finding['host'] for finding in findings
                       if finding['kind'] == 'host_unreachable'}

        def status(server: FakeServer) -> str:
            kinds = {finding['kind']
                     for finding in self.drift.get(server.id, [])}
            if kinds - {'host_unreachable'}:
                return 'drift'
            if kinds or server.id in self.audit_skipped:
                return 'unknown'
            return 'in_sync'

        hosts = []
        for host in sorted({server.host for server in servers}):
            on_host = [server for server in servers if server.host == host]
            hosts.append({
                'host': host, 'instances': len(on_host),
                'checked': 0 if host in unreachable else len(
                    [server for server in on_host
                     if server.id not in self.audit_skipped]),
                'error': (f'nova-compute on {host} is down'
                          if host in unreachable else None)})
        errors = [entry['error'] for entry in hosts if entry['error']]
        return {'audit': {
            'status': ('error' if errors else 'drift' if findings
                       else 'in_sync'),
            'host': query.get('host'), 'fix': False,
            'checked': sum(entry['checked'] for entry in hosts),
            'hosts': hosts,
            'servers': [{'server_id': server.id, 'host': server.host,
                         'status': status(server)} for server in servers],
            'findings': findings, 'remaining': [dict(finding)
                                                for finding in findings],
            'healed': [], 'skipped': skipped, 'errors': errors,
            'host_exposure': [] if wanted is not None else [
                self.node_exposure(entry['host']) for entry in hosts],
        }}

    def _audit_fix(self, body: Any) -> dict[str, Any]:
        """``POST /os-xloud-audit``: with ``fix``, heal what can be healed
        (``doc/audit.md``), then audit the healed again: ``findings`` are
        what was found, ``remaining`` what is still found."""
        if (not isinstance(body, dict) or
                not isinstance(body.get('fix'), bool) or
                set(body) - {'fix', 'host', 'server_ids'}):
            raise HTTPError(400, 'Invalid input for field/attribute fix.')
        server_ids = body.get('server_ids')
        if server_ids is not None and (
                not isinstance(server_ids, list) or not server_ids or
                len(set(server_ids)) != len(server_ids)):
            raise HTTPError(400, 'Invalid input for field/attribute '
                                 'server_ids.')
        query = {key: value for key, value in (
            ('server_id', server_ids), ('host', body.get('host')))
            if value is not None}
        found = self._audit(query)['audit']
        healed = []
        if body['fix']:
            for entry in found['servers']:
                server = self.servers[entry['server_id']]
                if (entry['status'] != 'drift' or
                        server.id in self.audit_skipped):
                    continue
                healed.append(self._heal(server))
        report = self._audit(query)['audit']
        report.update(fix=body['fix'], findings=found['findings'],
                      healed=healed)
        return {'audit': report}

    def _heal(self, server: FakeServer) -> dict[str, Any]:
        """The compute host's ``heal`` of one server: the record and
        placement set from the domain; a stuck adjustment ended."""
        changes, errors, kept = [], [], []
        for finding in self.drift.get(server.id, []):
            kind = finding['kind']
            if kind in UNHEALABLE or server.id in self.heal_errors:
                # Left as found: not the fix's to heal, or its heal failed.
                kept.append(finding)
            elif kind == 'adjustment_stuck':
                server.adjustment_status = 'error'
                server.error = ('The adjustment was found in progress but '
                                'no nova-compute runs it.')
                changes.append(f'Ended the adjustment {server.request_id} '
                               f'as failed: no nova-compute runs it.')
            elif kind.startswith('record_'):
                changes.append(
                    f'Recorded the size the domain reports: live '
                    f'{server.vcpus} vCPUs / {server.memory_mb} MiB, boot '
                    f'{server.boot_vcpus} vCPUs / {server.boot_memory_mb} '
                    f'MiB.')
            else:
                held = finding['observed'].get('placement')
                was = ('nothing' if not held else
                       f"{held['vcpus']} VCPU / {held['memory_mb']} "
                       f"MEMORY_MB")
                changes.append(
                    f'Set the placement allocation to {server.vcpus} VCPU '
                    f'/ {server.memory_mb} MEMORY_MB (it was {was}).')
        if server.id in self.heal_errors:
            errors.append(self.heal_errors[server.id])
        if kept:
            self.drift[server.id] = kept
        else:
            self.drift.pop(server.id, None)
        return {'server_id': server.id, 'host': server.host,
                'changes': list(dict.fromkeys(changes)), 'errors': errors}

    @staticmethod
    def is_elastic(server: FakeServer) -> bool:
        """``nova_ext.exposure.is_elastic``: a minimum in the embedded
        flavor, or a recorded size."""
        return (server.flavor.minimum(MINIMUM_CPU, server.embedded_specs)
                is not None or
                server.flavor.minimum(MINIMUM_MEMORY, server.embedded_specs)
                is not None or server.recorded)

    @staticmethod
    def headroom(server: FakeServer) -> tuple[int, int]:
        """``nova_ext.exposure.instance_headroom`` of a server holding its
        current size: up to the flavor's maximum where it is elastic."""
        conflicts = server.limits().conflicts
        return (0 if VCPUS in conflicts
                else max(0, server.flavor.vcpus - server.vcpus),
                0 if MEMORY in conflicts
                else max(0, server.flavor.memory_mb - server.memory_mb))

    def node_exposure(self, name: str) -> dict[str, Any]:
        """``nova_ext.exposure.HostExposure.to_dict`` of a host."""
        host = self.hosts.get(name) or FakeHost(name)
        on_host = [server for server in self.servers.values()
                   if server.host == name]
        elastic = [server for server in on_host if self.is_elastic(server)]
        entry = {'host': name, 'node': name,
                 'resource_provider': host.resource_provider,
                 'elastic_instances': len(elastic),
                 'vcpus': None, 'memory_mb': None, 'over_capacity': False,
                 'error': None}
        if host.placement_error:
            entry['error'] = (f'placement could not be read for resource '
                              f'provider {host.resource_provider}: '
                              f'{host.placement_error}')
            return entry
        grow = [self.headroom(server) for server in elastic]
        entry['vcpus'] = exposure_dimension(
            host.vcpus, host.reserved_vcpus, host.cpu_allocation_ratio,
            sum(server.vcpus for server in on_host) + host.other_vcpus,
            sum(vcpus for vcpus, _memory in grow))
        entry['memory_mb'] = exposure_dimension(
            host.memory_mb, host.reserved_memory_mb,
            host.ram_allocation_ratio,
            sum(server.memory_mb for server in on_host) +
            host.other_memory_mb,
            sum(memory for _vcpus, memory in grow))
        entry['over_capacity'] = (entry['vcpus']['over_capacity'] or
                                  entry['memory_mb']['over_capacity'])
        return entry

    def _host_exposure(self, query: dict[str, Any]) -> dict[str, Any]:
        """``GET /os-xloud-host-exposure``: every host, or ``host``."""
        extra = set(query) - {'host'}
        host = query.get('host')
        if extra or isinstance(host, list) or host == '':
            raise HTTPError(400, 'Invalid input for query parameters.')
        names = sorted(set(self.hosts) |
                       {server.host for server in self.servers.values()})
        if host is not None:
            if host not in names:
                raise HTTPError(404, f'Compute host {host} could not be '
                                     f'found.')
            names = [host]
        entries = [self.node_exposure(name) for name in names]
        return {'host_exposure': {
            'host': host, 'hosts': entries,
            'errors': [entry['error'] for entry in entries
                       if entry['error']]}}

    def _adjust(self, server: FakeServer, body: Any) -> dict[str, Any]:
        """``nova_ext.api.controller.adjust``'s checks, in its order."""
        if not isinstance(body, dict) or not (
                {'current_vcpus', 'current_memory_mb'} & body.keys()):
            raise HTTPError(400, 'At least one of current_vcpus and '
                                 'current_memory_mb is required.')
        vcpus = body.get('current_vcpus')
        memory_mb = body.get('current_memory_mb')
        limits = server.limits()
        for field, value, dimension in (
                ('current_vcpus', vcpus, VCPUS),
                ('current_memory_mb', memory_mb, MEMORY)):
            if value is not None and dimension in limits.conflicts:
                raise HTTPError(409, (
                    f'{field} of server {server.id} cannot be adjusted: '
                    f'{limits.conflicts[dimension]}.'))
        flavor = server.flavor
        for field, value, key, minimum, floor, maximum, flavor_field in (
                ('current_vcpus', vcpus, MINIMUM_CPU, limits.minimum_vcpus,
                 limits.floor_vcpus, flavor.vcpus, 'vcpus'),
                ('current_memory_mb', memory_mb, MINIMUM_MEMORY,
                 limits.minimum_memory_mb, limits.floor_memory_mb,
                 flavor.memory_mb, 'memory_mb')):
            if value is None:
                continue
            # The spelling the embedded flavor uses.
            key = (minimum_spec(server.embedded_specs, key) or (key,))[0]
            if value > maximum:
                raise HTTPError(400, (
                    f"{field} {value} is above the flavor's {flavor_field} "
                    f"{maximum}, the most this server can have."))
            if value >= floor:
                continue
            if minimum is not None and minimum >= floor:
                raise HTTPError(400, (
                    f"{field} {value} is below the flavor's {key} {floor}, "
                    f"the least this server is promised."))
            if minimum is None and floor == maximum:
                raise HTTPError(400, (
                    f"{field} {value} is below the flavor's {flavor_field} "
                    f"{floor}: the flavor has no {key}, so its servers keep "
                    f"the size it promises ([xloud] "
                    f"allow_shrink_without_minimum)."))
            raise HTTPError(400, (
                f'{field} {value} is below {floor}, the least any server '
                f'is given ([xloud] memory_floor_mb / vcpu_floor).'))
        if memory_mb is not None and memory_mb % VIRTIO_MEM_BLOCK_MB and (
                memory_model(server.embedded_specs) ==
                MEMORY_MODEL_VIRTIO_MEM):
            raise HTTPError(400, (
                f"current_memory_mb {memory_mb} is not a multiple of "
                f"{VIRTIO_MEM_BLOCK_MB} MiB: the server's flavor plugs "
                f"memory in blocks of {VIRTIO_MEM_BLOCK_MB} MiB "
                f"({MEMORY_MODEL}={MEMORY_MODEL_VIRTIO_MEM})."))
        if server.locked:
            raise HTTPError(409, f'Instance {server.id} is locked')
        if server.vm_status == 'ERROR':
            raise HTTPError(409, (
                f"Cannot 'xloud-adjust' instance {server.id} while it is "
                f"in vm_state error"))
        if server.task_state is not None:
            raise HTTPError(409, (
                f"Cannot 'xloud-adjust' instance {server.id} while it is "
                f"in task_state {server.task_state}"))
        request_id = f'req-{uuid.uuid4()}'
        server.adjustment_status = 'adjusting'
        server.request_id = request_id
        server.error = self.fail_next_adjust
        self.fail_next_adjust = None
        server.pending = (server.vcpus if vcpus is None else vcpus,
                          server.memory_mb if memory_mb is None
                          else memory_mb)
        server.persist = body.get('persist', True)
        server.actions.insert(0, {
            'action': ADJUST_ACTION, 'instance_uuid': server.id,
            'request_id': request_id, 'user_id': 'admin-user',
            'project_id': ADMIN_PROJECT, 'start_time': _now(),
            'updated_at': _now(), 'message': None,
            'events': [{'event': ADJUST_EVENT, 'start_time': _now(),
                        'finish_time': None, 'result': None,
                        'host': server.host, 'details': None}]})
        return {'adjustment': {
            'server_id': server.id, 'request_id': request_id,
            'current_vcpus': vcpus, 'current_memory_mb': memory_mb,
            'persist': body.get('persist', True), 'action': ADJUST_ACTION}}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        payload = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.send_header('OpenStack-API-Version', 'compute 2.1')
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        # One value per key; a repeated key (server_id=a&server_id=b)
        # becomes the list of its values.
        query: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(url.query):
            if key in query:
                previous = query[key]
                query[key] = [*(previous if isinstance(previous, list)
                                else [previous]), value]
            else:
                query[key] = value
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not self.headers.get('X-Auth-Token'):
            self._answer(401, {'error': {'message': 'No token', 'code': 401}})
            return
        try:
            body = json.loads(raw) if raw else None
            status, answer = self.server.fake.cloud.handle(
                self.command, url.path, query, body)
        except HTTPError as exc:
            fault = _FAULT_NAMES.get(exc.status, 'computeFault')
            self._answer(exc.status, {fault: {'message': exc.message,
                                              'code': exc.status}})
            return
        self._answer(status, answer)

    do_GET = do_POST = do_DELETE = do_PUT = _dispatch


class FakeNovaServer:
    """Serves a ``FakeCloud`` on a free loopback port, in a thread.

    ``cloud`` may be replaced between tests to start from a fresh state.
    """

    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     _Handler)
        self.httpd.fake = self
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_port}/v2.1'
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        daemon=True)

    def __enter__(self) -> FakeNovaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
