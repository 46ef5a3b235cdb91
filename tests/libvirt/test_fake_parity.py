"""The fake libvirt of tests/nova against libvirt's own test driver.

The same requests go to ``ElasticDomain`` (what Nova's harness runs) and
to a ``test:///default`` domain (real libvirt): results and error messages
must agree, so that the harness tests prove behaviour libvirt really has.
Where libvirt's drivers differ the fake follows QEMU, and the case is left
out here or compared by error code only; tests/realguest compares those
with libvirt's QEMU driver:

* memory LIVE|CONFIG in one call: QEMU accepts it, the test driver does
  not;
* a vCPU count above the maximum: the same error code, other words;
* which vCPUs can be unplugged (QEMU: only those ``<vcpus>`` marks
  hotpluggable, never vCPU 0; the test driver: any), and how a persistent
  count change moves ``<vcpus>``' ``hotpluggable`` and ``order`` (the test
  driver keeps them as they are);
* a paused guest's balloon (QEMU: it waits for the guest; the test driver
  has no guest and moves it at once);
* the balloon's statistics (QEMU: only once a period is set and the
  guest's driver has sent them, and its ``rss`` the fake leaves out; the
  test driver: all of them, made up from ``actual``, whatever the period)
  and a statistics period set LIVE|CONFIG in one call (QEMU takes it, the
  test driver does not);
* the guest agent's calls: the test driver implements none of them
  (``guestVcpus``, ``setGuestVcpus``, ``guestInfo``: "this function is not
  supported"), so only the way libvirt-python hands back a failing
  ``guestVcpus`` (None, the error in ``virGetLastError``) is compared
  here; their answers and libvirt's QEMU words are checked in
  tests/nova/test_compute_guest.py and against real QEMU in
  tests/realguest.
"""

import inspect
import uuid

import libvirt
import pytest
from lxml import etree
from nova.tests.fixtures import libvirt as nova_fake

from deploy.localcloud import hypervisor
from nova_ext.virt import guest_config
from tests.nova import fakelibvirt

XML = """<domain type='{type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory>4194304</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu current='{current}'>4</vcpu>
  {vcpus}
  <os><type arch='x86_64'>hvm</type></os>
  <devices><memballoon model='virtio'/></devices>
</domain>"""

LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


def elastic_vcpus(maximum: int, enabled: int) -> str:
    """The ``<vcpus>`` element apply_elastic_size writes."""
    vcpus = etree.Element('vcpus')
    for vcpu in guest_config.hotpluggable_vcpus(maximum, enabled):
        vcpus.append(vcpu.format_dom())
    return etree.tostring(vcpus, encoding='unicode')


# (method, args, same words): each applied in turn to both domains; the
# drivers word an error differently where the last is False.
STEPS = [
    ('setVcpusFlags', (4, LIVE), True),
    ('setVcpusFlags', (3, CONFIG), True),
    ('setVcpusFlags', (2, LIVE | CONFIG), True),
    ('setVcpusFlags', (4, CONFIG), True),
    ('setVcpusFlags', (5, LIVE), False),
    ('setVcpusFlags', (5, CONFIG), False),
    ('setVcpusFlags', (0, LIVE), True),
    ('setVcpusFlags', (1, LIVE), True),
    ('setMemoryFlags', (3 * 1024 * 1024, LIVE), True),
    ('setMemoryFlags', (1024 * 1024, CONFIG), True),
    ('setMemoryFlags', (4 * 1024 * 1024 + 1, LIVE), True),
    ('setMemoryFlags', (4 * 1024 * 1024 + 1, CONFIG), True),
]


def error_names(module, error) -> tuple[frozenset, frozenset]:
    """The names of an error's code and domain in its own module.

    Nova's fake module numbers some codes differently from libvirt
    (``VIR_ERR_CONFIG_UNSUPPORTED`` is 951 there, 67 in libvirt): the
    names are what code compares against, ``libvirt.VIR_ERR_…``.
    """
    def named(prefix: str, value: int) -> frozenset:
        return frozenset(name for name in dir(module)
                         if name.startswith(prefix)
                         and getattr(module, name) == value)

    return (named('VIR_ERR_', error.get_error_code()),
            named('VIR_FROM_', error.get_error_domain()))


def vcpu_flags(domain, flags: int = 0) -> list[tuple[str, str, str]]:
    """(id, enabled, hotpluggable) of each ``<vcpus>`` entry, [] without."""
    listed = etree.fromstring(domain.XMLDesc(flags)).find('vcpus')
    if listed is None:
        return []
    return [(vcpu.get('id'), vcpu.get('enabled'), vcpu.get('hotpluggable'))
            for vcpu in listed]


def _observe(domain):
    return (domain.vcpusFlags(LIVE), domain.vcpusFlags(CONFIG),
            domain.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | CONFIG),
            domain.info()[2], domain.info()[3],
            vcpu_flags(domain), vcpu_flags(domain, INACTIVE))


def _outcome(domain, method, args, module):
    try:
        getattr(domain, method)(*args)
    except (libvirt.libvirtError, nova_fake.libvirtError) as e:
        # The error domain names the driver (VIR_FROM_TEST here).
        return 'error', error_names(module, e)[0], str(e)
    return 'ok', _observe(domain)


def _real(xml_args: dict):
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open('test:///default')
    dom = conn.defineXML(XML.format(type='test', name='parity',
                                    uuid=uuid.uuid4(), **xml_args))
    dom.create()
    return conn, dom


def _fake(xml_args: dict):
    conn = nova_fake.Connection('test:///default')
    dom = conn.defineXML(XML.format(type='kvm', name='parity',
                                    uuid=uuid.uuid4(), **xml_args))
    dom.create()
    return dom


ELASTIC = {'current': 2, 'vcpus': elastic_vcpus(4, 2)}
STOCK_CURRENT = {'current': 2, 'vcpus': ''}


@pytest.fixture(autouse=True)
def _elastic_fake():
    fixture = fakelibvirt.ElasticLibvirtFixture()
    fixture.setUp()
    yield
    fixture.cleanUp()


@pytest.fixture
def domains(request):
    """A test:///default domain and a fake one from the same XML."""
    xml_args = getattr(request, 'param', ELASTIC)
    conn, real = _real(xml_args)
    yield real, _fake(xml_args)
    if real.isActive():
        real.destroy()
    real.undefine()
    conn.close()


def test_fake_is_an_elastic_domain(domains):
    assert isinstance(domains[1], fakelibvirt.ElasticDomain)


def test_same_answers_as_libvirt(domains):
    real_domain, fake_domain = domains
    assert _observe(fake_domain) == _observe(real_domain)
    for method, args, same_words in STEPS:
        real = _outcome(real_domain, method, args, libvirt)
        fake = _outcome(fake_domain, method, args, nova_fake)
        if not same_words:
            assert real[0] == fake[0] == 'error', (method, args)
            real, fake = real[:2], fake[:2]
        assert fake == real, (method, args)


def test_vcpus_list_decides_the_count():
    # A <vcpus> list overrides <vcpu current>: libvirt counts what it
    # enables.
    xml_args = {'current': 4, 'vcpus': elastic_vcpus(4, 3)}
    conn, real = _real(xml_args)
    try:
        fake = _fake(xml_args)
        assert _observe(fake) == _observe(real)
        assert fake.vcpusFlags(CONFIG) == 3
    finally:
        real.destroy()
        real.undefine()
        conn.close()


@pytest.mark.parametrize('domains', [STOCK_CURRENT], indirect=True)
def test_hotplug_rules_are_qemus(domains):
    # Without a <vcpus> list every vCPU present at start is one QEMU
    # started with -smp: libvirt's QEMU driver cannot unplug it, the test
    # driver does. tests/realguest proves the QEMU side.
    real_domain, fake_domain = domains
    real_domain.setVcpusFlags(1, LIVE)
    assert real_domain.vcpusFlags(LIVE) == 1
    with pytest.raises(nova_fake.libvirtError) as refused:
        fake_domain.setVcpusFlags(1, LIVE)
    assert error_names(nova_fake, refused.value)[0] == {
        'VIR_ERR_CONFIG_UNSUPPORTED'}
    assert str(refused.value) == (
        'unsupported configuration: failed to find appropriate hotpluggable '
        'vcpus to reach the desired target vcpu count')
    assert fake_domain.vcpusFlags(LIVE) == 2


def test_stopped_domain(domains):
    real_domain, fake_domain = domains
    real_domain.destroy()
    fake_domain.destroy()
    for method, args in [('setVcpusFlags', (3, LIVE)),
                         ('setMemoryFlags', (1024, LIVE)),
                         ('vcpusFlags', (LIVE,)),
                         ('memoryStats', ()),
                         ('setMemoryStatsPeriod', (5, LIVE))]:
        real = _outcome(real_domain, method, args, libvirt)
        fake = _outcome(fake_domain, method, args, nova_fake)
        assert real[0] == fake[0] == 'error'
        assert fake[1:] == real[1:], method
    assert fake_domain.vcpusFlags(CONFIG) == real_domain.vcpusFlags(CONFIG)
    assert vcpu_flags(fake_domain) == vcpu_flags(real_domain)


def test_paused_domain(domains):
    # A paused domain is active: live changes are taken.
    real_domain, fake_domain = domains
    for domain in (real_domain, fake_domain):
        domain.suspend()
    assert fake_domain.isActive() == real_domain.isActive() == 1
    assert fake_domain.info()[0] == real_domain.info()[0] == (
        libvirt.VIR_DOMAIN_PAUSED)
    for method, args in [('setVcpusFlags', (3, LIVE)),
                         ('setMemoryFlags', (3 * 1024 * 1024, LIVE)),
                         ('vcpusFlags', (LIVE,))]:
        real = _outcome(real_domain, method, args, libvirt)
        fake = _outcome(fake_domain, method, args, nova_fake)
        assert real[0] == fake[0] == 'ok', method
    assert fake_domain.vcpusFlags(LIVE) == real_domain.vcpusFlags(LIVE) == 3


def test_paused_balloon_waits_for_the_guest():
    # QEMU's balloon moves only while the guest runs (proven on a real
    # guest in tests/realguest); the test driver has no guest to wait for.
    domain = _fake(ELASTIC)
    domain.setMemoryFlags(3 * 1024 * 1024, LIVE)
    assert domain.memoryStats()['actual'] == 3 * 1024 * 1024
    domain.suspend()
    domain.setMemoryFlags(2 * 1024 * 1024, LIVE)
    assert domain.memoryStats()['actual'] == 3 * 1024 * 1024
    assert domain.info()[2] == 3 * 1024 * 1024
    domain.resume()
    assert domain.memoryStats()['actual'] == 2 * 1024 * 1024


def _stats_period(domain, flags: int = 0) -> str | None:
    stats = etree.fromstring(domain.XMLDesc(flags)).find(
        'devices/memballoon/stats')
    return None if stats is None else stats.get('period')


def test_memory_statistics(domains):
    real_domain, fake_domain = domains
    for domain in domains:
        assert _stats_period(domain) is None
        assert domain.setMemoryStatsPeriod(5, LIVE) == 0
        assert domain.setMemoryStatsPeriod(7, CONFIG) == 0
        domain.setMemoryFlags(3 * 1024 * 1024, LIVE)
    assert [_stats_period(fake_domain), _stats_period(fake_domain, INACTIVE)
            ] == [_stats_period(real_domain),
                  _stats_period(real_domain, INACTIVE)] == ['5', '7']
    real, fake = real_domain.memoryStats(), fake_domain.memoryStats()
    assert set(fake) == set(real) - {'rss'}
    assert fake['actual'] == real['actual'] == 3 * 1024 * 1024
    for method, args in [('setMemoryStatsPeriod', (-1, LIVE))]:
        real = _outcome(real_domain, method, args, libvirt)
        fake = _outcome(fake_domain, method, args, nova_fake)
        assert real[0] == fake[0] == 'error'
        assert fake[1:] == real[1:], method


def test_statistics_period_needs_a_balloon():
    xml = XML.replace("<memballoon model='virtio'/>",
                      "<memballoon model='none'/>")
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open('test:///default')
    real = conn.defineXML(xml.format(type='test', name='parity',
                                     uuid=uuid.uuid4(), **ELASTIC))
    fake = nova_fake.Connection('test:///default').defineXML(xml.format(
        type='kvm', name='parity', uuid=uuid.uuid4(), **ELASTIC))
    try:
        for running in (False, True):
            real_answer = _outcome(real, 'setMemoryStatsPeriod', (5, CONFIG),
                                   libvirt)
            fake_answer = _outcome(fake, 'setMemoryStatsPeriod', (5, CONFIG),
                                   nova_fake)
            assert real_answer[0] == fake_answer[0] == 'error'
            # libvirt's module names code 1 VIR_ERR_WARNING too.
            assert 'VIR_ERR_INTERNAL_ERROR' in real_answer[1] & fake_answer[1]
            assert fake_answer[2] == real_answer[2], running
            if not running:
                real.create()
                fake.create()
        assert fake.memoryStats() == {}
        assert real.memoryStats() == {}
    finally:
        if real.isActive():
            real.destroy()
        real.undefine()
        conn.close()


def test_failing_guest_vcpus_returns_none(domains):
    # libvirt-python's guestVcpus() returns None instead of raising (its
    # C binding returns None, the wrapper tests for -1); the fake does the
    # same, with the error where libvirt leaves it.
    real_domain, fake_domain = domains
    assert real_domain.guestVcpus() is None
    real_error = libvirt.virGetLastError()
    assert real_error[0] == libvirt.VIR_ERR_NO_SUPPORT
    assert fake_domain.guestVcpus() is None
    fake_error = nova_fake.virGetLastError()
    # No agent channel in the domain: libvirt's QEMU driver's words.
    assert fake_error[0] == nova_fake.VIR_ERR_ARGUMENT_UNSUPPORTED
    assert fake_error[2] == ('argument unsupported: QEMU guest agent is not '
                             'configured')
    assert len(fake_error) == len(real_error)
    # guestInfo() raises, in both.
    hostname = libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
    with pytest.raises(libvirt.libvirtError) as real_refusal:
        real_domain.guestInfo(hostname, 0)
    assert real_refusal.value.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT
    with pytest.raises(nova_fake.libvirtError) as fake_refusal:
        fake_domain.guestInfo(hostname, 0)
    assert str(fake_refusal.value) == fake_error[2]


# The managed save calls, as Nova makes them: suspend saves the guest,
# delete undefines it with its save image, and Nova's fake itself removes
# the image without flags.
MANAGED_SAVE_CALLS = ('managedSave', 'managedSaveRemove',
                      'hasManagedSaveImage', 'undefineFlags')


def _local_cloud_domain(xml_args: dict):
    """A domain of the local cloud's fake hypervisor (state not kept)."""
    fake_host = hypervisor.FakeHypervisor('parity', None)
    dom = fake_host.connection.defineXML(XML.format(
        type='kvm', name='parity', uuid=uuid.uuid4(), **xml_args))
    dom.create()
    return fake_host.connection, dom


def _parameters(method) -> list[tuple[str, object]]:
    return [(name, parameter.default) for name, parameter
            in inspect.signature(method).parameters.items()]


@pytest.mark.parametrize('method', MANAGED_SAVE_CALLS)
def test_local_cloud_managed_save_signatures_are_libvirts(method):
    _conn, fake = _local_cloud_domain(ELASTIC)
    assert _parameters(getattr(type(fake), method)) == _parameters(
        getattr(libvirt.virDomain, method))


def test_local_cloud_managed_save_answers_as_libvirt():
    conn, real = _real(ELASTIC)
    fake_conn, fake = _local_cloud_domain(ELASTIC)

    def steps(domain, module):
        answers = [domain.managedSave(), domain.info()[0],
                   domain.hasManagedSaveImage(), domain.managedSaveRemove(),
                   domain.hasManagedSaveImage()]
        domain.create()
        answers += [domain.managedSave(0),
                    domain.undefineFlags(
                        module.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)]
        return answers

    try:
        assert steps(fake, nova_fake) == steps(real, libvirt) == [
            0, libvirt.VIR_DOMAIN_SHUTOFF, 1, 0, 0, 0, 0]
    finally:
        conn.close()
    every = (nova_fake.VIR_CONNECT_LIST_DOMAINS_ACTIVE
             | nova_fake.VIR_CONNECT_LIST_DOMAINS_INACTIVE)
    assert fake_conn.listAllDomains(every) == []


def test_local_cloud_keeps_a_save_image_across_restarts(tmp_path):
    # libvirt keeps a suspended guest's managed save image on disk; a
    # restarted nova-compute of the local cloud finds it as libvirtd would.
    before = hypervisor.FakeHypervisor('parity', tmp_path)
    dom = before.connection.defineXML(XML.format(
        type='kvm', name='parity', uuid=uuid.uuid4(), **ELASTIC))
    dom.create()
    dom.managedSave(0)
    after = hypervisor.FakeHypervisor('parity', tmp_path)
    assert after.restore() == 1
    restored = after.connection.lookupByUUIDString(dom.UUIDString())
    assert restored.hasManagedSaveImage(0) == 1
    assert restored.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert restored.managedSaveRemove(0) == 0
    assert restored.hasManagedSaveImage(0) == 0
