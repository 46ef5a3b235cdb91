"""Live vCPU and memory changes on a libvirt domain.

Plain functions on a ``libvirt.virDomain``, free of Nova objects, so that
they can be proven against libvirt's ``test:///default`` driver and a real
QEMU guest as well as used by the compute driver.

Every function returns only what libvirt reports after the change, never
the value that was asked for: a hypervisor may accept a request and still
not carry it out (a vCPU unplug the guest ignores, a balloon target a guest
without a balloon driver never reaches). Such an outcome raises
:class:`NotConfirmed`; a request libvirt rejects raises
:class:`HypervisorRefused`. Both carry libvirt's own words.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import libvirt
from lxml import etree
from nova.virt import hardware

from nova_ext import sizing

# libvirt counts memory in KiB, Nova and the API in MiB.
_KIB_PER_MIB = 1024

# How long a balloon change may take to be reached by the guest when the
# caller names no time (nova-compute passes [xloud] memory_confirm_timeout).
# A guest with a balloon driver answers in about a second (QEMU under TCG);
# libvirt itself keeps no deadline, so without one a missing driver goes
# unnoticed.
DEFAULT_CONFIRM_TIMEOUT = 15.0
_POLL_INTERVAL = 0.25
# How long a balloon set back to what the guest holds may take to stop
# there (a guest still moving towards the abandoned target).
_RESET_SETTLE_TIMEOUT = 2.0


def mib_to_kib(memory_mb: int) -> int:
    return memory_mb * _KIB_PER_MIB


def kib_to_mib(memory_kib: int) -> int:
    """Round to the nearest MiB: a balloon settles on page boundaries."""
    return (memory_kib + _KIB_PER_MIB // 2) // _KIB_PER_MIB


@dataclasses.dataclass(frozen=True)
class LiveSize:
    vcpus: int
    memory_mb: int


class LiveSizeError(Exception):
    """A live change that did not end at the requested size."""

    def __init__(self, message: str, *, requested: int,
                 observed: int | None) -> None:
        super().__init__(message)
        self.requested = requested
        self.observed = observed


class HypervisorRefused(LiveSizeError):
    """libvirt rejected the request; nothing was changed."""


class NotConfirmed(LiveSizeError):
    """libvirt took the request but the domain does not report the size."""


@dataclasses.dataclass(frozen=True)
class Definition:
    """A domain's persistent definition: what its next start runs at."""

    # <vcpu current> and <currentMemory>: the boot size.
    current: LiveSize
    # <vcpu> and <memory>: the maximum, and all QEMU gives a guest at start
    # until its balloon driver runs.
    maximum: LiveSize


def read_size(domain: libvirt.virDomain) -> LiveSize:
    """The vCPUs online and the memory the guest holds now."""
    return LiveSize(vcpus=_live_vcpus(domain),
                    memory_mb=kib_to_mib(_live_memory_kib(domain)))


def read_definition(domain: libvirt.virDomain,
                    xml: str | None = None) -> Definition:
    """The size a domain's persistent definition (or ``xml``) starts at."""
    if xml is None:
        xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return parse_definition(xml)


def parse_definition(xml: str) -> Definition:
    tree = etree.fromstring(xml)
    vcpu = tree.find('./vcpu')
    maximum_vcpus = int(vcpu.text)
    memory = tree.find('./memory')
    maximum_kib = unit_to_kib(int(memory.text), memory.get('unit', 'KiB'))
    current = tree.find('./currentMemory')
    current_kib = (maximum_kib if current is None else
                   unit_to_kib(int(current.text), current.get('unit', 'KiB')))
    plugged = VirtioMem.of(tree)
    if plugged is not None:
        # It starts with its RAM and the requested blocks, never more.
        current_kib = plugged.base_kib + plugged.requested_kib
    return Definition(
        current=LiveSize(vcpus=int(vcpu.get('current', maximum_vcpus)),
                         memory_mb=kib_to_mib(current_kib)),
        maximum=LiveSize(vcpus=maximum_vcpus,
                         memory_mb=kib_to_mib(maximum_kib)))


def is_paused(domain: libvirt.virDomain) -> bool:
    return domain.info()[0] == libvirt.VIR_DOMAIN_PAUSED


def persist_size(domain: libvirt.virDomain, vcpus: int,
                 memory_mb: int) -> LiveSize:
    """Make ``vcpus``/``memory_mb`` the persistent definition's boot size.

    Only what differs is written. Returns the definition's size as libvirt
    reports it afterwards.
    """
    defined = read_definition(domain).current
    try:
        if defined.vcpus != vcpus:
            _set_config_vcpus(domain, vcpus)
        if defined.memory_mb != memory_mb:
            _set_memory(domain, memory_mb, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as e:
        raise HypervisorRefused(
            f'libvirt refused to persist {vcpus} vCPUs and {memory_mb} MiB: '
            f'{e}', requested=vcpus, observed=None)
    return read_definition(domain).current


@dataclasses.dataclass(frozen=True)
class VirtioMem:
    """A domain's virtio-mem device (``<memory model='virtio-mem'>``),
    KiB: ``base_kib`` the guest's RAM (its NUMA cells), ``size_kib`` the
    most the device can plug, ``requested_kib`` what it is asked to,
    ``current_kib`` what the guest has plugged (live XML only; the
    requested size in a persistent definition)."""

    element: etree._Element
    base_kib: int
    size_kib: int
    block_kib: int
    requested_kib: int
    current_kib: int

    @classmethod
    def of(cls, definition: etree._Element) -> VirtioMem | None:
        device = definition.find("./devices/memory[@model='virtio-mem']")
        if device is None:
            return None

        def kib(node: etree._Element | None, default: int = 0) -> int:
            if node is None:
                return default
            return unit_to_kib(int(node.text), node.get('unit', 'KiB'))

        target = device.find('target')
        requested = kib(target.find('requested'))
        return cls(
            element=device,
            base_kib=sum(
                unit_to_kib(int(cell.get('memory')), cell.get('unit', 'KiB'))
                for cell in definition.findall('./cpu/numa/cell')),
            size_kib=kib(target.find('size')),
            block_kib=kib(target.find('block')),
            requested_kib=requested,
            current_kib=kib(target.find('current'), requested))

    def update(self, requested_kib: int) -> str:
        """The device's XML with only ``<requested>`` changed, as
        virDomainUpdateDeviceFlags takes it (libvirt never parses
        ``<current>``, which is left out)."""
        device = copy.deepcopy(self.element)
        target = device.find('target')
        current = target.find('current')
        if current is not None:
            target.remove(current)
        requested = target.find('requested')
        requested.text = str(requested_kib)
        requested.set('unit', 'KiB')
        return etree.tostring(device, encoding='unicode')


def _check_virtio_mem_shrink(domain: libvirt.virDomain, memory_mb: int,
                             stats_after: float) -> None:
    """Refuse a virtio-mem shrink into memory the guest uses.

    Unlike the balloon, which deflates when the guest runs short
    (Nova's deflate-on-OOM), blocks once unplugged do not come back: a
    guest asked to give up memory it uses migrates its pages into what is
    left and is killed by its own OOM killer, or hangs (doc/realguest.md).
    What it uses is its RAM and plugged blocks less what its balloon
    driver's statistics call usable, from a sample the guest sent after
    its memory last changed (``stats_after``, seconds since the epoch as
    QEMU's ``last_update``): an older one says what was usable at another
    size. Without such statistics the shrink is not made.
    """
    definition = etree.fromstring(domain.XMLDesc(0))
    plugged = VirtioMem.of(definition)
    if plugged is None:
        return
    holds_mb = kib_to_mib(plugged.base_kib + plugged.current_kib)
    if memory_mb >= holds_mb:
        return
    stats = domain.memoryStats()
    if not _fresh(definition, stats) or 'usable' not in stats:
        raise HypervisorRefused(
            f'memory shrink to {memory_mb} MiB not made: with virtio-mem '
            f'the guest must say how much of its {holds_mb} MiB it uses '
            f'(its balloon driver\'s statistics, [libvirt] '
            f'mem_stats_period_seconds), and it does not',
            requested=memory_mb, observed=holds_mb)
    if int(stats['last_update']) <= stats_after:
        raise HypervisorRefused(
            f'memory shrink to {memory_mb} MiB not made yet: the guest\'s '
            f'statistics predate its last memory change, so they do not say '
            f'how much of its {holds_mb} MiB it uses; it sends them every '
            f'{_stats_period(definition)} s: shrink it after that',
            requested=memory_mb, observed=holds_mb)
    used_mb = holds_mb - kib_to_mib(int(stats['usable']))
    least_mb = used_mb + sizing.VIRTIO_MEM_SHRINK_MARGIN_MB
    if memory_mb < least_mb:
        raise HypervisorRefused(
            f'memory shrink to {memory_mb} MiB not made: the guest uses '
            f'{used_mb} MiB of its {holds_mb} MiB, and virtio-mem cannot '
            f'give back blocks once unplugged; {least_mb} MiB is the least '
            f'it can be shrunk to now', requested=memory_mb,
            observed=holds_mb)


def _set_memory(domain: libvirt.virDomain, memory_mb: int,
                flags: int) -> None:
    """Ask for ``memory_mb`` in the live domain or its definition: the
    virtio-mem device's requested size, else the balloon's target."""
    xml_flags = (libvirt.VIR_DOMAIN_XML_INACTIVE
                 if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG else 0)
    plugged = VirtioMem.of(etree.fromstring(domain.XMLDesc(xml_flags)))
    if plugged is None:
        domain.setMemoryFlags(mib_to_kib(memory_mb), flags)
        return
    domain.updateDeviceFlags(
        plugged.update(mib_to_kib(memory_mb) - plugged.base_kib), flags)


def apply_vcpus(domain: libvirt.virDomain, vcpus: int,
                persist: bool) -> int:
    """Set the online vCPUs of a running domain; return libvirt's count.

    ``persist`` also writes the count into the persistent definition, once
    the live change is confirmed, so that the definition never claims a
    size the guest does not run at.
    """
    try:
        domain.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as e:
        # QEMU reports a vCPU unplug the guest has not acknowledged in time
        # as a timeout, although the guest may still complete it: what the
        # domain reports afterwards decides.
        if e.get_error_code() != libvirt.VIR_ERR_OPERATION_TIMEOUT:
            raise HypervisorRefused(
                f'libvirt refused {vcpus} vCPUs: {e}',
                requested=vcpus, observed=_live_vcpus_or_none(domain))
        observed = _live_vcpus(domain)
        if observed != vcpus:
            raise NotConfirmed(
                f'vCPU change to {vcpus} not confirmed, the domain reports '
                f'{observed}: {e}', requested=vcpus, observed=observed)
    observed = _live_vcpus(domain)
    if observed != vcpus:
        raise NotConfirmed(
            f'vCPU change to {vcpus} not confirmed, the domain reports '
            f'{observed}', requested=vcpus, observed=observed)
    if persist:
        try:
            _set_config_vcpus(domain, vcpus)
        except libvirt.libvirtError as e:
            raise HypervisorRefused(
                f'{vcpus} vCPUs applied live but libvirt refused to persist '
                f'them: {e}', requested=vcpus, observed=observed)
    return observed


def apply_memory(domain: libvirt.virDomain, memory_mb: int, persist: bool,
                 *, confirm_timeout: float | None = None,
                 stats_after: float = 0.0) -> int:
    """Set the memory of a running domain; return what it holds.

    Waits up to ``confirm_timeout`` seconds (DEFAULT_CONFIRM_TIMEOUT when
    None) for the guest to reach the target. ``persist`` writes the new
    current memory into the persistent definition afterwards, in a call
    of its own: libvirt's test driver refuses LIVE and CONFIG together
    for memory. ``stats_after`` is when the guest's memory last changed
    (seconds since the epoch): a virtio-mem shrink needs statistics the
    guest sent since.
    """
    if confirm_timeout is None:
        confirm_timeout = DEFAULT_CONFIRM_TIMEOUT
    _check_virtio_mem_shrink(domain, memory_mb, stats_after)
    try:
        _set_memory(domain, memory_mb, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as e:
        raise HypervisorRefused(
            f'libvirt refused {memory_mb} MiB: {e}', requested=memory_mb,
            observed=_live_memory_mb_or_none(domain))
    observed = wait_for_memory(domain, memory_mb, confirm_timeout)
    if observed != memory_mb:
        # A target left set would still be reached later (a balloon
        # driver loading, a guest unpaused), unrecorded and uncounted: the
        # target goes back to what the guest holds now.
        observed = _reset_memory_target(domain)
        if VirtioMem.of(etree.fromstring(domain.XMLDesc(0))) is not None:
            raise NotConfirmed(
                f'memory change to {memory_mb} MiB not confirmed, the guest '
                f'holds {observed} MiB after {confirm_timeout:g}s (is its '
                f'virtio_mem driver loaded, or its memory in use?); the '
                f'virtio-mem device was asked for {observed} MiB again',
                requested=memory_mb, observed=observed)
        raise NotConfirmed(
            f'memory change to {memory_mb} MiB not confirmed, the guest '
            f'holds {observed} MiB after {confirm_timeout:g}s (is its '
            f'balloon driver loaded?); its balloon target was set back to '
            f'{observed} MiB', requested=memory_mb, observed=observed)
    if persist:
        try:
            _set_memory(domain, memory_mb, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as e:
            raise HypervisorRefused(
                f'{memory_mb} MiB applied live but libvirt refused to '
                f'persist it: {e}', requested=memory_mb, observed=observed)
    return observed


def wait_for_memory(domain: libvirt.virDomain, memory_mb: int,
                    timeout: float) -> int:
    """Poll until the guest holds ``memory_mb``; what it holds at the end.

    Returns at once when it does already, after ``timeout`` seconds at the
    latest; the caller compares.
    """
    deadline = time.monotonic() + timeout
    while True:
        observed = kib_to_mib(_confirmed_memory_kib(domain))
        if observed == memory_mb or time.monotonic() >= deadline:
            return observed
        time.sleep(_POLL_INTERVAL)


def _set_config_vcpus(domain: libvirt.virDomain, vcpus: int) -> None:
    """Set the definition's vCPU count, every vCPU it enables
    hot-pluggable.

    Without VIR_DOMAIN_VCPU_HOTPLUGGABLE libvirt gives a vCPU it enables
    the flag of the one before it, and vCPU 0 never has it: a persisted
    grow from one vCPU would start next time with vCPUs that cannot be
    unplugged. libvirt's test driver knows no such flag.
    """
    try:
        domain.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_CONFIG |
                             libvirt.VIR_DOMAIN_VCPU_HOTPLUGGABLE)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or (
                'unsupported flags' not in str(e)):
            raise
        domain.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def _reset_memory_target(domain: libvirt.virDomain) -> int:
    """Set the balloon target to what the guest holds; what it holds then.

    A guest still moving towards the old target stops within moments; what
    it holds once it has (or when the short wait ends) is returned.
    """
    holds = kib_to_mib(_confirmed_memory_kib(domain))
    try:
        _set_memory(domain, holds, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError:
        return holds
    return wait_for_memory(domain, holds, _RESET_SETTLE_TIMEOUT)


def read_virtio_mem(domain: libvirt.virDomain) -> dict | None:
    """The running domain's virtio-mem figures (``virtio_mem_figures``)."""
    return virtio_mem_figures(etree.fromstring(domain.XMLDesc(0)))


def settle_virtio_mem(domain: libvirt.virDomain) -> tuple[int, int] | None:
    """Ask a virtio-mem device for what the guest holds plugged.

    A device asked for more than the guest plugs (no driver) or for less
    than it has given back (blocks in use) is asked for what it holds, as
    an unconfirmed adjustment leaves it. Returns the MiB it was asked for
    and what the guest holds now, None when there was nothing to settle.
    """
    device = VirtioMem.of(etree.fromstring(domain.XMLDesc(0)))
    if device is None or device.requested_kib == device.current_kib:
        return None
    holds = _reset_memory_target(domain)
    return kib_to_mib(device.base_kib + device.requested_kib), holds


_UNIT_KIB = {'b': 1 / 1024, 'bytes': 1 / 1024, 'k': 1, 'kib': 1,
             'kb': 1000 / 1024, 'm': 1024, 'mib': 1024,
             'mb': 1000 ** 2 / 1024, 'g': 1024 ** 2, 'gib': 1024 ** 2,
             'gb': 1000 ** 3 / 1024}


def unit_to_kib(value: int, unit: str) -> int:
    """A libvirt XML memory value in ``unit`` (``unit=`` attribute) in KiB."""
    return int(value * _UNIT_KIB[unit.lower()])


def _live_vcpus(domain: libvirt.virDomain) -> int:
    return domain.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _live_memory_kib(domain: libvirt.virDomain) -> int:
    """What the guest may use now.

    With virtio-mem, its RAM and what the device was asked to plug or
    holds plugged, whichever is more: the guest can take requested blocks
    at any moment, and keeps blocks it has not unplugged yet. Otherwise
    the balloon's actual size when the hypervisor reports it (QEMU), else
    the domain's current memory, which drivers without a balloon
    (libvirt's test driver) change at once.
    """
    plugged = VirtioMem.of(etree.fromstring(domain.XMLDesc(0)))
    if plugged is not None:
        return plugged.base_kib + max(plugged.requested_kib,
                                      plugged.current_kib)
    return _balloon_memory_kib(domain)


def _confirmed_memory_kib(domain: libvirt.virDomain) -> int:
    """What the guest holds, as a change is confirmed by: with virtio-mem
    its RAM and the blocks it has plugged, else the balloon's size."""
    plugged = VirtioMem.of(etree.fromstring(domain.XMLDesc(0)))
    if plugged is not None:
        return plugged.base_kib + plugged.current_kib
    return _balloon_memory_kib(domain)


def _balloon_memory_kib(domain: libvirt.virDomain) -> int:
    stats = domain.memoryStats()
    if 'actual' in stats:
        return int(stats['actual'])
    return int(domain.info()[2])


def _live_vcpus_or_none(domain: libvirt.virDomain) -> int | None:
    try:
        return _live_vcpus(domain)
    except libvirt.libvirtError:
        return None


def _live_memory_mb_or_none(domain: libvirt.virDomain) -> int | None:
    try:
        return kib_to_mib(_live_memory_kib(domain))
    except libvirt.libvirtError:
        return None


# The guest's own view, through the QEMU guest agent and the balloon's
# statistics (doc/compute.md, "The guest's view").

# The virtio-serial port Nova adds for an image with hw_qemu_guest_agent.
AGENT_CHANNEL = 'org.qemu.guest_agent.0'
AGENT_ANSWERING = 'answering'
AGENT_NOT_ANSWERING = 'not_answering'
AGENT_NOT_CONFIGURED = 'not_configured'


@dataclasses.dataclass(frozen=True)
class GuestView:
    """What the guest itself runs with, next to what libvirt gave it.

    ``agent`` is one of the AGENT_* values; ``online_vcpus`` (the vCPUs
    online in the guest) is None unless the agent answered. The memory
    figures come from the balloon driver's statistics (None unless it
    sent them within the last two periods): ``available_memory_mb`` the
    guest's MemTotal (with Nova's deflate-on-OOM balloon it keeps the
    balloon's pages, so it stays near all the guest was started with),
    ``usable_memory_mb`` its MemAvailable, what its programs could still
    take without swapping, which follows the balloon.
    """

    agent: str
    online_vcpus: int | None
    available_memory_mb: int | None
    usable_memory_mb: int | None
    # Why the agent did not answer, in libvirt's words, or None.
    agent_error: str | None = None


class GuestAgentError(Exception):
    """The guest agent did not do what was asked; nothing else changed."""


def has_agent_channel(domain: libvirt.virDomain,
                      definition: etree._Element | None = None) -> bool:
    """Whether the domain has the guest agent's channel (its image asked
    for one with hw_qemu_guest_agent); ``definition``: its live XML, when
    the caller has it already."""
    if definition is None:
        definition = etree.fromstring(domain.XMLDesc(0))
    return any(target.get('name') == AGENT_CHANNEL
               for target in definition.findall('./devices/channel/target'))


def format_cpulist(ids) -> str:
    """``2,3``: vCPU ids as libvirt's cpumap takes them, and as the
    instance action names them."""
    return hardware.format_cpu_spec(ids, allow_ranges=False)


def guest_vcpus(domain: libvirt.virDomain) -> dict[str, set[int]]:
    """``{'vcpus', 'online', 'offlinable'}``: the guest's vCPU ids.

    Raises GuestAgentError with libvirt's words when the agent does not
    answer.
    """
    try:
        answer = domain.guestVcpus()
    except libvirt.libvirtError as e:
        raise GuestAgentError(str(e))
    if answer is None:
        raise GuestAgentError(_agent_error(domain))
    # libvirt's cpu lists (0-2,5) are Nova's cpu specs.
    return {key: hardware.parse_cpu_spec(answer.get(key, ''))
            for key in ('vcpus', 'online', 'offlinable')}


def set_guest_vcpus(domain: libvirt.virDomain, ids, online: bool) -> None:
    """Online (or offline) these vCPUs in the guest through the agent."""
    try:
        domain.setGuestVcpus(format_cpulist(ids), 1 if online else 0, 0)
    except libvirt.libvirtError as e:
        raise GuestAgentError(str(e))


def read_guest(domain: libvirt.virDomain) -> GuestView:
    """The guest's own view of a running domain."""
    return _read_guest(domain, etree.fromstring(domain.XMLDesc(0)),
                       domain.memoryStats())


def _read_guest(domain: libvirt.virDomain, definition: etree._Element,
                stats: dict) -> GuestView:
    available = usable = None
    if _fresh(definition, stats):
        available = stats.get('available')
        usable = stats.get('usable')
    memory = {
        'available_memory_mb': (None if available is None
                                else kib_to_mib(int(available))),
        'usable_memory_mb': (None if usable is None
                             else kib_to_mib(int(usable))),
    }
    if not has_agent_channel(domain, definition):
        return GuestView(AGENT_NOT_CONFIGURED, None, **memory)
    try:
        vcpus = guest_vcpus(domain)
    except GuestAgentError as e:
        return GuestView(AGENT_NOT_ANSWERING, None, agent_error=str(e),
                         **memory)
    return GuestView(AGENT_ANSWERING, len(vcpus['online']), **memory)


@dataclasses.dataclass(frozen=True)
class GuestState:
    """What a running domain shows about its readiness for a new size.

    ``guest`` is the guest's own view; ``balloon_device`` whether the
    domain has a balloon at all, ``stats_period`` the seconds between the
    balloon driver's statistics (0: not collected), ``stats_fresh``
    whether they flow; ``hotpluggable_vcpus`` the vCPUs of ``<vcpus>``
    libvirt can plug and unplug (the machine type's hotplug support is
    what QEMU reported when it started them); ``cpu_time_ns`` libvirt's
    count of the CPU time the domain used since it started;
    ``virtio_mem`` the virtio-mem device's figures, None without one.
    """

    size: LiveSize
    guest: GuestView
    balloon_device: bool
    stats_period: int
    stats_fresh: bool
    hotpluggable_vcpus: int
    machine_type: str | None
    cpu_time_ns: int
    virtio_mem: dict | None = None

    def to_dict(self) -> dict:
        """As the compute host sends it over RPC (``describe_guests``)."""
        return dataclasses.asdict(self)


def read_guest_state(domain: libvirt.virDomain) -> GuestState:
    """Readiness of a running domain: one XML read, one statistics read,
    one agent call, one info call."""
    definition = etree.fromstring(domain.XMLDesc(0))
    balloon = definition.find('./devices/memballoon')
    has_balloon = balloon is not None and balloon.get('model') != 'none'
    stats = domain.memoryStats() if has_balloon else {}
    machine = definition.find('./os/type')
    info = domain.info()
    return GuestState(
        size=read_size(domain),
        guest=_read_guest(domain, definition, stats),
        balloon_device=has_balloon,
        stats_period=_stats_period(definition),
        stats_fresh=_fresh(definition, stats),
        hotpluggable_vcpus=len(definition.findall(
            "./vcpus/vcpu[@hotpluggable='yes']")),
        machine_type=None if machine is None else machine.get('machine'),
        cpu_time_ns=int(info[4]),
        virtio_mem=virtio_mem_figures(definition),
    )


@dataclasses.dataclass(frozen=True)
class PressureSample:
    """What the autopilot samples of a running guest (nova_ext.autopilot).

    ``size`` it runs with; from the balloon driver's statistics, when
    they are current and were sent after ``stats_after``: ``usable_mb``
    (what it can use without swapping, its MemAvailable), the cumulative
    ``major_faults``, ``swap_in_kib`` and ``swap_out_kib`` (None when the
    guest does not report them); ``cpu_time_ns`` libvirt's CPU time of
    the domain since it started; ``online_vcpus`` what the guest agent
    says it runs online, when asked; ``delay_ns`` the time its vCPUs
    waited in the host's run queue since it started (libvirt's
    ``vcpu.<n>.delay``, the guest's steal time), None where libvirt does
    not report it.
    """

    size: LiveSize
    usable_mb: int | None
    major_faults: int | None
    swap_in_kib: int | None
    swap_out_kib: int | None
    cpu_time_ns: int
    online_vcpus: int | None = None
    delay_ns: int | None = None


def read_pressure(domain: libvirt.virDomain, stats_after: float = 0.0, *,
                  online_vcpus: bool = False) -> PressureSample:
    """One sample of a running domain: one XML read, one statistics read,
    one info call, one vCPU count and one vCPU statistics read (its run
    queue delay); with ``online_vcpus``, also the
    vCPUs the guest runs online, from its guest agent (None without an
    agent channel, or when the agent does not answer)."""
    definition = etree.fromstring(domain.XMLDesc(0))
    balloon = definition.find('./devices/memballoon')
    has_balloon = balloon is not None and balloon.get('model') != 'none'
    stats = domain.memoryStats() if has_balloon else {}
    info = domain.info()
    plugged = VirtioMem.of(definition)
    if plugged is not None:
        memory_kib = plugged.base_kib + max(plugged.requested_kib,
                                            plugged.current_kib)
    else:
        memory_kib = int(stats.get('actual', info[2]))
    # Statistics sent before the guest's memory last changed describe
    # another size.
    current = _fresh(definition, stats) and (
        int(stats.get('last_update', 0)) >= stats_after)

    def counter(key: str) -> int | None:
        if not current or key not in stats:
            return None
        return int(stats[key])

    usable = counter('usable')
    online = None
    if online_vcpus and has_agent_channel(domain, definition):
        try:
            online = len(guest_vcpus(domain)['online'])
        except GuestAgentError:
            online = None
    return PressureSample(
        delay_ns=_vcpu_delay_ns(domain),
        size=LiveSize(vcpus=_live_vcpus(domain),
                      memory_mb=kib_to_mib(memory_kib)),
        usable_mb=None if usable is None else kib_to_mib(usable),
        major_faults=counter('major_fault'),
        swap_in_kib=counter('swap_in'),
        swap_out_kib=counter('swap_out'),
        cpu_time_ns=int(info[4]), online_vcpus=online)


def _vcpu_delay_ns(domain: libvirt.virDomain) -> int | None:
    try:
        ((_domain, stats),) = domain.connect().domainListGetStats(
            [domain], libvirt.VIR_DOMAIN_STATS_VCPU)
    except libvirt.libvirtError:
        return None
    delays = [int(value) for key, value in stats.items()
              if key.startswith('vcpu.') and key.endswith('.delay')]
    return sum(delays) if delays else None


def virtio_mem_figures(definition: etree._Element) -> dict | None:
    """``{'requested_mb', 'plugged_mb', 'size_mb'}`` of the domain's
    virtio-mem device (MiB beyond its RAM), None without one."""
    device = VirtioMem.of(definition)
    if device is None:
        return None
    return {'requested_mb': kib_to_mib(device.requested_kib),
            'plugged_mb': kib_to_mib(device.current_kib),
            'size_mb': kib_to_mib(device.size_kib)}


def _stats_period(definition: etree._Element) -> int:
    """Seconds between the balloon driver's statistics (0: none)."""
    stats_node = definition.find('./devices/memballoon/stats')
    return 0 if stats_node is None else int(stats_node.get('period', 0))


def _fresh(definition: etree._Element, stats: dict) -> bool:
    """Whether the balloon driver's statistics are current.

    QEMU keeps what the driver last sent, with the time it got it
    (``last_update``, 0: never): statistics older than two periods come
    from a driver that stopped sending (unloaded, a hung guest), or from
    before the period was switched off.
    """
    period = _stats_period(definition)
    last_update = int(stats.get('last_update', 0))
    return bool(period and last_update and
                time.time() - last_update <= 2 * period)


def online_plugged_vcpus(domain: libvirt.virDomain,
                         timeout: float) -> set[int]:
    """After a hotplug: online through the agent what the guest has not.

    The guest is given ``timeout`` seconds to bring the vCPUs up itself
    (a udev rule does it at once). Returns the vCPUs the agent onlined;
    raises GuestAgentError when it was asked and failed. A guest without
    an answering agent is left as it is.
    """
    if not has_agent_channel(domain):
        return set()
    deadline = time.monotonic() + timeout
    while True:
        try:
            vcpus = guest_vcpus(domain)
        except GuestAgentError:
            return set()
        offline = vcpus['vcpus'] - vcpus['online']
        if not offline or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_INTERVAL)
    if offline:
        set_guest_vcpus(domain, offline, online=True)
    return offline


def offline_before_unplug(domain: libvirt.virDomain,
                          vcpus: int) -> set[int]:
    """Before an unplug to ``vcpus``: offline, through the agent, the
    vCPUs libvirt will take away, so the guest stops using them first.

    libvirt's QEMU driver unplugs the highest-numbered hot-pluggable vCPUs
    that are enabled; the guest numbers its CPUs as libvirt numbers the
    vCPUs when they are plugged in order, as they are here. Returns the
    vCPUs the agent offlined; raises GuestAgentError when it was asked
    and failed.
    """
    definition = etree.fromstring(domain.XMLDesc(0))
    if not has_agent_channel(domain, definition):
        return set()
    listed = definition.find('./vcpus')
    if listed is None:
        return set()
    removable = sorted(
        (int(vcpu.get('id')) for vcpu in listed
         if vcpu.get('enabled') == 'yes' and
         vcpu.get('hotpluggable') == 'yes'), reverse=True)
    leaving = removable[:max(_live_vcpus(domain) - vcpus, 0)]
    try:
        guest = guest_vcpus(domain)
    except GuestAgentError:
        return set()
    online = set(leaving) & guest['online'] & guest['offlinable']
    if online:
        set_guest_vcpus(domain, online, online=False)
    return online


def online_again(domain: libvirt.virDomain, ids: set[int]) -> set[int]:
    """Online, through the agent, those of ``ids`` the guest still has
    (an unplug that failed after they were offlined); the ones onlined."""
    try:
        present = guest_vcpus(domain)['vcpus'] & ids
    except GuestAgentError:
        return set()
    if present:
        set_guest_vcpus(domain, present, online=True)
    return present


def _agent_error(domain: libvirt.virDomain) -> str:
    """Why ``guestVcpus()`` failed, in libvirt's words.

    libvirt-python returns None from it instead of raising, leaving
    libvirt's error as the last error of the thread that made the call:
    under Nova's eventlet mode a worker thread of its pool (the domain is
    a tpool proxy), not this one, whose last error may be any earlier
    one's. ``guestInfo`` raises, and libvirt checks the agent the same
    way for both.
    """
    try:
        domain.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME, 0)
    except libvirt.libvirtError as e:
        return str(e)
    return 'virDomainGetGuestVcpus failed, the guest agent answers otherwise'
