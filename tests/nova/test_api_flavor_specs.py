"""minimum_cpu / minimum_memory through Nova's flavor extra specs API."""

from nova.api.validation.extra_specs import validators
from oslo_serialization import jsonutils

from tests.nova import base

# The flavor: 4 vCPUs, 4096 MiB. (key, value as sent in JSON)
BAD_MINIMUMS = [
    ('minimum_cpu', '0'),
    ('minimum_cpu', '-1'),
    ('minimum_cpu', 'two'),
    ('minimum_cpu', '1.5'),
    ('minimum_cpu', ''),
    ('minimum_cpu', True),
    ('minimum_cpu', 1.5),
    ('minimum_cpu', '5'),
    ('minimum_cpu', 5),
    ('minimum_memory', '0'),
    ('minimum_memory', '4097'),
    ('minimum_memory', 'lots'),
    ('minimum_memory', 8192),
]


class FlavorMinimumSpecsTest(base.ElasticServersTestBase):
    """No compute needed: only the API and its database."""

    def setUp(self) -> None:
        super().setUp()
        self.flavor_id = self._create_flavor(vcpu=4, memory_mb=4096)
        self.good = {'minimum_cpu': '2', 'minimum_memory': '2048'}
        self.admin_api.post_extra_spec(self.flavor_id,
                                       {'extra_specs': self.good})

    def _specs_request(self, method: str, body, key: str | None = None,
                       api=None, microversion: str | None = None):
        api = api or self.admin_api
        path = f'/flavors/{self.flavor_id}/os-extra_specs'
        if key is not None:
            path += f'/{key}'
        api.microversion = microversion
        try:
            return api.api_request(path, method=method,
                                   body=jsonutils.dumps(body))
        finally:
            api.microversion = None

    def test_good_minimums_stored(self):
        # Loaded by Nova through the nova.api.extra_spec_validators entry
        # point.
        self.assertIn('minimum_cpu', validators.VALIDATORS)
        self.assertIn('minimum_memory', validators.VALIDATORS)
        self.assertEqual(self.good,
                         self.admin_api.get_extra_specs(self.flavor_id))
        for microversion in (None, '2.86'):
            with self.subTest(microversion=microversion):
                # Equal to the flavor's own size: allowed, and numbers are
                # stored as Nova stores them, as strings.
                resp = self._specs_request(
                    'PUT', {'minimum_cpu': 4}, key='minimum_cpu',
                    microversion=microversion)
                self.assertEqual(200, resp.status_code, resp.text)
                resp = self._specs_request(
                    'POST', {'extra_specs': {'minimum_memory': '4096',
                                             'hw:cpu_policy': 'shared'}},
                    microversion=microversion)
                self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual({'minimum_cpu': '4', 'minimum_memory': '4096',
                          'hw:cpu_policy': 'shared'},
                         self.admin_api.get_extra_specs(self.flavor_id))

    def test_bad_minimums_refused_and_change_nothing(self):
        for microversion in (None, '2.86'):
            for key, value in BAD_MINIMUMS:
                for method in ('POST', 'PUT'):
                    with self.subTest(microversion=microversion, key=key,
                                      value=value, method=method):
                        body = {key: value}
                        if method == 'POST':
                            resp = self._specs_request(
                                'POST', {'extra_specs': body},
                                microversion=microversion)
                        else:
                            resp = self._specs_request(
                                'PUT', body, key=key,
                                microversion=microversion)
                        self.assertEqual(400, resp.status_code, resp.text)
                        self.assertIn(key, resp.json()['badRequest'][
                            'message'])
                        self.assertEqual(
                            self.good,
                            self.admin_api.get_extra_specs(self.flavor_id))

        resp = self._specs_request('PUT', {'minimum_cpu': '8'},
                                   key='minimum_cpu')
        self.assertIn("above the flavor's vcpus 4",
                      resp.json()['badRequest']['message'])

    def test_memory_model(self):
        self.assertIn('xloud:memory_model', validators.VALIDATORS)
        for microversion in (None, '2.86'):
            for value in ('virtio_mem', 'dimm', '', 1):
                with self.subTest(microversion=microversion, value=value):
                    resp = self._specs_request(
                        'PUT', {'xloud:memory_model': value},
                        key='xloud:memory_model', microversion=microversion)
                    self.assertEqual(400, resp.status_code, resp.text)
                    self.assertIn('xloud:memory_model',
                                  resp.json()['badRequest']['message'])
                    self.assertEqual(
                        self.good,
                        self.admin_api.get_extra_specs(self.flavor_id))
        for value in ('virtio-mem', 'balloon'):
            with self.subTest(value=value):
                resp = self._specs_request(
                    'PUT', {'xloud:memory_model': value},
                    key='xloud:memory_model')
                self.assertEqual(200, resp.status_code, resp.text)

    def test_virtio_mem_needs_whole_blocks(self):
        odd = self._create_flavor(vcpu=2, memory_mb=4095)
        resp = self.admin_api.api_request(
            f'/flavors/{odd}/os-extra_specs', method='POST',
            body=jsonutils.dumps({'extra_specs': {
                'xloud:memory_model': 'virtio-mem'}}))
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn("the flavor's ram is not a multiple of 2 MiB",
                      resp.json()['badRequest']['message'])
        resp = self._specs_request('POST', {'extra_specs': {
            'xloud:memory_model': 'virtio-mem', 'minimum_memory': '2047'}})
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn('minimum_memory=2047',
                      resp.json()['badRequest']['message'])
        self.assertEqual(self.good,
                         self.admin_api.get_extra_specs(self.flavor_id))
        resp = self._specs_request('POST', {'extra_specs': {
            'xloud:memory_model': 'virtio-mem', 'hw:mem_encryption': 'true'}})
        self.assertEqual(400, resp.status_code, resp.text)
        self.assertIn('SEV', resp.json()['badRequest']['message'])

    def test_nova_answers_what_is_not_ours(self):
        cases = [
            # Nova's policy first: a member gets 403, not our 400.
            ('member', self.api_fixture.api, 'POST',
             {'extra_specs': {'minimum_cpu': '99'}}, None, 403),
            ('unknown flavor', self.admin_api, 'POST',
             {'extra_specs': {'minimum_cpu': '2'}}, None, 404),
            ('key and URL mismatch', self.admin_api, 'PUT',
             {'minimum_cpu': '2'}, 'minimum_memory', 400),
            ('not JSON', self.admin_api, 'POST', None, None, 400),
        ]
        for description, api, method, body, key, status in cases:
            with self.subTest(description):
                if description == 'unknown flavor':
                    path = '/flavors/no-such-flavor/os-extra_specs'
                    resp = api.api_request(path, method=method,
                                           body=jsonutils.dumps(body))
                elif body is None:
                    resp = api.api_request(
                        f'/flavors/{self.flavor_id}/os-extra_specs',
                        method=method, body='{extra_specs',
                        headers={'Content-Type': 'application/json'})
                else:
                    resp = self._specs_request(method, body, key=key,
                                               api=api)
                self.assertEqual(status, resp.status_code, resp.text)
                self.assertEqual(
                    self.good,
                    self.admin_api.get_extra_specs(self.flavor_id))
