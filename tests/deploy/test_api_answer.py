"""``verify``'s live API checks against a real nova-api.

Nova's functional harness runs the v2.1 API from an ``api-paste.ini`` with
the filter installed (``tests/nova/base.py``) behind wsgi-intercept, with
its database, conductor and scheduler; only Keystone is stubbed, by the
harness itself, which takes the identity from ``X-Auth-*`` / ``X-Roles``
headers. The check goes through keystoneauth exactly as the command does
with credentials, so the request crosses the whole paste pipeline, and
the per-host probe reaches real compute services (Nova's fake libvirt),
one running the elastic driver and one Nova's stock libvirt driver.
"""

from keystoneauth1 import adapter, noauth, session
from oslo_upgradecheck.upgradecheck import Code

# Lets Nova's TestCase run under pytest (see that module).
import tests.nova.conftest  # noqa: F401
from nova_ext.deploy import checks
from tests.nova import base, compute_base


def admin_adapter(api_fixture, endpoint: str) -> adapter.Adapter:
    """What the command builds from credentials, with the identity the
    harness's Keystone stub reads from headers."""
    return adapter.Adapter(
        session.Session(auth=noauth.NoAuth()),
        endpoint_override=endpoint,
        additional_headers={'X-Auth-User': 'admin',
                            'X-Auth-Project-Id': api_fixture.project_id,
                            'X-Roles': 'admin,member,reader'})


class ApiAnswerTest(base.ElasticServersTestBase):

    def _adapter(self, endpoint: str) -> adapter.Adapter:
        return admin_adapter(self.api_fixture, endpoint)

    def test_answering_api(self) -> None:
        result = checks.api_answer(
            self._adapter(self.api_fixture.api.base_url))
        self.assertEqual(Code.SUCCESS, result.code, result.details)
        self.assertRegex(result.details,
                         r'^GET http://\S+/v2\.1/os-xloud-adjust -> 200, '
                         r'0 servers$')

    def test_endpoint_without_the_filter_fails_the_check(self) -> None:
        # The legacy /v2 pipeline of the same api-paste.ini has no filter:
        # a catalog pointing there is a deployment the check must catch.
        legacy = self.api_fixture.api.base_url.replace('/v2.1', '/v2')
        result = checks.api_answer(self._adapter(legacy))
        self.assertEqual(Code.FAILURE, result.code, result.details)
        self.assertIn('/v2/os-xloud-adjust returned 404', result.details)

    def test_no_credentials_is_a_warning_not_a_pass(self) -> None:
        result = checks.api_answer(None)
        self.assertEqual(Code.WARNING, result.code)


class ComputeHostsProbeTest(compute_base.ElasticComputeMixin,
                            base.ElasticServersTestBase):
    """Two compute hosts, one with the elastic driver and one with Nova's
    stock libvirt driver, each running a server."""

    microversion = '2.84'

    def test_the_api_tells_which_hosts_answer_live(self) -> None:
        self.start_compute('elastic1')
        self.flags(compute_driver='libvirt.LibvirtDriver')
        self.start_compute('stock1')
        adapter = admin_adapter(self.api_fixture,
                                self.api_fixture.api.base_url)
        # Nothing to probe a host with is nothing to look at.
        result = checks.compute_hosts_via_api(adapter)
        self.assertEqual(Code.SUCCESS, result.code, result.details)
        self.assertEqual('no ACTIVE server to probe a host with',
                         result.details)

        flavor = self._create_flavor(vcpu=2, memory_mb=2048)
        on_elastic = self._create_server(flavor_id=flavor, host='elastic1',
                                         networks='none')

        result = checks.compute_hosts_via_api(adapter)
        self.assertEqual(Code.SUCCESS, result.code, result.details)
        self.assertIn(f'live: elastic1 (server {on_elastic["id"]}: live)',
                      result.details)

        on_stock = self._create_server(flavor_id=flavor, host='stock1',
                                       networks='none')
        result = checks.compute_hosts_via_api(adapter)
        self.assertEqual(Code.FAILURE, result.code, result.details)
        self.assertIn('elastic driver answering on 1 of 2 hosts',
                      result.details)
        self.assertIn(f'not answering: stock1 (server {on_stock["id"]}: '
                      f'recorded)', result.details)
