"""The guest XML written by nova_ext.virt.guest_config, read by libvirt."""

import copy
import dataclasses
import uuid

import libvirt
import pytest
from lxml import etree
from nova.virt.libvirt import config as vconfig

from nova_ext import sizing
from nova_ext.virt import guest_config


def _size(boot_vcpus: int, boot_memory_mb: int, minimum: bool = True,
          **changes) -> sizing.ElasticSize:
    size = sizing.ElasticSize(
        max_vcpus=4, max_memory_mb=4096,
        minimum_vcpus=2 if minimum else None,
        minimum_memory_mb=2048 if minimum else None,
        boot_vcpus=boot_vcpus, boot_memory_mb=boot_memory_mb,
        live_vcpus=boot_vcpus, live_memory_mb=boot_memory_mb,
        updated_at=None, status=None, request_id=None, error=None,
        floor_vcpus=2 if minimum else 4,
        floor_memory_mb=2048 if minimum else 4096)
    return dataclasses.replace(size, **changes)


def _guest(virt_type: str = 'kvm',
           arch: str = 'x86_64') -> vconfig.LibvirtConfigGuest:
    guest = vconfig.LibvirtConfigGuest()
    guest.virt_type = virt_type
    guest.name = f'config-{uuid.uuid4().hex[:8]}'
    guest.uuid = str(uuid.uuid4())
    guest.memory = 4096 * 1024
    guest.vcpus = 4
    guest.cpuset = {0, 1, 2, 3}
    guest.os_type = 'hvm'
    # Nova sets the guest's architecture for kvm and qemu
    # (LibvirtDriver._configure_guest_by_virt_type).
    guest.os_arch = arch
    return guest


def _with_nova_balloon(guest: vconfig.LibvirtConfigGuest):
    # What Nova adds to every kvm/qemu guest (_guest_add_memory_balloon).
    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model, balloon.period = 'virtio', 10
    guest.add_device(balloon)
    return guest


def _vcpus(xml: str) -> list[dict]:
    listed = etree.fromstring(xml).find('vcpus')
    return [dict(vcpu.attrib) for vcpu in listed] if listed is not None \
        else []


def _without_elastic_size(xml: str) -> str:
    """The XML less what apply_elastic_size may add."""
    tree = etree.fromstring(xml)
    for node in tree.findall('vcpus') + tree.findall('currentMemory'):
        tree.remove(node)
    tree.find('vcpu').attrib.pop('current', None)
    return etree.tostring(tree, encoding='unicode')


@pytest.fixture(scope='module')
def conn():
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    connection = libvirt.open('test:///default')
    yield connection
    connection.close()


def test_libvirt_boots_the_guest_at_its_boot_size(conn):
    guest = _guest()
    guest_config.apply_elastic_size(guest, _size(2, 2048))
    xml = guest.to_xml()
    assert _vcpus(xml) == [
        {'id': '0', 'enabled': 'yes', 'hotpluggable': 'no', 'order': '1'},
        {'id': '1', 'enabled': 'yes', 'hotpluggable': 'yes', 'order': '2'},
        {'id': '2', 'enabled': 'no', 'hotpluggable': 'yes'},
        {'id': '3', 'enabled': 'no', 'hotpluggable': 'yes'}]
    # libvirt's test driver takes domains of its own type only.
    domain = conn.defineXML(xml.replace("type=\"kvm\"", "type=\"test\"", 1))
    try:
        domain.create()
        assert domain.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
        assert domain.info()[1:4] == [4096 * 1024, 2048 * 1024, 2]
        described = domain.XMLDesc(0)
        vcpu = etree.fromstring(described).find('vcpu')
        assert (vcpu.get('current'), vcpu.text, vcpu.get('cpuset')) == (
            '2', '4', '0-3')
        assert _vcpus(described) == _vcpus(xml)

        # Nova parses libvirt's XML back: the current size survives.
        parsed = guest_config.ElasticGuestConfig()
        parsed.parse_dom(etree.fromstring(described))
        assert (parsed.vcpus, parsed.current_vcpus) == (4, 2)
        assert (parsed.memory, parsed.current_memory) == (
            4096 * 1024, 2048 * 1024)
        assert parsed.cpuset == {0, 1, 2, 3}
        assert [(v.id, v.enabled, v.hotpluggable, v.order)
                for v in parsed.individual_vcpus] == [
            (0, True, False, 1), (1, True, True, 2), (2, False, True, None),
            (3, False, True, None)]
        assert _vcpus(parsed.to_xml()) == _vcpus(xml)
    finally:
        domain.destroy()
        domain.undefine()


def test_flavor_without_minimum_is_left_alone():
    stock, elastic = _guest(), _guest()
    elastic.uuid, elastic.name = stock.uuid, stock.name
    guest_config.apply_elastic_size(elastic, _size(4, 4096, minimum=False))
    assert type(elastic) is vconfig.LibvirtConfigGuest
    assert elastic.to_xml() == stock.to_xml()


def test_shrinkable_flavor_without_minimum_can_unplug_every_vcpu():
    # [xloud] allow_shrink_without_minimum: boots at the flavor's size,
    # every vCPU but vCPU 0 hot-pluggable; nothing else differs.
    stock = _with_nova_balloon(_guest())
    elastic = copy.deepcopy(stock)
    size = _size(4, 4096, minimum=False, floor_vcpus=1, floor_memory_mb=256)
    guest_config.apply_elastic_size(elastic, size)
    xml = elastic.to_xml()
    assert [(v['enabled'], v['hotpluggable'], v.get('order'))
            for v in _vcpus(xml)] == [
        ('yes', 'no', '1'), ('yes', 'yes', '2'), ('yes', 'yes', '3'),
        ('yes', 'yes', '4')]
    tree = etree.fromstring(xml)
    assert tree.find('vcpu').get('current') is None
    assert tree.find('currentMemory') is None
    tree.remove(tree.find('vcpus'))
    assert etree.tostring(tree, encoding='unicode') == _without_elastic_size(
        stock.to_xml())


def test_nova_cpu_placement_is_kept():
    # cpuset, <cputune> and <numatune> are Nova's, untouched.
    stock = _with_nova_balloon(_guest())
    stock.cputune = vconfig.LibvirtConfigGuestCPUTune()
    for vcpu_id in range(4):
        pin = vconfig.LibvirtConfigGuestCPUTuneVCPUPin()
        pin.id, pin.cpuset = vcpu_id, {vcpu_id % 2}
        stock.cputune.vcpupin.append(pin)
    stock.numatune = vconfig.LibvirtConfigGuestNUMATune()
    stock.numatune.memory = vconfig.LibvirtConfigGuestNUMATuneMemory()
    stock.numatune.memory.nodeset = [0]
    elastic = copy.deepcopy(stock)
    guest_config.apply_elastic_size(elastic, _size(3, 2048))
    assert _vcpus(elastic.to_xml()) != []
    assert _without_elastic_size(elastic.to_xml()) == _without_elastic_size(
        stock.to_xml())


@pytest.mark.parametrize('virt_type, arch', [
    ('kvm', 'aarch64'), ('kvm', 's390x'), ('kvm', 'ppc64le'),
    ('lxc', 'x86_64')])
def test_no_vcpus_list_without_single_vcpu_hotplug(virt_type, arch):
    guest = _guest(virt_type, arch)
    guest_config.apply_elastic_size(guest, _size(2, 2048))
    xml = guest.to_xml()
    assert etree.fromstring(xml).find('vcpu').get('current') == '2'
    assert _vcpus(xml) == []


def test_no_vcpus_list_where_vcpus_are_not_elastic():
    memory_only = _size(4, 2048, minimum_vcpus=None, floor_vcpus=4)
    guest = _guest()
    guest_config.apply_elastic_size(guest, memory_only)
    assert _vcpus(guest.to_xml()) == []
    single = _guest()
    single.vcpus, single.cpuset = 1, None
    guest_config.apply_elastic_size(single, dataclasses.replace(
        memory_only, max_vcpus=1, boot_vcpus=1, live_vcpus=1,
        floor_vcpus=1))
    assert _vcpus(single.to_xml()) == []


def test_balloon_enabled_for_memory_only():
    guest = _guest()
    balloon = vconfig.LibvirtConfigMemoryBalloon()
    balloon.model = 'none'
    guest.add_device(balloon)
    cpu_only = _size(2, 4096, minimum_memory_mb=None, floor_memory_mb=4096)
    guest_config.apply_elastic_size(guest, cpu_only)
    assert balloon.model == 'none'
    guest_config.apply_elastic_size(guest, _size(2, 2048))
    assert balloon.model == 'virtio'
    assert len(guest.devices) == 1


def _virtio_mem(xml: str) -> dict:
    device = etree.fromstring(xml).find(
        "./devices/memory[@model='virtio-mem']")
    target = device.find('target')
    return {child.tag: (child.text, child.get('unit')) for child in target}


def test_virtio_mem_guest_boots_with_its_floor_as_ram(conn):
    guest = _with_nova_balloon(_guest())
    guest_config.apply_elastic_size(guest, _size(
        2, 3072, memory_model=sizing.MEMORY_MODEL_VIRTIO_MEM))
    xml = guest.to_xml()
    tree = etree.fromstring(xml)
    # The floor (2048 MiB) is the RAM of the one NUMA cell; the device
    # can add the remaining 2048 MiB and is asked for 1024 of them.
    cells = tree.findall('./cpu/numa/cell')
    assert [(cell.get('id'), cell.get('cpus'), cell.get('memory'))
            for cell in cells] == [('0', '0-3', str(2048 * 1024))]
    assert (tree.find('maxMemory').text, tree.find('maxMemory').get(
        'slots')) == (str(4096 * 1024), '1')
    assert tree.find('memory').text == str(4096 * 1024)
    assert tree.find('currentMemory') is None
    assert _virtio_mem(xml) == {
        'size': (str(2048 * 1024), 'KiB'), 'node': ('0', None),
        'block': ('2048', 'KiB'), 'requested': (str(1024 * 1024), 'KiB')}
    # Nova's balloon stays, for its statistics.
    assert tree.find('./devices/memballoon').get('model') == 'virtio'

    # libvirt takes the definition, and Nova's parser gives the device
    # back.
    domain = conn.defineXML(xml.replace('type="kvm"', 'type="test"', 1))
    try:
        described = domain.XMLDesc(0)
        assert _virtio_mem(described)['requested'] == (
            str(1024 * 1024), 'KiB')
        device = guest_config.LibvirtConfigGuestVirtioMem()
        device.parse_dom(etree.fromstring(described).find(
            "./devices/memory[@model='virtio-mem']"))
        assert (device.size, device.requested, device.block, device.node) \
            == (2048 * 1024, 1024 * 1024, 2048, 0)
    finally:
        domain.undefine()


@pytest.mark.parametrize('changes', [
    {},
    {'memory_model': sizing.MEMORY_MODEL_VIRTIO_MEM, 'floor_memory_mb': 4096,
     'minimum_memory_mb': 4096},
])
def test_balloon_unless_virtio_mem_has_a_range(changes):
    guest = _with_nova_balloon(_guest())
    guest_config.apply_elastic_size(guest, _size(2, 4096, **changes))
    tree = etree.fromstring(guest.to_xml())
    assert tree.find("./devices/memory") is None
    assert tree.find('maxMemory') is None
    assert tree.find('./cpu/numa') is None


@pytest.mark.parametrize('virt_type, arch', [('lxc', 'x86_64'),
                                             ('kvm', 'aarch64')])
def test_no_virtio_mem_where_qemu_cannot_plug_it(virt_type, arch):
    guest = _with_nova_balloon(_guest(virt_type, arch))
    guest_config.apply_elastic_size(guest, _size(
        2, 3072, memory_model=sizing.MEMORY_MODEL_VIRTIO_MEM))
    assert etree.fromstring(guest.to_xml()).find(
        "./devices/memory") is None
