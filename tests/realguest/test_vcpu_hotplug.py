"""Which vCPUs libvirt's QEMU driver can unplug, and the fake's answers.

What libvirt decides before the guest takes part needs no guest OS: these
domains run QEMU's firmware only (a fraction of a second to start, no
kernel boot). Each scenario runs on the private libvirtd's QEMU driver and
on tests/nova's fake libvirt from the same XML, step by step, and both
must answer alike: result or error (code, domain, message), the counts and
the ``<vcpus>`` list. The unplug a guest has to carry out is proven on a
booted guest in test_elastic_guest.py.
"""

import uuid
from collections.abc import Callable

import libvirt
import pytest
from lxml import etree

from nova_ext import sizing
from nova_ext.virt import guest_config, live
from tests.realguest import domain, guests, parity

guests.skip_module_without_qemu()

LIVE, CONFIG = parity.LIVE, parity.CONFIG
HOTPLUGGABLE = parity.HOTPLUGGABLE
REFUSED = ('unsupported configuration: failed to find appropriate '
           'hotpluggable vcpus to reach the desired target vcpu count')


@pytest.fixture(scope='module')
def qemu(libvirtd):
    # The refusals are the point here: not printed as they happen.
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    return libvirtd.connect()


def _xml(boot_vcpus: int, with_list: bool = True) -> str:
    """Nova's XML for the real-guest flavor (4 vCPUs, minimum 1) booting
    at ``boot_vcpus``, as apply_elastic_size writes it, or as it was
    written before the ``<vcpus>`` list (``with_list`` False)."""
    config = domain.guest_config(f'xloud-hotplug-{uuid.uuid4().hex[:8]}',
                                 None, guests.FLAVOR_VCPUS,
                                 guests.FLAVOR_MEMORY_MB)
    instance = guests.elastic_instance()
    guests.record_boot_size(instance, boot_vcpus, guests.MINIMUM_MEMORY_MB)
    guest_config.apply_elastic_size(
        config, sizing.ElasticSize.from_instance(instance))
    if not with_list:
        config.individual_vcpus = None
    return config.to_xml()


def _run(qemu, xml: str, steps, start: bool = True,
         then: Callable | None = None) -> list:
    """Each step on both drivers; what QEMU answered, the definition's
    outcome first. ``then(real, fake)`` runs last, on both domains."""
    real, defined = parity.define(qemu, xml, start)
    try:
        with parity.fake_libvirt() as fake_conn:
            fake, fake_defined = parity.define(fake_conn, xml, start)
            assert fake_defined == defined
            answers = [defined]
            for step in steps:
                method, *args = step
                answer = parity.outcome(real, method, *args)
                assert parity.outcome(fake, method, *args) == answer, step
                answers.append(answer)
        if then is not None:
            then(real, fake)
        return answers
    finally:
        if real is not None:
            parity.remove(real)


def test_vcpus_present_at_boot_cannot_be_unplugged_without_a_list(qemu):
    # The defect: a domain started with <vcpu current='3'>4</vcpu> and no
    # <vcpus> list (what this project wrote before) runs vCPUs 0-2 as
    # QEMU's -smp vCPUs; libvirt refuses to unplug any of them.
    xml = _xml(3, with_list=False)
    assert etree.fromstring(xml).find('vcpus') is None

    def shrink_through_the_adjust_path(real, fake) -> None:
        # What the compute driver's adjust path makes of it.
        with pytest.raises(live.HypervisorRefused) as refused:
            live.apply_vcpus(real, 2, persist=False)
        with parity.fake_libvirt(), \
                pytest.raises(live.HypervisorRefused) as fake_refused:
            live.apply_vcpus(fake, 2, persist=False)
        assert (str(refused.value), refused.value.observed) == (
            f'libvirt refused 2 vCPUs: {REFUSED}', 4)
        assert (str(fake_refused.value), fake_refused.value.observed) == (
            str(refused.value), refused.value.observed)

    answers = _run(qemu, xml, [
        ('setVcpusFlags', 2, LIVE),
        ('setVcpusFlags', 1, LIVE),
        # A vCPU plugged live is hotpluggable; libvirt lists every vCPU
        # from then on, those of -smp as not hotpluggable.
        ('setVcpusFlags', 4, LIVE),
    ], then=shrink_through_the_adjust_path)
    assert answers[1][:4] == ('error', {'VIR_ERR_CONFIG_UNSUPPORTED'},
                              {'VIR_FROM_QEMU'}, REFUSED)
    assert answers[1][4]['live'] == 3
    assert [vcpu['hotpluggable'] for vcpu in answers[3][1]['live_vcpus']] \
        == ['no', 'no', 'no', 'yes']


def test_generated_list_is_what_libvirt_runs(qemu):
    # apply_elastic_size's list passes the QEMU driver's checks and is
    # reported back as written, with libvirt's order for what it plugs.
    xml = _xml(3)
    answers = _run(qemu, xml, [('setVcpusFlags', 4, LIVE)])
    defined = answers[0][1]
    assert defined['live'] == 3
    assert defined['live_vcpus'] == [
        {'id': '0', 'enabled': 'yes', 'hotpluggable': 'no', 'order': '1'},
        {'id': '1', 'enabled': 'yes', 'hotpluggable': 'yes', 'order': '2'},
        {'id': '2', 'enabled': 'yes', 'hotpluggable': 'yes', 'order': '3'},
        {'id': '3', 'enabled': 'no', 'hotpluggable': 'yes'}]
    assert defined['config_vcpus'] == defined['live_vcpus']
    assert answers[1][1]['live_vcpus'][3] == {
        'id': '3', 'enabled': 'yes', 'hotpluggable': 'yes', 'order': '4'}


def test_persistent_count_changes(qemu):
    # What a persisted adjustment writes into the definition. Without
    # VIR_DOMAIN_VCPU_HOTPLUGGABLE a vCPU enabled takes the hotpluggable
    # flag of the vCPU before it: grown from vCPU 0 alone, the vCPUs the
    # next start boots with are not hotpluggable.
    answers = _run(qemu, _xml(1), [
        ('setVcpusFlags', 3, CONFIG),
        ('setVcpusFlags', 1, CONFIG),
        ('setVcpusFlags', 3, CONFIG | HOTPLUGGABLE),
        ('setVcpusFlags', 4, CONFIG),
        ('setVcpusFlags', 2, CONFIG),
        ('setVcpusFlags', 1, LIVE | CONFIG),
    ], start=False)

    def flags(answer) -> str:
        return ''.join('-' if vcpu['enabled'] == 'no'
                       else 'y' if vcpu['hotpluggable'] == 'yes' else 'n'
                       for vcpu in answer[1]['config_vcpus'])

    assert [flags(answer) for answer in answers[:6]] == [
        'n---', 'nnn-', 'n---', 'nyy-', 'nyyy', 'ny--']
    # The order goes with any change.
    assert not any('order' in vcpu for vcpu in answers[1][1]['config_vcpus'])
    assert (answers[6][0], answers[6][3]) == (
        'error', 'Requested operation is not valid: domain is not running')


def test_started_from_a_definition_grown_without_hotpluggable(qemu):
    xml = _xml(1)
    real, _ = parity.define(qemu, xml, start=False)
    try:
        real.setVcpusFlags(3, CONFIG)
        grown = real.XMLDesc(parity.INACTIVE)
    finally:
        parity.remove(real)
    answers = _run(qemu, grown, [('setVcpusFlags', 2, LIVE),
                                 ('setVcpusFlags', 4, LIVE)])
    assert answers[1][:4] == ('error', {'VIR_ERR_CONFIG_UNSUPPORTED'},
                              {'VIR_FROM_QEMU'}, REFUSED)


@pytest.mark.parametrize('vcpus, message', [
    ("<vcpu id='0' enabled='no' hotpluggable='yes'/>"
     "<vcpu id='1' enabled='yes' hotpluggable='yes'/>",
     "unsupported configuration: vcpu 0 can't be offline"),
    ("<vcpu id='0' enabled='yes' hotpluggable='yes'/>",
     "unsupported configuration: vcpu0 can't be hotpluggable"),
    ("<vcpu id='0' enabled='yes' hotpluggable='no' order='2'/>"
     "<vcpu id='1' enabled='yes' hotpluggable='yes' order='1'/>",
     'unsupported configuration: vcpu0 must be enabled first'),
    ("<vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>"
     "<vcpu id='1' enabled='yes' hotpluggable='yes'/>",
     'unsupported configuration: all vcpus must have either set or unset '
     'order'),
    ("<vcpu id='0' enabled='yes' hotpluggable='no'/>"
     "<vcpu id='1' enabled='yes' hotpluggable='yes'/>"
     "<vcpu id='2' enabled='yes' hotpluggable='no'/>",
     'unsupported configuration: online non-hotpluggable vcpus need to be '
     'ordered prior to hotplugable vcpus'),
    ("<vcpu id='0' enabled='yes' hotpluggable='no'/>"
     "<vcpu id='4' enabled='no' hotpluggable='yes'/>",
     "XML error: vcpu id '4' is out of range of maximum vcpu count"),
], ids=['vcpu0-offline', 'vcpu0-hotpluggable', 'vcpu0-not-first',
        'order-on-some', 'non-hotpluggable-after-hotpluggable',
        'id-out-of-range'])
def test_invalid_lists_refused_alike(qemu, vcpus, message):
    tree = etree.fromstring(_xml(3))
    tree.replace(tree.find('vcpus'),
                 etree.fromstring(f'<vcpus>{vcpus}</vcpus>'))
    answers = _run(qemu, etree.tostring(tree, encoding='unicode'), [],
                   start=False)
    assert answers[0][0] == 'error'
    assert answers[0][3] == message


def test_counts_out_of_range_alike(qemu):
    answers = _run(qemu, _xml(3), [
        ('setVcpusFlags', 5, LIVE),
        ('setVcpusFlags', 5, CONFIG),
        ('setVcpusFlags', 0, LIVE),
        ('setMemoryFlags', (guests.FLAVOR_MEMORY_MB + 1) * 1024, LIVE),
        ('setMemoryFlags', (guests.FLAVOR_MEMORY_MB + 1) * 1024, CONFIG),
    ])
    assert [answer[3] for answer in answers[1:]] == [
        'invalid argument: requested vcpus is greater than max allowable '
        'vcpus for the live domain: 5 > 4',
        'invalid argument: requested vcpus is greater than max allowable '
        'vcpus for the persistent domain: 5 > 4',
        'nvcpus in virDomainSetVcpusFlags must not be zero',
        'invalid argument: cannot set memory higher than max memory',
        'invalid argument: cannot set memory higher than max memory']
