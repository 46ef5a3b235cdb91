"""GET and POST /os-xloud-flavor-minimums/{flavor_id} in Nova's harness.

Two cells, three instances of one elastic flavor; the flavor's minimum is
changed through Nova's own flavor extra-spec API and applied to the
instances' embedded flavors and RequestSpecs.
"""

from unittest import mock

import jsonschema
from nova import context as nova_context
from nova import objects
from nova.compute import task_states, vm_states
from oslo_serialization import jsonutils
from oslo_utils import timeutils

from nova_ext import flavor_minimums, sizing
from nova_ext.api import schemas
from tests.nova import base

SCOPED_CPU, SCOPED_MEMORY = sizing.MINIMUM_CPU, sizing.MINIMUM_MEMORY
LEGACY_CPU = sizing.LEGACY_KEYS[SCOPED_CPU]
LEGACY_MEMORY = sizing.LEGACY_KEYS[SCOPED_MEMORY]
# Claimed in placement at boot, as elastic guests boot at their minimum;
# not a minimum key: the apply leaves it alone.
PLACEMENT_SPECS = {'resources:VCPU': '2', 'resources:MEMORY_MB': '2048'}

# (description, raw body): each a 400 that changes nothing.
BAD_BODIES = [
    ('empty object', '{}'),
    ('apply null', '{"apply": null}'),
    ('apply a list', '{"apply": []}'),
    ('apply with an option', '{"apply": {"force": true}}'),
    ('a second key', '{"apply": {}, "dry_run": true}'),
    ('unknown action', '{"fix": {}}'),
    ('JSON array', '[{"apply": {}}]'),
    ('JSON null', 'null'),
    ('no body', ''),
    ('not JSON', 'apply'),
]


def assert_valid(body: dict, schema: dict) -> None:
    jsonschema.validate(body, schema,
                        format_checker=jsonschema.FormatChecker())


class FlavorMinimumsTest(base.ElasticAPITestBase):

    NUMBER_OF_CELLS = 2

    def setUp(self) -> None:
        super().setUp()
        self.start_compute('compute1')
        self.start_compute('compute2', cell_name='cell2')
        self.flavor_id = self._create_flavor(
            vcpu=4, memory_mb=4096,
            extra_spec={SCOPED_CPU: '2', SCOPED_MEMORY: '2048',
                        **PLACEMENT_SPECS})
        # Pinned to hosts (2.74), hence to cells.
        microversion = self.admin_api.microversion
        self.admin_api.microversion = '2.74'
        self.servers = {
            name: self._create_server(name=name, flavor_id=self.flavor_id,
                                      host=host, networks='none')
            for name, host in (('a', 'compute1'), ('b', 'compute1'),
                               ('c', 'compute2'))}
        self.admin_api.microversion = microversion
        self.ids = {name: server['id']
                    for name, server in self.servers.items()}

    # -- what the cells and the API database hold ------------------------

    def _in_cell(self, server_id: str, change=None):
        """The instance with its embedded flavor; ``change(instance)`` is
        called in its cell and the instance saved afterwards."""
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['flavor',
                                                  'system_metadata'])
            if change is not None:
                change(instance)
                instance.save()
            return instance

    def _embedded(self, server_id: str) -> dict:
        return dict(self._in_cell(server_id).flavor.extra_specs)

    def _request_spec(self, server_id: str) -> dict:
        spec = objects.RequestSpec.get_by_instance_uuid(
            nova_context.get_admin_context(), server_id)
        return dict(spec.flavor.extra_specs)

    def _state(self) -> dict:
        """Everything an apply may change, per server."""
        state = {}
        for name, server_id in self.ids.items():
            instance = self._in_cell(server_id)
            state[name] = {
                'embedded': dict(instance.flavor.extra_specs),
                'request_spec': self._request_spec(server_id),
                'xloud_sysmeta': {key: value for key, value
                                  in instance.system_metadata.items()
                                  if key.startswith('xloud_')},
                'task_state': instance.task_state,
            }
        return state

    def _as_seed_instance(self, server_id: str) -> None:
        """Give an instance the seed's unscoped keys in both copies."""
        seed = {LEGACY_CPU: '2', LEGACY_MEMORY: '2048', **PLACEMENT_SPECS}

        def change(instance):
            instance.flavor.extra_specs = dict(seed)

        self._in_cell(server_id, change)
        ctxt = nova_context.get_admin_context()
        spec = objects.RequestSpec.get_by_instance_uuid(ctxt, server_id)
        spec.flavor.extra_specs = dict(seed)
        spec.save()

    def _record(self, server_id: str, *, boot: tuple[int, int],
                live: tuple[int, int]) -> None:
        """Record a size as the compute host does after an adjustment."""
        flavor_id = self.flavor_id

        def change(instance):
            sysmeta = dict(instance.system_metadata)
            sysmeta.update({
                sizing.SYSMETA_FLAVOR: flavor_id,
                sizing.SYSMETA_BOOT_VCPUS: str(boot[0]),
                sizing.SYSMETA_BOOT_MEMORY: str(boot[1]),
                sizing.SYSMETA_LIVE_VCPUS: str(live[0]),
                sizing.SYSMETA_LIVE_MEMORY: str(live[1]),
                sizing.SYSMETA_UPDATED_AT: timeutils.utcnow().isoformat(),
            })
            instance.system_metadata = sysmeta

        self._in_cell(server_id, change)

    # -- the API ----------------------------------------------------------

    def _get(self, api=None, flavor_id=None, query: str = ''):
        api = api or self.admin_api
        return api.api_request(
            f'/os-xloud-flavor-minimums/{flavor_id or self.flavor_id}'
            f'{query}', method='GET')

    def _post(self, body, api=None, flavor_id=None, raw: bool = False):
        api = api or self.admin_api
        return api.api_request(
            f'/os-xloud-flavor-minimums/{flavor_id or self.flavor_id}/action',
            method='POST', body=body if raw else jsonutils.dumps(body),
            headers={'Content-Type': 'application/json'})

    def _report(self) -> dict:
        resp = self._get()
        self.assertEqual(200, resp.status_code, resp.text)
        body = resp.json()
        assert_valid(body, schemas.flavor_minimums_response)
        return body['flavor_minimums']

    def _apply(self) -> dict:
        resp = self._post({'apply': {}})
        self.assertEqual(200, resp.status_code, resp.text)
        body = resp.json()
        assert_valid(body, schemas.flavor_minimums_apply_response)
        return body['flavor_minimums']

    @staticmethod
    def _counts(report: dict) -> dict:
        keys = ('instances', 'current', 'stale', 'busy', 'below_minimum')
        return {'total': {key: report[key] for key in keys},
                **{cell['name']: {key: cell[key] for key in keys}
                   for cell in report['cells']}}

    def _min_vcpus(self, server_id: str) -> int:
        resp = self.admin_api.api_request(f'/os-xloud-adjust/{server_id}')
        self.assertEqual(200, resp.status_code, resp.text)
        return resp.json()['server']['min_vcpus']

    def _set_minimum_cpu(self, value: int) -> None:
        """Through Nova's own flavor extra-spec API."""
        self.admin_api.post_extra_spec(
            self.flavor_id, {'extra_specs': {SCOPED_CPU: str(value)}})

    # -- the tests --------------------------------------------------------

    def test_report_apply_and_the_size_api_follows(self):
        a, b, c = self.ids['a'], self.ids['b'], self.ids['c']
        # A booted before the keys were scoped; B was adjusted to 4 vCPUs
        # and persisted at 3.
        self._as_seed_instance(a)
        self._record(b, boot=(3, 2048), live=(4, 3072))

        report = self._report()
        self.assertEqual({'id': self.flavor_id, 'name': report['flavor'][
            'name'], 'vcpus': 4, 'memory_mb': 4096, 'minimum_cpu': 2,
            'minimum_memory': 2048, 'memory_model': 'balloon'},
            report['flavor'])
        self.assertEqual(256, report['memory_floor_mb'])
        # The seed's spelling is not the flavor's: A is stale.
        self.assertEqual({
            'total': {'instances': 3, 'current': 2, 'stale': 1, 'busy': 0,
                      'below_minimum': 0},
            'cell1': {'instances': 2, 'current': 1, 'stale': 1, 'busy': 0,
                      'below_minimum': 0},
            'cell2': {'instances': 1, 'current': 1, 'stale': 0, 'busy': 0,
                      'below_minimum': 0},
        }, self._counts(report))
        self.assertEqual([], report['errors'])
        self.assertNotIn('servers', report)

        self._set_minimum_cpu(3)
        # C has an operation in progress.
        self._set_states(c, vm_states.ACTIVE, task_states.REBOOTING)
        before = self._state()
        report = self._report()
        self.assertEqual(3, report['flavor']['minimum_cpu'])
        # A (never recorded, booted at the old minimum) and C run below
        # the new minimum; B (recorded at 4, booting at 3) does not.
        self.assertEqual({
            'total': {'instances': 3, 'current': 0, 'stale': 3, 'busy': 1,
                      'below_minimum': 2},
            'cell1': {'instances': 2, 'current': 0, 'stale': 2, 'busy': 0,
                      'below_minimum': 1},
            'cell2': {'instances': 1, 'current': 0, 'stale': 1, 'busy': 1,
                      'below_minimum': 1},
        }, self._counts(report))
        # A GET changes nothing; the embedded copy still governs.
        self.assertEqual(before, self._state())
        self.assertEqual(2, self._min_vcpus(a))

        applied = self._apply()
        self.assertEqual(2, applied['updated'])
        self.assertEqual({
            'total': {'instances': 3, 'current': 2, 'stale': 1, 'busy': 1,
                      'below_minimum': 2},
            'cell1': {'instances': 2, 'current': 2, 'stale': 0, 'busy': 0,
                      'below_minimum': 1},
            'cell2': {'instances': 1, 'current': 0, 'stale': 1, 'busy': 1,
                      'below_minimum': 1},
        }, self._counts(applied))
        servers = {server['server_id']: server
                   for server in applied['servers']}
        self.assertEqual({a, b, c}, set(servers))
        self.assertEqual(
            ('updated', True, False, 2, 2048, 2, 2048),
            tuple(servers[a][key] for key in (
                'result', 'below_minimum', 'recorded', 'current_vcpus',
                'current_memory_mb', 'boot_vcpus', 'boot_memory_mb')))
        self.assertIn('below the minimum of 3 vCPUs / 2048 MiB',
                      servers[a]['message'])
        self.assertEqual(('updated', False, True, 4, 3072, 3, 2048, None),
                         tuple(servers[b][key] for key in (
                             'result', 'below_minimum', 'recorded',
                             'current_vcpus', 'current_memory_mb',
                             'boot_vcpus', 'boot_memory_mb', 'message')))
        self.assertEqual(('busy', 'cell2'), (servers[c]['result'],
                                             servers[c]['cell']))
        self.assertIn('task_state rebooting', servers[c]['message'])

        after = self._state()
        wanted = {SCOPED_CPU: '3', SCOPED_MEMORY: '2048', **PLACEMENT_SPECS}
        for name in ('a', 'b'):
            with self.subTest(name):
                # Scoped keys, the seed's gone, the rest as it was.
                self.assertEqual(wanted, after[name]['embedded'])
                self.assertEqual(wanted, after[name]['request_spec'])
                self.assertIsNone(after[name]['task_state'])
        # B's recorded size is the compute's: left alone. A had none: the
        # size it had is recorded, so the new minimum does not move it.
        self.assertEqual(before['b']['xloud_sysmeta'],
                         after['b']['xloud_sysmeta'])
        self.assertEqual({}, before['a']['xloud_sysmeta'])
        self.assertEqual({
            sizing.SYSMETA_FLAVOR: self.flavor_id,
            sizing.SYSMETA_BOOT_VCPUS: '2', sizing.SYSMETA_BOOT_MEMORY: '2048',
            sizing.SYSMETA_LIVE_VCPUS: '2', sizing.SYSMETA_LIVE_MEMORY: '2048',
        }, after['a']['xloud_sysmeta'])
        self.assertIn('Its size was not recorded', servers[a]['message'])
        # The busy instance was not touched at all.
        self.assertEqual(before['c'], after['c'])

        # The size API takes its floor from the embedded copy.
        self.assertEqual(3, self._min_vcpus(a))
        self.assertEqual(2, self._min_vcpus(c))
        listed = self.admin_api.api_request(
            f'/os-xloud-adjust?all_tenants=1&flavor={self.flavor_id}'
        ).json()['servers']
        self.assertEqual({a: (3, 2), b: (3, 4), c: (2, 2)},
                         {server['id']: (server['min_vcpus'],
                                         server['current_vcpus'])
                          for server in listed})

        # Once C's operation has ended, the next apply reaches it; then
        # there is nothing left to do.
        self._set_states(c, vm_states.ACTIVE, None)
        self.assertEqual((1, 0), (self._report()['stale'],
                                  self._report()['busy']))
        applied = self._apply()
        self.assertEqual((1, 3, 0), (applied['updated'], applied['current'],
                                     applied['stale']))
        self.assertEqual(wanted, self._embedded(c))
        self.assertEqual(wanted, self._request_spec(c))
        self.assertEqual(3, self._min_vcpus(c))
        [server] = applied['servers']
        self.assertEqual((c, 'updated', True, False),
                         (server['server_id'], server['result'],
                          server['below_minimum'], server['recorded']))
        applied = self._apply()
        self.assertEqual((0, [], 3), (applied['updated'],
                                      applied['servers'],
                                      applied['current']))

        # Removing a minimum removes it from the copies as well.
        self.admin_api.api_request(
            f'/flavors/{self.flavor_id}/os-extra_specs/{SCOPED_CPU}',
            method='DELETE')
        applied = self._apply()
        self.assertEqual(3, applied['updated'])
        self.assertIsNone(applied['flavor']['minimum_cpu'])
        without = {SCOPED_MEMORY: '2048', **PLACEMENT_SPECS}
        self.assertEqual(without, self._embedded(a))
        self.assertEqual(without, self._request_spec(a))
        # Not elastic in vCPUs any more: the flavor's own size.
        self.assertEqual(4, self._min_vcpus(a))

    def test_the_memory_model_is_carried_too(self):
        a = self.ids['a']
        self.admin_api.post_extra_spec(self.flavor_id, {'extra_specs': {
            sizing.MEMORY_MODEL: sizing.MEMORY_MODEL_VIRTIO_MEM}})
        report = self._report()
        self.assertEqual((sizing.MEMORY_MODEL_VIRTIO_MEM, 0, 3),
                         (report['flavor']['memory_model'],
                          report['current'], report['stale']))
        self.assertEqual(3, self._apply()['updated'])
        wanted = {SCOPED_CPU: '2', SCOPED_MEMORY: '2048',
                  sizing.MEMORY_MODEL: sizing.MEMORY_MODEL_VIRTIO_MEM,
                  **PLACEMENT_SPECS}
        self.assertEqual((wanted, wanted),
                         (self._embedded(a), self._request_spec(a)))
        # The size API tells what the copy says the domain is made with.
        resp = self.admin_api.api_request(f'/os-xloud-adjust/{a}')
        self.assertEqual(sizing.MEMORY_MODEL_VIRTIO_MEM,
                         resp.json()['server']['flavor']['memory_model'])

        # Back to the balloon, the default: the key leaves the copies.
        self.admin_api.api_request(
            f'/flavors/{self.flavor_id}/os-extra_specs/'
            f'{sizing.MEMORY_MODEL}', method='DELETE')
        self.assertEqual((sizing.MEMORY_MODEL_BALLOON, 3),
                         (self._report()['flavor']['memory_model'],
                          self._apply()['updated']))
        without = {SCOPED_CPU: '2', SCOPED_MEMORY: '2048', **PLACEMENT_SPECS}
        self.assertEqual((without, without),
                         (self._embedded(a), self._request_spec(a)))

    def test_what_the_autopilot_sizes_is_carried_too(self):
        a = self.ids['a']
        self.admin_api.post_extra_spec(self.flavor_id, {'extra_specs': {
            sizing.AUTOSIZE: 'memory,cpu'}})
        report = self._report()
        self.assertEqual((0, 3), (report['current'], report['stale']))
        self.assertEqual(3, self._apply()['updated'])
        wanted = {SCOPED_CPU: '2', SCOPED_MEMORY: '2048',
                  sizing.AUTOSIZE: 'memory,cpu', **PLACEMENT_SPECS}
        self.assertEqual((wanted, wanted),
                         (self._embedded(a), self._request_spec(a)))
        # The autopilot follows the copy: the instance is opted in.
        resp = self.admin_api.api_request(f'/os-xloud-adjust/{a}')
        self.assertEqual(['vcpus', 'memory_mb'],
                         resp.json()['server']['autopilot']['dimensions'])

        self.admin_api.api_request(
            f'/flavors/{self.flavor_id}/os-extra_specs/{sizing.AUTOSIZE}',
            method='DELETE')
        self.assertEqual(3, self._apply()['updated'])
        without = {SCOPED_CPU: '2', SCOPED_MEMORY: '2048', **PLACEMENT_SPECS}
        self.assertEqual((without, without),
                         (self._embedded(a), self._request_spec(a)))

    def test_refusals_and_an_operation_starting_meanwhile(self):
        a = self.ids['a']
        self._set_minimum_cpu(3)
        before = self._state()

        for api in (self.api_fixture.api, self.api_fixture.reader_api):
            with self.subTest(f'policy refuses {api.auth_user}'):
                for resp in (self._get(api=api),
                             self._post({'apply': {}}, api=api)):
                    self.assertEqual(403, resp.status_code, resp.text)
                    self.assertIn('xloud:elastic_sizing:flavor_minimums',
                                  resp.text)
        for description, body in BAD_BODIES:
            with self.subTest(description):
                resp = self._post(body, raw=True)
                self.assertEqual(400, resp.status_code, resp.text)
                self.assertIn('badRequest', resp.json())
        with self.subTest('a query parameter'):
            resp = self._get(query='?all_tenants=1')
            self.assertEqual(400, resp.status_code, resp.text)
        with self.subTest('unknown flavor'):
            for resp in (self._get(flavor_id='no-such-flavor'),
                         self._post({'apply': {}},
                                    flavor_id='no-such-flavor')):
                self.assertEqual(404, resp.status_code, resp.text)
                self.assertIn('no-such-flavor', resp.text)
        self.assertEqual(before, self._state())

        with self.subTest('policy.yaml opens it to the project member'):
            self._write_policy({'xloud:elastic_sizing:flavor_minimums':
                                'role:member'})
            resp = self._get(api=self.api_fixture.api)
            self.assertEqual(200, resp.status_code, resp.text)
            self._write_policy({})

        # An operation takes A after the apply read it, before it writes:
        # Nova's conditional save refuses, and neither copy is written.
        real_standing = flavor_minimums.Standing.of

        def rebooting_meanwhile(instance, target):
            if instance.uuid == a:
                self._set_states(a, vm_states.ACTIVE, task_states.REBOOTING)
            return real_standing(instance, target)

        with mock.patch.object(flavor_minimums.Standing, 'of',
                               side_effect=rebooting_meanwhile):
            applied = self._apply()
        servers = {server['server_id']: server
                   for server in applied['servers']}
        self.assertEqual('busy', servers[a]['result'])
        self.assertIn('task_state rebooting', servers[a]['message'])
        self.assertEqual(2, applied['updated'])
        after = self._state()
        self.assertEqual(before['a']['embedded'], after['a']['embedded'])
        self.assertEqual(before['a']['request_spec'],
                         after['a']['request_spec'])
        self.assertEqual('rebooting', after['a']['task_state'])
        self.assertEqual('3', after['b']['embedded'][SCOPED_CPU])
