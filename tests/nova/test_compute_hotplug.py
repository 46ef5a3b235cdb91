"""vCPUs a guest booted with can be unplugged again.

libvirt's QEMU driver starts every vCPU present at boot as a
non-hotpluggable one unless the domain's ``<vcpus>`` list marks it
hotpluggable, and refuses to unplug those. The fake libvirt enforces the
same rule (tests/realguest proves it on QEMU), so these tests fail when the
generated XML lacks the list: the floor would silently rise to whatever a
regeneration booted with.
"""

from tests.nova import compute_base

INACTIVE = 2  # VIR_DOMAIN_XML_INACTIVE: the persistent definition


class HotplugTest(compute_base.ElasticComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.host = self.start_compute('compute1')

    def _boot(self, vcpus: int = 4, **extra_spec) -> dict:
        flavor = self._create_flavor(vcpu=vcpus, memory_mb=4096,
                                     extra_spec=extra_spec)
        return self._create_server(flavor_id=flavor, networks='none')

    def _enabled_hotpluggable(self, server: dict,
                              flags: int = 0) -> list[bool]:
        """Per vCPU id, whether it is enabled and libvirt can unplug it."""
        listed = self._domain_xml(server, flags).find('vcpus')
        self.assertIsNotNone(listed, 'no <vcpus> list in the domain')
        return [vcpu.get('enabled') == vcpu.get('hotpluggable') == 'yes'
                for vcpu in listed]

    def test_persisted_grow_then_hard_reboot_still_shrinks(self) -> None:
        server = self._boot(**{'xloud:minimum_cpu': '2',
                               'xloud:minimum_memory': '2048'})
        self.assertEqual((2, 2048), self._domain_size(server))
        self._adjust(server, vcpus=4, persist=True)
        self.assertEqual(4, self._elastic_size(server['id']).boot_vcpus)

        # The regenerated domain boots with 4 vCPUs present.
        self._reboot_server(server, hard=True)
        self.assertEqual(4, self._domain(server).vcpusFlags(1))

        self._adjust(server, vcpus=2, persist=False)
        self.assertEqual(2, self._domain(server).vcpusFlags(1))
        self.assertEqual([False, True, False, False],
                         self._enabled_hotpluggable(server))
        size = self._elastic_size(server['id'])
        self.assertEqual((2, 4), (size.live_vcpus, size.boot_vcpus))
        self.assertEqual((2, 2048), self._placement_size(server['id']))

    def test_flavor_without_minimum_shrinks_when_allowed(self) -> None:
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        server = self._boot()
        self.assertEqual((4, 4096), self._domain_size(server))

        self._adjust(server, vcpus=2, persist=False)
        self.assertEqual(2, self._domain(server).vcpusFlags(1))
        self.assertEqual(2, self._elastic_size(server['id']).live_vcpus)
        self.assertEqual((2, 4096), self._placement_size(server['id']))

        # vCPU 0 is never unplugged; every other one is.
        self._adjust(server, vcpus=1, persist=False)
        self.assertEqual(1, self._domain(server).vcpusFlags(1))

    def test_persisted_grow_from_one_vcpu_then_soft_reboot_shrinks(
            self) -> None:
        # A persisted grow writes the count into the persistent
        # definition; libvirt's QEMU driver makes a vCPU it enables there
        # non-hotpluggable when the vCPU before it is (vCPU 0 always is)
        # unless the call passes VIR_DOMAIN_VCPU_HOTPLUGGABLE. A soft
        # reboot starts the guest from that definition.
        server = self._boot(**{'xloud:minimum_cpu': '1',
                               'xloud:minimum_memory': '2048'})
        self._adjust(server, vcpus=3, persist=True)
        self.assertEqual(
            [False, True, True, False],
            self._enabled_hotpluggable(server, INACTIVE),
            'the persistent definition lost hotpluggable vCPUs: a vCPU '
            'count written with VIR_DOMAIN_AFFECT_CONFIG needs '
            'VIR_DOMAIN_VCPU_HOTPLUGGABLE too (nova_ext/virt/live.py)')

        self._reboot_server(server, hard=False)
        self.assertEqual(3, self._domain(server).vcpusFlags(1))
        self._adjust(server, vcpus=1, persist=False)
        self.assertEqual(1, self._domain(server).vcpusFlags(1))
