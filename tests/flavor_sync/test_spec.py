"""The serialized RequestSpec format, on specs Nova itself wrote."""

import json

import pytest
from nova import objects

from nova_ext.flavor_sync import database
from nova_ext.flavor_sync.spec import (
    EmbeddedFlavorCheck,
    MalformedSpec,
    RequestSpecDocument,
    SpecRewriter,
    dumps,
    loads,
)
from tests.flavor_sync import scenario as scenarios


@pytest.fixture
def nova_written(nova_api):
    """Specs as Nova wrote them, and the flavors as they are now."""
    scenario = scenarios.build(nova_api)
    with nova_api.engine.connect() as connection:
        flavors = database.load_flavors(connection)
    return scenario, nova_api.specs(), flavors


def test_reserialising_is_byte_identical(nova_written):
    _, specs, _ = nova_written
    for text in specs.values():
        assert dumps(loads(text)) == text


def test_flavor_table_matches_nova_flavor_objects(nova_api, nova_written):
    _, _, flavors = nova_written
    for flavorid, flavor in flavors.items():
        nova_flavor = objects.Flavor.get_by_flavor_id(
            nova_api.context, flavorid)
        assert flavor.extra_specs == nova_flavor.extra_specs
        assert (flavor.vcpus, flavor.memory_mb, flavor.root_gb) == (
            nova_flavor.vcpus, nova_flavor.memory_mb, nova_flavor.root_gb)


def test_splice_equals_whole_document_serialisation(nova_written):
    scenario, specs, flavors = nova_written
    for instance_uuid in scenario.stale:
        text = specs[instance_uuid]
        document = RequestSpecDocument(text)
        flavor = flavors[document.flavorid]
        synced = document.synchronised(flavor)

        expected = json.loads(text)
        data = expected['nova_object.data']['flavor']['nova_object.data']
        for name in ('vcpus', 'memory_mb', 'root_gb', 'ephemeral_gb',
                     'swap'):
            data[name] = getattr(flavor, name)
        data['extra_specs'] = dict(flavor.extra_specs)
        assert synced == json.dumps(expected)
        assert not RequestSpecDocument(synced).diff(flavor)


def test_rewriter_writes_what_the_document_writes(nova_written):
    scenario, specs, flavors = nova_written
    rewriter = SpecRewriter()
    texts = [specs[instance_uuid] for instance_uuid in scenario.stale]
    compact = json.dumps(json.loads(texts[0]), separators=(',', ':'))
    check = EmbeddedFlavorCheck(flavors)
    # Twice over: the second time from what the rewriter remembered.
    for text in texts + [compact] + texts:
        document = RequestSpecDocument(text)
        flavor = flavors[document.flavorid]
        expected = RequestSpecDocument(text).synchronised(flavor)
        assert rewriter.patch(text, flavor).applied_to(text) == expected
        embedded = check.embedded(text).text
        assert embedded in text
        assert (rewriter.patch(text, flavor, embedded).applied_to(text) ==
                expected)


def test_other_formatting_falls_back_to_whole_document(nova_written):
    scenario, specs, flavors = nova_written
    compact = json.dumps(json.loads(specs[scenario.storage[0]]),
                         separators=(',', ':'))
    document = RequestSpecDocument(compact)
    synced = document.synchronised(flavors['storage'])
    assert (scenarios.without_flavor(synced) ==
            scenarios.without_flavor(compact))
    assert scenarios.embedded_flavor(synced)['extra_specs'] == dict(
        flavors['storage'].extra_specs)


def test_envelope_versions_and_changes_are_kept(nova_written):
    scenario, specs, flavors = nova_written
    text = specs[scenario.sized[0]]
    synced = RequestSpecDocument(text).synchronised(flavors['sized'])
    before, after = json.loads(text), json.loads(synced)
    for key in ('nova_object.name', 'nova_object.version',
                'nova_object.namespace', 'nova_object.changes'):
        assert after[key] == before[key]
        assert (after['nova_object.data']['flavor'][key] ==
                before['nova_object.data']['flavor'][key])


@pytest.mark.parametrize('text, message', [
    ('', 'not valid JSON'),
    ('[1, 2]', 'spec is not a RequestSpec object'),
    ('{"nova_object.name": "RequestSpec"}', 'spec has no nova_object.data'),
    ('{"nova_object.name": "RequestSpec", "nova_object.data": {"flavor": '
     '{"nova_object.name": "Flavor", "nova_object.data": {}}}}',
     'spec flavor has no flavorid'),
    ('{"nova_object.name": "RequestSpec", "nova_object.data": {"flavor": '
     '{"nova_object.name": "Flavor", "nova_object.data": {"flavorid": "1",'
     ' "extra_specs": []}}}}', 'extra_specs is not a mapping'),
])
def test_malformed_specs(text, message):
    with pytest.raises(MalformedSpec, match=message):
        RequestSpecDocument(text)


def _full_verdict(text, flavors):
    """What parsing the whole spec concludes: None when malformed."""
    try:
        document = RequestSpecDocument(text)
    except MalformedSpec:
        return None
    flavor = flavors.get(document.flavorid)
    in_sync = None if flavor is None else not document.diff(flavor)
    return document.flavorid, document.flavor_name, in_sync


def _quick_verdict(check, text, flavors):
    """What the quick check concludes: None when it defers."""
    found = check.embedded(text)
    if found is None:
        return None
    assert found.flavor is flavors.get(found.flavorid)
    return found.flavorid, found.name, found.in_sync


def _mutations(text):
    """The spec damaged one character at a time, all along its length."""
    for position in range(0, len(text), 3):
        yield text[:position] + text[position + 1:]
        for character in '"{}[],:\\ 0\x01\u00e9':
            yield text[:position] + character + text[position + 1:]
        yield text[:position] + ',' + text[position:]


def test_quick_check_agrees_with_full_parse(nova_written):
    """The quick check settles only what a full parse settles the same way.

    Damage anywhere in the spec, inside the embedded flavor or far from
    it, must either make the quick check defer to the full parse or leave
    both with the same verdict: a spec the full parse calls malformed is
    never settled quickly as in sync.
    """
    scenario, specs, flavors = nova_written
    check = EmbeddedFlavorCheck(flavors)
    settled = deferred = 0
    for instance_uuid in (scenario.storage[0], scenario.sized[0],
                          scenario.plain[0]):
        text = specs[instance_uuid]
        assert _quick_verdict(check, text, flavors) == _full_verdict(
            text, flavors)
        for damaged in _mutations(text):
            quick = _quick_verdict(check, damaged, flavors)
            if quick is None:
                deferred += 1
            else:
                settled += 1
                assert quick == _full_verdict(damaged, flavors), damaged
    # Both outcomes happen: the test exercises the quick path for real.
    assert settled > 1000 and deferred > 1000


def test_quick_check_reads_duplicate_keys_like_the_full_parse(
        nova_written):
    scenario, specs, flavors = nova_written
    check = EmbeddedFlavorCheck(flavors)
    stale = json.loads(specs[scenario.storage[0]])
    fresh = json.loads(specs[scenario.plain[0]])
    text = json.dumps(stale)[:-1] + ', "nova_object.data": ' + json.dumps(
        fresh['nova_object.data']) + '}'
    assert _quick_verdict(check, text, flavors) == _full_verdict(
        text, flavors) == ('plain', 'flavor-plain', True)


def test_quick_check_defers_on_what_it_does_not_read(nova_written):
    scenario, specs, flavors = nova_written
    check = EmbeddedFlavorCheck(flavors)
    text = specs[scenario.plain[0]]
    assert check.embedded(text) is not None
    for damaged in (text[:-1], text + ' x', text.replace(
            '"is_bfv": false', '"is_bfv": fals')):
        assert check.embedded(damaged) is None
        with pytest.raises(MalformedSpec, match='not valid JSON'):
            RequestSpecDocument(damaged)
