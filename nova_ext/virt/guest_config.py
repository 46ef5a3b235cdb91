"""The elastic size in the guest configuration Nova generates.

Nova's ``LibvirtConfigGuest`` writes ``<memory>`` and ``<vcpu>`` from the
flavor and knows neither libvirt's ``current`` attribute of ``<vcpu>``,
``<currentMemory>`` nor the ``<vcpus>`` list of individual vCPUs.
:class:`ElasticGuestConfig` adds them, to the XML it writes and to what it
parses back; :func:`apply_elastic_size` fills them on the config object
Nova built. An instance that can neither shrink nor grow (a flavor without
``xloud:minimum_*``, no recorded size) keeps the XML exactly as Nova writes
it.

The ``<vcpus>`` list is what makes a shrink possible at all: libvirt's
QEMU driver starts every vCPU present at boot as a non-hotpluggable one
unless the list marks it ``hotpluggable='yes'``, and refuses to unplug
those ("failed to find appropriate hotpluggable vcpus to reach the desired
target vcpu count"). vCPU 0 can never be unplugged; QEMU requires it
enabled, non-hotpluggable and first in ``order``.
"""

from __future__ import annotations

from lxml import etree
from nova.objects import fields
from nova.virt.libvirt import config as vconfig

from nova_ext import sizing
from nova_ext.sizing import ElasticSize
from nova_ext.virt import live

# Guests that libvirt gives a balloon device (nova.virt.libvirt.driver
# adds one for these virt types only).
_BALLOON_VIRT_TYPES = ('qemu', 'kvm')
# Where QEMU hot-plugs single vCPUs (one thread each) through ACPI:
# aarch64's virt machine has no vCPU hotplug, s390x no unplug, and ppc64
# plugs whole cores.
_VCPU_HOTPLUG_VIRT_TYPES = ('qemu', 'kvm')
_VCPU_HOTPLUG_ARCHES = (fields.Architecture.X86_64, fields.Architecture.I686)


class LibvirtConfigGuestVcpu(vconfig.LibvirtConfigObject):
    """One ``<vcpu id=… enabled=… hotpluggable=… order=…/>`` of ``<vcpus>``.

    ``order`` is the position in which an enabled vCPU is brought online
    (1 for vCPU 0); None for a disabled one.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(root_name='vcpu', **kwargs)
        self.id: int | None = None
        self.enabled = False
        self.hotpluggable = False
        self.order: int | None = None

    def format_dom(self) -> etree._Element:
        vcpu = super().format_dom()
        vcpu.set('id', str(self.id))
        vcpu.set('enabled', self.get_yes_no_str(self.enabled))
        vcpu.set('hotpluggable', self.get_yes_no_str(self.hotpluggable))
        if self.order is not None:
            vcpu.set('order', str(self.order))
        return vcpu

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        self.id = int(xmldoc.get('id'))
        self.enabled = xmldoc.get('enabled') == 'yes'
        # libvirt's default: what is enabled at boot is not hotpluggable.
        self.hotpluggable = xmldoc.get(
            'hotpluggable', 'no' if self.enabled else 'yes') == 'yes'
        order = xmldoc.get('order')
        self.order = int(order) if order is not None else None


def hotpluggable_vcpus(maximum: int,
                       enabled: int) -> list[LibvirtConfigGuestVcpu]:
    """The ``<vcpus>`` list of a guest started with ``enabled`` of
    ``maximum`` vCPUs, every one but vCPU 0 hot-(un)pluggable."""
    vcpus = []
    for vcpu_id in range(maximum):
        vcpu = LibvirtConfigGuestVcpu()
        vcpu.id = vcpu_id
        vcpu.enabled = vcpu_id < enabled
        vcpu.hotpluggable = vcpu_id != 0
        vcpu.order = vcpu_id + 1 if vcpu.enabled else None
        vcpus.append(vcpu)
    return vcpus


class ElasticGuestConfig(vconfig.LibvirtConfigGuest):
    """A guest definition that boots below its maximum size.

    ``vcpus``/``memory`` stay the maximum (the flavor); ``current_vcpus``
    and ``current_memory`` (KiB, as ``memory``) are what the guest starts
    with, ``individual_vcpus`` the ``<vcpus>`` list; each is written only
    when set.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current_vcpus: int | None = None
        self.current_memory: int | None = None
        self.individual_vcpus: list[LibvirtConfigGuestVcpu] | None = None

    @classmethod
    def adopt(cls, guest: vconfig.LibvirtConfigGuest) -> ElasticGuestConfig:
        """Make the config object Nova built an ElasticGuestConfig.

        The driver builds its ``LibvirtConfigGuest`` in one long method;
        switching the class of that object keeps every attribute Nova set
        and adds only the ones this class writes.
        """
        if not isinstance(guest, cls):
            guest.__class__ = cls
            guest.current_vcpus = None
            guest.current_memory = None
            guest.individual_vcpus = None
        return guest

    def _format_basic_props(self, root: etree._Element) -> None:
        super()._format_basic_props(root)
        if self.current_memory is not None:
            memory = root.find('memory')
            current = self._text_node('currentMemory', self.current_memory)
            current.set('unit', 'KiB')
            memory.addnext(current)
        vcpu = root.find('vcpu')
        if self.current_vcpus is not None:
            vcpu.set('current', str(self.current_vcpus))
        if self.individual_vcpus is not None:
            vcpus = etree.Element('vcpus')
            for entry in self.individual_vcpus:
                vcpus.append(entry.format_dom())
            vcpu.addnext(vcpus)

    def _parse_basic_props(self, xmldoc: etree._Element) -> None:
        super()._parse_basic_props(xmldoc)
        if xmldoc.tag == 'vcpu' and xmldoc.get('current') is not None:
            self.current_vcpus = int(xmldoc.get('current'))
        elif xmldoc.tag == 'currentMemory':
            self.current_memory = live.unit_to_kib(int(xmldoc.text),
                                          xmldoc.get('unit', 'KiB'))
        elif xmldoc.tag == 'vcpus':
            self.individual_vcpus = []
            for node in xmldoc.findall('vcpu'):
                entry = LibvirtConfigGuestVcpu()
                entry.parse_dom(node)
                self.individual_vcpus.append(entry)


class LibvirtConfigGuestVirtioMem(vconfig.LibvirtConfigGuestDevice):
    """``<memory model='virtio-mem'>``: memory plugged in blocks.

    ``size`` is what the device can give the guest at most, ``requested``
    what it is asked to give now, ``current`` (live XML only) what the
    guest has plugged; all KiB, on guest NUMA cell ``node``.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(root_name='memory', **kwargs)
        self.size: int | None = None
        self.node = 0
        self.block: int = sizing.VIRTIO_MEM_BLOCK_MB * 1024
        self.requested: int | None = None
        self.current: int | None = None

    def format_dom(self) -> etree._Element:
        memory = super().format_dom()
        memory.set('model', 'virtio-mem')
        target = etree.SubElement(memory, 'target')
        for name, value in (('size', self.size), ('node', self.node),
                            ('block', self.block),
                            ('requested', self.requested)):
            node = etree.SubElement(target, name)
            node.text = str(value)
            if name != 'node':
                node.set('unit', 'KiB')
        return memory

    def parse_dom(self, xmldoc: etree._Element) -> None:
        super().parse_dom(xmldoc)
        target = xmldoc.find('target')
        if target is None:
            return
        for name in ('size', 'block', 'requested', 'current'):
            node = target.find(name)
            if node is not None:
                setattr(self, name, live.unit_to_kib(
                    int(node.text), node.get('unit', 'KiB')))
        node = target.find('node')
        if node is not None:
            self.node = int(node.text)


def _vcpus_elastic(size: ElasticSize) -> bool:
    return (size.minimum_vcpus is not None
            or size.floor_vcpus < size.max_vcpus
            or size.boot_vcpus != size.max_vcpus)


def _memory_elastic(size: ElasticSize) -> bool:
    return (size.minimum_memory_mb is not None
            or size.floor_memory_mb < size.max_memory_mb
            or size.boot_memory_mb != size.max_memory_mb)


def is_elastic(size: ElasticSize) -> bool:
    """Whether the guest must differ from what stock Nova generates.

    True where the instance may run, or boots, below its flavor: a
    minimum, a floor below the flavor (``[xloud]
    allow_shrink_without_minimum``) or a recorded boot size.
    """
    return _vcpus_elastic(size) or _memory_elastic(size)


def supports_vcpu_hotplug(guest: vconfig.LibvirtConfigGuest) -> bool:
    """Whether libvirt can hot-(un)plug this guest's vCPUs one by one."""
    return (guest.virt_type in _VCPU_HOTPLUG_VIRT_TYPES
            and guest.os_arch in _VCPU_HOTPLUG_ARCHES)


def apply_elastic_size(guest: vconfig.LibvirtConfigGuest,
                       size: ElasticSize) -> None:
    """Make ``guest.to_xml()`` boot the guest at ``size``'s boot size.

    Keeps ``<vcpu cpuset>``, ``<cputune>`` and ``<numatune>`` as Nova set
    them. Where the vCPUs are elastic, every vCPU but vCPU 0 is made
    hot-pluggable (``<vcpus>``), so that a shrink can unplug vCPUs the
    guest booted with. An elastic memory size needs a balloon: a
    ``model='none'`` balloon (``[libvirt] mem_stats_period_seconds = 0``)
    becomes a virtio one without stats.
    """
    if not is_elastic(size):
        return
    elastic = ElasticGuestConfig.adopt(guest)
    # Only what differs from the maximum: a guest that boots at its
    # flavor's size keeps Nova's <vcpu> and <memory> as they are.
    if size.boot_vcpus != elastic.vcpus or size.minimum_vcpus is not None:
        elastic.current_vcpus = size.boot_vcpus
    if size.boot_memory_mb * 1024 != elastic.memory or (
            size.minimum_memory_mb is not None):
        elastic.current_memory = size.boot_memory_mb * 1024
    if _vcpus_elastic(size) and elastic.vcpus > 1 and (
            supports_vcpu_hotplug(elastic)):
        elastic.individual_vcpus = hotpluggable_vcpus(elastic.vcpus,
                                                      size.boot_vcpus)
    if _memory_elastic(size):
        if uses_virtio_mem(elastic, size):
            _add_virtio_mem(elastic, size)
        else:
            _ensure_balloon(elastic)


def uses_virtio_mem(guest: vconfig.LibvirtConfigGuest,
                    size: ElasticSize) -> bool:
    """Whether the guest gets its memory from a virtio-mem device
    (:func:`gets_virtio_mem` of the config Nova built)."""
    return gets_virtio_mem(
        size, guest.virt_type, guest.os_arch,
        numa_topology=guest.cpu is not None and guest.cpu.numa is not None)


def gets_virtio_mem(size: ElasticSize, virt_type: str, os_arch: str | None,
                    numa_topology: bool) -> bool:
    """Whether a guest generated now gets its memory from a virtio-mem
    device: its flavor asks for one, it has a range to plug in, QEMU
    plugs virtio-mem for its virt type and architecture, and nothing else
    gave it a NUMA topology (``compatibility`` refuses those flavors)."""
    return (size.memory_model == sizing.MEMORY_MODEL_VIRTIO_MEM
            and size.floor_memory_mb < size.max_memory_mb
            and virt_type in _BALLOON_VIRT_TYPES
            and os_arch in _VCPU_HOTPLUG_ARCHES
            and not numa_topology)


def _add_virtio_mem(guest: ElasticGuestConfig, size: ElasticSize) -> None:
    """The floor as the guest's RAM, on the one NUMA cell libvirt
    requires for memory devices; the rest of the flavor's memory behind a
    virtio-mem device asked for the boot size.

    ``<memory>`` stays the flavor's (libvirt counts the device's size in
    it), no ``<currentMemory>``: there is no balloon to hold memory back,
    so the balloon keeps to itself (statistics only).
    """
    base_kib = size.floor_memory_mb * 1024
    guest.current_memory = None
    guest.max_memory_size = size.max_memory_mb * 1024
    # virtio-mem takes no DIMM slot; libvirt wants maxMemory's slots set.
    guest.max_memory_slots = 1
    if guest.cpu is None:
        guest.cpu = vconfig.LibvirtConfigGuestCPU()
    cell = vconfig.LibvirtConfigGuestCPUNUMACell()
    cell.id = 0
    cell.cpus = set(range(guest.vcpus))
    cell.memory = base_kib
    guest.cpu.numa = vconfig.LibvirtConfigGuestCPUNUMA()
    guest.cpu.numa.cells.append(cell)
    device = LibvirtConfigGuestVirtioMem()
    device.size = (size.max_memory_mb - size.floor_memory_mb) * 1024
    device.requested = (size.boot_memory_mb - size.floor_memory_mb) * 1024
    guest.add_device(device)
    _ensure_balloon(guest)


def _ensure_balloon(guest: vconfig.LibvirtConfigGuest) -> None:
    if guest.virt_type not in _BALLOON_VIRT_TYPES:
        return
    for device in guest.devices:
        if isinstance(device, vconfig.LibvirtConfigMemoryBalloon):
            if device.model == 'none':
                device.model = 'virtio'
            return
    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model = 'virtio'
    guest.add_device(balloon)
