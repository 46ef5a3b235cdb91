"""Render the Elastic Sizing Instances tab for 50, 500 and 2,000 instances.

The plugin's real API layer (openstacksdk over HTTP) talks to the fake
Nova of ``tests/dashboard/fakecloud.py`` on loopback; Horizon renders the
Instances tab as its tab loader asks for it, through Django's test client,
all instances on one page so every row is rendered, with production's
cached template loaders. Prints the API calls per render (they must not
grow with the number of instances) and the render time per instance (it
must stay flat).

    PYTHONPATH=. .venv/bin/python bench/dashboard_instances.py [--sizes 50 500]
"""

import argparse
import copy
import os
import statistics
import sys
import time
from unittest import mock

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.dashboard.settings')

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from openstack_auth import user as auth_user  # noqa: E402
from openstack_auth import utils as auth_utils  # noqa: E402
from openstack_dashboard.test import helpers  # noqa: E402

from tests.dashboard import fakecloud  # noqa: E402
from tests.dashboard.test_browser import admin_token  # noqa: E402

# What Horizon's tab loader fetches: the Instances tab alone, without the
# page around it (navigation, scripts), which costs the same at any size.
TAB = '/admin/elastic_sizing/?tab=elastic_sizing__instances'
AJAX = {'HTTP_X_REQUESTED_WITH': 'XMLHttpRequest'}


def admin_user(compute_url: str) -> auth_user.User:
    auth_ref = admin_token(compute_url)
    return auth_user.User(
        id=auth_ref.user_id, token=auth_user.Token(auth_ref),
        user=auth_ref.username, roles=[{'name': 'admin'}],
        domain_id=auth_ref.user_domain_id, tenant_id=auth_ref.project_id,
        tenant_name=auth_ref.project_name,
        service_catalog=auth_ref.service_catalog.catalog,
        services_region='RegionOne', authorized_tenants=[], enabled=True)


def production_templates() -> list[dict]:
    """The test settings' template engine as production configures it
    with DEBUG off (openstack_dashboard/settings.py): cached loaders."""
    engine = copy.deepcopy(settings.TEMPLATES[0])
    engine['OPTIONS']['debug'] = False
    engine['OPTIONS']['loaders'] = [
        ('django.template.loaders.cached.Loader',
         engine['OPTIONS']['loaders'])]
    return [engine]


def measure(count: int, repeat: int) -> dict[str, float]:
    cloud = fakecloud.FakeCloud.demo(servers=count)
    with fakecloud.FakeNovaServer(cloud) as nova, \
            mock.patch.object(auth_utils, 'get_user',
                              return_value=admin_user(nova.url)), \
            override_settings(API_RESULT_PAGE_SIZE=count, DEBUG=False,
                              TEMPLATES=production_templates()):
        client = Client()
        response = client.get(TAB, **AJAX)
        assert response.status_code == 200, response.status_code
        rows = response.content.count(b'id="instances__row__')
        assert rows == count, (rows, count)
        timings, cpu, calls = [], [], []
        for _ in range(repeat):
            before = len(cloud.calls)
            start, start_cpu = time.perf_counter(), time.process_time()
            response = client.get(TAB, **AJAX)
            timings.append(time.perf_counter() - start)
            # CPU of this process (Horizon, the API layer and the fake
            # Nova's thread): wall time on a shared machine also counts
            # other processes.
            cpu.append(time.process_time() - start_cpu)
            calls.append(len(cloud.calls) - before)
            assert response.status_code == 200
    seconds = statistics.median(timings)
    cpu_seconds = statistics.median(cpu)
    return {'instances': count, 'calls': max(calls), 'seconds': seconds,
            'ms_per_instance': seconds * 1000 / count,
            'cpu_ms_per_instance': cpu_seconds * 1000 / count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[50, 500, 2000])
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    # Horizon's other panels are mocked as in its own tests; this panel's
    # extension check and listing go to the fake Nova.
    ours = 'elastic_sizing'
    mocks = {name: config for name, config
             in settings.TEST_GLOBAL_MOCKS_ON_PANELS.items() if name != ours}
    with override_settings(TEST_GLOBAL_MOCKS_ON_PANELS=mocks):
        patchers = helpers._apply_panel_mocks()
    print(f'{"instances":>9} {"API calls":>9} {"render s":>9} '
          f'{"ms/instance":>11} {"CPU ms/instance":>15}', flush=True)
    results = []
    try:
        for count in args.sizes:
            print(f'  rendering {count} instances ({args.repeat} times)...',
                  file=sys.stderr, flush=True)
            result = measure(count, args.repeat)
            results.append(result)
            print(f'{result["instances"]:>9} {result["calls"]:>9} '
                  f'{result["seconds"]:>9.3f} '
                  f'{result["ms_per_instance"]:>11.3f} '
                  f'{result["cpu_ms_per_instance"]:>15.3f}', flush=True)
    finally:
        for patcher in patchers.values():
            patcher.stop()
    calls = {result['calls'] for result in results}
    print(f'API calls per render: {sorted(calls)} '
          f'({"constant" if len(calls) == 1 else "GROWS"})')
    for key, label in (('ms_per_instance', 'ms per instance'),
                       ('cpu_ms_per_instance', 'CPU ms per instance')):
        values = [result[key] for result in results]
        print(f'{label}: {min(values):.3f} to {max(values):.3f} '
              f'(largest/smallest x{max(values) / min(values):.2f})')
    return 0 if len(calls) == 1 else 1


if __name__ == '__main__':
    sys.exit(main())
