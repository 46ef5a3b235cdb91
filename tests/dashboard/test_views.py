"""Views, forms, tables and policy of the Elastic Sizing panel.

Horizon's own test helpers; the plugin's API functions are mocked at the
``xloud_dashboard.api.elastic`` boundary (``test_api`` tests them against
an HTTP Nova).
"""

import dataclasses
import datetime
import html
from unittest import mock

import horizon
from django.contrib.messages import get_messages
from django.test.utils import override_settings
from django.urls import reverse
from openstack_dashboard.test import helpers

from tests.dashboard import fakecloud
from xloud_dashboard import exceptions
from xloud_dashboard.api import elastic
from xloud_dashboard.dashboards.admin.elastic_sizing import forms
from xloud_dashboard.dashboards.admin.elastic_sizing import tables as es_tables

INDEX_URL = reverse('horizon:admin:elastic_sizing:index')
BULK_URL = reverse('horizon:admin:elastic_sizing:bulk_adjust')


def adjust_url(instance_id):
    return reverse('horizon:admin:elastic_sizing:adjust', args=[instance_id])


def history_url(instance_id):
    return reverse('horizon:admin:elastic_sizing:history', args=[instance_id])


def minimums_url(flavor_id):
    return reverse('horizon:admin:elastic_sizing:edit_minimums',
                   args=[flavor_id])


def sizes_of(cloud, source='recorded'):
    return [elastic.InstanceSize.from_api(cloud.size(server, source))
            for server in cloud.servers.values()]


def flavors_of(cloud):
    return [elastic.Flavor.from_nova(flavor.as_nova())
            for flavor in cloud.flavors.values()]


class ElasticSizingTestCase(helpers.BaseAdminViewTests):
    def setUp(self):
        super().setUp()
        # The Instances tab audits its page; tests of the Sync column set
        # what the audit answers, the others find every row unaudited.
        patcher = mock.patch.object(elastic, 'instance_sync_states',
                                    return_value={})
        self.mock_instance_sync_states = patcher.start()
        self.addCleanup(patcher.stop)
        # Nova's lock state: the tab asks for the page, a refreshed row
        # and the Adjust form for their instance; nothing is locked
        # unless a test says so.
        patcher = mock.patch.object(elastic, 'locked_server_ids',
                                    return_value=set())
        self.mock_locked_server_ids = patcher.start()
        self.addCleanup(patcher.stop)
        patcher = mock.patch.object(elastic, 'server_lock_state',
                                    return_value=(False, None))
        self.mock_server_lock_state = patcher.start()
        self.addCleanup(patcher.stop)
        self.cloud = fakecloud.FakeCloud.demo(servers=4)
        self.sizes = sizes_of(self.cloud)
        # vm-0000: elastic.large (2..8 vCPUs, 4096..16384 MB);
        # vm-0001..3: elastic.small (1..4 vCPUs, 1024..4096 MB).
        self.large, self.small = self.sizes[0], self.sizes[1]


class IndexTests(ElasticSizingTestCase):
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_instances_tab_is_one_call_per_page(self):
        self.mock_instance_size_list.return_value = (self.sizes, True)
        res = self.client.get(INDEX_URL)
        self.assertTemplateUsed(res, 'admin/elastic_sizing/index.html')
        table = res.context['tab_group'].get_tab('instances')._tables[
            'instances']
        self.assertEqual(len(table.data), 4)
        self.assertContains(res, 'vm-0003')
        self.assertContains(res, '16GB')
        self.assertContains(res, '2 vCPU, 4GB')
        self.assertContains(res, 'table-row-multi-select', count=4)
        # The page ends with the last id as the next marker.
        self.assertContains(res, f'instances_marker={self.sizes[-1].id}')
        self.mock_instance_size_list.assert_called_once_with(
            helpers.IsHttpRequest(), marker=None, filters={}, readiness=True)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_next_page_passes_marker(self):
        self.mock_instance_size_list.return_value = (self.sizes[2:], False)
        res = self.client.get(INDEX_URL + '?instances_marker=abc')
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, 'Next&nbsp;&raquo;')
        self.mock_instance_size_list.assert_called_once_with(
            helpers.IsHttpRequest(), marker='abc', filters={},
            readiness=True)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_server_side_filter(self):
        self.mock_instance_size_list.return_value = (self.sizes[:1], False)
        param = 'instances__filter_elastic_instances__q'
        res = self.client.post(INDEX_URL, {param: 'compute-1',
                                           param + '_field': 'host'})
        self.assertRedirectsNoFollow(res, INDEX_URL)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.mock_instance_size_list.assert_called_once_with(
            helpers.IsHttpRequest(), marker=None,
            filters={'host': 'compute-1'}, readiness=True)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_list_error_shows_message(self):
        self.mock_instance_size_list.side_effect = exceptions.ApiError(
            'nova-api is down', 503)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertMessageCount(res, error=1)
        self.assertContains(res, 'No items to display')

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_adjusting_and_failed_rows(self):
        adjusting = self.cloud.servers[self.small.id]
        adjusting.adjustment_status = 'adjusting'
        failed = self.cloud.servers[self.large.id]
        failed.adjustment_status = 'error'
        failed.error = 'libvirt: unplug timed out'
        self.mock_instance_size_list.return_value = (sizes_of(self.cloud),
                                                     False)
        res = self.client.get(INDEX_URL)
        content = res.content.decode()
        self.assertContains(res, 'libvirt: unplug timed out')
        # The adjusting row polls itself and offers no second adjustment.
        row = content[content.index(
            f'id="instances__row__{self.small.id}"') - 300:]
        row = row[:row.index('</tr>')]
        self.assertIn('warning', row)
        self.assertIn('row_update', row)
        self.assertNotIn(adjust_url(self.small.id), row)
        failed_row = content[content.index(
            f'id="instances__row__{self.large.id}"') - 300:]
        self.assertIn('Failed', failed_row[:failed_row.index('</tr>')])

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_partial_row_stops_polling_and_says_so(self):
        partial = self.cloud.servers[self.small.id]
        partial.adjustment_status = 'partial'
        partial.error = 'partial, applied 3 vCPUs; the guest runs 2 online'
        self.mock_instance_size_list.return_value = (sizes_of(self.cloud),
                                                     False)
        content = self.client.get(INDEX_URL).content.decode()
        row = content[content.index(
            f'id="instances__row__{self.small.id}"') - 300:]
        row = row[:row.index('</tr>')]
        self.assertIn('Not in the guest', row)
        # Horizon polls a row while its status is unknown, not once down.
        self.assertIn('class="ajax-update status_down"', row)

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_row_update_uses_single_get(self):
        self.mock_instance_size_get.return_value = self.small
        res = self.client.get(
            INDEX_URL + '?action=row_update&table=instances&obj_id='
            + self.small.id, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'vm-0001')
        self.mock_instance_size_get.assert_called_once_with(
            helpers.IsHttpRequest(), self.small.id)

    @helpers.create_mocks({elastic: ['flavor_list']})
    def test_flavors_tab(self):
        self.mock_flavor_list.return_value = flavors_of(self.cloud)
        res = self.client.get(INDEX_URL + '?tab=elastic_sizing__flavors')
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'elastic.large')
        self.assertContains(res, minimums_url('11'))
        self.mock_flavor_list.assert_called_once_with(
            helpers.IsHttpRequest())

    @helpers.create_mocks({elastic: ['flavor_list']})
    def test_flavors_error(self):
        self.mock_flavor_list.side_effect = exceptions.ApiError('boom', 500)
        res = self.client.get(INDEX_URL + '?tab=elastic_sizing__flavors')
        self.assertEqual(res.status_code, 200)
        self.assertMessageCount(res, error=1)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_bulk_action_redirects_with_selected_ids(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        ids = [self.sizes[1].id, self.sizes[2].id]
        res = self.client.post(INDEX_URL, {
            'action': 'instances__bulk_adjust', 'object_ids': ids})
        self.assertRedirectsNoFollow(
            res, BULK_URL + f'?id={ids[0]}&id={ids[1]}')


def row_of(content: str, instance_id: str) -> str:
    start = content.index(f'id="instances__row__{instance_id}"')
    return content[content.rindex('<tr', 0, start):
                   content.index('</tr>', start)]


SYNC_HEADER = 'title="Whether libvirt, the recorded size and placement agree'


def deny_audit(actions, request, target=None):
    return all(rule != 'xloud:elastic_sizing:audit'
               for _scope, rule in actions)


class SyncColumnTests(ElasticSizingTestCase):
    """The Sync column: the audit's state of each row, one call a page."""

    BELOW = ('Placement holds 2 vCPUs / 4096 MiB for the instance but its '
             'guest runs at 4 vCPUs / 4096 MiB on compute-1: the host can '
             'run more than placement allows.')

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_states_are_one_call_per_page(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        drift = elastic.SyncState(elastic.SYNC_DRIFT, findings=(
            elastic.DriftFinding('placement_below_live', 'critical',
                                 self.BELOW),
            elastic.DriftFinding('record_live_differs', 'warning',
                                 'The record says <2> vCPUs.')))
        self.mock_instance_sync_states.return_value = {
            self.large.id: drift,
            self.small.id: elastic.SyncState(elastic.SYNC_IN_SYNC),
            self.sizes[2].id: elastic.SyncState(
                elastic.SYNC_UNKNOWN, reason='busy (task_state migrating)'),
        }
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.mock_instance_sync_states.assert_called_once_with(
            helpers.IsHttpRequest(), [size.id for size in self.sizes])
        content = res.content.decode()
        self.assertTrue(SYNC_HEADER in content, 'no Sync column')
        row = row_of(content, self.large.id)
        self.assertIn('Drift (critical)', row)
        # What drifts, in the tooltip (escaped) and by kind.
        self.assertIn(f'title="{html.escape(self.BELOW)}&#10;The record '
                      f'says &lt;2&gt; vCPUs."', row)
        self.assertIn('data-kind="placement_below_live"', row)
        self.assertIn('In sync', row_of(content, self.small.id))
        unknown = row_of(content, self.sizes[2].id)
        self.assertIn('Unknown', unknown)
        self.assertIn('title="busy (task_state migrating)"', unknown)
        # Not covered by the audit (not elastic): no state.
        self.assertNotIn('xloud-sync-', row_of(content, self.sizes[3].id))

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_refused_audit_hides_the_column(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        self.mock_instance_sync_states.return_value = None
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, SYNC_HEADER)
        self.assertNotContains(res, 'xloud-sync')
        self.assertContains(res, 'vm-0003')
        self.assertMessageCount(res, error=0)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_failed_audit_leaves_elastic_rows_unknown(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        self.mock_instance_sync_states.side_effect = exceptions.ApiError(
            'The server has either erred or is incapable', 500)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        row = row_of(res.content.decode(), self.large.id)
        self.assertIn('Unknown', row)
        self.assertIn('The server has either erred', row)

    @helpers.create_mocks({elastic: ['instance_size_list',
                                     'audit_offered']})
    def test_remembered_refusal_costs_no_call(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        self.mock_audit_offered.return_value = False
        res = self.client.get(INDEX_URL)
        self.assertNotContains(res, SYNC_HEADER)
        self.mock_instance_sync_states.assert_not_called()

    @override_settings(
        POLICY_CHECK_FUNCTION='tests.dashboard.test_views.deny_audit')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_no_column_without_the_audit_policy(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, SYNC_HEADER)
        self.mock_instance_sync_states.assert_not_called()

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_row_update_audits_a_finished_row_only(self):
        url = (INDEX_URL + '?action=row_update&table=instances&obj_id='
               + self.small.id)
        self.mock_instance_size_get.return_value = self.small
        self.mock_instance_sync_states.return_value = {
            self.small.id: elastic.SyncState(elastic.SYNC_IN_SYNC)}
        res = self.client.get(url, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertContains(res, 'In sync')
        self.mock_instance_sync_states.assert_called_once_with(
            helpers.IsHttpRequest(), [self.small.id])

        # While it adjusts the row polls itself: no audit per poll.
        self.mock_instance_sync_states.reset_mock()
        self.cloud.servers[self.small.id].adjustment_status = 'adjusting'
        self.mock_instance_size_get.return_value = sizes_of(self.cloud)[1]
        res = self.client.get(url, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertContains(res, 'Checked once the adjustment has ended.')
        self.mock_instance_sync_states.assert_not_called()


class AdjustTests(ElasticSizingTestCase):
    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_form_shows_and_enforces_limits(self):
        self.mock_instance_size_get.return_value = self.large
        res = self.client.get(adjust_url(self.large.id))
        self.assertTemplateUsed(res, 'admin/elastic_sizing/adjust.html')
        self.assertTemplateUsed(res, 'xloud_dashboard/_size_limits.html')
        self.assertContains(res, 'min="2"')
        self.assertContains(res, 'max="8"')
        self.assertContains(res, 'max="16384"')
        self.assertContains(res, '2 now, from 2 to 8')

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_adjust(self):
        self.mock_instance_size_get.return_value = self.large
        self.mock_adjust.return_value = {'request_id': 'req-1'}
        res = self.client.post(adjust_url(self.large.id), {
            'instance_id': self.large.id, 'vcpus': 6, 'memory_mb': 8192,
            'persist': 'on'})
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.assertMessageCount(success=1)
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), self.large.id, vcpus=6, memory_mb=8192,
            persist=True)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_persist_unchecked(self):
        self.mock_instance_size_get.return_value = self.large
        self.mock_adjust.return_value = {}
        res = self.client.post(adjust_url(self.large.id), {
            'instance_id': self.large.id, 'vcpus': 2, 'memory_mb': 4096})
        self.assertNoFormErrors(res)
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), self.large.id, vcpus=2, memory_mb=4096,
            persist=False)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_outside_limits_is_refused_by_the_form(self):
        self.mock_instance_size_get.return_value = self.large
        for vcpus, memory_mb in ((1, 4096), (9, 4096), (4, 4095),
                                 (4, 16385), ('x', 4096)):
            res = self.client.post(adjust_url(self.large.id), {
                'instance_id': self.large.id, 'vcpus': vcpus,
                'memory_mb': memory_mb, 'persist': 'on'})
            self.assertEqual(res.status_code, 200)
            self.assertTrue(res.context['form'].errors, (vcpus, memory_mb))
        self.mock_adjust.assert_not_called()

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_api_error_keeps_the_modal_open(self):
        self.mock_instance_size_get.return_value = self.large
        self.mock_adjust.side_effect = exceptions.ApiError(
            'Instance is locked', 409)
        res = self.client.post(adjust_url(self.large.id), {
            'instance_id': self.large.id, 'vcpus': 4, 'memory_mb': 4096,
            'persist': 'on'}, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertEqual(res.status_code, 200)
        self.assertTemplateUsed(res, 'admin/elastic_sizing/_adjust.html')
        self.assertContains(res, 'Instance is locked')
        self.assertIn('Instance is locked',
                      str(res.context['form'].non_field_errors()))

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_unknown_instance_redirects(self):
        self.mock_instance_size_get.side_effect = exceptions.NotFound(
            'Instance x could not be found.', 404)
        res = self.client.get(adjust_url('x'))
        self.assertRedirectsNoFollow(res, INDEX_URL)


PINNED_REASON = ('hw:cpu_policy=dedicated pins vCPUs to host CPUs '
                 '(placement PCPU, Nova\'s pinning), which a hot-plugged '
                 'vCPU would not follow')
RESIDENT_REASON = ('hw:locked_memory keeps all guest memory resident on the '
                   'host whatever the balloon says')


class AdjustabilityTests(ElasticSizingTestCase):
    """What can be adjusted, why not, and Adjust only where it applies."""

    def setUp(self):
        super().setUp()
        cloud = self.cloud
        pinned = cloud.add_flavor('pinned', 4, 4096, minimum_cpu=2,
                                  minimum_memory=2048, flavor_id='30',
                                  extra_specs={'hw:cpu_policy': 'dedicated'})
        small = cloud.flavors['10']
        self.ids = {
            'pinned': cloud.add_server('pinned-vm', pinned).id,
            'resident': cloud.add_server(
                'resident-vm', small,
                image_properties={'hw_locked_memory': 'true'}).id,
            'tiny': cloud.add_server('tiny-vm', cloud.flavors['1']).id,
            'error': cloud.add_server('error-vm', small).id,
            'locked': cloud.add_server('locked-vm', small).id,
            'elastic': self.small.id,
        }
        cloud.servers[self.ids['error']].status = 'ERROR'
        self.mock_locked_server_ids.return_value = {self.ids['locked']}

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_rows_say_why_and_offer_adjust_only_where_it_applies(self):
        self.mock_instance_size_list.return_value = (sizes_of(self.cloud),
                                                     False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        # One call for the page's lock states.
        self.mock_locked_server_ids.assert_called_once_with(
            helpers.IsHttpRequest())
        content = res.content.decode()
        expected = {
            'pinned': ('No', [PINNED_REASON]),
            'resident': ('vCPUs only', [RESIDENT_REASON]),
            'tiny': ('No', [
                'The flavor allows no other number of vCPUs (minimum = '
                'maximum = 1).', 'The flavor allows no other amount of '
                'memory (minimum = maximum = 512 MB).']),
            'error': ('No', ['The instance is in error.']),
            'locked': ('No', ['The instance is locked.']),
            'elastic': ('Yes', []),
        }
        for name, (label, reasons) in expected.items():
            with self.subTest(name):
                server_id = self.ids[name]
                row = row_of(content, server_id)
                cell = row[row.index('xloud-adjustable-'):]
                cell = cell[:cell.index('</span>')]
                self.assertIn(f'>{label}', cell)
                for reason in reasons:
                    # Once, though the pinned flavor fixes both.
                    self.assertEqual(1, cell.count(html.escape(reason)))
                offered = label != 'No'
                self.assertEqual(offered, adjust_url(server_id) in row)
                # Nor selectable for a bulk adjustment.
                self.assertEqual(offered, 'table-row-multi-select' in row)

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_refreshed_row_asks_for_its_lock(self):
        size = sizes_of(self.cloud)[-1]
        self.assertEqual(self.ids['locked'], size.id)
        self.mock_instance_size_get.return_value = size
        self.mock_server_lock_state.return_value = (True, 'maintenance')
        res = self.client.get(
            INDEX_URL + '?action=row_update&table=instances&obj_id='
            + size.id, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertContains(res, 'The instance is locked: maintenance')
        self.assertNotContains(res, adjust_url(size.id))
        self.mock_server_lock_state.assert_called_once_with(
            helpers.IsHttpRequest(), size.id)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_form_fixes_what_cannot_be_adjusted(self):
        size = next(size for size in sizes_of(self.cloud)
                    if size.id == self.ids['resident'])
        self.mock_instance_size_get.return_value = size
        self.mock_adjust.return_value = {}
        res = self.client.get(adjust_url(size.id))
        form = res.context['form']
        self.assertTrue(form.fields['memory_mb'].disabled)
        self.assertFalse(form.fields['vcpus'].disabled)
        self.assertContains(res, html.escape(RESIDENT_REASON))
        res = self.client.post(adjust_url(size.id), {
            'instance_id': size.id, 'vcpus': 3, 'memory_mb': 2048,
            'persist': 'on'})
        self.assertNoFormErrors(res)
        # The fixed dimension is not sent: the extension refuses any value
        # of it (409).
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), size.id, vcpus=3, memory_mb=None,
            persist=True)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_clean_reads_the_instance_again(self):
        before = self.small
        cases = [
            ('locked meanwhile', before, (True, 'maintenance'),
             'Instance &quot;vm-0001&quot; cannot be adjusted: The instance '
             'is locked: maintenance'),
            ('minimum applied meanwhile', dataclasses.replace(
                before, min_vcpus=3), (False, None), 'From 3 to 4 now.'),
            ('made non-elastic meanwhile', dataclasses.replace(
                before, not_adjustable={'vcpus': PINNED_REASON,
                                        'memory_mb': None}), (False, None),
             html.escape(PINNED_REASON)),
            ('an operation started', dataclasses.replace(
                before, adjustment_status='adjusting'), (False, None),
             'An adjustment is in progress.'),
        ]
        for description, fresh, lock, message in cases:
            with self.subTest(description):
                self.mock_instance_size_get.side_effect = [before, fresh]
                self.mock_server_lock_state.return_value = lock
                res = self.client.post(adjust_url(before.id), {
                    'instance_id': before.id, 'vcpus': 2,
                    'memory_mb': 2048, 'persist': 'on'})
                self.assertEqual(res.status_code, 200)
                self.assertTrue(res.context['form'].errors)
                self.assertContains(res, message)
        self.mock_adjust.assert_not_called()


class BulkFixedTests(ElasticSizingTestCase):
    def setUp(self):
        super().setUp()
        self.resident = elastic.InstanceSize.from_api(self.cloud.size(
            self.cloud.add_server(
                'resident-vm', self.cloud.flavors['10'],
                image_properties={'hw_locked_memory': 'true'}), 'live'))
        failed = self.cloud.add_server('error-vm', self.cloud.flavors['10'])
        failed.status = 'ERROR'
        self.failed = elastic.InstanceSize.from_api(self.cloud.size(
            failed, 'live'))

    def plan(self, size, **kwargs):
        return forms.plan_adjustment(size, mode='absolute', **kwargs)

    def test_fixed_dimension_is_held_or_refuses(self):
        plan = self.plan(self.resident, vcpus=3, memory_mb=2048,
                         out_of_limits=forms.OUT_OF_LIMITS_CLAMP)
        self.assertEqual((3, None, True), (plan.vcpus, plan.memory_mb,
                                           plan.clamped))
        self.assertEqual("resident-vm: 1 → 3 vCPUs (held to the flavor's "
                         "limits)", plan.describe())
        # Asking nothing of it is no clamp.
        plan = self.plan(self.resident, vcpus=3, memory_mb=None,
                         out_of_limits=forms.OUT_OF_LIMITS_REFUSE)
        self.assertEqual((3, None, False, None), (
            plan.vcpus, plan.memory_mb, plan.clamped, plan.refused))
        plan = self.plan(self.resident, vcpus=3, memory_mb=2048,
                         out_of_limits=forms.OUT_OF_LIMITS_REFUSE)
        self.assertEqual(f'resident-vm: {RESIDENT_REASON}', plan.refused)

    def test_instance_that_cannot_be_adjusted_is_refused(self):
        plan = self.plan(self.failed, vcpus=2, memory_mb=None,
                         out_of_limits=forms.OUT_OF_LIMITS_CLAMP)
        self.assertEqual('error-vm: The instance is in error.', plan.refused)

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_bulk_sends_only_what_can_be_adjusted(self):
        chosen = [self.small, self.resident, self.failed]
        self.mock_instance_sizes_get.return_value = {
            size.id: size for size in chosen}
        self.mock_adjust_many.side_effect = lambda request, items: [
            elastic.AdjustOutcome(item, accepted=True) for item in items]
        res = self.client.post(BULK_URL, {
            'instance_ids': ','.join(size.id for size in chosen),
            'mode': 'absolute', 'out_of_limits': 'clamp', 'persist': 'on',
            'vcpus': 2, 'memory_mb': 2048})
        self.assertNoFormErrors(res)
        self.mock_adjust_many.assert_called_once_with(
            helpers.IsHttpRequest(), [
                elastic.AdjustRequest(self.small.id, 2, 2048, True),
                elastic.AdjustRequest(self.resident.id, 2, None, True)])
        self.assertMessageCount(success=1, warning=1)
        self.assertIn('error-vm: The instance is in error.',
                      messages_of(res)[-1])


class PlanTests(ElasticSizingTestCase):
    def plan(self, size, **kwargs):
        kwargs.setdefault('out_of_limits', forms.OUT_OF_LIMITS_CLAMP)
        return forms.plan_adjustment(size, **kwargs)

    def test_absolute_inside_limits(self):
        plan = self.plan(self.small, mode='absolute', vcpus=3,
                         memory_mb=None)
        self.assertEqual((plan.vcpus, plan.memory_mb), (3, 1024))
        self.assertFalse(plan.clamped or plan.refused)

    def test_relative_steps(self):
        plan = self.plan(self.large, mode='relative', vcpus=1,
                         memory_mb=1024)
        self.assertEqual((plan.vcpus, plan.memory_mb), (3, 5120))

    def test_clamped_to_each_instances_own_limits(self):
        small = self.plan(self.small, mode='absolute', vcpus=6,
                          memory_mb=512)
        large = self.plan(self.large, mode='absolute', vcpus=6,
                          memory_mb=512)
        self.assertEqual((small.vcpus, small.memory_mb), (4, 1024))
        self.assertEqual((large.vcpus, large.memory_mb), (6, 4096))
        self.assertTrue(small.clamped and large.clamped)
        self.assertIn("held to the flavor's limits", small.describe())

    def test_refused(self):
        plan = self.plan(self.large, mode='relative', vcpus=-1,
                         memory_mb=None,
                         out_of_limits=forms.OUT_OF_LIMITS_REFUSE)
        self.assertIn('1 vCPUs is outside its limits 2 to 8', plan.refused)
        self.assertTrue(plan.unchanged)

    def test_virtio_mem_whole_blocks_only(self):
        flavor = dataclasses.replace(
            self.large.flavor, memory_model=elastic.MEMORY_MODEL_VIRTIO_MEM)
        virtio_mem = dataclasses.replace(self.large, flavor=flavor)
        for size, change, refused in (
                (virtio_mem, {'mode': 'absolute', 'memory_mb': 6001}, True),
                (virtio_mem, {'mode': 'relative', 'memory_mb': 1}, True),
                (virtio_mem, {'mode': 'absolute', 'memory_mb': 6002}, False),
                (self.large, {'mode': 'absolute', 'memory_mb': 6001}, False)):
            with self.subTest(model=size.flavor.memory_model, **change):
                plan = self.plan(size, vcpus=None, **change)
                self.assertEqual(refused, plan.refused is not None)
        plan = self.plan(virtio_mem, mode='absolute', vcpus=3,
                         memory_mb=6001)
        self.assertEqual(
            f'{self.large.name}: current_memory_mb 6001 is not a multiple of '
            '2 MiB: the server\'s flavor plugs memory in blocks of 2 MiB '
            '(xloud:memory_model=virtio-mem).', plan.refused)
        self.assertTrue(plan.unchanged)


class BulkAdjustTests(ElasticSizingTestCase):
    def post(self, ids, **data):
        values = {'instance_ids': ','.join(ids), 'mode': 'absolute',
                  'out_of_limits': 'clamp', 'persist': 'on'}
        values.update(data)
        return self.client.post(BULK_URL, values)

    def test_form_lists_count(self):
        ids = [size.id for size in self.sizes[:3]]
        query = '&'.join(f'id={server_id}' for server_id in ids)
        res = self.client.get(f'{BULK_URL}?{query}')
        self.assertTemplateUsed(res, 'admin/elastic_sizing/bulk_adjust.html')
        self.assertContains(res, 'Adjust 3 instances at once.')
        self.assertContains(res, ','.join(ids))

    def test_no_selection_redirects(self):
        res = self.client.get(BULK_URL)
        self.assertRedirectsNoFollow(res, INDEX_URL)

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_absolute_with_clamping_is_one_concurrent_batch(self):
        chosen = self.sizes[:3]
        self.mock_instance_sizes_get.return_value = {
            size.id: size for size in chosen}
        self.mock_adjust_many.side_effect = lambda request, items: [
            elastic.AdjustOutcome(item, accepted=True) for item in items]
        res = self.post([size.id for size in chosen], vcpus=6,
                        memory_mb=2048)
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_adjust_many.assert_called_once_with(
            helpers.IsHttpRequest(), [
                elastic.AdjustRequest(chosen[0].id, 6, 4096, True),
                elastic.AdjustRequest(chosen[1].id, 4, 2048, True),
                elastic.AdjustRequest(chosen[2].id, 4, 2048, True)])
        self.assertMessageCount(success=1)

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_relative_refuse_and_failures_are_reported(self):
        for server in list(self.cloud.servers.values())[1:3]:
            server.memory_mb = 2048
        chosen = sizes_of(self.cloud)[:3]
        self.mock_instance_sizes_get.return_value = {
            size.id: size for size in chosen}

        def outcomes(request, items):
            return [elastic.AdjustOutcome(items[0], accepted=True),
                    elastic.AdjustOutcome(items[1], accepted=False,
                                          error='Instance is locked')]
        self.mock_adjust_many.side_effect = outcomes
        # +3 vCPUs: the large flavor (2 -> 5 of 8) and the small ones
        # (1 -> 4 of 4) fit; +4 would not.
        res = self.post([size.id for size in chosen], mode='relative',
                        vcpus_step=3, memory_step=-1024,
                        out_of_limits='refuse')
        self.assertNoFormErrors(res)
        sent = self.mock_adjust_many.call_args.args[1]
        # The large flavor's memory floor (4096) refuses it.
        self.assertEqual([item.server_id for item in sent],
                         [chosen[1].id, chosen[2].id])
        self.assertEqual((sent[0].vcpus, sent[0].memory_mb), (4, 1024))
        self.assertMessageCount(success=1, warning=1)

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_nothing_adjusted_keeps_the_form_open(self):
        self.mock_instance_sizes_get.return_value = {
            self.large.id: self.large,
            'gone': exceptions.NotFound('Instance gone could not be found.',
                                        404)}
        res = self.post([self.large.id, 'gone'], vcpus=20,
                        out_of_limits='refuse')
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'No instance was adjusted')
        self.assertContains(res, 'Instance gone could not be found.')
        self.mock_adjust_many.assert_not_called()

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_validation(self):
        ids = [self.large.id]
        for data in ({}, {'mode': 'relative'},
                     {'mode': 'relative', 'vcpus_step': 0},
                     {'vcpus': 0}, {'mode': 'sideways', 'vcpus': 2}):
            res = self.post(ids, **data)
            self.assertEqual(res.status_code, 200, data)
            self.assertTrue(res.context['form'].errors, data)
        res = self.post([], vcpus=2)
        self.assertTrue(res.context['form'].errors)
        self.mock_instance_sizes_get.assert_not_called()
        self.mock_adjust_many.assert_not_called()


def messages_of(res) -> list[str]:
    """The messages a request queued for the next page."""
    return [str(message) for message in get_messages(res.wsgi_request)]


def report_of(cloud, flavor_id, apply=False):
    """The fake's answer of the flavor minimums API, as the panel reads it."""
    path = f'/v2.1/os-xloud-flavor-minimums/{flavor_id}'
    if apply:
        _status, body = cloud.handle('POST', path + '/action', {},
                                     {'apply': {}})
    else:
        _status, body = cloud.handle('GET', path, {}, None)
    return elastic.MinimumsReport.from_api(body['flavor_minimums'])


def apply_url(flavor_id):
    return reverse('horizon:admin:elastic_sizing:apply_minimums',
                   args=[flavor_id])


class EditMinimumsTests(ElasticSizingTestCase):
    def setUp(self):
        super().setUp()
        self.flavor = elastic.Flavor.from_nova(
            self.cloud.flavors['10'].as_nova())

    def post(self, **data):
        values = {'flavor_id': '10', 'minimum_cpu': '', 'minimum_memory': '',
                  'memory_model': 'balloon'}
        values.update(data)
        return self.client.post(minimums_url('10'), values)

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get']})
    def test_form(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        res = self.client.get(minimums_url('10'))
        self.assertTemplateUsed(res,
                                'admin/elastic_sizing/edit_minimums.html')
        self.assertContains(res, 'value="1024"')
        self.assertContains(res, 'max="4096"')
        # The memory floor bounds the field and is said.
        self.assertContains(res, 'min="256"')
        self.assertContains(res, 'No guest is given less than 256MB')
        self.assertContains(res, 'xloud:minimum_cpu and xloud:minimum_memory')
        self.assertContains(res, 'no resources:* extra specs')
        self.assertNotContains(res, 'deprecated unscoped')

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get']})
    def test_form_names_the_deprecated_keys(self):
        legacy = self.cloud.add_flavor('seed.flavor', 4, 4096, minimum_cpu=2,
                                       legacy=True, flavor_id='20')
        self.mock_flavor_get.return_value = elastic.Flavor.from_nova(
            legacy.as_nova())
        self.mock_flavor_minimums_get.side_effect = exceptions.NotFound(
            'The resource could not be found.', 404)
        res = self.client.get(minimums_url('20'))
        self.assertContains(res, 'value="2"')
        self.assertContains(res, 'the deprecated unscoped extra specs '
                                 'minimum_cpu: saving writes the scoped keys')
        # An extension without the API: the default floor.
        self.assertContains(res, 'min="256"')

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_saved_with_instances_carrying_other_minimums(self):
        self.mock_flavor_get.return_value = self.flavor
        before = report_of(self.cloud, '10')
        # What the save does, as Nova would see it.
        self.cloud.flavors['10'].extra_specs['xloud:minimum_cpu'] = '2'
        self.cloud.servers[self.small.id].operation = 'rebooting'
        self.mock_flavor_minimums_get.side_effect = [
            before, report_of(self.cloud, '10')]
        res = self.post(minimum_cpu='2', minimum_memory='1024')
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(
            res, INDEX_URL + '?tab=elastic_sizing__flavors')
        self.mock_flavor_set_minimums.assert_called_once_with(
            helpers.IsHttpRequest(), '10', minimum_cpu=2,
            minimum_memory=1024, memory_model='balloon', autosize=None)
        self.assertMessageCount(success=1, warning=1)
        messages = messages_of(res)
        self.assertIn('Updated the minimums of flavor "elastic.small".',
                      messages)
        [warning] = [html.unescape(message) for message in messages
                     if 'carry other minimums' in message]
        self.assertIn('2 of its 2 instances carry other minimums or another '
                      'memory method and keep them until the flavor\'s are '
                      'applied to them. 1 of them has an operation in '
                      'progress.', warning)
        # A button that opens the apply form.
        self.assertIn(f'href="{apply_url("10")}"', warning)
        self.assertIn('ajax-modal', warning)

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_saved_with_every_instance_current(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        res = self.post(minimum_cpu='1', minimum_memory='1024')
        self.assertNoFormErrors(res)
        self.assertMessageCount(success=1, warning=0)
        self.assertEqual(
            ['Updated the minimums of flavor "elastic.small". All 2 of its '
             'instances carry them.'], messages_of(res))

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_saved_without_instances_or_report(self):
        tiny = elastic.Flavor.from_nova(self.cloud.flavors['1'].as_nova())
        self.mock_flavor_get.return_value = tiny
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '1')
        res = self.client.post(minimums_url('1'), {
            'flavor_id': '1', 'minimum_cpu': '1', 'minimum_memory': '256',
            'memory_model': 'balloon'})
        self.assertNoFormErrors(res)
        self.assertEqual(
            ['Updated the minimums of flavor "m1.tiny". It has no '
             'instances.'], messages_of(res))

        # A cloud that does not offer the report: the save is all it says.
        self.mock_flavor_minimums_get.side_effect = exceptions.ApiError(
            "Policy doesn't allow it", 403)
        res = self.client.post(minimums_url('1'), {
            'flavor_id': '1', 'minimum_cpu': '1', 'minimum_memory': '',
            'memory_model': 'balloon'})
        self.assertNoFormErrors(res)
        # The first save's message is still queued: no page showed it.
        self.assertEqual('Updated the minimums of flavor "m1.tiny".',
                         messages_of(res)[-1])

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_set_and_clear(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        res = self.post(minimum_cpu='2')
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(
            res, INDEX_URL + '?tab=elastic_sizing__flavors')
        self.mock_flavor_set_minimums.assert_called_once_with(
            helpers.IsHttpRequest(), '10', minimum_cpu=2,
            minimum_memory=None, memory_model='balloon', autosize=None)

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_validation(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        for cpu, memory in (('0', ''), ('5', ''), ('', '4097'),
                            ('1.5', ''), ('', '-1'), ('two', ''),
                            # Below [xloud] memory_floor_mb.
                            ('', '255')):
            res = self.post(minimum_cpu=cpu, minimum_memory=memory)
            self.assertTrue(res.context['form'].errors, (cpu, memory))
        self.mock_flavor_set_minimums.assert_not_called()

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_set_minimums',
                                     'flavor_minimums_get']})
    def test_api_error_keeps_the_modal_open(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        self.mock_flavor_set_minimums.side_effect = exceptions.ApiError(
            'Validation failed', 400)
        res = self.post(minimum_cpu='2', minimum_memory='2048')
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'Validation failed')

    @helpers.create_mocks({elastic: ['flavor_get']})
    def test_unknown_flavor_redirects(self):
        self.mock_flavor_get.side_effect = exceptions.NotFound('gone', 404)
        res = self.client.get(minimums_url('99'))
        self.assertRedirectsNoFollow(
            res, INDEX_URL + '?tab=elastic_sizing__flavors')


VIRTIO_MEM_RAM_MISFIT = (
    "Validation failed; the flavor's ram is not a multiple of 2 MiB: "
    "xloud:memory_model=virtio-mem plugs memory in blocks of 2 MiB.")


class MemoryMethodEditorTests(ElasticSizingTestCase):
    """The memory method in the minimums editor: the panel's API
    functions run, their Nova calls answered by the fake (``test_api``
    sends the same over HTTP)."""

    def setUp(self):
        super().setUp()
        # What reached the fake Nova, with the bodies.
        self.handled = mock.patch.object(self.cloud, 'handle',
                                         wraps=self.cloud.handle).start()
        mock.patch.object(elastic, '_call', self.call_fake).start()
        self.addCleanup(mock.patch.stopall)

    def call_fake(self, request, method, path, *, microversion, json=None,
                  params=None):
        try:
            _status, body = self.cloud.handle(method, '/v2.1' + path,
                                              params or {}, json)
        except fakecloud.HTTPError as exc:
            error = (exceptions.NotFound if exc.status == 404
                     else exceptions.ApiError)
            raise error(exc.message, exc.status)
        return body or {}

    def writes(self, flavor_id: str) -> list[tuple[str, str, dict]]:
        """The extra spec writes the fake Nova was asked for."""
        path = f'/v2.1/flavors/{flavor_id}/os-extra_specs'
        return [(method, called_path.removeprefix(path), body)
                for method, called_path, _query, body in (
                    call.args for call in self.handled.call_args_list)
                if method != 'GET' and called_path.startswith(path)]

    def post(self, flavor_id, **data):
        return self.client.post(minimums_url(flavor_id), {
            'flavor_id': flavor_id, **data})

    def test_form_offers_the_method_the_flavor_has(self):
        res = self.client.get(minimums_url('10'))
        form = res.context['form']
        self.assertEqual('balloon', form.initial['memory_model'])
        self.assertContains(res, 'Memory method')
        self.assertContains(res, 'An existing instance gets a new method '
                                 'once the flavor')
        self.cloud.flavors['10'].extra_specs['xloud:memory_model'] = (
            'virtio-mem')
        res = self.client.get(minimums_url('10'))
        self.assertEqual('virtio-mem',
                         res.context['form'].initial['memory_model'])
        self.assertContains(
            res, '<option value="virtio-mem" selected="selected">')

    def test_editor_sets_keeps_and_removes_the_key(self):
        specs = self.cloud.flavors['10'].extra_specs
        minimums = {'minimum_cpu': '1', 'minimum_memory': '1024'}
        res = self.post('10', memory_model='virtio-mem', **minimums)
        self.assertNoFormErrors(res)
        self.assertEqual('virtio-mem', specs['xloud:memory_model'])
        self.assertEqual([('POST', '', {'extra_specs': {
            'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024',
            'xloud:memory_model': 'virtio-mem'}})], self.writes('10'))
        self.assertIn('Instances of flavor "elastic.small" booted or resized '
                      'from now on use the memory method virtio-mem; an '
                      'existing one gets it once the flavor\'s settings are '
                      'applied to it and its domain is generated again (hard '
                      'reboot, cold migration, unshelve).',
                      [html.unescape(text) for text in messages_of(res)])

        # Unchanged: the key is not written again, nothing is said of it.
        self.handled.reset_mock()
        res = self.post('10', memory_model='virtio-mem', **minimums)
        self.assertNoFormErrors(res)
        self.assertEqual([('POST', '', {'extra_specs': {
            'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024'}})],
            self.writes('10'))
        self.assertEqual(1, sum('use the memory method' in text
                                for text in messages_of(res)))

        # The balloon is the key's absence.
        self.handled.reset_mock()
        res = self.post('10', memory_model='balloon', **minimums)
        self.assertNoFormErrors(res)
        self.assertNotIn('xloud:memory_model', specs)
        self.assertTrue(any('use the memory method Balloon;' in text
                            for text in messages_of(res)))
        self.assertEqual(
            [('POST', '', {'extra_specs': {
                'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024',
                'xloud:memory_model': 'balloon'}}),
             ('DELETE', '/xloud:memory_model', None)], self.writes('10'))
        self.handled.reset_mock()
        res = self.post('10', memory_model='balloon', **minimums)
        self.assertNoFormErrors(res)
        self.assertNotIn('xloud:memory_model', specs)
        self.assertEqual([('POST', '', {'extra_specs': {
            'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024'}})],
            self.writes('10'))

    def test_not_whole_blocks_is_refused_and_changes_nothing(self):
        self.cloud.add_flavor('odd', 2, 1025, minimum_memory=512,
                              flavor_id='21')
        before = {flavor_id: dict(flavor.extra_specs)
                  for flavor_id, flavor in self.cloud.flavors.items()}
        res = self.post('21', minimum_memory='512',
                        memory_model='virtio-mem')
        self.assertEqual(200, res.status_code)
        self.assertEqual([VIRTIO_MEM_RAM_MISFIT],
                         res.context['form'].errors['memory_model'])
        res = self.post('10', minimum_cpu='1', minimum_memory='1025',
                        memory_model='virtio-mem')
        self.assertEqual(
            ['Validation failed; xloud:minimum_memory=1025 is not a '
             'multiple of 2 MiB: xloud:memory_model=virtio-mem plugs '
             'memory in blocks of 2 MiB.'],
            res.context['form'].errors['minimum_memory'])
        res = self.post('10', minimum_cpu='1', minimum_memory='1024',
                        memory_model='dimm')
        self.assertEqual(['Select a valid choice. dimm is not one of the '
                          'available choices.'],
                         res.context['form'].errors['memory_model'])
        # The balloon takes any size.
        res = self.post('21', minimum_memory='513', memory_model='balloon')
        self.assertNoFormErrors(res)
        self.assertEqual([], self.writes('10'))
        self.assertEqual(
            [('POST', '', {'extra_specs': {'xloud:minimum_memory': '513'}})],
            self.writes('21'))
        before['21']['xloud:minimum_memory'] = '513'
        self.assertEqual(before, {
            flavor_id: flavor.extra_specs
            for flavor_id, flavor in self.cloud.flavors.items()})

    def test_the_apis_refusal_reaches_the_user(self):
        """What only Nova's API knows (memory encryption) is refused by
        it, in the form, and nothing is changed."""
        specs = self.cloud.flavors['10'].extra_specs
        specs['hw:mem_encryption'] = 'true'
        before = dict(specs)
        res = self.post('10', minimum_cpu='1', minimum_memory='1024',
                        memory_model='virtio-mem')
        self.assertEqual(200, res.status_code)
        self.assertContains(res, 'Unable to update the minimums of flavor '
                                 '&quot;elastic.small&quot;')
        self.assertContains(res, 'hw:mem_encryption with '
                                 'xloud:memory_model=virtio-mem')
        self.assertEqual(before, specs)


class MemoryMethodDisplayTests(ElasticSizingTestCase):
    """The method of flavors and instances, and a virtio-mem device's
    readiness."""

    def setUp(self):
        super().setUp()
        virtio = self.cloud.add_flavor(
            'elastic.virtio', 4, 4096, minimum_cpu=1, minimum_memory=1024,
            flavor_id='12', extra_specs={'xloud:memory_model': 'virtio-mem'})
        self.plugged = self.cloud.add_server(
            'vm-virtio', virtio, server_id='00000000-0000-4000-8000-'
                                           '000000000100')
        self.plugged.memory_mb = self.plugged.boot_memory_mb = 2048
        self.plugged.recorded = True
        self.balloon = next(iter(self.cloud.servers.values()))

    @helpers.create_mocks({elastic: ['flavor_list']})
    def test_flavors_tab_shows_the_method(self):
        self.mock_flavor_list.return_value = flavors_of(self.cloud)
        res = self.client.get(INDEX_URL + '?tab=elastic_sizing__flavors')
        table = res.context['tab_group'].get_tab('flavors')._tables[
            'flavors']
        methods = {row.datum.name: row.cells['memory_model'].data
                   for row in table.get_rows()}
        self.assertEqual({'elastic.small': 'Balloon',
                          'elastic.large': 'Balloon', 'm1.tiny': 'Balloon',
                          'elastic.virtio': 'virtio-mem'},
                         {name: str(method)
                          for name, method in methods.items()})
        self.assertContains(res, 'Memory Method')

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_instances_show_the_method_and_the_device(self):
        self.mock_instance_size_list.return_value = (listed_of(self.cloud),
                                                     False)
        content = self.client.get(INDEX_URL).content.decode()
        virtio = row_of(content, self.plugged.id)
        self.assertIn('<span class="xloud-memory" '
                      'data-memory-model="virtio-mem" data-toggle="tooltip" '
                      'data-placement="left" title="Memory method: '
                      'virtio-mem">2GB</span>', virtio)
        self.assertIn('class="xloud-ready xloud-ready-ok" '
                      'data-check="virtio_mem" data-state="plugged"', virtio)
        cell = virtio[virtio.index('xloud-readiness-checks'):]
        lines = html.unescape(cell[cell.index('title="') + 7:
                                   cell.index('">')]).split('\n')
        self.assertIn('virtio-mem: plugged, the guest holds all the memory '
                      'its device was asked to add', lines)
        self.assertIn('virtio-mem: 1GB plugged of 1GB asked, beyond its base '
                      'memory', lines)
        balloon = row_of(content, self.balloon.id)
        self.assertIn('title="Memory method: Balloon"', balloon)
        self.assertNotIn('virtio_mem', balloon)
        self.assertNotIn('virtio-mem', balloon)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_a_guest_without_a_virtio_mem_driver(self):
        self.plugged.virtio_mem_driver = False
        self.mock_instance_size_list.return_value = (listed_of(self.cloud),
                                                     False)
        content = self.client.get(INDEX_URL).content.decode()
        row = row_of(content, self.plugged.id)
        self.assertIn('class="xloud-ready xloud-ready-no" '
                      'data-check="virtio_mem" data-state="not_plugging"',
                      row)
        self.assertIn('virtio-mem: 0B plugged of 1GB asked', row)
        # Readiness says why its memory cannot be adjusted.
        self.assertIn('Its guest has plugged none of the 1024 MiB its '
                      'virtio-mem device was asked to add',
                      html.unescape(row))
        self.assertIn('vCPUs only', row)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_adjust_form_takes_whole_blocks_for_virtio_mem(self):
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.plugged.id)
        self.mock_adjust.return_value = {}
        res = self.client.get(adjust_url(self.plugged.id))
        self.assertContains(res, '<dd class="xloud-memory-model" '
                                 'data-memory-model="virtio-mem">')
        res = self.client.post(adjust_url(self.plugged.id), {
            'instance_id': self.plugged.id, 'vcpus': 1, 'memory_mb': 3071,
            'persist': 'on'})
        self.assertEqual(
            ["current_memory_mb 3071 is not a multiple of 2 MiB: the "
             "server's flavor plugs memory in blocks of 2 MiB "
             "(xloud:memory_model=virtio-mem)."],
            res.context['form'].errors['memory_mb'])
        self.mock_adjust.assert_not_called()
        # The balloon takes any size.
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.small.id)
        res = self.client.post(adjust_url(self.small.id), {
            'instance_id': self.small.id, 'vcpus': 1, 'memory_mb': 3071,
            'persist': 'on'})
        self.assertNoFormErrors(res)
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), self.small.id, vcpus=1, memory_mb=3071,
            persist=True)

    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history_shows_the_method_and_the_device(self):
        self.mock_adjustment_history.return_value = []
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.plugged.id)
        content = self.client.get(history_url(self.plugged.id)
                                  ).content.decode()
        self.assertIn('<dd class="xloud-memory-model" '
                      'data-memory-model="virtio-mem">virtio-mem</dd>',
                      content)
        self.assertIn('data-check="virtio_mem" data-state="plugged"', content)
        self.assertIn('<dd class="xloud-virtio-mem-blocks">1GB plugged of '
                      '1GB asked, beyond its base memory</dd>', content)

        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.balloon.id)
        content = self.client.get(history_url(self.balloon.id)
                                  ).content.decode()
        self.assertIn('<dd class="xloud-memory-model" '
                      'data-memory-model="balloon">Balloon</dd>', content)
        self.assertNotIn('virtio_mem', content)
        self.assertNotIn('xloud-virtio-mem-blocks', content)


class ApplyMinimumsTests(ElasticSizingTestCase):
    """The flavor's minimums applied to its existing instances."""

    def setUp(self):
        super().setUp()
        self.flavor = elastic.Flavor.from_nova(
            self.cloud.flavors['10'].as_nova())
        # Raised to 2 vCPUs: both small instances (at 1) are below; one
        # is busy.
        self.cloud.flavors['10'].extra_specs['xloud:minimum_cpu'] = '2'
        self.idle, self.busy = self.sizes[1].id, self.sizes[2].id
        self.cloud.servers[self.busy].operation = 'migrating'

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get']})
    def test_form_shows_how_they_stand(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_get.return_value = report_of(self.cloud,
                                                               '10')
        res = self.client.get(apply_url('10'))
        self.assertTemplateUsed(res,
                                'admin/elastic_sizing/apply_minimums.html')
        content = res.content.decode()
        for css, value in (('current', 0), ('stale', 2), ('busy', 1),
                           ('below', 2)):
            self.assertIn(f'<dd class="xloud-minimums-{css}">{value}</dd>',
                          content)
        self.assertContains(res, 'No guest is resized')

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get',
                                     'flavor_minimums_apply']})
    def test_apply_reports_each_outcome(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_apply.return_value = report_of(
            self.cloud, '10', apply=True)
        res = self.client.post(apply_url('10'), {'flavor_id': '10'})
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(
            res, INDEX_URL + '?tab=elastic_sizing__flavors')
        self.mock_flavor_minimums_apply.assert_called_once_with(
            helpers.IsHttpRequest(), '10')
        # The fake applied them to the idle instance only.
        self.assertEqual(
            {'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '1024'},
            self.cloud.servers[self.idle].embedded_specs)
        self.assertEqual('1', self.cloud.servers[self.busy].embedded_specs[
            'xloud:minimum_cpu'])
        self.mock_flavor_minimums_get.assert_not_called()
        self.assertEqual([
            'Applied the minimums of flavor "elastic.small" to 1 instance.',
            f'1 instance has an operation in progress and keeps its '
            f'minimums; apply again once it has ended: {self.busy}',
            f'1 instance runs below the new minimums and keeps running as '
            f'it is; adjust it: {self.idle}',
        ], messages_of(res))

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get',
                                     'flavor_minimums_apply']})
    def test_failures_are_errors(self):
        self.mock_flavor_get.return_value = self.flavor
        applied = report_of(self.cloud, '10', apply=True)
        failed = dataclasses.replace(
            applied.servers[0], result='error',
            message='The embedded flavor could not be saved: DBError')
        self.mock_flavor_minimums_apply.return_value = dataclasses.replace(
            applied, updated=0, servers=(failed,),
            errors=('Cell cell2 could not be read: did not answer in time; '
                    'its instances are not counted.',))
        res = self.client.post(apply_url('10'), {'flavor_id': '10'})
        self.assertNoFormErrors(res)
        self.assertMessageCount(success=0, error=1)
        self.assertEqual(
            [f'Not applied: {failed.server_id}: The embedded flavor could '
             f'not be saved: DBError; Cell cell2 could not be read: did not '
             f'answer in time; its instances are not counted.'],
            messages_of(res))

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get',
                                     'flavor_minimums_apply']})
    def test_nothing_to_apply(self):
        self.cloud.servers[self.busy].operation = None
        report_of(self.cloud, '10', apply=True)
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_apply.return_value = report_of(
            self.cloud, '10', apply=True)
        res = self.client.post(apply_url('10'), {'flavor_id': '10'})
        self.assertNoFormErrors(res)
        self.assertEqual(['Every instance of flavor "elastic.small" carries '
                          'its minimums.'], messages_of(res))

    @helpers.create_mocks({elastic: ['flavor_get', 'flavor_minimums_get',
                                     'flavor_minimums_apply']})
    def test_api_error_keeps_the_modal_open(self):
        self.mock_flavor_get.return_value = self.flavor
        self.mock_flavor_minimums_apply.side_effect = exceptions.ApiError(
            "Policy doesn't allow xloud:elastic_sizing:flavor_minimums to be "
            "performed.", 403)
        res = self.client.post(apply_url('10'), {'flavor_id': '10'})
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'Unable to apply the minimums of flavor '
                                 '&quot;elastic.small&quot;: Policy')

    @helpers.create_mocks({elastic: ['flavor_list']})
    def test_flavors_tab_offers_it(self):
        self.mock_flavor_list.return_value = flavors_of(self.cloud)
        res = self.client.get(INDEX_URL + '?tab=elastic_sizing__flavors')
        self.assertContains(res, apply_url('10'))


class HistoryTests(ElasticSizingTestCase):
    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history(self):
        now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
        record = 'vcpus 2 -> 4, memory_mb 4096 -> 8192, persisted'
        shown = self.cloud.size(self.cloud.servers[self.large.id], 'live')
        shown['changes'] = [{'request_id': 'req-1',
                             'changed_at': '2026-01-02T03:04:06Z',
                             'details': record}]
        size = elastic.InstanceSize.from_api(shown)
        self.mock_instance_size_get.return_value = size
        self.mock_adjustment_history.return_value = [
            elastic.HistoryEntry('req-2', 'admin-user', now, None, 'Error',
                                 'cannot set memory', {}),
            elastic.HistoryEntry(
                'req-1', 'admin-user', now, now, 'Success', record,
                elastic.parse_details(record))]
        res = self.client.get(history_url(self.large.id))
        self.assertTemplateUsed(res, 'admin/elastic_sizing/history.html')
        self.assertContains(res, 'vm-0000')
        self.assertContains(res, 'vCPUs 2 → 4, memory 4GB → 8GB')
        self.assertContains(res, 'cannot set memory')
        self.assertContains(res, html.escape(record))
        self.assertContains(res, '2026-01-02 03:04:05')
        # The page's one single GET serves the header and the changes.
        self.mock_instance_size_get.assert_called_once_with(
            helpers.IsHttpRequest(), self.large.id)
        self.mock_adjustment_history.assert_called_once_with(
            helpers.IsHttpRequest(), self.large.id, changes=size.changes)

    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history_error(self):
        self.mock_instance_size_get.return_value = self.large
        self.mock_adjustment_history.side_effect = exceptions.ApiError(
            'Policy does not allow', 403)
        res = self.client.get(history_url(self.large.id))
        self.assertEqual(res.status_code, 200)
        self.assertMessageCount(res, error=1)


def deny_adjust(actions, request, target=None):
    return all(rule != 'xloud:elastic_sizing:adjust'
               for _scope, rule in actions)


class PolicyTests(ElasticSizingTestCase):
    @override_settings(POLICY_CHECK_FUNCTION='openstack_auth.policy.check')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_admin_passes_the_shipped_rules(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, adjust_url(self.large.id))

    @override_settings(
        POLICY_CHECK_FUNCTION='tests.dashboard.test_views.deny_adjust')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_adjust_actions_hidden_without_adjust_policy(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, adjust_url(self.large.id))
        self.assertNotContains(res, 'instances__bulk_adjust')
        self.assertContains(res, history_url(self.large.id))


class NonAdminTests(helpers.TestCase):
    @override_settings(POLICY_CHECK_FUNCTION='openstack_auth.policy.check')
    def test_member_does_not_see_the_panel(self):
        panel = horizon.get_dashboard('admin').get_panel('elastic_sizing')
        request = self.factory.get(INDEX_URL)
        with mock.patch.object(elastic, 'is_extension_offered') as offered:
            self.assertFalse(panel.allowed({'request': request}))
        offered.assert_not_called()
        res = self.client.get(INDEX_URL)
        self.assertNotEqual(res.status_code, 200)


class PanelTests(helpers.BaseAdminViewTests):
    def test_panel_follows_the_extension(self):
        panel = horizon.get_dashboard('admin').get_panel('elastic_sizing')
        request = self.factory.get(INDEX_URL)
        with mock.patch.object(elastic, 'is_extension_offered',
                               return_value=False) as offered:
            self.assertFalse(panel.allowed({'request': request}))
            offered.return_value = True
            self.assertTrue(panel.allowed({'request': request}))
        self.assertEqual(offered.call_count, 2)

    def test_panel_is_in_admin_compute(self):
        dashboard = horizon.get_dashboard('admin')
        group = dashboard.get_panel_group('compute')
        self.assertIn('elastic_sizing', [panel.slug for panel in group])


EXPOSURE_URL = INDEX_URL + '?tab=elastic_sizing__host_exposure'


def deny_host_exposure(actions, request, target=None):
    return all(rule != 'xloud:elastic_sizing:host_exposure'
               for _scope, rule in actions)


class HostExposureTabTests(ElasticSizingTestCase):
    """The Host Exposure tab: one call, a chart's data and its table."""

    def setUp(self):
        super().setUp()
        # compute-1 runs vm-0000 (2 of 8 vCPUs, 4096 of 16384 MB) and
        # vm-0002 (1 of 4, 1024 of 4096): 5120 MB allocated, 20480 at
        # their maximum, above the 15872 MB its 16384 leave for guests;
        # compute-2 runs the same on the default 32768.
        self.cloud.add_host('compute-1', memory_mb=16384)
        self.hosts = [elastic.HostExposure.from_api(entry) for entry in
                      self.cloud._host_exposure({})['host_exposure'][
                          'hosts']]

    def rows(self, res) -> dict:
        table = res.context['tab_group'].get_tab('host_exposure')._tables[
            'host_exposure']
        return {row.datum.name: row for row in table.get_rows()}

    @helpers.create_mocks({elastic: ['host_exposure_list']})
    def test_hosts_over_capacity_are_highlighted(self):
        self.mock_host_exposure_list.return_value = (self.hosts, ())
        res = self.client.get(EXPOSURE_URL)
        self.assertEqual(res.status_code, 200)
        self.assertTemplateUsed(res,
                                'admin/elastic_sizing/_host_exposure.html')
        rows = self.rows(res)
        self.assertEqual(['compute-1', 'compute-2'], sorted(rows))
        self.assertIn('xloud-over-capacity', rows['compute-1'].classes)
        self.assertNotIn('xloud-over-capacity', rows['compute-2'].classes)
        cells = {name: {key: html.unescape(str(cell.value))
                        for key, cell in row.cells.items()}
                 for name, row in rows.items()}
        self.assertEqual(
            {'elastic_instances': '2', 'vcpus_capacity': '64',
             'vcpus_allocated': '3', 'vcpus_headroom': '9',
             'vcpus_potential': '12',
             'memory_capacity': str(es_tables.memory(15872)),
             'memory_allocated': str(es_tables.memory(5120)),
             'memory_headroom': str(es_tables.memory(15360)),
             'memory_potential': str(es_tables.memory(20480)),
             'status': 'Over capacity'},
            {key: cells['compute-1'][key] for key in (
                'elastic_instances', 'vcpus_capacity', 'vcpus_allocated',
                'vcpus_headroom', 'vcpus_potential', 'memory_capacity',
                'memory_allocated', 'memory_headroom', 'memory_potential',
                'status')})
        self.assertEqual('Within capacity', cells['compute-2']['status'])
        # The chart's numbers, in units, beside the table.
        self.assertEqual(
            [{'host': 'compute-1', 'over_capacity': True,
              'vcpus': {'capacity': 64, 'allocated': 3, 'headroom': 9,
                        'over_capacity': False},
              'memory_mb': {'capacity': 15872, 'allocated': 5120,
                            'headroom': 15360, 'over_capacity': True}},
             {'host': 'compute-2', 'over_capacity': False,
              'vcpus': {'capacity': 64, 'allocated': 3, 'headroom': 9,
                        'over_capacity': False},
              'memory_mb': {'capacity': 32256, 'allocated': 5120,
                            'headroom': 15360, 'over_capacity': False}}],
            res.context['chart_data'])
        self.assertContains(res, 'id="xloud-host-exposure-data"')
        self.assertContains(res, 'class="xloud-exposure-charts d3-container"')
        self.mock_host_exposure_list.assert_called_once_with(
            helpers.IsHttpRequest())

    @helpers.create_mocks({elastic: ['host_exposure_list']})
    def test_a_host_placement_did_not_answer_for(self):
        self.cloud.hosts['compute-1'].placement_error = 'HTTP 503'
        hosts = [elastic.HostExposure.from_api(entry) for entry in
                 self.cloud._host_exposure({})['host_exposure']['hosts']]
        self.mock_host_exposure_list.return_value = (
            hosts, ('Cell cell2 could not be read: did not answer in time; '
                    'its hosts are not shown.',))
        res = self.client.get(EXPOSURE_URL)
        self.assertEqual(res.status_code, 200)
        rows = self.rows(res)
        self.assertEqual('Not read',
                         str(rows['compute-1'].cells['status'].value))
        self.assertContains(res, 'placement could not be read for resource '
                                 'provider')
        self.assertContains(res, 'Cell cell2 could not be read')
        self.assertEqual(['compute-2'],
                         [host['host'] for host in res.context['chart_data']])

    @helpers.create_mocks({elastic: ['host_exposure_list']})
    def test_error_shows_message(self):
        self.mock_host_exposure_list.side_effect = exceptions.ApiError(
            'boom', 500)
        res = self.client.get(EXPOSURE_URL)
        self.assertEqual(res.status_code, 200)
        self.assertMessageCount(res, error=1)
        self.assertNotContains(res, 'xloud-host-exposure-data')

    @override_settings(
        POLICY_CHECK_FUNCTION='tests.dashboard.test_views.deny_host_exposure')
    @helpers.create_mocks({elastic: ['instance_size_list',
                                     'host_exposure_list']})
    def test_no_tab_without_the_policy(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, 'elastic_sizing__host_exposure')
        self.assertIsNone(res.context['tab_group'].get_tab('host_exposure'))
        self.mock_host_exposure_list.assert_not_called()

    @override_settings(POLICY_CHECK_FUNCTION='openstack_auth.policy.check')
    @helpers.create_mocks({elastic: ['instance_size_list',
                                     'host_exposure_list']})
    def test_admin_passes_the_shipped_rule(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'elastic_sizing__host_exposure')
        # Loaded when opened, not with the page.
        self.mock_host_exposure_list.assert_not_called()


def listed_of(cloud) -> list[elastic.InstanceSize]:
    """The fake's list with readiness, as the Instances tab asks for it."""
    _status, body = cloud.handle('GET', '/v2.1/os-xloud-adjust',
                                 {'readiness': 'true'}, None)
    return [elastic.InstanceSize.from_api(server)
            for server in body['servers']]


def shown_of(cloud, server_id) -> elastic.InstanceSize:
    """The fake's single GET of one instance."""
    _status, body = cloud.handle('GET', f'/v2.1/os-xloud-adjust/{server_id}',
                                 {}, None)
    return elastic.InstanceSize.from_api(body['server'])


def adjust_link(row: str) -> str:
    """The row's Adjust action, its tag up to ``>``."""
    start = row.index('__action_adjust"')
    return row[row.rindex('<a', 0, start):row.index('>', start)]


NO_HOTPLUG = ('Its domain has no hot-pluggable vCPUs (machine type '
              'pc-i440fx-2.9): it was started without them; a hard reboot '
              'starts it with them.')
NO_BALLOON_DRIVER = ('Its balloon driver has sent no statistics since the '
                     'guest started: the guest has no balloon driver, and '
                     'would not take up a new memory size.')


class ReadinessTests(ElasticSizingTestCase):
    """The Readiness and Use columns, and Adjust where readiness refuses."""

    def setUp(self):
        super().setUp()
        servers = list(self.cloud.servers.values())
        # vm-0000: busy, with a recommendation; vm-0001: no balloon
        # driver, its agent silent, migrated; vm-0002: neither dimension
        # can work; vm-0003: its host did not answer.
        self.busy, self.silent, self.bare, self.unread = servers
        self.busy.vcpus_busy = 3.2
        self.busy.memory_used_mb = 3500
        self.silent.balloon = 'silent'
        self.silent.guest_agent = 'not_answering'
        self.silent.agent_error = 'guest-ping timed out'
        self.silent.migrated_since_boot = True
        self.bare.balloon = 'no_device'
        self.bare.vcpu_hotplug = 'not_possible'
        self.bare.machine_type = 'pc-i440fx-2.9'
        self.bare.vcpus_busy = 0.4
        self.unread.guest_read_error = 'compute-2 did not answer in time'

    def index(self, sizes):
        self.mock_instance_size_list.return_value = (sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        return res.content.decode()

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_readiness_and_use_columns(self):
        content = self.index(listed_of(self.cloud))
        self.assertIn('title="Whether the guest can take up an adjustment',
                      content)
        silent = row_of(content, self.silent.id)
        for check, state, tone in (('balloon', 'silent', 'no'),
                                   ('agent', 'not_answering', 'warn'),
                                   ('hotplug', 'possible', 'ok')):
            self.assertIn(f'class="xloud-ready xloud-ready-{tone}" '
                          f'data-check="{check}" data-state="{state}"',
                          silent)
        cell = silent[silent.index('xloud-readiness-checks'):]
        title = html.unescape(cell[cell.index('title="') + 7:
                                   cell.index('">')])
        lines = title.split('\n')
        self.assertTrue(lines[0].startswith('Read 2'), lines)
        self.assertIn('Balloon: silent, no balloon driver in the guest: '
                      'memory changes are not taken up', lines)
        self.assertIn('Guest agent: not answering', lines)
        self.assertIn('Live-migrated since it started: yes', lines)
        self.assertIn('The guest agent does not answer: guest-ping timed '
                      'out', lines)
        self.assertIn('xloud-readiness-warned', silent)
        # What it uses: no memory figure (no statistics), and why.
        self.assertIn('Not measured', silent)
        self.assertIn('title="The guest sends no memory statistics.', silent)

        busy = row_of(content, self.busy.id)
        self.assertIn('<dd class="xloud-use-memory">'
                      f'{es_tables.memory(3500)} of 4GB</dd>', busy)
        self.assertIn('3.2 of 2 busy', busy)
        self.assertIn('title="On average over the last 5 minutes."', busy)
        bare = row_of(content, self.bare.id)
        self.assertIn('0.4 of 1 busy', bare)
        self.assertIn('title="The guest sends no memory statistics.">Memory '
                      'not measured', bare)

        unread = row_of(content, self.unread.id)
        self.assertIn('Not read: compute-2 did not answer in time', unread)
        self.assertIn('data-check="balloon" data-state="unknown"', unread)
        self.assertIn('title="The guest was not read."', unread)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_adjust_is_disabled_where_nothing_can_work(self):
        content = self.index(listed_of(self.cloud))
        bare = row_of(content, self.bare.id)
        link = adjust_link(bare)
        self.assertIn('disabled', link.split('class="')[1].split('"')[0])
        self.assertNotIn('ajax-modal', link)
        self.assertIn('href="#"', link)
        self.assertIn(f'title="{html.escape(NO_HOTPLUG)} '
                      f'{html.escape("Its domain has no memory balloon.")}"',
                      link)
        self.assertNotIn(adjust_url(self.bare.id), bare)
        self.assertNotIn('table-row-multi-select', bare)
        self.assertIn('>No<', bare)
        # One dimension refused: Adjust offered, the column says which.
        silent = row_of(content, self.silent.id)
        self.assertIn(adjust_url(self.silent.id), silent)
        self.assertNotIn('disabled', adjust_link(silent))
        self.assertIn('>vCPUs only<', silent)
        self.assertIn(html.escape(NO_BALLOON_DRIVER), silent)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_locked_and_busy_rows_agree_with_readiness(self):
        self.mock_locked_server_ids.return_value = {self.busy.id}
        self.busy.locked = True
        self.silent.operation = 'migrating'
        content = self.index(listed_of(self.cloud))
        # Nova's lock state and readiness say the same: once.
        link = adjust_link(row_of(content, self.busy.id))
        self.assertIn('title="The instance is locked."', link)
        self.assertIn('disabled', link)
        link = adjust_link(row_of(content, self.silent.id))
        self.assertIn('title="The server is busy with another operation '
                      '(migrating)."', link)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_older_extension_rows(self):
        # Without readiness: no verdicts, no figures; Adjust as before,
        # disabled where the lock or the flavor refuse.
        self.mock_locked_server_ids.return_value = {self.bare.id}
        content = self.index(sizes_of(self.cloud))
        busy = row_of(content, self.busy.id)
        self.assertNotIn('xloud-ready', busy)
        self.assertNotIn('xloud-use-', busy)
        self.assertIn(adjust_url(self.busy.id), busy)
        link = adjust_link(row_of(content, self.bare.id))
        self.assertIn('title="The instance is locked."', link)

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_refreshed_row_has_readiness(self):
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            self.bare.id)
        res = self.client.get(
            INDEX_URL + '?action=row_update&table=instances&obj_id='
            + self.bare.id, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        self.assertEqual(res.status_code, 200)
        row = res.content.decode()
        self.assertIn('data-check="hotplug" data-state="not_possible"', row)
        self.assertIn('disabled', adjust_link(row))
        self.assertIn(html.escape(NO_HOTPLUG), adjust_link(row))

        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            self.busy.id)
        res = self.client.get(
            INDEX_URL + '?action=row_update&table=instances&obj_id='
            + self.busy.id, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        row = res.content.decode()
        self.assertIn(adjust_url(self.busy.id), row)
        self.assertIn('3.2 of 2 busy', row)


class RecommendedAdjustTests(ReadinessTests.__base__):
    """The Adjust form with readiness and the recommendation."""

    def setUp(self):
        super().setUp()
        self.busy = self.cloud.servers[self.large.id]
        self.busy.vcpus_busy = 3.2
        self.busy.memory_used_mb = 3500

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_form_holds_the_recommendation_and_its_rule(self):
        size = shown_of(self.cloud, self.busy.id)
        self.mock_instance_size_get.return_value = size
        res = self.client.get(adjust_url(self.busy.id))
        form = res.context['form']
        # ceil(3.2) + 1 spare; 3500 MiB with 20% free, in 128 MiB steps.
        self.assertEqual((5, 4480), (form.initial['vcpus'],
                                     form.initial['memory_mb']))
        self.assertContains(res, 'value="5"')
        self.assertContains(res, 'value="4480"')
        self.assertIn('Recommended: 3.20 vCPUs busy on average over the '
                      'last 300 seconds, plus 1 spare, within 2-8: 5.',
                      str(form.fields['vcpus'].help_text))
        self.assertIn('From 2 to 8.', str(form.fields['vcpus'].help_text))
        self.assertIn('Uses 3500 of 4096 MiB', str(
            form.fields['memory_mb'].help_text))
        self.assertContains(res, 'The fields hold the size recommended')

        # No recommendation: the current size, no rule.
        self.busy.vcpus_busy = None
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            self.busy.id)
        res = self.client.get(adjust_url(self.busy.id))
        form = res.context['form']
        self.assertEqual(2, form.initial['vcpus'])
        self.assertNotIn('Recommended', str(form.fields['vcpus'].help_text))

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_form_disables_what_readiness_refuses(self):
        self.busy.balloon = 'silent'
        self.busy.migrated_since_boot = True
        size = shown_of(self.cloud, self.busy.id)
        self.mock_instance_size_get.return_value = size
        self.mock_adjust.return_value = {}
        res = self.client.get(adjust_url(self.busy.id))
        form = res.context['form']
        self.assertTrue(form.fields['memory_mb'].disabled)
        self.assertEqual(NO_BALLOON_DRIVER, form.fields['memory_mb'].help_text)
        self.assertFalse(form.fields['vcpus'].disabled)
        self.assertContains(res, 'Live-migrated since it started')
        res = self.client.post(adjust_url(self.busy.id), {
            'instance_id': self.busy.id, 'vcpus': 5, 'memory_mb': 8192,
            'persist': 'on'})
        self.assertNoFormErrors(res)
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), self.busy.id, vcpus=5, memory_mb=None,
            persist=True)

    @helpers.create_mocks({elastic: ['instance_size_get', 'adjust']})
    def test_clean_asks_readiness_again(self):
        before = shown_of(self.cloud, self.busy.id)
        self.busy.vcpu_hotplug = 'not_possible'
        self.busy.machine_type = 'pc-i440fx-2.9'
        fresh = shown_of(self.cloud, self.busy.id)
        self.mock_instance_size_get.side_effect = [before, fresh]
        res = self.client.post(adjust_url(self.busy.id), {
            'instance_id': self.busy.id, 'vcpus': 5, 'memory_mb': 4480,
            'persist': 'on'})
        self.assertEqual(res.status_code, 200)
        self.assertIn(NO_HOTPLUG, res.context['form'].errors['vcpus'])
        self.mock_adjust.assert_not_called()


class BulkRecommendedTests(ElasticSizingTestCase):
    """A bulk adjustment to each instance's own recommendation."""

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_each_instance_its_own_recommendation(self):
        busy, silent, idle, locked = self.cloud.servers.values()
        busy.vcpus_busy = 3.2
        busy.memory_used_mb = 3500
        silent.balloon = 'silent'
        locked.locked = True
        # idle: 256 MiB used of 1024, the floor: its recommendation is
        # where it is.
        chosen = [shown_of(self.cloud, server.id)
                  for server in (busy, silent, idle, locked)]
        self.mock_instance_sizes_get.return_value = {
            size.id: size for size in chosen}
        self.mock_adjust_many.side_effect = lambda request, items: [
            elastic.AdjustOutcome(item, accepted=True) for item in items]
        res = self.client.post(BULK_URL, {
            'instance_ids': ','.join(size.id for size in chosen),
            'mode': 'recommended', 'out_of_limits': 'clamp',
            'persist': 'on'})
        self.assertNoFormErrors(res)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_adjust_many.assert_called_once_with(
            helpers.IsHttpRequest(),
            [elastic.AdjustRequest(busy.id, 5, 4480, True)])
        self.assertMessageCount(success=1, warning=1)
        success, warning = messages_of(res)
        self.assertIn('vm-0000: 2 → 5 vCPUs, 4GB → ', success)
        self.assertIn('vm-0001: no recommendation, left alone', warning)
        self.assertIn('vm-0002: already at its recommendation', warning)
        self.assertIn('vm-0003: The server is locked.', warning)

    @helpers.create_mocks({elastic: ['instance_sizes_get', 'adjust_many']})
    def test_nothing_recommended_keeps_the_form_open(self):
        size = shown_of(self.cloud, self.small.id)
        self.cloud.servers[self.small.id].guest_read_error = 'host down'
        unread = shown_of(self.cloud, self.small.id)
        self.assertIsNotNone(size.recommendation.memory_mb)
        self.mock_instance_sizes_get.return_value = {unread.id: unread}
        res = self.client.post(BULK_URL, {
            'instance_ids': unread.id, 'mode': 'recommended',
            'out_of_limits': 'clamp', 'persist': 'on'})
        self.assertEqual(res.status_code, 200)
        self.assertContains(res, 'No instance was adjusted: vm-0001: no '
                                 'recommendation, left alone')
        self.mock_adjust_many.assert_not_called()

    def test_form_offers_it(self):
        res = self.client.get(f'{BULK_URL}?id={self.small.id}')
        self.assertContains(res, 'value="recommended"')
        self.assertContains(res, 'Apply the recommended size to each '
                                 'instance</option>')


def fix_action(server_id: str) -> str:
    return f'instances__fix_drift__{server_id}'


class FixDriftTests(ElasticSizingTestCase):
    """Fix Drift: the audit's fix one click from a drifting row."""

    def setUp(self):
        super().setUp()
        self.finding = elastic.DriftFinding(
            'placement_below_live', 'critical', 'Placement is short.')
        self.mock_instance_sync_states.return_value = {
            self.large.id: elastic.SyncState(elastic.SYNC_DRIFT,
                                             findings=(self.finding,)),
            self.small.id: elastic.SyncState(elastic.SYNC_IN_SYNC),
            self.sizes[2].id: elastic.SyncState(elastic.SYNC_UNKNOWN,
                                                reason='busy'),
        }

    def post(self, server_id):
        return self.client.post(INDEX_URL, {'action': fix_action(server_id)})

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_offered_only_where_the_audit_found_drift(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        content = self.client.get(INDEX_URL).content.decode()
        self.assertIn(f'value="{fix_action(self.large.id)}"',
                      row_of(content, self.large.id))
        for size in self.sizes[1:]:
            self.assertNotIn('fix_drift', row_of(content, size.id))

    @override_settings(
        POLICY_CHECK_FUNCTION='tests.dashboard.test_views.deny_audit')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_not_offered_without_the_audit_policy(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        res = self.client.get(INDEX_URL)
        self.assertNotContains(res, 'fix_drift')

    @helpers.create_mocks({elastic: ['instance_size_list', 'fix_drift']})
    def test_fix_reports_what_it_changed(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        self.mock_fix_drift.return_value = elastic.DriftFix(
            self.large.id, elastic.SYNC_IN_SYNC, changes=(
                'Set the placement allocation to 2 VCPU / 4096 MEMORY_MB '
                '(it was 1 VCPU / 4096 MEMORY_MB).',))
        res = self.post(self.large.id)
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_fix_drift.assert_called_once_with(
            helpers.IsHttpRequest(), self.large.id)
        self.assertEqual(
            ['Fixed the drift of instance "vm-0000": Set the placement '
             'allocation to 2 VCPU / 4096 MEMORY_MB (it was 1 VCPU / 4096 '
             'MEMORY_MB).'], messages_of(res))

    @helpers.create_mocks({elastic: ['instance_size_list', 'fix_drift']})
    def test_what_remains_or_fails_is_said(self):
        self.mock_instance_size_list.return_value = (self.sizes, False)
        cases = [
            (elastic.DriftFix(self.large.id, elastic.SYNC_DRIFT,
                              changes=('Recorded the size.',),
                              errors=('compute-1 has no room.',),
                              remaining=(self.finding,)),
             ['Partly fixed the drift of instance "vm-0000": Recorded the '
              'size.', 'Drift remains on instance "vm-0000": Placement is '
              'short. compute-1 has no room.']),
            (elastic.DriftFix(self.large.id, elastic.SYNC_UNKNOWN,
                              skipped='busy (task_state migrating)'),
             ['Instance "vm-0000" was not fixed: busy (task_state '
              'migrating)']),
            (exceptions.ApiError("Policy doesn't allow "
                                 "xloud:elastic_sizing:audit", 403),
             ['Unable to fix the drift of instance "vm-0000": Policy '
              'doesn\'t allow xloud:elastic_sizing:audit']),
        ]
        for answer, expected in cases:
            with self.subTest(expected[0]):
                if isinstance(answer, Exception):
                    self.mock_fix_drift.side_effect = answer
                else:
                    self.mock_fix_drift.return_value = answer
                res = self.post(self.large.id)
                self.assertRedirectsNoFollow(res, INDEX_URL)
                self.assertEqual(expected, messages_of(res))
                # Shown on the next page: the queue starts empty again.
                self.client.get(INDEX_URL)


class GuestHistoryTests(ElasticSizingTestCase):
    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history_shows_the_guest_and_readiness(self):
        server = self.cloud.servers[self.small.id]
        server.memory_used_mb = 700
        server.vcpu_hotplug = 'not_possible'
        server.guest_agent = 'not_configured'
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            server.id)
        self.mock_adjustment_history.return_value = []
        res = self.client.get(history_url(server.id))
        self.assertTemplateUsed(res, 'admin/elastic_sizing/_guest.html')
        content = res.content.decode()
        self.assertIn('<dd class="xloud-guest-agent">Not configured</dd>',
                      content)
        self.assertIn('<dd class="xloud-guest-vcpus">Not read</dd>',
                      content)
        self.assertIn(f'{es_tables.memory(1024 - 700)} of '
                      f'{es_tables.memory(4096 - 64)} the guest sees',
                      content)
        self.assertIn('data-check="hotplug" data-state="not_possible"',
                      content)
        self.assertIn('Its domain has no hot-pluggable vCPUs', content)
        self.assertIn('<span class="xloud-adjustable-yes">Possible</span>',
                      content)
        self.assertIn('No guest agent (image property hw_qemu_guest_agent)',
                      content)

    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history_of_a_stopped_instance(self):
        self.cloud.servers[self.small.id].status = 'SHUTOFF'
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            self.small.id)
        self.mock_adjustment_history.return_value = []
        content = self.client.get(history_url(self.small.id)).content.decode()
        self.assertIn('<dd class="xloud-readiness-read">Not read: The '
                      'server is stopped: its guest is read while it '
                      'runs.</dd>', content)
        self.assertIn('Not read since it last started', content)
        self.assertIn('data-check="agent" data-state="unknown"', content)
        # Stopped, it stays adjustable: at its next start.
        self.assertIn('<dd class="xloud-readiness-memory_mb"><span '
                      'class="xloud-adjustable-yes">Possible</span>',
                      content)

    @helpers.create_mocks({elastic: ['instance_size_get',
                                     'adjustment_history']})
    def test_history_of_an_older_extension(self):
        self.mock_instance_size_get.return_value = self.small
        self.mock_adjustment_history.return_value = []
        res = self.client.get(history_url(self.small.id))
        self.assertEqual(res.status_code, 200)
        self.assertNotContains(res, 'xloud-readiness-details')
        self.assertNotContains(res, 'xloud-guest-agent')


def autopilot_url(instance_id):
    return reverse('horizon:admin:elastic_sizing:autopilot',
                   args=[instance_id])


def apply_action(server_id: str) -> str:
    return f'instances__apply_recommendation__{server_id}'


def title_in(fragment: str, marker: str) -> str:
    """The title of the first tag after ``marker``, unescaped."""
    cell = fragment[fragment.index(marker):]
    start = cell.index('title="') + len('title="')
    return html.unescape(cell[start:cell.index('"', start)])


GROW_REASON = 'memory 4096 → 6144 MiB: usable 4% < 15% for 3 min.'
HOLD_REASON = ('vCPUs busy 45% of 2 on average, within the band of 30% to '
               '80%.')
LOCKED_MEMORY = ('hw:locked_memory keeps the guest\'s memory resident '
                 'whatever the balloon says')


def deny_autopilot(actions, request, target=None):
    return all(rule != 'xloud:elastic_sizing:autopilot'
               for _scope, rule in actions)


class AutopilotTests(ElasticSizingTestCase):
    """The Autopilot column, Apply Recommendation and the Autopilot
    Setting form, from the fake's answers."""

    def setUp(self):
        super().setUp()
        self.cloud.add_host('compute-1', autopilot_mode='recommend')
        for server in self.cloud.servers.values():
            server.embedded_specs['xloud:autosize'] = 'memory,cpu'
        # vm-0000 (compute-1): a grow recommended; vm-0001 (compute-2,
        # off): nothing; vm-0002 (compute-1): holds; vm-0003: its host
        # not read.
        self.growing, self.off, self.holding, self.unread = (
            self.cloud.servers.values())
        self.growing.autopilot_decisions = [
            fakecloud.decision('vcpus', 'hold', 2, 2, HOLD_REASON),
            fakecloud.decision('memory_mb', 'grow', 4096, 6144,
                               GROW_REASON)]
        self.off.autopilot_decisions = []
        self.holding.autopilot_decisions = [
            fakecloud.decision('vcpus', 'hold', 1, 1, HOLD_REASON)]
        self.unread.guest_read_error = 'compute-2 did not answer in time'

    def index(self):
        self.mock_instance_size_list.return_value = (listed_of(self.cloud),
                                                     False)
        res = self.client.get(INDEX_URL)
        self.assertEqual(res.status_code, 200)
        return res.content.decode()

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_column_says_the_mode_and_the_last_decision(self):
        content = self.index()
        self.assertIn('title="The autopilot&#x27;s mode for the instance',
                      content)
        growing = row_of(content, self.growing.id)
        self.assertIn('data-mode="recommend" data-action="grow"', growing)
        self.assertIn('<span class="xloud-autopilot-mode">Recommend</span>'
                      '<span class="xloud-autopilot-decision">grow memory '
                      '4GB → 6GB</span>', growing)
        lines = title_in(growing, 'xloud-autopilot-state').split('\n')
        self.assertEqual('Mode: Recommend (its host: Recommend).', lines[0])
        self.assertEqual("Sizes memory, vCPUs (its flavor's "
                         "xloud:autosize), the mode of its host.", lines[1])
        self.assertIn(f'hold vCPUs: {HOLD_REASON}', lines)
        self.assertIn(f'grow memory 4GB → 6GB: {GROW_REASON}', lines)
        self.assertTrue(any(line.startswith('Decided 2') for line in lines))
        self.assertEqual('Recommended: 6GB.', lines[-1])
        # Only holds: the first reason, briefly; in full in the tooltip.
        holding = row_of(content, self.holding.id)
        self.assertIn('hold: vCPUs busy 45% of 2 on average,…',
                      html.unescape(holding))
        self.assertIn(f'hold vCPUs: {HOLD_REASON}',
                      title_in(holding, 'xloud-autopilot-state'))
        off = row_of(content, self.off.id)
        self.assertIn('data-mode="off"', off)
        self.assertIn('>Off</span><span class="xloud-autopilot-decision">'
                      'no decision yet<', off)
        unread = row_of(content, self.unread.id)
        self.assertIn('data-mode="unknown"', unread)
        self.assertIn('>Not read</span>', unread)
        self.assertIn('Not read: the compute host did not answer',
                      title_in(unread, 'xloud-autopilot-state'))

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_an_older_extension_shows_no_autopilot(self):
        self.cloud.autopilot_offered = False
        content = self.index()
        growing = row_of(content, self.growing.id)
        self.assertNotIn('xloud-autopilot-state', growing)
        self.assertNotIn('apply_recommendation', growing)
        self.assertNotIn(autopilot_url(self.growing.id), growing)
        # Readiness is still there.
        self.assertIn('xloud-readiness-checks', growing)

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_refreshed_row_has_the_autopilot(self):
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        res = self.client.get(
            INDEX_URL + '?action=row_update&table=instances&obj_id='
            + self.growing.id, HTTP_X_REQUESTED_WITH='XMLHttpRequest')
        row = res.content.decode()
        self.assertIn('grow memory 4GB → 6GB', row)
        self.assertIn(f'value="{apply_action(self.growing.id)}"', row)

    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_apply_recommendation_is_enabled_only_with_one(self):
        content = self.index()

        def button(server_id):
            row = row_of(content, server_id)
            end = row.index(f'value="{apply_action(server_id)}"')
            return row[row.rindex('<button', 0, end):end]

        enabled = button(self.growing.id)
        self.assertNotIn('disabled', enabled)
        for server, reason in (
                (self.off, 'The autopilot recommends only in recommend '
                           'mode; it is Off for this instance.'),
                (self.holding, 'The autopilot calls for no change.'),
                (self.unread, "The autopilot's decisions were not read: "
                              "its compute host did not answer.")):
            disabled = button(server.id)
            self.assertIn('xloud-adjust-disabled', disabled)
            self.assertIn(f'title="{html.escape(reason)}"', disabled)

    @helpers.create_mocks({elastic: ['instance_size_list',
                                     'instance_size_get', 'adjust']})
    def test_apply_recommendation_adjusts_to_it(self):
        self.mock_instance_size_list.return_value = (listed_of(self.cloud),
                                                     False)
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        res = self.client.post(INDEX_URL,
                               {'action': apply_action(self.growing.id)})
        self.assertRedirectsNoFollow(res, INDEX_URL)
        # Read again, with its lock state, before it is sent.
        self.mock_instance_size_get.assert_called_once_with(
            helpers.IsHttpRequest(), self.growing.id)
        self.mock_server_lock_state.assert_called_once_with(
            helpers.IsHttpRequest(), self.growing.id)
        self.mock_adjust.assert_called_once_with(
            helpers.IsHttpRequest(), self.growing.id, vcpus=None,
            memory_mb=6144)
        self.assertEqual(['Adjusting instance "vm-0000" to the autopilot\'s '
                          'recommendation: 6GB.'],
                         [html.unescape(text) for text in messages_of(res)])

    @helpers.create_mocks({elastic: ['instance_size_list',
                                     'instance_size_get', 'adjust']})
    def test_apply_recommendation_refuses_what_changed_meanwhile(self):
        self.mock_instance_size_list.return_value = (listed_of(self.cloud),
                                                     False)
        # Meanwhile the guest's use came back within the band.
        self.growing.autopilot_decisions = [
            fakecloud.decision('memory_mb', 'hold', 4096, 4096,
                               'usable 20% within 15-40%.')]
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        res = self.client.post(INDEX_URL,
                               {'action': apply_action(self.growing.id)})
        self.assertRedirectsNoFollow(res, INDEX_URL)
        self.mock_adjust.assert_not_called()
        self.assertEqual(['The recommendation for instance "vm-0000" cannot '
                          'be applied: The autopilot calls for no change.'],
                         [html.unescape(text) for text in messages_of(res)])
        # Locked meanwhile: the lock's reason.
        self.growing.autopilot_decisions = [fakecloud.decision(
            'memory_mb', 'grow', 4096, 6144, GROW_REASON)]
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        self.mock_server_lock_state.return_value = (True, 'backup')
        res = self.client.post(INDEX_URL,
                               {'action': apply_action(self.growing.id)})
        self.mock_adjust.assert_not_called()
        self.assertIn('cannot be applied: The instance is locked: backup',
                      html.unescape(messages_of(res)[-1]))

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_setting_form_shows_the_setting(self):
        self.growing.autosize = 'memory'
        self.growing.autosize_mode = 'off'
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        res = self.client.get(autopilot_url(self.growing.id))
        self.assertTemplateUsed(res,
                                'admin/elastic_sizing/autopilot_setting.html')
        form = res.context['form']
        self.assertEqual(('memory', 'off'), (form.initial['dimensions'],
                                             form.initial['mode']))
        self.assertContains(res, "Sizes memory (its own setting), at most "
                                 "Off.")
        self.assertContains(res, '<dd class="xloud-autopilot-host-mode">'
                                 'Recommend</dd>')
        self.assertContains(res, '<dd class="xloud-autopilot-mode">Off</dd>')
        self.growing.autosize = self.growing.autosize_mode = ''
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        form = self.client.get(autopilot_url(self.growing.id)).context[
            'form']
        self.assertEqual(('flavor', 'host'), (form.initial['dimensions'],
                                              form.initial['mode']))

    @helpers.create_mocks({elastic: ['instance_size_get', 'autopilot_set']})
    def test_setting_form_saves_it(self):
        self.mock_instance_size_get.return_value = shown_of(
            self.cloud, self.growing.id)
        self.mock_autopilot_set.return_value = elastic.AutopilotSetting(
            ('memory_mb',), 'instance', 'recommend')
        for dimensions, mode, sent in (
                ('memory', 'recommend', (('memory_mb',), 'recommend')),
                ('both', 'host', (('vcpus', 'memory_mb'), None)),
                ('none', 'off', ((), 'off')),
                ('flavor', 'host', (None, None))):
            self.mock_autopilot_set.reset_mock()
            res = self.client.post(autopilot_url(self.growing.id), {
                'instance_id': self.growing.id, 'dimensions': dimensions,
                'mode': mode})
            self.assertNoFormErrors(res)
            self.assertRedirectsNoFollow(res, INDEX_URL)
            self.mock_autopilot_set.assert_called_once_with(
                helpers.IsHttpRequest(), self.growing.id, *sent)
        self.assertIn('Autopilot of instance "vm-0000": Sizes memory (its '
                      'own setting), at most Recommend.',
                      [html.unescape(text) for text in messages_of(res)])

    @helpers.create_mocks({elastic: ['instance_size_get', 'autopilot_set']})
    def test_setting_form_refuses_what_the_extension_would(self):
        locked = self.cloud.add_flavor(
            'locked-memory', 4, 4096, minimum_cpu=1, minimum_memory=1024,
            flavor_id='30', extra_specs={'hw:locked_memory': 'true'})
        server = self.cloud.add_server('vm-locked', locked)
        reason = self.cloud.servers[server.id].limits().conflicts[
            elastic.MEMORY]
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            server.id)
        res = self.client.post(autopilot_url(server.id), {
            'instance_id': server.id, 'dimensions': 'both', 'mode': 'host'})
        self.assertEqual(
            [f'memory of instance "vm-locked" cannot be sized '
             f'automatically: {reason}'],
            res.context['form'].errors['dimensions'])
        self.mock_autopilot_set.assert_not_called()
        # Read again when submitted.
        self.assertEqual(2, self.mock_instance_size_get.call_count)
        # Its vCPUs can be.
        self.mock_autopilot_set.return_value = elastic.AutopilotSetting(
            ('vcpus',), 'instance', None)
        res = self.client.post(autopilot_url(server.id), {
            'instance_id': server.id, 'dimensions': 'cpu', 'mode': 'host'})
        self.assertNoFormErrors(res)
        # What only Nova knows (its devices) comes back from it.
        self.mock_autopilot_set.side_effect = exceptions.ApiError(
            'vcpus of server x cannot be sized automatically: its PCI '
            'devices.', 409)
        res = self.client.post(autopilot_url(server.id), {
            'instance_id': server.id, 'dimensions': 'cpu', 'mode': 'host'})
        self.assertEqual(200, res.status_code)
        self.assertContains(res, 'Unable to set the autopilot of instance '
                                 '&quot;vm-locked&quot;: vcpus of server x '
                                 'cannot be sized automatically')

    @override_settings(
        POLICY_CHECK_FUNCTION='tests.dashboard.test_views.deny_autopilot')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_setting_needs_the_autopilot_policy(self):
        content = self.index()
        growing = row_of(content, self.growing.id)
        self.assertNotIn(autopilot_url(self.growing.id), growing)
        # Applying a recommendation is an adjustment: its own policy.
        self.assertIn(apply_action(self.growing.id), growing)

    @override_settings(POLICY_CHECK_FUNCTION='openstack_auth.policy.check')
    @helpers.create_mocks({elastic: ['instance_size_list']})
    def test_admin_passes_the_shipped_autopilot_rule(self):
        content = self.index()
        self.assertIn(autopilot_url(self.growing.id),
                      row_of(content, self.growing.id))


class AutosizeEditorTests(MemoryMethodEditorTests.__base__):
    """The flavor's xloud:autosize in the minimums editor and the Flavors
    tab; the panel's API functions run against the fake."""

    def setUp(self):
        super().setUp()
        self.handled = mock.patch.object(self.cloud, 'handle',
                                         wraps=self.cloud.handle).start()
        mock.patch.object(elastic, '_call', self.call_fake).start()
        self.addCleanup(mock.patch.stopall)

    call_fake = MemoryMethodEditorTests.call_fake
    writes = MemoryMethodEditorTests.writes

    def post(self, flavor_id, **data):
        return self.client.post(minimums_url(flavor_id), {
            'flavor_id': flavor_id, 'minimum_cpu': '1',
            'minimum_memory': '1024', 'memory_model': 'balloon', **data})

    def test_editor_sets_and_removes_the_key(self):
        specs = self.cloud.flavors['10'].extra_specs
        res = self.client.get(minimums_url('10'))
        self.assertEqual('none', res.context['form'].initial['autosize'])
        self.assertContains(res, 'Autopilot sizes')
        res = self.post('10', autosize='memory,cpu')
        self.assertNoFormErrors(res)
        self.assertEqual('memory,cpu', specs['xloud:autosize'])
        self.assertEqual([('POST', '', {'extra_specs': {
            'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024',
            'xloud:autosize': 'memory,cpu'}})], self.writes('10'))
        self.assertIn('The autopilot sizes memory, vCPUs of the instances of '
                      'flavor "elastic.small" booted or resized from now on; '
                      'an existing instance keeps the flavor copy it booted '
                      'with: give it its own Autopilot Setting.',
                      [html.unescape(text) for text in messages_of(res)])
        res = self.client.get(minimums_url('10'))
        self.assertEqual('memory,cpu',
                         res.context['form'].initial['autosize'])
        # Unchanged: not written again, nothing said of it.
        self.handled.reset_mock()
        res = self.post('10', autosize='memory,cpu')
        self.assertEqual([('POST', '', {'extra_specs': {
            'xloud:minimum_cpu': '1', 'xloud:minimum_memory': '1024'}})],
            self.writes('10'))
        self.assertFalse(any('The autopilot sizes' in text
                             for text in messages_of(res)))
        # Nothing removes the key.
        self.handled.reset_mock()
        res = self.post('10', autosize='none')
        self.assertNoFormErrors(res)
        self.assertNotIn('xloud:autosize', specs)
        self.assertEqual(('DELETE', '/xloud:autosize', None),
                         self.writes('10')[-1])
        res = self.post('10', autosize='disk')
        self.assertEqual(['Select a valid choice. disk is not one of the '
                          'available choices.'],
                         res.context['form'].errors['autosize'])

    def test_flavors_tab_shows_it(self):
        self.cloud.flavors['10'].extra_specs['xloud:autosize'] = 'memory'
        self.cloud.flavors['11'].extra_specs['xloud:autosize'] = 'memory,cpu'
        # A value the extension does not know is none.
        self.cloud.flavors['1'].extra_specs['xloud:autosize'] = 'disk'
        res = self.client.get(INDEX_URL + '?tab=elastic_sizing__flavors')
        table = res.context['tab_group'].get_tab('flavors')._tables[
            'flavors']
        self.assertEqual({'elastic.small': 'Memory',
                          'elastic.large': 'Memory and vCPUs',
                          'm1.tiny': 'Nothing'},
                         {row.datum.name: str(row.cells['autosize'].data)
                          for row in table.get_rows()})
        self.assertContains(res, 'Autopilot Sizes')


class AutomaticHistoryTests(ElasticSizingTestCase):
    """The history tells the autopilot's changes from manual ones."""

    @helpers.create_mocks({elastic: ['instance_size_get']})
    def test_by_and_reason(self):
        server = self.cloud.servers[self.large.id]
        self.cloud.autosize(server, GROW_REASON, memory_mb=6144)
        self.cloud.settle()
        self.cloud.handle('POST', f'/v2.1/os-xloud-adjust/{server.id}', {},
                          {'current_vcpus': 3})
        self.cloud.settle()
        self.mock_instance_size_get.return_value = shown_of(self.cloud,
                                                            server.id)
        with mock.patch.object(elastic, '_call',
                               AutosizeEditorTests.call_fake.__get__(self)):
            res = self.client.get(history_url(server.id))
        table = res.context['table']
        rows = {row.datum.automatic: row for row in table.get_rows()}
        automatic, manual = rows[True], rows[False]
        self.assertEqual('Autopilot', str(automatic.cells['by'].data))
        self.assertEqual(GROW_REASON, automatic.cells['reason'].data)
        self.assertEqual('memory 4GB → 6GB',
                         str(automatic.cells['change'].data))
        self.assertEqual('memory_mb 4096 -> 6144, persisted',
                         automatic.cells['details'].data)
        self.assertEqual('admin-user', manual.cells['by'].data)
        self.assertIsNone(manual.cells['reason'].data)
        content = res.content.decode()
        self.assertIn('data-by="autopilot"', content)
        self.assertIn('data-by="user"', content)
        self.assertIn(html.escape(GROW_REASON), content)
        self.assertEqual('By', str(table.columns['by'].verbose_name))
