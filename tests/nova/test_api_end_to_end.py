"""The API and the compute side together: nova-api with the filter, the
compute host running XloudLibvirtDriver with its xloud RPC endpoint."""

from tests.nova import base, compute_base


class EndToEndTest(compute_base.ElasticComputeMixin,
                   base.ElasticAPITestBase):

    def setUp(self) -> None:
        super().setUp()
        self.hostname = self.start_compute()
        self.server = self._create_server(
            flavor_id=self._create_elastic_flavor())
        self.path = f'/os-xloud-adjust/{self.server["id"]}'

    def _show(self) -> dict:
        resp = self.admin_api.api_request(self.path)
        self.assertEqual(200, resp.status_code, resp.text)
        return resp.json()['server']

    def _adjusted(self, body: dict) -> dict:
        resp = self._post_adjust(self.server['id'], body)
        self.assertEqual(202, resp.status_code, resp.text)
        request_id = resp.json()['adjustment']['request_id']
        self._wait_for_adjust_event(self.server, request_id, 'Success')
        return self._show()

    def test_adjust_and_read_back_live(self):
        server = self._show()
        self.assertEqual(('live', 2, 2048, 2, 2048),
                         (server['source'], server['current_vcpus'],
                          server['current_memory_mb'],
                          server['boot_vcpus'], server['boot_memory_mb']))

        # The seed's body: grow and persist.
        server = self._adjusted({'current_vcpus': 3,
                                 'current_memory_mb': 3072,
                                 'persist': True})
        self.assertEqual(('live', 3, 3072, 3, 3072),
                         (server['source'], server['current_vcpus'],
                          server['current_memory_mb'],
                          server['boot_vcpus'], server['boot_memory_mb']))
        self.assertEqual('success', server['adjustment']['status'])
        self.assertIsNotNone(server['updated_at'])
        self.assertEqual((3, 3072), self._domain_size(
            self.admin_api.get_server(self.server['id'])))
        self.assertEqual((3, 3072), self._allocated(self.server['id'],
                                                    self.hostname))

        # Shrink live only: the boot size stays.
        server = self._adjusted({'current_vcpus': 2, 'persist': False})
        self.assertEqual((2, 3072, 3, 3072),
                         (server['current_vcpus'],
                          server['current_memory_mb'],
                          server['boot_vcpus'], server['boot_memory_mb']))

        listed = self.admin_api.api_request('/os-xloud-adjust').json()
        self.assertEqual([('recorded', 2, 3072)],
                         [(s['source'], s['current_vcpus'],
                           s['current_memory_mb'])
                          for s in listed['servers']])

    def test_each_adjustment_leaves_its_change(self):
        resp = self._post_adjust(self.server['id'], {
            'current_vcpus': 3, 'current_memory_mb': 3072, 'persist': True})
        request_id = resp.json()['adjustment']['request_id']
        self._wait_for_adjust_event(self.server, request_id, 'Success')
        server = self._show()
        [change] = server['changes']
        self.assertEqual(
            (request_id, 'vcpus 2 -> 3, memory_mb 2048 -> 3072, persisted'),
            (change['request_id'], change['details']))
        self.assertTrue(change['changed_at'].endswith('Z'))

        # A refusal says that nothing was applied, and why.
        self.elastic_libvirt.refuse_next(
            self._connection(self.hostname), self.server['id'],
            'setVcpusFlags', "internal error: unable to execute QEMU "
            "command 'device_add'")
        resp = self._post_adjust(self.server['id'],
                                 {'current_vcpus': 4, 'persist': False})
        refused_id = resp.json()['adjustment']['request_id']
        self._wait_for_adjust_event(self.server, refused_id, 'Error')
        changes = self._show()['changes']
        self.assertEqual([refused_id, request_id],
                         [c['request_id'] for c in changes])
        self.assertEqual(
            'failed, nothing applied: libvirt refused 4 vCPUs: internal '
            "error: unable to execute QEMU command 'device_add'",
            changes[0]['details'])

    def test_the_newest_twenty_changes_are_kept(self):
        request_ids = []
        for index in range(21):
            resp = self._post_adjust(self.server['id'], {
                'current_vcpus': 2 + index % 2, 'persist': False})
            request_ids.append(resp.json()['adjustment']['request_id'])
            self._wait_for_adjust_event(self.server, request_ids[-1],
                                        'Success')
        changes = self._show()['changes']
        self.assertEqual(request_ids[:0:-1],
                         [c['request_id'] for c in changes])
        self.assertEqual(['vcpus 3 -> 2, not persisted',
                          'vcpus 2 -> 3, not persisted'],
                         [c['details'] for c in changes[:2]])
        self.assertNotIn(f'xloud_change_{request_ids[0]}',
                         self._instance(self.server['id']).system_metadata)
