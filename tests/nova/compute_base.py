"""Nova's libvirt functional harness running the elastic compute driver.

Compute hosts load ``compute_driver = xloud.XloudLibvirtDriver`` through
the ``nova.virt.xloud`` shim, exactly as operators configure it, on Nova's
fake libvirt extended by :mod:`tests.nova.fakelibvirt`. Adjustments are
sent the way the API sends them: an ``xloud-adjust`` instance action
started for the request, then ``nova_ext.rpcapi`` over Nova's RPC.
"""

import datetime
import os
import threading
import time
import urllib.parse

import fixtures
from lxml import etree
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base
from nova.virt.libvirt import utils as libvirt_utils
from oslo_serialization import jsonutils
from oslo_utils import timeutils

from nova_ext import rpcapi, sizing
from tests.nova import base as api_base
from tests.nova.fakelibvirt import ElasticLibvirtFixture

ACTION = 'xloud-adjust'
EVENT = 'compute_xloud_adjust'
MIB = 1024


class ElasticComputeMixin:
    """Runs compute hosts with XloudLibvirtDriver on the elastic fake."""

    def setUp(self) -> None:
        super().setUp()
        self.elastic_libvirt = self.useFixture(ElasticLibvirtFixture())

    def _setup_compute_service(self) -> None:
        self.flags(compute_driver='xloud.XloudLibvirtDriver')

    def _connection(self, hostname: str):
        return self.computes[hostname].driver._host.get_connection()

    def _domain(self, server: dict):
        return self._connection(server['OS-EXT-SRV-ATTR:host']) \
            .lookupByUUIDString(server['id'])

    def _domain_xml(self, server: dict, flags: int = 0) -> etree._Element:
        return etree.fromstring(self._domain(server).XMLDesc(flags))

    def _domain_size(self, server: dict,
                     flags: int = 0) -> tuple[int, int]:
        """vCPUs and MiB the domain runs at (or is defined with)."""
        xml = self._domain_xml(server, flags)
        vcpu = xml.find('vcpu')
        return (int(vcpu.get('current', vcpu.text)),
                int(xml.find('currentMemory').text) // MIB)

    def _instance(self, server_id: str) -> objects.Instance:
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['flavor',
                                                  'system_metadata'])

    def _elastic_size(self, server_id: str) -> sizing.ElasticSize:
        return sizing.ElasticSize.from_instance(self._instance(server_id))

    def _send_adjust(self, server: dict, vcpus: int | None = None,
                     memory_mb: int | None = None,
                     persist: bool = True) -> str:
        """Hand the adjustment over as the API does; the request id.

        The instance enters the adjustment's task state, the action is
        started, and the compute host takes the request (start_adjust).
        """
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(
            ctxt, server['id'])
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, server['id'],
                expected_attrs=['flavor', 'system_metadata'])
            instance.task_state = sizing.ADJUSTING_TASK_STATE
            instance.save(expected_task_state=[None])
            objects.InstanceAction.action_start(
                cctxt, instance.uuid, ACTION, want_result=False)
            rpcapi.ElasticSizingAPI().start_adjust(
                cctxt, instance, vcpus, memory_mb, persist,
                not_after=timeutils.utcnow() + datetime.timedelta(
                    seconds=60), timeout=60)
        return ctxt.request_id

    def _adjust(self, server: dict, vcpus: int | None = None,
                memory_mb: int | None = None, persist: bool = True,
                result: str = 'Success') -> dict:
        """Adjust and wait for the event; the event as the API shows it."""
        request_id = self._send_adjust(server, vcpus, memory_mb, persist)
        return self._wait_for_adjust_event(server, request_id, result)

    def _wait_for_adjust_event(self, server: dict, request_id: str,
                               result: str) -> dict:
        for _attempt in range(100):
            action = self.api.api_get(
                f'/servers/{server["id"]}/os-instance-actions/'
                f'{request_id}').body['instanceAction']
            events = [e for e in action['events'] if e['event'] == EVENT]
            if events and events[0]['finish_time']:
                self.assertEqual(result, events[0]['result'], events[0])
                return events[0]
            time.sleep(0.05)
        self.fail(f'event {EVENT} of {request_id} did not finish')

    def _wait_for_statistics(self, server_id: str,
                             timeout: float = 10.0) -> None:
        """Until the guest's balloon driver has sent statistics since now:
        QEMU asks for them once a period ([libvirt]
        mem_stats_period_seconds, which a test that waits sets short)."""
        host = self._instance(server_id).host
        domain = self._connection(host).lookupByUUIDString(server_id)
        since = time.time()
        deadline = since + timeout
        while domain.memoryStats().get('last_update', 0) <= since:
            if time.time() > deadline:
                self.fail(f'no balloon statistics from {server_id} within '
                          f'{timeout} s')
            time.sleep(0.1)

    def _placement_size(self, server_id: str) -> tuple[int, int]:
        """VCPU and MEMORY_MB the server holds on its compute node."""
        allocations = self._get_allocations_by_server_uuid(server_id)
        host = self._instance(server_id).host
        resources = allocations[self.compute_rp_uuids[host]]['resources']
        return resources['VCPU'], resources['MEMORY_MB']


class ElasticMigrationMixin(base.LibvirtMigrationMixin):
    """Live migration as libvirt's QEMU driver carries it out.

    Nova's own stub creates the destination domain transient; Nova asks
    for ``VIR_MIGRATE_PERSIST_DEST`` with ``persistent_xml``, so libvirt
    defines it there from that XML, and the guest arrives as it ran: the
    vCPUs and the balloon it had on the source.
    """

    def _migrate_stub(self, domain, destination, params, flags):
        conn = self.dest.driver._host.get_connection()
        if flags & fakelibvirt.VIR_MIGRATE_PERSIST_DEST:
            migrated = conn.defineXML(params['persistent_xml'])
            migrated.createWithFlags(0)
        else:
            migrated = conn.createXML(params['destination_xml'], 0)
        # What QEMU carries over: the running guest's state.
        migrated._live = dict(domain._live)
        domain.complete_job()
        self.migrate_stub_ran = True


class ElasticComputeTestBase(ElasticComputeMixin, base.ServersTestBase):
    """The compute side alone, driven as the API drives it."""

    ADMIN_API = True
    microversion = '2.84'

    def setUp(self) -> None:
        # Nova's own pipeline, without the API filter: these tests send
        # what the API would send themselves.
        self.flags(api_paste_config=api_base.nova_sample_paste_config(),
                   group='wsgi')
        super().setUp()


INACTIVE = 2  # VIR_DOMAIN_XML_INACTIVE: the persistent definition
GATE_TIMEOUT = 30  # seconds a held operation waits to be released
VCPU_LIVE = 1  # VIR_DOMAIN_VCPU_LIVE


class ElasticAPIComputeTestBase(ElasticComputeMixin,
                                api_base.ElasticServersTestBase):
    """Compute hosts on XloudLibvirtDriver, adjusted through the API.

    Every adjustment is a ``POST /os-xloud-adjust``, its outcome the
    ``compute_xloud_adjust`` event of the action that request started, so
    these tests do not depend on how nova-api hands it to the host. Sizes
    are compared as libvirt, the instance's record and placement each
    report them.
    """

    ADMIN_API = True
    microversion = '2.84'

    def _create_elastic_flavor(self, vcpus: int = 4, memory_mb: int = 4096,
                               minimum_cpu: int = 2,
                               minimum_memory: int = 2048) -> str:
        return self._create_flavor(
            vcpu=vcpus, memory_mb=memory_mb,
            extra_spec={'minimum_cpu': str(minimum_cpu),
                        'minimum_memory': str(minimum_memory)})

    def _request_adjust(self, server_id: str, vcpus: int | None = None,
                        memory_mb: int | None = None,
                        persist: bool = True):
        """POST /os-xloud-adjust/{server_id}; the raw response."""
        body = {'persist': persist}
        if vcpus is not None:
            body['current_vcpus'] = vcpus
        if memory_mb is not None:
            body['current_memory_mb'] = memory_mb
        return self.api.api_request(
            f'/os-xloud-adjust/{server_id}', method='POST',
            body=jsonutils.dumps(body),
            headers={'Content-Type': 'application/json'})

    def _request_server_action(self, server_id: str, action: dict):
        """POST /servers/{server_id}/action; the raw response."""
        return self.api.api_request(
            f'/servers/{server_id}/action', method='POST',
            body=jsonutils.dumps(action),
            headers={'Content-Type': 'application/json'})

    def _adjust_through_api(self, server_id: str, vcpus: int | None = None,
                            memory_mb: int | None = None,
                            persist: bool = True,
                            result: str = 'Success') -> dict:
        """Adjust, wait until it is over; the event as the API shows it."""
        resp = self._request_adjust(server_id, vcpus, memory_mb, persist)
        self.assertEqual(202, resp.status_code, resp.text)
        return self._wait_for_adjustment(
            server_id, resp.json()['adjustment']['request_id'], result)

    def _wait_for_adjustment(self, server_id: str, request_id: str,
                             result: str | None = 'Success',
                             timeout: float = 20.0) -> dict:
        """The adjustment's event, once it finished and the server is free
        for the next operation (its task_state back to None); ``result``
        None: whatever the outcome."""
        deadline = time.monotonic() + timeout
        while True:
            action = self.api.api_get(
                f'/servers/{server_id}/os-instance-actions/'
                f'{request_id}').body['instanceAction']
            events = [e for e in action['events']
                      if e['event'] == EVENT and e['finish_time']]
            task_state = self.api.get_server(server_id)[
                'OS-EXT-STS:task_state']
            if events and task_state is None:
                if result is not None:
                    self.assertEqual(result, events[0]['result'], events[0])
                return events[0]
            if time.monotonic() > deadline:
                self.fail(f'adjustment {request_id} of {server_id} did not '
                          f'end within {timeout}s: events '
                          f'{action["events"]}, task_state {task_state}')
            time.sleep(0.05)

    def _observed_sizes(self, server_id: str) -> dict:
        """The instance's size as libvirt, its record and placement say."""
        server = self.api.get_server(server_id)
        host = server['OS-EXT-SRV-ATTR:host']
        observed = {'host': host}
        domain = self._connection(host).lookupByUUIDString(server_id)
        if domain.isActive():
            vcpus, memory_mb = self._domain_size(server)
            observed['domain'] = (vcpus, memory_mb)
            # libvirt's other reports of the same running guest.
            observed['domain vcpusFlags/info'] = (
                domain.vcpusFlags(VCPU_LIVE), domain.info()[2] // MIB)
        else:
            observed['domain'] = 'not running'
        observed['definition'] = self._domain_size(server, INACTIVE)
        size = self._elastic_size(server_id)
        observed['record live'] = (size.live_vcpus, size.live_memory_mb)
        observed['record boot'] = (size.boot_vcpus, size.boot_memory_mb)
        allocations = self._get_allocations_by_server_uuid(server_id)
        hosts = {rp: name for name, rp in self.compute_rp_uuids.items()}
        observed['providers'] = sorted(hosts.get(rp, rp)
                                       for rp in allocations)
        resources = allocations.get(self.compute_rp_uuids.get(host), {}).get(
            'resources', {})
        observed['placement'] = (resources.get('VCPU'),
                                 resources.get('MEMORY_MB'))
        return observed

    @staticmethod
    def _size_mismatches(observed: dict, live: tuple[int, int] | None,
                         boot: tuple[int, int],
                         providers: list[str] | None = None) -> list[str]:
        """What in ``observed`` differs from the expected sizes.

        ``live`` None: only that domain, record and placement agree.
        """
        expected = {'definition': boot, 'record boot': boot,
                    'providers': sorted(providers or [observed['host']])}
        running = observed['domain']
        if running == 'not running':
            return ['the domain is not running']
        live = live or running
        for key in ('domain', 'domain vcpusFlags/info', 'record live',
                    'placement'):
            expected[key] = live
        return [f'{key} {observed[key]} != {value}'
                for key, value in expected.items() if observed[key] != value]

    def _assert_sizes(self, expectations: dict, timeout: float = 3.0) -> None:
        """Every instance runs at its expected size, as all of libvirt, its
        record and placement report.

        ``expectations``: ``{label: (server_id, live, boot, providers)}``
        (see ``_size_mismatches``). Memory the guest still has to give back
        is confirmed in the background: the sizes are polled until they
        agree or ``timeout`` passes, then every mismatch is reported.
        """
        deadline = time.monotonic() + timeout
        while True:
            failures = []
            for label, (server_id, live, boot, providers) in (
                    expectations.items()):
                observed = self._observed_sizes(server_id)
                mismatches = self._size_mismatches(observed, live, boot,
                                                   providers)
                if mismatches:
                    failures.append(f'{label}: {"; ".join(mismatches)} '
                                    f'(observed {observed})')
            if not failures:
                return
            if time.monotonic() > deadline:
                self.fail('\n'.join(failures))
            time.sleep(0.1)

    def _provider_capacity(self, hostname: str) -> dict[str, int]:
        """What placement lets allocations reach on the host's provider."""
        rp_uuid = self.compute_rp_uuids[hostname]
        inventories = self.placement.get(
            f'/resource_providers/{rp_uuid}/inventories',
            version='1.26').body['inventories']
        return {rc: int((inv['total'] - inv['reserved']) *
                        inv['allocation_ratio'])
                for rc, inv in inventories.items()}

    def _provider_usage(self, hostname: str) -> dict[str, int]:
        rp_uuid = self.compute_rp_uuids[hostname]
        return self.placement.get(
            f'/resource_providers/{rp_uuid}/usages',
            version='1.26').body['usages']

    def _set_provider_capacity(self, hostname: str, resource_class: str,
                               capacity: int) -> None:
        """Leave room for exactly ``capacity`` of ``resource_class``."""
        rp_uuid = self.compute_rp_uuids[hostname]
        url = (f'/resource_providers/{rp_uuid}/inventories/'
               f'{resource_class}')
        inventory = self.placement.get(url, version='1.26').body
        inventory.update(reserved=inventory['total'] - capacity,
                         allocation_ratio=1.0)
        self.placement.put(url, inventory, version='1.26')


class NovaOperationStubs(fixtures.Fixture):
    """What Nova's own libvirt functional tests stub for its operations to
    run on the fake, with gates to hold a migration in flight.

    * cold migration / resize: ``migrate_disk_and_power_off`` (no disks to
      copy), held while ``cold_migration_released`` is clear;
    * rescue: the image cache's utime and the instance directory that
      ``_create_image`` (mocked by the harness) would have made;
    * live migration as libvirt carries it out: Nova asks for
      ``VIR_MIGRATE_PERSIST_DEST`` with ``persistent_xml`` and
      ``VIR_MIGRATE_UNDEFINE_SOURCE``, so the guest arrives in a persistent
      domain, running as it ran (vCPUs, balloon, guest behaviour), and
      leaves no definition behind; held while ``live_migration_released``
      is clear. Works between any two hosts of ``test.computes``.
    """

    def __init__(self, test) -> None:
        super().__init__()
        self.test = test
        self.cold_migration_started = threading.Event()
        self.cold_migration_released = threading.Event()
        self.cold_migration_released.set()
        self.live_migration_started = threading.Event()
        self.live_migration_released = threading.Event()
        self.live_migration_released.set()

    def _setUp(self) -> None:
        # Nothing stays held once the test is over.
        self.addCleanup(self.cold_migration_released.set)
        self.addCleanup(self.live_migration_released.set)
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver'
            '.migrate_disk_and_power_off',
            side_effect=self._migrate_disk_and_power_off))
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.imagebackend._update_utime_ignore_eacces'))
        instance_path = libvirt_utils.get_instance_path

        def existing_instance_path(instance, relative=False):
            path = instance_path(instance, relative=relative)
            if not relative:
                os.makedirs(path, exist_ok=True)
            return path

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.utils.get_instance_path',
            existing_instance_path))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.Domain.migrateToURI3',
            self._migrate_to_uri3))

    def _wait(self, started: threading.Event,
              released: threading.Event) -> None:
        started.set()
        if not released.wait(GATE_TIMEOUT):
            raise AssertionError(f'not released within {GATE_TIMEOUT}s')

    def _migrate_disk_and_power_off(self, *args, **kwargs) -> str:
        self._wait(self.cold_migration_started, self.cold_migration_released)
        return '{}'

    def _migrate_to_uri3(self, domain, dconnuri, params, flags) -> None:
        try:
            self._migrate(domain, dconnuri, params, flags)
        except Exception:
            # Nova's migration monitor waits for the job; a broken stub
            # must end it, not leave it running for the completion timeout.
            domain.fail_job()
            raise

    def _migrate(self, domain, dconnuri, params, flags) -> None:
        self._wait(self.live_migration_started, self.live_migration_released)
        assert flags & fakelibvirt.VIR_MIGRATE_PERSIST_DEST, flags
        hostname = urllib.parse.urlparse(dconnuri).hostname
        destination = self.test.computes[hostname].driver._host \
            .get_connection()
        migrated = destination.defineXML(params['persistent_xml'])
        migrated.createWithFlags(0)
        domain._live_memory()
        migrated._live = dict(domain._live)
        migrated.behaviour = domain.behaviour
        domain.complete_job()
        domain.destroy()
        if flags & fakelibvirt.VIR_MIGRATE_UNDEFINE_SOURCE:
            domain.undefine()
