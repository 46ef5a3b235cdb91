"""The vCPU group of virDomainListGetStats as libvirt's QEMU driver fills
it, against the fake libvirt of tests/nova (the autopilot reads the
guest's steal time from ``vcpu.<n>.delay``; libvirt's test driver fills
none of the group)."""

import re
import uuid

import libvirt
import pytest
from nova.tests.fixtures import libvirt as nova_fake

from tests.nova import fakelibvirt as elastic_fake

XML = """<domain type='kvm'>
  <name>vcpu-stats</name>
  <uuid>{uuid}</uuid>
  <memory>1048576</memory>
  <vcpu current='{current}'>{maximum}</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><memballoon model='virtio'/></devices>
</domain>"""


@pytest.fixture
def elastic_fake_libvirt():
    fixture = elastic_fake.ElasticLibvirtFixture()
    fixture.setUp()
    yield
    fixture.cleanUp()


def _shapes(stats: dict) -> dict[str, int]:
    """Each key with its vCPU number as N, and how often it is there."""
    found: dict[str, int] = {}
    for key in stats:
        shape = re.sub(r'^vcpu\.\d+\.', 'vcpu.N.', key)
        found[shape] = found.get(shape, 0) + 1
    return found


def test_vcpu_statistics_match_the_fake(booted_guests, elastic_fake_libvirt):
    domain = booted_guests['balloon'].domain
    ((_domain, real),) = domain.connect().domainListGetStats(
        [domain], libvirt.VIR_DOMAIN_STATS_VCPU)
    conn = nova_fake.Connection('qemu:///system')
    fake_domain = conn.defineXML(XML.format(
        uuid=uuid.uuid4(), current=real['vcpu.current'],
        maximum=real['vcpu.maximum']))
    fake_domain.create()
    ((_domain, fake),) = conn.domainListGetStats(
        [fake_domain], elastic_fake.MISSING_CONSTANTS[
            'VIR_DOMAIN_STATS_VCPU'])
    assert _shapes(fake) == _shapes(real)
    assert real['vcpu.0.delay'] >= 0 and real['vcpu.0.time'] > 0
    assert elastic_fake.MISSING_CONSTANTS['VIR_DOMAIN_STATS_VCPU'] == (
        libvirt.VIR_DOMAIN_STATS_VCPU)
