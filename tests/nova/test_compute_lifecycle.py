"""Every path that (re)starts or redefines the domain keeps the size.

Each test runs one of Nova's operations on three guests of the same
elastic flavor (4 vCPUs / 4096 MiB, minimum 2 / 2048), each brought to its
size through the API first:

* ``persisted``: adjusted to 3 / 3072 with persist=true;
* ``not persisted grow``: that, then 4 / 4096 with persist=false;
* ``not persisted shrink``: 4 / 4096 persisted, then 2 / 2048 with
  persist=false: a regeneration needs more than is allocated.

After the operation libvirt (the running domain and its persistent
definition), the instance's record and placement must agree: the record's
live size is the domain's, its boot size the definition's, placement holds
the live size on the instance's host and nowhere else (but where Nova keeps
a share itself: an evacuation's source until it comes back). The fake's
balloon reaches its target at once for a guest with a balloon driver, so
the memory confirmed in the background settles within moments.
"""

import dataclasses
import time

import fixtures
from nova import context as nova_context
from nova import objects
from nova.tests.fixtures import libvirt as nova_fakelibvirt

from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake

IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6'  # GlanceFixture.image1
REBUILD_IMAGE = '76fa36fc-c930-4bf3-8c8a-ea2a2420deb6'  # image3
FLAVOR_SIZE = (2, 2048)  # the flavor's minimum: what a new guest boots at
RESIZED_MINIMUM = (3, 2560)  # the minimum of the flavor resized to


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    # (vcpus, memory_mb, persist), applied in order.
    adjustments: tuple[tuple[int, int, bool], ...]
    boot: tuple[int, int]
    live: tuple[int, int]


VARIANTS = (
    Variant('persisted', ((3, 3072, True),), boot=(3, 3072),
            live=(3, 3072)),
    Variant('not persisted grow', ((3, 3072, True), (4, 4096, False)),
            boot=(3, 3072), live=(4, 4096)),
    Variant('not persisted shrink', ((4, 4096, True), (2, 2048, False)),
            boot=(4, 4096), live=(2, 2048)),
)


class ManagedSaveImages(fixtures.Fixture):
    """libvirt's managed save image, which Nova's fake does not keep.

    ``virDomainManagedSave`` writes the guest's state to disk; the next
    start of the domain (Nova's resume redefines it first) restores that
    state, the running size included, instead of booting the definition.
    """

    def _setUp(self) -> None:
        saved = {}
        domain_class = elastic_fake.ElasticDomain
        save = domain_class.managedSave
        start = domain_class.createWithFlags
        remove = domain_class.managedSaveRemove

        def key(domain):
            return id(domain._connection), domain.UUIDString()

        def managed_save(domain, flags):
            domain._live_memory()  # the balloon where it stands now
            state = dict(domain._live)
            save(domain, flags)
            saved[key(domain)] = state

        def create_with_flags(domain, flags):
            start(domain, flags)
            state = saved.pop(key(domain), None)
            if state is not None:
                domain._live = state

        def managed_save_remove(domain, flags):
            saved.pop(key(domain), None)
            return remove(domain, flags)

        for name, method in (('managedSave', managed_save),
                             ('createWithFlags', create_with_flags),
                             ('managedSaveRemove', managed_save_remove)):
            self.useFixture(fixtures.MonkeyPatch(
                f'{domain_class.__module__}.ElasticDomain.{name}', method))


class LifecycleTestBase(compute_base.ElasticAPIComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(compute_base.NovaOperationStubs(self))
        self.useFixture(ManagedSaveImages())
        self.failures = []
        self.steps_run = 0
        self.addCleanup(self._report_failures)
        self.start_compute('compute1')
        self.flavor = self._create_elastic_flavor()

    def _boot(self, count: int, host: str = 'compute1') -> list[str]:
        """``count`` servers of the elastic flavor on ``host``."""
        servers = [
            self.api.post_server({'server': self._build_server(
                image_uuid=IMAGE, flavor_id=self.flavor, networks='none',
                host=host)})
            for _ in range(count)]
        return [self._wait_for_state_change(server, 'ACTIVE')['id']
                for server in servers]

    def _boot_variants(self) -> dict[Variant, str]:
        """A server per variant, at that variant's size."""
        servers = dict(zip(VARIANTS, self._boot(len(VARIANTS)),
                           strict=True))
        self._assert_sizes({
            f'spawn, {variant.name}': (server_id, FLAVOR_SIZE, FLAVOR_SIZE,
                                       None)
            for variant, server_id in servers.items()})
        self._set_variant_sizes(servers)
        self._assert_variants(servers, 'adjusted', at_live_size)
        return servers

    def _set_variant_sizes(self, servers: dict[Variant, str]) -> None:
        """Bring each server to its variant's size, through the API."""
        for step in range(max(len(v.adjustments) for v in VARIANTS)):
            requests = {}
            for variant, server_id in servers.items():
                if step < len(variant.adjustments):
                    vcpus, memory_mb, persist = variant.adjustments[step]
                    resp = self._request_adjust(server_id, vcpus, memory_mb,
                                                persist)
                    self.assertEqual(202, resp.status_code, resp.text)
                    requests[server_id] = resp.json()['adjustment'][
                        'request_id']
            for server_id, request_id in requests.items():
                self._wait_for_adjustment(server_id, request_id)
            self._adjusted(list(requests))

    def _adjusted(self, server_ids: list[str]) -> None:
        """Between two rounds of adjustments: nothing to wait for here."""

    def _assert_variants(self, servers: dict[Variant, str], operation: str,
                         live, boot=None, providers=None) -> None:
        """After ``operation`` each variant's server runs at ``live(v)``
        (None: whatever libvirt, record and placement agree on) with boot
        size ``boot(v)`` (the variant's own by default)."""
        self._assert_sizes({
            f'{operation}, {variant.name}': (
                server_id, live(variant) if live else None,
                boot(variant) if boot else variant.boot, providers)
            for variant, server_id in servers.items()})

    def _check_variants(self, servers: dict[Variant, str], operation: str,
                        live, boot=None, providers=None) -> None:
        """_assert_variants, the failure kept for the end of the test (the
        operation in progress goes on)."""
        try:
            self._assert_variants(servers, operation, live, boot, providers)
        except AssertionError as e:
            self.failures.append(str(e))

    def _step(self, servers: dict[Variant, str], operation: str, run,
              live, boot=None, providers=None) -> None:
        """Run ``operation`` on servers at their variant's size (brought
        back to it after a previous step), then check the sizes.

        A failed check is kept for the end of the test, so that one test
        reports every operation that does not keep the size.
        """
        if self.steps_run:
            self._set_variant_sizes(servers)
            self._assert_variants(servers, f'adjusted before {operation}',
                                  at_live_size)
        self.steps_run += 1
        try:
            run()
            self._assert_variants(servers, operation, live, boot, providers)
        except AssertionError as e:
            self.failures.append(str(e))

    def _report_failures(self) -> None:
        failures, self.failures = self.failures, []
        if failures:
            self.fail('\n\n'.join(failures))

    def _act(self, servers: dict[Variant, str], action: dict,
             status: str) -> None:
        """The same server action on every server; wait for ``status``."""
        for server_id in servers.values():
            resp = self._request_server_action(server_id, action)
            self.assertIn(resp.status_code, (200, 202, 204), resp.text)
        self._wait_for_task_end(servers, status)

    def _wait_for_task_end(self, servers: dict[Variant, str],
                           status: str) -> None:
        for server_id in servers.values():
            self._wait_for_server_parameter(
                {'id': server_id},
                {'status': status, 'OS-EXT-STS:task_state': None},
                max_retries=20)

    def _wait_for_migrations(self, servers: dict[Variant, str],
                             status: str) -> None:
        for server_id in servers.values():
            self._wait_for_migration_status({'id': server_id}, [status])


def at_boot_size(variant: Variant) -> tuple[int, int]:
    return variant.boot


def at_live_size(variant: Variant) -> tuple[int, int]:
    return variant.live


def at_resized_minimum(variant: Variant) -> tuple[int, int]:
    return RESIZED_MINIMUM


class SameHostTest(LifecycleTestBase):
    """Operations that keep the guest on its host."""

    def test_spawn(self) -> None:
        self._assert_sizes({
            f'spawn {number}': (server_id, FLAVOR_SIZE, FLAVOR_SIZE, None)
            for number, server_id in enumerate(self._boot(3))})

    def test_reboots_and_restarts(self) -> None:
        servers = self._boot_variants()
        self._step(servers, 'hard reboot',
                   lambda: self._act(servers, {'reboot': {'type': 'HARD'}},
                                     'ACTIVE'),
                   at_boot_size)
        # Nova's _soft_reboot shuts the guest down and starts it again
        # from its persistent definition (guest.launch).
        self._step(servers, 'soft reboot',
                   lambda: self._act(servers, {'reboot': {'type': 'SOFT'}},
                                     'ACTIVE'),
                   at_boot_size)
        self._step(servers, 'stop/start',
                   lambda: self._stop_start(servers), at_boot_size)
        self._step(servers, 'host boot resume',
                   lambda: self._host_boot(servers), at_boot_size)
        self._step(servers, 'nova-compute restart',
                   lambda: self.restart_compute_service('compute1'),
                   at_live_size)
        self._step(servers, 'pause/unpause',
                   lambda: (self._act(servers, {'pause': None}, 'PAUSED'),
                            self._act(servers, {'unpause': None},
                                      'ACTIVE')),
                   at_live_size)
        self._step(servers, 'suspend/resume',
                   lambda: (self._act(servers, {'suspend': None},
                                      'SUSPENDED'),
                            self._act(servers, {'resume': None}, 'ACTIVE')),
                   at_live_size)
        self._report_failures()

    def _stop_start(self, servers: dict[Variant, str]) -> None:
        self._act(servers, {'os-stop': None}, 'SHUTOFF')
        for variant, server_id in servers.items():
            server = self.api.get_server(server_id)
            self.assertEqual(
                variant.boot,
                self._domain_size(server, compute_base.INACTIVE),
                f'stopped, {variant.name}: the definition')
        self._act(servers, {'os-start': None}, 'ACTIVE')

    def _host_boot(self, servers: dict[Variant, str]) -> None:
        # The host rebooted: the domains are defined, not running, and
        # nova-compute starts again, finding them shut off while Nova's
        # database says running.
        self.flags(resume_guests_state_on_host_boot=True)
        for server_id in servers.values():
            self._connection('compute1').lookupByUUIDString(
                server_id).destroy()
        self.restart_compute_service('compute1')
        self._wait_for_task_end(servers, 'ACTIVE')
        self.flags(resume_guests_state_on_host_boot=False)

    def test_rebuild_rescue_shelve(self) -> None:
        servers = self._boot_variants()
        self._step(servers, 'rebuild',
                   lambda: self._act(
                       servers, {'rebuild': {'imageRef': REBUILD_IMAGE}},
                       'ACTIVE'),
                   at_boot_size)
        self._step(servers, 'rescue/unrescue',
                   lambda: self._rescue_unrescue(servers), at_boot_size)
        self._step(servers, 'shelve offload/unshelve',
                   lambda: self._shelve_unshelve(servers), at_boot_size)
        self._report_failures()

    def _rescue_unrescue(self, servers: dict[Variant, str]) -> None:
        self._act(servers, {'rescue': {'adminPass': 'MySecretPass'}},
                  'RESCUE')
        # The rescue domain is generated anew, at the boot size.
        self._check_variants(servers, 'rescue', at_boot_size)
        # Unrescue defines and starts again the domain XML Nova kept, read
        # from the guest it had powered off for the rescue: its persistent
        # definition.
        self._act(servers, {'unrescue': None}, 'ACTIVE')

    def _shelve_unshelve(self, servers: dict[Variant, str]) -> None:
        self._act(servers, {'shelve': {}}, 'SHELVED_OFFLOADED')
        for variant, server_id in servers.items():
            self.assertEqual(
                {}, self._get_allocations_by_server_uuid(server_id),
                f'shelved offloaded, {variant.name}: allocations')
        self._act(servers, {'unshelve': None}, 'ACTIVE')


class MoveTest(LifecycleTestBase):
    """Moves to another host: regenerated at the boot size (a resize: the
    new flavor's minimum), or the running guest moved at its live size."""

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute2')

    def test_migrations(self) -> None:
        servers = self._boot_variants()

        def cold_migrate():
            self._act(servers, {'migrate': {'host': 'compute2'}},
                      'VERIFY_RESIZE')
            # The source's share is the migration's until the confirm.
            self._check_variants(servers, 'cold migrated', at_boot_size)
            self._act(servers, {'confirmResize': None}, 'ACTIVE')

        self._step(servers, 'cold migrate + confirm', cold_migrate,
                   at_boot_size, providers=['compute2'])

        def live_migrate():
            for server_id in servers.values():
                resp = self._request_server_action(
                    server_id,
                    {'os-migrateLive': {'host': 'compute1',
                                        'block_migration': 'auto'}})
                self.assertEqual(202, resp.status_code, resp.text)
            self._wait_for_migrations(servers, 'completed')
            self._wait_for_task_end(servers, 'ACTIVE')

        # The running guest moved at its live size; the destination's
        # persistent definition (libvirt writes the migrated live XML)
        # must hold the boot size.
        self._step(servers, 'live migration', live_migrate, at_live_size,
                   providers=['compute1'])

        def evacuate():
            self.computes['compute1'].stop()
            service = self.api.get_services(host='compute1',
                                            binary='nova-compute')[0]
            self.api.put_service_force_down(service['id'], True)
            for server_id in servers.values():
                resp = self._request_server_action(
                    server_id, {'evacuate': {'host': 'compute2'}})
                self.assertEqual(200, resp.status_code, resp.text)
            self._wait_for_migrations(servers, 'done')
            self._wait_for_task_end(servers, 'ACTIVE')
            # Nova keeps the source's share until that host comes back.
            self._check_variants(servers, 'evacuated', at_boot_size,
                                 providers=['compute1', 'compute2'])
            self.restart_compute_service('compute1')

        self._step(servers, 'evacuate, source back', evacuate,
                   at_boot_size, providers=['compute2'])
        self._report_failures()

    def test_resizes(self) -> None:
        servers = self._boot_variants()
        bigger = self._create_elastic_flavor(
            vcpus=6, memory_mb=4608, minimum_cpu=RESIZED_MINIMUM[0],
            minimum_memory=RESIZED_MINIMUM[1])

        def resize_revert():
            self._act(servers, {'resize': {'flavorRef': bigger}},
                      'VERIFY_RESIZE')
            self._check_variants(servers, 'resized', at_resized_minimum,
                                 at_resized_minimum)
            self._act(servers, {'revertResize': None}, 'ACTIVE')
            self._wait_for_migrations(servers, 'reverted')
            self._wait_for_task_end(servers, 'ACTIVE')

        # Back on its old flavor, the guest keeps the boot size it had on
        # it.
        self._step(servers, 'resize + revert', resize_revert, at_boot_size,
                   providers=['compute1'])

        def resize_confirm():
            self._act(servers, {'resize': {'flavorRef': bigger}},
                      'VERIFY_RESIZE')
            self._act(servers, {'confirmResize': None}, 'ACTIVE')

        self._step(servers, 'resize + confirm', resize_confirm,
                   at_resized_minimum, at_resized_minimum,
                   providers=['compute2'])
        self._report_failures()


class RegenerationCapacityTest(compute_base.ElasticAPIComputeTestBase):
    """A regeneration that needs more than is allocated claims it first;
    without room on the host the operation fails, with a clear fault, and
    the domain is not started at the larger size."""

    # Failed operations must end in the compute's fault, not in an API
    # error raised through a cast made a call.
    CAST_AS_CALL = False

    def _fill_host(self, hostname: str, resource_class: str) -> str:
        """A plain guest taking all room left of ``resource_class``."""
        free = (self._provider_capacity(hostname)[resource_class] -
                self._provider_usage(hostname)[resource_class])
        self.assertGreater(free, 0, f'no {resource_class} room to fill')
        size = {'vcpu': 1, 'memory_mb': 512}
        size['vcpu' if resource_class == 'VCPU' else 'memory_mb'] = free
        flavor = self._create_flavor(**size)
        server = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                     networks='none', host=hostname)
        self.assertEqual(
            self._provider_capacity(hostname)[resource_class],
            self._provider_usage(hostname)[resource_class])
        return server['id']

    def _assert_within_capacity(self, hostname: str) -> None:
        """Placement, and the guests libvirt runs, within the host."""
        capacity = self._provider_capacity(hostname)
        usage = self._provider_usage(hostname)
        for resource_class in ('VCPU', 'MEMORY_MB'):
            self.assertLessEqual(usage[resource_class],
                                 capacity[resource_class], resource_class)
        running = [0, 0]
        for domain in self._connection(hostname).listAllDomains(
                nova_fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if domain.isActive():
                running[0] += domain.vcpusFlags(compute_base.VCPU_LIVE)
                running[1] += domain.info()[2] // compute_base.MIB
        self.assertLessEqual(running[0], capacity['VCPU'],
                             'vCPUs the running guests have')
        self.assertLessEqual(running[1], capacity['MEMORY_MB'],
                             'MiB the running guests hold')

    def _latest_fault(self, server_id: str):
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.InstanceFault.get_latest_for_instance(
                cctxt, server_id)

    def _finished_event(self, server_id: str, action: str, event: str,
                        timeout: float = 10.0) -> dict:
        """The event of the newest ``action`` once it finished."""
        deadline = time.monotonic() + timeout
        while True:
            newest = next(a for a in self.api.get_instance_actions(server_id)
                          if a['action'] == action)
            events = [e for e in self.api.get_instance_action_details(
                server_id, newest['request_id'])['events']
                if e['event'] == event and e['finish_time']]
            if events:
                return events[0]
            if time.monotonic() > deadline:
                self.fail(f'{event} of {server_id} did not finish')
            time.sleep(0.1)

    def _assert_refused_for_room(self, server_id: str, action: str,
                                 event: str, size: str,
                                 previous_fault=None) -> None:
        """The action failed on the compute for lack of room, saying so in
        the instance's fault.

        (A hard reboot that fails while the guest still runs keeps the
        instance ACTIVE and its event successful: Nova's own handling,
        "Reboot failed but instance is running"; the fault is recorded.)
        """
        self._finished_event(server_id, action, event)
        fault = self._latest_fault(server_id)
        if previous_fault is not None and fault.id == previous_fault.id:
            fault = None
        if fault is None or 'Not enough room' not in fault.message:
            domain = self._connection('compute1').lookupByUUIDString(
                server_id)
            running = (domain.vcpusFlags(compute_base.VCPU_LIVE),
                       domain.info()[2] // compute_base.MIB
                       ) if domain.isActive() else 'not running'
            self.fail(
                f'{action} without room on the host left no fault saying '
                f'so (fault: {fault and fault.message}): the domain runs '
                f'at {running}, placement holds '
                f'{self._placement_size(server_id)}, the host uses '
                f'{self._provider_usage("compute1")} of '
                f'{self._provider_capacity("compute1")}')
        for text in ('Not enough room on the compute node', server_id, size):
            self.assertIn(text, fault.message)

    def test_reboots_without_room_for_the_boot_vcpus(self) -> None:
        # 8 VCPU for guests, at 1:1.
        self.flags(cpu_allocation_ratio=1.0, reserved_host_cpus=8)
        self.start_compute('compute1')
        self.assertEqual(8, self._provider_capacity('compute1')['VCPU'])
        flavor = self._create_elastic_flavor()
        guest = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                    networks='none')['id']
        self._adjust_through_api(guest, 4, 4096, persist=True)
        self._adjust_through_api(guest, 2, 2048, persist=False)
        self.assertEqual((2, 2048), self._placement_size(guest))
        self._fill_host('compute1', 'VCPU')

        # Both reboots start the domain at its boot size: a hard reboot
        # regenerates it, a soft one starts its persistent definition.
        for reboot_type in ('HARD', 'SOFT'):
            previous = self._latest_fault(guest)
            resp = self._request_server_action(
                guest, {'reboot': {'type': reboot_type}})
            self.assertEqual(202, resp.status_code, resp.text)
            self._assert_refused_for_room(guest, 'reboot',
                                          'compute_reboot_instance',
                                          '4 vCPUs', previous)
            domain = self._connection('compute1').lookupByUUIDString(guest)
            if domain.isActive():
                self.assertEqual(
                    2, domain.vcpusFlags(compute_base.VCPU_LIVE),
                    f'{reboot_type} reboot: the domain runs on at the size '
                    f'it had')
            self.assertEqual((2, 2048), self._placement_size(guest))
            self._assert_within_capacity('compute1')
            self._wait_for_server_parameter(
                {'id': guest}, {'OS-EXT-STS:task_state': None})

    def test_start_without_room_for_the_flavor_memory(self) -> None:
        # QEMU starts a guest with all of <memory>; the balloon takes it
        # down to the boot memory only once the guest's driver runs.
        self.start_compute('compute1')
        flavor = self._create_elastic_flavor()
        guest = self._create_server(image_uuid=IMAGE, flavor_id=flavor,
                                    networks='none')['id']
        self._adjust_through_api(guest, 4, 4096, persist=True)
        # Room for exactly what is allocated.
        self._set_provider_capacity(
            'compute1', 'MEMORY_MB',
            self._provider_usage('compute1')['MEMORY_MB'])
        self._stop_server({'id': guest})
        self._adjust_through_api(guest, 2, 2048, persist=True)
        self._fill_host('compute1', 'MEMORY_MB')

        resp = self._request_server_action(guest, {'os-start': None})
        self.assertEqual(202, resp.status_code, resp.text)
        self._assert_refused_for_room(guest, 'start',
                                      'compute_start_instance', '4096 MiB')
        self.assertFalse(
            self._connection('compute1').lookupByUUIDString(
                guest).isActive(), 'the domain was started')
        self._wait_for_state_change({'id': guest}, 'SHUTOFF')
        self._assert_within_capacity('compute1')
