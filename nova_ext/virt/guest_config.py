"""The elastic size in the guest configuration Nova generates.

Nova's ``LibvirtConfigGuest`` writes ``<memory>`` and ``<vcpu>`` from the
flavor and knows neither libvirt's ``current`` attribute of ``<vcpu>`` nor
``<currentMemory>``. :class:`ElasticGuestConfig` adds both, to the XML it
writes and to what it parses back; :func:`apply_elastic_size` fills them
on the config object Nova built. A flavor without ``minimum_*`` and an
instance without a recorded size keep the XML exactly as Nova writes it.
"""

from __future__ import annotations

from lxml import etree
from nova.virt.libvirt import config as vconfig

from nova_ext.sizing import ElasticSize

# Guests that libvirt gives a balloon device (nova.virt.libvirt.driver
# adds one for these virt types only).
_BALLOON_VIRT_TYPES = ('qemu', 'kvm')


class ElasticGuestConfig(vconfig.LibvirtConfigGuest):
    """A guest definition that boots below its maximum size.

    ``vcpus``/``memory`` stay the maximum (the flavor); ``current_vcpus``
    and ``current_memory`` (KiB, as ``memory``) are what the guest starts
    with, written only when set.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current_vcpus: int | None = None
        self.current_memory: int | None = None

    @classmethod
    def adopt(cls, guest: vconfig.LibvirtConfigGuest) -> ElasticGuestConfig:
        """Make the config object Nova built an ElasticGuestConfig.

        The driver builds its ``LibvirtConfigGuest`` in one long method;
        switching the class of that object keeps every attribute Nova set
        and adds only the two this class writes.
        """
        if not isinstance(guest, cls):
            guest.__class__ = cls
            guest.current_vcpus = None
            guest.current_memory = None
        return guest

    def _format_basic_props(self, root: etree._Element) -> None:
        super()._format_basic_props(root)
        if self.current_memory is not None:
            memory = root.find('memory')
            current = self._text_node('currentMemory', self.current_memory)
            current.set('unit', 'KiB')
            memory.addnext(current)
        if self.current_vcpus is not None:
            root.find('vcpu').set('current', str(self.current_vcpus))

    def _parse_basic_props(self, xmldoc: etree._Element) -> None:
        super()._parse_basic_props(xmldoc)
        if xmldoc.tag == 'vcpu' and xmldoc.get('current') is not None:
            self.current_vcpus = int(xmldoc.get('current'))
        elif xmldoc.tag == 'currentMemory':
            self.current_memory = _to_kib(int(xmldoc.text),
                                          xmldoc.get('unit', 'KiB'))


_UNIT_KIB = {'b': 1 / 1024, 'bytes': 1 / 1024, 'k': 1, 'kib': 1,
             'kb': 1000 / 1024, 'm': 1024, 'mib': 1024, 'mb': 1000 ** 2 / 1024,
             'g': 1024 ** 2, 'gib': 1024 ** 2, 'gb': 1000 ** 3 / 1024}


def _to_kib(value: int, unit: str) -> int:
    return int(value * _UNIT_KIB[unit.lower()])


def is_elastic(size: ElasticSize) -> bool:
    """Whether the guest must differ from what stock Nova generates."""
    return (size.minimum_vcpus is not None
            or size.minimum_memory_mb is not None
            or size.boot_vcpus != size.max_vcpus
            or size.boot_memory_mb != size.max_memory_mb)


def apply_elastic_size(guest: vconfig.LibvirtConfigGuest,
                       size: ElasticSize) -> None:
    """Make ``guest.to_xml()`` boot the guest at ``size``'s boot size.

    Keeps ``<vcpu cpuset>`` as Nova set it. An elastic memory size needs
    a balloon: a ``model='none'`` balloon (``[libvirt]
    mem_stats_period_seconds = 0``) becomes a virtio one without stats.
    """
    if not is_elastic(size):
        return
    elastic = ElasticGuestConfig.adopt(guest)
    elastic.current_vcpus = size.boot_vcpus
    elastic.current_memory = size.boot_memory_mb * 1024
    if size.minimum_memory_mb is not None or (
            size.boot_memory_mb != size.max_memory_mb):
        _ensure_balloon(elastic)


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
