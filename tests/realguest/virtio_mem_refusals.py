"""libvirt 9.0's refusals of a virtio-mem ``<requested>`` update, in its
words with QEMU 7.2.

One table for both sides: ``tests/realguest/test_virtio_mem.py`` makes
each update on a real running domain and on the fake libvirt's domain
defined from the same XML, and ``tests/nova/test_compute_virtio_mem.py``
on a fake domain in Nova's harness; so the fake cannot drift from what
real QEMU was seen to answer. Codes and error domains are by name: Nova's
fake module numbers some differently (``parity.error_names``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import libvirt
from lxml import etree

from nova_ext.virt import live
from tests.realguest import parity

KIB_PER_MIB = 1024
LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
# A request the device takes: a quarter of a GiB.
VALID_KIB = 256 * KIB_PER_MIB


def without(xml: str, *tags: str) -> str:
    """A device's XML less its ``tags`` elements."""
    device = etree.fromstring(xml)
    for tag in tags:
        device.remove(device.find(tag))
    return etree.tostring(device, encoding='unicode')


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An update libvirt refuses: ``xml`` builds it from the running
    domain's device, ``message`` is libvirt's for a device of that size."""

    what: str
    xml: Callable[[live.VirtioMem], str]
    code: str
    origin: str
    message: Callable[[int], str]
    flags: int = LIVE

    def expected(self, device: live.VirtioMem) -> tuple[str, str, str]:
        return self.code, self.origin, self.message(device.size_kib)


def _valid(device: live.VirtioMem) -> str:
    return device.update(VALID_KIB)


REFUSALS = (
    # Looked up by its address: an alias alone, or nothing, is not found.
    Refusal('no address', lambda device: without(_valid(device), 'address'),
            'VIR_ERR_CONFIG_UNSUPPORTED', 'VIR_FROM_QEMU',
            lambda size: "unsupported configuration: memory 'virtiomem0' "
                         "not found"),
    Refusal('no address, no alias',
            lambda device: without(_valid(device), 'address', 'alias'),
            'VIR_ERR_CONFIG_UNSUPPORTED', 'VIR_FROM_QEMU',
            lambda size: "unsupported configuration: memory '(null)' not "
                         "found"),
    # Found by its address, QEMU's property is set through its alias.
    Refusal('no alias', lambda device: without(_valid(device), 'alias'),
            'VIR_ERR_INTERNAL_ERROR', 'VIR_FROM_QEMU',
            lambda size: "internal error: unable to execute QEMU command "
                         "'qom-set': Device '/machine/peripheral/(null)' not "
                         "found"),
    # Only <requested> may change.
    Refusal('another size',
            lambda device: _valid(device).replace(
                f'>{device.size_kib}</size>',
                f'>{device.size_kib // 2}</size>'),
            'VIR_ERR_CONFIG_UNSUPPORTED', 'VIR_FROM_QEMU',
            lambda size: f"unsupported configuration: cannot modify memory "
                         f"size from '{size}' to '{size // 2}'"),
    Refusal('another block size',
            lambda device: _valid(device).replace('>2048</block>',
                                                  '>4096</block>'),
            'VIR_ERR_CONFIG_UNSUPPORTED', 'VIR_FROM_QEMU',
            lambda size: "unsupported configuration: cannot modify memory "
                         "block size from '2048' to '4096'"),
    # Checked as the XML is parsed, before any lookup.
    Refusal('a NUMA node the guest has not',
            lambda device: _valid(device).replace('<node>0</node>',
                                                  '<node>1</node>'),
            'VIR_ERR_XML_DETAIL', 'VIR_FROM_DOMAIN',
            lambda size: "can't add memory backend for guest node '1' as "
                         "the guest has only '1' NUMA nodes configured"),
    Refusal('more than the device',
            lambda device: device.update(device.size_kib +
                                         2 * KIB_PER_MIB),
            'VIR_ERR_XML_DETAIL', 'VIR_FROM_DOMAIN',
            lambda size: f'requested size must be smaller than or equal to '
                         f'@size ({size}KiB)'),
    Refusal('part of a block',
            lambda device: device.update(3 * KIB_PER_MIB),
            'VIR_ERR_XML_DETAIL', 'VIR_FROM_DOMAIN',
            lambda size: 'requested size must be an integer multiple of '
                         'block size'),
    # The definition: found by the same address, without it not.
    Refusal('the definition, no address',
            lambda device: without(_valid(device), 'address'),
            'VIR_ERR_INVALID_ARG', 'VIR_FROM_QEMU',
            lambda size: 'invalid argument: memory not found',
            flags=CONFIG),
)


def refused(module, domain, refusal: Refusal) -> tuple[str, str, str]:
    """What ``domain`` (of libvirt ``module``, real or fake) answers the
    refusal's update: the error's code and domain that ``refusal`` names
    (when among its names), and its message."""
    device = live.VirtioMem.of(etree.fromstring(domain.XMLDesc(0)))
    try:
        domain.updateDeviceFlags(refusal.xml(device), refusal.flags)
    except module.libvirtError as e:
        codes, origins = parity.error_names(module, e)
        return (refusal.code if refusal.code in codes else str(codes),
                refusal.origin if refusal.origin in origins
                else str(origins),
                str(e))
    return ('taken', 'taken', '')

