"""The policy rules: as oslo.policy's tools see them, as Horizon's copy
holds them, and their former names still honoured through the API."""

import os
import tempfile

import testtools
import yaml
from oslo_config import cfg
from oslo_policy import generator
from oslo_serialization import jsonutils

from nova_ext import horizon_policy, policies
from tests.nova import base

# Each rule's name, its former name (None for a rule that never had one)
# and the default both share.
RULES = [
    ('xloud:elastic_sizing:adjust', 'os_compute_api:xloud:adjust',
     'rule:context_is_admin'),
    ('xloud:elastic_sizing:show', 'os_compute_api:xloud:show',
     'rule:project_reader_or_admin'),
    ('xloud:elastic_sizing:index', 'os_compute_api:xloud:index',
     'rule:project_reader_or_admin'),
    ('xloud:elastic_sizing:index:all_tenants',
     'os_compute_api:xloud:index:all_tenants', 'rule:context_is_admin'),
    ('xloud:elastic_sizing:audit', 'os_compute_api:xloud:audit',
     'rule:context_is_admin'),
    ('xloud:elastic_sizing:flavor_minimums', None, 'rule:context_is_admin'),
    ('xloud:elastic_sizing:host_exposure', None, 'rule:context_is_admin'),
    ('xloud:elastic_sizing:autopilot', None, 'rule:context_is_admin'),
]
RENAMED = [(name, former, default) for name, former, default in RULES
           if former is not None]


class PolicySampleTest(testtools.TestCase):

    def _sample(self) -> str:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, 'policy.yaml')
            generator.generate_sample(
                args=['--namespace', 'xloud', '--output-file', path],
                conf=cfg.ConfigOpts())
            with open(path) as f:
                return f.read()

    def test_sample_generator_documents_the_rules(self):
        text = self._sample()
        # Every rule is written commented out with its default.
        sample = yaml.safe_load(
            '\n'.join(line[1:] for line in text.splitlines()
                      if line.startswith('#"')))
        self.assertEqual({name: default for name, _, default in RULES},
                         sample)
        self.assertIn('POST  /os-xloud-adjust/{server_id}', text)

    def test_sample_generator_documents_the_former_names(self):
        text = self._sample()
        unwrapped = text.replace('\n# ', ' ')
        for name, former, default in RENAMED:
            with self.subTest(former):
                self.assertIn(f'\n# "{former}": "rule:{name}"\n', text)
                self.assertIn(
                    f'"{former}":"{default}" has been deprecated since '
                    f'0.2.0 in favor of "{name}":"{default}".', unwrapped)

    def test_rule_names(self):
        self.assertEqual(
            [policies.ADJUST, policies.SHOW, policies.INDEX,
             policies.INDEX_ALL_TENANTS, policies.AUDIT,
             policies.FLAVOR_MINIMUMS, policies.HOST_EXPOSURE,
             policies.AUTOPILOT],
            [rule.name for rule in policies.list_rules()])
        self.assertEqual(
            [(name, former, default, former and default)
             for name, former, default in RULES],
            [(rule.name,
              rule.deprecated_rule and rule.deprecated_rule.name,
              rule.check_str,
              rule.deprecated_rule and rule.deprecated_rule.check_str)
             for rule in policies.list_rules()])


class HorizonPolicyFileTest(testtools.TestCase):
    """xloud_dashboard's policy file is the generator's output."""

    def test_checked_in_file_is_generated(self):
        with open(horizon_policy.HORIZON_POLICY_FILE) as f:
            checked_in = f.read()
        self.assertEqual(horizon_policy.render(), checked_in,
                         'stale: run python -m nova_ext.horizon_policy')
        self.assertEqual(0, horizon_policy.main(['--check']))

    def test_holds_the_defaults_under_the_new_names(self):
        self.assertEqual({name: default for name, _, default in RULES},
                         yaml.safe_load(horizon_policy.render()))

    def test_check_fails_on_a_stale_file(self):
        generated = horizon_policy.render()
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, 'xloud_elastic_sizing.yaml')
            stale = generated.replace('"xloud:elastic_sizing:adjust"',
                                      '"os_compute_api:xloud:adjust"')
            with open(path, 'w') as f:
                f.write(stale)
            self.assertEqual(1, horizon_policy.main(
                ['--check', '--output-file', path]))
            with open(path) as f:
                self.assertEqual(stale, f.read())

            self.assertEqual(0, horizon_policy.main(['--output-file', path]))
            self.assertEqual(0, horizon_policy.main(
                ['--check', '--output-file', path]))
            with open(path) as f:
                self.assertEqual(generated, f.read())


class FormerNamesTest(base.ElasticAPITestBase):
    """A policy.yaml that overrides a rule under its former
    os_compute_api:xloud:* name still decides, through nova-api."""

    def setUp(self) -> None:
        super().setUp()
        hostname = self.start_compute()
        self.server = self._create_server(
            flavor_id=self._create_elastic_flavor())
        base.serve_endpoint(self, hostname, base.XloudEndpointDouble())
        # As deployments evaluate policies, not the harness's legacy mode.
        self._enforce_new_defaults()

    def _request(self, api, method: str, path: str, body=None):
        return api.api_request(
            path, method=method,
            body=None if body is None else jsonutils.dumps(body),
            headers={'Content-Type': 'application/json'})

    def test_override_under_the_former_name_is_honoured(self):
        server_path = f'/os-xloud-adjust/{self.server["id"]}'
        member = self.api_fixture.api
        other_role = self.api_fixture.other_api
        cases = [
            # (former name, caller, its role, method, path, body, status)
            ('os_compute_api:xloud:adjust', member, 'member', 'POST',
             server_path, {'current_vcpus': 3}, 202),
            ('os_compute_api:xloud:show', other_role, 'other', 'GET',
             server_path, None, 200),
            ('os_compute_api:xloud:index', other_role, 'other', 'GET',
             '/os-xloud-adjust', None, 200),
            ('os_compute_api:xloud:index:all_tenants', member, 'member',
             'GET', '/os-xloud-adjust?all_tenants=1', None, 200),
            ('os_compute_api:xloud:audit', member, 'member', 'GET',
             '/os-xloud-audit', None, 200),
        ]
        new_names = {former: name for name, former, _ in RENAMED}
        self.assertEqual(set(new_names), {case[0] for case in cases})
        for former, api, role, method, path, body, allowed in cases:
            name = new_names[former]
            with self.subTest(former):
                self._write_policy({})
                resp = self._request(api, method, path, body)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertIn(f"Policy doesn't allow {name} to be "
                              f"performed.",
                              resp.json()['forbidden']['message'])

                self._write_policy({
                    former: f'role:{role} and project_id:%(project_id)s'})
                resp = self._request(api, method, path, body)
                self.assertEqual(allowed, resp.status_code, resp.text)

                # The new name, once the file has it, decides.
                self._write_policy({
                    former: f'role:{role} and project_id:%(project_id)s',
                    name: 'rule:context_is_admin'})
                resp = self._request(api, method, path, body)
                self.assertEqual(403, resp.status_code, resp.text)
