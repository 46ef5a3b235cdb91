"""The autopilot's decisions (nova_ext.autopilot) on recorded signal
series: plain data in, decisions out, no harness."""

import dataclasses
import unittest

from oslo_config import fixture as config_fixture

from nova_ext import autopilot, conf, sizing

MEMORY = autopilot.MEMORY
VCPUS = autopilot.VCPUS
GROW, SHRINK, HOLD, SKIPPED = (autopilot.GROW, autopilot.SHRINK,
                               autopilot.HOLD, autopilot.SKIPPED)
DEFAULTS = autopilot.Params()
BOUNDS = autopilot.Bounds(floor_vcpus=1, max_vcpus=4, floor_memory_mb=1024,
                          max_memory_mb=4096)


def every(action: str, target: int, start: int, stop: int,
          step: int = 60) -> list[tuple[int, str, int]]:
    return [(at, action, target) for at in range(start, stop + 1, step)]


class SimulatedGuest:
    """A guest whose load is a function of time: each tick it is sampled,
    decided on, and the decision's change applied, as the compute host
    will."""

    def __init__(self, load, *, vcpus: int = 2, memory_mb: int = 2048,
                 bounds: autopilot.Bounds = BOUNDS,
                 params: autopilot.Params = DEFAULTS,
                 dimensions=(MEMORY,)) -> None:
        self.load = load
        self.vcpus, self.memory_mb = vcpus, memory_mb
        self.bounds, self.params = bounds, params
        self.dimensions = dimensions
        self.history = autopilot.GuestHistory.for_params(params)
        self.decisions: list[tuple[int, autopilot.Decision]] = []

    def sample(self, at: int) -> autopilot.Sample:
        used_mb, busy = self.load(at)
        return autopilot.Sample(
            at=at, vcpus=self.vcpus, memory_mb=self.memory_mb,
            usable_mb=(None if used_mb is None
                       else max(self.memory_mb - used_mb, 0)),
            busy_vcpus=None if busy is None else min(busy, self.vcpus))

    def run(self, until: int, step: int = 60, **decide) -> list:
        """(time, action, target) of every decision but the holds."""
        for at in range(0, until + 1, step):
            self.history.add(self.sample(at))
            for decision in autopilot.decide(
                    self.history, self.bounds, self.params, at,
                    dimensions=self.dimensions, **decide):
                self.decisions.append((at, decision))
                if decision.action in autopilot.DIRECTIONS:
                    self.history.changed(decision.dimension,
                                         decision.action, at)
                    if decision.dimension == VCPUS:
                        self.vcpus = decision.target
                    else:
                        self.memory_mb = decision.target
        return [(at, decision.action, decision.target)
                for at, decision in self.decisions
                if decision.action != HOLD]

    def reason(self, at: int, dimension: str = MEMORY) -> str:
        return next(decision.reason for when, decision in self.decisions
                    if when == at and decision.dimension == dimension)


class SeriesTest(unittest.TestCase):

    def test_steady_load_changes_nothing(self) -> None:
        # 1500 of 2048 MiB used (usable 26%), 1.1 of 2 vCPUs busy (55%).
        guest = SimulatedGuest(lambda at: (1500, 1.1),
                               dimensions=(VCPUS, MEMORY))
        self.assertEqual([], guest.run(until=7200))
        self.assertEqual(2 * 121, len(guest.decisions))
        self.assertEqual('usable 26% within 15-40%.', guest.reason(7200))
        self.assertEqual('1.1 of 2 busy (55%) within 30-80%.',
                         guest.reason(7200, VCPUS))

    def test_spike_grows_after_grow_after_and_shrinks_back_late(self) -> None:
        guest = SimulatedGuest(
            lambda at: (1900 if 600 <= at < 1200 else 1500, None))
        # Pressure from 600: grown at 780, not before. Idle from 1200
        # (1500 of 2688): shrink_after passes at 2100, the reverse
        # cooldown after the grow only at 2580.
        self.assertEqual(
            [(780, GROW, 2688),
             *every(SKIPPED, 2176, 2100, 2520),
             (2580, SHRINK, 2176)],
            guest.run(until=5400))
        self.assertEqual('memory 2048 → 2688 MiB: usable 7% < 15% for 3 '
                         'min.', guest.reason(780))
        self.assertEqual('usable 7% < 15% for 2 min; grows after 3 min.',
                         guest.reason(720))
        self.assertEqual('memory 2688 → 2176 MiB: usable 44% > 40% for 15 '
                         'min; skipped: grown 22 min ago, no shrink within '
                         '30 min.', guest.reason(2100))

    def test_slow_leak_grows_until_the_maximum(self) -> None:
        guest = SimulatedGuest(lambda at: (1500 + at // 60 * 100, None))
        self.assertEqual(
            [(360, GROW, 2944), (840, GROW, 4096),
             *every(SKIPPED, 4096, 1380, 1980)],
            guest.run(until=2000))
        self.assertEqual('memory 4096 MiB: usable 7% < 15% for 3 min; '
                         'skipped: at the maximum.', guest.reason(1380))

    def test_leak_faster_than_the_cooldown_waits_it_out(self) -> None:
        params = dataclasses.replace(DEFAULTS, grow_after=60,
                                     min_samples=2)
        guest = SimulatedGuest(lambda at: (1800 + at // 60 * 300, None),
                               params=params)
        self.assertEqual(
            [(60, GROW, 2944), *every(SKIPPED, 4096, 240, 300),
             (360, GROW, 4096), *every(SKIPPED, 4096, 480, 600)],
            guest.run(until=600))
        self.assertEqual('memory 2944 → 4096 MiB: usable 0% < 15% for 1 '
                         'min; skipped: changed 3 min ago, cooldown 5 min.',
                         guest.reason(240))

    def test_oscillation_shorter_than_the_cooldown_is_ridden_out(
            self) -> None:
        # 210 s of 1900 MiB, 60 s of 700, sampled every 30 s.
        guest = SimulatedGuest(
            lambda at: (1900 if at % 270 < 210 else 700, None))
        self.assertEqual([(180, GROW, 2688)], guest.run(until=7200, step=30))

    def test_oscillation_with_short_waits_is_rate_limited(self) -> None:
        params = dataclasses.replace(
            DEFAULTS, grow_after=60, shrink_after=60, cooldown=300,
            reverse_cooldown=600, min_samples=2)
        guest = SimulatedGuest(
            lambda at: (1900 if at // 120 % 2 == 0 else 700, None),
            params=params)
        self.assertEqual(
            [(60, GROW, 2688), (180, SKIPPED, 1024), (420, SKIPPED, 1024),
             (660, SHRINK, 1024), (780, SKIPPED, 1536), (1020, GROW, 1536),
             (1140, SKIPPED, 1024), (1260, SKIPPED, 2176),
             (1380, SKIPPED, 1024), (1500, GROW, 2176),
             (1620, SKIPPED, 1024), (1740, SKIPPED, 2688)],
            guest.run(until=1800))

    def test_too_few_samples_change_nothing(self) -> None:
        params = dataclasses.replace(DEFAULTS, grow_after=0)
        guest = SimulatedGuest(lambda at: (2000, None), params=params)
        self.assertEqual([(120, GROW, 2816)], guest.run(until=120))
        self.assertEqual(['1 of the 3 samples needed since the last change.',
                          '2 of the 3 samples needed since the last change.'],
                         [guest.reason(0), guest.reason(60)])

    def test_no_statistics_holds_memory_and_sizes_vcpus(self) -> None:
        guest = SimulatedGuest(lambda at: (None, 1.9),
                               dimensions=(VCPUS, MEMORY))
        self.assertEqual([(180, GROW, 3)], guest.run(until=600))
        self.assertEqual(
            'The guest sends no memory statistics (balloon driver); memory '
            'is not sized automatically.', guest.reason(600))
        self.assertEqual('vcpus 2 → 3: 1.9 of 2 busy (95% > 80%) for 3 min.',
                         guest.reason(180, VCPUS))

    def test_vcpus_step_two_within_rounded_bounds(self) -> None:
        size = sizing.ElasticSize(
            max_vcpus=7, max_memory_mb=4096, minimum_vcpus=1,
            minimum_memory_mb=1024, boot_vcpus=4, boot_memory_mb=2048,
            live_vcpus=4, live_memory_mb=2048, updated_at=None, status=None,
            request_id=None, error=None, floor_vcpus=1, floor_memory_mb=1024,
            vcpu_step=2)
        bounds = autopilot.Bounds.of(size)
        self.assertEqual((2, 6, 2), (bounds.floor_vcpus, bounds.max_vcpus,
                                     bounds.vcpu_step))
        guest = SimulatedGuest(
            lambda at: (None, 5.9 if at < 1200 else 0.2), vcpus=4,
            bounds=bounds, dimensions=(VCPUS,))
        self.assertEqual(
            [(180, GROW, 6), *every(SKIPPED, 6, 420, 1140),
             (2100, SHRINK, 4), (3060, SHRINK, 2),
             *every(SKIPPED, 2, 4020, 4200)],
            guest.run(until=4200))
        self.assertEqual('vcpus 2: 0.2 of 2 busy (10% < 30%) for 15 min; '
                         'skipped: at the floor.',
                         guest.reason(4020, VCPUS))

    def test_a_host_keeping_the_vcpus_waiting_holds_a_grow(self) -> None:
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 241, 60):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                         busy_vcpus=1.9, steal_vcpus=0.4))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 240,
                                     dimensions=(VCPUS,))
        self.assertEqual(
            (HOLD, '1.9 of 2 busy (95% > 80%) for 4 min, but the host keeps '
                   '0.4 of its vCPUs waiting (steal 20% > 10%).'),
            (decision.action, decision.reason))
        # 0: steal is not looked at.
        ignored = dataclasses.replace(DEFAULTS, vcpu_steal_percent=0)
        decision, = autopilot.decide(history, BOUNDS, ignored, 240,
                                     dimensions=(VCPUS,))
        self.assertEqual((GROW, 3), (decision.action, decision.target))
        # Steal does not hold a shrink back.
        idle = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 901, 60):
            idle.add(autopilot.Sample(at=at, vcpus=3, memory_mb=2048,
                                      busy_vcpus=0.1, steal_vcpus=0.9))
        decision, = autopilot.decide(idle, BOUNDS, DEFAULTS, 900,
                                     dimensions=(VCPUS,))
        self.assertEqual((SHRINK, 2), (decision.action, decision.target))

    def test_vcpus_offline_in_the_guest_hold_vcpus(self) -> None:
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 241, 60):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                         busy_vcpus=1.9, online_vcpus=1))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 240,
                                     dimensions=(VCPUS,))
        self.assertEqual((HOLD, 'The guest runs 1 of its 2 vCPUs online; '
                          'vCPUs are not sized until it runs them all.'),
                         (decision.action, decision.reason))
        history.add(autopilot.Sample(at=300, vcpus=2, memory_mb=2048,
                                     busy_vcpus=1.9, online_vcpus=2))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 300,
                                     dimensions=(VCPUS,))
        self.assertEqual((GROW, 3), (decision.action, decision.target))

    def test_vcpu_shrink_that_would_be_too_busy_is_not_made(self) -> None:
        # 0.58 of 2 busy is idle (29%), but 0.58 of 1 would be 58%, above
        # the middle of the band (55%).
        guest = SimulatedGuest(lambda at: (None, 0.58), dimensions=(VCPUS,))
        self.assertEqual([], guest.run(until=1200))
        self.assertEqual('0.6 of 2 busy (28% < 30%) for 15 min, but 1 vCPUs '
                         'would be busier than 55.0% (0.6 busy at most).',
                         guest.reason(900, VCPUS))


class HistoryTest(unittest.TestCase):

    def history(self) -> autopilot.GuestHistory:
        return autopilot.GuestHistory(max_samples=5, window_seconds=600)

    def test_counter_reset_starts_the_window_over(self) -> None:
        history = self.history()
        faults = [0, 12000, 24000, 50, 12050, 24050, 36050, 48050]
        decided = []
        for tick, count in enumerate(faults):
            at = tick * 60
            # 30% usable: only the major faults (200/s) show pressure.
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                         usable_mb=614, major_faults=count))
            decision, = autopilot.decide(history, BOUNDS, DEFAULTS, at,
                                         dimensions=(MEMORY,))
            decided.append((at, decision.action, decision.target))
            if at == 180:
                self.assertEqual(1, len(history.samples))
                self.assertEqual('1 of the 3 samples needed since the '
                                 'last change.', decision.reason)
        self.assertEqual(
            [(0, HOLD, 2048), (60, HOLD, 2048), (120, HOLD, 2048),
             (180, HOLD, 2048), (240, HOLD, 2048), (300, HOLD, 2048),
             (360, HOLD, 2048), (420, GROW, 2304)], decided)
        self.assertEqual('memory 2048 → 2304 MiB: 200 major faults/s > '
                         '100.0 for 3 min.', decision.reason)

    def test_swapping_in_grows_memory_unless_ignored(self) -> None:
        for params, expected in (
                (DEFAULTS, [(240, GROW, 2304)]),
                (dataclasses.replace(DEFAULTS, swap_in_kib_per_second=0),
                 [])):
            history = autopilot.GuestHistory.for_params(params)
            decided = []
            for at in range(0, 241, 60):
                # 30% usable, swapping in 2048 KiB/s.
                history.add(autopilot.Sample(
                    at=at, vcpus=2, memory_mb=2048, usable_mb=614,
                    swap_in_kib=at * 2048, swap_out_kib=0))
                decision, = autopilot.decide(history, BOUNDS, params, at,
                                             dimensions=(MEMORY,))
                if decision.action != HOLD:
                    decided.append((at, decision.action, decision.target))
            with self.subTest(swap_in_kib_per_second=(
                    params.swap_in_kib_per_second)):
                self.assertEqual(expected, decided)

    def test_statistics_from_before_the_balloon_moved_hold(self) -> None:
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 241, 60):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                         usable_mb=100 if at < 240 else 2048))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 240,
                                     dimensions=(MEMORY,))
        self.assertEqual((HOLD, 'The guest\'s memory statistics predate the '
                          'balloon\'s last move.'),
                         (decision.action, decision.reason))

    def test_a_balloon_deflating_on_oom_keeps_the_count(self) -> None:
        """Nova's balloon deflates on OOM: a guest out of memory grows by
        itself, and that is the pressure, not a change starting the count
        over (real QEMU: 512 -> 555 -> 573 -> 598 MiB, usable 0)."""
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        decided = []
        for at, memory_mb in ((0, 2048), (60, 2090), (120, 2130),
                              (180, 2170)):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=memory_mb,
                                         usable_mb=20))
            decision, = autopilot.decide(history, BOUNDS, DEFAULTS, at,
                                         dimensions=(MEMORY,))
            decided.append((decision.action, decision.target))
        self.assertEqual([(HOLD, 2048), (HOLD, 2090), (HOLD, 2130),
                          (GROW, 3072)], decided)
        # A change someone made does start it over.
        history.changed(MEMORY, GROW, 200)
        history.add(autopilot.Sample(at=240, vcpus=2, memory_mb=3072,
                                     usable_mb=20))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 240,
                                     dimensions=(MEMORY,))
        self.assertEqual('1 of the 3 samples needed since the last change.',
                         decision.reason)

    def test_what_a_deflated_balloon_took_goes_back_to_the_floor(
            self) -> None:
        """Held 130 MiB above its floor after an OOM deflation, an idle
        guest goes back to the floor although that frees less than
        memory_min_step_mb (real QEMU: 563 MiB held at a 512 floor)."""
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 901, 60):
            # 690 MiB used, 40% usable: a target of 1024 MiB either way.
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=1154,
                                         usable_mb=464))
        decision, = autopilot.decide(history, BOUNDS, DEFAULTS, 900,
                                     dimensions=(MEMORY,))
        self.assertEqual((SHRINK, 1024), (decision.action, decision.target))
        # Above the floor the minimum step still holds a small shrink back.
        higher = dataclasses.replace(BOUNDS, floor_memory_mb=512)
        decision, = autopilot.decide(history, higher, DEFAULTS, 900,
                                     dimensions=(MEMORY,))
        self.assertEqual(HOLD, decision.action)
        self.assertIn('would free less than 256 MiB', decision.reason)

    def test_window_is_bounded_by_count_and_age(self) -> None:
        history = self.history()
        for at in (0, 60, 120, 180, 240, 300):
            history.add(autopilot.Sample(at=at, vcpus=1, memory_mb=1024))
        self.assertEqual([60, 120, 180, 240, 300],
                         [sample.at for sample in history.samples])
        history.add(autopilot.Sample(at=1000, vcpus=1, memory_mb=1024))
        self.assertEqual([1000], [sample.at for sample in history.samples])

    def test_bad_input_is_refused_and_changes_nothing(self) -> None:
        history = self.history()
        history.add(autopilot.Sample(at=60, vcpus=1, memory_mb=1024))
        for bad in (lambda: history.add(autopilot.Sample(
                        at=60, vcpus=1, memory_mb=1024)),
                    lambda: history.changed('disk', GROW, 60),
                    lambda: history.changed(MEMORY, 'sideways', 60),
                    lambda: autopilot.Sample(at=0, vcpus=0, memory_mb=1024),
                    lambda: autopilot.Sample(at=0, vcpus=1, memory_mb=1024,
                                             usable_mb=-1),
                    lambda: autopilot.decide(history, BOUNDS, DEFAULTS, 60,
                                             dimensions=('disk',)),
                    lambda: autopilot.decide(history, BOUNDS, DEFAULTS, 60,
                                             room={MEMORY: -1})):
            with self.subTest(bad=bad):
                self.assertRaises(ValueError, bad)
        self.assertEqual([60], [sample.at for sample in history.samples])
        self.assertIsNone(history.last_change(MEMORY))

    def test_stale_samples_change_nothing(self) -> None:
        guest = SimulatedGuest(lambda at: (2000, None))
        guest.run(until=600)
        decision, = autopilot.decide(guest.history, BOUNDS, DEFAULTS, 900,
                                     dimensions=(MEMORY,))
        self.assertEqual((HOLD, 'No sample for 5 min (the newest is older '
                          'than two intervals).'),
                         (decision.action, decision.reason))


class RoomTest(unittest.TestCase):

    def pressed(self) -> autopilot.GuestHistory:
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in (0, 60, 120, 180):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                         usable_mb=148, busy_vcpus=1.9))
        return history

    def test_a_grow_placement_cannot_hold_is_skipped(self) -> None:
        history = self.pressed()
        decided = autopilot.decide(history, BOUNDS, DEFAULTS, 180,
                                   room={MEMORY: 512, VCPUS: 1})
        self.assertEqual([(VCPUS, GROW, 3), (MEMORY, SKIPPED, 2688)],
                         [(d.dimension, d.action, d.target) for d in decided])
        self.assertEqual('memory 2048 → 2688 MiB: usable 7% < 15% for 3 '
                         'min; skipped: it needs 640 more and placement has '
                         '512 free on the host.', decided[1].reason)
        decided = autopilot.decide(history, BOUNDS, DEFAULTS, 180,
                                   room={MEMORY: 640, VCPUS: 0})
        self.assertEqual([(VCPUS, SKIPPED, 3), (MEMORY, GROW, 2688)],
                         [(d.dimension, d.action, d.target) for d in decided])

    def test_fixed_dimension_holds(self) -> None:
        bounds = dataclasses.replace(BOUNDS, fixed={MEMORY: 'hugepages'})
        decision, = autopilot.decide(self.pressed(), bounds, DEFAULTS, 180,
                                     dimensions=(MEMORY,))
        self.assertEqual((HOLD, 'Not adjustable: hugepages'),
                         (decision.action, decision.reason))


class HostTest(unittest.TestCase):

    @staticmethod
    def guest(uuid: str, memory_mb: int, used_mb: int) -> autopilot.Guest:
        history = autopilot.GuestHistory.for_params(DEFAULTS)
        for at in range(0, 241, 60):
            history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=memory_mb,
                                         usable_mb=memory_mb - used_mb))
        return autopilot.Guest(uuid, history, BOUNDS, (MEMORY,))

    def plan(self, free_mb: int) -> list:
        guests = [self.guest('3-busy-large', 2048, 1900),
                  self.guest('2-idle', 4096, 1638),
                  self.guest('1-busy-small', 1024, 950)]
        return [(uuid, decision.action, decision.target)
                for uuid, decision in autopilot.plan_host(
                    guests, DEFAULTS, 240, host_free_memory_mb=free_mb,
                    host_memory_mb=32768)]

    def test_short_of_memory_shrinks_idle_guests_first(self) -> None:
        # Reserve 3276 MiB; 2000 free + 1792 freed leaves 515 for grows:
        # the 384 MiB one fits, the 640 MiB one does not.
        self.assertEqual(
            [('2-idle', SHRINK, 2304), ('1-busy-small', GROW, 1408),
             ('3-busy-large', SKIPPED, 2688)], self.plan(2000))
        guests = [self.guest('3-busy-large', 2048, 1900)]
        (_, decision), = autopilot.plan_host(
            guests, DEFAULTS, 240, host_free_memory_mb=2000,
            host_memory_mb=32768)
        self.assertEqual(
            'memory 2048 → 2688 MiB: usable 7% < 15% for 4 min; skipped: '
            'the host has 2000 MiB free and keeps 3276 MiB (10%) in '
            'reserve, which leaves 0 MiB for grows.', decision.reason)

    def test_with_memory_to_spare_each_guest_decides_for_itself(
            self) -> None:
        self.assertEqual(
            [('1-busy-small', GROW, 1408), ('2-idle', HOLD, 4096),
             ('3-busy-large', GROW, 2688)], self.plan(20000))

    def test_placement_room_is_shared_by_the_host_s_guests(self) -> None:
        def busy(uuid: str) -> autopilot.Guest:
            history = autopilot.GuestHistory.for_params(DEFAULTS)
            for at in range(0, 181, 60):
                history.add(autopilot.Sample(at=at, vcpus=2, memory_mb=2048,
                                             busy_vcpus=1.9))
            return autopilot.Guest(uuid, history, BOUNDS, (VCPUS,))

        planned = autopilot.plan_host(
            [busy('b'), busy('a')], DEFAULTS, 180,
            host_free_memory_mb=20000, host_memory_mb=32768,
            room={VCPUS: 1})
        self.assertEqual([('a', GROW, 3), ('b', SKIPPED, 3)],
                         [(uuid, decision.action, decision.target)
                          for uuid, decision in planned])
        self.assertIn('placement has 0 free on the host',
                      planned[1][1].reason)

    def test_bad_host_figures_are_refused(self) -> None:
        for free, total in ((-1, 1024), (2048, 1024), (0, 0)):
            with self.subTest(free=free, total=total):
                self.assertRaises(ValueError, autopilot.plan_host, [],
                                  DEFAULTS, 0, host_free_memory_mb=free,
                                  host_memory_mb=total)


class ConfigurationTest(unittest.TestCase):

    def setUp(self) -> None:
        fixture = config_fixture.Config(conf.CONF)
        fixture.setUp()
        self.addCleanup(fixture.cleanUp)
        self.config = fixture.config

    def test_every_option_is_listed_and_read(self) -> None:
        listed = {group.name: opts for group, opts in conf.list_opts()}
        names = {opt.dest for opt in listed['xloud_autopilot']}
        self.assertEqual(set(conf.CONF.xloud_autopilot.keys()), names)
        self.assertEqual({field.name for field in
                          dataclasses.fields(autopilot.Params)}, names)
        for opt in listed['xloud_autopilot']:
            with self.subTest(option=opt.dest):
                self.assertTrue(opt.help)
        self.assertIn('xloud', listed)

    def test_defaults_are_the_documented_ones(self) -> None:
        self.assertEqual(DEFAULTS, autopilot.Params.from_conf(conf.CONF))

    def test_inconsistent_configuration_is_refused(self) -> None:
        for overrides, named in (
                ({'memory_low_percent': 40, 'memory_high_percent': 40},
                 'memory_low_percent'),
                ({'grow_after': 600, 'shrink_after': 300}, 'grow_after'),
                ({'cooldown': 600, 'reverse_cooldown': 300}, 'cooldown'),
                ({'shrink_after': 3600}, 'window_seconds'),
                ({'memory_min_step_mb': 200}, 'memory_min_step_mb')):
            with self.subTest(overrides=overrides):
                self.config(group='xloud_autopilot', **overrides)
                with self.assertRaises(ValueError) as raised:
                    autopilot.Params.from_conf(conf.CONF)
                self.assertIn(named, str(raised.exception))
                for name in overrides:
                    conf.CONF.clear_override(name, group='xloud_autopilot')
