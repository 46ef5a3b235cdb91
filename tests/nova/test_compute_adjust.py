"""Live adjustment on the compute host: libvirt, the record, placement."""

import datetime

import oslo_messaging as messaging
from nova import context as nova_context
from nova import objects
from oslo_utils import timeutils

from nova_ext import exception as xloud_exception
from nova_ext import placement, rpcapi, sizing
from tests.nova import base as api_base
from tests.nova import compute_base
from tests.nova import fakelibvirt as elastic_fake

INACTIVE = 2  # VIR_DOMAIN_XML_INACTIVE: the persistent definition
ACTION = compute_base.ACTION
# How a compute host's refusal arrives: as itself over the harness's
# in-process transport, as a RemoteError over a real one.
REFUSED = (xloud_exception.AdjustmentRefused, messaging.RemoteError)


class AdjustTest(compute_base.ElasticComputeTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.host = self.start_compute('compute1')
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048'})
        self.server = self._create_server(flavor_id=flavor,
                                          networks='none')
        self.uuid = self.server['id']

    def _assert_size(self, live: tuple[int, int], boot: tuple[int, int],
                     allocated: tuple[int, int] | None = None) -> None:
        """libvirt, the instance's record and placement all agree."""
        self.assertEqual(live, self._domain_size(self.server))
        self.assertEqual(boot, self._domain_size(self.server, INACTIVE))
        size = self._elastic_size(self.uuid)
        self.assertEqual((live, boot),
                         ((size.live_vcpus, size.live_memory_mb),
                          (size.boot_vcpus, size.boot_memory_mb)))
        self.assertEqual(allocated or live, self._placement_size(self.uuid))

    def _live_size_over_rpc(self) -> dict:
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               self.uuid)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(cctxt, self.uuid)
            return rpcapi.ElasticSizingAPI().get_live_size(
                cctxt, instance, timeout=10)

    def test_grow_shrink_persist_and_regenerate(self) -> None:
        self._assert_size(live=(2, 2048), boot=(2, 2048))

        event = self._adjust(self.server, vcpus=4, memory_mb=3072,
                             persist=False)
        self.assertEqual('compute1', event['host'])
        self._assert_size(live=(4, 3072), boot=(2, 2048))
        self.assertEqual({'vcpus': 4, 'memory_mb': 3072},
                         self._live_size_over_rpc())
        size = self._elastic_size(self.uuid)
        self.assertEqual(sizing.STATUS_SUCCESS, size.status)

        # Persisting one dimension persists the whole current size.
        self._adjust(self.server, vcpus=3, persist=True)
        self._assert_size(live=(3, 3072), boot=(3, 3072))

        self._adjust(self.server, memory_mb=2048, persist=False)
        self._assert_size(live=(3, 2048), boot=(3, 3072))

        # A hard reboot regenerates the domain from the boot size.
        self._reboot_server(self.server, hard=True)
        self._assert_size(live=(3, 3072), boot=(3, 3072))

    def test_persist_without_a_change_makes_the_current_size_the_boot_size(
            self) -> None:
        self._adjust(self.server, vcpus=4, memory_mb=3072, persist=False)
        self._assert_size(live=(4, 3072), boot=(2, 2048))
        # "Persist the size it runs at now": nothing to change live.
        self._adjust(self.server, vcpus=4, persist=True)
        self._assert_size(live=(4, 3072), boot=(4, 3072))
        self.assertEqual('no change, persisted', sizing.changes(
            self._instance(self.uuid))[0].details)
        self._reboot_server(self.server, hard=True)
        self._assert_size(live=(4, 3072), boot=(4, 3072))

    def test_the_domain_is_the_truth_for_what_a_request_does_not_name(
            self) -> None:
        # The guest grew behind the record's back (a crash between libvirt
        # and the save, an operator's virsh): the record says 2 / 2048.
        self._domain(self.server).setVcpusFlags(3, 1)  # AFFECT_LIVE
        self.assertEqual((2, 2048), (self._elastic_size(self.uuid)
                                     .live_vcpus,
                                     self._elastic_size(self.uuid)
                                     .live_memory_mb))
        self._adjust(self.server, memory_mb=3072, persist=False)
        # The vCPUs the request did not name stay what the domain runs,
        # and placement counts them.
        self._assert_size(live=(3, 3072), boot=(2, 2048))
        self.assertEqual('memory_mb 2048 -> 3072, not persisted',
                         sizing.changes(self._instance(self.uuid))[0].details)

    def test_hypervisor_refusal_is_the_action_error(self) -> None:
        connection = self._connection(self.host)
        elastic_fake.ElasticLibvirtFixture.refuse_next(
            connection, self.uuid, 'setVcpusFlags',
            "internal error: unable to execute QEMU command 'device_add'")
        event = self._adjust(self.server, vcpus=4, persist=True,
                             result='Error')
        self.assertIn("unable to execute QEMU command 'device_add'",
                      event['details'])
        # The grow was claimed in placement first, and handed back.
        self._assert_size(live=(2, 2048), boot=(2, 2048))
        size = self._elastic_size(self.uuid)
        self.assertEqual(sizing.STATUS_ERROR, size.status)
        self.assertIn('device_add', size.error)

        # A guest without a balloon driver never reaches the target:
        # libvirt took the request, the result is still an error.
        self.flags(memory_confirm_timeout=0.2, group='xloud')
        behaviour = elastic_fake.ElasticLibvirtFixture.behaviour(
            connection, self.uuid)
        behaviour.balloon_driver = False
        event = self._adjust(self.server, vcpus=3, memory_mb=3072,
                             persist=False, result='Error')
        self.assertIn('memory change to 3072 MiB not confirmed',
                      event['details'])
        self.assertIn('applied: vcpus 2 -> 3', event['details'])
        # The vCPUs libvirt did confirm are recorded, the memory is not.
        self._assert_size(live=(3, 2048), boot=(2, 2048))
        # So says the change record, what was applied first.
        change = sizing.changes(self._instance(self.uuid))[0]
        self.assertTrue(change.details.startswith(
            'failed, applied vcpus 2 -> 3, not persisted: memory change to '
            '3072 MiB not confirmed'), change.details)
        self.assertNotIn('(applied:', change.details)
        # Until a start sees the balloon answer, the API refuses memory
        # changes for it, with this reason.
        self.assertIn('did not take the balloon to 3072 MiB',
                      self._elastic_size(self.uuid).conflicts['memory_mb'])

        # The target the guest did not reach was set back to what it
        # holds: a balloon driver loading now (or a paused guest resuming)
        # leaves the guest at what is recorded and counted.
        self.assertIn('balloon target was set back to 2048 MiB',
                      event['details'])
        behaviour.balloon_driver = True
        self._assert_size(live=(3, 2048), boot=(2, 2048))

        # QEMU times out a vCPU unplug the guest does not carry out.
        behaviour.releases_vcpus = False
        event = self._adjust(self.server, vcpus=2, persist=False,
                             result='Error')
        self.assertIn('vCPU change to 2 not confirmed, the domain reports 3',
                      event['details'])
        self.assertIn('manually inspected', event['details'])
        self._assert_size(live=(3, 2048), boot=(2, 2048))

        # Out of the flavor's range: refused on the compute as well.
        event = self._adjust(self.server, vcpus=5, result='Error')
        self.assertIn('5 vCPUs is outside 2..4', event['details'])
        self._assert_size(live=(3, 2048), boot=(2, 2048))

    def test_compute_takes_only_requests_the_instance_waits_for(
            self) -> None:
        # A cold resize being prepared has the same task state; its
        # newest action is not an adjustment.
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               self.uuid)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, self.uuid, expected_attrs=['flavor',
                                                  'system_metadata'])
            instance.task_state = sizing.ADJUSTING_TASK_STATE
            instance.save()
            objects.InstanceAction.action_start(cctxt, self.uuid, 'resize',
                                                want_result=False)
            error = self.assertRaises(
                REFUSED, rpcapi.ElasticSizingAPI().start_adjust,
                cctxt, instance, 4, None, True,
                not_after=timeutils.utcnow() + datetime.timedelta(
                    seconds=30), timeout=30)
            self.assertIn('not waiting for this adjustment',
                          xloud_exception.refusal_message(error))

            # One that arrives after nova-api gave up on it.
            objects.InstanceAction.action_start(cctxt, self.uuid, ACTION,
                                                want_result=False)
            error = self.assertRaises(
                REFUSED, rpcapi.ElasticSizingAPI().start_adjust,
                cctxt, instance, 4, None, True,
                not_after=timeutils.utcnow() - datetime.timedelta(
                    seconds=1), timeout=30)
            self.assertIn('after nova-api gave up',
                          xloud_exception.refusal_message(error))
        self._assert_size(live=(2, 2048), boot=(2, 2048))
        self.assertEqual(sizing.ADJUSTING_TASK_STATE,
                         self._instance(self.uuid).task_state)

    def test_placement_failure_after_libvirt_says_what_was_applied(
            self) -> None:
        calls = []
        set_allocation = placement.set_allocation

        def failing_settle(context, instance, vcpus, memory_mb, **kwargs):
            calls.append((vcpus, memory_mb))
            # The first is the settle after libvirt confirmed: the grow
            # was claimed with claim_at_least before.
            if len(calls) == 1:
                raise placement.AllocationUpdateFailed(
                    instance_uuid=instance.uuid, reason='placement is down')
            return set_allocation(context, instance, vcpus, memory_mb,
                                  **kwargs)

        self.stub_out('nova_ext.compute.endpoint.placement.set_allocation',
                      failing_settle)
        event = self._adjust(self.server, vcpus=3, persist=True,
                             result='Error')
        self.assertIn('vcpus 2 -> 3 applied, but placement was not updated',
                      event['details'])
        # The guest and its record did change, persisted; placement kept
        # the grow it claimed first.
        self._assert_size(live=(3, 2048), boot=(3, 2048))
        self.assertEqual(
            'failed, applied vcpus 2 -> 3, persisted: placement was not '
            'updated: Could not change the placement allocation of '
            f'instance {self.uuid}: placement is down',
            sizing.changes(self._instance(self.uuid))[0].details)

    def test_stopped_instance_changes_its_boot_size(self) -> None:
        self.server = self._stop_server(self.server)
        event = self._adjust(self.server, vcpus=2, memory_mb=3072,
                             persist=False, result='Error')
        self.assertIn('not running', event['details'])
        self.assertIn('1024 MiB is outside 2048..4096', self._adjust(
            self.server, memory_mb=1024, result='Error')['details'])

        self._adjust(self.server, vcpus=4, memory_mb=3072, persist=True)
        self.assertEqual((4, 3072), self._placement_size(self.uuid))
        self.server = self._start_server(self.server)
        self._assert_size(live=(4, 3072), boot=(4, 3072))


class PlacementCapacityTest(compute_base.ElasticComputeTestBase):
    """A grow is claimed in placement before libvirt sees it."""

    def test_grow_refused_without_room(self) -> None:
        # 8 of the 16 host CPUs for guests, at 1:1; each guest claims its
        # 2-vCPU minimum at boot (resources:VCPU) and may grow to 8.
        self.flags(cpu_allocation_ratio=1.0, reserved_host_cpus=8)
        self.start_compute('compute1')
        flavor = self._create_flavor(
            vcpu=8, memory_mb=2048,
            extra_spec={'minimum_cpu': '2', 'resources:VCPU': '2'})
        first = self._create_server(flavor_id=flavor, networks='none')
        second = self._create_server(flavor_id=flavor, networks='none')
        self.assertEqual((2, 2048), self._placement_size(second['id']))

        event = self._adjust(first, vcpus=8, result='Error')
        self.assertIn('Not enough room on the compute node', event['details'])
        self.assertTrue(
            sizing.changes(self._instance(first['id']))[0].details
            .startswith('failed, nothing applied: Not enough room'))
        self.assertEqual((2, 2), (self._domain_size(first)[0],
                                  self._placement_size(first['id'])[0]))

        self._adjust(first, vcpus=6)
        self.assertEqual((6, 6), (self._domain_size(first)[0],
                                  self._placement_size(first['id'])[0]))
        # Shrinking hands the room back.
        self._adjust(first, vcpus=2)
        self._adjust(second, vcpus=6)
        self.assertEqual(6, self._placement_size(second['id'])[0])


class ApiToLibvirtTest(compute_base.ElasticComputeMixin,
                       api_base.ElasticServersTestBase):
    """POST /os-xloud-adjust → RPC → compute → libvirt → instance action."""

    microversion = '2.84'

    def test_post_is_applied_and_recorded(self) -> None:
        self.start_compute('compute1')
        flavor = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048'})
        server = self._create_server(flavor_id=flavor, networks='none')

        resp = self.api.api_post(
            f'/os-xloud-adjust/{server["id"]}',
            {'current_vcpus': 4, 'current_memory_mb': 3072,
             'persist': False})
        self.assertEqual(202, resp.status)
        adjustment = resp.body['adjustment']
        event = self._wait_for_adjust_event(
            server, adjustment['request_id'], 'Success')
        self.assertEqual('compute1', event['host'])

        self.assertEqual((4, 3072), self._domain_size(server))
        self.assertEqual((2, 2048), self._domain_size(server, INACTIVE))
        self.assertEqual((4, 3072), self._placement_size(server['id']))
        shown = self.api.api_get(
            f'/os-xloud-adjust/{server["id"]}').body['server']
        self.assertEqual(
            (4, 3072, 'live', 'success', adjustment['request_id']),
            (shown['current_vcpus'], shown['current_memory_mb'],
             shown['source'], shown['adjustment']['status'],
             shown['adjustment']['request_id']))
        actions = self.api.api_get(
            f'/servers/{server["id"]}/os-instance-actions').body[
            'instanceActions']
        self.assertEqual('xloud-adjust', actions[0]['action'])
        self.assertEqual(adjustment['request_id'], actions[0]['request_id'])
