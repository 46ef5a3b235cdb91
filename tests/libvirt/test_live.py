"""nova_ext.virt.live against libvirt's own test driver.

``test:///default`` is real libvirt (the library, its flag checks, its XML
parser and its units) with an in-memory hypervisor, so these tests prove
the flags and the KiB/MiB conversion the compute driver sends.
"""

import uuid
from xml.etree import ElementTree

import libvirt
import pytest
from nova.virt import hardware

from nova_ext.virt import live

MAX_VCPUS = 4
MAX_MEMORY_MB = 4096

DOMAIN_XML = """<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>{max_kib}</memory>
  <currentMemory unit='KiB'>{cur_kib}</currentMemory>
  <vcpu current='{cur_vcpus}'>{max_vcpus}</vcpu>
  <os><type>hvm</type></os>
</domain>"""


@pytest.fixture(scope='module')
def conn():
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    connection = libvirt.open('test:///default')
    yield connection
    connection.close()


@pytest.fixture
def domain(conn):
    """A persistent, running domain booted at 2 vCPUs and 2048 MiB."""
    name = f'elastic-{uuid.uuid4().hex[:8]}'
    dom = conn.defineXML(DOMAIN_XML.format(
        name=name, uuid=uuid.uuid4(), max_kib=MAX_MEMORY_MB * 1024,
        cur_kib=2048 * 1024, cur_vcpus=2, max_vcpus=MAX_VCPUS))
    dom.create()
    yield dom
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _config_vcpus(dom):
    return dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG)


def _config_memory_kib(dom):
    xml = ElementTree.fromstring(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    node = xml.find('currentMemory')
    assert node.get('unit') == 'KiB'
    return int(node.text)


def test_boot_size_is_read_from_current_attributes(domain):
    assert live.read_size(domain) == live.LiveSize(vcpus=2, memory_mb=2048)
    assert domain.vcpusFlags(
        libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_LIVE
    ) == MAX_VCPUS
    assert domain.maxMemory() == MAX_MEMORY_MB * 1024


def test_vcpus_live_only_leaves_definition(domain):
    assert live.apply_vcpus(domain, 4, persist=False) == 4
    assert live.read_size(domain).vcpus == 4
    assert _config_vcpus(domain) == 2


def test_vcpus_persist_writes_definition(domain):
    assert live.apply_vcpus(domain, 3, persist=True) == 3
    assert _config_vcpus(domain) == 3
    assert live.apply_vcpus(domain, 1, persist=True) == 1
    assert (live.read_size(domain).vcpus, _config_vcpus(domain)) == (1, 1)


def test_vcpus_above_maximum_is_refused_unchanged(domain):
    with pytest.raises(live.HypervisorRefused) as exc:
        live.apply_vcpus(domain, MAX_VCPUS + 1, persist=True)
    assert 'requested cpu amount exceeds maximum (5 > 4)' in str(exc.value)
    assert exc.value.observed == 2
    assert (live.read_size(domain).vcpus, _config_vcpus(domain)) == (2, 2)


def test_vcpus_zero_is_refused(domain):
    with pytest.raises(live.HypervisorRefused, match='must not be zero'):
        live.apply_vcpus(domain, 0, persist=False)


def test_memory_is_sent_in_kib(domain):
    assert live.apply_memory(domain, 3072, persist=False) == 3072
    assert domain.info()[2] == 3072 * 1024
    assert _config_memory_kib(domain) == 2048 * 1024


def test_memory_persist_uses_two_calls(domain):
    # LIVE|CONFIG together is refused by this driver ("mutually
    # exclusive"); apply_memory must not depend on it.
    with pytest.raises(libvirt.libvirtError, match='mutually exclusive'):
        domain.setMemoryFlags(3072 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE
                              | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert live.apply_memory(domain, 3072, persist=True) == 3072
    assert _config_memory_kib(domain) == 3072 * 1024
    assert live.apply_memory(domain, 1024, persist=True) == 1024
    assert domain.info()[2] == 1024 * 1024
    assert _config_memory_kib(domain) == 1024 * 1024


def test_memory_above_maximum_is_refused_unchanged(domain):
    with pytest.raises(live.HypervisorRefused,
                       match='cannot set memory higher than max memory'):
        live.apply_memory(domain, MAX_MEMORY_MB + 1, persist=True)
    assert live.read_size(domain).memory_mb == 2048
    assert _config_memory_kib(domain) == 2048 * 1024


def test_stopped_domain_is_refused(domain):
    domain.destroy()
    with pytest.raises(live.HypervisorRefused, match='not running'):
        live.apply_vcpus(domain, 3, persist=True)
    with pytest.raises(live.HypervisorRefused, match='not running'):
        live.apply_memory(domain, 3072, persist=True)
    assert _config_vcpus(domain) == 2


class _Unresponsive:
    """A real domain whose guest does not act on the change.

    It is how QEMU behaves when the guest ignores a vCPU unplug (libvirt
    times out and keeps reporting the old count) or has no balloon driver
    (libvirt accepts the target, the balloon never moves); libvirt's test
    driver has no guest, so the guest's part is played here.
    """

    def __init__(self, domain):
        self._domain = domain
        self._before = live.read_size(domain)

    def __getattr__(self, name):
        return getattr(self._domain, name)

    def setVcpusFlags(self, vcpus, flags):
        err = libvirt.libvirtError(
            'Timed out during operation: vcpu unplug request timed out. '
            'Unplug result must be manually inspected in the domain')
        err.err = (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU,
                   str(err), 2, None, None, None, 0, 0)
        raise err

    def memoryStats(self):
        return {'actual': live.mib_to_kib(self._before.memory_mb)}


def test_unplug_timeout_is_not_confirmed(domain):
    with pytest.raises(live.NotConfirmed, match='manually inspected') as e:
        live.apply_vcpus(_Unresponsive(domain), 1, persist=True)
    assert (e.value.requested, e.value.observed) == (1, 2)
    assert _config_vcpus(domain) == 2


def test_balloon_not_reached_is_not_confirmed(domain):
    with pytest.raises(live.NotConfirmed, match='balloon driver') as e:
        live.apply_memory(_Unresponsive(domain), 1024, persist=True,
                          confirm_timeout=0.3)
    assert (e.value.requested, e.value.observed) == (1024, 2048)
    assert _config_memory_kib(domain) == 2048 * 1024


AGENT_DOMAIN_XML = """<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu current='2'>4</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <channel type='unix'>
      <source mode='bind' path='/nonexistent/{name}.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='virtio'/>
  </devices>
</domain>"""


def test_guest_without_agent_channel_is_not_asked(domain):
    view = live.read_guest(domain)
    assert (view.agent, view.online_vcpus, view.agent_error) == (
        live.AGENT_NOT_CONFIGURED, None, None)
    assert live.online_plugged_vcpus(domain, timeout=0) == set()
    assert live.offline_before_unplug(domain, 1) == set()


def test_guest_agent_failure_in_libvirts_words(conn):
    # The test driver implements no guest agent call: guestVcpus() comes
    # back None (libvirt-python does not raise there), the words come from
    # guestInfo(), which raises.
    name = f'agent-{uuid.uuid4().hex[:8]}'
    dom = conn.defineXML(AGENT_DOMAIN_XML.format(name=name,
                                                 uuid=uuid.uuid4()))
    dom.create()
    try:
        assert live.has_agent_channel(dom)
        assert dom.guestVcpus() is None
        view = live.read_guest(dom)
        assert view.agent == live.AGENT_NOT_ANSWERING
        assert view.agent_error == (
            'this function is not supported by the connection driver: '
            'virDomainGetGuestInfo')
        # The test driver makes its statistics up, with no period and a
        # last_update of 1989: not current, so not the guest's view.
        stats = dom.memoryStats()
        assert (stats['usable'], stats['last_update']) == (
            1024 * 1024, 627319920)
        assert (view.available_memory_mb, view.usable_memory_mb) == (
            None, None)
        assert live.online_plugged_vcpus(dom, timeout=0) == set()
        with pytest.raises(live.GuestAgentError) as refused:
            live.set_guest_vcpus(dom, {1}, online=True)
        assert 'virDomainSetGuestVcpus' in str(refused.value)
    finally:
        dom.destroy()
        dom.undefine()


@pytest.mark.parametrize('text, ids', [
    ('', set()), ('0', {0}), ('0-2,5', {0, 1, 2, 5}), ('1,3-4', {1, 3, 4})])
def test_cpulists_as_libvirt_formats_them(text, ids):
    # guest_vcpus reads libvirt's cpu lists with Nova's cpu spec parser.
    assert hardware.parse_cpu_spec(text) == ids
    assert hardware.parse_cpu_spec(live.format_cpulist(ids)) == ids
