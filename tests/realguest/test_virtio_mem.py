"""virtio-mem as a second memory method, on a real guest (issue 16).

The domains are written by the product's own ``apply_elastic_size`` for a
flavor with ``xloud:memory_model=virtio-mem`` (the minimum as base memory
on NUMA cell 0, ``<maxMemory>``, one virtio-mem device for the rest of the
flavor's memory, nothing requested at boot) and the device's
``<requested>`` is changed with the XML ``live.VirtioMem.update`` writes,
``updateDeviceFlags(..., VIR_DOMAIN_AFFECT_LIVE)``. What counts is the
guest's own view (MemTotal and its online memory blocks, from its serial
console), against the device's ``<current>`` in libvirt's live XML and
the resident memory of the domain's QEMU. The same guest (the same
initramfs) under the balloon shows what the first method gives for the
same change; a paused guest, a guest without the driver and one whose
memory is busy show what a request the guest does not follow looks like
from the host. Invalid
updates are refused with libvirt's own words, which tests/nova's fake
libvirt is to answer alike.
"""

import time

import libvirt
import pytest
from lxml import etree
from nova.tests.fixtures import libvirt as fake_libvirt

from deploy.localcloud import guestimage as images
from nova_ext import sizing
from nova_ext.virt import guest_config, live
from tests.realguest import domain, guests, parity
from tests.realguest.virtio_mem_refusals import REFUSALS, refused

guests.skip_module_without_qemu()

KIB_PER_MIB = 1024
DEVICE_KIB = (guests.FLAVOR_MEMORY_MB - guests.MINIMUM_MEMORY_MB) * KIB_PER_MIB
# Linux's memory block on x86_64 with this little memory: 128 MiB.
MEMORY_BLOCK_KIB = 128 * KIB_PER_MIB
# A few hundred MiB move in about a second under TCG; generous for a
# shared machine.
GUEST_TIMEOUT = 30
# How long a change libvirt took and the guest cannot follow is watched.
UNCONFIRMED_WAIT = 10
# Longer than a running guest takes to unplug 256 MiB.
PAUSED_WAIT = 3
# Less than the least the guest's touch moved QEMU's resident memory by.
RSS_MOVED_KIB = 64 * KIB_PER_MIB
# A TCG guest's kernel boots again in about 15 s.
REBOOT_TIMEOUT = 90


def memtotal_kb(guest: guests.RealGuest) -> int:
    return int(guests.guest_status(guest)['memtotal_kb'])


def memory_blocks(guest: guests.RealGuest) -> int:
    return int(guests.guest_status(guest)['memory_blocks'])


def wait_for_status(guest: guests.RealGuest, what: str, reached,
                    timeout: float = GUEST_TIMEOUT) -> dict[str, str]:
    """The guest's first status line (all fields) ``reached`` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        status = guests.guest_status(guest)
        if status and reached({k: int(v) for k, v in status.items()}):
            return status
        if time.monotonic() > deadline:
            tail = '\n'.join(guest.console.lines()[-10:])
            raise AssertionError(f'guest did not show {what} within '
                                 f'{timeout} s; console tail:\n{tail}')
        time.sleep(0.1)


def wait_for_filled(guest: guests.RealGuest) -> dict[str, str]:
    deadline = time.monotonic() + GUEST_TIMEOUT
    while not guests.guest_status(guest, 'filled'):
        if time.monotonic() > deadline:
            raise AssertionError('the guest never filled its memory')
        time.sleep(0.1)
    return guests.guest_status(guest, 'filled')


def wait_for_current(guest: guests.RealGuest, current_kib: int,
                     timeout: float = 5) -> tuple[int, int | None]:
    """``<requested>``/``<current>`` once ``<current>`` is ``current_kib``;
    libvirt learns of the guest's progress by QEMU's events."""
    deadline = time.monotonic() + timeout
    while True:
        sizes = guests.virtio_mem_sizes(guest.domain)
        if sizes[1] == current_kib or time.monotonic() > deadline:
            return sizes
        time.sleep(0.1)


def usable_kb(guest: guests.RealGuest) -> int:
    """The balloon guest's memory: MemTotal less what the balloon holds."""
    return guest.console.latest().usable_kb


def firmware_domain(libvirtd, with_device: bool) -> libvirt.virDomain:
    """A started domain running the firmware only: what libvirt decides
    on an update needs no guest kernel."""
    model = (sizing.MEMORY_MODEL_VIRTIO_MEM if with_device
             else sizing.MEMORY_MODEL_BALLOON)
    instance = guests.elastic_instance(model)
    config = domain.guest_config(
        f'xloud-vmem-fw-{time.monotonic_ns()}', None, guests.FLAVOR_VCPUS,
        guests.FLAVOR_MEMORY_MB if with_device else guests.MINIMUM_MEMORY_MB)
    if with_device:
        # As the compute driver writes it.
        guest_config.apply_elastic_size(
            config, sizing.ElasticSize.from_instance(instance))
    dom = libvirtd.connect().defineXML(config.to_xml())
    dom.create()
    return dom


def refusal(dom: libvirt.virDomain, xml: str,
            flags: int = libvirt.VIR_DOMAIN_AFFECT_LIVE) -> tuple:
    """libvirt's error for an update: code and domain by name, message."""
    with pytest.raises(libvirt.libvirtError) as caught:
        dom.updateDeviceFlags(xml, flags)
    return (*parity.error_names(libvirt, caught.value), str(caught.value))


def named(code: str, origin: str) -> tuple[frozenset, frozenset]:
    return frozenset({code}), frozenset({origin})


def test_domain_xml_as_libvirt_runs_it(libvirtd):
    """libvirt takes the device as written and adds what it computes: the
    total ``<memory>`` (base plus the device's size), ``<current>``, an
    alias and a PCI address."""
    dom = firmware_domain(libvirtd, with_device=True)
    try:
        tree = etree.fromstring(dom.XMLDesc(0))
        assert live.unit_to_kib(int(tree.findtext('memory')), 'KiB') == (
            guests.FLAVOR_MEMORY_MB * KIB_PER_MIB)
        assert tree.find('maxMemory').get('slots') == '1'
        assert int(tree.findtext('maxMemory')) == (
            guests.FLAVOR_MEMORY_MB * KIB_PER_MIB)
        assert tree.find('cpu/numa/cell').attrib == {
            'id': '0', 'cpus': '0-3', 'unit': 'KiB',
            'memory': str(guests.MINIMUM_MEMORY_MB * KIB_PER_MIB)}
        device = guests.virtio_mem_device(dom)
        target = device.find('target')
        assert [(e.tag, e.text) for e in target] == [
            ('size', str(DEVICE_KIB)), ('node', '0'),
            ('block', str(sizing.VIRTIO_MEM_BLOCK_MB * KIB_PER_MIB)),
            ('requested', '0'), ('current', '0')]
        assert device.find('alias').get('name') == 'virtiomem0'
        assert device.find('address').get('type') == 'pci'
        # The definition has no <current>: it is the running device's.
        defined = guests.virtio_mem_device(
            dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert defined.find('target/current') is None
    finally:
        parity.remove(dom)


def test_invalid_updates_refused_in_libvirts_words(libvirtd):
    """Each update of virtio_mem_refusals.REFUSALS, on real QEMU and on the
    fake libvirt's domain defined from the same XML."""
    dom = firmware_domain(libvirtd, with_device=True)
    plain = firmware_domain(libvirtd, with_device=False)
    try:
        device = live.VirtioMem.of(etree.fromstring(dom.XMLDesc(0)))
        real = {refusal.what: refused(libvirt, dom, refusal)
                for refusal in REFUSALS}
        assert real == {refusal.what: refusal.expected(device)
                        for refusal in REFUSALS}
        with parity.fake_libvirt() as conn:
            fake_dom = conn.defineXML(dom.XMLDesc(
                libvirt.VIR_DOMAIN_XML_INACTIVE))
            fake_dom.create()
            fake = {refusal.what: refused(fake_libvirt, fake_dom, refusal)
                    for refusal in REFUSALS}
        assert fake == real
        # Nothing refused changed anything.
        assert guests.virtio_mem_sizes(dom) == (0, 0)
        valid = guests.virtio_mem_update_xml(dom, 256 * KIB_PER_MIB)
        # A domain without a virtio-mem device (and so without NUMA): the
        # device's XML does not even parse against it.
        assert refusal(plain, valid) == (
            *named('VIR_ERR_XML_DETAIL', 'VIR_FROM_DOMAIN'),
            "can't add memory backend as guest has no NUMA nodes "
            'configured')
        assert guests.virtio_mem_sizes(dom) == (0, 0)
        dom.updateDeviceFlags(valid, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        defined = guests.virtio_mem_device(
            dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert defined.findtext('target/requested') == str(256 * KIB_PER_MIB)
        assert guests.virtio_mem_sizes(dom) == (0, 0)
        # Without a driver behind the device: taken, never plugged.
        dom.updateDeviceFlags(valid, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        assert guests.virtio_mem_sizes(dom) == (256 * KIB_PER_MIB, 0)
        dom.destroy()
        assert refusal(dom, valid) == (
            *named('VIR_ERR_OPERATION_INVALID', 'VIR_FROM_DOMAIN'),
            'Requested operation is not valid: domain is not running')
    finally:
        parity.remove(dom)
        parity.remove(plain)


def test_virtio_mem_and_balloon_grow_and_shrink(memory_method_guests,
                                                libvirtd, progress):
    figures: dict[str, dict[str, float]] = {}
    vmem = memory_method_guests['virtio-mem']
    balloon = memory_method_guests['balloon']
    assert vmem.console.errors() == [] and balloon.console.errors() == []

    # virtio-mem: the guest boots with the base memory only; the device's
    # memory is not there at all until plugged.
    boot = vmem.console.boot_view()
    wait_for_status(vmem, 'its drivers', lambda s: True)
    assert guests.guest_status(vmem, 'memory') == {
        'block_size': hex(MEMORY_BLOCK_KIB * 1024),
        'auto_online': 'online_movable'}
    assert memtotal_kb(vmem) == boot.memtotal_kb
    assert boot.memtotal_kb < guests.MINIMUM_MEMORY_MB * KIB_PER_MIB
    assert memory_blocks(vmem) * MEMORY_BLOCK_KIB == (
        guests.MINIMUM_MEMORY_MB * KIB_PER_MIB)
    assert guests.virtio_mem_sizes(vmem.domain) == (0, 0)
    rss_boot = guests.qemu_rss_kib(libvirtd.base, vmem.name)
    figures['virtio-mem'] = {'boot MemTotal MiB': boot.memtotal_kb / 1024}

    started = time.monotonic()
    guests.request_virtio_mem(vmem.domain, DEVICE_KIB)
    wait_for_status(vmem, 'the device plugged', lambda s: (
        s['memtotal_kb'] == boot.memtotal_kb + DEVICE_KIB))
    figures['virtio-mem']['grow seen s'] = time.monotonic() - started
    assert memory_blocks(vmem) * MEMORY_BLOCK_KIB == (
        guests.FLAVOR_MEMORY_MB * KIB_PER_MIB)
    assert wait_for_current(vmem, DEVICE_KIB) == (DEVICE_KIB, DEVICE_KIB)
    progress(f'virtio-mem +512 MiB seen by the guest: '
             f'{figures["virtio-mem"]["grow seen s"]:.1f} s')
    assert wait_for_filled(vmem) == {'mb': str(guests.TOUCH_MB),
                                     'kept': '0', 'status': '0'}
    rss_grown = guests.qemu_rss_kib(libvirtd.base, vmem.name)
    # The guest touched what it was given: QEMU holds it now. (How much
    # of the touched memory lands in plugged blocks rather than free
    # pages of its RAM varies from boot to boot: 130 to 380 MiB seen.)
    assert rss_grown > rss_boot + RSS_MOVED_KIB

    started = time.monotonic()
    guests.request_virtio_mem(vmem.domain, 0)
    wait_for_status(vmem, 'the device unplugged', lambda s: (
        s['memtotal_kb'] == boot.memtotal_kb))
    figures['virtio-mem']['shrink seen s'] = time.monotonic() - started
    assert memory_blocks(vmem) * MEMORY_BLOCK_KIB == (
        guests.MINIMUM_MEMORY_MB * KIB_PER_MIB)
    assert wait_for_current(vmem, 0) == (0, 0)
    rss_shrunk = guests.qemu_rss_kib(libvirtd.base, vmem.name)
    # QEMU discards what the guest unplugged.
    assert rss_shrunk < rss_grown - RSS_MOVED_KIB
    figures['virtio-mem'].update({
        'RSS grown MiB': rss_grown / 1024,
        'RSS after shrink MiB': rss_shrunk / 1024})

    # Any multiple of the block in between: one memory block online per
    # 128 MiB plugged.
    guests.request_virtio_mem(vmem.domain, 256 * KIB_PER_MIB)
    wait_for_status(vmem, '256 MiB plugged', lambda s: (
        s['memtotal_kb'] == boot.memtotal_kb + 256 * KIB_PER_MIB))
    assert memory_blocks(vmem) * MEMORY_BLOCK_KIB == (
        (guests.MINIMUM_MEMORY_MB + 256) * KIB_PER_MIB)
    assert wait_for_current(vmem, 256 * KIB_PER_MIB) == (
        256 * KIB_PER_MIB, 256 * KIB_PER_MIB)
    # The idle balloon driver in the same guest never moved.
    assert vmem.console.latest().balloon_kb == 0

    # Paused, the guest cannot unplug: libvirt takes the request and
    # <current> stays until the guest runs again.
    vmem.domain.suspend()
    guests.request_virtio_mem(vmem.domain, 0)
    time.sleep(PAUSED_WAIT)
    assert guests.virtio_mem_sizes(vmem.domain) == (0, 256 * KIB_PER_MIB)
    vmem.domain.resume()
    wait_for_status(vmem, 'the unplug after the resume', lambda s: (
        s['memtotal_kb'] == boot.memtotal_kb))
    assert wait_for_current(vmem, 0) == (0, 0)

    # The balloon: the same guest at the flavor's maximum, the balloon
    # holding the difference to the minimum.
    boot = balloon.console.boot_view()
    minimum_kb = boot.usable_kb - DEVICE_KIB
    balloon.console.wait_for(lambda view: view.usable_kb == minimum_kb,
                             GUEST_TIMEOUT, 'the balloon at the minimum')
    assert memory_blocks(balloon) * MEMORY_BLOCK_KIB == (
        guests.FLAVOR_MEMORY_MB * KIB_PER_MIB)
    figures['balloon'] = {'boot MemTotal MiB': boot.memtotal_kb / 1024}
    rss_boot = guests.qemu_rss_kib(libvirtd.base, balloon.name)

    started = time.monotonic()
    balloon.domain.setMemoryFlags(guests.FLAVOR_MEMORY_MB * KIB_PER_MIB,
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
    balloon.console.wait_for(lambda view: view.usable_kb == boot.usable_kb,
                             GUEST_TIMEOUT, 'the balloon deflated')
    figures['balloon']['grow seen s'] = time.monotonic() - started
    assert wait_for_filled(balloon) == {'mb': str(guests.TOUCH_MB),
                                        'kept': '0', 'status': '0'}
    rss_grown = guests.qemu_rss_kib(libvirtd.base, balloon.name)
    assert rss_grown > rss_boot + RSS_MOVED_KIB

    started = time.monotonic()
    balloon.domain.setMemoryFlags(guests.MINIMUM_MEMORY_MB * KIB_PER_MIB,
                                  libvirt.VIR_DOMAIN_AFFECT_LIVE)
    balloon.console.wait_for(lambda view: view.usable_kb == minimum_kb,
                             GUEST_TIMEOUT, 'the balloon inflated')
    figures['balloon']['shrink seen s'] = time.monotonic() - started
    # MemTotal keeps the balloon (deflate-on-OOM), the blocks stay online.
    assert memtotal_kb(balloon) == boot.memtotal_kb
    assert memory_blocks(balloon) * MEMORY_BLOCK_KIB == (
        guests.FLAVOR_MEMORY_MB * KIB_PER_MIB)
    time.sleep(2)
    rss_shrunk = guests.qemu_rss_kib(libvirtd.base, balloon.name)
    figures['balloon'].update({'RSS grown MiB': rss_grown / 1024,
                               'RSS after shrink MiB': rss_shrunk / 1024})
    for method, seen in figures.items():
        progress(f'{method}: ' + ', '.join(
            f'{name} {value:.1f}' for name, value in seen.items()))


def test_requests_the_guest_cannot_follow(
        unconfirmed_virtio_mem_guests, progress):
    no_driver = unconfirmed_virtio_mem_guests['no-driver']
    busy = unconfirmed_virtio_mem_guests['busy']

    # No driver: libvirt takes the request, nothing is plugged, ever.
    boot_kb = no_driver.console.boot_view().memtotal_kb
    guests.request_virtio_mem(no_driver.domain, DEVICE_KIB)
    time.sleep(UNCONFIRMED_WAIT)
    assert guests.virtio_mem_sizes(no_driver.domain) == (DEVICE_KIB, 0)
    assert memtotal_kb(no_driver) == boot_kb
    progress(f'virtio-mem without a driver: requested {DEVICE_KIB} KiB, '
             f'current 0 after {UNCONFIRMED_WAIT} s')
    # What the compute host reports of it (readiness, the audit), and
    # the audit's fix: the device asked for what the guest holds.
    figures = live.read_virtio_mem(no_driver.domain)
    assert figures == {'requested_mb': DEVICE_KIB // KIB_PER_MIB,
                       'plugged_mb': 0,
                       'size_mb': DEVICE_KIB // KIB_PER_MIB}
    assert live.read_guest_state(no_driver.domain).virtio_mem == figures
    assert live.settle_virtio_mem(no_driver.domain) == (
        guests.FLAVOR_MEMORY_MB, guests.MINIMUM_MEMORY_MB)
    assert guests.virtio_mem_sizes(no_driver.domain) == (0, 0)
    assert live.settle_virtio_mem(no_driver.domain) is None

    # Busy: plugged, then filled beyond what the base memory can hold.
    boot_kb = busy.console.boot_view().memtotal_kb
    guests.request_virtio_mem(busy.domain, DEVICE_KIB)
    wait_for_status(busy, 'the device plugged', lambda s: (
        s['memtotal_kb'] == boot_kb + DEVICE_KIB))
    assert wait_for_filled(busy) == {'mb': str(guests.HOLD_MB),
                                     'kept': '1', 'status': '0'}
    assert wait_for_current(busy, DEVICE_KIB) == (DEVICE_KIB, DEVICE_KIB)
    guests.request_virtio_mem(busy.domain, 0)
    # The driver unplugs what it can migrate away, down to the guest's
    # last free pages; the next allocation finds none and the OOM killer
    # nothing to kill but init. Seen both ways: the kernel panics
    # (panic=-1: a reboot, whose reset unplugs everything, so <current>
    # equals <requested> as after a completed unplug), or the guest hangs
    # with <current> short of <requested>.
    deadline = time.monotonic() + REBOOT_TIMEOUT
    while boots(busy) < 2 or not guests.guest_status(busy, this_boot=True):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    requested, current = guests.virtio_mem_sizes(busy.domain)
    assert requested == 0
    assert busy.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    if boots(busy) >= 2:
        console = '\n'.join(busy.console.lines())
        assert 'Out of memory: Killed process' in console
        assert ('Kernel panic - not syncing: System is deadlocked on '
                'memory') in console
        assert current == 0
        assert int(guests.guest_status(busy, this_boot=True)[
            'memtotal_kb']) == boot_kb
        progress('virtio-mem busy: the guest ran out of memory, panicked '
                 'and rebooted; requested 0, current 0')
    else:
        last = guests.guest_status(busy)
        # Hung, no reboot: what libvirt reports is short of the request,
        # at most what the guest last showed.
        assert 0 < current <= int(last['memtotal_kb']) - boot_kb
        progress(f'virtio-mem busy: the guest hung for {REBOOT_TIMEOUT} s; '
                 f'requested 0, current {current} KiB, its last view '
                 f'{last}')


def boots(guest: guests.RealGuest) -> int:
    marker = f'{images.STATUS_PREFIX} boot '
    return sum(marker in line for line in guest.console.lines())


def test_the_products_memory_path(memory_method_guests):
    """``live.apply_memory`` and the reads the compute host records from,
    on the virtio-mem guest: grow with persist, shrink once the guest's
    statistics say what it uses."""
    vmem = memory_method_guests['virtio-mem']
    wait_for_status(vmem, 'its drivers', lambda s: True)
    assert live.read_size(vmem.domain).memory_mb == guests.MINIMUM_MEMORY_MB
    assert live.read_definition(vmem.domain).current.memory_mb == (
        guests.MINIMUM_MEMORY_MB)

    assert live.apply_memory(vmem.domain, guests.FLAVOR_MEMORY_MB,
                             persist=True, confirm_timeout=GUEST_TIMEOUT) \
        == guests.FLAVOR_MEMORY_MB
    assert live.read_size(vmem.domain).memory_mb == guests.FLAVOR_MEMORY_MB
    assert live.read_definition(vmem.domain).current.memory_mb == (
        guests.FLAVOR_MEMORY_MB)
    # The guest's own view follows (its status line every 0.3 s).
    wait_for_status(vmem, 'the device plugged', lambda s: (
        s['memtotal_kb'] > guests.MINIMUM_MEMORY_MB * KIB_PER_MIB))

    # This guest touches 384 MiB once grown and lets go of it; a shrink
    # is made only from statistics the balloon driver sent since (Nova's
    # period, 10 s), which say what it uses now.
    wait_for_filled(vmem)
    released = time.time()
    deadline = time.monotonic() + 3 * 10
    while vmem.domain.memoryStats().get('last_update', 0) <= released:
        assert time.monotonic() < deadline, 'no balloon statistics'
        time.sleep(1)
    assert live.apply_memory(vmem.domain, guests.MINIMUM_MEMORY_MB,
                             persist=False, confirm_timeout=GUEST_TIMEOUT) \
        == guests.MINIMUM_MEMORY_MB
    assert guests.virtio_mem_sizes(vmem.domain) == (0, 0)
    assert live.read_definition(vmem.domain).current.memory_mb == (
        guests.FLAVOR_MEMORY_MB)
