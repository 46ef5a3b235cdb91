"""The recorded size across everything that makes Nova rebuild the domain.

Every test starts from a guest whose boot size was changed by a persistent
adjustment (3 vCPUs, 3072 MiB) and which then grew further without
persisting (4 vCPUs, 4096 MiB). Operations that regenerate the domain bring
it back to the boot size, with placement following; a live migration keeps
the running size; a resize starts over from the new flavor.
"""

import fixtures

from nova_ext import readiness
from tests.nova import compute_base

INACTIVE = 2  # VIR_DOMAIN_XML_INACTIVE
BOOT = (3, 3072)
LIVE = (4, 4096)


class MovesTest(compute_base.ElasticMigrationMixin,
                compute_base.ElasticComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        # As Nova's own libvirt functional tests do: the fake has no disk
        # files to copy.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver'
            '.migrate_disk_and_power_off', return_value='{}'))
        self.src = self.computes[self.start_compute('compute1')]
        self.dest = self.computes[self.start_compute('compute2')]
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048'})
        self.server = self._create_server(
            flavor_id=self.flavor, networks='none', host='compute1')
        self._adjust(self.server, vcpus=BOOT[0], memory_mb=BOOT[1],
                     persist=True)
        self._adjust(self.server, vcpus=LIVE[0], memory_mb=LIVE[1],
                     persist=False)
        self._assert_runs_at(LIVE, 'compute1')

    def _assert_runs_at(self, live: tuple[int, int], host: str,
                        boot: tuple[int, int] = BOOT) -> None:
        self.server = self.api.get_server(self.server['id'])
        self.assertEqual(host, self.server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(live, self._domain_size(self.server))
        size = self._elastic_size(self.server['id'])
        self.assertEqual((live, boot),
                         ((size.live_vcpus, size.live_memory_mb),
                          (size.boot_vcpus, size.boot_memory_mb)))
        allocations = self._get_allocations_by_server_uuid(
            self.server['id'])
        # Only the current host holds resources for the instance.
        self.assertEqual([self.compute_rp_uuids[host]], list(allocations))
        self.assertEqual(live, self._placement_size(self.server['id']))

    def test_stop_start(self) -> None:
        self.server = self._stop_server(self.server)
        self.assertEqual(BOOT, self._domain_size(self.server, INACTIVE))
        self.server = self._start_server(self.server)
        self._assert_runs_at(BOOT, 'compute1')

    def test_shelve_unshelve(self) -> None:
        self.server = self._shelve_server(self.server)
        self.assertEqual({}, self._get_allocations_by_server_uuid(
            self.server['id']))
        self.server = self._unshelve_server(self.server)
        self._assert_runs_at(BOOT, self.server['OS-EXT-SRV-ATTR:host'])

    def test_cold_migration(self) -> None:
        self.server = self._migrate_server(self.server, host='compute2')
        self.server = self._confirm_resize(self.server)
        self._assert_runs_at(BOOT, 'compute2')

    def test_evacuation(self) -> None:
        self.src.stop()
        service = self.api.get_services(host='compute1',
                                        binary='nova-compute')[0]
        self.api.put_service_force_down(service['id'], True)
        self.server = self._evacuate_server(
            self.server, expected_host='compute2', expected_state='ACTIVE')
        self.assertEqual(BOOT, self._domain_size(self.server))
        size = self._elastic_size(self.server['id'])
        self.assertEqual(BOOT, (size.live_vcpus, size.live_memory_mb))
        # The source keeps its share until it comes back and cleans up.
        allocations = self._get_allocations_by_server_uuid(
            self.server['id'])
        self.assertEqual(
            {'VCPU': BOOT[0], 'MEMORY_MB': BOOT[1]},
            {k: v for k, v in allocations[self.compute_rp_uuids[
                'compute2']]['resources'].items() if k != 'DISK_GB'})

    def test_live_migration_keeps_the_running_size(self) -> None:
        self.server = self._live_migrate(self.server, host='compute2')
        self.assertTrue(self.migrate_stub_ran)
        self._assert_runs_at(LIVE, 'compute2')
        # libvirt defined the destination from the migrated live XML; its
        # next start from that definition (a soft reboot) must be at the
        # boot size.
        self.assertEqual(BOOT, self._domain_size(self.server, INACTIVE))
        # Readiness tells the guest moved since it started.
        self.assertTrue(readiness.migrated_since_boot(
            self._instance(self.server['id'])))
        self._reboot_server(self.server)
        self._assert_runs_at(BOOT, 'compute2')
        self.assertFalse(readiness.migrated_since_boot(
            self._instance(self.server['id'])))

    def test_resize_starts_from_the_new_flavor(self) -> None:
        bigger = self._create_flavor(
            vcpu=8, memory_mb=8192,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '1024'})
        self.server = self._resize_server(self.server, bigger)
        self.server = self._confirm_resize(self.server)
        self._assert_runs_at((2, 1024), self.server['OS-EXT-SRV-ATTR:host'],
                             boot=(2, 1024))

        plain = self._create_flavor(vcpu=2, memory_mb=2048)
        self.server = self._resize_server(self.server, plain)
        self.server = self._confirm_resize(self.server)
        self._assert_runs_at((2, 2048), self.server['OS-EXT-SRV-ATTR:host'],
                             boot=(2, 2048))
        xml = self._domain_xml(self.server)
        self.assertIsNone(xml.find('vcpu').get('current'))

    def test_revert_resize_returns_to_the_persisted_boot_size(self) -> None:
        bigger = self._create_flavor(
            vcpu=8, memory_mb=8192, extra_spec={'minimum_cpu': '6'})
        self.server = self._resize_server(self.server, bigger)
        self._assert_runs_at((6, 8192), 'compute2', boot=(6, 8192))
        self.server = self._revert_resize(self.server)
        # The boot size persisted under the old flavor, with placement
        # following it.
        self._assert_runs_at(BOOT, 'compute1', boot=BOOT)
