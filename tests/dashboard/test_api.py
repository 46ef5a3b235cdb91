"""``xloud_dashboard.api.elastic`` against a loopback HTTP Nova.

The real openstacksdk and keystoneauth stack sends every request; the fake
Nova (``fakecloud``) answers with the extension's contract and records
each call, so these tests see paths, query strings, bodies and errors.
"""

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
            '"index_response", "show_response")}))')
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
    assert 'current_vcpus 99 is outside [2, 8]' in caught.value.message
    with pytest.raises(exceptions.NotFound):
        elastic.instance_size_get(request_, 'no-such-server')


def test_adjust_many_reports_each_instance(request_, cloud):
    ids = list(cloud.servers)[:3]
    outcomes = elastic.adjust_many(request_, [
        elastic.AdjustRequest(ids[0], vcpus=2),
        elastic.AdjustRequest(ids[1], vcpus=100),
        elastic.AdjustRequest(ids[2], memory_mb=2048)])
    assert [outcome.accepted for outcome in outcomes] == [True, False, True]
    assert 'outside' in outcomes[1].error
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
    assert cloud.flavors['1'].extra_specs == {'minimum_cpu': '1',
                                              'minimum_memory': '256'}
    elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                minimum_memory=128)
    assert cloud.flavors['1'].extra_specs == {'minimum_memory': '128'}
    # Clearing what is not set is not an error.
    elastic.flavor_set_minimums(request_, '1', minimum_cpu=None,
                                minimum_memory=None)
    assert cloud.flavors['1'].extra_specs == {}
    flavor = elastic.flavor_get(request_, '1')
    assert (flavor.minimum_cpu, flavor.minimum_memory) == (None, None)


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
