"""Memory through a virtio-mem device (``xloud:memory_model=virtio-mem``).

The guest boots with its flavor's minimum as RAM; memory is plugged and
unplugged in 2 MiB blocks through ``<requested>`` and confirmed by the
device's ``<current>``. The fake libvirt's guest plugs what it is asked
for unless its virtio_mem driver is missing, and keeps blocks it cannot
free.
"""

from lxml import etree

from nova_ext import sizing
from nova_ext.virt import live
from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake
from tests.realguest.virtio_mem_refusals import REFUSALS, refused

MIB = 1024
INACTIVE = compute_base.INACTIVE


class VirtioMemTest(compute_base.ElasticAPIComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.flags(memory_confirm_timeout=0.5, group='xloud')
        # A shrink waits for statistics sent after the last change.
        self.flags(mem_stats_period_seconds=1, group='libvirt')
        self.start_compute('compute1')
        # 2-4 vCPUs; 2048 MiB of RAM, up to 2048 more through the device.
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'xloud:minimum_cpu': '2',
                        'xloud:minimum_memory': '2048',
                        'xloud:memory_model': 'virtio-mem'})

    def _device(self, server: dict, flags: int = 0) -> live.VirtioMem:
        return live.VirtioMem.of(self._domain_xml(server, flags))

    def _sizes(self, server: dict) -> dict:
        domain = self._domain(server)
        size = self._elastic_size(server['id'])
        return {
            'domain': live.read_size(domain).memory_mb,
            'definition': live.read_definition(domain).current.memory_mb,
            'record': (size.live_memory_mb, size.boot_memory_mb),
            'placement': self._placement_size(server['id'])[1],
        }

    def _boot(self, **behaviour) -> dict:
        if behaviour:
            self.elastic_libvirt.new_guests(**behaviour)
        return self._create_server(flavor_id=self.flavor, networks='none')

    def test_boots_with_its_minimum_and_plugs_blocks(self) -> None:
        server = self._boot()
        device = self._device(server)
        self.assertEqual((2048 * MIB, 2048 * MIB, 0, 0),
                         (device.base_kib, device.size_kib,
                          device.requested_kib, device.current_kib))
        self.assertEqual({'domain': 2048, 'definition': 2048,
                          'record': (2048, 2048), 'placement': 2048},
                         self._sizes(server))

        self._adjust_through_api(server['id'], memory_mb=3072,
                                 persist=False)
        device = self._device(server)
        self.assertEqual((1024 * MIB, 1024 * MIB),
                         (device.requested_kib, device.current_kib))
        self.assertEqual({'domain': 3072, 'definition': 2048,
                          'record': (3072, 2048), 'placement': 3072},
                         self._sizes(server))

        self._adjust_through_api(server['id'], memory_mb=4096)
        self.assertEqual(2048 * MIB,
                         self._device(server, INACTIVE).requested_kib)
        self.assertEqual({'domain': 4096, 'definition': 4096,
                          'record': (4096, 4096), 'placement': 4096},
                         self._sizes(server))

        self._wait_for_statistics(server['id'])
        self._adjust_through_api(server['id'], memory_mb=2048)
        self.assertEqual((0, 0), (self._device(server).requested_kib,
                                  self._device(server).current_kib))
        self.assertEqual({'domain': 2048, 'definition': 2048,
                          'record': (2048, 2048), 'placement': 2048},
                         self._sizes(server))

    def test_blocks_the_guest_cannot_free_stay_counted(self) -> None:
        server = self._boot(virtio_mem_busy_kib=512 * MIB)
        self._adjust_through_api(server['id'], memory_mb=4096,
                                 persist=False)
        self._wait_for_statistics(server['id'])
        event = self._adjust_through_api(server['id'], memory_mb=2048,
                                         persist=False, result='Error')
        self.assertIn('memory change to 2048 MiB not confirmed, the guest '
                      'holds 2560 MiB', event['details'])
        self.assertIn('virtio_mem driver', event['details'])
        # Asked again for what it holds: nothing unplugs behind the record.
        device = self._device(server)
        self.assertEqual((512 * MIB, 512 * MIB),
                         (device.requested_kib, device.current_kib))
        self.assertEqual({'domain': 2560, 'definition': 2048,
                          'record': (2560, 2048), 'placement': 2560},
                         self._sizes(server))

    def test_guest_without_the_driver_gets_nothing_recorded(self) -> None:
        server = self._boot(virtio_mem_driver=False)
        event = self._adjust_through_api(server['id'], memory_mb=3072,
                                         persist=False, result='Error')
        self.assertIn('holds 2048 MiB', event['details'])
        self.assertEqual((0, 0), (self._device(server).requested_kib,
                                  self._device(server).current_kib))
        self.assertEqual({'domain': 2048, 'definition': 2048,
                          'record': (2048, 2048), 'placement': 2048},
                         self._sizes(server))

    def test_no_shrink_into_memory_the_guest_uses(self) -> None:
        server = self._boot()
        self._adjust_through_api(server['id'], memory_mb=4096,
                                 persist=False)
        behaviour = elastic_fake.ElasticLibvirtFixture.behaviour(
            self._connection('compute1'), server['id'])
        # 3000 MiB in use: 3128 is the least it can be shrunk to.
        behaviour.memory_in_use_kib = 3000 * MIB - (
            behaviour.kernel_reserved_kib)
        self._wait_for_statistics(server['id'])
        event = self._adjust_through_api(server['id'], memory_mb=2048,
                                         persist=False, result='Error')
        self.assertIn('the guest uses 3000 MiB of its 4096 MiB', event[
            'details'])
        self.assertIn('3128 MiB is the least', event['details'])
        self.assertEqual((2048 * MIB, 2048 * MIB),
                         (self._device(server).requested_kib,
                          self._device(server).current_kib))
        self._adjust_through_api(server['id'], memory_mb=3128,
                                 persist=False)

        # Without statistics it does not know: no shrink.
        self._domain(server).setMemoryStatsPeriod(0, 1)
        event = self._adjust_through_api(server['id'], memory_mb=3072,
                                         persist=False, result='Error')
        self.assertIn('must say how much of its 3128 MiB it uses',
                      event['details'])
        self.assertEqual(3128, self._sizes(server)['domain'])

    def test_no_shrink_on_statistics_from_before_the_last_change(
            self) -> None:
        """QEMU keeps the balloon driver's last statistics for a period:
        right after a grow they still say what was usable at the old
        size, and what the guest holds less that would count the blocks
        just plugged as used."""
        self.flags(mem_stats_period_seconds=30, group='libvirt')
        server = self._boot()
        # Its first statistics, at 2048 MiB.
        self._domain(server).memoryStats()
        self._adjust_through_api(server['id'], memory_mb=4096,
                                 persist=False)
        event = self._adjust_through_api(server['id'], memory_mb=2048,
                                         persist=False, result='Error')
        self.assertIn('memory shrink to 2048 MiB not made yet: the guest\'s '
                      'statistics predate its last memory change',
                      event['details'])
        self.assertIn('every 30 s', event['details'])
        self.assertEqual(4096, self._sizes(server)['domain'])

    def test_half_a_block_is_refused_by_the_api(self) -> None:
        server = self._boot()
        resp = self._request_adjust(server['id'], memory_mb=3071)
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn('not a multiple of 2 MiB', resp.text)
        self.assertEqual(2048, self._sizes(server)['domain'])

    def test_libvirts_refusals(self) -> None:
        """libvirt 9.0's words, as tests/realguest/test_virtio_mem.py
        records them from real QEMU (virtio_mem_refusals)."""
        server = self._boot()
        domain = self._domain(server)
        device = self._device(server)
        for refusal in REFUSALS:
            with self.subTest(refusal.what):
                self.assertEqual(
                    refusal.expected(device),
                    refused(elastic_fake.fakelibvirt, domain, refusal))
        # Nothing refused changed anything.
        self.assertEqual((0, 0), (self._device(server).requested_kib,
                                  self._device(server).current_kib))
        balloon = etree.tostring(self._domain_xml(server).find(
            './devices/memballoon'), encoding='unicode')
        with self.assertRaises(
                elastic_fake.fakelibvirt.libvirtError) as caught:
            domain.updateDeviceFlags(balloon, 1)
        self.assertEqual(elastic_fake.fakelibvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                         caught.exception.get_error_code())

    def test_balloon_flavors_are_unchanged(self) -> None:
        balloon = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'xloud:minimum_cpu': '2',
                        'xloud:minimum_memory': '2048'})
        server = self._create_server(flavor_id=balloon, networks='none')
        self.assertIsNone(self._device(server))
        self.assertEqual(sizing.MEMORY_MODEL_BALLOON,
                         self._elastic_size(server['id']).memory_model)
