"""POST /os-xloud-adjust/{server_id} in Nova's functional harness."""

from unittest import mock

from nova.compute import task_states, vm_states
from nova.tests.functional.api import client as api_client
from oslo_serialization import jsonutils

from nova_ext import placement
from tests.nova import base

SEED_BODY = {'current_vcpus': 3, 'current_memory_mb': 3072, 'persist': True}

# (description, raw request body, expected status). The server's flavor is
# 4 vCPUs / 4096 MiB with minimum_cpu=2, minimum_memory=2048.
MALFORMED_BODIES = [
    ('empty object', '{}', 400),
    ('persist only', '{"persist": true}', 400),
    ('null size', '{"current_vcpus": null}', 400),
    ('boolean true', '{"current_vcpus": true}', 400),
    ('boolean false', '{"current_memory_mb": false}', 400),
    ('float', '{"current_vcpus": 2.5}', 400),
    ('integral float', '{"current_vcpus": 3.0}', 400),
    ('float string', '{"current_vcpus": "3.0"}', 400),
    ('negative string', '{"current_vcpus": "-3"}', 400),
    ('plus sign string', '{"current_vcpus": "+3"}', 400),
    ('leading space', '{"current_vcpus": " 3"}', 400),
    ('trailing newline', '{"current_vcpus": "3\\n"}', 400),
    ('empty string', '{"current_vcpus": ""}', 400),
    ('word', '{"current_vcpus": "three"}', 400),
    ('zero', '{"current_vcpus": 0}', 400),
    ('negative', '{"current_memory_mb": -1}', 400),
    ('above flavor vcpus', '{"current_vcpus": 5}', 400),
    ('below minimum_cpu', '{"current_vcpus": 1}', 400),
    ('below minimum_cpu as string', '{"current_vcpus": "1"}', 400),
    ('above flavor ram', '{"current_memory_mb": 4097}', 400),
    ('below minimum_memory', '{"current_memory_mb": 2047}', 400),
    ('one size valid, other above',
     '{"current_vcpus": 3, "current_memory_mb": 8192}', 400),
    ('above 32-bit', '{"current_memory_mb": 2147483648}', 400),
    ('huge integer', '{"current_memory_mb": 1%s}' % ('0' * 400), 400),
    ('huge digit string', '{"current_vcpus": "%s"}' % ('9' * 5000), 400),
    ('integer too long for JSON', '{"current_vcpus": %s}' % ('9' * 5000),
     400),
    ('list size', '{"current_vcpus": [3]}', 400),
    ('object size', '{"current_vcpus": {"n": 3}}', 400),
    ('persist string', '{"current_vcpus": 3, "persist": "true"}', 400),
    ('persist integer', '{"current_vcpus": 3, "persist": 1}', 400),
    ('persist null', '{"current_vcpus": 3, "persist": null}', 400),
    ('unknown key', '{"current_vcpus": 3, "current_disk_gb": 1}', 400),
    ('wrapped body', '{"adjustment": {"current_vcpus": 3}}', 400),
    ('JSON array', '[3]', 400),
    ('JSON string', '"3"', 400),
    ('JSON null', 'null', 400),
    ('no body', '', 400),
    ('unquoted key', '{current_vcpus: 3}', 400),
    ('not JSON', 'current_vcpus=3', 400),
    ('truncated JSON', '{"current_vcpus": 3', 400),
    ('over the request size limit',
     '{"current_vcpus": 3, "pad": "%s"}' % ('x' * 120 * 1024), 413),
]


class AdjustTest(base.ElasticAPITestBase):
    """One server per test (Nova's harness costs seconds per test), each
    scenario checking the instance's record afterwards."""

    def setUp(self) -> None:
        super().setUp()
        self.hostname = self.start_compute()
        self.flavor_id = self._create_elastic_flavor()
        self.server = self._create_server(flavor_id=self.flavor_id)
        # Room for guests to grow to 3072 MiB of memory in all, no more.
        self._limit_memory_capacity(self.hostname, 3072)

    def _assert_refused(self, body, status: int, api=None,
                        raw: bool = False, server_id: str | None = None,
                        headers: dict | None = None):
        server_id = server_id or self.server['id']
        before = self._snapshot(self.server['id'])
        resp = self._post_adjust(server_id, body, api=api, raw=raw,
                            headers=headers)
        self.assertEqual(status, resp.status_code, resp.text)
        self.assertEqual(before, self._snapshot(self.server['id']))
        return resp

    def test_refused_requests_change_nothing(self):
        # An endpoint on the host, so that nothing but the API refuses.
        endpoint = base.XloudEndpointDouble()
        base.serve_endpoint(self, self.hostname, endpoint)

        self.assertGreaterEqual(len(MALFORMED_BODIES), 25)
        for description, body, status in MALFORMED_BODIES:
            with self.subTest(description):
                resp = self._assert_refused(body, status, raw=True)
                if status == 400:
                    self.assertIn('badRequest', resp.json())

        with self.subTest('XML content type'):
            self._assert_refused(
                '<current_vcpus>3</current_vcpus>', 415, raw=True,
                headers={'Content-Type': 'application/xml'})

        with self.subTest('clear messages'):
            message = self._assert_refused({'current_vcpus': 5}, 400).json()[
                'badRequest']['message']
            self.assertIn("current_vcpus 5 is above the flavor's vcpus 4",
                          message)
            message = self._assert_refused(
                {'current_memory_mb': 1024}, 400).json()[
                'badRequest']['message']
            self.assertIn("current_memory_mb 1024 is below the flavor's "
                          "minimum_memory 2048", message)
            message = self._assert_refused({'persist': False}, 400).json()[
                'badRequest']['message']
            self.assertIn(
                'At least one of current_vcpus and current_memory_mb',
                message)

        with self.subTest('no room on the host for the grow'):
            resp = self._assert_refused({'current_memory_mb': 4096}, 409)
            self.assertIn('Not enough room on the compute node', resp.text)
            self.assertEqual((2, 2048), self._allocated(
                self.server['id'], self.hostname))

        body = {'current_vcpus': 3}
        # The project's own member and reader: admin only by default.
        # (self.api is the admin client in this base, ADMIN_API = True.)
        for api in (self.api_fixture.api, self.api_fixture.reader_api):
            with self.subTest(f'policy refuses {api.auth_user}'):
                resp = self._assert_refused(body, 403, api=api)
                self.assertIn('xloud:elastic_sizing:adjust', resp.text)
        with self.subTest('another project cannot see the server'):
            other = api_client.TestOpenStackClient(
                'other-user', self.api_fixture.base_url,
                project_id='8e6e4a5bbd2b4b3b9f2f1a0c5d4e3f21',
                roles=['reader', 'member'])
            self._assert_refused(body, 404, api=other)
        with self.subTest('unknown server'):
            self._assert_refused(
                body, 404, server_id='5b1b6f54-3d1f-4b5e-9a8e-0c1d2e3f4a5b')
        with self.subTest("URL's project_id is not the caller's"):
            before = self._snapshot(self.server['id'])
            resp = self.admin_api.api_request(
                f'/0123abcd/os-xloud-adjust/{self.server["id"]}',
                method='POST', body=jsonutils.dumps(body))
            self.assertEqual(400, resp.status_code, resp.text)
            self.assertIn("URL's project_id", resp.text)
            self.assertEqual(before, self._snapshot(self.server['id']))
        self.assertEqual([], endpoint.received)

    def test_accepted_adjustments_leave_nova_api_as_one_rpc_call(self):
        endpoint = base.XloudEndpointDouble()
        base.serve_endpoint(self, self.hostname, endpoint)

        # The seed's curl body.
        resp = self._post_adjust(self.server['id'], SEED_BODY)

        self.assertEqual(202, resp.status_code, resp.text)
        # The context's request id; the harness's keystone stub does not
        # copy the x-openstack-request-id header into it as Nova's
        # keystonecontext does.
        request_id = resp.json()['adjustment']['request_id']
        self.assertTrue(request_id.startswith('req-'))
        self.assertEqual({'adjustment': {
            'server_id': self.server['id'],
            'request_id': request_id,
            'current_vcpus': 3,
            'current_memory_mb': 3072,
            'persist': True,
            'action': 'xloud-adjust',
        }}, resp.json())
        # What left nova-api: one call to the instance's host, answered
        # once the host has taken the request.
        self.assertEqual(1, len(self.rpc.sent))
        sent = self.rpc.sent[0]
        self.assertEqual(('call', 'compute', self.hostname, 'xloud', '2.0',
                          'start_adjust', 30),
                         (sent.kind, sent.topic, sent.server,
                          sent.namespace, sent.version, sent.method,
                          sent.timeout))
        self.assertEqual(self.server['id'], sent.kwargs['instance'].uuid)
        self.assertEqual({'vcpus': 3, 'memory_mb': 3072, 'persist': True},
                         {key: sent.kwargs[key]
                          for key in ('vcpus', 'memory_mb', 'persist')})
        # ...and what the host's RPC server delivered to the xloud
        # namespace, the instance already in the adjustment's task state.
        self.assertEqual([('start_adjust', self.server['id'], {
            'vcpus': 3, 'memory_mb': 3072, 'persist': True,
            'request_id': request_id, 'task_state': 'resize_prep'})],
            endpoint.received)
        # The instance action; the record is the compute host's alone:
        # nova-api writes no system metadata (a save of its copy would
        # erase what the compute recorded meanwhile).
        actions = self.admin_api.get_instance_actions(self.server['id'])
        self.assertEqual(['xloud-adjust', 'create'],
                         [action['action'] for action in actions])
        self.assertEqual(request_id, actions[0]['request_id'])
        sysmeta = self._instance(self.server['id']).system_metadata
        self.assertEqual([], [key for key in sysmeta
                              if key.startswith('xloud_')])
        # The grow is claimed in placement before the cast.
        self.assertEqual((3, 3072), self._allocated(self.server['id'],
                                                         self.hostname))

        project_id = self.admin_api.project_id
        cases = [
            ('one size, persist defaults to true',
             {'current_memory_mb': 3072},
             {'vcpus': None, 'memory_mb': 3072, 'persist': True}),
            ('digit strings as Nova accepts them',
             {'current_vcpus': '0003', 'current_memory_mb': '2048'},
             {'vcpus': 3, 'memory_mb': 2048, 'persist': True}),
            ('live only', {'current_vcpus': 4, 'persist': False},
             {'vcpus': 4, 'memory_mb': None, 'persist': False}),
            ('equal to the flavor minimum, the current size',
             {'current_vcpus': 2, 'current_memory_mb': 2048},
             {'vcpus': 2, 'memory_mb': 2048, 'persist': True}),
        ]
        for description, body, expected in cases:
            with self.subTest(description):
                resp = self._post_adjust(self.server['id'], body)
                self.assertEqual(202, resp.status_code, resp.text)
                adjustment = resp.json()['adjustment']
                self.assertEqual(
                    expected,
                    {'vcpus': adjustment['current_vcpus'],
                     'memory_mb': adjustment['current_memory_mb'],
                     'persist': adjustment['persist']})
                self.assertEqual(expected, {
                    key: self.rpc.sent[-1].kwargs[key]
                    for key in ('vcpus', 'memory_mb', 'persist')})
                self.assertEqual(expected['vcpus'],
                                 endpoint.received[-1][2]['vcpus'])
        with self.subTest('project_id in the URL'):
            resp = self.admin_api.api_request(
                f'/{project_id}/os-xloud-adjust/{self.server["id"]}',
                method='POST', body=jsonutils.dumps({'current_vcpus': 3}))
            self.assertEqual(202, resp.status_code, resp.text)
            self.assertEqual(self.hostname, self.rpc.sent[-1].server)
        with self.subTest('policy.yaml override'):
            self._write_policy({'os_compute_api:xloud:adjust':
                                'role:member and project_id:%(project_id)s'})
            resp = self._post_adjust(self.server['id'], {'current_vcpus': 3},
                                api=self.api_fixture.api)
            self.assertEqual(202, resp.status_code, resp.text)
            self._assert_refused({'current_vcpus': 3}, 403,
                                 api=self.api_fixture.reader_api)
        actions = self.admin_api.get_instance_actions(self.server['id'])
        self.assertEqual(len(cases) + 3,
                         sum(action['action'] == 'xloud-adjust'
                             for action in actions))

    def test_send_failure_then_states(self):
        # No xloud endpoint on this compute (the stock driver): its RPC
        # server refuses the call at once.
        resp = self._post_adjust(self.server['id'], SEED_BODY)

        self.assertEqual(503, resp.status_code, resp.text)
        self.assertIn('does not serve elastic sizing 2.0', resp.text)
        self.assertEqual(1, len(self.rpc.sent))
        actions = self.admin_api.get_instance_actions(self.server['id'])
        self.assertEqual('xloud-adjust', actions[0]['action'])
        self.assertEqual('Error', actions[0]['message'])
        details = self.admin_api.get_instance_action_details(
            self.server['id'], actions[0]['request_id'])
        self.assertEqual([('api_xloud_adjust', 'Error')],
                         [(event['event'], event['result'])
                          for event in details['events']])
        instance = self._instance(self.server['id'])
        self.assertIsNone(instance.task_state)
        self.assertEqual([], [key for key in instance.system_metadata
                              if key.startswith('xloud_')])
        # The grow's placement claim is released.
        self.assertEqual((2, 2048), self._allocated(self.server['id'],
                                                         self.hostname))

        endpoint = base.XloudEndpointDouble()
        base.serve_endpoint(self, self.hostname, endpoint)

        with self.subTest('the compute host refuses'):
            endpoint.refuse = 'The instance is on host elsewhere'
            before = self._snapshot(self.server['id'])
            resp = self._post_adjust(self.server['id'], SEED_BODY)
            self.assertEqual(503, resp.status_code, resp.text)
            self.assertIn('refused the adjustment: The instance is on host '
                          'elsewhere', resp.text)
            after = self._snapshot(self.server['id'])
            self.assertEqual(before['allocations'], after['allocations'])
            self.assertEqual((None, before['xloud_sysmeta']),
                             (after['task_state'], after['xloud_sysmeta']))
            endpoint.refuse = None

        with self.subTest('the compute service is down'):
            microversion = self.admin_api.microversion
            self.admin_api.microversion = '2.53'  # forced_down by id
            service = self.admin_api.get_services(
                host=self.hostname, binary='nova-compute')[0]
            self.admin_api.put_service_force_down(service['id'], True)
            calls = len(self.rpc.sent)
            resp = self._assert_refused(SEED_BODY, 409)
            self.assertIn('is down', resp.text)
            self.assertEqual(calls, len(self.rpc.sent))
            self.admin_api.put_service_force_down(service['id'], False)
            self.admin_api.microversion = microversion

        server_id = self.server['id']
        body = {'current_vcpus': 3}
        states = [
            (vm_states.ACTIVE, task_states.RESIZE_MIGRATING, 'task_state'),
            (vm_states.ACTIVE, task_states.MIGRATING, 'task_state'),
            (vm_states.ACTIVE, task_states.REBOOTING, 'task_state'),
            (vm_states.ACTIVE, task_states.SHELVING, 'task_state'),
            (vm_states.BUILDING, task_states.SPAWNING, 'vm_state'),
            (vm_states.RESIZED, None, 'vm_state'),
            (vm_states.SHELVED, None, 'vm_state'),
            (vm_states.SUSPENDED, None, 'vm_state'),
            (vm_states.RESCUED, None, 'vm_state'),
            (vm_states.ERROR, None, 'vm_state'),
        ]
        for vm_state, task_state, reported in states:
            with self.subTest(vm_state=vm_state, task_state=task_state):
                self._set_states(server_id, vm_state, task_state)
                resp = self._assert_refused(body, 409)
                state = task_state if reported == 'task_state' else vm_state
                self.assertIn(f'while it is in {reported} {state}',
                              resp.json()['conflictingRequest']['message'])
        self._set_states(server_id, vm_states.ACTIVE, None)

        with self.subTest('another operation starts during the request'):
            real_claim = placement.claim_at_least

            def rebooting_meanwhile(*args, **kwargs):
                self._set_states(server_id, vm_states.ACTIVE,
                                 task_states.REBOOTING)
                return real_claim(*args, **kwargs)

            before = self._snapshot(server_id)
            with mock.patch.object(placement, 'claim_at_least',
                                   side_effect=rebooting_meanwhile):
                resp = self._post_adjust(server_id, body)
            self.assertEqual(409, resp.status_code, resp.text)
            self.assertIn('rebooting', resp.text)
            after = self._snapshot(server_id)
            self.assertEqual('rebooting', after.pop('task_state'))
            before.pop('task_state')
            self.assertEqual(before, after)
            self._set_states(server_id, vm_states.ACTIVE, None)

        with self.subTest('locked, even for an admin'):
            self.api.post_server_action(server_id, {'lock': {}})
            resp = self._assert_refused(body, 409)
            self.assertIn('is locked', resp.text)
            self.api.post_server_action(server_id, {'unlock': {}})

        with self.subTest('paused'):
            self.api.post_server_action(server_id, {'pause': {}})
            self._wait_for_state_change(self.server, 'PAUSED')
            # Its balloon cannot move, nor a vCPU unplug be acknowledged,
            # until it runs again.
            for paused_body in (body, {'current_memory_mb': 3072}):
                resp = self._assert_refused(paused_body, 409)
                self.assertIn('is paused', resp.text)
            self.api.post_server_action(server_id, {'unpause': {}})
            self._wait_for_state_change(self.server, 'ACTIVE')

        with self.subTest('stopped: persistent only'):
            self._stop_server(self.server)
            resp = self._assert_refused(
                {'current_vcpus': 3, 'persist': False}, 409)
            self.assertIn('persist=true', resp.text)
            resp = self._post_adjust(server_id,
                                {'current_vcpus': 3, 'persist': True})
            self.assertEqual(202, resp.status_code, resp.text)
            self.assertEqual(('start_adjust', server_id),
                             endpoint.received[-1][:2])

        with self.subTest('shelved offloaded'):
            self._shelve_server(self.server)
            resp = self._assert_refused(body, 409)
            self.assertIn('shelved_offloaded', resp.text)
