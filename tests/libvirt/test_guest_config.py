"""The guest XML written by nova_ext.virt.guest_config, read by libvirt."""

import dataclasses
import uuid

import libvirt
import pytest
from lxml import etree
from nova.virt.libvirt import config as vconfig

from nova_ext import sizing
from nova_ext.virt import guest_config


def _size(boot_vcpus: int, boot_memory_mb: int, minimum: bool = True):
    return sizing.ElasticSize(
        max_vcpus=4, max_memory_mb=4096,
        minimum_vcpus=2 if minimum else None,
        minimum_memory_mb=2048 if minimum else None,
        boot_vcpus=boot_vcpus, boot_memory_mb=boot_memory_mb,
        live_vcpus=boot_vcpus, live_memory_mb=boot_memory_mb,
        updated_at=None, status=None, request_id=None, error=None)


def _guest(virt_type: str = 'test') -> vconfig.LibvirtConfigGuest:
    guest = vconfig.LibvirtConfigGuest()
    guest.virt_type = virt_type
    guest.name = f'config-{uuid.uuid4().hex[:8]}'
    guest.uuid = str(uuid.uuid4())
    guest.memory = 4096 * 1024
    guest.vcpus = 4
    guest.cpuset = {0, 1, 2, 3}
    guest.os_type = 'hvm'
    return guest


@pytest.fixture(scope='module')
def conn():
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    connection = libvirt.open('test:///default')
    yield connection
    connection.close()


def test_libvirt_boots_the_guest_at_its_boot_size(conn):
    guest = _guest()
    guest_config.apply_elastic_size(guest, _size(2, 2048))
    domain = conn.defineXML(guest.to_xml())
    try:
        domain.create()
        assert domain.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
        assert domain.info()[1:4] == [4096 * 1024, 2048 * 1024, 2]
        vcpu = etree.fromstring(domain.XMLDesc(0)).find('vcpu')
        assert (vcpu.get('current'), vcpu.text, vcpu.get('cpuset')) == (
            '2', '4', '0-3')

        # Nova parses libvirt's XML back: the current size survives.
        parsed = guest_config.ElasticGuestConfig()
        parsed.parse_dom(etree.fromstring(domain.XMLDesc(0)))
        assert (parsed.vcpus, parsed.current_vcpus) == (4, 2)
        assert (parsed.memory, parsed.current_memory) == (
            4096 * 1024, 2048 * 1024)
        assert parsed.cpuset == {0, 1, 2, 3}
    finally:
        domain.destroy()
        domain.undefine()


def test_flavor_without_minimum_is_left_alone():
    stock, elastic = _guest('kvm'), _guest('kvm')
    elastic.uuid, elastic.name = stock.uuid, stock.name
    guest_config.apply_elastic_size(elastic, _size(4, 4096, minimum=False))
    assert type(elastic) is vconfig.LibvirtConfigGuest
    assert elastic.to_xml() == stock.to_xml()


def test_balloon_enabled_for_memory_only():
    guest = _guest('kvm')
    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model = 'none'
    guest.add_device(balloon)
    cpu_only = dataclasses.replace(_size(2, 4096), minimum_memory_mb=None)
    guest_config.apply_elastic_size(guest, cpu_only)
    assert balloon.model == 'none'
    guest_config.apply_elastic_size(guest, _size(2, 2048))
    assert balloon.model == 'virtio'
    assert len(guest.devices) == 1
