"""GET /os-xloud-adjust[/{server_id}] in Nova's functional harness."""

from nova import context as nova_context
from nova import objects
from nova.tests.functional.api import client as api_client

from nova_ext import sizing
from tests.nova import base

OTHER_PROJECT = '8e6e4a5bbd2b4b3b9f2f1a0c5d4e3f21'


class ReadTest(base.ElasticAPITestBase):
    """Two projects' servers on one compute, read every way."""

    def setUp(self) -> None:
        super().setUp()
        self.hostname = self.start_compute()
        self.flavor_id = self._create_elastic_flavor()
        self.plain_flavor_id = self._create_flavor(vcpu=2, memory_mb=1024)
        self.server = self._create_server(name='elastic-one',
                                          flavor_id=self.flavor_id)
        self.other_api = api_client.TestOpenStackClient(
            'other-user', self.api_fixture.base_url,
            project_id=OTHER_PROJECT, roles=['reader', 'member'])
        self.other_server = self._create_server(
            name='plain-two', flavor_id=self.plain_flavor_id,
            api=self.other_api)

    def _get(self, path: str, api=None):
        return (api or self.admin_api).api_request(path)

    def _record_adjusted(self, server_id: str) -> None:
        """What the compute records after a confirmed adjustment."""
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['flavor',
                                                  'system_metadata'])
            sizing.save_record(instance, sizing.RecordUpdate().size(
                instance, vcpus=3, memory_mb=3072).status(
                sizing.STATUS_SUCCESS, 'req-recorded'))

    def test_show(self):
        server_id = self.server['id']
        path = f'/os-xloud-adjust/{server_id}'

        with self.subTest('no xloud endpoint on the host: recorded'):
            resp = self._get(path)
            self.assertEqual(200, resp.status_code, resp.text)
            server = resp.json()['server']
            ready = server.pop('readiness')
            self.assertEqual((None, 'unknown', 'unknown', 'unknown',
                              {'vcpus': True, 'memory_mb': True}),
                             (ready['as_of'], ready['balloon'],
                              ready['guest_agent'], ready['vcpu_hotplug'],
                              ready['adjustable']))
            self.assertIn(self.hostname, ready['error'])
            self.assertEqual({'memory': None, 'vcpus': None,
                              'reason': 'The guest was not read.'},
                             server.pop('utilisation'))
            self.assertEqual(dict.fromkeys(('vcpus', 'memory_mb',
                                            'vcpus_rule', 'memory_rule')),
                             server.pop('recommendation'))
            # The host was not read: its autopilot is not known.
            self.assertEqual({'dimensions': [], 'dimensions_from': None,
                              'instance_mode': None, 'host_mode': None,
                              'mode': None, 'decisions': [], 'as_of': None,
                              'recommended': None},
                             server.pop('autopilot'))
            self.assertEqual({
                'id': server_id,
                'name': 'elastic-one',
                'project_id': self.admin_api.project_id,
                'host': self.hostname,
                'status': 'ACTIVE',
                'flavor': {'id': self.flavor_id,
                           'name': resp.json()['server']['flavor']['name'],
                           'vcpus': 4, 'memory_mb': 4096,
                           'minimum_cpu': 2, 'minimum_memory': 2048,
                           'memory_model': 'balloon'},
                'current_vcpus': 2, 'current_memory_mb': 2048,
                'max_vcpus': 4, 'max_memory_mb': 4096,
                'min_vcpus': 2, 'min_memory_mb': 2048,
                'boot_vcpus': 2, 'boot_memory_mb': 2048,
                'source': 'recorded',
                'updated_at': None,
                'not_adjustable': {'vcpus': None, 'memory_mb': None},
                'adjustment': {'status': None, 'request_id': None,
                               'error': None},
                'guest': {'agent': None, 'online_vcpus': None,
                          'available_memory_mb': None,
                          'usable_memory_mb': None, 'as_of': None},
                'changes': [],
            }, server)
            sent = self.rpc.sent[-1]
            self.assertEqual(('call', self.hostname, 'xloud', '2.1',
                              'describe_guests', 10),
                             (sent.kind, sent.server, sent.namespace,
                              sent.version, sent.method, sent.timeout))
            self.assertEqual([server_id], sent.kwargs['instance_uuids'])

        endpoint = base.XloudEndpointDouble(
            live_size={'vcpus': 3, 'memory_mb': 3072})
        base.serve_endpoint(self, self.hostname, endpoint)
        with self.subTest('the host answers: live'):
            server = self._get(path).json()['server']
            self.assertEqual(('live', 3, 3072, 2, 2048),
                             (server['source'], server['current_vcpus'],
                              server['current_memory_mb'],
                              server['boot_vcpus'],
                              server['boot_memory_mb']))
            self.assertEqual(('describe_guests', server_id),
                             endpoint.received[-1][:2])
            self.assertEqual(('answering', 'possible', 'active',
                              '2026-12-03T18:00:00Z', None),
                             (server['guest']['agent'],
                              server['readiness']['vcpu_hotplug'],
                              server['readiness']['balloon'],
                              server['readiness']['as_of'],
                              server['readiness']['error']))

        for live in ({'vcpus': 9, 'memory_mb': 3072},
                     {'vcpus': '3', 'memory_mb': 3072},
                     {'vcpus': 3}, None):
            with self.subTest('the host answers nonsense', live=live):
                endpoint.live_size = live
                server = self._get(path).json()['server']
                self.assertEqual(('recorded', 2, 2048),
                                 (server['source'], server['current_vcpus'],
                                  server['current_memory_mb']))

        with self.subTest('recorded values after an adjustment'):
            self._record_adjusted(server_id)
            self.api.post_server_action(server_id, {'suspend': {}})
            self._wait_for_state_change(self.server, 'SUSPENDED')
            calls = len(endpoint.received)
            server = self._get(path).json()['server']
            # Suspended: nothing live to ask the host for.
            self.assertEqual(calls, len(endpoint.received))
            self.assertEqual(('recorded', 'SUSPENDED', 3, 3072, 2, 2048),
                             (server['source'], server['status'],
                              server['current_vcpus'],
                              server['current_memory_mb'],
                              server['boot_vcpus'],
                              server['boot_memory_mb']))
            self.assertIsNotNone(server['updated_at'])
            self.assertTrue(server['updated_at'].endswith('Z'))
            self.assertEqual({'status': 'success',
                              'request_id': 'req-recorded', 'error': None},
                             server['adjustment'])

        with self.subTest('project reader: no host'):
            resp = self._get(path, api=self.api_fixture.reader_api)
            self.assertEqual(200, resp.status_code, resp.text)
            self.assertIsNone(resp.json()['server']['host'])
        with self.subTest('role without reader: 403'):
            self._enforce_new_defaults()
            resp = self._get(path, api=self.api_fixture.other_api)
            self.assertEqual(403, resp.status_code, resp.text)
            self.assertIn('xloud:elastic_sizing:show', resp.text)
        with self.subTest("another project's server: 404"):
            resp = self._get(path, api=self.other_api)
            self.assertEqual(404, resp.status_code, resp.text)
        with self.subTest('unknown query parameter: 400'):
            resp = self._get(path + '?verbose=1')
            self.assertEqual(400, resp.status_code, resp.text)

    def test_show_changes_newest_first_not_in_the_list(self):
        server_id = self.server['id']
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt,
                                                               server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=['system_metadata'])
            sysmeta = dict(instance.system_metadata)
            sysmeta.update({
                'xloud_change_req-old':
                    '2026-11-20T10:00:00.000001|vcpus 2 -> 3, persisted',
                'xloud_change_req-new':
                    '2026-11-21T09:30:00|memory_mb 2048 -> 3072, '
                    'not persisted',
                # Not a record this release writes: left out, not a 500.
                'xloud_change_req-bad': 'yesterday|vcpus 2 -> 4',
            })
            instance.system_metadata = sysmeta
            instance.save()

        server = self._get(f'/os-xloud-adjust/{server_id}').json()['server']
        self.assertEqual([
            {'request_id': 'req-new', 'changed_at': '2026-11-21T09:30:00Z',
             'details': 'memory_mb 2048 -> 3072, not persisted'},
            {'request_id': 'req-old', 'changed_at': '2026-11-20T10:00:00Z',
             'details': 'vcpus 2 -> 3, persisted'},
        ], server['changes'])
        listed = self._get('/os-xloud-adjust').json()['servers']
        self.assertNotIn('changes', listed[0])

    def test_index(self):
        sent_before = len(self.rpc.sent)
        server_id, other_id = self.server['id'], self.other_server['id']

        def ids(path, api=None, status=200):
            resp = self._get(path, api=api)
            self.assertEqual(status, resp.status_code, resp.text)
            return sorted(server['id']
                          for server in resp.json().get('servers', []))

        with self.subTest('own project by default'):
            resp = self._get('/os-xloud-adjust')
            servers = resp.json()['servers']
            self.assertEqual([server_id], [s['id'] for s in servers])
            self.assertEqual([], resp.json()['servers_links'])
            shown = self._get(f'/os-xloud-adjust/{server_id}').json()
            # The list holds the same SIZE as the single GET's recorded
            # one, without the change records and the guest's view.
            self.assertEqual([], shown['server'].pop('changes'))
            self.assertIsNone(shown['server'].pop('guest')['as_of'])
            for key in ('readiness', 'utilisation', 'recommendation',
                        'autopilot'):
                shown['server'].pop(key)
            self.assertEqual(shown['server'], servers[0])
        with self.subTest('all_tenants'):
            self.assertEqual(sorted([server_id, other_id]),
                             ids('/os-xloud-adjust?all_tenants=1'))
            self.assertEqual(
                [other_id],
                ids(f'/os-xloud-adjust?all_tenants=1&'
                    f'project_id={OTHER_PROJECT}'))
        with self.subTest('project_id without all_tenants is ignored'):
            self.assertEqual(
                [server_id],
                ids(f'/os-xloud-adjust?project_id={OTHER_PROJECT}'))
        with self.subTest('filters'):
            self.assertEqual(
                sorted([server_id, other_id]),
                ids(f'/os-xloud-adjust?all_tenants=1&host={self.hostname}'))
            self.assertEqual([],
                             ids('/os-xloud-adjust?all_tenants=1&host=nope'))
            self.assertEqual([other_id],
                             ids('/os-xloud-adjust?all_tenants=1&name=^pl'))
            self.assertEqual(
                [other_id],
                ids(f'/os-xloud-adjust?all_tenants=1&'
                    f'flavor={self.plain_flavor_id}'))
            self.assertEqual(
                [], ids('/os-xloud-adjust?all_tenants=1&flavor=nope'))
        with self.subTest('plain flavor: no minimums, not elastic'):
            other = self._get(f'/os-xloud-adjust?all_tenants=1&'
                              f'project_id={OTHER_PROJECT}').json()
            size = other['servers'][0]
            # Its floor is its own size ([xloud]
            # allow_shrink_without_minimum is off).
            self.assertEqual((None, None, 2, 1024, 2, 1024, 2, 1024),
                             (size['flavor']['minimum_cpu'],
                              size['flavor']['minimum_memory'],
                              size['min_vcpus'], size['min_memory_mb'],
                              size['boot_vcpus'], size['boot_memory_mb'],
                              size['max_vcpus'], size['max_memory_mb']))
        with self.subTest('limit and marker'):
            first = self._get('/os-xloud-adjust?all_tenants=1&limit=1')
            body = first.json()
            self.assertEqual(1, len(body['servers']))
            next_link = body['servers_links'][0]
            self.assertEqual('next', next_link['rel'])
            self.assertIn(f'marker={body["servers"][0]["id"]}',
                          next_link['href'])
            relative = next_link['href'].split('/v2.1/', 1)[1]
            second = self._get(relative).json()
            self.assertEqual(
                sorted([server_id, other_id]),
                sorted([body['servers'][0]['id'],
                        second['servers'][0]['id']]))
        with self.subTest('bad queries'):
            for query in ('marker=nope', 'limit=-1', 'limit=x',
                          'all_tenants=maybe', 'verbose=1'):
                with self.subTest(query=query):
                    ids(f'/os-xloud-adjust?{query}', status=400)
        with self.subTest('a project reader'):
            resp = self._get('/os-xloud-adjust',
                             api=self.api_fixture.reader_api)
            self.assertEqual([(server_id, None)],
                             [(s['id'], s['host'])
                              for s in resp.json()['servers']])
            ids('/os-xloud-adjust?all_tenants=1',
                api=self.api_fixture.reader_api, status=403)
            ids(f'/os-xloud-adjust?host={self.hostname}',
                api=self.api_fixture.reader_api, status=403)
            self.assertEqual([other_id],
                             ids('/os-xloud-adjust', api=self.other_api))
            self._enforce_new_defaults()
            ids('/os-xloud-adjust', api=self.api_fixture.other_api,
                status=403)
        with self.subTest('recorded values, no RPC per row'):
            self.assertEqual(sent_before + 1, len(self.rpc.sent))
            self.assertEqual('describe_guests', self.rpc.sent[-1].method)
