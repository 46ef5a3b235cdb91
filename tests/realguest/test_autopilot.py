"""The autopilot's cycle on a real guest under libvirt's QEMU driver.

A guest at its flavor's minimum (512 MiB of 1024) runs a program that
builds a working set larger than the guest can hold at that size. The
cycle nova-compute runs for each guest (``live.read_pressure`` →
``GuestHistory.add`` → ``autopilot.decide`` → ``live.apply_memory`` →
``GuestHistory.changed``), with the engine's waits scaled down to
seconds, must grow the guest before it runs out of memory and shrink it
back once the program has freed its memory and exited.

Out of memory, the guest would not kill the program: Nova's balloon
deflates on OOM (``autodeflate``), so the guest takes pages back from the
balloon itself, a MiB at a time, and runs above the size recorded for it
(512 → 555 → 573 → 598 MiB for this program without the autopilot,
usable 0 for 17 s). A grow in time leaves the balloon to the host.
"""

import dataclasses
import time

import libvirt
import pytest

from deploy.localcloud import guestimage as images
from nova_ext import autopilot
from nova_ext.virt import live
from tests.realguest import autopilot_guest, guests

guests.skip_module_without_qemu()

# The balloon driver's statistics period, and the cycle's: the shortest
# libvirt takes.
SAMPLE_SECONDS = 1
PARAMS = autopilot.Params(
    mode=autopilot.MODE_ON, interval=SAMPLE_SECONDS, min_samples=2,
    window_seconds=120, grow_after=4, shrink_after=10, cooldown=4,
    reverse_cooldown=10)
BOOT_TIMEOUT = 90
AGENT_TIMEOUT = 60
STATS_TIMEOUT = 15
# From the program's start to the shrink: about 52 s, on a loaded machine too.
CYCLE_TIMEOUT = 150
# The program loads this much less than the guest has usable at once,
# then grows by STEP_MB every STEP_SECONDS (about 5 MiB/s under TCG) to
# this much more than it has usable: about 15 s from the low band to
# exhaustion at the minimum, in which grow_after, a statistics period and
# the balloon's move must fit.
LOAD_BELOW_USABLE_MB = 96
TOTAL_ABOVE_USABLE_MB = 64
STEP_MB = 4
STEP_SECONDS = 0.75
HOLD_SECONDS = 5


@pytest.fixture(scope='module')
def guest_for_autopilot(libvirtd, guest_kernel, progress):
    """A guest with the balloon driver and Debian's qemu-ga at the
    minimum, its balloon statistics sent every SAMPLE_SECONDS."""
    try:
        image = images.build_initramfs(
            guest_kernel, images.CACHE_DIR / 'initramfs-autopilot.cpio',
            balloon_driver=True, guest_agent=True)
    except images.GuestImageUnavailable as exc:
        pytest.skip(f'no guest agent image: {exc}')
    conn = libvirtd.connect()
    guest = guests.define_and_start(
        conn, 'xloud-realguest-autopilot', image,
        libvirtd.shared_dir('consoles'), agent_channel=True)
    try:
        guest.console.wait_for(lambda view: True, BOOT_TIMEOUT,
                               'its first status line')
        assert live.wait_for_memory(
            guest.domain, guests.MINIMUM_MEMORY_MB, BOOT_TIMEOUT) == (
            guests.MINIMUM_MEMORY_MB)
        autopilot_guest.wait_for_agent(guest.domain, AGENT_TIMEOUT)
        guest.domain.setMemoryStatsPeriod(SAMPLE_SECONDS,
                                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
        progress('autopilot guest booted')
        yield guest
    finally:
        guests.destroy(guest)
        conn.close()


@dataclasses.dataclass(frozen=True)
class Change:
    decision: autopilot.Decision
    decided_at: float
    confirmed_at: float
    workset_mb: int | None


class Autopilot:
    """The per-guest cycle nova-compute runs, for one domain's memory."""

    def __init__(self, guest: guests.RealGuest) -> None:
        self.guest = guest
        self.bounds = autopilot.Bounds.of(guest.recorded)
        self.history = autopilot.GuestHistory.for_params(PARAMS)
        # When the guest's memory last changed (time.time()): statistics
        # sent before then describe another size.
        self.stats_after = 0.0
        self.samples: list[autopilot.Sample] = []
        # The memory it last set, or the guest booted at.
        self.memory_mb = live.read_size(guest.domain).memory_mb
        self.changes: list[Change] = []
        self.trace: list[str] = []

    def cycle(self, started: float) -> None:
        now = time.monotonic()
        pressure = live.read_pressure(self.guest.domain, self.stats_after)
        sample = autopilot_guest.sample(pressure, now)
        self.history.add(sample)
        self.samples.append(sample)
        decision, = autopilot.decide(self.history, self.bounds, PARAMS, now,
                                     dimensions=(autopilot.MEMORY,))
        self.trace.append(f'{now - started:5.1f}s {sample.memory_mb} MiB '
                          f'usable {sample.usable_mb}: {decision.action} '
                          f'{decision.reason}')
        if decision.action in autopilot.DIRECTIONS:
            self.memory_mb = live.apply_memory(
                self.guest.domain, decision.target, persist=False,
                stats_after=self.stats_after)
            self.stats_after = time.time()
            confirmed = time.monotonic()
            self.history.changed(autopilot.MEMORY, decision.action,
                                 confirmed)
            self.changes.append(Change(
                decision, now, confirmed,
                autopilot_guest.workset_mb(self.guest.console.lines())))


def _usable_at_boot_size(domain: libvirt.virDomain) -> int:
    """What the guest can use at the minimum, from fresh statistics."""
    deadline = time.monotonic() + STATS_TIMEOUT
    while True:
        pressure = live.read_pressure(domain)
        if pressure.usable_mb is not None and (
                pressure.usable_mb < pressure.size.memory_mb):
            return pressure.usable_mb
        if time.monotonic() > deadline:
            pytest.fail(f'no balloon statistics within {STATS_TIMEOUT} s: '
                        f'{pressure}')
        time.sleep(SAMPLE_SECONDS)


def test_autopilot_grows_a_guest_short_of_memory_then_shrinks_it(
        guest_for_autopilot, progress):
    guest = guest_for_autopilot
    usable_mb = _usable_at_boot_size(guest.domain)
    workset = autopilot_guest.Workset(
        load_mb=usable_mb - LOAD_BELOW_USABLE_MB,
        total_mb=usable_mb + TOTAL_ABOVE_USABLE_MB, step_mb=STEP_MB,
        step_seconds=STEP_SECONDS, hold_seconds=HOLD_SECONDS)
    pilot = Autopilot(guest)
    started = time.monotonic()
    pid = autopilot_guest.start_program(guest.domain, workset.script())
    program: autopilot_guest.ProgramStatus | None = None
    exited_at: float | None = None

    def context() -> str:
        return ('\n'.join(pilot.trace) + '\nconsole tail:\n'
                + '\n'.join(guest.console.lines()[-15:]))

    while not pilot.changes or (
            pilot.changes[-1].decision.action != autopilot.SHRINK):
        tick = time.monotonic()
        if tick - started > CYCLE_TIMEOUT:
            pytest.fail(f'no grow and shrink within {CYCLE_TIMEOUT} s; '
                        f'program {program}:\n{context()}')
        set_to = pilot.memory_mb
        pilot.cycle(started)
        # Only the autopilot changes its size: a guest out of memory
        # would deflate its balloon itself.
        assert pilot.samples[-1].memory_mb == set_to, (
            f'the guest runs at {pilot.samples[-1].memory_mb} MiB, set to '
            f'{set_to} MiB:\n{context()}')
        if program is None:
            status = autopilot_guest.program_status(guest.domain, pid)
            if status.exited:
                program, exited_at = status, time.monotonic()
                assert (program.exitcode, program.signal) == (0, None), (
                    f'{program}\n{context()}')
        time.sleep(max(0.0, tick + SAMPLE_SECONDS - time.monotonic()))

    console_lines = guest.console.lines()
    assert [change.decision.action for change in pilot.changes] == [
        autopilot.GROW, autopilot.SHRINK], context()
    grow, shrink = pilot.changes
    # All of its working set, more than the minimum left usable.
    assert max(autopilot_guest.workset_reports(console_lines)) == (
        workset.total_mb), context()
    assert grow.decision.current == guests.MINIMUM_MEMORY_MB
    assert guests.MINIMUM_MEMORY_MB < grow.decision.target <= (
        guests.FLAVOR_MEMORY_MB)
    assert grow.workset_mb < workset.total_mb, context()
    assert autopilot_guest.out_of_memory_lines(console_lines) == []
    # Shrunk once the program had freed its memory and exited.
    assert exited_at is not None and shrink.decided_at > exited_at, (
        context())
    assert shrink.decision.current == grow.decision.target
    assert guests.MINIMUM_MEMORY_MB <= shrink.decision.target < (
        grow.decision.target)
    assert live.read_size(guest.domain).memory_mb == shrink.decision.target
    autopilot_guest.agent_command(guest.domain, 'guest-ping')

    # The guest's own view: its balloon gave the grow back and took the
    # shrink.
    def balloon_kb(memory_mb: int) -> int:
        return (guests.FLAVOR_MEMORY_MB - memory_mb) * 1024

    guest.console.wait_for(
        lambda view: view.balloon_kb == balloon_kb(shrink.decision.target),
        BOOT_TIMEOUT, 'the balloon after the shrink')
    seen = autopilot_guest.balloon_kb_seen(guest.console.lines())
    expected = [balloon_kb(size) for size in (
        grow.decision.current, grow.decision.target, shrink.decision.target)]
    assert [kb for kb in seen if kb in expected][-3:] == expected, seen

    before_grow = [sample for sample in pilot.samples
                   if sample.at <= grow.decided_at]
    lowest = min(sample.usable_mb for sample in before_grow
                 if sample.usable_mb is not None)
    pressed = next(sample.at for sample in before_grow
                   if sample.usable_mb is not None and sample.usable_mb *
                   100 < PARAMS.memory_low_percent * sample.memory_mb)
    progress(
        f'autopilot: usable {usable_mb} MiB at {guests.MINIMUM_MEMORY_MB}, '
        f'working set {workset.load_mb} + {STEP_MB} MiB every '
        f'{STEP_SECONDS:g} s to {workset.total_mb} MiB; grow decided '
        f'{grow.decided_at - started:.1f} s after the program started '
        f'({grow.decided_at - pressed:.1f} s after the first sample below '
        f'{PARAMS.memory_low_percent:g}%), confirmed '
        f'{grow.confirmed_at - started:.1f} s, at a working set of '
        f'{grow.workset_mb} MiB, usable {lowest} MiB at the lowest: '
        f'{grow.decision.reason}')
    progress(
        f'autopilot: the program exited '
        f'{exited_at - started:.1f} s after its start; shrink decided '
        f'{shrink.decided_at - exited_at:.1f} s after its exit, confirmed '
        f'{shrink.confirmed_at - exited_at:.1f} s: '
        f'{shrink.decision.reason}')
