"""Which flavor and image settings make a dimension non-elastic."""

from nova import objects
from nova import test as nova_test
from oslo_utils.fixture import uuidsentinel as uuids

from nova_ext import compatibility, sizing

VCPUS, MEMORY = compatibility.VCPUS, compatibility.MEMORY


class SpecConflictsTest(nova_test.NoDBTestCase):

    def test_each_setting_and_what_it_refuses(self) -> None:
        cases = [
            ({'hw:cpu_policy': 'dedicated'}, {}, {VCPUS, MEMORY},
             'hw:cpu_policy=dedicated'),
            ({'hw:cpu_policy': 'mixed'}, {}, {VCPUS, MEMORY},
             'hw:cpu_policy=mixed'),
            ({'hw:cpu_policy': 'shared'}, {}, set(), None),
            ({}, {'hw_cpu_policy': 'dedicated'}, {VCPUS, MEMORY},
             'hw:cpu_policy=dedicated'),
            ({'resources:PCPU': '4'}, {}, {VCPUS, MEMORY}, 'resources:PCPU'),
            ({'hw:cpu_realtime': 'yes'}, {}, {VCPUS, MEMORY},
             'hw:cpu_realtime'),
            ({'hw:mem_page_size': 'small'}, {}, {VCPUS, MEMORY},
             'hw:mem_page_size=small'),
            ({}, {'hw_mem_page_size': 'large'}, {VCPUS, MEMORY},
             'hw:mem_page_size=large'),
            ({'hw:numa_nodes': '2'}, {}, {VCPUS, MEMORY}, 'hw:numa_nodes'),
            ({}, {'hw_numa_nodes': '1'}, {VCPUS, MEMORY}, 'hw_numa_nodes'),
            ({'hw:locked_memory': 'true'}, {}, {MEMORY}, 'hw:locked_memory'),
            ({'pci_passthrough:alias': 'gpu:1'}, {}, {MEMORY},
             'pci_passthrough:alias'),
            ({'resources:VGPU': '1'}, {}, {MEMORY}, 'resources:VGPU'),
            ({'resources:CUSTOM_FPGA': '1'}, {}, {MEMORY},
             'resources:CUSTOM_FPGA'),
            ({'hw:cpu_sockets': '2', 'hw:watchdog_action': 'reset',
              'aggregate_instance_extra_specs:ssd': 'true',
              'quota:cpu_shares': '1024'}, {}, set(), None),
        ]
        for specs, image, refused, named in cases:
            with self.subTest(specs=specs, image=image):
                conflicts = compatibility.spec_conflicts(specs, image)
                self.assertEqual(refused, set(conflicts))
                for reason in conflicts.values():
                    self.assertIn(named, reason)

    def test_vcpu_step_follows_the_threads_per_core(self) -> None:
        self.assertEqual(1, compatibility.vcpu_step({}))
        self.assertEqual(2, compatibility.vcpu_step({'hw:cpu_threads': '2'}))
        self.assertEqual(4, compatibility.vcpu_step(
            {}, {'hw_cpu_threads': '4'}))
        self.assertEqual(1, compatibility.vcpu_step(
            {'hw:cpu_threads': 'many'}))


class ElasticSizeConflictsTest(nova_test.NoDBTestCase):

    def _instance(self, extra_specs: dict,
                  sysmeta: dict | None = None) -> objects.Instance:
        flavor = objects.Flavor(flavorid='f1', name='f1', vcpus=4,
                                memory_mb=4096, extra_specs=extra_specs)
        return objects.Instance(uuid=uuids.instance, flavor=flavor,
                                system_metadata=sysmeta or {})

    def test_a_refused_dimension_keeps_the_flavor_size(self) -> None:
        size = sizing.ElasticSize.from_instance(self._instance(
            {sizing.MINIMUM_CPU: '2', sizing.MINIMUM_MEMORY: '2048',
             'hw:locked_memory': 'true'}))
        self.assertEqual((2, 2, None, 4096, 4096),
                         (size.boot_vcpus, size.floor_vcpus,
                          size.minimum_memory_mb, size.boot_memory_mb,
                          size.floor_memory_mb))
        self.assertIn('hw:locked_memory', size.conflicts[MEMORY])

    def test_the_image_counts_too(self) -> None:
        size = sizing.ElasticSize.from_instance(self._instance(
            {sizing.MINIMUM_CPU: '2'},
            {'image_hw_cpu_policy': 'dedicated'}))
        self.assertEqual((None, 4, 4), (size.minimum_vcpus, size.boot_vcpus,
                                        size.floor_vcpus))

    def test_legacy_keys_are_read_and_the_scoped_one_wins(self) -> None:
        legacy = sizing.ElasticSize.from_instance(self._instance(
            {'minimum_cpu': '3', 'minimum_memory': '1024'}))
        self.assertEqual((3, 1024), (legacy.minimum_vcpus,
                                     legacy.minimum_memory_mb))
        both = sizing.ElasticSize.from_instance(self._instance(
            {'minimum_cpu': '3', sizing.MINIMUM_CPU: '2'}))
        self.assertEqual(2, both.minimum_vcpus)

    def test_floors_without_a_minimum(self) -> None:
        plain = sizing.ElasticSize.from_instance(self._instance({}))
        self.assertEqual((4, 4096), (plain.floor_vcpus,
                                     plain.floor_memory_mb))
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        plain = sizing.ElasticSize.from_instance(self._instance({}))
        self.assertEqual((1, 256), (plain.floor_vcpus,
                                    plain.floor_memory_mb))
        # No memory below the floor, whatever the flavor says.
        low = sizing.ElasticSize.from_instance(self._instance(
            {sizing.MINIMUM_MEMORY: '64'}))
        self.assertEqual((256, 256), (low.floor_memory_mb,
                                      low.boot_memory_mb))
