"""Guests boot at their flavor's minimum, the flavor being the maximum."""

import datetime
import re
import time

from lxml import etree
from nova.virt.libvirt import driver as libvirt_driver

from nova_ext import compatibility
from nova_ext.virt import driver
from tests.nova import compute_base

_CREATION_TIME = re.compile(
    r'<nova:creationTime>([0-9: -]+)</nova:creationTime>')


class BootAtMinimumTest(compute_base.ElasticComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.host = self.start_compute('compute1')

    def test_minimums_boot_below_the_flavor(self) -> None:
        # Floating guests are pinned to the shared CPUs: Nova's cpuset
        # stays on <vcpu>.
        self.flags(cpu_shared_set='0-3', group='compute')
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048'})
        server = self._create_server(flavor_id=flavor, networks='none')

        xml = self._domain_xml(server)
        vcpu = xml.find('vcpu')
        self.assertEqual(('2', '4', '0-3'), (vcpu.get('current'), vcpu.text,
                                              vcpu.get('cpuset')))
        self.assertEqual(4096 * 1024, int(xml.find('memory').text))
        self.assertEqual(2048 * 1024, int(xml.find('currentMemory').text))
        self.assertEqual(
            ['virtio'], [b.get('model') for b in xml.iter('memballoon')])
        # What the fake hypervisor runs, not only what it was given.
        domain = self._domain(server)
        self.assertEqual(2, domain.vcpusFlags(1))
        self.assertEqual(2048 * 1024, domain.info()[2])

        size = self._elastic_size(server['id'])
        self.assertEqual((2, 2048, 2, 2048),
                         (size.boot_vcpus, size.boot_memory_mb,
                          size.live_vcpus, size.live_memory_mb))
        self.assertEqual((2, 2048), self._placement_size(server['id']))

    def test_minimum_memory_brings_a_balloon(self) -> None:
        # Without memory statistics Nova writes a model='none' balloon,
        # which cannot change the guest's memory.
        self.flags(mem_stats_period_seconds=0, group='libvirt')
        plain = self._create_server(
            flavor_id=self._create_flavor(vcpu=2, memory_mb=2048),
            networks='none')
        elastic = self._create_server(
            flavor_id=self._create_flavor(
                vcpu=2, memory_mb=2048,
                extra_spec={'minimum_memory': '1024'}),
            networks='none')
        self.assertEqual(
            ['none'], [b.get('model') for b in
                       self._domain_xml(plain).iter('memballoon')])
        self.assertEqual(
            ['virtio'], [b.get('model') for b in
                         self._domain_xml(elastic).iter('memballoon')])

    def test_without_minimums_the_xml_is_stock(self) -> None:
        flavor = self._create_flavor(vcpu=2, memory_mb=2048)
        generated = []
        elastic_config = driver.XloudLibvirtDriver._get_guest_config

        def capture(compute_driver, *args, **kwargs):
            # Nova records defaults (the machine type) on the instance and
            # image meta it is given: the stock driver gets its own copies
            # of the same request.
            instance, network_info, image_meta, *rest = args
            stock = libvirt_driver.LibvirtDriver._get_guest_config(
                compute_driver, instance.obj_clone(), network_info,
                image_meta.obj_clone(), *rest, **kwargs)
            guest = elastic_config(compute_driver, *args, **kwargs)
            generated.append((guest.to_xml(), stock.to_xml()))
            return guest

        self.stub_out('nova_ext.virt.driver.XloudLibvirtDriver.'
                      '_get_guest_config', capture)
        server = self._create_server(flavor_id=flavor, networks='none')
        self.assertEqual(1, len(generated))
        xml, stock = generated[0]
        # The one value that may differ: Nova stamps each rendering with
        # time.time() (InstanceDriverMetadata.creation_time), at one-second
        # resolution, so two renderings straddle a second now and then.
        # Freezing the clock would mean patching time.time for the whole
        # process (timers, the RPC loop); instead only that element is
        # normalised, after checking both carry it and within a second.
        (xml, created), (stock, stock_created) = (
            self._without_creation_time(xml),
            self._without_creation_time(stock))
        self.assertLessEqual(abs(created - stock_created),
                             datetime.timedelta(seconds=1))
        self.assertEqual(stock, xml)
        vcpu = etree.fromstring(xml).find('vcpu')
        self.assertIsNone(vcpu.get('current'))
        self.assertIsNone(etree.fromstring(xml).find('currentMemory'))
        self.assertEqual((2, 2048), self._placement_size(server['id']))
        self.assertNotIn('xloud_flavorid',
                         self._instance(server['id']).system_metadata)

    def _without_creation_time(self, xml: str
                               ) -> tuple[str, datetime.datetime]:
        """The XML with its one creationTime emptied, and that time."""
        stamps = _CREATION_TIME.findall(xml)
        self.assertEqual(1, len(stamps), xml)
        return (_CREATION_TIME.sub('<nova:creationTime/>', xml),
                datetime.datetime.strptime(stamps[0], '%Y-%m-%d %H:%M:%S'))


class BootMemoryConfirmationTest(compute_base.ElasticComputeTestBase):
    """QEMU starts a guest with all of <memory>; only its balloon driver
    brings it down to <currentMemory>, seconds later or never."""

    def setUp(self) -> None:
        super().setUp()
        self.host = self.start_compute('compute1')
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048'})
        # Guests defined from now on start without their driver loaded.
        self.elastic_libvirt.new_guests(balloon_driver=False)

    def _boot(self) -> dict:
        server = self._create_server(flavor_id=self.flavor, networks='none')
        # Right after the start: what libvirt reports, not the target.
        self._assert_recorded(server, live=(2, 4096))
        return server

    def _assert_recorded(self, server: dict, live: tuple) -> None:
        size = self._elastic_size(server['id'])
        self.assertEqual(
            (live, (2, 2048)),
            ((size.live_vcpus, size.live_memory_mb),
             (size.boot_vcpus, size.boot_memory_mb)))
        self.assertEqual(live, self._placement_size(server['id']))

    def _wait_for_log(self, text: str) -> None:
        for _attempt in range(400):
            if text in self.stdlog.logger.output:
                return
            time.sleep(0.05)
        self.fail(f'{text!r} not logged')

    def test_balloon_reaching_the_boot_size_later_is_confirmed(self) -> None:
        server = self._boot()
        self.assertEqual((2, 4096), self._domain_size(server))

        self.elastic_libvirt.behaviour(
            self._connection('compute1'), server['id']).balloon_driver = True
        self._wait_for_log('Boot memory of 2048 MiB confirmed')
        self._assert_recorded(server, live=(2, 2048))
        self.assertEqual((2, 2048), self._domain_size(server))
        self.assertEqual({}, self._elastic_size(server['id']).conflicts)

    def test_guest_without_balloon_driver_is_recorded_at_its_maximum(
            self) -> None:
        self.flags(boot_memory_confirm_timeout=0.3, group='xloud')
        server = self._boot()
        self._wait_for_log('did not reach its boot memory of 2048 MiB')
        self._assert_recorded(server, live=(2, 4096))
        self.assertEqual((2, 4096), self._domain_size(server))
        # Its memory is not elastic until a boot answers the balloon; the
        # API refuses a memory change with this reason.
        self.assertIn('balloon to 2048 MiB',
                      self._elastic_size(server['id']).conflicts[
                          compatibility.MEMORY])

    def test_a_boot_answering_the_balloon_makes_memory_elastic_again(
            self) -> None:
        self.flags(boot_memory_confirm_timeout=0.3, group='xloud')
        server = self._boot()
        self._wait_for_log('did not reach its boot memory of 2048 MiB')
        self.assertIn(compatibility.MEMORY,
                      self._elastic_size(server['id']).conflicts)

        # Started again with a balloon driver, it holds its boot size at
        # once (the fake's driver answers without delay).
        self.elastic_libvirt.new_guests(balloon_driver=True)
        self._reboot_server(server, hard=True)
        self._assert_recorded(server, live=(2, 2048))
        self.assertEqual({}, self._elastic_size(server['id']).conflicts)

    def test_adjustment_while_the_balloon_is_pending(self) -> None:
        server = self._boot()
        # An adjustment takes the instance's lock first and records what
        # it confirmed; the confirmation later records the domain as it
        # is then, the adjusted vCPUs included.
        self._adjust(server, vcpus=3, persist=False)
        self._assert_recorded(server, live=(3, 4096))
        self.elastic_libvirt.behaviour(
            self._connection('compute1'), server['id']).balloon_driver = True
        self._wait_for_log('Boot memory of 2048 MiB confirmed')
        self._assert_recorded(server, live=(3, 2048))
