"""The elastic sizing audit: each kind of drift made behind Nova's back,
found, reported by the command line and the API, and healed.

The comparison alone (``audit.findings``) is proven on Nova objects; the
rest runs in Nova's functional harness with compute hosts running
``XloudLibvirtDriver`` on the elastic fake libvirt, placement and the API
with the extension's filter. The drift is made the way it happens: the
domain changed through libvirt, the record in system metadata, the
allocation through placement's API, an adjustment left in progress.
"""

import contextlib
import datetime
import io
import json
import os
import subprocess
import sys
import time

import fixtures
import jsonschema
import testtools
from lxml import etree
from nova import context as nova_context
from nova import objects
from nova.compute import task_states
from nova.tests.fixtures import libvirt as fakelibvirt
from oslo_config import cfg
from oslo_policy import generator
from oslo_utils import timeutils

from nova_ext import audit, sizing
from nova_ext.api import schemas
from nova_ext.deploy import cli
from nova_ext.virt import live
from tests.nova import base as api_base
from tests.nova import compute_base

LIVE = fakelibvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = fakelibvirt.VIR_DOMAIN_AFFECT_CONFIG
MIB = 1024
UUID = '6f3d2a52-0c1f-4b8e-9d59-0f1a2b3c4d5e'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def validate_report(body: dict) -> None:
    """The report as the API's response schema describes it."""
    jsonschema.validate(body, schemas.audit_response,
                        format_checker=jsonschema.FormatChecker())


def _size(vcpus: int, memory_mb: int) -> dict:
    return {'vcpus': vcpus, 'memory_mb': memory_mb}


def make_instance(task_state=None, **sysmeta) -> objects.Instance:
    """An instance of a 4 vCPU / 4096 MiB flavor with minimums 2 / 2048,
    recorded at live and boot 2 / 2048 unless ``sysmeta`` says more."""
    flavor = objects.Flavor(flavorid='f1', name='elastic', vcpus=4,
                            memory_mb=4096, extra_specs={
                                'minimum_cpu': '2',
                                'minimum_memory': '2048'})
    record = {sizing.SYSMETA_FLAVOR: 'f1',
              sizing.SYSMETA_LIVE_VCPUS: '2',
              sizing.SYSMETA_LIVE_MEMORY: '2048',
              sizing.SYSMETA_BOOT_VCPUS: '2',
              sizing.SYSMETA_BOOT_MEMORY: '2048'}
    record.update(sysmeta)
    return objects.Instance(uuid=UUID, host='compute1', node='compute1',
                            vm_state='active', task_state=task_state,
                            flavor=flavor, system_metadata=record)


def make_domain(state='running', live=(2, 2048), config=(2, 2048),
                adjusting=False) -> dict:
    running = state in ('running', 'paused')
    return {'state': state,
            'live': _size(*live) if running else None,
            'config': _size(*config) if state != 'missing' else None,
            'maximum': _size(4, 4096) if state != 'missing' else None,
            'adjusting': adjusting}


def action(name: str, age: float, request_id='req-1'):
    return objects.InstanceAction(
        action=name, request_id=request_id,
        start_time=timeutils.utcnow() - datetime.timedelta(seconds=age))


IN_SYNC_ALLOCATION = {'VCPU': 2, 'MEMORY_MB': 2048, 'DISK_GB': 1}


class FindingsTest(testtools.TestCase):
    """audit.findings and audit.skip_reason: the comparison, no I/O."""

    def kinds(self, found) -> list[tuple[str, str]]:
        return [(finding.kind, finding.severity) for finding in found]

    def test_in_sync(self):
        self.assertEqual([], audit.findings(
            make_instance(), make_domain(), IN_SYNC_ALLOCATION))
        # The boot memory still on its way: QEMU gave all of <memory>,
        # recorded and claimed so.
        self.assertEqual([], audit.findings(
            make_instance(xloud_live_memory_mb='4096'),
            make_domain(live=(2, 4096)), {'VCPU': 2, 'MEMORY_MB': 4096}))

    def test_guest_grown_behind_novas_back(self):
        found = audit.findings(make_instance(),
                               make_domain(live=(4, 3072)),
                               IN_SYNC_ALLOCATION)
        self.assertEqual([(audit.RECORD_LIVE_DIFFERS, audit.WARNING),
                          (audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL)],
                         self.kinds(found))
        record, below = found
        self.assertEqual({'record_live': _size(2, 2048),
                          'domain_live': _size(4, 3072)}, record.observed)
        self.assertEqual({'placement': _size(2, 2048),
                          'domain_live': _size(4, 3072)}, below.observed)
        self.assertIn('the host can run more than placement allows',
                      below.message)
        self.assertIn('4 vCPUs / 3072 MiB', below.message)
        self.assertTrue(below.healable)

    def test_placement_above_and_mixed(self):
        self.assertEqual(
            [(audit.PLACEMENT_ABOVE_LIVE, audit.WARNING)],
            self.kinds(audit.findings(make_instance(), make_domain(),
                                      {'VCPU': 3, 'MEMORY_MB': 2048})))
        # One resource short is critical, whatever the other holds.
        self.assertEqual(
            [(audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL)],
            self.kinds(audit.findings(make_instance(), make_domain(),
                                      {'VCPU': 1, 'MEMORY_MB': 4096})))

    def test_allocation_missing_or_not_read(self):
        [missing] = audit.findings(make_instance(), make_domain(), None)
        self.assertEqual((audit.ALLOCATION_MISSING, audit.CRITICAL),
                         (missing.kind, missing.severity))
        self.assertIn('nova-manage placement heal_allocations --instance '
                      + UUID, missing.message)
        self.assertFalse(missing.healable)
        self.assertEqual([], audit.findings(make_instance(), make_domain(),
                                            audit.NOT_READ))

    def test_boot_size(self):
        [boot] = audit.findings(make_instance(),
                                make_domain(config=(3, 2048)),
                                IN_SYNC_ALLOCATION)
        self.assertEqual(audit.RECORD_BOOT_DIFFERS, boot.kind)
        self.assertEqual({'record_boot': _size(2, 2048),
                          'domain_config': _size(3, 2048)}, boot.observed)

    def test_stopped_domain_is_compared_for_its_boot_size_only(self):
        # It runs at nothing: a live record and an allocation left from
        # when it ran are settled by its next start.
        instance = make_instance(xloud_live_vcpus='4')
        self.assertEqual([], audit.findings(
            instance, make_domain('stopped'), {'VCPU': 4, 'MEMORY_MB': 1}))
        self.assertEqual([audit.RECORD_BOOT_DIFFERS], [
            finding.kind for finding in audit.findings(
                instance, make_domain('stopped', config=(4, 2048)), None)])

    def test_virtio_mem_device_not_where_it_was_asked(self):
        self.useFixture(fixtures.MockPatchObject(
            audit.CONF.xloud, 'balloon_silent_after', 120))
        started = timeutils.utcnow() - datetime.timedelta(seconds=300)
        instance = make_instance(xloud_live_memory_mb='3072',
                                 xloud_started_at=started.isoformat())
        allocation = {'VCPU': 2, 'MEMORY_MB': 3072}

        def domain(requested, plugged, **changes):
            found = make_domain(live=(2, 3072), **changes)
            found['virtio_mem'] = {'requested_mb': requested,
                                   'plugged_mb': plugged, 'size_mb': 2048}
            return found

        self.assertEqual([], audit.findings(instance, domain(1024, 1024),
                                            allocation))
        for requested, plugged, words in ((1024, 0, 'has plugged 0 MiB'),
                                          (512, 1024, 'still holds 1024')):
            with self.subTest(requested=requested, plugged=plugged):
                [unsettled] = audit.findings(
                    instance, domain(requested, plugged), allocation)
                self.assertEqual(
                    (audit.VIRTIO_MEM_UNSETTLED, audit.WARNING, True),
                    (unsettled.kind, unsettled.severity, unsettled.healable))
                self.assertIn(words, unsettled.message)
        # Not while an adjustment runs, nor while the guest is starting.
        self.assertEqual([], audit.findings(
            instance, domain(1024, 0, adjusting=True), allocation))
        starting = make_instance(
            xloud_live_memory_mb='3072',
            xloud_started_at=timeutils.utcnow().isoformat())
        self.assertEqual([], audit.findings(starting, domain(1024, 0),
                                            allocation))

    def test_missing_domain(self):
        [missing] = audit.findings(make_instance(), make_domain('missing'),
                                   IN_SYNC_ALLOCATION)
        self.assertEqual((audit.DOMAIN_MISSING, audit.WARNING,
                          {'domain_state': 'missing'}),
                         (missing.kind, missing.severity, missing.observed))
        self.assertFalse(missing.healable)

    def test_stuck_adjustment(self):
        instance = make_instance(xloud_status='adjusting',
                                 xloud_request_id='req-lost')
        [stuck] = audit.findings(instance, make_domain(), IN_SYNC_ALLOCATION,
                                 newest_action=action('create', 60))
        self.assertEqual(audit.ADJUSTMENT_STUCK, stuck.kind)
        self.assertEqual({'task_state': None, 'xloud_status': 'adjusting',
                          'request_id': 'req-lost'}, stuck.observed)
        # In the adjustment's task state, with its action newest.
        instance = make_instance(task_state=sizing.ADJUSTING_TASK_STATE)
        [stuck] = audit.findings(
            instance, make_domain(), IN_SYNC_ALLOCATION,
            newest_action=action(sizing.ACTION, 120, 'req-api'))
        self.assertEqual(('req-api', task_states.RESIZE_PREP),
                         (stuck.observed['request_id'],
                          stuck.observed['task_state']))

    def test_skip_reasons(self):
        domain = make_domain()
        self.assertIsNone(audit.skip_reason(make_instance(), domain))
        self.assertIn('running on compute1', audit.skip_reason(
            make_instance(xloud_status='adjusting'),
            make_domain(adjusting=True)))
        self.assertEqual('busy (task_state migrating)', audit.skip_reason(
            make_instance(task_state='migrating'), domain))
        # RESIZE_PREP of a cold resize is Nova's own business.
        resize_prep = make_instance(task_state=task_states.RESIZE_PREP)
        self.assertEqual('busy (task_state resize_prep)', audit.skip_reason(
            resize_prep, domain, newest_action=action('resize', 120)))
        # Nova-api may still be handing a fresh one over.
        self.assertIn('being handed to compute1', audit.skip_reason(
            resize_prep, domain, newest_action=action(sizing.ACTION, 1)))
        self.assertIsNone(audit.skip_reason(
            resize_prep, domain, newest_action=action(sizing.ACTION, 120)))

    def test_report_status_and_schema(self):
        report = audit.AuditReport()
        report.instances = {UUID: 'compute1'}
        self.assertEqual((0, 'in_sync', 'in_sync'), (
            report.exit_code, report.status, report.server_status(UUID)))
        report.hosts.append(audit.HostSummary('compute1', 1, 1))
        found = audit.findings(make_instance(), make_domain(live=(3, 2048)),
                               IN_SYNC_ALLOCATION)
        report.findings = report.remaining = found
        self.assertEqual((1, 'drift', 'drift'), (
            report.exit_code, report.status, report.server_status(UUID)))
        body = {'audit': report.to_dict()}
        validate_report(body)
        self.assertEqual([{'server_id': UUID, 'host': 'compute1',
                           'status': 'drift'}], body['audit']['servers'])
        report.errors.append('nova-compute on compute2 is down')
        self.assertEqual((2, 'error'), (report.exit_code, report.status))
        validate_report({'audit': report.to_dict()})


class AuditPolicyTest(testtools.TestCase):

    def test_rule_is_documented_for_oslopolicy(self):
        directory = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(directory, 'policy.yaml')
        generator.generate_sample(
            args=['--namespace', 'xloud', '--output-file', path],
            conf=cfg.ConfigOpts())
        with open(path) as f:
            text = f.read()
        self.assertIn('#"xloud:elastic_sizing:audit": '
                      '"rule:context_is_admin"', text)
        self.assertIn('GET  /os-xloud-audit', text)
        self.assertIn('POST  /os-xloud-audit', text)


class AuditHarnessMixin:
    """Elastic servers on harness computes, and ways to make drift."""

    def _elastic_flavor(self) -> str:
        # Quota counts the flavor's 4 vCPUs per server.
        self.flags(cores=64, ram=65536, group='quota')
        # Placement is claimed at the minimum at boot (resources:*).
        return self._create_flavor(
            vcpu=4, memory_mb=4096, disk=1, ephemeral=0,
            extra_spec={'minimum_cpu': '2', 'minimum_memory': '2048',
                        'resources:VCPU': '2',
                        'resources:MEMORY_MB': '2048'})

    def _servers(self, flavor: str, count: int, host: str = 'compute1'
                 ) -> list[dict]:
        return [self._create_server(flavor_id=flavor, networks='none',
                                    host=host) for _ in range(count)]

    def _libvirt_domain(self, server: dict):
        host = self._instance(server['id']).host
        return self._connection(host).lookupByUUIDString(server['id'])

    def _set_sysmeta(self, server_id: str, **values) -> None:
        instance = self._instance(server_id)
        sysmeta = dict(instance.system_metadata)
        sysmeta.update(values)
        instance.system_metadata = sysmeta
        instance.save()

    def _put_allocation(self, server_id: str, vcpus: int,
                        memory_mb: int) -> None:
        """Change the allocation through placement's API."""
        current = self.placement.get(f'/allocations/{server_id}',
                                     version='1.28').body
        provider = self.compute_rp_uuids[self._instance(server_id).host]
        current['allocations'][provider]['resources'].update(
            VCPU=vcpus, MEMORY_MB=memory_mb)
        body = {'allocations': {
            rp: {'resources': allocation['resources']}
            for rp, allocation in current['allocations'].items()},
            'consumer_generation': current['consumer_generation'],
            'project_id': current['project_id'],
            'user_id': current['user_id']}
        resp = self.placement.put(f'/allocations/{server_id}', body,
                                  version='1.28')
        self.assertEqual(204, resp.status, resp.body)

    def _limit_capacity(self, hostname: str, resource: str,
                        capacity: int) -> None:
        """Leave room for ``capacity`` of ``resource`` on the host."""
        path = (f'/resource_providers/{self.compute_rp_uuids[hostname]}'
                f'/inventories/{resource}')
        inventory = self.placement.get(path, version='1.26').body
        inventory.update(reserved=inventory['total'] - capacity,
                         allocation_ratio=1.0)
        resp = self.placement.put(path, inventory, version='1.26')
        self.assertEqual(200, resp.status, resp.body)

    def _record(self, server_id: str) -> tuple[tuple, tuple]:
        size = self._elastic_size(server_id)
        return ((size.live_vcpus, size.live_memory_mb),
                (size.boot_vcpus, size.boot_memory_mb))

    def _audit(self, **kwargs) -> audit.AuditReport:
        report = audit.run(nova_context.get_admin_context(), **kwargs)
        validate_report({'audit': report.to_dict()})
        return report

    @staticmethod
    def _kinds(found) -> set[tuple[str, str, str]]:
        return {(finding.instance_uuid, finding.kind, finding.severity)
                for finding in found}


class AuditTest(AuditHarnessMixin, compute_base.ElasticComputeTestBase):

    microversion = '2.84'

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')
        self.flavor = self._elastic_flavor()

    def test_each_drift_is_found_and_fix_lets_the_domain_win(self):
        (grown, booted, overclaimed, status_stuck, task_stuck, rewritten,
         vanished, untouched) = self._servers(self.flavor, 8)
        self.flags(accept_timeout=1, group='xloud')
        report = self._audit()
        self.assertEqual((audit.EXIT_IN_SYNC, 8, []),
                         (report.exit_code, report.checked, report.findings))
        self.assertEqual(
            [audit.IN_SYNC] * 8,
            [server['status'] for server in report.to_dict()['servers']])

        # The guest grown through libvirt alone.
        domain = self._libvirt_domain(grown)
        domain.setVcpusFlags(4, LIVE)
        domain.setMemoryFlags(3072 * MIB, LIVE)
        # Its definition changed: it would boot at 3 vCPUs.
        self._libvirt_domain(booted).setVcpusFlags(3, CONFIG)
        # Placement holds more than the guest runs at.
        self._put_allocation(overclaimed['id'], 3, 3072)
        # An adjustment recorded in progress that nobody runs.
        self._set_sysmeta(status_stuck['id'], xloud_status='adjusting',
                          xloud_request_id='req-lost')
        # nova-api set the task state and started the action, then the
        # request was lost.
        instance = self._instance(task_stuck['id'])
        instance.task_state = sizing.ADJUSTING_TASK_STATE
        instance.save()
        objects.InstanceAction.action_start(
            instance._context, task_stuck['id'], sizing.ACTION,
            want_result=False)
        # The record rewritten behind the compute's back.
        self._set_sysmeta(rewritten['id'], xloud_live_vcpus='3')
        # The domain gone from the hypervisor.
        self._libvirt_domain(vanished).undefine()

        # A fresh adjustment may still be on its way to the host.
        report = self._audit(instance_uuids=[task_stuck['id']])
        self.assertEqual([task_stuck['id']],
                         [s.instance_uuid for s in report.skipped])
        self.assertIn('being handed to compute1', report.skipped[0].reason)
        self.assertEqual(audit.EXIT_IN_SYNC, report.exit_code)
        time.sleep(1.1)

        report = self._audit()
        expected = {
            (grown['id'], audit.RECORD_LIVE_DIFFERS, audit.WARNING),
            (grown['id'], audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL),
            (booted['id'], audit.RECORD_BOOT_DIFFERS, audit.WARNING),
            (overclaimed['id'], audit.PLACEMENT_ABOVE_LIVE, audit.WARNING),
            (status_stuck['id'], audit.ADJUSTMENT_STUCK, audit.WARNING),
            (task_stuck['id'], audit.ADJUSTMENT_STUCK, audit.WARNING),
            (rewritten['id'], audit.RECORD_LIVE_DIFFERS, audit.WARNING),
            (vanished['id'], audit.DOMAIN_MISSING, audit.WARNING),
        }
        self.assertEqual(expected, self._kinds(report.findings))
        self.assertEqual(report.findings, report.remaining)
        self.assertEqual((audit.EXIT_DRIFT, []),
                         (report.exit_code, report.errors))
        below = next(f for f in report.findings
                     if f.kind == audit.PLACEMENT_BELOW_LIVE)
        self.assertEqual({'placement': _size(2, 2048),
                          'domain_live': _size(4, 3072)}, below.observed)
        statuses = {server['server_id']: server['status']
                    for server in report.to_dict()['servers']}
        self.assertEqual((audit.DRIFT, audit.IN_SYNC),
                         (statuses[grown['id']], statuses[untouched['id']]))
        self.assertEqual([{'host': 'compute1', 'instances': 8,
                           'checked': 8, 'error': None}],
                         report.to_dict()['hosts'])

        report = self._audit(fix=True)
        self.assertEqual(expected, self._kinds(report.findings))
        self.assertEqual(
            sorted(server['id'] for server in (
                grown, booted, overclaimed, status_stuck, task_stuck,
                rewritten)),
            sorted(healed.instance_uuid for healed in report.healed))
        self.assertEqual([], [healed.errors for healed in report.healed
                              if healed.errors])
        # Only what fix cannot settle remains.
        self.assertEqual({(vanished['id'], audit.DOMAIN_MISSING,
                           audit.WARNING)}, self._kinds(report.remaining))
        self.assertEqual(audit.EXIT_DRIFT, report.exit_code)

        # The domain won: libvirt unchanged, record and placement follow.
        self.assertEqual((4, 3072), self._domain_size(grown))
        self.assertEqual(((4, 3072), (2, 2048)), self._record(grown['id']))
        self.assertEqual((4, 3072), self._placement_size(grown['id']))
        self.assertEqual(((2, 2048), (3, 2048)), self._record(booted['id']))
        self.assertEqual((2, 2048), self._placement_size(overclaimed['id']))
        self.assertEqual(((2, 2048), (2, 2048)),
                         self._record(rewritten['id']))
        for stuck in (status_stuck, task_stuck):
            instance = self._instance(stuck['id'])
            self.assertEqual(
                (None, sizing.STATUS_ERROR),
                (instance.task_state,
                 instance.system_metadata[sizing.SYSMETA_STATUS]))

        report = self._audit()
        self.assertEqual({(vanished['id'], audit.DOMAIN_MISSING,
                           audit.WARNING)}, self._kinds(report.remaining))
        self.assertEqual(8, report.checked)

    def test_scope_by_host_and_by_server(self):
        self.start_compute('compute2')
        plain = self._create_flavor(vcpu=2, memory_mb=2048)
        first, second = self._servers(self.flavor, 2)
        other = self._servers(self.flavor, 1, host='compute2')[0]
        # Not elastic: no minimum, no record.
        self._create_server(flavor_id=plain, networks='none',
                            host='compute1')
        self._libvirt_domain(first).setVcpusFlags(3, LIVE)
        self._libvirt_domain(other).setVcpusFlags(3, LIVE)

        report = self._audit()
        self.assertEqual({first['id'], second['id'], other['id']},
                         set(report.instances))
        self.assertEqual(['compute1', 'compute2'],
                         [summary.host for summary in report.hosts])
        report = self._audit(host='compute2')
        self.assertEqual({other['id']},
                         {f.instance_uuid for f in report.findings})
        report = self._audit(instance_uuids=[second['id'], other['id']])
        self.assertEqual((2, {other['id']}), (
            report.checked, {f.instance_uuid for f in report.findings}))

    def test_grow_without_room_is_reported_not_forced(self):
        full, neighbour = self._servers(self.flavor, 2)
        # Room for the two guests' 2 vCPUs each, no more.
        self._limit_capacity('compute1', 'VCPU', 4)
        self.assertEqual((2, 2048), self._placement_size(neighbour['id']))
        self._libvirt_domain(full).setVcpusFlags(3, LIVE)

        report = self._audit(fix=True)
        [healed] = report.healed
        self.assertEqual(full['id'], healed.instance_uuid)
        self.assertTrue(any('Not enough room on the compute node' in error
                            for error in healed.errors), healed.errors)
        self.assertEqual(
            {(full['id'], audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL)},
            self._kinds(report.remaining))
        self.assertEqual((audit.EXIT_DRIFT, []),
                         (report.exit_code, report.errors))
        # Not forced: placement as it was; the record says what runs.
        self.assertEqual((2, 2048), self._placement_size(full['id']))
        self.assertEqual(((3, 2048), (2, 2048)), self._record(full['id']))

    def test_unreachable_host_is_an_error(self):
        self.start_compute('compute2')
        reachable = self._servers(self.flavor, 1)[0]
        lost = self._servers(self.flavor, 1, host='compute2')[0]
        self.flags(audit_rpc_timeout=1, group='xloud')
        # Up as far as Nova knows, but nothing answers its RPC.
        self.computes['compute2'].stop()

        report = self._audit()
        self.assertEqual(audit.EXIT_ERROR, report.exit_code)
        self.assertEqual({(lost['id'], audit.HOST_UNREACHABLE,
                           audit.WARNING)}, self._kinds(report.remaining))
        [error] = report.errors
        self.assertIn('nova-compute on compute2 did not describe its '
                      'domains', error)
        self.assertIn('MessagingTimeout', error)
        statuses = {server['server_id']: server['status']
                    for server in report.to_dict()['servers']}
        self.assertEqual({reachable['id']: audit.IN_SYNC,
                          lost['id']: audit.UNKNOWN}, statuses)

        # Reported down: refused at once, no RPC timeout waited for.
        service = objects.Service.get_by_compute_host(
            nova_context.get_admin_context(), 'compute2')
        service.forced_down = True
        service.save()
        started = time.monotonic()
        report = self._audit(host='compute2')
        self.assertLess(time.monotonic() - started, 1)
        self.assertIn('nova-compute on compute2 is down', report.errors[0])


class AuditVirtioMemTest(AuditHarnessMixin,
                         compute_base.ElasticComputeTestBase):
    """A virtio-mem device asked behind Nova's back for what its guest
    does not reach: found, and fix asks it for what the guest holds."""

    microversion = '2.84'

    def setUp(self) -> None:
        super().setUp()
        self.flags(balloon_silent_after=0, group='xloud')
        self.start_compute('compute1')
        self.flags(cores=64, ram=65536, group='quota')
        self.flavor = self._create_flavor(
            vcpu=4, memory_mb=4096, disk=1, ephemeral=0,
            extra_spec={'xloud:minimum_cpu': '2',
                        'xloud:minimum_memory': '2048',
                        'xloud:memory_model': 'virtio-mem'})

    def _ask(self, server: dict, requested_mb: int) -> None:
        domain = self._libvirt_domain(server)
        device = live.VirtioMem.of(etree.fromstring(domain.XMLDesc(0)))
        domain.updateDeviceFlags(device.update(requested_mb * MIB), LIVE)

    def test_found_and_settled_to_what_the_guest_holds(self):
        no_driver, busy = self._servers(self.flavor, 2)
        self._libvirt_domain(no_driver).behaviour.virtio_mem_driver = False
        self._ask(no_driver, 1024)
        self._libvirt_domain(busy).behaviour.virtio_mem_busy_kib = 512 * MIB
        self._ask(busy, 1024)
        self._ask(busy, 0)

        report = self._audit()
        self.assertEqual({
            (no_driver['id'], audit.VIRTIO_MEM_UNSETTLED, audit.WARNING),
            (no_driver['id'], audit.RECORD_LIVE_DIFFERS, audit.WARNING),
            (no_driver['id'], audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL),
            (busy['id'], audit.VIRTIO_MEM_UNSETTLED, audit.WARNING),
            (busy['id'], audit.RECORD_LIVE_DIFFERS, audit.WARNING),
            (busy['id'], audit.PLACEMENT_BELOW_LIVE, audit.CRITICAL),
        }, self._kinds(report.findings))

        report = self._audit(fix=True)
        self.assertEqual([], report.remaining)
        changes = {healed.instance_uuid: ' '.join(healed.changes)
                   for healed in report.healed}
        self.assertIn('Asked the virtio-mem device for what the guest holds, '
                      '2048 MiB (it was asked for 3072 MiB',
                      changes[no_driver['id']])
        self.assertIn('2560 MiB (it was asked for 2048 MiB',
                      changes[busy['id']])
        for server, memory_mb in ((no_driver, 2048), (busy, 2560)):
            self.assertEqual(memory_mb, self._domain_size(server)[1])
            self.assertEqual(((2, memory_mb), (2, 2048)),
                             self._record(server['id']))
            self.assertEqual((2, memory_mb),
                             self._placement_size(server['id']))
        self.assertEqual([], self._audit().findings)


class AuditCommandTest(AuditHarnessMixin,
                       compute_base.ElasticComputeTestBase):
    """``xloud-nova-ext audit`` once Nova is set up (the harness's)."""

    microversion = '2.84'

    def _command(self, *argv: str) -> tuple[int, str, str]:
        args = cli.build_parser(['audit', *argv]).parse_args(
            ['audit', *argv])
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            status = cli.audit_command(nova_context.get_admin_context(),
                                       args)
        return status, stdout.getvalue(), stderr.getvalue()

    def test_exit_status_json_and_table(self):
        self.start_compute('compute1')
        server = self._servers(self._elastic_flavor(), 1)[0]

        status, out, err = self._command('--format', 'json')
        self.assertEqual(0, status)
        body = json.loads(out)
        validate_report(body)
        self.assertEqual(('in_sync', 1), (body['audit']['status'],
                                          body['audit']['checked']))
        self.assertIn('==> compute1: 1 elastic instances', err)

        self._libvirt_domain(server).setMemoryFlags(3072 * MIB, LIVE)
        status, out, err = self._command('--format', 'json')
        self.assertEqual(1, status)
        body = json.loads(out)['audit']
        self.assertEqual(
            [('placement_below_live', 'critical'),
             ('record_live_differs', 'warning')],
            [(f['kind'], f['severity']) for f in body['findings']])
        self.assertEqual(body['findings'], body['remaining'])

        status, out, _err = self._command()
        self.assertEqual(1, status)
        lines = out.splitlines()
        self.assertEqual(['SERVER', 'HOST', 'SEVERITY', 'KIND', 'WHAT', 'IT',
                          'MEANS'], lines[0].split())
        self.assertEqual([server['id'], 'compute1', 'critical',
                          'placement_below_live'], lines[1].split()[:4])
        self.assertIn('2 findings (1 critical), 0 not checked, 0 errors; '
                      'drift', lines[-1])

        status, out, err = self._command('--fix', '--format', 'json')
        self.assertEqual(0, status)
        body = json.loads(out)['audit']
        validate_report({'audit': body})
        self.assertEqual((2, [], 'in_sync'), (
            len(body['findings']), body['remaining'], body['status']))
        self.assertEqual([server['id']],
                         [healed['server_id'] for healed in body['healed']])
        self.assertIn('healed 1 instances', err)
        self.assertEqual((0, 'in_sync'), (
            self._command('--format', 'json')[0],
            json.loads(self._command('--format', 'json')[1])['audit'][
                'status']))

    def test_unreachable_host_exits_2(self):
        self.start_compute('compute1')
        self._servers(self._elastic_flavor(), 1)
        self.flags(audit_rpc_timeout=1, group='xloud')
        self.computes['compute1'].stop()
        status, out, _err = self._command('--host', 'compute1')
        self.assertEqual(2, status)
        self.assertIn('host_unreachable', out)
        self.assertIn('Errors:', out)


class AuditCommandProcessTest(testtools.TestCase):
    """The command as operators run it: its own process, Nova set up from
    --config-file like nova-manage, on databases Nova's migrations made."""

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=REPO)
        return subprocess.run(
            [sys.executable, '-m', 'nova_ext.deploy.cli', *argv],
            capture_output=True, text=True, env=env, timeout=300, cwd=REPO)

    def test_reads_nova_conf_and_uses_its_databases(self):
        directory = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(directory, 'nova.conf')
        with open(conf, 'w') as f:
            f.write(f'[DEFAULT]\ntransport_url = fake:/\n'
                    f'[api_database]\nconnection = sqlite:///{directory}'
                    f'/api.db\n'
                    f'[database]\nconnection = sqlite:///{directory}'
                    f'/cell1.db\n')

        result = self._run('audit', '--config-file', conf)
        self.assertEqual(2, result.returncode, result.stderr)
        self.assertIn('no such table: cell_mappings', result.stderr)

        manage = os.path.join(os.path.dirname(sys.executable), 'nova-manage')
        for command in (['api_db', 'sync'],
                        ['cell_v2', 'map_cell0', '--database_connection',
                         f'sqlite:///{directory}/cell0.db'],
                        ['db', 'sync'],
                        ['cell_v2', 'create_cell', '--name', 'cell1']):
            subprocess.run([manage, '--config-file', conf, *command],
                           check=True, capture_output=True, timeout=300)
        result = self._run('audit', '--config-file', conf, '--format',
                           'json')
        self.assertEqual(0, result.returncode, result.stderr)
        body = json.loads(result.stdout)
        validate_report(body)
        self.assertEqual(('in_sync', 0, []), (
            body['audit']['status'], body['audit']['checked'],
            body['audit']['errors']))

        result = self._run('audit', '--config-file',
                           os.path.join(directory, 'absent.conf'))
        self.assertEqual(2, result.returncode)
        self.assertIn("cannot read Nova's configuration", result.stderr)


class AuditAPITest(AuditHarnessMixin, compute_base.ElasticComputeMixin,
                   api_base.ElasticAPITestBase):
    """/os-xloud-audit through Nova's API with the extension's filter."""

    microversion = '2.84'

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')
        self.flavor = self._elastic_flavor()

    def _request(self, path: str, api=None, method: str = 'GET', body=None):
        api = api or self.admin_api
        return api.api_request(
            path, method=method,
            body=None if body is None else json.dumps(body),
            headers={'Content-Type': 'application/json'})

    def test_audit_and_fix_over_the_api(self):
        drifted, clean = self._servers(self.flavor, 2)
        self._libvirt_domain(drifted).setVcpusFlags(3, LIVE)

        resp = self._request('/os-xloud-audit')
        self.assertEqual(200, resp.status_code, resp.text)
        body = resp.json()
        validate_report(body)
        self.assertEqual(
            {(drifted['id'], 'record_live_differs'),
             (drifted['id'], 'placement_below_live')},
            {(f['server_id'], f['kind']) for f in body['audit']['findings']})

        # One page of the panel: its servers only.
        resp = self._request(f'/os-xloud-audit?server_id={clean["id"]}'
                             f'&host=compute1')
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(
            [{'server_id': clean['id'], 'host': 'compute1',
              'status': 'in_sync'}], resp.json()['audit']['servers'])

        # Also under the project id prefix Nova still accepts.
        resp = self._request(
            f'/{self.admin_api.project_id}/os-xloud-audit'
            f'?server_id={drifted["id"]}')
        self.assertEqual((200, 'drift'),
                         (resp.status_code, resp.json()['audit']['status']))

        resp = self._request('/os-xloud-audit', method='POST',
                             body={'host': 'compute1', 'fix': True})
        self.assertEqual(200, resp.status_code, resp.text)
        body = resp.json()['audit']
        self.assertEqual(('in_sync', [drifted['id']]), (
            body['status'], [h['server_id'] for h in body['healed']]))
        self.assertEqual((3, 2048), self._placement_size(drifted['id']))

    def test_admin_only(self):
        [server] = self._servers(self.flavor, 1)
        self._libvirt_domain(server).setVcpusFlags(3, LIVE)
        for user, api in (('member', self.api_fixture.api),
                          ('reader', self.api_fixture.reader_api)):
            for method, body in (('GET', None), ('POST', {'fix': True})):
                with self.subTest(user=user, method=method):
                    resp = self._request('/os-xloud-audit', api=api,
                                         method=method, body=body)
                    self.assertEqual(403, resp.status_code, resp.text)
                    self.assertIn('xloud:elastic_sizing:audit',
                                  resp.json()['forbidden']['message'])
        # Nothing was healed by the refused requests.
        self.assertEqual((2, 2048), self._placement_size(server['id']))

        # The rule is Nova's like any other: policy.yaml opens it.
        self._write_policy({'os_compute_api:xloud:audit': '@'})
        resp = self._request('/os-xloud-audit', api=self.api_fixture.api)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_bad_requests(self):
        for path in ('/os-xloud-audit?server_id=not-a-uuid',
                     '/os-xloud-audit?host=a&host=b',
                     '/os-xloud-audit?all_tenants=1'):
            with self.subTest(path=path):
                self.assertEqual(400, self._request(path).status_code)
        for body in ({}, {'fix': 'yes'}, {'fix': True, 'host': ''},
                     {'fix': True, 'server_ids': []},
                     {'fix': True, 'server_ids': ['x']},
                     {'fix': True, 'force': True}):
            with self.subTest(body=body):
                resp = self._request('/os-xloud-audit', method='POST',
                                     body=body)
                self.assertEqual(400, resp.status_code, resp.text)
