"""The panel in real headless Chromium against Django's live server.

The administrator logs in through Horizon's login form (Keystone answers
through mocked keystoneauth plugins with an admin token whose catalog
points at the fake Nova), and the plugin's real API layer talks HTTP to
``fakecloud.FakeNovaServer``, which keeps state: an adjustment shows up in
the table, settles when the test says so, and lands in the history.
Screenshots of each screen go to ``artifacts/screenshots/dashboard/``.
"""

import uuid
from unittest import mock

import pytest
from django.conf import settings
from django.test.utils import override_settings
from keystoneauth1 import access
from keystoneauth1 import fixture as ksa_fixture
from keystoneauth1.identity import v3 as v3_auth
from keystoneclient.v3 import client as keystone_client
from keystoneclient.v3 import projects
from openstack_auth import policy
from openstack_dashboard.test import helpers
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from tests.dashboard import browser, conftest, fakecloud

PROJECT_ID = uuid.uuid4().hex


@pytest.fixture
def _django_db_helper():
    """Horizon needs no database; as in Horizon's own selenium tests."""


@pytest.fixture(scope='module')
def nova():
    with fakecloud.FakeNovaServer(fakecloud.FakeCloud.demo(6)) as server:
        yield server


@pytest.fixture
def cloud(nova):
    nova.cloud = fakecloud.FakeCloud.demo(6)
    return nova.cloud


def admin_token(compute_url: str) -> access.AccessInfoV3:
    token = ksa_fixture.V3Token(
        user_id=uuid.uuid4().hex, user_name='admin',
        user_domain_id='default', user_domain_name='Default',
        project_id=PROJECT_ID, project_name='admin',
        project_domain_id='default', project_domain_name='Default')
    token.add_role(name='admin')
    compute = token.add_service('compute', name='nova')
    compute.add_standard_endpoints(public=compute_url, internal=compute_url,
                                   admin=compute_url, region='RegionOne')
    identity = token.add_service('identity', name='keystone')
    keystone_url = settings.OPENSTACK_KEYSTONE_URL
    identity.add_standard_endpoints(public=keystone_url,
                                    internal=keystone_url,
                                    admin=keystone_url, region='RegionOne')
    return access.create(body=token, auth_token=uuid.uuid4().hex)


@pytest.fixture(scope='module')
def keystone(nova):
    """Keystone's answers to Horizon's login, as Horizon's tests mock it."""
    auth_ref = admin_token(nova.url)
    project = projects.Project(
        projects.ProjectManager(None),
        {'id': PROJECT_ID, 'name': 'admin', 'enabled': True,
         'domain_id': 'default', 'description': ''}, loaded=True)
    with mock.patch.object(v3_auth, 'Password') as password, \
            mock.patch.object(v3_auth, 'Token') as token, \
            mock.patch.object(keystone_client, 'Client') as client:
        for plugin in (password, token):
            plugin.return_value = mock.Mock(
                auth_url=settings.OPENSTACK_KEYSTONE_URL)
            plugin.return_value.get_access.return_value = auth_ref
        client.return_value.projects.list.return_value = [project]
        yield


@pytest.fixture(scope='module')
def database(django_db_setup, django_db_blocker):
    """Django's login signals touch the (test) database."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope='module')
def horizon_setup(keystone, production_static, database):
    """Production's URLs and offline-compressed static files, real policy
    checks, and Horizon's own panel mocks (not ours)."""
    ours = 'elastic_sizing'
    with override_settings(
            **settings.XLOUD_PRODUCTION_STATIC,
            ROOT_URLCONF='openstack_dashboard.urls',
            # Rebuilds the template engines: Horizon's view tests (which
            # pytest-django runs first) leave a stand-in context processor
            # in the cached ones.
            TEMPLATES=settings.TEMPLATES,
            STATIC_ROOT=str(production_static),
            COMPRESS_ROOT=str(production_static),
            COMPRESS_OUTPUT_DIR='dashboard',
            COMPRESS_OFFLINE=True,
            COMPRESS_ENABLED=True,
            AVAILABLE_THEMES=[('default', 'Default', 'themes/default')],
            POLICY_CHECK_FUNCTION='openstack_auth.policy.check',
            TEST_GLOBAL_MOCKS_ON_PANELS={
                name: config for name, config
                in settings.TEST_GLOBAL_MOCKS_ON_PANELS.items()
                if name != ours}):
        policy.reset()
        patchers = helpers._apply_panel_mocks()
        yield
        for patcher in patchers.values():
            patcher.stop()
    policy.reset()


@pytest.fixture(scope='module')
def panel(live_server, horizon_setup, nova):
    try:
        driver = browser.start_chromium()
    except RuntimeError as exc:
        pytest.skip(f'no Chromium: {exc}')
    panel = browser.Panel(driver, live_server.url)
    panel.login('admin', 'secret', domain='Default')
    yield panel
    browser.stop_chromium(driver)


@pytest.fixture(autouse=True)
def keep_failures(request, panel):
    """A screenshot and the page of a failed test, for the reviewer."""
    yield
    if request.node.stash.get(conftest.FAILED, False):
        name = f'failed-{request.node.name}'
        panel.screenshot(name)
        (browser.SCREENSHOTS / f'{name}.html').write_text(
            panel.driver.page_source)


def server_id(cloud, name):
    return next(server.id for server in cloud.servers.values()
                if server.name == name)


def test_login_and_instances_tab(panel, cloud):
    panel.open()
    rows = panel.driver.find_elements(By.CSS_SELECTOR,
                                      'table#instances tbody tr')
    assert len(rows) == 6
    large = panel.row_text('instances', server_id(cloud, 'vm-0000'))
    for text in ('vm-0000', 'elastic.large', '2 vCPU, 4GB', '16GB',
                 'compute-1', 'Never'):
        assert text in large
    nav = panel.find('#sidebar-accordion-admin-compute')
    assert 'Elastic Sizing' in nav.get_attribute('textContent')
    panel.screenshot('01-instances')


def test_adjust_one_instance(panel, cloud):
    target = server_id(cloud, 'vm-0001')
    panel.open()
    panel.open_row_action('instances', target, 'adjust')
    form = panel.modal()
    assert form.find_element(By.NAME, 'vcpus').get_attribute('max') == '4'
    assert '1 now, from 1 to 4' in form.text
    panel.fill(form, {'vcpus': 3, 'memory_mb': 2048})
    panel.screenshot('02-adjust-form')
    panel.submit(form)
    panel.wait_for_message(
        'Adjusting instance "vm-0001" to 3 vCPUs and 2GB.')
    assert cloud.servers[target].pending == (3, 2048)
    adjusting = panel.wait_for_row('instances', target, 'Adjusting')
    assert 'warning' in panel.row('instances', target).get_attribute(
        'class')
    assert '1GB' in adjusting
    panel.screenshot('03-adjusting')
    cloud.settle()
    done = panel.wait_for_row('instances', target, 'Done')
    assert '3' in done.split() and '2GB' in done
    panel.screenshot('04-adjusted')


def test_refused_adjustment_keeps_the_modal_open(panel, cloud):
    target = server_id(cloud, 'vm-0002')
    panel.open()
    panel.open_row_action('instances', target, 'adjust')
    form = panel.modal()
    panel.fill(form, {'vcpus': 2})
    # Locked while the form is open: its clean() reads the instance
    # again and refuses before anything is sent.
    cloud.servers[target].locked = True
    cloud.servers[target].locked_reason = 'maintenance window'
    cloud.calls.clear()
    panel.submit(form)
    error = panel.visible('.modal-dialog .alert-danger')
    assert ('Instance "vm-0002" cannot be adjusted: The instance is locked: '
            'maintenance window') in error.text
    assert panel.modal().is_displayed()
    panel.screenshot('05-adjust-refused')
    assert ('POST', f'/v2.1/os-xloud-adjust/{target}') not in cloud.calls
    assert cloud.servers[target].adjustment_status is None
    # Once the page is shown again, the row's Adjust is disabled, with why.
    panel.open()
    row = panel.row('instances', target)
    assert 'No' in row.find_element(By.CSS_SELECTOR,
                                    'td.xloud-adjustable').text
    adjust = panel.find(f'#instances__row_{target}__action_adjust')
    assert 'disabled' in adjust.get_attribute('class').split()
    assert 'The instance is locked.' in (
        adjust.get_attribute('data-original-title') or
        adjust.get_attribute('title'))


def test_bulk_adjust_three(panel, cloud):
    targets = [server_id(cloud, name)
               for name in ('vm-0000', 'vm-0001', 'vm-0002')]
    panel.open()
    panel.select_rows('instances', targets)
    panel.find('#instances__action_bulk_adjust').click()
    form = panel.find('form.xloud-elastic-form')
    assert 'Adjust 3 instances at once.' in panel.driver.page_source
    panel.fill(form, {'mode': 'relative', 'vcpus_step': 1,
                      'memory_step': 1024})
    panel.screenshot('06-bulk-form')
    panel.submit(form)
    message = panel.wait_for_message('Adjusting 3 instances')
    assert 'vm-0000: 2 → 3 vCPUs, 4GB → 5GB' in message
    assert [cloud.servers[target].pending for target in targets] == [
        (3, 5120), (2, 2048), (2, 2048)]
    panel.screenshot('07-bulk-adjusting')
    cloud.settle()
    for target in targets:
        panel.wait_for_row('instances', target, 'Done')
    panel.screenshot('08-bulk-adjusted')


def test_edit_flavor_minimums(panel, cloud):
    panel.open('?tab=elastic_sizing__flavors')
    panel.open_row_action('flavors', '1', 'edit_minimums')
    form = panel.modal()
    assert 'no resources:* extra specs' in form.text
    panel.fill(form, {'minimum_cpu': 1, 'minimum_memory': 256})
    panel.screenshot('09-flavor-minimums-form')
    panel.submit(form)
    panel.wait_for_message('Updated the minimums of flavor "m1.tiny". It '
                           'has no instances.')
    # The scoped keys.
    assert cloud.flavors['1'].extra_specs == {'xloud:minimum_cpu': '1',
                                              'xloud:minimum_memory': '256'}
    row = panel.wait_for_row('flavors', '1', '256MB')
    assert 'm1.tiny' in row
    panel.screenshot('10-flavors')


def test_failure_and_history(panel, cloud):
    target = server_id(cloud, 'vm-0004')
    nova_path = f'/v2.1/os-xloud-adjust/{target}'
    cloud.handle('POST', nova_path, {}, {'current_vcpus': 2})
    cloud.settle()
    cloud.fail_next_adjust = 'unable to set vcpus: guest agent timed out'
    cloud.handle('POST', nova_path, {}, {'current_vcpus': 4})
    panel.open()
    panel.wait_for_row('instances', target, 'Adjusting')
    cloud.settle()
    failed = panel.wait_for_row('instances', target, 'Failed')
    assert 'guest agent timed out' in failed
    assert 'status_down' in panel.row('instances', target).get_attribute(
        'class')
    panel.screenshot('11-failed')
    panel.open_row_action('instances', target, 'history')
    table = panel.find('table#history')
    rows = table.find_elements(By.CSS_SELECTOR, 'tbody tr')
    assert len(rows) == 2
    assert 'Error' in rows[0].text and 'guest agent' in rows[0].text
    assert 'Success' in rows[1].text
    assert 'vCPUs 1 → 2' in rows[1].text
    panel.screenshot('12-history')


def test_sync_column_says_what_drifts(panel, cloud):
    drifted = server_id(cloud, 'vm-0003')
    sentence = ('Placement holds 2 vCPUs / 4096 MiB for the instance but '
                'its guest runs at 4 vCPUs / 4096 MiB on compute-2: the '
                'host can run more than placement allows.')
    cloud.add_drift(drifted, 'placement_below_live', sentence)
    busy = server_id(cloud, 'vm-0005')
    cloud.audit_skipped[busy] = 'busy (task_state migrating)'
    cloud.calls.clear()
    panel.open()
    assert cloud.calls.count(('GET', '/v2.1/os-xloud-audit')) == 1
    row = panel.row_text('instances', drifted)
    assert 'Drift (critical)' in row and 'placement_below_live' in row
    state = panel.row('instances', drifted).find_element(
        By.CSS_SELECTOR, '.xloud-sync-drift')
    # Bootstrap moves the title into data-original-title once it has
    # set the tooltip up.
    assert sentence in (state.get_attribute('data-original-title') or
                        state.get_attribute('title'))
    assert 'In sync' in panel.row_text('instances',
                                       server_id(cloud, 'vm-0000'))
    assert 'Unknown' in panel.row_text('instances', busy)
    ActionChains(panel.driver).move_to_element(state).perform()
    panel.screenshot('13-sync-drift')

    cloud.audit_error = 403
    panel.open()
    panel.open()
    header = panel.find('table#instances thead').text
    assert 'Sync' not in header and 'Adjustment' in header
    # Refused once, then remembered: no audit call for the second page.
    assert cloud.calls.count(('GET', '/v2.1/os-xloud-audit')) == 2


def test_new_minimums_reach_existing_instances_once_applied(panel, cloud):
    small = [server for server in cloud.servers.values()
             if server.flavor.id == '10']
    busy = small[0]
    busy.operation = 'migrating'
    panel.open('?tab=elastic_sizing__flavors')
    panel.open_row_action('flavors', '10', 'edit_minimums')
    form = panel.modal()
    assert 'No guest is given less than 256MB' in form.text
    assert form.find_element(By.NAME, 'minimum_memory').get_attribute(
        'min') == '256'
    panel.fill(form, {'minimum_cpu': 2})
    panel.submit(form)
    message = panel.wait_for_message('carry other minimums')
    assert ('4 of its 4 instances carry other minimums or another memory '
            "method and keep them until the flavor's are applied to them. 1 "
            'of them has an operation in progress.') in message
    panel.screenshot('14-minimums-saved-instances-stale')
    # The instances still carry their own copy, which governs them.
    assert all(server.embedded_specs['xloud:minimum_cpu'] == '1'
               for server in small)
    # The message's button opens the apply form.
    panel.visible('.messages a.xloud-apply-minimums').click()
    form = panel.modal()
    assert 'No guest is resized' in form.text
    report = form.find_element(By.CSS_SELECTOR, '.xloud-minimums-report')
    assert report.find_element(
        By.CSS_SELECTOR, '.xloud-minimums-stale').text == '4'
    assert report.find_element(
        By.CSS_SELECTOR, '.xloud-minimums-busy').text == '1'
    panel.screenshot('15-apply-minimums-form')
    panel.submit(form)
    panel.wait_for_message('Applied the minimums of flavor "elastic.small" '
                           'to 3 instances.')
    panel.wait_for_message(f'apply again once it has ended: {busy.id}')
    below = panel.wait_for_message('run below the new minimums')
    assert all(server.id in below for server in small[1:])
    panel.screenshot('16-minimums-applied')
    assert [server.embedded_specs['xloud:minimum_cpu']
            for server in small] == ['1', '2', '2', '2']

    # The instances now show, and are bounded by, the new minimum.
    panel.open()
    assert '2 vCPU, 1GB' in panel.row_text('instances', small[1].id)
    assert '1 vCPU, 1GB' in panel.row_text('instances', busy.id)
    panel.open_row_action('instances', small[1].id, 'adjust')
    form = panel.modal()
    assert form.find_element(By.NAME, 'vcpus').get_attribute('min') == '2'
    assert '1 now, from 2 to 4' in form.text


def test_rows_say_why_they_cannot_be_adjusted(panel, cloud):
    pinned = cloud.add_flavor('pinned', 4, 4096, minimum_cpu=2,
                              minimum_memory=2048, flavor_id='30',
                              extra_specs={'hw:cpu_policy': 'dedicated'})
    servers = {
        'pinned': cloud.add_server('pinned-vm', pinned,
                                   server_id='00000000-0000-4000-9000-000000000001'),
        'resident': cloud.add_server(
            'resident-vm', cloud.flavors['10'],
            image_properties={'hw_locked_memory': 'true'},
            server_id='00000000-0000-4000-9000-000000000002'),
        'failed': cloud.add_server('failed-vm', cloud.flavors['10'],
                                   server_id='00000000-0000-4000-9000-000000000003'),
        'locked': cloud.add_server('locked-vm', cloud.flavors['10'],
                                   server_id='00000000-0000-4000-9000-000000000004'),
    }
    servers['failed'].status = 'ERROR'
    servers['locked'].locked = True
    panel.open()
    expected = {
        'pinned': ('No', 'hw:cpu_policy=dedicated pins vCPUs'),
        'resident': ('vCPUs only', 'hw:locked_memory keeps all guest memory'),
        'failed': ('No', 'The instance is in error.'),
        'locked': ('No', 'The instance is locked.'),
    }
    for name, (label, reason) in expected.items():
        target = servers[name].id
        cell = panel.row('instances', target).find_element(
            By.CSS_SELECTOR, 'td.xloud-adjustable span')
        assert cell.text == label, name
        # Bootstrap moves the title once it has set the tooltip up.
        assert reason in (cell.get_attribute('data-original-title') or
                          cell.get_attribute('title')), name
        adjust = panel.find(f'#instances__row_{target}__action_adjust')
        offered = 'disabled' not in adjust.get_attribute('class').split()
        assert offered == (label != 'No'), name
    yes = panel.row('instances', server_id(cloud, 'vm-0001')).find_element(
        By.CSS_SELECTOR, 'td.xloud-adjustable').text
    assert yes == 'Yes'
    pinned_cell = panel.row('instances', servers['pinned'].id).find_element(
        By.CSS_SELECTOR, 'td.xloud-adjustable span')
    ActionChains(panel.driver).move_to_element(pinned_cell).perform()
    panel.screenshot('17-not-adjustable-reasons')

    # The partly elastic one: memory is shown fixed, with why.
    panel.open_row_action('instances', servers['resident'].id, 'adjust')
    form = panel.modal()
    assert not form.find_element(By.NAME, 'memory_mb').is_enabled()
    assert 'hw:locked_memory keeps all guest memory' in form.text
    panel.fill(form, {'vcpus': 3})
    panel.screenshot('18-adjust-vcpus-only')
    panel.submit(form)
    panel.wait_for_message('Adjusting instance "resident-vm" to 3 vCPUs')
    # Memory left alone: the flavor's, as it is not elastic.
    assert servers['resident'].pending == (3, 4096)


def test_host_exposure_chart_highlights_a_host_over_capacity(panel, cloud):
    # compute-1 runs vm-0000 (2 of 8 vCPUs, 4 of 16 GB), vm-0002 and
    # vm-0004 (1 of 4, 1 of 4 GB each): 6 GB allocated, 24 GB at their
    # maximum, above the 15.5 GB its 16 GB leave for guests. compute-2
    # runs the same on the default 32 GB.
    cloud.add_host('compute-1', memory_mb=16384)
    panel.open()
    panel.find('a[data-target="#elastic_sizing__host_exposure"]').click()
    charts = panel.find('.xloud-exposure-charts[data-drawn="true"]')
    table = panel.visible('table#host_exposure')
    over = table.find_elements(By.CSS_SELECTOR, 'tr.xloud-over-capacity')
    assert [row.get_attribute('data-host') for row in over] == ['compute-1']
    assert 'Over capacity' in over[0].text
    within = table.find_element(By.CSS_SELECTOR, 'tr[data-host="compute-2"]')
    assert 'Within capacity' in within.text

    def background(row):
        return panel.driver.execute_script(
            'return getComputedStyle(arguments[0]).backgroundColor;',
            row.find_element(By.TAG_NAME, 'td'))

    assert background(over[0]) != background(within)
    assert cloud.calls.count(('GET', '/v2.1/os-xloud-host-exposure')) == 1

    def bars(dimension):
        return {bar.get_attribute('data-host'): bar
                for bar in charts.find_elements(
                    By.CSS_SELECTOR, f'.xloud-exposure-chart[data-dimension='
                                     f'"{dimension}"] g.xloud-exposure-host')}

    memory, vcpus = bars('memory_mb'), bars('vcpus')
    assert sorted(memory) == sorted(vcpus) == ['compute-1', 'compute-2']
    classes = {host: bar.get_attribute('class').split()
               for host, bar in memory.items()}
    assert 'xloud-exposure-over' in classes['compute-1']
    assert 'xloud-exposure-over' not in classes['compute-2']
    assert not any('xloud-exposure-over' in bar.get_attribute('class')
                   for bar in vcpus.values())

    def geometry(bar):
        """The SVG y of the top of the stacked bar and of the capacity
        line (smaller is higher)."""
        headroom = bar.find_element(By.CSS_SELECTOR,
                                    'rect.xloud-exposure-headroom')
        line = bar.find_element(By.CSS_SELECTOR,
                                'line.xloud-exposure-capacity')
        return (float(headroom.get_attribute('y')),
                float(line.get_attribute('y1')), headroom)

    top, capacity, headroom = geometry(memory['compute-1'])
    assert top < capacity
    # Highlighted by the compiled stylesheet: the failed colour.
    assert panel.driver.execute_script(
        'return getComputedStyle(arguments[0]).fill;',
        headroom) == 'rgb(217, 83, 79)'
    top, capacity, headroom = geometry(memory['compute-2'])
    assert top > capacity
    assert panel.driver.execute_script(
        'return getComputedStyle(arguments[0]).fill;',
        headroom) != 'rgb(217, 83, 79)'
    panel.driver.execute_script('arguments[0].scrollIntoView();', charts)
    panel.screenshot('19-host-exposure')
    # The tabs are sticky: leave the panel on its first tab.
    panel.find('a[data-target="#elastic_sizing__instances"]').click()
    panel.visible('table#instances')


def title_of(element) -> str:
    # Bootstrap moves the title into data-original-title once it has set
    # the tooltip up.
    return (element.get_attribute('data-original-title') or
            element.get_attribute('title') or '')


def test_readiness_and_a_refused_adjust(panel, cloud):
    bare = cloud.servers[server_id(cloud, 'vm-0001')]
    bare.balloon = 'no_device'
    bare.vcpu_hotplug = 'not_possible'
    bare.machine_type = 'pc-i440fx-2.9'
    silent = cloud.servers[server_id(cloud, 'vm-0002')]
    silent.balloon = 'silent'
    silent.migrated_since_boot = True
    busy = cloud.servers[server_id(cloud, 'vm-0000')]
    busy.vcpus_busy = 1.6
    busy.memory_used_mb = 3000
    cloud.calls.clear()
    panel.open()
    # The page's readiness comes with its one list call.
    assert cloud.calls.count(('GET', '/v2.1/os-xloud-adjust')) == 1
    assert not any(path.startswith('/v2.1/os-xloud-adjust/')
                   for _method, path in cloud.calls)
    header = panel.find('table#instances thead').text
    assert 'Readiness' in header and 'Use' in header

    checks = panel.row('instances', silent.id).find_element(
        By.CSS_SELECTOR, '.xloud-readiness-checks')
    states = {check.get_attribute('data-check'):
              check.get_attribute('data-state')
              for check in checks.find_elements(By.CSS_SELECTOR,
                                                '.xloud-ready')}
    assert states == {'balloon': 'silent', 'agent': 'answering',
                      'hotplug': 'possible'}
    assert checks.text.split() == ['Balloon', 'Agent', 'Hotplug']
    tooltip = title_of(checks)
    assert tooltip.startswith('Read ')
    assert 'Live-migrated since it started: yes' in tooltip
    use = panel.row('instances', busy.id).find_element(
        By.CSS_SELECTOR, 'td.xloud-use').text
    assert '2.9GB of 4GB' in use and '1.6 of 2 busy' in use
    # Memory can still be adjusted on none of them: vCPUs only.
    assert panel.row('instances', silent.id).find_element(
        By.CSS_SELECTOR, 'td.xloud-adjustable').text == 'vCPUs only'
    ActionChains(panel.driver).move_to_element(checks).perform()
    panel.visible('.tooltip')
    panel.screenshot('20-readiness')

    # Neither dimension can work: Adjust stays, disabled, and says why.
    adjust = panel.find(f'#instances__row_{bare.id}__action_adjust')
    assert 'disabled' in adjust.get_attribute('class').split()
    reason = title_of(adjust)
    assert 'Its domain has no hot-pluggable vCPUs (machine type ' \
        'pc-i440fx-2.9)' in reason
    assert 'Its domain has no memory balloon.' in reason
    assert panel.driver.execute_script(
        'return getComputedStyle(arguments[0]).cursor;',
        adjust) == 'not-allowed'
    ActionChains(panel.driver).move_to_element(adjust).perform()
    shown = panel.visible('.tooltip')
    assert 'no memory balloon' in shown.text
    panel.screenshot('21-adjust-disabled')
    index = panel.driver.current_url
    cloud.calls.clear()
    adjust.click()
    # Nothing opens, nothing is asked.
    assert not panel.driver.find_elements(By.CSS_SELECTOR,
                                          '.modal-dialog form')
    assert panel.driver.current_url == index
    assert not any(path.endswith('/adjust/') or
                   path.startswith(f'/v2.1/os-xloud-adjust/{bare.id}')
                   for _method, path in cloud.calls)
    # Not selectable for a bulk adjustment either.
    assert not panel.row('instances', bare.id).find_elements(
        By.CSS_SELECTOR, 'input.table-row-multi-select')


def test_the_adjust_form_holds_the_recommendation(panel, cloud):
    busy = cloud.servers[server_id(cloud, 'vm-0000')]
    busy.vcpus_busy = 3.2
    busy.memory_used_mb = 3500
    panel.open()
    panel.open_row_action('instances', busy.id, 'adjust')
    form = panel.modal()
    vcpus = form.find_element(By.NAME, 'vcpus')
    memory = form.find_element(By.NAME, 'memory_mb')
    # ceil(3.2) + 1 spare; 3500 MiB used, 20% kept free, 128 MiB steps.
    assert (vcpus.get_attribute('value'),
            memory.get_attribute('value')) == ('5', '4480')
    assert 'The fields hold the size recommended' in form.text
    helps = [title_of(icon) for icon in form.find_elements(
        By.CSS_SELECTOR, '.help-icon')]
    assert any(text.startswith('Recommended: 3.20 vCPUs busy on average '
                               'over the last 300 seconds, plus 1 spare')
               for text in helps), helps
    assert any('Uses 3500 of 4096 MiB; 20% of it kept free' in text
               for text in helps), helps
    help_icon = form.find_element(By.CSS_SELECTOR, '.help-icon')
    ActionChains(panel.driver).move_to_element(help_icon).perform()
    panel.visible('.tooltip')
    panel.screenshot('22-adjust-recommended')
    panel.submit(form)
    panel.wait_for_message('Adjusting instance "vm-0000" to 5 vCPUs')
    assert busy.pending == (5, 4480)


@pytest.fixture
def fresh_session(panel):
    """Logged in again: a session that remembers no refused audit (an
    earlier test has the cloud refuse it)."""
    panel.driver.delete_all_cookies()
    panel.login('admin', 'secret', domain='Default')


def test_fix_drift_from_the_sync_column(panel, cloud, fresh_session):
    drifted = cloud.servers[server_id(cloud, 'vm-0003')]
    sentence = ('Placement holds 1 vCPUs / 512 MiB for the instance but '
                'its guest runs at 2 vCPUs / 4096 MiB on compute-2.')
    cloud.add_drift(drifted.id, 'placement_below_live', sentence,
                    placement={'vcpus': 1, 'memory_mb': 512})
    in_sync = server_id(cloud, 'vm-0004')
    panel.open()
    assert 'Drift (critical)' in panel.row_text('instances', drifted.id)
    # Offered on the drifting row only.
    assert not panel.driver.find_elements(
        By.ID, f'instances__row_{in_sync}__action_fix_drift')
    panel.row('instances', drifted.id).find_element(
        By.CSS_SELECTOR, '.dropdown-toggle').click()
    button = panel.visible(f'#instances__row_{drifted.id}__action_fix_drift')
    assert button.text == 'Fix Drift'
    panel.screenshot('23-fix-drift')
    cloud.calls.clear()
    button.click()
    message = panel.wait_for_message('Fixed the drift of instance "vm-0003"')
    assert ('Set the placement allocation to 2 VCPU / 4096 MEMORY_MB (it '
            'was 1 VCPU / 512 MEMORY_MB).') in message
    assert cloud.calls.count(('POST', '/v2.1/os-xloud-audit')) == 1
    assert drifted.id not in cloud.drift
    # The page shown after it audits again: the row is in sync.
    assert 'In sync' in panel.wait_for_row('instances', drifted.id,
                                           'In sync')
    assert not panel.driver.find_elements(
        By.ID, f'instances__row_{drifted.id}__action_fix_drift')
    panel.screenshot('24-drift-fixed')


def test_history_shows_the_guest_and_readiness(panel, cloud):
    target = cloud.servers[server_id(cloud, 'vm-0001')]
    target.memory_used_mb = 700
    target.vcpus_busy = 0.4
    target.guest_agent = 'not_configured'
    target.migrated_since_boot = True
    panel.open()
    panel.open_row_action('instances', target.id, 'history')
    guest = panel.find('dl.xloud-guest')
    assert 'Not configured' in guest.find_element(
        By.CSS_SELECTOR, '.xloud-guest-agent').text
    assert guest.find_element(
        By.CSS_SELECTOR, '.xloud-guest-memory').text == (
        '324MB of 3.9GB the guest sees')
    details = panel.find('dl.xloud-readiness-details')
    assert details.find_element(
        By.CSS_SELECTOR, '.xloud-readiness-migrated').text == 'Yes'
    assert details.find_element(
        By.CSS_SELECTOR, '[data-check="balloon"]').get_attribute(
        'data-state') == 'active'
    assert 'Possible' in details.find_element(
        By.CSS_SELECTOR, '.xloud-readiness-vcpus').text
    warnings = panel.find('.xloud-readiness-warnings').text
    assert 'No guest agent (image property hw_qemu_guest_agent)' in warnings
    assert 'Live-migrated since it started' in warnings
    panel.screenshot('25-history-guest')


def test_bulk_adjust_to_each_recommendation(panel, cloud):
    busy = cloud.servers[server_id(cloud, 'vm-0000')]
    busy.vcpus_busy = 3.2
    busy.memory_used_mb = 3500
    silent = cloud.servers[server_id(cloud, 'vm-0001')]
    silent.balloon = 'silent'
    idle = cloud.servers[server_id(cloud, 'vm-0002')]
    panel.open()
    panel.select_rows('instances', [busy.id, silent.id, idle.id])
    panel.find('#instances__action_bulk_adjust').click()
    form = panel.find('form.xloud-elastic-form')
    panel.fill(form, {'mode': 'recommended'})
    # No sizes to give: the size fields are not shown.
    assert not form.find_element(By.NAME, 'vcpus').is_displayed()
    assert not form.find_element(By.NAME, 'vcpus_step').is_displayed()
    panel.screenshot('26-bulk-recommended')
    panel.submit(form)
    message = panel.wait_for_message('Adjusting 1 instance')
    assert 'vm-0000: 2 → 5 vCPUs, 4GB → 4.4GB' in message
    left = panel.wait_for_message('were not adjusted')
    assert 'vm-0001: no recommendation, left alone' in left
    assert 'vm-0002: already at its recommendation' in left
    assert (busy.pending, silent.pending, idle.pending) == (
        (5, 4480), None, None)
    panel.screenshot('27-bulk-recommended-adjusting')


AUTOPILOT_GROW = 'memory 4096 → 6144 MiB: usable 4% < 15% for 3 min.'
AUTOPILOT_HOLD = 'vCPUs busy 45% of 2 on average, within 30% to 80%.'
AUTOPILOT_AUTO = 'memory 1024 → 1536 MiB: usable 5% < 15% for 3 min.'


def test_autopilot_recommends_applies_and_shows_in_history(panel, cloud):
    cloud.add_host('compute-1', autopilot_mode='recommend')
    cloud.add_host('compute-2', autopilot_mode='on')
    for server in cloud.servers.values():
        server.embedded_specs['xloud:autosize'] = 'memory,cpu'
    # vm-0000 (compute-1, recommend): a grow recommended; vm-0002: holds;
    # vm-0001 (compute-2, on): grew by itself after a manual change.
    growing = cloud.servers[server_id(cloud, 'vm-0000')]
    growing.autopilot_decisions = [
        fakecloud.decision('memory_mb', 'grow', 4096, 6144, AUTOPILOT_GROW),
        fakecloud.decision('vcpus', 'hold', 2, 2, AUTOPILOT_HOLD)]
    holding = cloud.servers[server_id(cloud, 'vm-0002')]
    holding.autopilot_decisions = [
        fakecloud.decision('vcpus', 'hold', 1, 1, AUTOPILOT_HOLD)]
    automatic = cloud.servers[server_id(cloud, 'vm-0001')]
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{automatic.id}', {},
                 {'current_vcpus': 2})
    cloud.settle()
    cloud.autosize(automatic, AUTOPILOT_AUTO, memory_mb=1536)
    cloud.settle()
    automatic.autopilot_decisions = [
        fakecloud.decision('memory_mb', 'grow', 1024, 1536, AUTOPILOT_AUTO)]

    panel.open()
    assert 'Autopilot' in panel.find('table#instances thead').text

    def autopilot_cell(server):
        return panel.row('instances', server.id).find_element(
            By.CSS_SELECTOR, 'td.xloud-autopilot')

    assert autopilot_cell(growing).text.split('\n') == [
        'Recommend', 'grow memory 4GB → 6GB']
    assert autopilot_cell(automatic).text.split('\n') == [
        'On', 'grow memory 1GB → 1.5GB']
    assert autopilot_cell(holding).text.startswith('Recommend\nhold: vCPUs')
    state = autopilot_cell(growing).find_element(
        By.CSS_SELECTOR, '.xloud-autopilot-state')
    assert f'grow memory 4GB → 6GB: {AUTOPILOT_GROW}' in title_of(state)
    assert f'hold vCPUs: {AUTOPILOT_HOLD}' in title_of(state)
    ActionChains(panel.driver).move_to_element(state).perform()
    assert 'Recommended: 6GB.' in panel.visible('.tooltip').text
    panel.screenshot('28-autopilot-column')

    # Nothing to apply where it holds: shown, disabled, with why.
    panel.row('instances', holding.id).find_element(
        By.CSS_SELECTOR, '.dropdown-toggle').click()
    refused = panel.visible(
        f'#instances__row_{holding.id}__action_apply_recommendation')
    assert 'disabled' in refused.get_attribute('class').split()
    assert title_of(refused) == 'The autopilot calls for no change.'
    cloud.calls.clear()
    refused.click()
    assert not any(method == 'POST' for method, _path in cloud.calls)
    assert holding.pending is None

    panel.open()
    panel.open_row_action('instances', growing.id, 'apply_recommendation')
    panel.wait_for_message('Adjusting instance "vm-0000" to the '
                           'autopilot\'s recommendation: 6GB.')
    assert growing.pending == (2, 6144)
    panel.wait_for_row('instances', growing.id, 'Adjusting')
    panel.screenshot('29-recommendation-applied')
    cloud.settle()
    assert '6GB' in panel.wait_for_row('instances', growing.id, 'Done')

    panel.open_row_action('instances', automatic.id, 'history')
    rows = panel.find('table#history').find_elements(By.CSS_SELECTOR,
                                                     'tbody tr')
    assert [row.get_attribute('data-by') for row in rows] == [
        'autopilot', 'user']
    by = [row.find_element(By.CSS_SELECTOR, 'td.xloud-history-by').text
          for row in rows]
    assert by == ['Autopilot', 'admin-user']
    assert AUTOPILOT_AUTO in rows[0].text
    assert 'memory 1GB → 1.5GB' in rows[0].text
    assert 'vCPUs 1 → 2' in rows[1].text
    assert rows[1].find_element(
        By.CSS_SELECTOR, 'td.xloud-history-reason').text == '-'
    panel.screenshot('30-history-autopilot')

    panel.open()
    panel.open_row_action('instances', holding.id, 'autopilot')
    form = panel.modal()
    assert "Sizes memory, vCPUs (its flavor's xloud:autosize), the mode " \
        "of its host." in form.text
    panel.fill(form, {'dimensions': 'memory', 'mode': 'off'})
    panel.screenshot('31-autopilot-setting')
    panel.submit(form)
    panel.wait_for_message('Autopilot of instance "vm-0002": Sizes memory '
                           '(its own setting), at most Off.')
    assert (holding.autosize, holding.autosize_mode) == ('memory', 'off')
    assert autopilot_cell(holding).text.startswith('Off')
