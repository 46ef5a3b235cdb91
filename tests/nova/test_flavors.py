"""Flavors as operators build them, from the flavor API down to libvirt.

The minimums are the scoped extra specs ``xloud:minimum_cpu`` /
``xloud:minimum_memory``; the seed's unscoped ``minimum_cpu`` /
``minimum_memory`` are still honoured as a deprecated alias. Everything
goes through Nova's own API with the ``xloud_adjust`` paste filter, the
scheduler runs the filters operators enable, and the compute hosts run
``XloudLibvirtDriver`` on the elastic fake libvirt:

* scheduling and moves of elastic flavors (the unscoped keys are taken for
  aggregate requirements by ``AggregateInstanceExtraSpecsFilter``);
* the flavor extra spec API refusing bad minimums and minimums on flavors
  whose settings make a dimension non-elastic;
* instances such settings make non-elastic (NUMA topology, pinned vCPUs,
  PCI devices, an image's NUMA request): 409, and they run at the flavor's
  size;
* quota of a grow, with usage counted from placement and from the
  database;
* the floors of flavors without minimums.
"""

import fixtures
from lxml import etree
from nova import conf as nova_conf
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.api import client as api_client
from oslo_serialization import jsonutils

from tests.nova import base as api_base
from tests.nova import compute_base

MIB = 1024
INACTIVE = compute_base.INACTIVE

SCOPED = {'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '2048'}
LEGACY = {'minimum_cpu': '2', 'minimum_memory': '2048'}

# What operators enable on top of Nova's defaults.
OPERATOR_FILTERS = [
    'AggregateInstanceExtraSpecsFilter',
    'ComputeCapabilitiesFilter',
    'NUMATopologyFilter',
    'PciPassthroughFilter',
    'AggregateMultiTenancyIsolation',
]

PCI_ALIAS_NAME = 'gpu'
PCI_DEVICE_SPEC = [jsonutils.dumps({
    'vendor_id': fakelibvirt.PCI_VEND_ID,
    'product_id': fakelibvirt.PCI_PROD_ID,
})]
PCI_ALIAS = [jsonutils.dumps({
    'vendor_id': fakelibvirt.PCI_VEND_ID,
    'product_id': fakelibvirt.PCI_PROD_ID,
    'name': PCI_ALIAS_NAME,
})]


def _message(resp) -> str:
    body = resp.json()
    return next(iter(body.values()))['message']


class _FlavorsTestBase(compute_base.ElasticAPIComputeTestBase):
    """Compute hosts on XloudLibvirtDriver, the operators' filters, and
    what every check of "nothing changed" compares."""

    # Added to Nova's default filters.
    EXTRA_FILTERS = OPERATOR_FILTERS

    def _setup_scheduler_service(self):
        enabled = list(nova_conf.CONF.filter_scheduler.enabled_filters)
        enabled += [name for name in self.EXTRA_FILTERS
                    if name not in enabled]
        self.flags(enabled_filters=enabled, group='filter_scheduler')
        return super()._setup_scheduler_service()

    def _write_specs_behind_the_api(self, flavor_id: str,
                                    specs: dict) -> None:
        """Extra specs as a flavor written before the API validated them
        (the seed deployment) holds them."""
        ctxt = nova_context.get_admin_context()
        flavor = objects.Flavor.get_by_flavor_id(ctxt, flavor_id)
        flavor.extra_specs = dict(flavor.extra_specs, **specs)
        flavor.save()

    def _full_instance(self, server_id: str) -> objects.Instance:
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.Instance.get_by_uuid(
                cctxt, server_id,
                expected_attrs=['flavor', 'system_metadata',
                                'numa_topology', 'pci_requests'])

    def _state(self, server_id: str) -> dict:
        """Everything an adjustment may change, as each layer reports it."""
        server = self.api.get_server(server_id)
        instance = self._instance(server_id)
        return {
            'domain': etree.tostring(self._domain_xml(server)),
            'definition': etree.tostring(self._domain_xml(server, INACTIVE)),
            'xloud_sysmeta': {key: value for key, value
                              in instance.system_metadata.items()
                              if key.startswith('xloud_')},
            'vm_state': instance.vm_state,
            'task_state': instance.task_state,
            'actions': [action['request_id'] for action in
                        self.api.get_instance_actions(server_id)],
            'allocations': {
                rp: allocation['resources'] for rp, allocation in
                self._get_allocations_by_server_uuid(server_id).items()},
        }

    def _assert_refused(self, server_id: str, status: int, *,
                        vcpus: int | None = None,
                        memory_mb: int | None = None,
                        persist: bool = True) -> str:
        """The adjustment is refused with ``status`` and changes nothing
        anywhere; the fault's message."""
        before = self._state(server_id)
        resp = self._request_adjust(server_id, vcpus, memory_mb, persist)
        self.assertEqual(status, resp.status_code, resp.text)
        self.assertEqual(before, self._state(server_id))
        return _message(resp)

    def _runs_at_flavor_size(self, server: dict, vcpus: int,
                             memory_mb: int) -> None:
        """The domain, live and defined, is what stock Nova generates for
        the flavor: no ``<vcpu current>``, ``<currentMemory>`` equal to
        ``<memory>``."""
        for flags in (0, INACTIVE):
            xml = self._domain_xml(server, flags)
            vcpu = xml.find('vcpu')
            self.assertIsNone(vcpu.get('current'),
                              etree.tostring(vcpu).decode())
            self.assertEqual(vcpus, int(vcpu.text))
            self.assertEqual(memory_mb * MIB, int(xml.find('memory').text))
            self.assertEqual(memory_mb * MIB,
                             int(xml.find('currentMemory').text))
        self.assertEqual((vcpus, memory_mb), self._domain_size(server))


class SchedulingTest(compute_base.ElasticMigrationMixin, _FlavorsTestBase):
    """Elastic flavors with the filters operators use: two hosts in an
    aggregate whose metadata the flavors ask for."""

    def setUp(self) -> None:
        super().setUp()
        # As Nova's own libvirt functional tests: no disks to copy.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver'
            '.migrate_disk_and_power_off', return_value='{}'))
        for hostname in ('compute1', 'compute2'):
            self.start_compute(hostname)
        aggregate = self._create_aggregate('elastic-gold')
        for hostname in ('compute1', 'compute2'):
            self.api.add_host_to_aggregate(aggregate, hostname)
        # Hosts for this project only (AggregateMultiTenancyIsolation), of
        # the tier the flavors ask for (AggregateInstanceExtraSpecsFilter).
        self.api.post_aggregate_action(aggregate, {'set_metadata': {
            'metadata': {'tier': 'gold',
                         'filter_tenant_id': self.api.project_id}}})
        self.gold = {'aggregate_instance_extra_specs:tier': 'gold'}

    def _boot_refused_by(self, flavor_id: str, filter_name: str) -> dict:
        """The boot ends in NoValidHost, ``filter_name`` having removed
        every host."""
        logged = len(self.stdlog.logger.output)
        server = self._create_server(flavor_id=flavor_id, networks='none',
                                     expected_state='ERROR')
        self.assertIn('No valid host', server['fault']['message'])
        log = self.stdlog.logger.output[logged:]
        self.assertIn(f'Filter {filter_name} returned 0 hosts', log)
        return server

    def test_legacy_keys_are_aggregate_requirements(self) -> None:
        # The seed's unscoped keys: AggregateInstanceExtraSpecsFilter takes
        # them for aggregate metadata no host has.
        flavor = self._create_flavor(vcpu=4, memory_mb=4096,
                                     extra_spec=dict(self.gold, **LEGACY))
        self._boot_refused_by(flavor, 'AggregateInstanceExtraSpecsFilter')

        # The same flavor with the scoped keys instead boots, at its
        # minimum.
        for key in LEGACY:
            self.api.api_delete(f'/flavors/{flavor}/os-extra_specs/{key}')
        self.api.post_extra_spec(flavor, {'extra_specs': SCOPED})
        self.assertEqual(dict(self.gold, **SCOPED),
                         self.api.get_extra_specs(flavor))
        server = self._create_server(flavor_id=flavor, networks='none')
        self._assert_sizes({'booted': (server['id'], (2, 2048), (2, 2048),
                                       None)})

        # The filter does run on scoped flavors: one asking for another
        # tier finds no host.
        silver = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec=dict(SCOPED, **{
                'aggregate_instance_extra_specs:tier': 'silver'}))
        self._boot_refused_by(silver, 'AggregateInstanceExtraSpecsFilter')

    def test_boot_cold_migrate_resize_live_migrate(self) -> None:
        small = self._create_flavor(vcpu=4, memory_mb=4096,
                                    extra_spec=dict(self.gold, **SCOPED))
        big = self._create_flavor(
            vcpu=6, memory_mb=6144,
            extra_spec=dict(self.gold, **{'xloud:minimum_cpu': '3',
                                          'xloud:minimum_memory': '3072'}))
        server = self._create_server(flavor_id=small, networks='none')
        first = server['OS-EXT-SRV-ATTR:host']
        other = {'compute1': 'compute2', 'compute2': 'compute1'}
        self._assert_sizes({'booted': (server['id'], (2, 2048), (2, 2048),
                                       None)})

        server = self._migrate_server(server)
        server = self._confirm_resize(server)
        self.assertEqual(other[first], server['OS-EXT-SRV-ATTR:host'])
        self._assert_sizes({'cold-migrated': (server['id'], (2, 2048),
                                              (2, 2048), None)})

        server = self._resize_server(server, big)
        server = self._confirm_resize(server)
        self.assertEqual(first, server['OS-EXT-SRV-ATTR:host'])
        self._assert_sizes({'resized': (server['id'], (3, 3072), (3, 3072),
                                        None)})

        # Grown live, then live-migrated: it keeps running as it ran.
        self._adjust_through_api(server['id'], vcpus=5, memory_mb=5120,
                                 persist=False)
        self._assert_sizes({'grown': (server['id'], (5, 5120), (3, 3072),
                                      None)})
        self.dest = self.computes[other[first]]
        server = self._live_migrate(server, host=other[first])
        self.assertTrue(self.migrate_stub_ran)
        self.assertEqual(other[first], server['OS-EXT-SRV-ATTR:host'])
        self._assert_sizes({'live-migrated': (server['id'], (5, 5120),
                                              (3, 3072), None)})


class FlavorSpecValidationTest(api_base.ElasticServersTestBase):
    """The flavor extra specs API; no compute needed."""

    def _flavor(self, specs: dict | None = None) -> str:
        return self._create_flavor(vcpu=4, memory_mb=4096,
                                   extra_spec=specs or None)

    def _request(self, flavor_id: str, method: str, specs: dict,
                 microversion: str | None = '2.86'):
        """POST the specs, or PUT its single key; the raw response."""
        path = f'/flavors/{flavor_id}/os-extra_specs'
        body = {'extra_specs': specs}
        if method == 'PUT':
            (key,) = specs
            path += f'/{key}'
            body = specs
        api = self.admin_api
        saved, api.microversion = api.microversion, microversion
        try:
            return api.api_request(path, method=method,
                                   body=jsonutils.dumps(body))
        finally:
            api.microversion = saved

    def _assert_refused(self, flavor_id: str, method: str, specs: dict,
                        *needles: str,
                        microversion: str | None = '2.86') -> None:
        before = self.admin_api.get_extra_specs(flavor_id)
        resp = self._request(flavor_id, method, specs, microversion)
        self.assertEqual(400, resp.status_code, resp.text)
        message = _message(resp)
        for needle in needles:
            self.assertIn(needle, message)
        self.assertEqual(before, self.admin_api.get_extra_specs(flavor_id))

    def _assert_stored(self, flavor_id: str, method: str, specs: dict,
                       microversion: str | None = '2.86') -> None:
        resp = self._request(flavor_id, method, specs, microversion)
        self.assertEqual(200, resp.status_code, resp.text)
        stored = self.admin_api.get_extra_specs(flavor_id)
        self.assertEqual({k: str(v) for k, v in specs.items()},
                         {k: stored.get(k) for k in specs})

    def test_scoped_minimums_are_validated(self) -> None:
        flavor = self._flavor(SCOPED)
        self.assertEqual(SCOPED, self.admin_api.get_extra_specs(flavor))
        bad = [
            ('xloud:minimum_cpu', '0', None),
            ('xloud:minimum_cpu', 0, None),
            ('xloud:minimum_cpu', 'two', None),
            ('xloud:minimum_cpu', '1.5', None),
            ('xloud:minimum_cpu', '', None),
            ('xloud:minimum_cpu', '5', "above the flavor's vcpus 4"),
            ('xloud:minimum_cpu', 8, "above the flavor's vcpus 4"),
            ('xloud:minimum_memory', '0', None),
            ('xloud:minimum_memory', 'lots', None),
            ('xloud:minimum_memory', '4097',
             "above the flavor's memory_mb 4096"),
        ]
        for microversion in ('2.86', None):
            for key, value, reason in bad:
                for method in ('POST', 'PUT'):
                    with self.subTest(microversion=microversion, key=key,
                                      value=value, method=method):
                        needles = (key,) + ((reason,) if reason else ())
                        self._assert_refused(flavor, method, {key: value},
                                             *needles,
                                             microversion=microversion)
        # The bounds are inclusive.
        self._assert_stored(flavor, 'PUT', {'xloud:minimum_cpu': 4})
        self._assert_stored(flavor, 'POST', {'xloud:minimum_cpu': '1',
                                             'xloud:minimum_memory': '4096'})

    def test_unknown_xloud_key_is_refused(self) -> None:
        flavor = self._flavor(SCOPED)
        # Nova refuses unregistered keys of a namespace it knows.
        for key in ('xloud:minimum_disk', 'xloud:minimum_cpus',
                    'xloud:maximum_cpu'):
            for method in ('POST', 'PUT'):
                with self.subTest(key=key, method=method):
                    self._assert_refused(
                        flavor, method, {key: '2'}, key,
                        'does not appear to be a valid extra spec')

    def test_minimum_memory_floor(self) -> None:
        flavor = self._flavor()
        for method in ('POST', 'PUT'):
            for value in ('128', '255'):
                with self.subTest(method=method, value=value):
                    self._assert_refused(
                        flavor, method, {'xloud:minimum_memory': value},
                        'xloud:minimum_memory', 'memory_floor_mb')
        # The legacy spelling as well.
        self._assert_refused(flavor, 'POST', {'minimum_memory': '128'},
                             'memory_floor_mb')
        self._assert_stored(flavor, 'PUT', {'xloud:minimum_memory': '256'})

    def test_minimum_refused_where_a_setting_makes_it_non_elastic(
            self) -> None:
        # (setting, value, the minimums it refuses)
        both = ('xloud:minimum_cpu', 'xloud:minimum_memory')
        memory = ('xloud:minimum_memory',)
        settings = [
            ('hw:cpu_policy', 'dedicated', both),
            ('hw:cpu_policy', 'mixed', both),
            ('resources:PCPU', '2', both),
            ('hw:cpu_realtime', 'yes', both),
            ('hw:mem_page_size', 'large', both),
            ('hw:mem_page_size', 'small', both),
            ('hw:numa_nodes', '1', both),
            ('hw:locked_memory', 'true', memory),
            ('pci_passthrough:alias', 'gpu:1', memory),
            ('resources:VGPU', '1', memory),
            ('resources:CUSTOM_FPGA', '1', memory),
        ]
        for setting, value, refused in settings:
            for minimum in both:
                conflict = minimum in refused
                with self.subTest(setting=setting, value=value,
                                  minimum=minimum):
                    # Both at once.
                    flavor = self._flavor()
                    specs = {setting: value, minimum: SCOPED[minimum]}
                    if conflict:
                        self._assert_refused(flavor, 'POST', specs,
                                             minimum, setting)
                    else:
                        self._assert_stored(flavor, 'POST', specs)
                    # The minimum added to a flavor with the setting.
                    flavor = self._flavor({setting: value})
                    added = {minimum: SCOPED[minimum]}
                    if conflict:
                        self._assert_refused(flavor, 'PUT', added,
                                             minimum, setting)
                    else:
                        self._assert_stored(flavor, 'PUT', added)
                    # The setting added to a flavor with the minimum.
                    flavor = self._flavor(added)
                    for method in ('POST', 'PUT'):
                        if conflict:
                            self._assert_refused(flavor, method,
                                                 {setting: value},
                                                 minimum, setting)
                    if not conflict:
                        self._assert_stored(flavor, 'PUT', {setting: value})

        # Named as the brief states them: hw:cpu_policy names the setting
        # and its value.
        flavor = self._flavor()
        self._assert_refused(
            flavor, 'POST', {'hw:cpu_policy': 'dedicated',
                             'xloud:minimum_cpu': '2'},
            'hw:cpu_policy=dedicated')
        # Settings that do not conflict are stored next to a minimum, at
        # every microversion.
        flavor = self._flavor(SCOPED)
        for microversion in ('2.86', None):
            self._assert_stored(flavor, 'POST', {'hw:cpu_policy': 'shared',
                                                 'hw:cpu_realtime': 'no'},
                                microversion=microversion)
        # The legacy spelling is judged the same way.
        flavor = self._flavor({'minimum_cpu': '2'})
        self._assert_refused(flavor, 'PUT', {'hw:cpu_policy': 'dedicated'},
                             'minimum_cpu', 'hw:cpu_policy')
        # A conflict is refused at the default microversion as well.
        flavor = self._flavor(SCOPED)
        self._assert_refused(flavor, 'POST', {'hw:numa_nodes': '1'},
                             'hw:numa_nodes', microversion=None)


class NonElasticInstancesTest(_FlavorsTestBase):
    """Instances whose flavor, image or devices make a dimension
    non-elastic: adjusting it is a 409 naming the reason, and they run at
    the flavor's size in it."""

    def test_numa_topology(self) -> None:
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        self.start_compute('compute1', host_info=fakelibvirt.HostInfo(
            cpu_nodes=2, cpu_sockets=1, cpu_cores=2, cpu_threads=2,
            kB_mem=16 * 1024 * 1024))
        numa = self._create_flavor(vcpu=4, memory_mb=4096,
                                   extra_spec={'hw:numa_nodes': '1'})
        # A flavor that got its minimums before the API refused them next
        # to a NUMA topology (a seed flavor whose keys were rewritten in
        # the database).
        pages = self._create_flavor(vcpu=4, memory_mb=4096,
                                    extra_spec={'hw:mem_page_size': 'small'})
        self._write_specs_behind_the_api(pages, SCOPED)
        # An elastic flavor, and an image asking for a NUMA topology.
        elastic = self._create_flavor(vcpu=4, memory_mb=4096,
                                      extra_spec=SCOPED)
        image = self._create_image({'hw_numa_nodes': '1'})

        cases = [
            ('hw:numa_nodes', numa, None),
            ('hw:mem_page_size=small', pages, None),
            ('hw_numa_nodes', elastic, image['id']),
        ]
        for reason, flavor, image_id in cases:
            with self.subTest(reason):
                server = self._create_server(flavor_id=flavor,
                                             image_uuid=image_id,
                                             networks='none')
                instance = self._full_instance(server['id'])
                self.assertIsNotNone(instance.numa_topology)
                self.assertEqual(1, len(instance.numa_topology.cells))
                self._runs_at_flavor_size(server, 4, 4096)
                self.assertEqual((4, 4096),
                                 self._placement_size(server['id']))
                for size in ({'vcpus': 2}, {'memory_mb': 2048},
                             {'vcpus': 3, 'memory_mb': 4096}):
                    message = self._assert_refused(server['id'], 409,
                                                   **size)
                    self.assertIn(reason, message)
                    self.assertIn('NUMA topology', message)
                self._runs_at_flavor_size(server, 4, 4096)

    def test_image_numa_on_elastic_flavor_claims_the_flavor_size(
            self) -> None:
        # The flavor claims its minimum at boot (resources:*), as
        # doc/placement.md tells operators to; the image makes the
        # instance non-elastic, so it boots at the flavor's size, and
        # placement must hold what the domain starts with.
        self.start_compute('compute1')
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec=dict(SCOPED, **{'resources:VCPU': '2',
                                       'resources:MEMORY_MB': '2048'}))
        image = self._create_image({'hw_numa_nodes': '1'})
        server = self._create_server(flavor_id=flavor, image_uuid=image['id'],
                                     networks='none')
        self._runs_at_flavor_size(server, 4, 4096)
        message = self._assert_refused(server['id'], 409, vcpus=3)
        self.assertIn('hw_numa_nodes', message)
        self.assertEqual((4, 4096), self._placement_size(server['id']))

    def test_pinned_vcpus(self) -> None:
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        self.flags(cpu_dedicated_set='0-7', cpu_shared_set=None,
                   group='compute')
        self.flags(vcpu_pin_set=None)
        self.start_compute('compute1', host_info=fakelibvirt.HostInfo(
            cpu_nodes=1, cpu_sockets=1, cpu_cores=4, cpu_threads=2))
        flavor = self._create_flavor(vcpu=4, memory_mb=2048,
                                     extra_spec={'hw:cpu_policy':
                                                 'dedicated'})
        server = self._create_server(flavor_id=flavor, networks='none')
        allocation = self._get_allocations_by_server_uuid(server['id'])[
            self.compute_rp_uuids['compute1']]['resources']
        self.assertEqual(4, allocation['PCPU'])
        self.assertNotIn('VCPU', allocation)
        self._runs_at_flavor_size(server, 4, 2048)
        pins = self._domain_xml(server).findall('./cputune/vcpupin')
        self.assertEqual(4, len(pins))

        for size in ({'vcpus': 2}, {'vcpus': 1}, {'memory_mb': 1024}):
            message = self._assert_refused(server['id'], 409, **size)
            self.assertIn('hw:cpu_policy=dedicated', message)
        self._runs_at_flavor_size(server, 4, 2048)

    def test_pci_device_keeps_memory_not_vcpus(self) -> None:
        self.flags(device_spec=PCI_DEVICE_SPEC, alias=PCI_ALIAS, group='pci')
        self.start_compute('compute1', pci_info=fakelibvirt.HostPCIDevicesInfo(
            num_pci=1, num_pfs=0, num_vfs=0))
        # A vCPU minimum is fine next to a PCI device; memory is not.
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'pci_passthrough:alias': f'{PCI_ALIAS_NAME}:1',
                        'xloud:minimum_cpu': '2'})
        server = self._create_server(flavor_id=flavor, networks='none')
        instance = self._full_instance(server['id'])
        self.assertEqual(1, len(instance.pci_requests.requests))
        self.assertEqual(1, len(self._domain_xml(server).findall(
            './devices/hostdev')))
        self._assert_sizes({'booted': (server['id'], (2, 4096), (2, 4096),
                                       None)})

        for size in ({'memory_mb': 2048}, {'vcpus': 3, 'memory_mb': 3072}):
            message = self._assert_refused(server['id'], 409, **size)
            self.assertIn('pci_passthrough:alias', message)
        self._adjust_through_api(server['id'], vcpus=4)
        self._assert_sizes({'grown': (server['id'], (4, 4096), (4, 4096),
                                      None)})


class QuotaTest(_FlavorsTestBase):
    """7 cores; flavors of 4 vCPUs claiming their 2-vCPU minimum at boot."""

    def setUp(self) -> None:
        super().setUp()
        self.flags(cores=7, group='quota')
        self.start_compute('compute1')
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=2048,
            extra_spec={'xloud:minimum_cpu': '2', 'resources:VCPU': '2'})

    def _cores_in_use(self) -> int:
        return self.api.get_quota_detail()['cores']['in_use']

    def test_usage_from_placement(self) -> None:
        self.flags(count_usage_from_placement=True, group='quota')
        # Boots are checked at the flavor's size (0 + 4, 2 + 4 <= 7) and
        # count what placement holds.
        first = self._create_server(flavor_id=self.flavor, networks='none')
        second = self._create_server(flavor_id=self.flavor, networks='none')
        self.assertEqual(4, self._cores_in_use())

        self._adjust_through_api(first['id'], vcpus=4)
        self._assert_sizes({'first': (first['id'], (4, 2048), (4, 2048),
                                      None),
                            'second': (second['id'], (2, 2048), (2, 2048),
                                       None)})
        self.assertEqual(6, self._cores_in_use())

        message = self._assert_refused(second['id'], 403, vcpus=4)
        self.assertEqual('Quota exceeded for cores: Requested 2, but already '
                         'used 6 of 7 cores', message)
        self._assert_sizes({'second': (second['id'], (2, 2048), (2, 2048),
                                       None)})
        self.assertEqual(6, self._cores_in_use())
        # What fits is still taken.
        self._adjust_through_api(second['id'], vcpus=3)
        self.assertEqual(7, self._cores_in_use())

    def test_usage_from_the_database(self) -> None:
        self.flags(count_usage_from_placement=False, group='quota')
        # The flavor's size is counted from the boot on: one server fits.
        first = self._create_server(flavor_id=self.flavor, networks='none')
        self.assertEqual(4, self._cores_in_use())
        error = self.assertRaises(
            api_client.OpenStackApiException, self._create_server,
            flavor_id=self.flavor, networks='none')
        self.assertEqual(403, error.response.status_code)
        self.assertIn('Quota exceeded for cores: Requested 4, but already '
                      'used 4 of 7 cores', str(error))

        # A grow within the flavor is within what is already counted, even
        # with the quota down to the usage.
        self.flags(cores=4, group='quota')
        self._adjust_through_api(first['id'], vcpus=4)
        self._assert_sizes({'first': (first['id'], (4, 2048), (4, 2048),
                                      None)})
        self.assertEqual(4, self._cores_in_use())


class FloorsTest(_FlavorsTestBase):
    """Flavors without minimums, and the legacy spelling of them."""

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')

    def test_without_minimum(self) -> None:
        plain = self._create_flavor(vcpu=4, memory_mb=4096)
        # Shrinking is allowed before the guest starts, so that its domain
        # is generated to be shrunk (libvirt unplugs only vCPUs marked
        # hot-pluggable when the domain started); it boots at the
        # flavor's size, as with stock Nova.
        self.flags(allow_shrink_without_minimum=True, vcpu_floor=2,
                   group='xloud')
        server = self._create_server(flavor_id=plain, networks='none')
        self._assert_sizes({'booted': (server['id'], (4, 4096), (4, 4096),
                                       None)})

        # Without the option the flavor is not elastic.
        self.flags(allow_shrink_without_minimum=False, group='xloud')
        for size in ({'vcpus': 3}, {'memory_mb': 2048},
                     {'vcpus': 4, 'memory_mb': 4095}):
            message = self._assert_refused(server['id'], 400, **size)
            self.assertIn('allow_shrink_without_minimum', message)

        # With it, down to the floors.
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        message = self._assert_refused(server['id'], 400, vcpus=1)
        self.assertIn('vcpu_floor', message)
        for memory_mb in (255, 128):
            message = self._assert_refused(server['id'], 400,
                                           memory_mb=memory_mb)
            self.assertIn('memory_floor_mb', message)
        self._adjust_through_api(server['id'], vcpus=2, memory_mb=256)
        self._assert_sizes({'shrunk': (server['id'], (2, 256), (2, 256),
                                       None)})


class LegacyKeysTest(_FlavorsTestBase):
    """The seed's unscoped keys on a deployment that runs Nova's default
    filters (where they boot at all): still the boot size and the floor."""

    EXTRA_FILTERS = []

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')

    def test_legacy_keys_still_govern(self) -> None:
        flavor = self._create_flavor(vcpu=4, memory_mb=4096,
                                     extra_spec=LEGACY)
        server = self._create_server(flavor_id=flavor, networks='none')
        self._assert_sizes({'booted': (server['id'], (2, 2048), (2, 2048),
                                       None)})
        # The floor holds even where the flag would let others shrink.
        self.flags(allow_shrink_without_minimum=True, group='xloud')
        message = self._assert_refused(server['id'], 400, vcpus=1)
        self.assertIn('minimum_cpu 2', message)
        message = self._assert_refused(server['id'], 400, memory_mb=2047)
        self.assertIn('minimum_memory 2048', message)
        self._adjust_through_api(server['id'], vcpus=3, memory_mb=3072)
        self._assert_sizes({'grown': (server['id'], (3, 3072), (3, 3072),
                                      None)})
        self._adjust_through_api(server['id'], vcpus=2, memory_mb=2048)
        self._assert_sizes({'back': (server['id'], (2, 2048), (2, 2048),
                                     None)})

    def test_scoped_key_wins_over_legacy(self) -> None:
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec=dict(LEGACY, **{'xloud:minimum_cpu': '3',
                                       'xloud:minimum_memory': '3072'}))
        server = self._create_server(flavor_id=flavor, networks='none')
        self._assert_sizes({'booted': (server['id'], (3, 3072), (3, 3072),
                                       None)})
        message = self._assert_refused(server['id'], 400, vcpus=2)
        self.assertIn('xloud:minimum_cpu 3', message)
        message = self._assert_refused(server['id'], 400, memory_mb=2048)
        self.assertIn('xloud:minimum_memory 3072', message)
