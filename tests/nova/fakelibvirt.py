"""Nova's fake libvirt, taught vCPU hotplug and memory ballooning.

``nova.tests.fixtures.libvirt.Domain`` keeps one definition, ignores the
``current`` attribute of ``<vcpu>``, ``<currentMemory>`` and the ``<vcpus>``
list, and has no ``setVcpusFlags``, ``setMemoryFlags`` or ``vcpusFlags``.
:class:`ElasticDomain` adds them the way libvirt's QEMU driver behaves: a
persistent definition and a live state that starts from it, the same flag
rules, which vCPUs can be unplugged and how a count change moves the
``<vcpus>`` flags, a balloon that moves only while the guest runs, the
guest's own view through the QEMU guest agent (``guestVcpus``,
``setGuestVcpus``) and the balloon's statistics (``memoryStats``,
``setMemoryStatsPeriod``), and libvirt's own error messages and codes
(tests/libvirt and tests/realguest compare it with libvirt's test driver
and with real QEMU).
:class:`ElasticLibvirtFixture` installs it over Nova's ``LibvirtFixture``
and offers hooks to make a guest misbehave as real guests do.

Importable without pytest: the local cloud runs compute hosts with it.
"""

import dataclasses
import itertools
import threading
import time

import fixtures
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt

# Constants of libvirt-domain.h that Nova's fake module lacks.
MISSING_CONSTANTS = {
    'VIR_DOMAIN_VCPU_LIVE': 1,
    'VIR_DOMAIN_VCPU_CONFIG': 2,
    'VIR_DOMAIN_VCPU_MAXIMUM': 4,
    'VIR_DOMAIN_VCPU_GUEST': 8,
    'VIR_DOMAIN_VCPU_HOTPLUGGABLE': 16,
    'VIR_DOMAIN_MEM_LIVE': 1,
    'VIR_DOMAIN_MEM_CONFIG': 2,
    'VIR_DOMAIN_MEM_MAXIMUM': 4,
    'VIR_DOMAIN_GUEST_INFO_HOSTNAME': 8,
    'VIR_NODE_MEMORY_STATS_ALL_CELLS': -1,
    'VIR_DOMAIN_STATS_VCPU': 8,
}
_LIVE = fakelibvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = fakelibvirt.VIR_DOMAIN_AFFECT_CONFIG
_MAXIMUM = MISSING_CONSTANTS['VIR_DOMAIN_VCPU_MAXIMUM']
_HOTPLUGGABLE = MISSING_CONSTANTS['VIR_DOMAIN_VCPU_HOTPLUGGABLE']

# The virtio-serial port Nova adds for an image with hw_qemu_guest_agent.
AGENT_CHANNEL = 'org.qemu.guest_agent.0'

_UNIT_KIB = {'b': 1 / 1024, 'bytes': 1 / 1024, 'k': 1, 'kib': 1,
             'kb': 1000 / 1024, 'm': 1024, 'mib': 1024,
             'g': 1024 ** 2, 'gib': 1024 ** 2}


@dataclasses.dataclass(frozen=True)
class VcpuState:
    """One vCPU of a definition or of the running domain (``<vcpus>``)."""

    enabled: bool
    hotpluggable: bool
    # The position in which an enabled vCPU came online; 0: none.
    order: int = 0


@dataclasses.dataclass
class GuestBehaviour:
    """How the guest inside one domain answers live changes."""

    # No balloon driver (not loaded yet, or never): libvirt takes the
    # target, the balloon stays put. A guest starts with all of <memory>,
    # as QEMU gives it, and its balloon reaches <currentMemory> only once
    # the driver runs; setting this back to True is the driver loading.
    balloon_driver: bool = True
    # virtio-mem: the guest's virtio_mem driver plugs what the device
    # offers (False: it never loaded, <current> stays 0); it cannot
    # unplug this many KiB it has plugged (memory in use, not movable).
    virtio_mem_driver: bool = True
    virtio_mem_busy_kib: int = 0
    # False: libvirt's wait for a vCPU unplug times out and it keeps
    # counting the vCPU (a guest ignoring the request; QEMU 7.2 under TCG
    # always, doc/realguest.md).
    releases_vcpus: bool = True
    # libvirt refuses the next call of a method: {name: (message, code)}.
    refuse: dict = dataclasses.field(default_factory=dict)
    # The QEMU guest agent runs in the guest and has its channel open.
    # Matters only for a domain with the agent channel; False: libvirt
    # answers agent calls "QEMU guest agent is not connected".
    guest_agent: bool = True
    # The guest onlines a hot-plugged vCPU itself (a udev rule, or a
    # kernel built to). False: the vCPU stays offline in the guest until
    # the agent onlines it (setGuestVcpus).
    onlines_vcpus: bool = True
    # The balloon driver sends statistics once a period is set (Windows'
    # driver without its service does not).
    memory_stats: bool = True
    # What the guest kernel keeps for itself (MemTotal falls short of
    # what it has by it), and what its programs use, in KiB.
    kernel_reserved_kib: int = 65536
    memory_in_use_kib: int = 262144
    # What the guest agent answers for its host name.
    hostname: str = 'guest'
    # The guest's cumulative major page faults and KiB swapped in and out
    # since it started, as its balloon driver sends them.
    major_faults: int = 0
    swap_in_kib: int = 0
    swap_out_kib: int = 0
    # How many of its vCPUs the guest keeps busy on average: the domain's
    # CPU time (virDomainGetInfo's cpuTime, ns) grows by this much per
    # second of wall time while it runs.
    busy_vcpus: float = 0.0
    # How many of its vCPUs' worth of time the host keeps waiting in its
    # run queue (libvirt's vcpu.<n>.delay, the guest's steal time): it
    # grows by this much per second of wall time while it runs.
    steal_vcpus: float = 0.0


def cpu_clock() -> float:
    """The wall clock the guests' CPU time runs by (tests replace it)."""
    return time.monotonic()


def _error(message: str, code: int,
           domain: int = fakelibvirt.VIR_FROM_DOMAIN):
    return fakelibvirt.make_libvirtError(
        fakelibvirt.libvirtError, message, error_code=code,
        error_domain=domain)


def _invalid_arg(message: str):
    return _error(f'invalid argument: {message}',
                  fakelibvirt.VIR_ERR_INVALID_ARG, fakelibvirt.VIR_FROM_QEMU)


def _unsupported(message: str):
    return _error(f'unsupported configuration: {message}',
                  fakelibvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                  fakelibvirt.VIR_FROM_QEMU)


def _parse_vcpus(tree, maximum: int,
                 current: int) -> tuple[tuple[VcpuState, ...], bool]:
    """The vCPUs of a definition, and whether it lists them (``<vcpus>``).

    Without the list every vCPU enabled at start is non-hotpluggable (QEMU
    starts them with ``-smp``); with it, a vCPU not listed is disabled and
    one listed without ``hotpluggable`` is hotpluggable only if disabled.
    """
    listed = tree.find('./vcpus')
    if listed is None:
        return tuple(VcpuState(enabled=vcpu_id < current,
                               hotpluggable=vcpu_id >= current)
                     for vcpu_id in range(maximum)), False
    vcpus = [VcpuState(enabled=False, hotpluggable=True)] * maximum
    for node in listed.findall('vcpu'):
        vcpu_id = int(node.get('id'))
        if vcpu_id >= maximum:
            raise _error(f"XML error: vcpu id '{vcpu_id}' is out of range "
                         f"of maximum vcpu count",
                         fakelibvirt.VIR_ERR_XML_ERROR)
        enabled = node.get('enabled') == 'yes'
        hotpluggable = node.get('hotpluggable',
                                'no' if enabled else 'yes') == 'yes'
        vcpus[vcpu_id] = VcpuState(enabled, hotpluggable,
                                   int(node.get('order', 0)))
    _validate_vcpus(vcpus)
    return tuple(vcpus), True


def _validate_vcpus(vcpus: list[VcpuState]) -> None:
    """What libvirt's QEMU driver refuses in a ``<vcpus>`` list."""
    first = vcpus[0]
    if not first.enabled:
        raise _unsupported("vcpu 0 can't be offline")
    if first.hotpluggable:
        raise _unsupported("vcpu0 can't be hotpluggable")
    if first.order not in (0, 1):
        raise _unsupported('vcpu0 must be enabled first')
    for previous, vcpu in itertools.pairwise(vcpus):
        if vcpu.enabled and bool(vcpu.order) != bool(first.order):
            raise _unsupported(
                'all vcpus must have either set or unset order')
        if not vcpu.hotpluggable and previous.hotpluggable:
            raise _unsupported(
                'online non-hotpluggable vcpus need to be ordered prior to '
                'hotplugable vcpus')


def _enabled(vcpus) -> int:
    return sum(vcpu.enabled for vcpu in vcpus)


def _plugged(vcpus, count: int) -> tuple[VcpuState, ...]:
    """``count`` more vCPUs online, the lowest disabled first, each next in
    order (QEMU adds them as hotpluggable devices)."""
    plugged = list(vcpus)
    order = max(vcpu.order for vcpu in plugged)
    for vcpu_id, vcpu in enumerate(plugged):
        if count == 0:
            break
        if not vcpu.enabled:
            order += 1
            plugged[vcpu_id] = VcpuState(True, True, order)
            count -= 1
    return tuple(plugged)


def _unplugged(vcpus, vcpu_ids) -> tuple[VcpuState, ...]:
    unplugged = list(vcpus)
    for vcpu_id in vcpu_ids:
        unplugged[vcpu_id] = VcpuState(False, True)
    return tuple(unplugged)


def _not_running():
    return _error('Requested operation is not valid: domain is not running',
                  fakelibvirt.VIR_ERR_OPERATION_INVALID)


def format_cpulist(ids) -> str:
    """``0-2,5``: libvirt's bitmap format (virBitmapFormat); '' for none."""
    ranges = []
    for vcpu_id in sorted(ids):
        if ranges and ranges[-1][1] == vcpu_id - 1:
            ranges[-1][1] = vcpu_id
        else:
            ranges.append([vcpu_id, vcpu_id])
    return ','.join(str(low) if low == high else f'{low}-{high}'
                    for low, high in ranges)


def parse_cpulist(text: str) -> set[int]:
    """libvirt's cpumap syntax (virBitmapParse): ``0-3,^2``, in order."""
    ids: set[int] = set()
    try:
        for part in text.split(','):
            part = part.strip()
            excluded = part.startswith('^')
            low, _dash, high = part.lstrip('^').partition('-')
            first = int(low)
            last = int(high) if high else first
            if first < 0 or last < first or (excluded and high):
                raise ValueError(part)
            if excluded:
                ids.discard(first)
            else:
                ids.update(range(first, last + 1))
    except ValueError:
        raise _invalid_arg(f"Failed to parse bitmap '{text}'")
    return ids


# libvirt-python returns None from guestVcpus() where it fails (its C
# binding returns None, the wrapper tests for -1): the error is only the
# calling thread's last libvirt error (virGetLastError).
_last_error = threading.local()


def virGetLastError():  # noqa: N802 - libvirt's name
    return getattr(_last_error, 'err', None)


class ElasticDomain(fakelibvirt.Domain):
    """A fake domain with a current vCPU count and a balloon."""

    behaviour: GuestBehaviour
    # GuestBehaviour fields for domains defined from now on (a hard reboot
    # or a migration defines a new one): ElasticLibvirtFixture.new_guests.
    new_guest_behaviour: dict = {}

    def __init__(self, connection, xml, running=False, transient=False):
        self.behaviour = GuestBehaviour(**self.new_guest_behaviour)
        self._live = None
        super().__init__(connection, xml, running=running,
                         transient=transient)
        if running:
            self._start_live()

    def _parse_definition(self, xml):
        definition = super()._parse_definition(xml)
        tree = etree.fromstring(xml)
        maximum = definition['vcpu']['number']
        vcpu = tree.find('./vcpu')
        current = int(vcpu.get('current', maximum))
        if current > maximum:
            raise _error(
                f'XML error: maxvcpus must not be less than current vcpus '
                f'({maximum} < {current})', fakelibvirt.VIR_ERR_XML_ERROR)
        definition['vcpus'], definition['vcpus_listed'] = _parse_vcpus(
            tree, maximum, current)
        # With a <vcpus> list libvirt counts what it enables.
        definition['vcpu']['current'] = _enabled(definition['vcpus'])
        memory = definition['memory']
        node = tree.find('./currentMemory')
        current_memory = memory
        if node is not None:
            current_memory = int(
                int(node.text) * _UNIT_KIB[node.get('unit', 'KiB').lower()])
        # libvirt silently caps currentMemory at memory (and treats 0 as
        # unset): virDomainDefPostParseMemory.
        if not 0 < current_memory <= memory:
            current_memory = memory
        definition['current_memory'] = current_memory
        balloon = tree.find('./devices/memballoon')
        definition['balloon'] = (balloon is not None
                                 and balloon.get('model') != 'none')
        # Deflate-on-OOM (Nova always asks for it): Linux keeps the
        # balloon's pages in MemTotal, so the guest's total stays all it
        # was started with.
        definition['autodeflate'] = (balloon is not None and
                                     balloon.get('autodeflate') == 'on')
        definition['virtio_mem'] = _parse_virtio_mem(tree)
        # libvirt keeps the machine type it was given (expanded from an
        # alias such as q35); Nova's fake writes a fixed one.
        os_type = tree.find('./os/type')
        definition['machine'] = (None if os_type is None
                                 else os_type.get('machine'))
        stats = tree.find('./devices/memballoon/stats')
        definition['stats_period'] = (
            int(stats.get('period', 0)) if stats is not None else 0)
        # Nova's fake writes no channels back: the agent's is kept as
        # given (a unix socket Nova names after the instance).
        definition['agent_channel'] = next(
            (etree.tostring(target.getparent(), encoding='unicode')
             for target in tree.findall('./devices/channel/target')
             if target.get('name') == AGENT_CHANNEL), None)
        return definition

    def _start_live(self):
        # QEMU starts the guest with all of <memory>; <currentMemory> is
        # only the balloon's first target, reached through the guest's
        # driver (vCPUs, by contrast, are exact from the start).
        vcpus = self._def['vcpus']
        if not any(vcpu.order for vcpu in vcpus):
            # libvirt records the order in which QEMU brought them up.
            order = iter(range(1, len(vcpus) + 1))
            vcpus = tuple(dataclasses.replace(vcpu, order=next(order))
                          if vcpu.enabled else vcpu for vcpu in vcpus)
        self._live = {'vcpus': self._def['vcpu']['current'],
                      'vcpu_states': vcpus,
                      'vcpus_listed': self._def['vcpus_listed'],
                      'memory': self._def['memory'],
                      'balloon_target': self._def['current_memory'],
                      # The guest kernel brings up every vCPU present at
                      # boot; a hot-plugged one maybe not (onlines_vcpus).
                      'guest_offline': frozenset(),
                      'stats_period': self._def['stats_period'],
                      # What the balloon driver last sent; QEMU reports
                      # last_update 0 until it sends anything.
                      'guest_stats': {'last_update': 0},
                      # What the virtio-mem device has plugged (KiB):
                      # nothing until the guest's driver takes it.
                      'virtio_mem_current': 0,
                      'virtio_mem_requested': (
                          self._def['virtio_mem']['requested']
                          if self._def['virtio_mem'] else 0),
                      # CPU time counts from the QEMU process's start.
                      'cpu_time_ns': 0,
                      'delay_ns': 0,
                      'cpu_counted_at': cpu_clock()}

    def _virtio_mem_current(self) -> int:
        """What the device has plugged: the guest's driver plugs what it
        is asked for, and unplugs all but the blocks it cannot free."""
        live = self._live
        if self.behaviour.virtio_mem_driver and (
                self._state != fakelibvirt.VIR_DOMAIN_PAUSED):
            requested = live['virtio_mem_requested']
            floor = min(live['virtio_mem_current'],
                        self.behaviour.virtio_mem_busy_kib)
            live['virtio_mem_current'] = max(requested, floor)
        return live['virtio_mem_current']

    def updateDeviceFlags(self, xml, flags=0):
        """Only a virtio-mem device's ``<requested>``, in the words of
        libvirt 9.0 with QEMU 7.2 (tests/realguest/test_virtio_mem.py): the
        XML is checked as it is parsed, the device is found by its
        address, QEMU's property set through its alias."""
        self._refused('updateDeviceFlags')
        device = etree.fromstring(xml)
        if device.tag != 'memory' or device.get('model') != 'virtio-mem':
            raise _error(f'Operation not supported: live update of device '
                         f'\'{device.tag}\' is not supported',
                         fakelibvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                         fakelibvirt.VIR_FROM_QEMU)
        live, config = self._affected(flags)
        if live and not self._running():
            raise _not_running()
        defined = self._def['virtio_mem']
        target = device.find('target')
        node = int(target.findtext('node', '0'))
        if not defined:
            raise _error("can't add memory backend as guest has no NUMA "
                         "nodes configured", fakelibvirt.VIR_ERR_XML_DETAIL)
        if node >= len(defined['cells']):
            raise _error(f"can't add memory backend for guest node '{node}' "
                         f"as the guest has only '{len(defined['cells'])}' "
                         f"NUMA nodes configured",
                         fakelibvirt.VIR_ERR_XML_DETAIL)

        def kib(name: str) -> int:
            found = target.find(name)
            return int(int(found.text) * _UNIT_KIB[
                found.get('unit', 'KiB').lower()])

        requested, size, block = kib('requested'), kib('size'), kib('block')
        if requested > size:
            raise _error(f'requested size must be smaller than or equal to '
                         f'@size ({size}KiB)', fakelibvirt.VIR_ERR_XML_DETAIL)
        if requested % block:
            raise _error('requested size must be an integer multiple of '
                         'block size', fakelibvirt.VIR_ERR_XML_DETAIL)
        address = device.find('address')
        alias = device.find('alias')
        if address is None or dict(address.attrib) != VIRTIO_MEM_ADDRESS:
            if config and not live:
                raise _error('invalid argument: memory not found',
                             fakelibvirt.VIR_ERR_INVALID_ARG,
                             fakelibvirt.VIR_FROM_QEMU)
            name = '(null)' if alias is None else alias.get('name')
            raise _unsupported(f"memory '{name}' not found")
        if size != defined['size']:
            raise _unsupported(f"cannot modify memory size from "
                               f"'{defined['size']}' to '{size}'")
        if block != defined['block']:
            raise _unsupported(f"cannot modify memory block size from "
                               f"'{defined['block']}' to '{block}'")
        if live and alias is None:
            raise _error("internal error: unable to execute QEMU command "
                         "'qom-set': Device '/machine/peripheral/(null)' not "
                         "found", fakelibvirt.VIR_ERR_INTERNAL_ERROR,
                         fakelibvirt.VIR_FROM_QEMU)
        if live:
            self._live['virtio_mem_requested'] = requested
        if config:
            defined['requested'] = requested
        return 0

    def _live_memory(self) -> int:
        """What the guest holds: the balloon moves only with a driver, and
        only while the guest runs (QEMU's balloon needs the guest). With
        virtio-mem, its RAM and what the device plugged, which QEMU's
        balloon counts as its actual size too."""
        if self._def['virtio_mem']:
            return (self._def['virtio_mem']['base'] +
                    self._virtio_mem_current())
        if self._def['balloon'] and self.behaviour.balloon_driver and (
                self._state != fakelibvirt.VIR_DOMAIN_PAUSED):
            self._live['memory'] = min(
                self._live['balloon_target'] +
                self._live.get('oom_deflated', 0), self._def['memory'])
        return self._live['memory']

    def createWithFlags(self, flags):
        super().createWithFlags(flags)
        self._start_live()

    def destroy(self):
        super().destroy()
        self._live = None

    def shutdown(self):
        super().shutdown()
        self._live = None

    def managedSave(self, flags):
        super().managedSave(flags)
        self._live = None

    def suspend(self):
        self._live_memory()  # the balloon stops where it stands
        if self._live is not None:
            self._cpu_time_ns()
        super().suspend()

    def resume(self):
        if self._live is not None:
            self._cpu_time_ns()  # the pause used no CPU time
        return super().resume()

    def isActive(self):
        # libvirt counts a paused domain as active; Nova's fake does not.
        return int(self._state in (fakelibvirt.VIR_DOMAIN_RUNNING,
                                   fakelibvirt.VIR_DOMAIN_PAUSED))

    def _running(self) -> bool:
        return self._live is not None and bool(self.isActive())

    def _affected(self, flags: int) -> tuple[bool, bool]:
        """Which of live and config a call changes (AFFECT_CURRENT = 0)."""
        live, config = bool(flags & _LIVE), bool(flags & _CONFIG)
        if not (live or config):
            live, config = self._running(), not self._running()
        if live and not self._running():
            raise _not_running()
        if config and self._transient:
            raise _error('Requested operation is not valid: transient '
                         'domains do not have any persistent config',
                         fakelibvirt.VIR_ERR_OPERATION_INVALID)
        return live, config

    def _refused(self, method: str) -> None:
        if method in self.behaviour.refuse:
            message, code = self.behaviour.refuse.pop(method)
            raise _error(message, code, fakelibvirt.VIR_FROM_QEMU)

    def setVcpusFlags(self, nvcpus, flags=0):
        self._refused('setVcpusFlags')
        if nvcpus == 0:
            raise _error('nvcpus in virDomainSetVcpusFlags must not be zero',
                         fakelibvirt.VIR_ERR_INVALID_ARG)
        if flags & _MAXIMUM:
            if flags & _LIVE or self._running() and not flags & _CONFIG:
                raise _error('Requested operation is not valid: cannot '
                             'change maximum vCPU count of a live domain',
                             fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._set_maximum_vcpus(nvcpus)
            return 0
        live, config = self._affected(flags)
        maximum = self._def['vcpu']['number']
        if nvcpus > maximum:
            raise _error(
                f'invalid argument: requested vcpus is greater than max '
                f'allowable vcpus for the '
                f'{"live" if live else "persistent"} domain: {nvcpus} > '
                f'{maximum}', fakelibvirt.VIR_ERR_INVALID_ARG,
                fakelibvirt.VIR_FROM_QEMU)
        if live:
            self._set_live_vcpus(nvcpus)
        if config:
            self._set_config_vcpus(nvcpus, bool(flags & _HOTPLUGGABLE))
        return 0

    def _live_vcpus(self) -> tuple[VcpuState, ...]:
        """The running vCPUs. A count put into ``_live`` from outside (the
        local cloud restores a saved live state) wins over the flags."""
        vcpus = self._live['vcpu_states']
        online, wanted = _enabled(vcpus), self._live['vcpus']
        if online < wanted:
            vcpus = _plugged(vcpus, wanted - online)
        elif online > wanted:
            vcpus = _unplugged(vcpus, [
                vcpu_id for vcpu_id in range(len(vcpus) - 1, 0, -1)
                if vcpus[vcpu_id].enabled][:online - wanted])
        self._live['vcpu_states'] = vcpus
        return vcpus

    def _set_live_vcpus(self, nvcpus: int) -> None:
        """Plug the lowest disabled vCPUs, or unplug the highest
        hotpluggable ones, as libvirt's QEMU driver selects them."""
        vcpus = self._live_vcpus()
        online = self._live['vcpus']
        if nvcpus > online:
            before = vcpus
            vcpus = _plugged(vcpus, nvcpus - online)
            # A plugged vCPU makes libvirt list every vCPU of the domain.
            self._live['vcpus_listed'] = True
            if not self.behaviour.onlines_vcpus:
                self._live['guest_offline'] |= {
                    vcpu_id for vcpu_id, vcpu in enumerate(vcpus)
                    if vcpu.enabled and not before[vcpu_id].enabled}
        elif nvcpus < online:
            # vCPU 0 and every vCPU QEMU started as part of -smp stay.
            removable = [vcpu_id for vcpu_id in range(len(vcpus) - 1, 0, -1)
                         if vcpus[vcpu_id].enabled and
                         vcpus[vcpu_id].hotpluggable]
            if online - len(removable) > nvcpus:
                raise _unsupported(
                    'failed to find appropriate hotpluggable vcpus to '
                    'reach the desired target vcpu count')
            if not self.behaviour.releases_vcpus:
                raise _error(
                    'Timed out during operation: vcpu unplug request timed '
                    'out. Unplug result must be manually inspected in the '
                    'domain', fakelibvirt.VIR_ERR_OPERATION_TIMEOUT,
                    fakelibvirt.VIR_FROM_QEMU)
            vcpus = _unplugged(vcpus, removable[:online - nvcpus])
        self._live['vcpu_states'] = vcpus
        self._live['vcpus'] = nvcpus
        # A vCPU unplugged is gone from the guest too.
        self._live['guest_offline'] = frozenset(
            vcpu_id for vcpu_id in self._live['guest_offline']
            if vcpus[vcpu_id].enabled)

    def _set_config_vcpus(self, nvcpus: int, hotpluggable: bool) -> None:
        """The persistent count as libvirt's QEMU driver changes it.

        The order goes (it may no longer be valid); a vCPU enabled takes
        the hotpluggable flag of the vCPU before it, unless the call asks
        for hotpluggable ones (``VIR_DOMAIN_VCPU_HOTPLUGGABLE``); a vCPU
        disabled, the highest first, becomes hotpluggable.
        """
        vcpus = [VcpuState(vcpu.enabled, vcpu.hotpluggable)
                 for vcpu in self._def['vcpus']]
        online = _enabled(vcpus)
        if nvcpus > online:
            for vcpu_id, vcpu in enumerate(vcpus):
                if online == nvcpus:
                    break
                if not vcpu.enabled:
                    vcpus[vcpu_id] = VcpuState(
                        True, hotpluggable or vcpus[vcpu_id - 1].hotpluggable)
                    online += 1
            if hotpluggable:
                self._def['vcpus_listed'] = True
        else:
            for vcpu_id in range(len(vcpus) - 1, 0, -1):
                if online == nvcpus:
                    break
                if vcpus[vcpu_id].enabled:
                    vcpus[vcpu_id] = VcpuState(False, True)
                    online -= 1
        self._def['vcpus'] = tuple(vcpus)
        self._def['vcpu']['current'] = nvcpus

    def _set_maximum_vcpus(self, maximum: int) -> None:
        vcpus = [VcpuState(vcpu.enabled, vcpu.hotpluggable)
                 for vcpu in self._def['vcpus'][:maximum]]
        vcpus += [VcpuState(False, True)] * (maximum - len(vcpus))
        self._def['vcpus'] = tuple(vcpus)
        self._def['vcpu']['number'] = maximum
        self._def['vcpu']['current'] = _enabled(vcpus)

    def vcpusFlags(self, flags=0):
        live, _config = self._affected(flags & (_LIVE | _CONFIG))
        if flags & _MAXIMUM:
            return self._def['vcpu']['number']
        return self._live['vcpus'] if live else self._def['vcpu']['current']

    def setMemoryFlags(self, memory, flags=0):
        self._refused('setMemoryFlags')
        if flags & _MAXIMUM:
            if flags & _LIVE or self._running() and not flags & _CONFIG:
                raise _error('Requested operation is not valid: cannot '
                             'resize the maximum memory on an active domain',
                             fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._def['memory'] = memory
            self._def['current_memory'] = min(self._def['current_memory'],
                                              memory)
            return 0
        live, config = self._affected(flags)
        if memory > self._def['memory']:
            raise _invalid_arg('cannot set memory higher than max memory')
        if live:
            if not self._def['balloon']:
                raise _error(
                    'Requested operation is not valid: Unable to change '
                    'memory of active domain without the balloon device '
                    'and guest OS balloon driver',
                    fakelibvirt.VIR_ERR_OPERATION_INVALID)
            self._live['balloon_target'] = memory
            # A new target: the driver inflates or deflates to it, what
            # it gave back on OOM included.
            self._live['oom_deflated'] = 0
            self._live_memory()
        if config:
            self._def['current_memory'] = memory
        return 0

    def deflate_on_oom(self, kib: int) -> None:
        """The guest runs out of memory and its balloon driver gives it
        ``kib`` more of the balloon's pages (Nova's ``autodeflate``):
        QEMU's ``actual`` rises above the target, up to all the domain
        was started with; without autodeflate, nothing happens."""
        if self._def['autodeflate'] and not self._def['virtio_mem']:
            self._live['oom_deflated'] = self._live.get(
                'oom_deflated', 0) + kib

    def setMemory(self, memory):
        return self.setMemoryFlags(memory, _LIVE)

    def _cpu_time_ns(self) -> int:
        """CPU time used since start; it does not advance while paused
        (nor does the time its vCPUs wait in the host's run queue)."""
        now = cpu_clock()
        if self._state == fakelibvirt.VIR_DOMAIN_RUNNING:
            elapsed = now - self._live['cpu_counted_at']
            self._live['cpu_time_ns'] += int(
                elapsed * self.behaviour.busy_vcpus * 1e9)
            self._live['delay_ns'] = self._live.get('delay_ns', 0) + int(
                elapsed * self.behaviour.steal_vcpus * 1e9)
        self._live['cpu_counted_at'] = now
        return self._live['cpu_time_ns']

    def connect(self):
        """virDomainGetConnect: the connection the domain came from."""
        return self._connection

    def vcpu_stats(self) -> dict:
        """The VIR_DOMAIN_STATS_VCPU group of virDomainListGetStats as
        libvirt's QEMU driver fills it for a running domain: the current
        and maximum count, and for each vCPU present its state (1:
        running), time, wait and delay in ns, here the domain's CPU time
        and run-queue delay shared evenly
        (tests/realguest/test_vcpu_stats.py asks QEMU)."""
        cpu_ns = self._cpu_time_ns()
        present = [index for index, vcpu in
                   enumerate(self._live['vcpu_states']) if vcpu.enabled]
        stats = {'vcpu.current': self._live['vcpus'],
                 'vcpu.maximum': self._def['vcpu']['number']}
        for index in present:
            stats.update({
                f'vcpu.{index}.state': 1,
                f'vcpu.{index}.time': cpu_ns // len(present),
                f'vcpu.{index}.wait': 0,
                f'vcpu.{index}.delay': self._live['delay_ns'] // len(
                    present)})
        return stats

    def info(self):
        info = super().info()
        if self._running():
            info[2], info[3] = self._live_memory(), self._live['vcpus']
            info[4] = self._cpu_time_ns()
        else:
            # libvirt reports no CPU time for a domain that is not running.
            info[4] = 0
            info[2] = self._def['current_memory']
            info[3] = self._def['vcpu']['current']
        return info

    def memoryStats(self):
        """What libvirt's QEMU driver reports (libvirt leaves out what
        QEMU has no value for): the balloon's ``actual`` size and the
        guest's statistics as its balloon driver last sent them, with
        ``last_update`` the time QEMU got them (0: never). They flow while
        a period is set and the driver runs, once a period: QEMU asks the
        driver for them on a timer of that period and keeps the answer,
        so what they say may predate the guest's last change of size;
        otherwise they stay as last sent (tests/realguest compares with
        QEMU). ``rss``, a host figure, is left out."""
        if self._live is None or not self.isActive():
            raise _error('Requested operation is not valid: domain is not '
                         'running', fakelibvirt.VIR_ERR_OPERATION_INVALID,
                         fakelibvirt.VIR_FROM_QEMU)
        if not self._def['balloon']:
            return {}
        period = self._live['stats_period']
        if period and time.time() - self._live['guest_stats'][
                'last_update'] >= period:
            self._guest_sends_statistics()
        return {'actual': self._live_memory(), **self._live['guest_stats']}

    def _guest_sends_statistics(self) -> None:
        """The balloon driver answers QEMU's request, if it runs."""
        behaviour = self.behaviour
        if not (behaviour.balloon_driver and behaviour.memory_stats):
            return
        actual = self._live_memory()
        # A virtio-mem guest's balloon holds nothing back: it sees its RAM
        # and plugged blocks.
        total = (self._def['memory'] if self._def['autodeflate'] and
                 not self._def['virtio_mem'] else actual)
        available = max(total - behaviour.kernel_reserved_kib, 0)
        usable = max(actual - behaviour.kernel_reserved_kib -
                     behaviour.memory_in_use_kib, 0)
        disk_caches = usable // 4
        self._live['guest_stats'] = {
            'swap_in': behaviour.swap_in_kib,
            'swap_out': behaviour.swap_out_kib,
            'major_fault': behaviour.major_faults,
            'minor_fault': 0, 'unused': usable - disk_caches,
            'available': available, 'usable': usable,
            'last_update': int(time.time()),
            'disk_caches': disk_caches, 'hugetlb_pgalloc': 0,
            'hugetlb_pgfail': 0}

    def setMemoryStatsPeriod(self, period, flags=0):
        if period < 0:
            raise _error('period in virDomainSetMemoryStatsPeriod must be '
                         'zero or greater', fakelibvirt.VIR_ERR_INVALID_ARG)
        live, config = self._affected(flags)
        if not self._def['balloon']:
            raise _error('internal error: No memory balloon device '
                         'configured, can not set the collection period',
                         fakelibvirt.VIR_ERR_INTERNAL_ERROR,
                         fakelibvirt.VIR_FROM_QEMU)
        if live:
            was = self._live['stats_period']
            self._live['stats_period'] = period
            if period and not was:
                # QEMU's polling timer fires at once when collection is
                # switched on (balloon_stats_set_poll_interval).
                self._guest_sends_statistics()
        if config:
            self._def['stats_period'] = period
        return 0

    def _agent_available(self) -> None:
        """qemuDomainAgentAvailable: what libvirt checks first."""
        if self._live is None or self._state != (
                fakelibvirt.VIR_DOMAIN_RUNNING):
            raise _error('Requested operation is not valid: domain is not '
                         'running', fakelibvirt.VIR_ERR_OPERATION_INVALID,
                         fakelibvirt.VIR_FROM_QEMU)
        if not self._def['agent_channel']:
            raise _error('argument unsupported: QEMU guest agent is not '
                         'configured',
                         fakelibvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                         fakelibvirt.VIR_FROM_QEMU)
        if not self.behaviour.guest_agent:
            raise _error('Guest agent is not responding: QEMU guest agent is '
                         'not connected',
                         fakelibvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                         fakelibvirt.VIR_FROM_QEMU)

    def _guest_cpus(self) -> tuple[set[int], set[int]]:
        """The vCPUs the guest has (those libvirt enabled), and those of
        them it runs online."""
        present = {vcpu_id for vcpu_id, vcpu in enumerate(self._live_vcpus())
                   if vcpu.enabled}
        return present, present - self._live['guest_offline']

    def guestVcpus(self, flags=0):
        """virDomainGetGuestVcpus through libvirt-python: cpu lists of the
        vCPUs the guest has, those online and those it can offline (all
        but vCPU 0, which Linux keeps), or None on any failure."""
        _last_error.err = None
        try:
            if flags:
                raise _invalid_arg(f'unsupported flags (0x{flags:x}) in '
                                   f'function qemuDomainGetGuestVcpus')
            self._agent_available()
        except fakelibvirt.libvirtError as e:
            # (code, domain, message, level, ...) as virGetLastError
            # gives it; level 2 is VIR_ERR_ERROR.
            _last_error.err = (e.err[0], e.err[1], str(e), 2) + tuple(
                e.err[4:])
            return None
        present, online = self._guest_cpus()
        return {'vcpus': format_cpulist(present),
                'online': format_cpulist(online),
                'offlinable': format_cpulist(present - {0})}

    def guestInfo(self, types=0, flags=0):
        """virDomainGetGuestInfo, of what the fake guest has: its host
        name (asked for, or all types: 0); libvirt leaves out what the
        agent cannot say."""
        if flags:
            raise _invalid_arg(f'unsupported flags (0x{flags:x}) in function '
                               f'qemuDomainGetGuestInfo')
        self._agent_available()
        if types and not types & MISSING_CONSTANTS[
                'VIR_DOMAIN_GUEST_INFO_HOSTNAME']:
            return {}
        return {'hostname': self.behaviour.hostname}

    def setGuestVcpus(self, cpumap, state, flags=0):
        """virDomainSetGuestVcpus: the vCPUs of ``cpumap`` online
        (``state`` 1) or offline (0) in the guest, all or none."""
        if flags:
            raise _invalid_arg(f'unsupported flags (0x{flags:x}) in function '
                               f'qemuDomainSetGuestVcpus')
        wanted = parse_cpulist(cpumap)
        self._agent_available()
        self._refused('setGuestVcpus')
        present, online = self._guest_cpus()
        for vcpu_id in sorted(wanted & present):
            if not state and vcpu_id == 0:
                raise _error("Operation not supported: vCPU '0' is not "
                             "offlinable",
                             fakelibvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                             fakelibvirt.VIR_FROM_QEMU)
        missing = wanted - present
        if missing:
            raise _invalid_arg(
                f"guest is missing vCPUs '{format_cpulist(missing)}'")
        offline = set(self._live['guest_offline'])
        if state:
            offline -= wanted
        else:
            offline |= wanted
        self._live['guest_offline'] = frozenset(offline)
        return 0

    def XMLDesc(self, flags):
        tree = etree.fromstring(super().XMLDesc(flags))
        if self._running() and not flags & (
                fakelibvirt.VIR_DOMAIN_XML_INACTIVE):
            vcpus, memory = self._live['vcpus'], self._live_memory()
            states = self._live_vcpus()
            listed = self._live['vcpus_listed']
        else:
            vcpus = self._def['vcpu']['current']
            memory = self._def['current_memory']
            states, listed = self._def['vcpus'], self._def['vcpus_listed']
        # libvirt writes current only when it differs from the maximum.
        vcpu = tree.find('./vcpu')
        if vcpus != self._def['vcpu']['number']:
            vcpu.set('current', str(vcpus))
        if listed:
            vcpu.addnext(_format_vcpus(states))
        tree.find('./currentMemory').text = str(memory)
        balloon = tree.find('./devices/memballoon')
        if not self._def['balloon']:
            balloon.set('model', 'none')
        running = self._running() and not flags & (
            fakelibvirt.VIR_DOMAIN_XML_INACTIVE)
        period = (self._live['stats_period'] if running
                  else self._def['stats_period'])
        if self._def['balloon'] and period:
            balloon.insert(0, etree.Element('stats', period=str(period)))
        if self._def['machine']:
            tree.find('./os/type').set('machine', self._def['machine'])
        if self._def['virtio_mem']:
            _format_virtio_mem(
                tree, self._def['virtio_mem'],
                self._live['virtio_mem_requested'] if running
                else self._def['virtio_mem']['requested'],
                self._virtio_mem_current() if running else None)
        if self._def['agent_channel']:
            channel = etree.fromstring(self._def['agent_channel'])
            tree.find('./devices').append(channel)
            target = channel.find('target')
            # libvirt's QEMU driver shows whether the guest opened the
            # port, in the live XML only.
            target.attrib.pop('state', None)
            if running:
                target.set('state', 'connected' if self.behaviour.guest_agent
                           else 'disconnected')
        return etree.tostring(tree, encoding='unicode')


# Where libvirt put the device on the PCI bus when it was defined.
VIRTIO_MEM_ADDRESS = {'type': 'pci', 'domain': '0x0000', 'bus': '0x00',
                      'slot': '0x05', 'function': '0x0'}


def _parse_virtio_mem(tree) -> dict | None:
    """A virtio-mem device and the NUMA cell it needs, in KiB."""
    device = tree.find("./devices/memory[@model='virtio-mem']")
    if device is None:
        return None
    cells = tree.findall('./cpu/numa/cell')
    maximum = tree.find('./maxMemory')
    if not cells:
        raise _error('unsupported configuration: At least one numa node '
                     'has to be configured when enabling memory hotplug',
                     fakelibvirt.VIR_ERR_CONFIG_UNSUPPORTED)
    if maximum is None:
        raise _error('unsupported configuration: cannot use/hotplug a '
                     'memory device when domain \'maxMemory\' is not '
                     'defined', fakelibvirt.VIR_ERR_CONFIG_UNSUPPORTED)

    def kib(node) -> int:
        return int(int(node.text) * _UNIT_KIB[
            node.get('unit', 'KiB').lower()])

    target = device.find('target')
    return {
        'base': sum(int(cell.get('memory')) for cell in cells),
        'cells': [dict(cell.attrib) for cell in cells],
        'max_memory': (kib(maximum), maximum.get('slots')),
        'size': kib(target.find('size')),
        'node': int(target.find('node').text),
        'block': kib(target.find('block')),
        'requested': kib(target.find('requested')),
    }


def _format_virtio_mem(tree, device: dict, requested: int,
                       current: int | None) -> None:
    """What libvirt writes back: the cells, maxMemory, the device;
    ``<current>`` in the live XML only."""
    cpu = tree.find('./cpu')
    if cpu is None:
        cpu = etree.SubElement(tree, 'cpu')
    numa = etree.SubElement(cpu, 'numa')
    for cell in device['cells']:
        etree.SubElement(numa, 'cell', **cell)
    max_memory = etree.Element('maxMemory', unit='KiB')
    max_memory.text = str(device['max_memory'][0])
    if device['max_memory'][1] is not None:
        max_memory.set('slots', device['max_memory'][1])
    tree.find('./memory').addprevious(max_memory)
    memory = etree.SubElement(tree.find('./devices'), 'memory',
                              model='virtio-mem')
    target = etree.SubElement(memory, 'target')
    for name, value in (('size', device['size']), ('node', device['node']),
                        ('block', device['block']),
                        ('requested', requested), ('current', current)):
        if value is None:
            continue
        node = etree.SubElement(target, name)
        node.text = str(value)
        if name != 'node':
            node.set('unit', 'KiB')
    if current is not None:
        # libvirt names devices in the live XML only.
        etree.SubElement(memory, 'alias', name='virtiomem0')
    etree.SubElement(memory, 'address', **VIRTIO_MEM_ADDRESS)


def _format_vcpus(vcpus) -> etree._Element:
    listed = etree.Element('vcpus')
    for vcpu_id, vcpu in enumerate(vcpus):
        node = etree.SubElement(
            listed, 'vcpu', id=str(vcpu_id),
            enabled='yes' if vcpu.enabled else 'no',
            hotpluggable='yes' if vcpu.hotpluggable else 'no')
        if vcpu.order:
            node.set('order', str(vcpu.order))
    return listed


def get_memory_stats(connection, cellNum, flags=0):
    """virNodeGetMemoryStats as libvirt answers it on a host of one NUMA
    cell: the host's memory (``HostInfo.kB_mem``) and what is free of it,
    in KiB, each running guest holding what it was given plus
    ``connection.host_used_kib`` (0 unless a test sets it) for the host
    itself; for all cells also buffers and page cache (none here), for the
    one cell only total and free, with libvirt's errors for other cells
    (tests/realguest/test_node_memory.py asks libvirtd)."""
    if cellNum < MISSING_CONSTANTS['VIR_NODE_MEMORY_STATS_ALL_CELLS']:
        raise _error('cellNum in virNodeGetMemoryStats only accepts -1 as '
                     'a negative value', fakelibvirt.VIR_ERR_INVALID_ARG)
    if cellNum > 0:
        # Reported by libvirt's host memory code: VIR_FROM_NONE, which
        # Nova's fake does not name.
        raise _error('cellNum in virHostMemGetStats must be less than or '
                     'equal to 0', fakelibvirt.VIR_ERR_INVALID_ARG, 0)
    total = connection.host_info.kB_mem
    held = sum(domain.info()[2] for domain in connection._vms.values()
               if domain.isActive())
    used = held + getattr(connection, 'host_used_kib', 0)
    stats = {'total': total, 'free': max(total - used, 0)}
    if cellNum == MISSING_CONSTANTS['VIR_NODE_MEMORY_STATS_ALL_CELLS']:
        stats.update(buffers=0, cached=0)
    return stats


def domain_list_get_stats(connection, doms, stats=0, flags=0):
    """virDomainListGetStats, of its groups only VIR_DOMAIN_STATS_VCPU
    (``ElasticDomain.vcpu_stats``); a domain that is not running has
    none."""
    wanted = stats & MISSING_CONSTANTS['VIR_DOMAIN_STATS_VCPU']
    return [(domain, domain.vcpu_stats() if wanted and domain.isActive()
             else {}) for domain in doms]


class ElasticLibvirtFixture(fixtures.Fixture):
    """Installs ElasticDomain in Nova's fake libvirt.

    Use with (after) Nova's ``LibvirtFixture``; also points
    ``nova_ext.virt.live`` at the fake module, as ``LibvirtFixture`` does
    for Nova's own libvirt modules.
    """

    def _setUp(self) -> None:
        for name in ('Domain', 'virDomain'):
            self.useFixture(fixtures.MonkeyPatch(
                f'nova.tests.fixtures.libvirt.{name}', ElasticDomain))
        for name, value in MISSING_CONSTANTS.items():
            self.useFixture(fixtures.MonkeyPatch(
                f'nova.tests.fixtures.libvirt.{name}', value))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.virGetLastError', virGetLastError))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.getMemoryStats',
            get_memory_stats))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Connection.domainListGetStats',
            domain_list_get_stats))
        self.useFixture(fixtures.MonkeyPatch(
            'nova_ext.virt.live.libvirt', fakelibvirt))

    def new_guests(self, **behaviour) -> None:
        """GuestBehaviour fields for every domain defined from now on."""
        self.useFixture(fixtures.MonkeyPatch(
            f'{__name__}.ElasticDomain.new_guest_behaviour', behaviour))

    @staticmethod
    def behaviour(connection, instance_uuid: str) -> GuestBehaviour:
        """The guest behaviour of an instance's domain, to change it."""
        return connection.lookupByUUIDString(instance_uuid).behaviour

    @staticmethod
    def refuse_next(connection, instance_uuid: str, method: str,
                    message: str,
                    code: int = fakelibvirt.VIR_ERR_INTERNAL_ERROR) -> None:
        """Make libvirt refuse the next ``method`` call on that domain."""
        domain = connection.lookupByUUIDString(instance_uuid)
        domain.behaviour.refuse[method] = (message, code)
