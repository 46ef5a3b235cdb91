"""``xloud_dashboard.api.elastic`` against a loopback HTTP Nova.

The real openstacksdk and keystoneauth stack sends every request; the fake
Nova (``fakecloud``) answers with the extension's contract and records
each call, so these tests see paths, query strings, bodies and errors.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
import types

import jsonschema
import pytest
from django.test import RequestFactory

from tests.dashboard import fakecloud
from xloud_dashboard import exceptions
from xloud_dashboard.api import elastic


@pytest.fixture
def cloud():
    return fakecloud.FakeCloud.demo(servers=5)


@pytest.fixture
def nova(cloud):
    with fakecloud.FakeNovaServer(cloud) as server:
        yield server


def make_request(endpoint: str):
    request = RequestFactory().get('/admin/elastic_sizing/')
    request.session = {}
    request.user = types.SimpleNamespace(
        token=types.SimpleNamespace(id='token-1'),
        services_region='RegionOne',
        service_catalog=[{
            'type': 'compute', 'name': 'nova',
            'endpoints': [{'region': 'RegionOne', 'interface': 'public',
                           'url': endpoint}]}])
    return request


@pytest.fixture
def request_(nova):
    return make_request(nova.url)


@pytest.fixture(scope='module')
def nova_schemas() -> dict:
    """The extension's own response schemas (nova_ext.api.schemas).

    Read in a process of their own: importing them imports Nova, which
    has no business in Django's.
    """
    root = pathlib.Path(__file__).resolve().parents[2]
    code = ('import json; from nova_ext.api import schemas; print(json.dumps('
            '{name: getattr(schemas, name) for name in ("audit_response", '
            '"index_response", "show_response", "flavor_minimums_response", '
            '"flavor_minimums_apply_response", '
            '"host_exposure_response", "autopilot_update", '
            '"autopilot_update_response")}))')
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True,
        check=True, timeout=120, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)))
    return json.loads(result.stdout.splitlines()[-1])


def assert_matches(schema: dict, body: dict) -> None:
    jsonschema.validate(body, schema,
                        format_checker=jsonschema.FormatChecker())


def test_list_is_one_call_with_filters_and_page(request_, cloud, settings):
    settings.API_RESULT_PAGE_SIZE = 2
    sizes, more = elastic.instance_size_list(request_,
                                             filters={'host': 'compute-1'})
    assert [size.name for size in sizes] == ['vm-0000', 'vm-0002']
    assert more is True
    assert cloud.calls == [('GET', '/v2.1/os-xloud-adjust')]
    sizes, more = elastic.instance_size_list(
        request_, marker=sizes[-1].id, filters={'host': 'compute-1'})
    assert [size.name for size in sizes] == ['vm-0004']
    assert more is False
    first = sizes[0]
    assert first.flavor.name == 'elastic.small'
    assert (first.current_vcpus, first.max_vcpus, first.min_vcpus) == (1, 4, 1)
    assert (first.current_memory_mb, first.max_memory_mb) == (1024, 4096)
    assert first.source == 'recorded'


def test_list_sends_all_tenants_limit_and_filters(request_, cloud, settings):
    settings.API_RESULT_PAGE_SIZE = 20
    seen = []
    original = cloud.handle

    def spy(method, path, query, body):
        seen.append(query)
        return original(method, path, query, body)

    cloud.handle = spy
    elastic.instance_size_list(request_, filters={'name': 'vm', 'host': ''})
    assert seen == [{'all_tenants': '1', 'limit': '21', 'name': 'vm'}]


def test_get_adjust_and_settle(request_, cloud):
    server_id = next(iter(cloud.servers))
    answer = elastic.adjust(request_, server_id, vcpus=3, memory_mb=6144,
                            persist=False)
    assert answer['request_id'].startswith('req-')
    size = elastic.instance_size_get(request_, server_id)
    assert size.is_adjusting and size.source == 'live'
    cloud.settle()
    size = elastic.instance_size_get(request_, server_id)
    assert (size.current_vcpus, size.current_memory_mb) == (3, 6144)
    assert size.adjustment_status == 'success'
    assert size.updated_at is not None


def test_adjust_error_carries_novas_message(request_, cloud):
    server_id = next(iter(cloud.servers))
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.adjust(request_, server_id, vcpus=99)
    assert caught.value.status_code == 400
    assert caught.value.message == (
        "current_vcpus 99 is above the flavor's vcpus 8, the most this "
        "server can have.")
    with pytest.raises(exceptions.NotFound):
        elastic.instance_size_get(request_, 'no-such-server')


def test_adjust_many_reports_each_instance(request_, cloud):
    ids = list(cloud.servers)[:3]
    outcomes = elastic.adjust_many(request_, [
        elastic.AdjustRequest(ids[0], vcpus=2),
        elastic.AdjustRequest(ids[1], vcpus=100),
        elastic.AdjustRequest(ids[2], memory_mb=2048)])
    assert [outcome.accepted for outcome in outcomes] == [True, False, True]
    assert "above the flavor's vcpus 4" in outcomes[1].error
    assert sorted(method for method, _ in cloud.calls) == ['POST'] * 3


def test_adjust_many_sends_concurrently(request_, cloud):
    ids = list(cloud.servers)[:4]
    cloud.adjust_barrier = threading.Barrier(len(ids), timeout=20)
    outcomes = elastic.adjust_many(request_, [
        elastic.AdjustRequest(server_id, vcpus=2) for server_id in ids])
    assert [outcome.error for outcome in outcomes] == [None] * 4


def test_instance_sizes_get_keeps_errors_per_id(request_, cloud):
    server_id = next(iter(cloud.servers))
    sizes = elastic.instance_sizes_get(request_, [server_id, 'missing'])
    assert sizes[server_id].id == server_id
    assert isinstance(sizes['missing'], exceptions.NotFound)


def test_flavor_minimums_set_and_clear(request_, cloud):
    flavors = {flavor.name: flavor for flavor in
               elastic.flavor_list(request_)}
    assert flavors['elastic.small'].minimum_cpu == 1
    assert flavors['m1.tiny'].minimum_cpu is None
    elastic.flavor_set_minimums(request_, '1', minimum_cpu=1,
                                minimum_memory=256)
    assert cloud.flavors['1'].extra_specs == {'xloud:minimum_cpu': '1',
                                              'xloud:minimum_memory': '256'}
    elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                minimum_memory=384)
    assert cloud.flavors['1'].extra_specs == {'xloud:minimum_memory': '384'}
    # Clearing what is not set is not an error, nor a call.
    cloud.calls.clear()
    elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                minimum_memory=None)
    assert cloud.flavors['1'].extra_specs == {}
    assert [method for method, _path in cloud.calls] == ['GET', 'DELETE']
    flavor = elastic.flavor_get(request_, '1')
    assert (flavor.minimum_cpu, flavor.minimum_memory) == (None, None)
    # Nova's answer to a minimum below the memory floor reaches the form.
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                    minimum_memory=128)
    assert 'below [xloud] memory_floor_mb 256 MiB' in caught.value.message


def test_flavor_memory_model_written_only_when_it_changes(request_, cloud):
    tiny = cloud.flavors['1']
    assert elastic.flavor_get(request_, '1').memory_model == 'balloon'
    for model, specs, calls in (
            ('virtio-mem', {'xloud:memory_model': 'virtio-mem'},
             ['GET', 'POST']),
            # Unchanged: nothing written.
            ('virtio-mem', {'xloud:memory_model': 'virtio-mem'}, ['GET']),
            # The default is the key's absence.
            ('balloon', {}, ['GET', 'DELETE']),
            ('balloon', {}, ['GET'])):
        cloud.calls.clear()
        elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                    minimum_memory=None, memory_model=model)
        assert tiny.extra_specs == specs, model
        assert [method for method, _path in cloud.calls] == calls, model
        assert elastic.flavor_get(request_, '1').memory_model == model


def test_flavor_memory_model_leaves_balloon_with_its_minimums(request_,
                                                               cloud):
    """Back to the balloon with a minimum that is not whole blocks: the
    minimum is validated under the balloon, and the key removed."""
    small = cloud.flavors['10']
    small.extra_specs['xloud:memory_model'] = 'virtio-mem'
    elastic.flavor_set_minimums(request_, '10', minimum_cpu=1,
                                minimum_memory=1025, memory_model='balloon')
    assert small.extra_specs == {'xloud:minimum_cpu': '1',
                                 'xloud:minimum_memory': '1025'}
    # A value the extension does not know reads as the balloon, and
    # saving the balloon clears it.
    small.extra_specs['xloud:memory_model'] = 'dimm'
    assert elastic.flavor_get(request_, '10').memory_model == 'balloon'
    elastic.flavor_set_minimums(request_, '10', minimum_cpu=1,
                                minimum_memory=1024, memory_model='balloon')
    assert 'xloud:memory_model' not in small.extra_specs


def test_flavor_memory_model_refusals_change_nothing(request_, cloud):
    odd = cloud.add_flavor('odd', 2, 1025, minimum_memory=512,
                           flavor_id='21')
    small = cloud.flavors['10']
    before = {flavor.id: dict(flavor.extra_specs)
              for flavor in (odd, small)}
    for flavor_id, minimum, model, message in (
            ('21', 512, 'virtio-mem',
             "Validation failed; the flavor's ram is not a multiple of 2 "
             "MiB: xloud:memory_model=virtio-mem plugs memory in blocks of "
             "2 MiB."),
            ('10', 1025, 'virtio-mem',
             'Validation failed; xloud:minimum_memory=1025 is not a '
             'multiple of 2 MiB: xloud:memory_model=virtio-mem plugs '
             'memory in blocks of 2 MiB.'),
            ('10', 1024, 'dimm',
             "Invalid extra spec xloud:memory_model=dimm: Validation "
             "failed; 'dimm' is not one of: balloon, virtio-mem.")):
        with pytest.raises(exceptions.ApiError) as caught:
            elastic.flavor_set_minimums(request_, flavor_id, minimum_cpu=None,
                                        minimum_memory=minimum,
                                        memory_model=model)
        assert caught.value.status_code == 400
        assert caught.value.message == message
    assert {flavor.id: flavor.extra_specs
            for flavor in (odd, small)} == before


def test_virtio_mem_is_adjusted_in_whole_blocks(request_, cloud):
    virtio = cloud.add_flavor('virtio', 4, 4096, minimum_memory=1024,
                              flavor_id='22', extra_specs={
                                  'xloud:memory_model': 'virtio-mem'})
    server = cloud.add_server('vm-virtio', virtio)
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.adjust(request_, server.id, memory_mb=2047)
    assert caught.value.status_code == 400
    assert caught.value.message == (
        "current_memory_mb 2047 is not a multiple of 2 MiB: the server's "
        "flavor plugs memory in blocks of 2 MiB "
        "(xloud:memory_model=virtio-mem).")
    assert server.adjustment_status is None
    elastic.adjust(request_, server.id, memory_mb=2048)
    cloud.settle()
    size = elastic.instance_size_get(request_, server.id)
    assert (size.current_memory_mb, size.flavor.memory_model) == (
        2048, 'virtio-mem')
    assert size.readiness.virtio_mem == elastic.VirtioMemState(
        'plugged', requested_mb=1024, plugged_mb=1024)


def test_flavor_minimums_replace_the_seeds_keys(request_, cloud):
    seed = cloud.add_flavor('seed', 4, 4096, minimum_cpu=2,
                            minimum_memory=2048, legacy=True,
                            flavor_id='20',
                            extra_specs={'hw:watchdog_action': 'reset'})
    flavor = elastic.flavor_get(request_, '20')
    # Read as the extension reads them (the deprecated alias).
    assert (flavor.minimum_cpu, flavor.minimum_memory) == (2, 2048)
    assert flavor.legacy_keys == ('minimum_cpu', 'minimum_memory')
    cloud.calls.clear()
    elastic.flavor_set_minimums(request_, '20', minimum_cpu=3,
                                minimum_memory=None)
    # The scoped key first, then the unscoped ones it replaces or clears.
    assert seed.extra_specs == {'hw:watchdog_action': 'reset',
                                'xloud:minimum_cpu': '3'}
    assert cloud.calls == [
        ('GET', '/v2.1/flavors/20/os-extra_specs'),
        ('POST', '/v2.1/flavors/20/os-extra_specs'),
        ('DELETE', '/v2.1/flavors/20/os-extra_specs/minimum_cpu'),
        ('DELETE', '/v2.1/flavors/20/os-extra_specs/minimum_memory')]
    flavor = elastic.flavor_get(request_, '20')
    assert (flavor.minimum_cpu, flavor.legacy_keys) == (3, ())
    # The scoped key wins where both are present, as in the extension.
    seed.extra_specs['minimum_cpu'] = '1'
    assert elastic.flavor_get(request_, '20').minimum_cpu == 3


def test_flavor_minimums_report_and_apply(request_, cloud):
    small = cloud.flavors['10']
    ids = [server.id for server in cloud.servers.values()
           if server.flavor is small]
    report = elastic.flavor_minimums_get(request_, '10')
    assert (report.instances, report.current, report.stale) == (3, 3, 0)
    assert report.memory_floor_mb == 256
    assert cloud.calls == [('GET', '/v2.1/os-xloud-flavor-minimums/10')]

    elastic.flavor_set_minimums(request_, '10', minimum_cpu=2,
                                minimum_memory=1024)
    cloud.servers[ids[0]].operation = 'rebooting'
    report = elastic.flavor_minimums_get(request_, '10')
    assert (report.current, report.stale, report.busy,
            report.below_minimum) == (0, 3, 1, 3)
    # Nova's copies still govern.
    assert elastic.instance_size_get(request_, ids[1]).min_vcpus == 1

    report = elastic.flavor_minimums_apply(request_, '10')
    assert cloud.calls[-1] == ('POST',
                               '/v2.1/os-xloud-flavor-minimums/10/action')
    assert (report.updated, report.current, report.stale, report.busy) == (
        2, 2, 1, 1)
    outcomes = {outcome.server_id: outcome for outcome in report.servers}
    assert outcomes[ids[0]].result == 'busy'
    assert 'task_state rebooting' in outcomes[ids[0]].message
    assert {outcomes[server_id].result for server_id in ids[1:]} == {
        'updated'}
    assert all(outcomes[server_id].below_minimum for server_id in ids[1:])
    size = elastic.instance_size_get(request_, ids[1])
    # The new floor; the guest keeps the size it runs at.
    assert (size.min_vcpus, size.current_vcpus) == (2, 1)
    assert elastic.instance_size_get(request_, ids[0]).min_vcpus == 1

    with pytest.raises(exceptions.NotFound):
        elastic.flavor_minimums_get(request_, '404')
    cloud.flavor_minimums_offered = False
    with pytest.raises(exceptions.NotFound):
        elastic.flavor_minimums_apply(request_, '10')


def test_lock_states_are_one_call_per_page(request_, cloud):
    ids = list(cloud.servers)
    cloud.servers[ids[1]].locked = True
    cloud.servers[ids[1]].locked_reason = 'maintenance'
    sizes, _more = elastic.instance_size_list(request_)
    cloud.calls.clear()
    locked = elastic.with_lock_states(request_, sizes)
    assert cloud.calls == [('GET', '/v2.1/servers')]
    assert {size.id: size.locked for size in locked} == {
        server_id: server_id == ids[1] for server_id in ids}
    assert locked[1].adjust_refusal() == 'The instance is locked.'
    assert elastic.server_lock_state(request_, ids[1]) == (True,
                                                           'maintenance')
    one = elastic.with_lock_state(request_, sizes[1])
    assert one.adjust_refusal() == 'The instance is locked: maintenance'
    assert elastic.with_lock_states(request_, []) == []


def test_lock_states_follow_novas_pages(request_, cloud):
    for index in range(5):
        server = cloud.add_server(f'locked-{index}', cloud.flavors['10'])
        server.locked = True
    original = cloud.handle

    def paged(method, path, query, body):
        # As nova-api with [api] max_limit = 2.
        if path == '/v2.1/servers':
            query = {**query, 'limit': '2'}
        return original(method, path, query, body)

    cloud.handle = paged
    locked = elastic.locked_server_ids(request_)
    assert locked == {server.id for server in cloud.servers.values()
                      if server.locked}
    assert cloud.calls.count(('GET', '/v2.1/servers')) == 3


def test_history_takes_changes_from_the_records(request_, cloud):
    server_id = next(iter(cloud.servers))
    elastic.adjust(request_, server_id, vcpus=4, memory_mb=8192)
    cloud.settle()
    cloud.fail_next_adjust = 'libvirt: cannot set memory higher than max'
    elastic.adjust(request_, server_id, vcpus=5)
    cloud.settle()
    elastic.adjust(request_, server_id, vcpus=6, persist=False)
    cloud.calls.clear()
    history = elastic.adjustment_history(request_, server_id)
    # The single GET once, the action list, one call per action.
    assert cloud.calls.count(
        ('GET', f'/v2.1/os-xloud-adjust/{server_id}')) == 1
    assert len(cloud.calls) == 1 + 1 + 3
    assert [entry.result for entry in history] == [None, 'Error', 'Success']
    # Successful events carry no details (as in Nova): the record does.
    success = history[2]
    assert success.changes == {'vcpus': (2, 4), 'memory_mb': (4096, 8192)}
    assert success.details == ('vcpus 2 -> 4, memory_mb 4096 -> 8192, '
                               'persisted')
    assert success.user_id == 'admin-user'
    # A failure's reason never reads as a change.
    assert history[1].changes == {}
    assert 'cannot set memory' in history[1].details
    # Not finished yet: no record, no details.
    assert (history[0].changes, history[0].details) == ({}, None)


def test_history_falls_back_to_event_details(request_, cloud):
    server_id = next(iter(cloud.servers))
    cloud.fail_next_adjust = ('memory change to 8192 MiB not confirmed '
                              '(applied: vcpus 2 -> 3)')
    elastic.adjust(request_, server_id, vcpus=3, memory_mb=8192)
    cloud.settle()
    # Records pruned, or written before the compute kept them.
    cloud.servers[server_id].changes.clear()
    [entry] = elastic.adjustment_history(request_, server_id)
    assert entry.result == 'Error'
    assert entry.changes == {'vcpus': (2, 3)}
    assert entry.details.startswith('memory change to 8192 MiB')


def test_history_uses_changes_it_is_given(request_, cloud):
    server_id = next(iter(cloud.servers))
    elastic.adjust(request_, server_id, vcpus=3)
    cloud.settle()
    size = elastic.instance_size_get(request_, server_id)
    [change] = size.changes
    assert change.details == 'vcpus 2 -> 3, persisted'
    assert change.changed_at is not None
    cloud.calls.clear()
    [entry] = elastic.adjustment_history(request_, server_id,
                                         changes=size.changes)
    assert entry.changes == {'vcpus': (2, 3)}
    assert ('GET', f'/v2.1/os-xloud-adjust/{server_id}') not in cloud.calls


def test_list_sizes_carry_no_changes(request_, cloud):
    server_id = next(iter(cloud.servers))
    elastic.adjust(request_, server_id, vcpus=3)
    cloud.settle()
    sizes, _more = elastic.instance_size_list(request_)
    assert all(size.changes == () for size in sizes)


def test_extension_check_is_cached_in_the_session(request_, cloud):
    assert elastic.is_extension_offered(request_) is True
    calls = len(cloud.calls)
    assert elastic.is_extension_offered(request_) is True
    assert len(cloud.calls) == calls


def test_extension_absent_hides(request_, cloud):
    cloud.extension_offered = False
    assert elastic.is_extension_offered(request_) is False


def test_unreachable_compute_is_an_api_error():
    request = make_request('http://127.0.0.1:9/v2.1')
    with pytest.raises(exceptions.ApiError):
        elastic.instance_size_list(request)
    assert elastic.is_extension_offered(make_request(
        'http://127.0.0.1:9/v2.1')) is False


def test_parse_details():
    assert elastic.parse_details('vcpus 2 -> 4, memory_mb 2048 -> 3072') == {
        'vcpus': (2, 4), 'memory_mb': (2048, 3072)}
    assert elastic.parse_details('libvirt error') == {}
    assert elastic.parse_details(None) == {}


def test_fake_answers_match_the_extensions_schemas(cloud, nova_schemas):
    """What the fake says is what the extension may say."""
    ids = list(cloud.servers)
    cloud.add_drift(ids[0], 'placement_below_live',
                    placement={'vcpus': 2, 'memory_mb': 4096},
                    domain_live={'vcpus': 4, 'memory_mb': 4096})
    cloud.add_drift(ids[1], 'host_unreachable',
                    error='nova-compute on compute-2 is down')
    cloud.audit_skipped[ids[2]] = 'busy (task_state migrating)'
    for query in ({}, {'server_id': ids[:2]}, {'server_id': ids[3]},
                  {'host': 'compute-1'}):
        status, body = cloud.handle('GET', '/v2.1/os-xloud-audit', query,
                                    None)
        assert status == 200
        assert_matches(nova_schemas['audit_response'], body)
    elastic_id = ids[0]
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{elastic_id}', {},
                 {'current_vcpus': 3})
    cloud.settle()
    for path, schema in (('/v2.1/os-xloud-adjust', 'index_response'),
                         (f'/v2.1/os-xloud-adjust/{elastic_id}',
                          'show_response')):
        status, body = cloud.handle('GET', path, {}, None)
        assert_matches(nova_schemas[schema], body)
    # Flavor minimums: stale, busy and below-minimum instances, twice
    # applied (the second time with nothing left to do).
    cloud.flavors['10'].extra_specs['xloud:minimum_cpu'] = '2'
    small = [server for server in cloud.servers.values()
             if server.flavor.id == '10']
    small[0].operation = 'migrating'
    path = '/v2.1/os-xloud-flavor-minimums/10'
    status, body = cloud.handle('GET', path, {}, None)
    assert_matches(nova_schemas['flavor_minimums_response'], body)
    assert body['flavor_minimums']['busy'] == 1
    for _round in range(2):
        status, body = cloud.handle('POST', path + '/action', {},
                                    {'apply': {}})
        assert status == 200
        assert_matches(nova_schemas['flavor_minimums_apply_response'], body)
    assert body['flavor_minimums']['servers'][0]['result'] == 'busy'
    # Host exposure: a host over capacity, one placement did not answer
    # for, every host and one.
    cloud.add_host('compute-1', memory_mb=8192)
    cloud.add_host('compute-3', placement_error='HTTP 503')
    for query in ({}, {'host': 'compute-1'}, {'host': 'compute-3'}):
        status, body = cloud.handle('GET', '/v2.1/os-xloud-host-exposure',
                                    query, None)
        assert status == 200
        assert_matches(nova_schemas['host_exposure_response'], body)
    assert [host['over_capacity'] for host in body['host_exposure'][
        'hosts']] == [False]
    status, body = cloud.handle('GET', '/v2.1/os-xloud-audit', {}, None)
    assert_matches(nova_schemas['audit_response'], body)
    assert [node['host'] for node in body['audit']['host_exposure']] == [
        'compute-1', 'compute-2']


# Flavors, images and records that the extension's rules treat
# differently: each case is sized by the fake and by nova_ext's own view.
PARITY_CASES = [
    ('scoped minimums', (4, 4096, {'xloud:minimum_cpu': '1',
                                   'xloud:minimum_memory': '1024'}), {}),
    ('the seed\'s keys', (4, 4096, {'minimum_cpu': '2',
                                    'minimum_memory': '2048'}), {}),
    ('scoped wins', (4, 4096, {'xloud:minimum_cpu': '3',
                               'minimum_cpu': '1'}), {}),
    ('no minimum', (2, 2048, {}), {}),
    ('memory minimum below the floor', (2, 2048, {
        'xloud:minimum_memory': '128'}), {}),
    ('minimum above the flavor', (2, 2048, {'xloud:minimum_cpu': '9'}), {}),
    ('not an integer', (2, 2048, {'xloud:minimum_cpu': 'two'}), {}),
    ('pinned', (4, 4096, {'xloud:minimum_cpu': '2',
                          'hw:cpu_policy': 'dedicated'}), {}),
    ('hugepages from the image', (4, 4096, {'xloud:minimum_cpu': '2',
                                            'xloud:minimum_memory': '1024'}),
     {'hw_mem_page_size': 'large'}),
    ('locked memory', (4, 4096, {'xloud:minimum_cpu': '2',
                                 'xloud:minimum_memory': '1024',
                                 'hw:locked_memory': 'true'}), {}),
    ('a vGPU', (4, 4096, {'xloud:minimum_memory': '1024',
                          'resources:VGPU': '1'}), {}),
    ('NUMA', (4, 4096, {'xloud:minimum_cpu': '2', 'hw:numa_nodes': '1'}),
     {}),
    ('virtio-mem', (4, 4096, {'xloud:minimum_memory': '1024',
                              'xloud:memory_model': 'virtio-mem'}), {}),
    ('an unknown memory model', (2, 2048, {'xloud:minimum_memory': '1024',
                                           'xloud:memory_model': 'dimm'}),
     {}),
]

_REAL_SIZES = '''
import json, sys
from nova import objects
objects.register_all()
from nova_ext.api import views
out = []
for case in json.load(sys.stdin):
    flavor = objects.Flavor(**case['flavor'])
    sysmeta = {'image_' + key: value
               for key, value in case['image'].items()}
    sysmeta.update(case['record'])
    instance = objects.Instance(
        uuid=case['id'], display_name=case['name'],
        project_id=case['project_id'], host=case['host'],
        vm_state='active', task_state=None, system_metadata=sysmeta,
        flavor=flavor)
    out.append(views.ViewBuilder().size(instance, True))
print(json.dumps(out))
'''


def real_sizes(cases: list[dict]) -> list[dict]:
    """SIZE as ``nova_ext.api.views`` builds it, in a process of its own
    (Nova has no business in Django's)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, '-c', _REAL_SIZES], input=json.dumps(cases),
        capture_output=True, text=True, check=True, timeout=120, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)))
    return json.loads(result.stdout.splitlines()[-1])


def parity_servers() -> tuple[fakecloud.FakeCloud, list, list[dict]]:
    """A fake cloud with a server of each PARITY_CASES and an adjusted
    one, and each server as a case for the real code."""
    cloud = fakecloud.FakeCloud()
    servers = []
    for index, (_name, (vcpus, memory_mb, specs), image) in enumerate(
            PARITY_CASES):
        flavor = cloud.add_flavor(f'f{index}', vcpus, memory_mb,
                                  flavor_id=str(index), extra_specs=specs)
        servers.append(cloud.add_server(f'vm{index}', flavor,
                                        image_properties=image))
    # A recorded size: adjusted (not persisted) on the first flavor.
    adjusted = cloud.add_server('adjusted', cloud.flavors['0'])
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{adjusted.id}', {},
                 {'current_vcpus': 3, 'persist': False})
    cloud.settle()
    servers.append(adjusted)

    def record(server):
        if not server.recorded:
            return {}
        return {'xloud_flavorid': server.flavor.id,
                'xloud_boot_vcpus': str(server.boot_vcpus),
                'xloud_boot_memory_mb': str(server.boot_memory_mb),
                'xloud_live_vcpus': str(server.vcpus),
                'xloud_live_memory_mb': str(server.memory_mb)}

    cases = [{'id': server.id, 'name': server.name,
              'project_id': server.project_id, 'host': server.host,
              'flavor': {'flavorid': server.flavor.id,
                         'name': server.flavor.name,
                         'vcpus': server.flavor.vcpus,
                         'memory_mb': server.flavor.memory_mb,
                         'extra_specs': server.embedded_specs},
              'image': server.image_properties, 'record': record(server)}
             for server in servers]
    return cloud, servers, cases


def test_fake_sizes_follow_the_extensions_rules():
    """Floors, boot sizes and reasons of the fake are nova_ext's."""
    cloud, servers, cases = parity_servers()
    real = real_sizes(cases)
    names = [name for name, _flavor, _image in PARITY_CASES] + ['adjusted']
    for name, server, expected in zip(names, servers, real, strict=True):
        fake = cloud.size(server, 'recorded')
        # When the record was written is not the rules' business.
        fake['updated_at'] = expected['updated_at']
        fake['adjustment'] = expected['adjustment']
        assert fake == expected, name
    # The rules did differ between the cases.
    assert len({json.dumps([size['min_vcpus'], size['min_memory_mb'],
                            size['not_adjustable']]) for size in real}) >= 8


_REAL_HEADROOM = '''
import json, sys
from nova import objects
objects.register_all()
from nova_ext import exposure
out = []
for case in json.load(sys.stdin):
    flavor = objects.Flavor(**case['flavor'])
    sysmeta = {'image_' + key: value
               for key, value in case['image'].items()}
    sysmeta.update(case['record'])
    instance = objects.Instance(
        uuid=case['id'], host=case['host'], node=case['host'],
        system_metadata=sysmeta, flavor=flavor)
    out.append([exposure.is_elastic(instance),
                list(exposure.instance_headroom(instance, case['held']))])
print(json.dumps(out))
'''


def test_fake_exposure_follows_the_extensions_rules():
    """Which servers count and what each adds at its maximum, as
    ``nova_ext.exposure`` says, for servers holding their current size."""
    cloud, servers, cases = parity_servers()
    for case, server in zip(cases, servers, strict=True):
        case['held'] = {'VCPU': server.vcpus, 'MEMORY_MB': server.memory_mb}
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, '-c', _REAL_HEADROOM], input=json.dumps(cases),
        capture_output=True, text=True, check=True, timeout=120, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)))
    real = json.loads(result.stdout.splitlines()[-1])
    fake = [[cloud.is_elastic(server), list(cloud.headroom(server))]
            for server in servers]
    assert fake == real
    # The rules did differ between the cases.
    assert len({json.dumps(entry) for entry in real}) >= 4


def test_host_exposure_is_one_call(request_, cloud):
    cloud.add_host('compute-1', memory_mb=8192)
    hosts, errors = elastic.host_exposure_list(request_)
    assert cloud.calls == [('GET', '/v2.1/os-xloud-host-exposure')]
    assert errors == ()
    assert [(host.name, host.over_capacity) for host in hosts] == [
        ('compute-1', True), ('compute-2', False)]
    compute1 = hosts[0]
    assert compute1.memory_mb.capacity == 8192 - 512
    assert compute1.memory_mb.potential == (
        compute1.memory_mb.allocated + compute1.memory_mb.headroom)
    assert compute1.vcpus.allocation_ratio == 4.0

    one, _errors = elastic.host_exposure_list(request_, host='compute-2')
    assert [host.name for host in one] == ['compute-2']
    with pytest.raises(exceptions.NotFound):
        elastic.host_exposure_list(request_, host='nowhere')
    cloud.host_exposure_error = 403
    with pytest.raises(exceptions.ApiError) as raised:
        elastic.host_exposure_list(request_)
    assert raised.value.status_code == 403
    assert 'host_exposure' in raised.value.message


def test_sync_states_of_a_page_are_one_call(request_, cloud):
    ids = list(cloud.servers)
    cloud.add_drift(ids[0], 'record_live_differs', 'The record is old.')
    cloud.add_drift(ids[0], 'placement_below_live', 'Placement is short.')
    cloud.add_drift(ids[1], 'host_unreachable',
                    'The instance was not checked: compute-2 is down.')
    cloud.audit_skipped[ids[2]] = 'an adjustment is running on compute-1'
    seen = []
    original = cloud.handle

    def spy(method, path, query, body):
        seen.append(query)
        return original(method, path, query, body)

    cloud.handle = spy
    states = elastic.instance_sync_states(request_, ids[:4])
    assert cloud.calls == [('GET', '/v2.1/os-xloud-audit')]
    assert seen == [{'server_id': ids[:4]}]
    drift = states[ids[0]]
    assert (drift.status, drift.is_critical) == ('drift', True)
    assert [f.message for f in drift.findings] == [
        'The record is old.', 'Placement is short.']
    assert (states[ids[1]].status, states[ids[1]].reason) == (
        'unknown', 'The instance was not checked: compute-2 is down.')
    assert states[ids[2]].reason == 'an adjustment is running on compute-1'
    assert (states[ids[3]].status, states[ids[3]].findings) == (
        'in_sync', ())
    assert ids[4] not in states
    assert elastic.instance_sync_states(request_, []) == {}


@pytest.mark.parametrize('refusal', ['policy', 'older extension'])
def test_refused_audit_is_remembered(request_, cloud, refusal):
    if refusal == 'policy':
        cloud.audit_error = 403
    else:
        cloud.audit_offered = False
    ids = list(cloud.servers)[:2]
    assert elastic.instance_sync_states(request_, ids) is None
    assert elastic.audit_offered(request_) is False
    calls = len(cloud.calls)
    assert elastic.instance_sync_states(request_, ids) is None
    sizes, _more = elastic.instance_size_list(request_)
    assert elastic.with_sync_states(request_, sizes) is None
    # One list call, no second audit call.
    assert len(cloud.calls) == calls + 1


def test_failed_audit_leaves_rows_unknown(request_, cloud):
    cloud.audit_error = 500
    sizes, _more = elastic.instance_size_list(request_)
    with pytest.raises(exceptions.ApiError):
        elastic.instance_sync_states(request_, [sizes[0].id])
    audited = elastic.with_sync_states(request_, sizes)
    assert {size.sync.status for size in audited} == {'unknown'}
    assert audited[0].sync.reason == 'Unexpected API Error.'
    # Not a refusal: asked again next time.
    assert elastic.audit_offered(request_) is True


def guest_states(cloud) -> dict[str, fakecloud.FakeServer]:
    """Servers of the demo cloud in the states readiness tells apart."""
    servers = list(cloud.servers.values())
    silent, bare, busy, stopped, unread = servers[:5]
    silent.balloon = 'silent'
    silent.guest_agent = 'not_answering'
    silent.agent_error = 'guest-ping timed out'
    silent.migrated_since_boot = True
    bare.balloon = 'no_device'
    bare.vcpu_hotplug = 'not_possible'
    bare.machine_type = 'pc-i440fx-2.9'
    busy.vcpus_busy = 1.5
    busy.memory_used_mb = 900
    stopped.status = 'SHUTOFF'
    unread.guest_read_error = ('nova-compute on compute-1 did not answer '
                               'within 5 seconds')
    return {'silent': silent, 'bare': bare, 'busy': busy,
            'stopped': stopped, 'unread': unread}


def test_list_with_readiness_is_one_call(request_, cloud):
    servers = guest_states(cloud)
    seen = []
    original = cloud.handle

    def spy(method, path, query, body):
        seen.append(query)
        return original(method, path, query, body)

    cloud.handle = spy
    sizes, _more = elastic.instance_size_list(request_, readiness=True)
    assert cloud.calls == [('GET', '/v2.1/os-xloud-adjust')]
    assert seen[0]['readiness'] == 'true'
    by_id = {size.id: size for size in sizes}

    silent = by_id[servers['silent'].id]
    assert (silent.readiness.balloon, silent.readiness.guest_agent,
            silent.readiness.vcpu_hotplug) == ('silent', 'not_answering',
                                               'possible')
    assert silent.readiness.migrated_since_boot is True
    assert silent.readiness.as_of is not None
    assert any('guest-ping timed out' in warning
               for warning in silent.readiness.warnings)
    # Memory is held back by the guest, vCPUs are not: one dimension.
    assert silent.adjustable(elastic.VCPUS)
    assert 'no balloon driver' in silent.fixed_reason(elastic.MEMORY)
    assert silent.adjust_refusal() is None
    assert silent.utilisation.memory is None
    assert silent.utilisation.reason == 'The guest sends no memory ' \
        'statistics. vCPU use is averaged over 300 seconds; the host has ' \
        'no sample of this guest old enough yet.'

    bare = by_id[servers['bare'].id]
    # Neither dimension can work now: the refusal says both, once each.
    refusal = bare.adjust_refusal()
    assert 'no hot-pluggable vCPUs (machine type pc-i440fx-2.9)' in refusal
    assert 'no memory balloon' in refusal

    busy = by_id[servers['busy'].id]
    assert busy.guest.online_vcpus == busy.current_vcpus
    assert busy.utilisation.vcpus == elastic.VcpuUse(1.5, 1, 300)
    assert busy.utilisation.memory == elastic.MemoryUse(900, 1024)
    # ceil(1.5) + 1 spare; 900 MiB with 20% free in 128 MiB steps, held
    # to the floor of 1024.
    assert (busy.recommendation.vcpus, busy.recommendation.memory_mb) == (
        3, 1152)
    assert busy.recommended(elastic.VCPUS) == 3
    assert busy.recommendation.rule(elastic.VCPUS).startswith(
        '1.50 vCPUs busy on average')

    stopped = by_id[servers['stopped'].id]
    assert stopped.readiness.as_of is None
    assert stopped.readiness.error == ('The server is stopped: its guest '
                                       'is read while it runs.')
    assert stopped.readiness.balloon == 'unknown'
    assert stopped.guest == elastic.GuestView(None, None, None, None, None)
    unread = by_id[servers['unread'].id]
    assert 'did not answer within 5 seconds' in unread.readiness.error
    assert unread.utilisation.reason == 'The guest was not read.'

    # Without asking: the list as it was, nothing of readiness.
    cloud.calls.clear()
    plain, _more = elastic.instance_size_list(request_)
    assert 'readiness' not in seen[-1]
    assert {(size.readiness, size.guest, size.utilisation,
             size.recommendation) for size in plain} == {
        (None, None, None, None)}


def test_older_extension_keeps_working_without_readiness(request_, cloud):
    cloud.readiness_offered = False
    ids = list(cloud.servers)
    cloud.servers[ids[1]].locked = True
    sizes, _more = elastic.instance_size_list(request_, readiness=True)
    # Refused for the parameter, asked again without it, remembered.
    assert cloud.calls == [('GET', '/v2.1/os-xloud-adjust')] * 2
    assert [size.readiness for size in sizes] == [None] * len(ids)
    assert elastic.readiness_offered(request_) is False
    cloud.calls.clear()
    elastic.instance_size_list(request_, readiness=True)
    assert cloud.calls == [('GET', '/v2.1/os-xloud-adjust')]
    size = elastic.instance_size_get(request_, ids[0])
    assert (size.readiness, size.utilisation, size.recommendation) == (
        None, None, None)
    assert size.adjust_refusal() is None
    assert size.recommended(elastic.VCPUS) is None
    locked = elastic.with_lock_states(request_, sizes)[1]
    assert locked.adjust_refusal() == 'The instance is locked.'


def test_a_bad_marker_is_not_taken_for_an_older_extension(request_, cloud):
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.instance_size_list(request_, marker='no-such-server',
                                   readiness=True)
    assert caught.value.status_code == 400
    assert 'marker [no-such-server] not found' in caught.value.message
    assert elastic.readiness_offered(request_) is True


def test_show_carries_the_guest_and_readiness(request_, cloud):
    servers = guest_states(cloud)
    busy = elastic.instance_size_get(request_, servers['busy'].id)
    assert busy.guest.agent == 'answering'
    assert busy.guest.usable_memory_mb == 1024 - 900
    assert busy.readiness.adjustable == {'vcpus': True, 'memory_mb': True}
    assert busy.recommended(elastic.MEMORY) == 1152
    cloud.servers[busy.id].locked = True
    locked = elastic.instance_size_get(request_, busy.id)
    # Readiness says why, whether or not Nova's lock state was asked.
    assert locked.locked is None
    assert locked.adjust_refusal() == 'The server is locked.'
    # A refusal of the moment keeps the recommendation; the form and a
    # bulk adjustment do not use it while the dimension is refused.
    assert locked.recommendation.vcpus == 3
    assert locked.recommended(elastic.VCPUS) is None


def test_fix_drift_heals_and_says_what_became_of_it(request_, cloud):
    ids = list(cloud.servers)
    cloud.add_drift(ids[0], 'placement_below_live', 'Placement is short.',
                    placement={'vcpus': 1, 'memory_mb': 4096})
    cloud.add_drift(ids[0], 'record_live_differs', 'The record is old.')
    cloud.add_drift(ids[1], 'domain_missing', 'No domain on compute-2.')
    cloud.add_drift(ids[2], 'placement_above_live', 'Placement holds more.')
    cloud.heal_errors[ids[2]] = ('compute-1 has no room for 2 VCPU / 4096 '
                                 'MEMORY_MB')
    cloud.add_drift(ids[3], 'record_boot_differs', 'The boot record is old.')
    cloud.audit_skipped[ids[3]] = 'busy (task_state migrating)'
    bodies = []
    original = cloud.handle

    def spy(method, path, query, body):
        bodies.append(body)
        return original(method, path, query, body)

    cloud.handle = spy
    fixed = elastic.fix_drift(request_, ids[0])
    assert cloud.calls == [('POST', '/v2.1/os-xloud-audit')]
    assert bodies == [{'fix': True, 'server_ids': [ids[0]]}]
    assert fixed.status == 'in_sync'
    assert fixed.changes == (
        'Set the placement allocation to 2 VCPU / 4096 MEMORY_MB (it was 1 '
        'VCPU / 4096 MEMORY_MB).',
        'Recorded the size the domain reports: live 2 vCPUs / 4096 MiB, '
        'boot 2 vCPUs / 4096 MiB.')
    assert (fixed.errors, fixed.remaining, fixed.skipped) == ((), (), None)
    # The audit of the page says so too.
    assert elastic.instance_sync_states(request_, [ids[0]])[ids[0]].status \
        == 'in_sync'

    kept = elastic.fix_drift(request_, ids[1])
    assert kept.status == 'drift'
    assert [finding.kind for finding in kept.remaining] == ['domain_missing']
    refused = elastic.fix_drift(request_, ids[2])
    assert refused.errors == ('compute-1 has no room for 2 VCPU / 4096 '
                              'MEMORY_MB',)
    assert [finding.message for finding in refused.remaining] == [
        'Placement holds more.']
    skipped = elastic.fix_drift(request_, ids[3])
    assert skipped.skipped == 'busy (task_state migrating)'
    assert cloud.drift[ids[3]]

    cloud.audit_error = 403
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.fix_drift(request_, ids[1])
    assert caught.value.status_code == 403


def test_fake_readiness_answers_match_the_extensions_schemas(
        cloud, nova_schemas):
    """The keys of readiness, in every state the fake serves, are what the
    extension may say; and the fix of the audit."""
    servers = guest_states(cloud)
    extra = [cloud.add_server(f'extra-{index}', cloud.flavors[flavor_id])
             for index, flavor_id in enumerate(('10', '11', '1', '10',
                                                '10'))]
    extra[0].guest_agent = 'not_configured'
    extra[0].balloon = 'no_statistics'
    extra[1].status = 'ERROR'
    extra[2].locked = True
    extra[3].status = 'PAUSED'
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{extra[4].id}', {},
                 {'current_vcpus': 2})
    virtio = cloud.add_flavor('elastic.virtio', 4, 4096, minimum_cpu=1,
                              minimum_memory=1024, flavor_id='12',
                              extra_specs={'xloud:memory_model':
                                           'virtio-mem'})
    plugged, unread = (cloud.add_server(f'virtio-{index}', virtio)
                       for index in range(2))
    plugged.memory_mb = 2048
    unread.status = 'SHUTOFF'
    extra += [plugged, unread]
    for value in ('true', '1', 'false'):
        status, body = cloud.handle('GET', '/v2.1/os-xloud-adjust',
                                    {'all_tenants': '1',
                                     'readiness': value}, None)
        assert status == 200
        assert_matches(nova_schemas['index_response'], body)
        assert ('readiness' in body['servers'][0]) == (value != 'false')
    states = set()
    for server in [*servers.values(), *extra]:
        status, body = cloud.handle(
            'GET', f'/v2.1/os-xloud-adjust/{server.id}', {}, None)
        assert_matches(nova_schemas['show_response'], body)
        states.add((body['server']['flavor']['memory_model'],
                    (body['server']['readiness']['virtio_mem'] or {}).get(
                        'state')))
    assert states == {('balloon', None), ('virtio-mem', 'plugged'),
                      ('virtio-mem', 'unknown')}
    ids = list(cloud.servers)
    cloud.add_drift(ids[0], 'placement_below_live',
                    placement={'vcpus': 1, 'memory_mb': 4096},
                    domain_live={'vcpus': 2, 'memory_mb': 4096})
    cloud.add_drift(ids[1], 'domain_missing', domain_state='missing')
    cloud.heal_errors[ids[2]] = 'placement refused the allocation'
    cloud.add_drift(ids[2], 'placement_above_live')
    for body in ({'fix': True, 'server_ids': ids[:3]}, {'fix': False},
                 {'fix': True}):
        status, answer = cloud.handle('POST', '/v2.1/os-xloud-audit', {},
                                      body)
        assert status == 200
        assert_matches(nova_schemas['audit_response'], answer)
    for bad in ({}, {'fix': 'yes'}, {'fix': True, 'server_ids': []},
                {'fix': True, 'hosts': 'compute-1'}):
        with pytest.raises(fakecloud.HTTPError):
            cloud.handle('POST', '/v2.1/os-xloud-audit', {}, bad)


_REAL_READINESS = '''
import json, sys
from nova import objects
objects.register_all()
from nova_ext import readiness, sizing
out = []
for case in json.load(sys.stdin):
    flavor = objects.Flavor(**case['flavor'])
    sysmeta = {'image_' + key: value
               for key, value in case['image'].items()}
    sysmeta.update(case['record'])
    if case['status']:
        sysmeta[sizing.SYSMETA_STATUS] = case['status']
    sysmeta[sizing.SYSMETA_STARTED_AT] = case['started_at']
    if case['migrated_at']:
        sysmeta[sizing.SYSMETA_MIGRATED_AT] = case['migrated_at']
    instance = objects.Instance(
        uuid=case['id'], host=case['host'], vm_state=case['vm_state'],
        task_state=case['task_state'], locked=case['locked'],
        system_metadata=sysmeta, flavor=flavor,
        pci_requests=objects.InstancePCIRequests(requests=[]))
    observed = (readiness.Observed.from_host(case['guest'])
                if case['guest'] else
                readiness.Observed.failed(case['error']))
    out.append(readiness.describe(
        instance, sizing.ElasticSize.from_instance(instance), observed))
print(json.dumps(out))
'''

# The host's view of a guest behind each balloon verdict of the fake
# (nova_ext.readiness._balloon): statistics flowing; a period but none
# since a start long ago; collection off; no balloon device.
_BALLOON_INPUTS = {
    'active': (True, 10, True), 'silent': (True, 10, False),
    'no_statistics': (True, 0, False), 'no_device': (False, 10, False),
}


def readiness_parity_servers() -> fakecloud.FakeCloud:
    cloud = fakecloud.FakeCloud.demo(servers=3)
    small, large = cloud.flavors['10'], cloud.flavors['11']
    pinned = cloud.add_flavor('pinned', 4, 4096, minimum_cpu=2,
                              minimum_memory=1024, flavor_id='30',
                              extra_specs={'hw:cpu_policy': 'dedicated'})
    threads = cloud.add_flavor('threads', 8, 8192, minimum_cpu=2,
                               minimum_memory=2048, flavor_id='31',
                               extra_specs={'hw:cpu_threads': '2'})

    def server(name, flavor, **state):
        added = cloud.add_server(name, flavor)
        for key, value in state.items():
            setattr(added, key, value)
        return added

    server('silent', small, balloon='silent', migrated_since_boot=True,
           guest_agent='not_answering', agent_error='guest-ping timed out')
    server('bare', small, balloon='no_device', vcpu_hotplug='not_possible',
           machine_type='pc-i440fx-2.9')
    server('unconfigured', large, balloon='no_statistics',
           guest_agent='not_configured', vcpus_busy=0.2)
    server('busy', large, vcpus_busy=5.3, memory_used_mb=9000)
    server('full', small, vcpus_busy=7.5, memory_used_mb=4000)
    server('locked', small, locked=True, vcpus_busy=1.0)
    server('migrating', small, operation='migrating', vcpus_busy=1.0)
    server('stopped', small, vm_status='SHUTOFF', vcpus_busy=1.0)
    server('error', small, vm_status='ERROR')
    server('paused', small, vm_status='PAUSED')
    server('unread', small, guest_read_error='compute-1 did not answer')
    server('pinned', pinned, vcpus_busy=2.5, memory_used_mb=1500)
    server('threads', threads, vcpus_busy=2.2)
    server('tiny', cloud.flavors['1'], vcpus_busy=0.9, memory_used_mb=300)
    adjusting = server('adjusting', small)
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{adjusting.id}', {},
                 {'current_vcpus': 2})
    settled = server('settled', small, vcpus_busy=1.2)
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{settled.id}', {},
                 {'current_vcpus': 3, 'persist': False})
    cloud.settle()
    plugged = cloud.add_flavor('plugged', 4, 4096, minimum_cpu=1,
                               minimum_memory=1024, flavor_id='32',
                               extra_specs={'xloud:memory_model':
                                            'virtio-mem'})
    # Booted at the minimum, or at a larger size persisted before.
    server('vm idle', plugged)
    server('vm plugged', plugged, memory_mb=2048, boot_memory_mb=2048,
           recorded=True, vcpus_busy=0.5, memory_used_mb=1500)
    server('vm no driver', plugged, memory_mb=3072, boot_memory_mb=3072,
           recorded=True, virtio_mem_driver=False)
    server('vm unplugging', plugged, memory_mb=2048, boot_memory_mb=2048,
           recorded=True, virtio_mem_unreturned_mb=512,
           balloon='no_statistics')
    server('vm unread', plugged, guest_read_error='compute-1 did not answer')
    growing = server('vm plugging', plugged, memory_mb=2048,
                     boot_memory_mb=2048, recorded=True)
    cloud.handle('POST', f'/v2.1/os-xloud-adjust/{growing.id}', {},
                 {'current_memory_mb': 3072})
    autopilot_servers(cloud, server)
    return cloud


def autopilot_servers(cloud: fakecloud.FakeCloud, server) -> None:
    """Servers in each autopilot state: opted in by their flavor or
    themselves, out, held below their host's mode, on a host that runs
    it or not, with decisions or none yet."""
    cloud.add_host('compute-1', autopilot_mode='recommend')
    cloud.add_host('compute-2', autopilot_mode='on')
    opted = cloud.add_flavor('autosized', 4, 4096, minimum_cpu=1,
                             minimum_memory=1024, flavor_id='33',
                             extra_specs={'xloud:autosize': 'memory,cpu'})
    grow = fakecloud.decision(
        'memory_mb', 'grow', 1024, 1792,
        'memory 1024 → 1792 MiB: usable 4% < 15% for 3 min.')
    hold = fakecloud.decision('vcpus', 'hold', 1, 1,
                              'vCPUs busy 40% within 30-80%.')
    server('ap recommend', opted, autopilot_decisions=[grow, hold])
    server('ap on', opted, host='compute-2',
           autopilot_decisions=[hold, fakecloud.decision(
               'memory_mb', 'shrink', 4096, 2048,
               'memory 4096 → 2048 MiB: usable 70% > 40% for 15 min.')])
    server('ap held off', opted, autosize_mode='off',
           autopilot_decisions=[grow])
    server('ap out', opted, autosize='none', autopilot_decisions=[])
    server('ap own memory', cloud.flavors['10'], autosize='memory',
           autopilot_decisions=[grow])
    server('ap none yet', opted, host='compute-2')
    server('ap unread', opted, guest_read_error='compute-1 did not answer')
    server('ap nothing to hold', opted, autopilot_decisions=[hold])


def readiness_case(cloud: fakecloud.FakeCloud,
                   server: fakecloud.FakeServer) -> dict:
    """The instance and its host's answer for ``nova_ext.readiness``."""
    guest = cloud.guest(server)
    device, period, fresh = _BALLOON_INPUTS[server.balloon]
    record = {}
    if server.recorded:
        record = {'xloud_flavorid': server.flavor.id,
                  'xloud_boot_vcpus': str(server.boot_vcpus),
                  'xloud_boot_memory_mb': str(server.boot_memory_mb),
                  'xloud_live_vcpus': str(server.vcpus),
                  'xloud_live_memory_mb': str(server.memory_mb)}
    for key, value in (
            (fakecloud.SYSMETA_AUTOSIZE, server.autosize),
            (fakecloud.SYSMETA_AUTOSIZE_MODE, server.autosize_mode)):
        if value:
            record[key] = value
    host = None
    if guest['as_of'] is not None:
        host = {
            'size': {'vcpus': server.vcpus, 'memory_mb': server.memory_mb},
            'guest': {**{key: guest[key] for key in (
                'agent', 'online_vcpus', 'available_memory_mb',
                'usable_memory_mb')}, 'agent_error': server.agent_error},
            'balloon_device': device, 'stats_period': period,
            'stats_fresh': fresh,
            # All but the first vCPU: none for a 1-vCPU flavor.
            'hotpluggable_vcpus': (
                0 if server.vcpu_hotplug == 'not_possible'
                else server.flavor.vcpus - 1),
            'machine_type': server.machine_type, 'cpu_time_ns': 0,
            'virtio_mem': cloud.virtio_mem_device(server),
            'autopilot': cloud.host_autopilot(server),
            'busy': (None if server.vcpus_busy is None else
                     {'vcpus': server.vcpus_busy,
                      'window_seconds':
                          fakecloud.UTILISATION_WINDOW_SECONDS}),
            'as_of': guest['as_of']}
    return {
        'id': server.id, 'host': server.host,
        'vm_state': cloud._vm_state(server), 'task_state': server.task_state,
        'locked': server.locked, 'status': server.adjustment_status,
        'started_at': '2020-01-01T00:00:00Z',
        'migrated_at': ('2020-01-02T00:00:00Z'
                        if server.migrated_since_boot else None),
        'flavor': {'flavorid': server.flavor.id, 'name': server.flavor.name,
                   'vcpus': server.flavor.vcpus,
                   'memory_mb': server.flavor.memory_mb,
                   'extra_specs': server.embedded_specs},
        'image': server.image_properties, 'record': record,
        'guest': host, 'error': cloud.readiness(server)['error']}


def without_times(answer: dict) -> dict:
    """The answer with its read times blanked: the two sides read the
    clock at different moments. Whether there is one stays compared."""
    answer = json.loads(json.dumps(answer))
    for key in ('guest', 'readiness', 'autopilot'):
        if answer[key]['as_of'] is not None:
            answer[key]['as_of'] = 'read'
    return answer


def test_fake_readiness_follows_the_extensions_rules():
    """Verdicts, reasons, warnings, utilisation and recommendations of the
    fake are ``nova_ext.readiness``'s, for the same guests."""
    cloud = readiness_parity_servers()
    servers = list(cloud.servers.values())
    cases = [readiness_case(cloud, server) for server in servers]
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, '-c', _REAL_READINESS], input=json.dumps(cases),
        capture_output=True, text=True, check=True, timeout=120, cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)))
    real = json.loads(result.stdout.splitlines()[-1])
    for server, expected in zip(servers, real, strict=True):
        fake = {'guest': cloud.guest(server),
                'readiness': cloud.readiness(server),
                'utilisation': cloud.utilisation(server),
                'recommendation': cloud.recommendation(server),
                'autopilot': cloud.autopilot(server)}
        assert without_times(fake) == without_times(expected), server.name
    # The cases did differ.
    assert len({json.dumps(answer['readiness']['reasons'])
                for answer in real}) >= 8
    assert len({json.dumps(answer['recommendation'])
                for answer in real}) >= 6
    # Balloon guests, and a virtio-mem device in each state.
    assert {(answer['autopilot']['mode'],
             answer['autopilot']['dimensions_from'],
             answer['autopilot']['recommended'] is not None)
            for answer in real} >= {
        ('recommend', 'flavor', True), ('on', 'flavor', False),
        ('off', 'flavor', False), ('off', 'instance', False),
        ('recommend', 'instance', True), (None, 'flavor', False),
        ('recommend', 'flavor', False), ('off', None, False)}
    assert {(answer['readiness']['virtio_mem'] or {}).get('state')
            for answer in real} == {
        None, 'idle', 'plugged', 'plugging', 'not_plugging', 'unplugging',
        'unknown'}


GROW_MEMORY = ('memory 4096 → 6144 MiB: usable 4% < 15% for 3 min.')
HOLD_VCPUS = 'vCPUs busy 45% within 30-80%.'


def autopilot_states(cloud) -> dict[str, fakecloud.FakeServer]:
    """Servers of the demo cloud in the autopilot's states: recommending
    a grow on a recommend host, on an off host, not read, opted out, and
    on with a shrink."""
    cloud.add_host('compute-1', autopilot_mode='recommend')
    servers = list(cloud.servers.values())
    recommending, off, unread, opted_out, running = servers[:5]
    for server in servers:
        server.embedded_specs['xloud:autosize'] = 'memory,cpu'
    recommending.autopilot_decisions = [
        fakecloud.decision('memory_mb', 'grow', 4096, 6144, GROW_MEMORY),
        fakecloud.decision('vcpus', 'hold', 2, 2, HOLD_VCPUS)]
    off.autopilot_decisions = []
    unread.guest_read_error = 'compute-1 did not answer'
    opted_out.autosize = 'none'
    cloud.add_host('compute-3', autopilot_mode='on')
    running.host = 'compute-3'
    running.autosize_mode = 'on'
    running.autopilot_decisions = [fakecloud.decision(
        'memory_mb', 'shrink', 4096, 2048,
        'memory 4096 → 2048 MiB: usable 70% > 40% for 15 min.')]
    return {'recommending': recommending, 'off': off, 'unread': unread,
            'opted_out': opted_out, 'running': running}


def test_autopilot_comes_with_the_list_and_the_single_get(request_, cloud):
    servers = autopilot_states(cloud)
    cloud.calls.clear()
    sizes, _more = elastic.instance_size_list(request_, readiness=True)
    assert cloud.calls == [('GET', '/v2.1/os-xloud-adjust')]
    by_id = {size.id: size for size in sizes}
    recommending = by_id[servers['recommending'].id].autopilot
    assert recommending.setting == elastic.AutopilotSetting(
        ('vcpus', 'memory_mb'), 'flavor', None)
    assert (recommending.host_mode, recommending.mode) == ('recommend',
                                                           'recommend')
    grow, hold = recommending.decisions
    assert grow == elastic.AutopilotDecision('memory_mb', 'grow', 4096,
                                             6144, GROW_MEMORY)
    assert grow.is_move and not hold.is_move
    assert recommending.last_move == grow
    assert recommending.as_of is not None
    assert recommending.recommended == elastic.AutopilotTarget(None, 6144)
    off = by_id[servers['off'].id].autopilot
    assert (off.host_mode, off.mode, off.decisions, off.recommended) == (
        'off', 'off', (), None)
    unread = by_id[servers['unread'].id].autopilot
    assert (unread.host_mode, unread.mode, unread.as_of) == (None, None,
                                                             None)
    opted_out = by_id[servers['opted_out'].id].autopilot
    assert opted_out.setting == elastic.AutopilotSetting((), 'instance',
                                                         None)
    assert opted_out.mode == 'off'
    running = by_id[servers['running'].id].autopilot
    # On: it makes its changes itself, nothing to recommend.
    assert (running.mode, running.recommended) == ('on', None)
    assert running.last_move.action == 'shrink'
    shown = elastic.instance_size_get(request_, servers['recommending'].id)
    # The single GET says the same (read again: another time).
    assert dataclasses.replace(shown.autopilot,
                               as_of=recommending.as_of) == recommending
    # Without readiness, or from an extension older than the autopilot:
    # none.
    sizes, _more = elastic.instance_size_list(request_)
    assert {size.autopilot for size in sizes} == {None}
    cloud.autopilot_offered = False
    sizes, _more = elastic.instance_size_list(request_, readiness=True)
    assert {size.autopilot for size in sizes} == {None}
    assert all(size.readiness is not None for size in sizes)


def test_autopilot_set_puts_the_setting(request_, cloud):
    server = next(iter(cloud.servers.values()))
    path = f'/v2.1/os-xloud-adjust/{server.id}/autopilot'
    seen = []
    original = cloud.handle

    def handle(method, called_path, query, body):
        seen.append((method, called_path, body))
        return original(method, called_path, query, body)

    cloud.handle = handle
    setting = elastic.autopilot_set(request_, server.id, ['memory_mb'],
                                    'recommend')
    assert seen == [('PUT', path, {'autopilot': {
        'dimensions': ['memory_mb'], 'mode': 'recommend'}})]
    assert setting == elastic.AutopilotSetting(('memory_mb',), 'instance',
                                               'recommend')
    assert (server.autosize, server.autosize_mode) == ('memory',
                                                       'recommend')
    # Opted out; then back to the flavor, which does not opt in.
    assert elastic.autopilot_set(request_, server.id, (), None) == (
        elastic.AutopilotSetting((), 'instance', None))
    assert server.autosize == 'none'
    assert elastic.autopilot_set(request_, server.id, None, None) == (
        elastic.AutopilotSetting((), None, None))
    server.embedded_specs['xloud:autosize'] = 'cpu'
    assert elastic.autopilot_set(request_, server.id, None, 'off') == (
        elastic.AutopilotSetting(('vcpus',), 'flavor', 'off'))
    assert seen[-1][2] == {'autopilot': {'dimensions': None, 'mode': 'off'}}


def test_autopilot_set_refusals_reach_the_caller(request_, cloud):
    locked = cloud.add_flavor('locked-memory', 4, 4096, minimum_cpu=2,
                              minimum_memory=1024, flavor_id='30',
                              extra_specs={'hw:locked_memory': 'true'})
    server = cloud.add_server('locked-vm', locked)
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.autopilot_set(request_, server.id, ['vcpus', 'memory_mb'],
                              None)
    assert caught.value.status_code == 409
    assert caught.value.message.startswith(
        f'memory_mb of server {server.id} cannot be sized automatically: '
        f'hw:locked_memory ')
    assert server.autosize == ''
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.autopilot_set(request_, server.id, ['memory_mb'],
                              'sometimes')
    assert caught.value.status_code == 400
    with pytest.raises(exceptions.NotFound):
        elastic.autopilot_set(request_, 'missing', ['memory_mb'], None)
    # vCPUs alone can be sized.
    assert elastic.autopilot_set(request_, server.id, ['vcpus'],
                                 None).dimensions == ('vcpus',)


def test_history_tells_automatic_changes_apart(request_, cloud):
    server = next(iter(cloud.servers.values()))
    grow = 'memory 4096 → 6144 MiB: usable 4% < 15% for 3 min.'
    cloud.autosize(server, grow, memory_mb=6144)
    cloud.settle()
    elastic.adjust(request_, server.id, vcpus=3)
    cloud.settle()
    shrink = 'memory 6144 → 5120 MiB: usable 70% > 40% for 15 min.'
    cloud.autosize(server, shrink, memory_mb=5120)
    manual, automatic = server.actions[1:]
    assert (manual['action'], automatic['action']) == ('xloud-adjust',
                                                       'xloud-autosize')
    history = elastic.adjustment_history(request_, server.id)
    assert [(entry.automatic, entry.user_id, entry.result)
            for entry in history] == [(True, None, None),
                                      (False, 'admin-user', 'Success'),
                                      (True, None, 'Success')]
    # In progress: the reason is the event's name.
    assert (history[0].reason, history[0].details) == (shrink, None)
    # Done: the record says what changed; the reason is not in the
    # details twice.
    assert history[2].reason == grow
    assert history[2].details == 'memory_mb 4096 -> 6144, persisted'
    assert history[2].changes == {'memory_mb': (4096, 6144)}
    assert history[1].reason is None
    assert history[1].changes == {'vcpus': (2, 3)}
    # An event that lost its reason: the record still has it.
    automatic['events'][0]['event'] = 'compute_xloud_autosize'
    assert elastic.adjustment_history(request_, server.id)[2].reason == grow


def test_flavor_autosize_is_written_and_removed(request_, cloud):
    tiny = cloud.flavors['1']
    assert elastic.flavor_get(request_, '1').autosize is None
    for autosize, specs, calls in (
            ('memory,cpu', {'xloud:autosize': 'memory,cpu'},
             ['GET', 'POST']),
            # Unchanged: nothing written.
            ('memory,cpu', {'xloud:autosize': 'memory,cpu'}, ['GET']),
            # Left as it is.
            (None, {'xloud:autosize': 'memory,cpu'}, ['GET']),
            ('memory', {'xloud:autosize': 'memory'}, ['GET', 'POST']),
            # Nothing is the key's absence.
            ('none', {}, ['GET', 'DELETE']),
            ('none', {}, ['GET'])):
        cloud.calls.clear()
        elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                    minimum_memory=None, autosize=autosize)
        assert tiny.extra_specs == specs
        assert [method for method, _path in cloud.calls] == calls, autosize
    tiny.extra_specs['xloud:autosize'] = 'cpu'
    assert elastic.flavor_get(request_, '1').autosize == 'cpu'
    # An older or unknown value is read as none, as the extension does.
    tiny.extra_specs['xloud:autosize'] = 'disk'
    assert elastic.flavor_get(request_, '1').autosize is None
    with pytest.raises(exceptions.ApiError) as caught:
        elastic.flavor_set_minimums(request_, '1', minimum_cpu=1,
                                    minimum_memory=None, autosize='all')
    assert caught.value.status_code == 400
    assert caught.value.message == (
        "Invalid extra spec xloud:autosize=all: Validation failed; 'all' "
        "is not one of: memory, cpu, memory,cpu.")
    assert tiny.extra_specs == {'xloud:autosize': 'disk'}


def test_fake_autopilot_answers_match_the_extensions_schemas(cloud,
                                                             nova_schemas):
    """The ``autopilot`` blocks in every state, the PUT's answers, and
    its 400 exactly where the extension's request schema refuses."""
    servers = autopilot_states(cloud)
    for query in ({'readiness': 'true'}, {}):
        status, body = cloud.handle('GET', '/v2.1/os-xloud-adjust', query,
                                    None)
        assert_matches(nova_schemas['index_response'], body)
    for server in servers.values():
        status, body = cloud.handle(
            'GET', f'/v2.1/os-xloud-adjust/{server.id}', {}, None)
        assert_matches(nova_schemas['show_response'], body)
    server = servers['off']
    path = f'/v2.1/os-xloud-adjust/{server.id}/autopilot'
    bodies = [
        {'autopilot': {'dimensions': ['memory_mb'], 'mode': 'on'}},
        {'autopilot': {'dimensions': None, 'mode': None}},
        {'autopilot': {'dimensions': [], 'mode': 'off'}},
        {'autopilot': {'dimensions': ['vcpus', 'memory_mb'],
                       'mode': 'recommend'}},
        {'autopilot': {'dimensions': ['vcpus', 'vcpus'], 'mode': None}},
        {'autopilot': {'dimensions': ['disk'], 'mode': None}},
        {'autopilot': {'dimensions': 'memory_mb', 'mode': None}},
        {'autopilot': {'dimensions': None, 'mode': 'auto'}},
        {'autopilot': {'dimensions': None}},
        {'autopilot': {'dimensions': None, 'mode': None, 'host': 'x'}},
        {'autopilot': None},
        {'dimensions': None, 'mode': None},
        {}]
    refused = 0
    for body in bodies:
        try:
            jsonschema.validate(body, nova_schemas['autopilot_update'])
            valid = True
        except jsonschema.ValidationError:
            valid = False
        try:
            status, answer = cloud.handle('PUT', path, {}, body)
        except fakecloud.HTTPError as exc:
            assert (exc.status, valid) == (400, False), body
            refused += 1
            continue
        assert valid, body
        assert status == 200
        assert_matches(nova_schemas['autopilot_update_response'], answer)
    assert refused == 9
