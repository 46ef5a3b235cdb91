"""``xloud_dashboard.api.elastic`` against a loopback HTTP Nova.

The real openstacksdk and keystoneauth stack sends every request; the fake
Nova (``fakecloud``) answers with the extension's contract and records
each call, so these tests see paths, query strings, bodies and errors.
"""

import threading
import types

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
