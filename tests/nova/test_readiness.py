"""Readiness, utilisation and a recommended size, read from the compute host.

Servers run on XloudLibvirtDriver over the fake libvirt, whose guests
answer the balloon's statistics, the guest agent and CPU time as libvirt's
QEMU driver does; everything is read through ``GET /os-xloud-adjust``.
"""

import datetime
import time

import fixtures
from nova import context as nova_context
from oslo_utils import timeutils

from nova_ext import sizing
from nova_ext.compute import utilisation
from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake

MIB = 1024
# What the fake guest's kernel keeps and its programs use, in MiB.
GUEST_USES_MB = (elastic_fake.GuestBehaviour.kernel_reserved_kib +
                 elastic_fake.GuestBehaviour.memory_in_use_kib) // MIB


class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


class ReadinessTest(compute_base.ElasticAPIComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        # The guests' balloon statistics, once a second.
        self.flags(mem_stats_period_seconds=1, group='libvirt')
        self.host = self.start_compute('compute1')
        # 2-4 vCPUs, 2048-4096 MiB.
        self.flavor = self._create_elastic_flavor()
        self.agent_image = None

    def _boot(self, agent: bool = True, host: str | None = None,
              **behaviour) -> dict:
        if behaviour:
            self.elastic_libvirt.new_guests(**behaviour)
        image = None
        if agent:
            if self.agent_image is None:
                self.agent_image = self._create_image(
                    {'hw_qemu_guest_agent': 'yes'})['id']
            image = self.agent_image
        return self._create_server(flavor_id=self.flavor, image_uuid=image,
                                   networks='none', host=host)

    def _show(self, server_id: str) -> dict:
        resp = self.api.api_request(f'/os-xloud-adjust/{server_id}')
        self.assertEqual(200, resp.status_code, resp.text)
        return resp.json()['server']

    def _list(self) -> dict[str, dict]:
        resp = self.api.api_request(
            '/os-xloud-adjust?all_tenants=1&readiness=true')
        self.assertEqual(200, resp.status_code, resp.text)
        return {server['id']: server for server in resp.json()['servers']}

    def _endpoint(self, host: str = 'compute1'):
        return self.computes[host].driver.elastic_endpoint

    def _started_long_ago(self, server_id: str) -> None:
        instance = self._instance(server_id)
        long_ago = timeutils.utcnow() - datetime.timedelta(hours=1)
        instance.system_metadata = {
            **instance.system_metadata,
            sizing.SYSMETA_STARTED_AT: long_ago.isoformat()}
        instance.save()

    def test_a_ready_guest(self) -> None:
        server = self._boot()
        shown = self._show(server['id'])

        ready = shown['readiness']
        self.assertIsNotNone(ready['as_of'])
        self.assertEqual(
            (None, 'active', 'answering', 'possible', False, None,
             {'vcpus': True, 'memory_mb': True},
             {'vcpus': None, 'memory_mb': None}, []),
            (ready['error'], ready['balloon'], ready['guest_agent'],
             ready['vcpu_hotplug'], ready['migrated_since_boot'],
             ready['last_outcome'], ready['adjustable'], ready['reasons'],
             ready['warnings']))
        self.assertTrue(ready['machine_type'])
        self.assertEqual(('balloon', None), (shown['flavor']['memory_model'],
                                             ready['virtio_mem']))
        # The guest's own view, read just now.
        self.assertEqual(('answering', 2, ready['as_of']),
                         (shown['guest']['agent'],
                          shown['guest']['online_vcpus'],
                          shown['guest']['as_of']))
        self.assertEqual({'used_mb': GUEST_USES_MB, 'current_mb': 2048},
                         shown['utilisation']['memory'])
        # One CPU time sample so far: no average yet.
        self.assertIsNone(shown['utilisation']['vcpus'])
        self.assertIn('300 seconds', shown['utilisation']['reason'])
        # 320 MiB used, 20% free: 400, in 128 MiB steps 512, but never
        # below the flavor's minimum.
        self.assertEqual((2048, None, None),
                         (shown['recommendation']['memory_mb'],
                          shown['recommendation']['vcpus'],
                          shown['recommendation']['vcpus_rule']))
        self.assertIn('Uses 320 of 2048 MiB',
                      shown['recommendation']['memory_rule'])

    def test_a_virtio_mem_guest(self) -> None:
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={sizing.MINIMUM_CPU: '2',
                        sizing.MINIMUM_MEMORY: '2048',
                        sizing.MEMORY_MODEL: sizing.MEMORY_MODEL_VIRTIO_MEM})
        server = self._boot()
        shown = self._show(server['id'])
        self.assertEqual(
            ('virtio-mem', {'state': 'idle', 'requested_mb': 0,
                            'plugged_mb': 0}, True, []),
            (shown['flavor']['memory_model'],
             shown['readiness']['virtio_mem'],
             shown['readiness']['adjustable']['memory_mb'],
             shown['readiness']['warnings']))

        self._adjust_through_api(server['id'], memory_mb=3072)
        listed = self._list()[server['id']]
        self.assertEqual({'state': 'plugged', 'requested_mb': 1024,
                          'plugged_mb': 1024},
                         listed['readiness']['virtio_mem'])

        # Started again, from its definition, by a guest kernel without
        # the driver: it plugs nothing of the 1024 MiB it boots with.
        self.elastic_libvirt.new_guests(virtio_mem_driver=False)
        self._reboot_server(server, hard=True)
        ready = self._show(server['id'])['readiness']
        self.assertEqual(({'state': 'plugging', 'requested_mb': 1024,
                           'plugged_mb': 0}, True),
                         (ready['virtio_mem'],
                          ready['adjustable']['memory_mb']))
        self._started_long_ago(server['id'])
        ready = self._show(server['id'])['readiness']
        self.assertEqual(({'state': 'not_plugging', 'requested_mb': 1024,
                           'plugged_mb': 0},
                          {'vcpus': True, 'memory_mb': False}),
                         (ready['virtio_mem'], ready['adjustable']))
        self.assertIn('no virtio_mem driver', ready['reasons']['memory_mb'])

    def test_busy_vcpus_and_the_recommended_size(self) -> None:
        clock = Clock()
        self.useFixture(fixtures.MonkeyPatch(
            'tests.nova.fakelibvirt.cpu_clock', clock))
        self._endpoint().cpu_samples = utilisation.CpuTimeSamples(clock)
        server = self._boot(busy_vcpus=1.5)
        # The resource tracker's periodic update takes the first sample.
        self.computes['compute1'].manager.update_available_resource(
            nova_context.get_admin_context())
        clock.now += 60
        # The guest grew its memory use: 3 GiB of its 4 GiB.
        self._adjust_through_api(server['id'], memory_mb=4096,
                                 persist=False)
        behaviour = elastic_fake.ElasticLibvirtFixture.behaviour(
            self._connection('compute1'), server['id'])
        behaviour.memory_in_use_kib = 3072 * MIB - (
            behaviour.kernel_reserved_kib)
        self._wait_for_statistics(server['id'])

        shown = self._show(server['id'])
        self.assertEqual({'busy': 1.5, 'current': 2, 'window_seconds': 60},
                         shown['utilisation']['vcpus'])
        self.assertEqual({'used_mb': 3072, 'current_mb': 4096},
                         shown['utilisation']['memory'])
        recommended = shown['recommendation']
        # ceil(1.5) busy + 1 spare; 3072 / 0.8 = 3840, a multiple of 128.
        self.assertEqual((3, 3840), (recommended['vcpus'],
                                     recommended['memory_mb']))
        self.assertIn('1.50 vCPUs busy on average over the last 60 seconds, '
                      'plus 1 spare, within 2-4: 3.',
                      recommended['vcpus_rule'])
        self.assertIsNone(shown['utilisation']['reason'])

    def test_guest_without_agent(self) -> None:
        server = self._boot(agent=False)
        ready = self._show(server['id'])['readiness']
        self.assertEqual(('not_configured', {'vcpus': True,
                                             'memory_mb': True}),
                         (ready['guest_agent'], ready['adjustable']))
        self.assertEqual(1, len(ready['warnings']))
        self.assertIn('hw_qemu_guest_agent', ready['warnings'][0])

    def test_agent_not_answering(self) -> None:
        server = self._boot(guest_agent=False)
        ready = self._show(server['id'])['readiness']
        self.assertEqual('not_answering', ready['guest_agent'])
        self.assertIn('QEMU guest agent is not connected',
                      ready['warnings'][0])

    def test_guest_without_balloon_driver(self) -> None:
        server = self._boot(balloon_driver=False)
        shown = self._show(server['id'])
        # Just started: its silence proves nothing yet.
        self.assertEqual(('no_statistics', True),
                         (shown['readiness']['balloon'],
                          shown['readiness']['adjustable']['memory_mb']))
        self.assertIsNone(shown['utilisation']['memory'])
        self.assertIn('no memory statistics', shown['utilisation']['reason'])
        self.assertIsNone(shown['recommendation']['memory_mb'])

        self._started_long_ago(server['id'])
        ready = self._show(server['id'])['readiness']
        self.assertEqual(('silent', {'vcpus': True, 'memory_mb': False}),
                         (ready['balloon'], ready['adjustable']))
        self.assertIn('no balloon driver', ready['reasons']['memory_mb'])

    def test_statistics_collection_off(self) -> None:
        self.flags(mem_stats_period_seconds=0, group='libvirt')
        server = self._boot()
        self._started_long_ago(server['id'])
        ready = self._show(server['id'])['readiness']
        # Without collection, silence is no evidence.
        self.assertEqual(('no_statistics', True),
                         (ready['balloon'], ready['adjustable']['memory_mb']))
        self.assertIn('mem_stats_period_seconds', ready['warnings'][0])

    def test_not_running_and_locked(self) -> None:
        server = self._boot()
        self.api.post_server_action(server['id'], {'lock': {}})
        ready = self._show(server['id'])['readiness']
        self.assertEqual(({'vcpus': False, 'memory_mb': False},
                          'The server is locked.'),
                         (ready['adjustable'], ready['reasons']['vcpus']))
        self.api.post_server_action(server['id'], {'unlock': {}})

        self._stop_server(server)
        shown = self._show(server['id'])
        ready = shown['readiness']
        # A stopped server still takes a persistent adjustment.
        self.assertEqual((None, 'unknown', {'vcpus': True,
                                            'memory_mb': True}),
                         (ready['as_of'], ready['balloon'],
                          ready['adjustable']))
        self.assertIn('stopped', ready['error'])
        self.assertEqual('recorded', shown['source'])

    def test_list_asks_each_host_once(self) -> None:
        self.start_compute('compute2')
        servers = [self._boot(host='compute1'), self._boot(host='compute1'),
                   self._boot(host='compute2')]
        stopped = self._stop_server(self._boot(host='compute2'))
        endpoints = [self._endpoint('compute1'), self._endpoint('compute2')]
        asked = []
        for endpoint in endpoints:
            real = endpoint.describe_guests

            def recording(context, instance_uuids, real=real):
                asked.append(sorted(instance_uuids))
                return real(context, instance_uuids)
            endpoint.describe_guests = recording

        listed = self._list()
        self.assertEqual(sorted([sorted(s['id'] for s in servers[:2]),
                                 [servers[2]['id']]]), sorted(asked))
        for server in servers:
            self.assertEqual('active',
                             listed[server['id']]['readiness']['balloon'])
            self.assertEqual('answering',
                             listed[server['id']]['guest']['agent'])
        self.assertIn('stopped', listed[stopped['id']]['readiness']['error'])

        # Without readiness=true the list asks no host.
        asked.clear()
        resp = self.api.api_request('/os-xloud-adjust?all_tenants=1')
        self.assertNotIn('readiness', resp.json()['servers'][0])
        self.assertEqual([], asked)

    def test_a_host_that_does_not_answer(self) -> None:
        self.flags(readiness_timeout=1, group='xloud')
        self.start_compute('compute2')
        answering = self._boot(host='compute1')
        silent = self._boot(host='compute2')
        self.computes['compute2'].stop()

        listed = self._list()
        self.assertEqual('active',
                         listed[answering['id']]['readiness']['balloon'])
        ready = listed[silent['id']]['readiness']
        self.assertEqual((None, 'unknown'), (ready['as_of'],
                                             ready['balloon']))
        self.assertIn('compute2', ready['error'])
