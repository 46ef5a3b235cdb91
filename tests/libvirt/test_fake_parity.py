"""The fake libvirt of tests/nova against libvirt's own test driver.

The same requests go to ``ElasticDomain`` (what Nova's harness runs) and
to a ``test:///default`` domain (real libvirt): results and error messages
must agree, so that the harness tests prove behaviour libvirt really has.
Where libvirt's drivers differ (memory LIVE|CONFIG in one call: QEMU
accepts it, the test driver does not) the fake follows QEMU and the case
is left out here.
"""

import uuid

import libvirt
import pytest
from nova.tests.fixtures import libvirt as nova_fake

from tests.nova import fakelibvirt

XML = """<domain type='{type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory>4194304</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu current='2'>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><memballoon model='virtio'/></devices>
</domain>"""

LIVE, CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG

# (method, args): each applied in turn to both domains.
STEPS = [
    ('setVcpusFlags', (4, LIVE)),
    ('setVcpusFlags', (3, CONFIG)),
    ('setVcpusFlags', (1, LIVE | CONFIG)),
    ('setVcpusFlags', (5, LIVE)),
    ('setVcpusFlags', (0, LIVE)),
    ('setMemoryFlags', (3 * 1024 * 1024, LIVE)),
    ('setMemoryFlags', (1024 * 1024, CONFIG)),
    ('setMemoryFlags', (4 * 1024 * 1024 + 1, LIVE)),
    ('setMemoryFlags', (4 * 1024 * 1024 + 1, CONFIG)),
]


def _observe(domain):
    return (domain.vcpusFlags(LIVE), domain.vcpusFlags(CONFIG),
            domain.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | CONFIG),
            domain.info()[2], domain.info()[3])


def _outcome(domain, method, args):
    try:
        getattr(domain, method)(*args)
    except (libvirt.libvirtError, nova_fake.libvirtError) as e:
        return 'error', (e.get_error_code(), str(e))
    return 'ok', _observe(domain)


@pytest.fixture
def real_domain():
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open('test:///default')
    dom = conn.defineXML(XML.format(type='test', name='parity',
                                    uuid=uuid.uuid4()))
    dom.create()
    yield dom
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    conn.close()


@pytest.fixture
def fake_domain():
    conn = nova_fake.Connection('test:///default')
    dom = conn.defineXML(XML.format(type='kvm', name='parity',
                                    uuid=uuid.uuid4()))
    dom.create()
    return dom


def test_fake_is_an_elastic_domain(fake_domain):
    assert isinstance(fake_domain, fakelibvirt.ElasticDomain)


@pytest.fixture(autouse=True)
def _elastic_fake():
    fixture = fakelibvirt.ElasticLibvirtFixture()
    fixture.setUp()
    yield
    fixture.cleanUp()


def test_same_answers_as_libvirt(real_domain, fake_domain):
    assert _observe(fake_domain) == _observe(real_domain)
    for method, args in STEPS:
        real = _outcome(real_domain, method, args)
        fake = _outcome(fake_domain, method, args)
        assert fake == real, (method, args)


def test_stopped_domain(real_domain, fake_domain):
    real_domain.destroy()
    fake_domain.destroy()
    for method, args in [('setVcpusFlags', (3, LIVE)),
                         ('setMemoryFlags', (1024, LIVE)),
                         ('vcpusFlags', (LIVE,))]:
        real = _outcome(real_domain, method, args)
        fake = _outcome(fake_domain, method, args)
        assert real[0] == fake[0] == 'error'
        assert fake[1] == real[1], method
    assert fake_domain.vcpusFlags(CONFIG) == real_domain.vcpusFlags(CONFIG)
