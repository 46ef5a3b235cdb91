"""Host burst exposure: /os-xloud-host-exposure and the audit's exposure.

Two harness compute hosts run ``XloudLibvirtDriver`` with placement and
the API with the extension's filter; elastic servers are adjusted through
``/os-xloud-adjust`` and every number is compared with what placement
itself answers for the host's resource provider.
"""

import argparse
import contextlib
import io
import json

import fixtures
import jsonschema
import testtools
from nova import context as nova_context
from nova import objects
from nova import policy as nova_policy
from nova.scheduler.client import report as report_client
from nova.tests.unit import fake_requests

from nova_ext import audit, exposure, policies
from nova_ext.api import schemas
from nova_ext.deploy import cli
from tests.nova import compute_base

FLAVOR_VCPUS = 4
FLAVOR_MEMORY_MB = 4096


def validate(body: dict) -> None:
    jsonschema.validate(body, schemas.host_exposure_response,
                        format_checker=jsonschema.FormatChecker())


def make_instance(resources_specs: dict | None = None) -> objects.Instance:
    specs = {'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '2048'}
    specs.update(resources_specs or {})
    flavor = objects.Flavor(flavorid='f1', name='elastic',
                            vcpus=FLAVOR_VCPUS, memory_mb=FLAVOR_MEMORY_MB,
                            extra_specs=specs)
    return objects.Instance(uuid='0c6f1d8e-8d1e-4b5a-9f2c-3a4b5c6d7e8f',
                            host='compute1', node='compute1',
                            flavor=flavor, system_metadata={})


class HeadroomTest(testtools.TestCase):
    """exposure.instance_headroom and Dimension: the arithmetic, no I/O."""

    def test_headroom_is_the_flavor_maximum_less_what_is_held(self):
        self.assertEqual((1, 1024), exposure.instance_headroom(
            make_instance(), {'VCPU': 3, 'MEMORY_MB': 3072, 'DISK_GB': 1}))
        # Nothing held on the node: all of the maximum would be added.
        self.assertEqual((4, 4096),
                         exposure.instance_headroom(make_instance(), None))

    def test_dimensions_that_cannot_grow_add_nothing(self):
        locked = make_instance({'hw:locked_memory': 'true'})
        self.assertEqual((2, 0), exposure.instance_headroom(
            locked, {'VCPU': 2, 'MEMORY_MB': 2048}))
        # Pinned: its vCPUs are PCPU, never adjusted.
        self.assertEqual((0, 2048), exposure.instance_headroom(
            make_instance(), {'PCPU': 2, 'MEMORY_MB': 2048}))

    def test_capacity_follows_placement(self):
        dimension = exposure.Dimension(total=10, reserved=1,
                                       allocation_ratio=1.5, allocated=12,
                                       headroom=1)
        # (10 - 1) * 1.5 = 13.5: 13 whole units fit, 13 is not over it.
        self.assertEqual((13, 13, False), (
            dimension.capacity, dimension.potential,
            dimension.over_capacity))
        over = exposure.Dimension(total=10, reserved=1, allocation_ratio=1.5,
                                  allocated=12, headroom=2)
        self.assertTrue(over.over_capacity)
        validate({'host_exposure': {
            'host': None, 'errors': [],
            'hosts': [exposure.HostExposure(
                'compute1', 'compute1',
                '0c6f1d8e-8d1e-4b5a-9f2c-3a4b5c6d7e8f', 1, vcpus=over,
                memory_mb=None).to_dict()]}})


class HostExposureTest(compute_base.ElasticAPIComputeTestBase):
    """The API and the audit against placement, on two compute hosts."""

    microversion = '2.84'

    def setUp(self) -> None:
        super().setUp()
        self.flags(cores=64, ram=65536, group='quota')
        self.start_compute('compute1')
        self.start_compute('compute2')
        self.elastic = self._create_elastic_flavor(
            vcpus=FLAVOR_VCPUS, memory_mb=FLAVOR_MEMORY_MB)
        self.plain = self._create_flavor(vcpu=1, memory_mb=512)

    def _request(self, path: str, api=None):
        return (api or self.api).api_request(
            path, method='GET', headers={'Content-Type': 'application/json'})

    def _exposure(self, query: str = '') -> dict:
        resp = self._request(f'/os-xloud-host-exposure{query}')
        self.assertEqual(200, resp.status_code, resp.text)
        body = resp.json()
        validate(body)
        return body['host_exposure']

    def _boot(self, flavor: str, host: str) -> dict:
        return self._create_server(flavor_id=flavor, networks='none',
                                   host=host)

    def _expected(self, hostname: str, elastic: list[str]) -> dict:
        """The host's exposure from placement's own answers."""
        capacity = self._provider_capacity(hostname)
        usage = self._provider_usage(hostname)
        rp_uuid = self.compute_rp_uuids[hostname]
        inventories = self.placement.get(
            f'/resource_providers/{rp_uuid}/inventories',
            version='1.26').body['inventories']
        held = [self._placement_size(server_id) for server_id in elastic]
        headroom = {
            'VCPU': sum(FLAVOR_VCPUS - vcpus for vcpus, _memory in held),
            'MEMORY_MB': sum(FLAVOR_MEMORY_MB - memory
                             for _vcpus, memory in held)}
        dimensions = {}
        for key, resource_class in (('vcpus', 'VCPU'),
                                    ('memory_mb', 'MEMORY_MB')):
            inventory = inventories[resource_class]
            potential = usage[resource_class] + headroom[resource_class]
            dimensions[key] = {
                'total': inventory['total'],
                'reserved': inventory['reserved'],
                'allocation_ratio': inventory['allocation_ratio'],
                'capacity': capacity[resource_class],
                'allocated': usage[resource_class],
                'headroom': headroom[resource_class],
                'potential': potential,
                'over_capacity': potential > capacity[resource_class]}
        return {'host': hostname, 'node': hostname,
                'resource_provider': rp_uuid,
                'elastic_instances': len(elastic),
                'over_capacity': any(dimension['over_capacity']
                                     for dimension in dimensions.values()),
                'error': None, **dimensions}

    def test_numbers_equal_placement_and_full_burst_is_flagged(self):
        grown = self._boot(self.elastic, 'compute1')
        idle = self._boot(self.elastic, 'compute1')
        other = self._boot(self.elastic, 'compute2')
        self._boot(self.plain, 'compute2')
        self._adjust_through_api(grown['id'], vcpus=3, memory_mb=3072)
        self.assertEqual((3, 3072), self._placement_size(grown['id']))
        # compute1 holds 3072 + 2048 MiB; at their maximum its two elastic
        # guests would hold 8192, above the 7168 left for guests.
        self._set_provider_capacity('compute1', 'MEMORY_MB', 7168)

        report = self._exposure()
        self.assertEqual(
            {'host': None, 'errors': [],
             'hosts': [self._expected('compute1', [grown['id'], idle['id']]),
                       self._expected('compute2', [other['id']])]},
            report)
        compute1, compute2 = report['hosts']
        self.assertEqual(
            (5120, 3072, 8192, 7168, True),
            tuple(compute1['memory_mb'][key] for key in (
                'allocated', 'headroom', 'potential', 'capacity',
                'over_capacity')))
        self.assertTrue(compute1['over_capacity'])
        # The plain guest counts in what is allocated, not in headroom.
        self.assertEqual((2048 + 512, 2048, False), tuple(
            compute2['memory_mb'][key]
            for key in ('allocated', 'headroom', 'over_capacity')))
        self.assertFalse(compute2['over_capacity'])

        # A grow to the maximum lands on what the exposure foresaw.
        self._set_provider_capacity('compute1', 'MEMORY_MB', 8192)
        self._adjust_through_api(idle['id'], memory_mb=FLAVOR_MEMORY_MB)
        compute1 = self._exposure('?host=compute1')['hosts'][0]
        self.assertEqual((7168, 1024, 8192, False), tuple(
            compute1['memory_mb'][key] for key in (
                'allocated', 'headroom', 'potential', 'over_capacity')))

        one = self._exposure('?host=compute2')
        self.assertEqual(('compute2', [self._expected(
            'compute2', [other['id']])]), (one['host'], one['hosts']))

        # Also under the project id prefix Nova still accepts.
        resp = self._request(
            f'/{self.api.project_id}/os-xloud-host-exposure?host=compute2')
        self.assertEqual((200, one), (resp.status_code,
                                      resp.json()['host_exposure']))

    def test_a_provider_placement_refuses_is_reported_not_guessed(self):
        counted = self._boot(self.elastic, 'compute1')
        self._boot(self.elastic, 'compute2')
        refused = self.compute_rp_uuids['compute2']
        real_get = report_client.SchedulerReportClient.get

        def get(client, url, *args, **kwargs):
            if url == f'/resource_providers/{refused}/inventories':
                return fake_requests.FakeResponse(
                    503, content='{"errors": [{"detail": "maintenance"}]}')
            return real_get(client, url, *args, **kwargs)

        self.useFixture(fixtures.MonkeyPatch(
            'nova.scheduler.client.report.SchedulerReportClient.get', get))
        report = self._exposure()
        compute1, compute2 = report['hosts']
        self.assertEqual(self._expected('compute1', [counted['id']]),
                         compute1)
        self.assertEqual((None, None, False, 1), (
            compute2['vcpus'], compute2['memory_mb'],
            compute2['over_capacity'], compute2['elastic_instances']))
        self.assertIn(f'placement could not be read for resource provider '
                      f'{refused}: GET /resource_providers/{refused}/'
                      f'inventories answered HTTP 503', compute2['error'])
        self.assertEqual([compute2['error']], report['errors'])

    def test_audit_reports_the_exposure_of_the_hosts_it_audits(self):
        server = self._boot(self.elastic, 'compute1')
        self._boot(self.elastic, 'compute2')
        self._set_provider_capacity('compute2', 'MEMORY_MB', 3072)
        progress = []
        report = audit.run(nova_context.get_admin_context(),
                           progress=progress.append)
        body = report.to_dict()
        jsonschema.validate({'audit': body}, schemas.audit_response,
                            format_checker=jsonschema.FormatChecker())
        self.assertEqual(self._exposure()['hosts'], body['host_exposure'])
        self.assertEqual([False, True], [node['over_capacity']
                                         for node in body['host_exposure']])
        compute2_line, = [line for line in progress
                          if line.startswith('compute2: 1 checked')]
        self.assertIn('MiB 2048 allocated + 2048 to max = 4096 of 3072 '
                      'OVER CAPACITY', compute2_line)

        # The panel's page of servers: no exposure is read for it.
        self.assertEqual([], audit.run(
            nova_context.get_admin_context(),
            instance_uuids=[server['id']]).to_dict()['host_exposure'])

        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(io.StringIO()):
            status = cli.audit_command(
                nova_context.get_admin_context(),
                argparse.Namespace(host=None, fix=False, format='table'))
        self.assertEqual(0, status)
        lines = stdout.getvalue().splitlines()
        start = lines.index(
            'Burst exposure (every elastic guest at its maximum):')
        self.assertEqual(['HOST', 'RESOURCE', 'CAPACITY', 'ALLOCATED',
                          'HEADROOM', 'POTENTIAL', 'OVER', 'CAPACITY'],
                         lines[start + 1].split())
        rows = [line.split() for line in lines[start + 2:start + 6]]
        self.assertEqual(['compute2', 'MEMORY_MB', '3072', '2048', '2048',
                          '4096', 'yes'], rows[3])
        self.assertEqual(['compute1', 'MEMORY_MB'], rows[1][:2])
        self.assertEqual('no', rows[1][-1])

    def test_admin_only(self):
        for user, api in (('member', self.api_fixture.api),
                          ('reader', self.api_fixture.reader_api)):
            with self.subTest(user=user):
                resp = self._request('/os-xloud-host-exposure', api=api)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertIn(policies.HOST_EXPOSURE,
                              resp.json()['forbidden']['message'])
        # Nova's rule like any other: policy.yaml opens it.
        path = f'{self.useFixture(fixtures.TempDir()).path}/policy.yaml'
        with open(path, 'w') as f:
            f.write(json.dumps({policies.HOST_EXPOSURE: '@'}))
        self.flags(policy_file=path, group='oslo_policy')
        nova_policy.reset()
        resp = self._request('/os-xloud-host-exposure',
                             api=self.api_fixture.api)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_bad_requests_change_nothing(self):
        self._boot(self.elastic, 'compute1')
        before = self._exposure()
        for query in ('?host=a&host=b', '?host=', '?all_tenants=1',
                      '?server_id=x'):
            with self.subTest(query=query):
                resp = self._request(f'/os-xloud-host-exposure{query}')
                self.assertEqual(400, resp.status_code, resp.text)
        resp = self._request('/os-xloud-host-exposure?host=nowhere')
        self.assertEqual(404, resp.status_code, resp.text)
        self.assertIn('Compute host nowhere could not be found',
                      resp.json()['itemNotFound']['message'])
        self.assertEqual(before, self._exposure())
