"""The rules of nova_ext.readiness and the CPU time samples, on their own."""

import datetime

import jsonschema
from nova import objects, test
from nova.compute import vm_states
from oslo_utils import fixture as utils_fixture
from oslo_utils import timeutils

from nova_ext import readiness, sizing
from nova_ext.api import schemas
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


def virtio_mem_instance(**changes) -> objects.Instance:
    flavor = objects.Flavor(
        flavorid='f2', name='elastic-virtio-mem', vcpus=4, memory_mb=4096,
        extra_specs={sizing.MINIMUM_CPU: '2', sizing.MINIMUM_MEMORY: '2048',
                     sizing.MEMORY_MODEL: sizing.MEMORY_MODEL_VIRTIO_MEM})
    return instance(flavor=flavor, **changes)


def device(requested_mb: int, plugged_mb: int) -> dict:
    return {'requested_mb': requested_mb, 'plugged_mb': plugged_mb,
            'size_mb': 2048}


class VirtioMemRulesTest(test.NoDBTestCase):
    """A virtio-mem guest's readiness comes from its device."""

    def setUp(self) -> None:
        super().setUp()
        self.flags(balloon_silent_after=120, group='xloud')
        self.started = timeutils.utcnow()
        self.server = virtio_mem_instance(system_metadata={
            sizing.SYSMETA_STARTED_AT: self.started.isoformat()})

    def _after(self, seconds: int) -> None:
        self.useFixture(utils_fixture.TimeFixture(
            self.started + datetime.timedelta(seconds=seconds)))

    def _readiness(self, server=None, **guest) -> dict:
        described = describe(server or self.server, **guest)
        jsonschema.validate(described['readiness'], schemas.readiness_view)
        return described['readiness']

    def test_states_from_what_is_asked_and_plugged(self) -> None:
        self._after(600)
        for requested, plugged, state in ((0, 0, 'idle'),
                                          (1024, 1024, 'plugged'),
                                          (1024, 512, 'plugging'),
                                          (1024, 0, 'not_plugging'),
                                          (512, 1024, 'unplugging')):
            with self.subTest(requested=requested, plugged=plugged):
                ready = self._readiness(size={'vcpus': 2, 'memory_mb': 3072},
                                        virtio_mem=device(requested, plugged))
                self.assertEqual({'state': state, 'requested_mb': requested,
                                  'plugged_mb': plugged}, ready['virtio_mem'])
                self.assertEqual(state != 'not_plugging',
                                 ready['adjustable']['memory_mb'])

    def test_a_guest_without_the_driver_is_told_apart_after_the_grace(
            self) -> None:
        for seconds, state in ((60, 'plugging'), (121, 'not_plugging')):
            with self.subTest(seconds=seconds):
                self._after(seconds)
                ready = self._readiness(virtio_mem=device(1024, 0))
                self.assertEqual(state, ready['virtio_mem']['state'])
        self.assertEqual(
            'Its guest has plugged none of the 1024 MiB its virtio-mem '
            'device was asked to add since it started: it has no virtio_mem '
            'driver (Linux 5.8 or later), and would not take up a new memory '
            'size.', ready['reasons']['memory_mb'])
        # Without a recorded start, nothing is concluded.
        ready = self._readiness(virtio_mem_instance(),
                                virtio_mem=device(1024, 0))
        self.assertEqual('plugging', ready['virtio_mem']['state'])

    def test_the_balloon_only_reports(self) -> None:
        self._after(600)
        for balloon in ({'balloon_device': False},
                        {'stats_fresh': False, 'stats_period': 10}):
            with self.subTest(**balloon):
                ready = self._readiness(virtio_mem=device(0, 0), **balloon)
                self.assertTrue(ready['adjustable']['memory_mb'])
                self.assertEqual(['Its memory is not shrunk while the guest '
                                  'sends no balloon statistics: with '
                                  'virtio-mem they say how much it uses, and '
                                  'unplugged blocks do not come back.'],
                                 ready['warnings'])
        ready = self._readiness(virtio_mem=device(512, 1024))
        self.assertEqual(['The guest holds 1024 MiB through its virtio-mem '
                          'device, which was asked for 512: blocks in use '
                          'that it has not given back yet. They stay counted '
                          'in placement.'], ready['warnings'])

    def test_unknown_unless_its_host_read_the_device(self) -> None:
        not_read = readiness.describe(
            self.server, sizing.ElasticSize.from_instance(self.server),
            readiness.Observed.failed('The guest is not running.'))
        older_host = base.guest_state()
        self.assertNotIn('virtio_mem', older_host)
        for ready in (not_read['readiness'],
                      self._readiness(**older_host)):
            self.assertEqual({'state': 'unknown', 'requested_mb': None,
                              'plugged_mb': None}, ready['virtio_mem'])
        # The domain decides: one generated with the balloon has none.
        self.assertIsNone(self._readiness(virtio_mem=None)['virtio_mem'])
        self.assertIsNone(self._readiness(instance(),
                                          virtio_mem=None)['virtio_mem'])

    def test_recommendation_keeps_the_shrink_margin(self) -> None:
        self.flags(recommend_memory_headroom_percent=10, group='xloud')
        guest = {'agent': 'answering', 'online_vcpus': 2,
                 'available_memory_mb': 3000, 'usable_memory_mb': 3072 - 2000,
                 'agent_error': None}
        found = {}
        for name, server, figures in (
                ('balloon', instance(), {}),
                ('virtio-mem', self.server,
                 {'virtio_mem': device(1024, 1024)})):
            found[name] = describe(
                server, size={'vcpus': 2, 'memory_mb': 3072}, guest=guest,
                **figures)['recommendation']
        # 2000 MiB used: 10% headroom asks 2223, the margin 2128.
        self.assertEqual((2304, 2304), (found['balloon']['memory_mb'],
                                        found['virtio-mem']['memory_mb']))
        guest['usable_memory_mb'] = 3072 - 2100
        # 2100 used: 1% headroom asks 2122 (2176 in steps), the margin 2228.
        self.flags(recommend_memory_headroom_percent=1, group='xloud')
        virtio = describe(self.server, size={'vcpus': 2, 'memory_mb': 3072},
                          guest=guest,
                          virtio_mem=device(1024, 1024))['recommendation']
        balloon = describe(instance(), size={'vcpus': 2, 'memory_mb': 3072},
                           guest=guest)['recommendation']
        self.assertEqual((2176, 2304),
                         (balloon['memory_mb'], virtio['memory_mb']))
        self.assertIn('at least 128 MiB (virtio-mem)', virtio['memory_rule'])
