"""The guest's own view through Debian's QEMU guest agent, on real QEMU.

The agent guest runs ``qemu-ga`` from Debian's ``qemu-guest-agent``
package inside its initramfs and has no udev-style onlining in its
``/init``: a hot-plugged CPU comes online only through the agent. The
balloon guest has the agent's channel and nothing behind it; the plain
guest has no channel. Each answer of ``nova_ext.virt.live`` is compared
with tests/nova's fake libvirt on the same XML, with the same guest.
"""

import time

import libvirt
import pytest

from nova_ext.virt import live
from tests.realguest import guests, parity

guests.skip_module_without_qemu()

# qemu-ga starts once /init has loaded the modules; under TCG on a shared
# machine, a few seconds after the first status line.
AGENT_TIMEOUT = 60
GUEST_TIMEOUT = 30
# Long enough for a guest with the udev rule to have onlined a CPU
# (about 1 s under TCG).
LEFT_OFFLINE_WAIT = 3
# Nova's [libvirt] mem_stats_period_seconds default, which the domain
# asks for (tests/realguest/domain.py).
STATS_TIMEOUT = 3 * 10


def _answering(guest: guests.RealGuest) -> live.GuestView:
    deadline = time.monotonic() + AGENT_TIMEOUT
    while True:
        view = live.read_guest(guest.domain)
        if view.agent == live.AGENT_ANSWERING:
            return view
        if time.monotonic() > deadline:
            tail = '\n'.join(guest.console.lines()[-15:])
            pytest.fail(f'the guest agent did not answer within '
                        f'{AGENT_TIMEOUT} s: {view.agent_error}; console '
                        f'tail:\n{tail}')
        time.sleep(1)


def _with_statistics(guest: guests.RealGuest, since: float) -> dict:
    """Statistics the balloon driver sent after ``since`` (time.time())."""
    deadline = time.monotonic() + STATS_TIMEOUT
    while True:
        stats = guest.domain.memoryStats()
        if stats.get('last_update', 0) > since and 'usable' in stats:
            return stats
        if time.monotonic() > deadline:
            pytest.fail(f'no balloon statistics within {STATS_TIMEOUT} s: '
                        f'{stats}')
        time.sleep(1)


def test_agent_onlines_the_vcpus_the_guest_leaves_offline(agent_guest,
                                                          progress):
    guest = agent_guest
    assert guest.console.errors() == []
    view = _answering(guest)
    assert view.online_vcpus == guests.MINIMUM_CPU
    assert live.guest_vcpus(guest.domain) == {
        'vcpus': {0}, 'online': {0}, 'offlinable': set()}

    assert live.apply_vcpus(guest.domain, 3, persist=False) == 3
    time.sleep(LEFT_OFFLINE_WAIT)
    # libvirt gave it 3; the guest runs 1, as one without the udev rule.
    assert guest.console.latest().cpus == 1
    plugged = live.guest_vcpus(guest.domain)
    assert plugged == {'vcpus': {0, 1, 2}, 'online': {0},
                       'offlinable': {1, 2}}
    started = time.monotonic()
    assert live.online_plugged_vcpus(guest.domain, timeout=0) == {1, 2}
    guest.console.wait_for(lambda seen: seen.cpus == 3, GUEST_TIMEOUT,
                           'cpus=3 once the agent onlined them')
    progress(f'agent onlined vCPUs 1,2: '
             f'{time.monotonic() - started:.1f} s')
    assert live.read_guest(guest.domain).online_vcpus == 3

    # The fake, from the same definition, with a guest that leaves
    # hot-plugged CPUs offline, answers the same.
    with parity.fake_libvirt() as conn:
        fake = conn.defineXML(guest.persistent_xml())
        fake.create()
        fake.behaviour.onlines_vcpus = False
        assert live.apply_vcpus(fake, 3, persist=False) == 3
        fake_plugged = live.guest_vcpus(fake)
        assert live.online_plugged_vcpus(fake, timeout=0) == {1, 2}
        assert live.read_guest(fake).online_vcpus == 3
    # vCPU 0 aside: Debian's kernel gives it no online switch, the
    # fake does not let it go either.
    assert fake_plugged == plugged


def test_agent_reads_balloon_statistics(agent_guest):
    guest = agent_guest
    assert live.wait_for_memory(guest.domain, guests.MINIMUM_MEMORY_MB,
                                GUEST_TIMEOUT) == guests.MINIMUM_MEMORY_MB
    # The driver sends its first statistics as it loads, before the
    # balloon inflated: those of the next period.
    stats = _with_statistics(guest, since=time.time())
    view = live.read_guest(guest.domain)
    # Nova's balloon deflates on OOM: Linux keeps the balloon's pages in
    # MemTotal ('available'), short of the flavor's maximum by what the
    # kernel keeps; what programs could still take follows the balloon.
    assert live.kib_to_mib(stats['actual']) == guests.MINIMUM_MEMORY_MB
    assert 0 < view.usable_memory_mb < guests.MINIMUM_MEMORY_MB
    assert guests.MINIMUM_MEMORY_MB < view.available_memory_mb < (
        guests.FLAVOR_MEMORY_MB)
    with parity.fake_libvirt() as conn:
        fake = conn.defineXML(guest.persistent_xml())
        fake.create()
        fake_stats = fake.memoryStats()
    assert set(fake_stats) == set(stats) - {'rss'}


def test_agent_not_running_is_reported_in_libvirts_words(booted_guests):
    guest = booted_guests['balloon']
    view = live.read_guest(guest.domain)
    with parity.fake_libvirt() as conn:
        fake = conn.defineXML(guest.persistent_xml())
        fake.create()
        fake.behaviour.guest_agent = False
        fake_view = live.read_guest(fake)
        fake_refusal = parity.outcome(fake, 'setGuestVcpus', '1', 1, 0)
    assert view.agent == fake_view.agent == live.AGENT_NOT_ANSWERING
    assert view.agent_error == fake_view.agent_error
    real_refusal = parity.outcome(guest.domain, 'setGuestVcpus', '1', 1, 0)
    assert real_refusal[:4] == fake_refusal[:4]
    assert 'QEMU guest agent is not connected' in real_refusal[3]

    # No balloon driver in the plain guest: the statistics libvirt has
    # for it, with Nova's period and without one, are the fake's.
    plain_domain = booted_guests['plain'].domain
    real_keys = [set(plain_domain.memoryStats()) - {'rss'}]
    plain_domain.setMemoryStatsPeriod(0, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    real_keys.append(set(plain_domain.memoryStats()) - {'rss'})
    with parity.fake_libvirt() as conn:
        fake = conn.defineXML(booted_guests['plain'].persistent_xml())
        fake.create()
        fake.behaviour.balloon_driver = False
        fake_keys = [set(fake.memoryStats())]
        fake.setMemoryStatsPeriod(0, parity.LIVE)
        fake_keys.append(set(fake.memoryStats()))
    assert fake_keys == real_keys

    # No channel at all: nothing is asked.
    plain = live.read_guest(booted_guests['plain'].domain)
    assert (plain.agent, plain.online_vcpus) == (
        live.AGENT_NOT_CONFIGURED, None)
    with pytest.raises(libvirt.libvirtError) as refused:
        booted_guests['plain'].domain.setGuestVcpus('1', 1, 0)
    assert str(refused.value) == ('argument unsupported: QEMU guest agent '
                                  'is not configured')


def test_readiness_as_the_compute_host_reads_it(agent_guest, booted_guests):
    """What ``describe_guests`` sends, from real QEMU, and the fake's
    answer for the same definition."""
    _answering(agent_guest)
    _with_statistics(agent_guest, since=time.time())
    state = live.read_guest_state(agent_guest.domain)
    assert (state.guest.agent, state.balloon_device, state.stats_fresh) == (
        live.AGENT_ANSWERING, True, True)
    assert state.hotpluggable_vcpus >= 1
    assert state.machine_type and state.machine_type.startswith('pc')
    # A running guest under TCG uses CPU time.
    time.sleep(2)
    assert live.read_guest_state(agent_guest.domain).cpu_time_ns > (
        state.cpu_time_ns) > 0

    # The plain guest has no balloon driver: with statistics collected
    # (Nova's period), none arrive.
    plain = booted_guests['plain']
    plain.domain.setMemoryStatsPeriod(10, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    real = live.read_guest_state(plain.domain)
    assert (real.balloon_device, real.stats_period, real.stats_fresh,
            real.guest.agent) == (True, 10, False,
                                  live.AGENT_NOT_CONFIGURED)
    with parity.fake_libvirt() as conn:
        fake_domain = conn.defineXML(plain.persistent_xml())
        fake_domain.create()
        fake_domain.behaviour.balloon_driver = False
        fake = live.read_guest_state(fake_domain)
    assert (fake.balloon_device, fake.stats_period, fake.stats_fresh,
            fake.guest.agent, fake.machine_type) == (
        real.balloon_device, real.stats_period, real.stats_fresh,
        real.guest.agent, real.machine_type)
    assert fake.hotpluggable_vcpus == real.hotpluggable_vcpus
