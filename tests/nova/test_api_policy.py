"""The policy rules as oslo.policy's tools see them."""

import os
import tempfile

import testtools
import yaml
from oslo_config import cfg
from oslo_policy import generator

from nova_ext import policies


class PolicySampleTest(testtools.TestCase):

    def test_sample_generator_documents_the_rules(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, 'policy.yaml')
            generator.generate_sample(
                args=['--namespace', 'xloud', '--output-file', path],
                conf=cfg.ConfigOpts())
            with open(path) as f:
                text = f.read()
        # Every rule is written commented out with its default.
        sample = yaml.safe_load(
            '\n'.join(line[1:] for line in text.splitlines()
                      if line.startswith('#"')))
        self.assertEqual({
            'os_compute_api:xloud:adjust': 'rule:context_is_admin',
            'os_compute_api:xloud:show': 'rule:project_reader_or_admin',
            'os_compute_api:xloud:index': 'rule:project_reader_or_admin',
            'os_compute_api:xloud:index:all_tenants':
                'rule:context_is_admin',
            'os_compute_api:xloud:audit': 'rule:context_is_admin',
        }, sample)
        self.assertIn('POST  /os-xloud-adjust/{server_id}', text)

    def test_rule_names(self):
        self.assertEqual(
            [policies.ADJUST, policies.SHOW, policies.INDEX,
             policies.INDEX_ALL_TENANTS, policies.AUDIT],
            [rule.name for rule in policies.list_rules()])
