"""The rules of nova_ext.readiness and the CPU time samples, on their own."""

import datetime

from nova import objects, test
from nova.compute import vm_states
from oslo_utils import fixture as utils_fixture
from oslo_utils import timeutils

from nova_ext import readiness, sizing
from nova_ext.compute import utilisation
from tests.nova import base


def instance(**changes) -> objects.Instance:
    flavor = objects.Flavor(
        flavorid='f1', name='elastic', vcpus=4, memory_mb=4096,
        extra_specs={sizing.MINIMUM_CPU: '2', sizing.MINIMUM_MEMORY: '2048'})
    fields = {'uuid': '7d4c9a38-8a6e-4d1f-9b1e-3f0c2b5a6d71',
              'vm_state': vm_states.ACTIVE, 'task_state': None,
              'locked': False, 'flavor': flavor, 'system_metadata': {},
              'image_ref': '', 'host': 'compute1',
              'pci_requests': objects.InstancePCIRequests(requests=[])}
    fields.update(changes)
    found = objects.Instance(**fields)
    found.obj_reset_changes()
    return found


def describe(server: objects.Instance, **guest) -> dict:
    observed = readiness.Observed.from_host(base.guest_state(**guest))
    return readiness.describe(
        server, sizing.ElasticSize.from_instance(server), observed)


class RulesTest(test.NoDBTestCase):

    def test_a_host_answer_of_the_wrong_shape_is_no_answer(self) -> None:
        for answer in (None, 'yes', {'size': {'vcpus': 2}},
                       base.guest_state(busy={'vcpus': -1,
                                              'window_seconds': 60}),
                       {'error': 3}):
            with self.subTest(answer=answer):
                observed = readiness.Observed.from_host(answer)
                self.assertIsNone(observed.guest)
                self.assertIsNotNone(observed.error)

    def test_hotplug_not_possible_fixes_vcpus_only(self) -> None:
        described = describe(instance(), hotpluggable_vcpus=0,
                             machine_type='isapc')
        ready = described['readiness']
        self.assertEqual(('not_possible',
                          {'vcpus': False, 'memory_mb': True}),
                         (ready['vcpu_hotplug'], ready['adjustable']))
        self.assertIn('isapc', ready['reasons']['vcpus'])

    def test_statistics_from_before_the_balloon_moved(self) -> None:
        described = describe(instance(), size={'vcpus': 2,
                                               'memory_mb': 2048},
                             guest={'agent': 'answering', 'online_vcpus': 2,
                                    'available_memory_mb': 4000,
                                    'usable_memory_mb': 3500,
                                    'agent_error': None})
        self.assertIsNone(described['utilisation']['memory'])
        self.assertIn('predate', described['utilisation']['reason'])
        self.assertIsNone(described['recommendation']['memory_mb'])

    def test_vcpus_offline_in_the_guest_are_a_warning(self) -> None:
        ready = describe(instance(), size={'vcpus': 3, 'memory_mb': 2048},
                         guest={'agent': 'answering', 'online_vcpus': 2,
                                'available_memory_mb': 4000,
                                'usable_memory_mb': 1500,
                                'agent_error': None})['readiness']
        self.assertEqual(['The guest runs 2 of its 3 vCPUs online (a vCPU '
                          'unplug it did not finish, or vCPUs it took '
                          'offline itself).'], ready['warnings'])
        self.assertTrue(ready['adjustable']['vcpus'])

    def test_no_balloon_device(self) -> None:
        ready = describe(instance(), balloon_device=False,
                         stats_fresh=False)['readiness']
        self.assertEqual(('no_device', {'vcpus': True, 'memory_mb': False}),
                         (ready['balloon'], ready['adjustable']))

    def test_silence_counts_only_after_the_grace(self) -> None:
        self.flags(balloon_silent_after=120, group='xloud')
        started = timeutils.utcnow()
        server = instance(system_metadata={
            sizing.SYSMETA_STARTED_AT: started.isoformat()})
        for seconds, expected in ((100, 'no_statistics'),
                                  (139, 'no_statistics'),
                                  (141, 'silent')):
            with self.subTest(seconds=seconds):
                self.useFixture(utils_fixture.TimeFixture(
                    started + datetime.timedelta(seconds=seconds)))
                self.assertEqual(expected, describe(
                    server, stats_fresh=False,
                    stats_period=10)['readiness']['balloon'])

    def test_no_range_no_recommendation_for_a_fixed_dimension(self) -> None:
        flavor = objects.Flavor(
            flavorid='f2', name='fixed-cpu', vcpus=2, memory_mb=4096,
            extra_specs={sizing.MINIMUM_CPU: '2',
                         sizing.MINIMUM_MEMORY: '1024'})
        described = describe(
            instance(flavor=flavor),
            busy={'vcpus': 1.9, 'window_seconds': 300})
        ready = described['readiness']
        self.assertFalse(ready['adjustable']['vcpus'])
        self.assertIn('no range', ready['reasons']['vcpus'])
        self.assertIsNone(described['recommendation']['vcpus'])
        self.assertTrue(ready['adjustable']['memory_mb'])
        self.assertIsNotNone(described['recommendation']['memory_mb'])

    def test_recommendation_stays_within_the_bounds(self) -> None:
        for busy, used_mb, vcpus, memory_mb in (
                (0.0, 100, 2, 2048), (3.5, 4000, 4, 4096),
                (1.01, 2000, 3, 2560)):
            with self.subTest(busy=busy, used_mb=used_mb):
                recommended = describe(
                    instance(),
                    size={'vcpus': 2, 'memory_mb': 4096},
                    guest={'agent': 'answering', 'online_vcpus': 2,
                           'available_memory_mb': 4000,
                           'usable_memory_mb': 4096 - used_mb,
                           'agent_error': None},
                    busy={'vcpus': busy, 'window_seconds': 120},
                )['recommendation']
                self.assertEqual((vcpus, memory_mb),
                                 (recommended['vcpus'],
                                  recommended['memory_mb']))

    def test_refusals_nova_api_knows(self) -> None:
        for changes, reason in (
                ({'locked': True}, 'locked'),
                ({'task_state': sizing.ADJUSTING_TASK_STATE},
                 'adjustment is in progress'),
                ({'task_state': 'migrating'}, 'migrating'),
                ({'vm_state': vm_states.PAUSED}, 'paused'),
                ({'vm_state': vm_states.ERROR}, 'error')):
            with self.subTest(changes=changes):
                ready = describe(instance(**changes))['readiness']
                self.assertEqual({'vcpus': False, 'memory_mb': False},
                                 ready['adjustable'])
                self.assertIn(reason, ready['reasons']['memory_mb'])

    def test_migrated_since_boot(self) -> None:
        earlier = '2026-12-01T10:00:00'
        later = '2026-12-02T10:00:00'
        for started, migrated, expected in (
                ('', '', False), (earlier, later, True),
                (later, earlier, False), ('', later, True)):
            with self.subTest(started=started, migrated=migrated):
                server = instance(system_metadata={
                    sizing.SYSMETA_STARTED_AT: started,
                    sizing.SYSMETA_MIGRATED_AT: migrated})
                ready = describe(server)['readiness']
                self.assertEqual(expected, ready['migrated_since_boot'])
                self.assertEqual(expected, any(
                    'Live-migrated' in warning
                    for warning in ready['warnings']))


class CpuTimeSamplesTest(test.NoDBTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.now = 1000.0
        self.samples = utilisation.CpuTimeSamples(lambda: self.now)

    def _at(self, seconds: float, cpu_seconds: float) -> None:
        self.now = 1000.0 + seconds
        self.samples.add('a', int(cpu_seconds * 1e9))

    def test_busy_over_the_window(self) -> None:
        self._at(0, 10)
        self.assertIsNone(self.samples.busy('a'))
        self._at(20, 30)
        # 20 seconds say too little.
        self.assertIsNone(self.samples.busy('a'))
        self._at(60, 70)
        self.assertEqual(utilisation.Busy(1.0, 60), self.samples.busy('a'))

    def test_old_samples_leave_the_window(self) -> None:
        self.flags(utilisation_window_seconds=300, group='xloud')
        for minute in range(11):
            # Busy 2 vCPUs for the first 5 minutes, then 0.5.
            cpu = min(minute, 5) * 120 + max(minute - 5, 0) * 30
            self._at(minute * 60, cpu)
        self.assertEqual(utilisation.Busy(0.5, 300), self.samples.busy('a'))

    def test_a_restarted_domain_starts_over(self) -> None:
        self._at(0, 500)
        self._at(60, 560)
        self._at(120, 5)
        self.assertIsNone(self.samples.busy('a'))

    def test_stale_samples_say_nothing(self) -> None:
        self._at(0, 0)
        self._at(60, 60)
        self.now += 301
        self.assertIsNone(self.samples.busy('a'))

    def test_keep_only(self) -> None:
        self._at(0, 0)
        self.samples.add('b', 0)
        self._at(60, 60)
        self.samples.keep_only(['b'])
        self.assertIsNone(self.samples.busy('a'))
