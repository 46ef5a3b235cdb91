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

import dataclasses
import time

import libvirt
from lxml import etree

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
            domain.setMemoryFlags(mib_to_kib(memory_mb),
                                  libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as e:
        raise HypervisorRefused(
            f'libvirt refused to persist {vcpus} vCPUs and {memory_mb} MiB: '
            f'{e}', requested=vcpus, observed=None)
    return read_definition(domain).current


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
                 *, confirm_timeout: float | None = None) -> int:
    """Set the balloon target of a running domain; return what it holds.

    Waits up to ``confirm_timeout`` seconds (DEFAULT_CONFIRM_TIMEOUT when
    None) for the guest to reach the target. ``persist`` writes the new
    current memory into the persistent definition afterwards, in a call
    of its own: libvirt's test driver refuses LIVE and CONFIG together
    for memory.
    """
    if confirm_timeout is None:
        confirm_timeout = DEFAULT_CONFIRM_TIMEOUT
    target_kib = mib_to_kib(memory_mb)
    try:
        domain.setMemoryFlags(target_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
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
        raise NotConfirmed(
            f'memory change to {memory_mb} MiB not confirmed, the guest '
            f'holds {observed} MiB after {confirm_timeout:g}s (is its '
            f'balloon driver loaded?); its balloon target was set back to '
            f'{observed} MiB', requested=memory_mb, observed=observed)
    if persist:
        try:
            domain.setMemoryFlags(target_kib,
                                  libvirt.VIR_DOMAIN_AFFECT_CONFIG)
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
        observed = kib_to_mib(_live_memory_kib(domain))
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
    holds = kib_to_mib(_live_memory_kib(domain))
    try:
        domain.setMemoryFlags(mib_to_kib(holds),
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError:
        return holds
    return wait_for_memory(domain, holds, _RESET_SETTLE_TIMEOUT)


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
    # The balloon's actual size when the hypervisor reports it (QEMU);
    # otherwise the domain's current memory, which drivers without a
    # balloon (libvirt's test driver) change at once.
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
