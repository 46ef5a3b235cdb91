"""Adjustments and Nova's own operations on one server, in flight together.

Casts stay asynchronous here (``CAST_AS_CALL = False``): nova-api answers
before the compute host is done, as in a deployment, and requests sent
together really overlap (the harness runs each in its own eventlet
greenthread; every wait is bounded). An adjustment is made to last about
two seconds where a test needs one in flight: its guest has no balloon
driver, so a memory change is not confirmed before
``[xloud] memory_confirm_timeout``.
"""

import threading
import time

import fixtures
from nova.conductor.tasks import migrate as migrate_task

from nova_ext import conf as xloud_conf
from nova_ext import sizing
from tests.nova import compute_base

IMAGE = '155d900f-4e14-4e4c-a73d-069cbf4541e6'  # GlanceFixture.image1
REBUILD_IMAGE = '76fa36fc-c930-4bf3-8c8a-ea2a2420deb6'  # image3
# image_container_format Nova records in system metadata for each image.
CONTAINER_FORMATS = {IMAGE: 'raw', REBUILD_IMAGE: 'bare'}
SLOW_ADJUSTMENT_SECONDS = 2
# Long enough for a busy host (make test runs two suites at once) to take
# an adjustment; a host that cannot take one is given up on after it.
ACCEPT_TIMEOUT = 5


class ConcurrencyTest(compute_base.ElasticAPIComputeTestBase):

    CAST_AS_CALL = False

    def setUp(self) -> None:
        super().setUp()
        # A request left in flight by a failing test must not hold the
        # services' shutdown for Nova's long RPC timeout (30 minutes).
        self.flags(rpc_response_timeout=10, long_rpc_timeout=10)
        self.flags(memory_confirm_timeout=SLOW_ADJUSTMENT_SECONDS,
                   boot_memory_confirm_timeout=SLOW_ADJUSTMENT_SECONDS,
                   accept_timeout=ACCEPT_TIMEOUT, group=xloud_conf.GROUP.name)
        self.stubs = self.useFixture(compute_base.NovaOperationStubs(self))
        self.start_compute('compute1')
        self.start_compute('compute2')
        self.flavor = self._create_elastic_flavor()
        self.bigger_flavor = self._create_elastic_flavor(
            vcpus=6, memory_mb=4608, minimum_cpu=3, minimum_memory=2560)

    def _boot(self, host: str = 'compute1') -> str:
        return self._create_server(image_uuid=IMAGE, flavor_id=self.flavor,
                                   networks='none', host=host)['id']

    def _in_flight_together(self, *requests, timeout: float = 30.0) -> list:
        """Run the callables at the same moment, each in a thread of its
        own (a greenthread under the harness's eventlet); their results."""
        barrier = threading.Barrier(len(requests))
        results: list = [None] * len(requests)

        def run(index, request):
            try:
                barrier.wait(timeout)
                results[index] = request()
            except BaseException as e:  # reported below, in the test
                results[index] = e

        threads = [threading.Thread(target=run, args=(index, request),
                                    daemon=True)
                   for index, request in enumerate(requests)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.assertFalse([t for t in threads if t.is_alive()],
                         f'requests still in flight after {timeout}s')
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def _without_balloon_driver(self, server_id: str) -> None:
        host = self.api.get_server(server_id)['OS-EXT-SRV-ATTR:host']
        compute_base.ElasticLibvirtFixture.behaviour(
            self._connection(host), server_id).balloon_driver = False

    def _start_slow_adjustment(self, server_id: str) -> str:
        """A memory change the guest does not confirm for a while; its
        request id, once the API accepted it."""
        self._without_balloon_driver(server_id)
        resp = self._request_adjust(server_id, memory_mb=3072,
                                    persist=False)
        self.assertEqual(202, resp.status_code, resp.text)
        return resp.json()['adjustment']['request_id']

    def _adjustment_finished(self, server_id: str, request_id: str) -> bool:
        action = self.api.api_get(
            f'/servers/{server_id}/os-instance-actions/'
            f'{request_id}').body['instanceAction']
        return any(e['event'] == compute_base.EVENT and e['finish_time']
                   for e in action['events'])

    def _sysmeta(self, server_id: str) -> dict:
        return dict(self._instance(server_id).system_metadata)

    def _state(self, server_id: str) -> dict:
        """What a refused or failed request must leave as it was."""
        server = self.api.get_server(server_id)
        return {
            'status': server['status'],
            'task_state': server['OS-EXT-STS:task_state'],
            'system_metadata': self._sysmeta(server_id),
            'allocations': {
                rp: allocation['resources'] for rp, allocation in
                self._get_allocations_by_server_uuid(server_id).items()},
            'domain': self._domain_size(server),
            'definition': self._domain_size(server, compute_base.INACTIVE),
        }

    def _assert_agree(self, server_id: str, live=None) -> None:
        size = self._elastic_size(server_id)
        self._assert_sizes({server_id: (
            server_id, live, (size.boot_vcpus, size.boot_memory_mb), None)})

    def test_two_adjustments_sent_together(self) -> None:
        server_id = self._boot()
        sizes = ((4, 4096), (3, 3072))
        responses = self._in_flight_together(*(
            lambda size=size: self._request_adjust(server_id, *size,
                                                   persist=False)
            for size in sizes))
        codes = sorted(resp.status_code for resp in responses)
        self.assertEqual([202, 409], codes,
                         [resp.text for resp in responses])
        accepted, size = next(
            (resp, size) for resp, size in zip(responses, sizes,
                                               strict=True)
            if resp.status_code == 202)
        self._wait_for_adjustment(
            server_id, accepted.json()['adjustment']['request_id'])
        # The refused request's claim (if it made one) was not released
        # over the accepted one's: placement, record and domain agree on
        # what was accepted.
        self._assert_agree(server_id, live=size)

    def test_nova_operations_refused_while_adjusting(self) -> None:
        server_id = self._boot()
        request_id = self._start_slow_adjustment(server_id)
        operations = {
            'live migration': {'os-migrateLive': {
                'host': 'compute2', 'block_migration': 'auto'}},
            'cold migration': {'migrate': {'host': 'compute2'}},
            'resize': {'resize': {'flavorRef': self.bigger_flavor}},
            'stop': {'os-stop': None},
            'rebuild': {'rebuild': {'imageRef': REBUILD_IMAGE}},
            'rescue': {'rescue': {'adminPass': 'MySecretPass'}},
            'pause': {'pause': None},
            'suspend': {'suspend': None},
        }
        answers = {
            name: self._request_server_action(server_id, body).status_code
            for name, body in operations.items()}
        self.assertFalse(
            self._adjustment_finished(server_id, request_id),
            'the adjustment ended before every request was answered')
        # What Nova took, if anything, runs to its end before the verdict.
        self._wait_until_settled(server_id)
        self.assertEqual(dict.fromkeys(operations, 409), answers)

        self._wait_for_adjustment(server_id, request_id, result=None)
        self._assert_agree(server_id)
        # Once it is over, Nova takes them again.
        compute_base.ElasticLibvirtFixture.behaviour(
            self._connection('compute1'), server_id).balloon_driver = True
        for name, status, undo in (
                ('pause', 'PAUSED', {'unpause': None}),
                ('suspend', 'SUSPENDED', {'resume': None}),
                ('stop', 'SHUTOFF', {'os-start': None}),
                ('rescue', 'RESCUE', {'unrescue': None}),
                ('rebuild', 'ACTIVE', None),
                ('live migration', 'ACTIVE', None),
                ('cold migration', 'VERIFY_RESIZE', {'confirmResize': None}),
                ('resize', 'VERIFY_RESIZE', {'confirmResize': None})):
            body = operations[name]
            if name == 'cold migration':
                body = {'migrate': {'host': 'compute1'}}
            resp = self._request_server_action(server_id, body)
            self.assertIn(resp.status_code, (200, 202), (name, resp.text))
            self._wait_for_server_parameter(
                {'id': server_id},
                {'status': status, 'OS-EXT-STS:task_state': None},
                max_retries=20)
            if name == 'live migration':
                self._wait_for_migration_status({'id': server_id},
                                                ['completed'])
            if undo:
                resp = self._request_server_action(server_id, undo)
                self.assertIn(resp.status_code, (200, 202, 204),
                              (undo, resp.text))
                self._wait_for_server_parameter(
                    {'id': server_id},
                    {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None},
                    max_retries=20)
        self._assert_agree(server_id)

    def test_adjustment_refused_while_nova_operation_runs(self) -> None:
        server_id = self._boot()
        # A live migration in flight (task_state migrating).
        self.stubs.live_migration_released.clear()
        resp = self._request_server_action(
            server_id, {'os-migrateLive': {'host': 'compute2',
                                           'block_migration': 'auto'}})
        self.assertEqual(202, resp.status_code, resp.text)
        self.assertTrue(self.stubs.live_migration_started.wait(10))
        self._assert_adjustment_refused(server_id)
        self.stubs.live_migration_released.set()
        self._wait_for_migration_status({'id': server_id}, ['completed'])
        self._wait_for_server_parameter(
            {'id': server_id},
            {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})

        # A cold resize, held in the conductor before it asks the
        # scheduler: its task state is RESIZE_PREP, the one an adjustment
        # uses.
        scheduling = threading.Event()
        scheduled = threading.Event()
        self.addCleanup(scheduled.set)
        execute = migrate_task.MigrationTask._execute

        def held_execute(task):
            scheduling.set()
            if not scheduled.wait(compute_base.GATE_TIMEOUT):
                raise AssertionError('the resize was not released')
            return execute(task)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.conductor.tasks.migrate.MigrationTask._execute',
            held_execute))
        resize = threading.Thread(
            target=self._request_server_action, daemon=True,
            args=(server_id, {'resize': {'flavorRef': self.bigger_flavor}}))
        resize.start()
        self.assertTrue(scheduling.wait(10))
        self.assertEqual('resize_prep', self.api.get_server(server_id)[
            'OS-EXT-STS:task_state'])
        self._assert_adjustment_refused(server_id)
        scheduled.set()
        resize.join(30)
        self._wait_for_server_parameter(
            {'id': server_id},
            {'status': 'VERIFY_RESIZE', 'OS-EXT-STS:task_state': None})

        # The resize on its way to the destination (resize_migrating).
        self._request_server_action(server_id, {'revertResize': None})
        self._wait_for_server_parameter(
            {'id': server_id},
            {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.stubs.cold_migration_released.clear()
        resp = self._request_server_action(
            server_id, {'resize': {'flavorRef': self.bigger_flavor}})
        self.assertEqual(202, resp.status_code, resp.text)
        self.assertTrue(self.stubs.cold_migration_started.wait(10))
        self._assert_adjustment_refused(server_id)
        self.stubs.cold_migration_released.set()
        self._wait_for_server_parameter(
            {'id': server_id},
            {'status': 'VERIFY_RESIZE', 'OS-EXT-STS:task_state': None})

    def _assert_adjustment_refused(self, server_id: str) -> None:
        before = self._state(server_id)
        resp = self._request_adjust(server_id, vcpus=4, memory_mb=4096,
                                    persist=False)
        self.assertEqual(409, resp.status_code, resp.text)
        self.assertEqual(before, self._state(server_id))

    def test_nothing_saved_from_a_stale_snapshot(self) -> None:
        resized = self._boot()
        rebuilt = self._boot()
        accepted = {resized: [], rebuilt: []}

        def adjust(server_id, **size):
            resp = self._request_adjust(server_id, **size)
            if resp.status_code == 202:
                accepted[server_id].append(
                    resp.json()['adjustment']['request_id'])
            return resp.status_code

        # Nova's own operations requested while an adjustment runs: if
        # Nova takes them, nothing the adjustment saves afterwards may undo
        # what they recorded.
        for server_id in (resized, rebuilt):
            accepted[server_id].append(self._start_slow_adjustment(
                server_id))
        # Refused (409) while the adjustment's task state is set; where
        # they are taken, they run alongside it.
        self._request_server_action(
            resized, {'resize': {'flavorRef': self.bigger_flavor}})
        self._request_server_action(
            rebuilt, {'rebuild': {'imageRef': REBUILD_IMAGE}})
        for server_id in (resized, rebuilt):
            self._wait_for_adjustment(server_id, accepted[server_id][0],
                                      result=None)
            self._wait_until_settled(server_id)
        self._assert_nova_records_kept(resized, rebuilt, accepted)

        # Overlaps the adjustment's task state does not prevent: after
        # each start of a guest without a balloon driver its boot memory
        # is confirmed in the background for a while, and recorded then;
        # meanwhile Nova's operations and adjustments go on.
        self.elastic_libvirt.new_guests(balloon_driver=False)
        if self.api.get_server(resized)['status'] == 'VERIFY_RESIZE':
            self._request_server_action(resized, {'confirmResize': None})
            self._wait_until_settled(resized)
        other_flavor = {self.flavor: self.bigger_flavor,
                        self.bigger_flavor: self.flavor}
        resp = self._request_server_action(resized, {'resize': {
            'flavorRef': other_flavor[self._instance(
                resized).flavor.flavorid]}})
        self.assertEqual(202, resp.status_code, resp.text)
        other_image = {IMAGE: REBUILD_IMAGE, REBUILD_IMAGE: IMAGE}
        resp = self._request_server_action(rebuilt, {'rebuild': {
            'imageRef': other_image[self._instance(rebuilt).image_ref]}})
        self.assertEqual(202, resp.status_code, resp.text)
        for server_id in (resized, rebuilt):
            self._wait_until_settled(server_id)
        self.assertEqual(202, adjust(rebuilt, vcpus=3, persist=False))
        # vm_state resized: refused, and nothing written for it.
        self.assertEqual(409, adjust(resized, vcpus=3, persist=False))
        for request_id in accepted[rebuilt][1:]:
            self._wait_for_adjustment(rebuilt, request_id, result=None)
        # Until the confirmations are over, and a little after.
        time.sleep(SLOW_ADJUSTMENT_SECONDS + 1)
        self._assert_nova_records_kept(resized, rebuilt, accepted)
        for server_id in (resized, rebuilt):
            self._assert_agree(server_id)

    def _wait_until_settled(self, server_id: str) -> None:
        """Until no operation runs on the server (no task state)."""
        for _attempt in range(60):
            server = self.api.get_server(server_id)
            if server['OS-EXT-STS:task_state'] is None:
                return
            time.sleep(0.25)
        self.fail(f'{server_id} still busy: {server["status"]}, '
                  f'{server["OS-EXT-STS:task_state"]}')

    def _assert_nova_records_kept(self, resized: str, rebuilt: str,
                                  accepted: dict) -> None:
        failures = []
        server = self.api.get_server(resized)
        sysmeta = self._sysmeta(resized)
        if server['status'] == 'VERIFY_RESIZE' and (
                sysmeta.get('old_vm_state') != 'active'):
            failures.append(f'resized {resized}: old_vm_state lost in '
                            f'VERIFY_RESIZE: {sysmeta}')
        instance = self._instance(rebuilt)
        container = instance.system_metadata.get('image_container_format')
        if container != CONTAINER_FORMATS[instance.image_ref]:
            failures.append(
                f'rebuilt {rebuilt}: runs image {instance.image_ref}, '
                f'system metadata says image_container_format {container}')
        for server_id, request_ids in accepted.items():
            recorded = {change.request_id for change in
                        sizing.changes(self._instance(server_id))}
            missing = [r for r in request_ids if r not in recorded]
            if missing:
                failures.append(f'{server_id}: change records of accepted '
                                f'requests {missing} lost ({recorded})')
        self.assertEqual([], failures)

    def test_host_not_serving_adjustments(self) -> None:
        # A host running the stock driver has no elastic endpoint.
        self.flags(compute_driver='libvirt.LibvirtDriver')
        self.start_compute('stock')
        self.flags(compute_driver='xloud.XloudLibvirtDriver')
        on_stock = self._boot(host='stock')
        self._assert_adjustment_fails(on_stock, (503,), ACCEPT_TIMEOUT)

        # A host whose service stopped, not yet reported down.
        server_id = self._boot()
        self.computes['compute1'].stop()
        self._assert_adjustment_fails(server_id, (503,),
                                      ACCEPT_TIMEOUT + 1)

        # Reported down: refused at once.
        service = self.api.get_services(host='compute1',
                                        binary='nova-compute')[0]
        self.api.put_service_force_down(service['id'], True)
        self._assert_adjustment_fails(server_id, (409,), 1)

    def _assert_adjustment_fails(self, server_id: str, codes: tuple,
                                 within: float) -> None:
        before = self._state(server_id)
        started = time.monotonic()
        resp = self._request_adjust(server_id, vcpus=4, memory_mb=3072,
                                    persist=True)
        elapsed = time.monotonic() - started
        self.assertIn(resp.status_code, codes, resp.text)
        self.assertLess(elapsed, within + 1.5,
                        f'answered after {elapsed:.1f}s')
        self.assertEqual(before, self._state(server_id))
