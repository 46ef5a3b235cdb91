"""--migrate-keys: the legacy minimum keys renamed wherever Nova keeps a
copy of a flavor, on SQLite and MariaDB, read back by Nova's own objects."""

import hashlib
import json
import os
import re

import pytest
from nova import objects

from nova_ext.flavor_sync import backup, key_migration, sync
from nova_ext.flavor_sync.key_migration import (
    ConflictingValues,
    SpecKeys,
    may_hold_legacy_keys,
    migrated_extra_specs,
)
from nova_ext.flavor_sync.spec import MalformedSpec, RequestSpecDocument
from tests.flavor_sync import scenario as scenarios
from tests.flavor_sync.test_restore import restore_summary
from tests.flavor_sync.test_spec import _mutations
from tests.flavor_sync.test_sync import backups, summary

# The names the product now reads, spelt out here rather than taken from
# the module under test.
NEW_NAMES = {'minimum_cpu': 'xloud:minimum_cpu',
             'minimum_memory': 'xloud:minimum_memory'}
# What every flavor of the scenario holds once migrated.
MIGRATED = {
    'legacy': scenarios.MIGRATED_SPECS,
    'both': scenarios.BOTH_MIGRATED,
    'bigger': scenarios.BIGGER_MIGRATED,
    'modern': scenarios.MODERN_SPECS,
    'plain': {},
}
PLACE_LINE = re.compile(
    r'\] (Flavors|Request specs|Instances in cell \S+ \([\w-]+\)): '
    r'(?:Updated|Restored)=(\d+), Skipped=(\d+), Errors=(\d+)$', re.M)


def places(output: str) -> dict[str, tuple[int, int, int]]:
    """The per-place counts a run ends with, places by short name."""
    found = {}
    for place, *counts in PLACE_LINE.findall(output):
        short = place.split(' (')[0].replace('Instances in cell ', '')
        found[short] = tuple(int(count) for count in counts)
    return found


def renamed_in_place(extra_specs: dict) -> dict:
    """The test's own statement of the rename, as an oracle."""
    return {NEW_NAMES.get(key, key): value
            for key, value in extra_specs.items()
            if not (key in NEW_NAMES and NEW_NAMES[key] in extra_specs)}


def snapshot(nova_api, cloud) -> dict:
    """Every copy of every flavor, every byte as stored."""
    return {'flavor rows': nova_api.extra_spec_rows(),
            'request specs': nova_api.specs(),
            'cell0': cloud.cell0.flavors(),
            'cell1': cloud.cell1.flavors()}


CHANGE_LIST = re.compile(r'("nova_object\.changes": \[)([^\]]*)(\])')


def change_lists_in_order(text: str) -> str:
    """``text`` with every ``nova_object.changes`` list sorted in place.

    Nova writes those lists from a set (``obj_to_primitive``), so their
    order depends on the hash seed and on the order the set was filled
    in, and Nova re-saving an untouched object may reorder them; every
    other byte is Nova's and is compared as written.
    """
    return CHANGE_LIST.sub(
        lambda found: found[1] + ', '.join(sorted(found[2].split(', '))) +
        found[3], text)


def as_nova_writes_it(stored: dict) -> dict:
    """A snapshot with the JSON copies' change lists in one order."""
    return {place: rows if place == 'flavor rows' else {
                uuid_: text if text is None else change_lists_in_order(text)
                for uuid_, text in rows.items()}
            for place, rows in stored.items()}


def cell_of(cloud, instance_uuid):
    return cloud.cell0 if instance_uuid in cloud.failed else cloud.cell1


def assert_nova_reads_migrated(nova_api, cloud):
    """Nova's objects load every rewritten row with the namespaced keys."""
    for flavorid, expected in MIGRATED.items():
        flavor = objects.Flavor.get_by_flavor_id(nova_api.context, flavorid)
        assert flavor.extra_specs == expected, flavorid
    for instance_uuid in cloud.instances:
        spec = nova_api.load(instance_uuid)
        assert spec.flavor.extra_specs == MIGRATED[spec.flavor.flavorid]
        instance = cell_of(cloud, instance_uuid).load(instance_uuid)
        assert instance.flavor.extra_specs == MIGRATED[
            instance.flavor.flavorid]
        assert instance.flavor.flavorid == spec.flavor.flavorid
        if instance_uuid in cloud.resized:
            assert instance.old_flavor.extra_specs == MIGRATED['legacy']
            assert instance.new_flavor.extra_specs == MIGRATED['bigger']
        else:
            assert instance.old_flavor is None
            assert instance.new_flavor is None


@pytest.fixture
def cloud(nova_api, cells):
    return scenarios.build_legacy(nova_api, *cells)


def test_rename_keeps_the_order_and_drops_equal_duplicates():
    assert list(migrated_extra_specs(scenarios.LEGACY_SPECS).items()) == \
        list(scenarios.MIGRATED_SPECS.items())
    assert migrated_extra_specs(scenarios.BOTH_SPECS) == \
        scenarios.BOTH_MIGRATED
    assert migrated_extra_specs(scenarios.MODERN_SPECS) is None
    assert migrated_extra_specs({}) is None
    with pytest.raises(ConflictingValues,
                       match="minimum_cpu='1' but xloud:minimum_cpu='2'"):
        migrated_extra_specs({'minimum_cpu': '1', 'xloud:minimum_cpu': '2'})
    assert key_migration.LEGACY_KEYS == NEW_NAMES


@pytest.mark.parametrize('text, expected', [
    ('{"extra_specs": {"minimum_cpu": "1"}}', True),
    ('{"extra_specs": {"minimum_memory": "1"}}', True),
    ('{"extra_specs": {"\\u006dinimum_cpu": "1"}}', True),
    ('{"extra_specs": {"minimum\\u005fcpu": "1"}}', True),
    ('{"extra_specs": {"xloud:minimum_cpu": "1"}}', False),
    ('{"extra_specs": {"minimum_cpus": "1"}}', False),
    ('{"extra_specs": {}}', False),
])
def test_the_prefilter_lets_every_spelling_through(text, expected):
    assert may_hold_legacy_keys(text) is expected
    # Whatever it lets through or not, it never hides a legacy key.
    holds = any(key in NEW_NAMES for key in json.loads(text)['extra_specs'])
    assert not holds or may_hold_legacy_keys(text)


def _renamed_by_full_parse(text):
    """What parsing the whole spec gives: the renamed text, None when
    there is nothing to rename, or why it cannot be done."""
    try:
        document = RequestSpecDocument(text)
    except MalformedSpec:
        return 'malformed'
    extra_specs = document.flavor.get('extra_specs', {})
    try:
        migrated = migrated_extra_specs(extra_specs)
    except ConflictingValues:
        return 'conflict'
    if migrated is None:
        return None
    return document.with_extra_specs(migrated).applied_to(text)


def _renamed_by_spec_keys(keys, text):
    try:
        found = keys.rewrite(text)
    except MalformedSpec:
        return 'malformed'
    except ConflictingValues:
        return 'conflict'
    return None if found is None else found.patch.applied_to(text)


def test_spec_rewrite_agrees_with_the_full_parse(nova_api, cloud):
    """The quick path (embedded flavor text, remembered rewrites, narrow
    patches) gives what parsing each spec in full gives, on specs Nova
    wrote and on the same specs damaged one character at a time."""
    specs = nova_api.specs()
    keys = SpecKeys()
    rewritten = 0
    for instance_uuid in cloud.with_legacy_keys + cloud.modern:
        text = specs[instance_uuid]
        quick = _renamed_by_spec_keys(keys, text)
        assert quick == _renamed_by_full_parse(text)
        if instance_uuid in cloud.with_legacy_keys:
            assert len(keys.rewrite(text).patch.text) < 60
        for damaged in _mutations(text):
            quick = _renamed_by_spec_keys(keys, damaged)
            assert quick == _renamed_by_full_parse(damaged), damaged
            rewritten += type(quick) is str and quick not in (
                'malformed', 'conflict')
    assert rewritten > 1000


def test_dry_run_lists_per_flavor_and_changes_nothing(nova_api, cloud,
                                                     run_tool, state_dir):
    before = snapshot(nova_api, cloud)

    status, output = run_tool('--migrate-keys')

    assert status == 0, output
    assert 'Mode: DRY RUN' in output
    assert summary(output) == (13, 7, 0)
    assert places(output) == {
        'Flavors': (3, 2, 0), 'Request specs': (5, 3, 0),
        'cell0': (1, 0, 0), 'cell1': (4, 2, 0)}
    assert ('Flavor flavor-legacy (flavorid legacy): minimum_cpu -> '
            'xloud:minimum_cpu, minimum_memory -> xloud:minimum_memory'
            in output)
    assert ('Flavor flavor-both (flavorid both): minimum_cpu dropped '
            '(xloud:minimum_cpu has the same value), minimum_memory -> '
            'xloud:minimum_memory' in output)
    assert 'flavorid modern' not in output
    assert 'RequestSpec ' not in output
    assert output.rstrip().endswith('--migrate-keys --run')
    assert snapshot(nova_api, cloud) == before
    assert backups(state_dir) == []

    status, output = run_tool('--migrate-keys', '--verbose')
    assert status == 0
    for instance_uuid in cloud.with_legacy_keys:
        assert f'RequestSpec {instance_uuid}: ' in output
    [resized] = cloud.resized
    assert (f'Instance {resized} in cell cell1 ({cloud.cell1.mapping.uuid})'
            f': cur: minimum_cpu -> xloud:minimum_cpu; old: minimum_cpu -> '
            f'xloud:minimum_cpu, minimum_memory -> xloud:minimum_memory; '
            f'new: minimum_cpu -> xloud:minimum_cpu' in output)
    [failed] = cloud.failed
    assert f'Instance {failed} in cell cell0 (' in output
    [leftover] = cloud.leftover
    assert f'Skipping {leftover}: no instance mapping' in output
    assert snapshot(nova_api, cloud) == before


def test_run_renames_every_copy_and_nothing_else(nova_api, cloud, run_tool,
                                                state_dir):
    before = snapshot(nova_api, cloud)

    status, output = run_tool('--migrate-keys', '--run')

    assert status == 0, output
    assert summary(output) == (13, 7, 0)
    after = snapshot(nova_api, cloud)

    # The flavors: legacy rows renamed in place (same id, value and
    # created_at, so Nova lists the specs in the same order), a legacy row
    # whose namespaced twin has the same value deleted, nothing else.
    old_rows = {row[0]: row for row in before['flavor rows']}
    new_rows = {row[0]: row for row in after['flavor rows']}
    both_cpu = [row[0] for row in before['flavor rows']
                if row[2] == 'minimum_cpu' and row[3] == '2']
    assert set(old_rows) - set(new_rows) == set(both_cpu)
    assert set(new_rows) <= set(old_rows)
    for row_id, new in new_rows.items():
        old = old_rows[row_id]
        if old[2] in NEW_NAMES:
            assert new[:2] == old[:2] and new[3:5] == old[3:5]
            assert new[2] == NEW_NAMES[old[2]]
            assert new[5] is not None
        else:
            assert new == old
    assert_nova_reads_migrated(nova_api, cloud)

    # The embedded copies: each is, byte for byte, Nova's serialisation of
    # the original document with only the keys renamed.
    for instance_uuid, text in before['request specs'].items():
        rewritten = after['request specs'][instance_uuid]
        if instance_uuid not in cloud.with_legacy_keys:
            assert rewritten == text
            continue
        expected = json.loads(text)
        data = expected['nova_object.data']['flavor']['nova_object.data']
        data['extra_specs'] = renamed_in_place(data['extra_specs'])
        assert rewritten == json.dumps(expected)
    for cell in ('cell0', 'cell1'):
        for instance_uuid, text in before[cell].items():
            rewritten = after[cell][instance_uuid]
            if instance_uuid not in cloud.with_legacy_keys:
                assert rewritten == text
                continue
            expected = json.loads(text)
            for envelope in expected.values():
                if envelope is not None:
                    data = envelope['nova_object.data']
                    data['extra_specs'] = renamed_in_place(
                        data['extra_specs'])
            assert rewritten == json.dumps(expected)
            assert rewritten != text

    # The copies still match their flavors as the sync sees them.
    status, output = run_tool('--verify')
    assert status == 0, output

    # Idempotent: a second run finds nothing and writes no backup.
    status, output = run_tool('--migrate-keys', '--run')
    assert status == 0
    assert summary(output) == (0, 20, 0)
    assert snapshot(nova_api, cloud) == after
    assert len(backups(state_dir)) == 1


def test_the_aggregate_filter_accepts_migrated_request_specs(nova_api, cloud,
                                                           run_tool):
    """Why the migration exists, with Nova's own filter: a host in the
    aggregate the flavor asks for is refused while the RequestSpec holds
    the unscoped legacy keys, and accepted once they are namespaced."""
    from nova.scheduler.filters import aggregate_instance_extra_specs
    from nova.tests.unit.scheduler import fakes

    host = fakes.FakeHostState('compute1', 'node1', {'aggregates': [
        objects.Aggregate(id=1, name='ssd',
                          metadata={'storage_type': 'ssd'})]})
    scheduler_filter = (
        aggregate_instance_extra_specs.AggregateInstanceExtraSpecsFilter())
    [instance_uuid, _] = cloud.legacy
    assert not scheduler_filter.host_passes(host,
                                            nova_api.load(instance_uuid))

    run_tool('--migrate-keys', '--run')

    assert scheduler_filter.host_passes(host, nova_api.load(instance_uuid))
    host.aggregates[0].metadata = {'storage_type': 'hdd'}
    assert not scheduler_filter.host_passes(host,
                                            nova_api.load(instance_uuid))


def test_nova_writes_the_same_bytes_as_the_migration(nova_api, cloud,
                                                     run_tool):
    """Nova re-saving what the migration wrote leaves it byte for byte.

    Rows Nova has loaded and saved once are in the form Nova keeps them
    in (a first save only adds change-tracking fields). Migrated from
    that form, Nova saving the loaded objects again changes nothing but
    the order of its change lists, which Nova itself does not keep: the
    migration writes what Nova's own serialisation writes.
    """
    def resave_all():
        for instance_uuid in cloud.instances:
            instance = cell_of(cloud, instance_uuid).load(instance_uuid)
            instance.flavor = instance.flavor
            instance.save()
            spec = nova_api.load(instance_uuid)
            spec.flavor = spec.flavor
            spec.save()

    resave_all()
    resave_all()
    settled = snapshot(nova_api, cloud)
    status, output = run_tool('--migrate-keys', '--run')
    assert status == 0, output
    migrated = snapshot(nova_api, cloud)
    for instance_uuid in cloud.with_legacy_keys:
        assert (migrated['request specs'][instance_uuid] !=
                settled['request specs'][instance_uuid])

    resave_all()

    assert (as_nova_writes_it(snapshot(nova_api, cloud)) ==
            as_nova_writes_it(migrated))
    assert_nova_reads_migrated(nova_api, cloud)


def test_flavor_changed_between_scan_and_write_is_left_alone(
        nova_api, cloud, run_tool, monkeypatch):
    """What the operator sets while the backup is being written wins."""
    write = key_migration._write

    def operator_acts_then_write(*args, **kwargs):
        nova_api.set_extra_specs('both', minimum_cpu='3')
        return write(*args, **kwargs)

    monkeypatch.setattr(key_migration, '_write', operator_acts_then_write)

    status, output = run_tool('--migrate-keys', '--run')

    assert status == 0, output
    assert places(output)['Flavors'] == (2, 3, 0)
    assert re.search(r'\[WARNING\] Flavor flavor-both \(flavorid both\) '
                     r'changed during the migration; left as it is now',
                     output)
    assert objects.Flavor.get_by_flavor_id(
        nova_api.context, 'both').extra_specs == dict(
        scenarios.BOTH_SPECS, minimum_cpu='3')
    monkeypatch.undo()
    status, output = run_tool('--migrate-keys')
    assert status == 1
    assert "minimum_cpu='3' but xloud:minimum_cpu='2'" in output


def test_verify_exit_status(nova_api, cloud, run_tool):
    before = snapshot(nova_api, cloud)

    status, output = run_tool('--migrate-keys', '--verify')
    assert status == 1
    assert output.splitlines() == [output.strip()]
    assert summary(output) == (13, 7, 0)
    assert snapshot(nova_api, cloud) == before

    run_tool('--migrate-keys', '--run')
    status, output = run_tool('--migrate-keys', '--verify')
    assert status == 0
    assert summary(output) == (0, 20, 0)

    # A legacy key set again afterwards (say, by an operator following
    # old instructions) is found.
    nova_api.set_extra_specs('plain', minimum_memory='256')
    status, output = run_tool('--migrate-keys', '--verify')
    assert status == 1
    assert summary(output) == (1, 19, 0)


def test_conflicting_values_refuse_only_that_flavor(nova_api, cloud,
                                                    run_tool):
    nova_api.create_flavor('conflict', extra_specs={
        'minimum_cpu': '1', 'xloud:minimum_cpu': '2',
        'minimum_memory': '256'})
    conflicting = nova_api.boot('conflict', cell=cloud.cell1)
    before = snapshot(nova_api, cloud)
    conflict_rows = [row for row in before['flavor rows']
                     if row[1] == nova_api.flavor_id('conflict')]

    status, output = run_tool('--migrate-keys', '--run')

    assert status == 1
    assert summary(output) == (13, 7, 3)
    assert re.search(
        r"\[ERROR\] Flavor flavor-conflict \(flavorid conflict\): "
        r"minimum_cpu='1' but xloud:minimum_cpu='2'; left untouched. Keep "
        r"the right value under one name only \(openstack flavor unset "
        r"--property KEY conflict\) and run again", output)
    assert re.search(
        rf"\[ERROR\] RequestSpec {conflicting} \(id \d+\): its flavor has "
        rf"minimum_cpu='1' but xloud:minimum_cpu='2'; left untouched",
        output)
    assert re.search(
        rf"\[ERROR\] Instance {conflicting} in cell cell1 \(\S+\): its "
        rf"flavor \(cur\) has minimum_cpu='1' but xloud:minimum_cpu='2'; "
        rf"left untouched", output)
    after = snapshot(nova_api, cloud)
    assert [row for row in after['flavor rows']
            if row[1] == nova_api.flavor_id('conflict')] == conflict_rows
    assert (after['request specs'][conflicting] ==
            before['request specs'][conflicting])
    assert after['cell1'][conflicting] == before['cell1'][conflicting]
    assert_nova_reads_migrated(nova_api, cloud)

    status, output = run_tool('--migrate-keys', '--verify')
    assert status == 1
    assert summary(output) == (0, 20, 3)

    # The way out the doc gives: keep one value on the flavor, bring the
    # RequestSpec in line with it (the sync), migrate again. The
    # instance's own copy changes only when it is resized.
    nova_api.set_extra_specs('conflict', minimum_cpu=None)
    status, output = run_tool('--run', '--instance', conflicting)
    assert status == 0, output
    status, output = run_tool('--migrate-keys', '--run')
    assert status == 1
    assert summary(output) == (2, 20, 1)
    assert objects.Flavor.get_by_flavor_id(
        nova_api.context, 'conflict').extra_specs == {
        'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '256'}
    assert nova_api.load(conflicting).flavor.extra_specs == {
        'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '256'}


def test_restore_is_byte_identical(nova_api, cloud, run_tool, state_dir):
    before = snapshot(nova_api, cloud)
    run_tool('--migrate-keys', '--run')
    after = snapshot(nova_api, cloud)
    [path] = backups(state_dir)
    assert os.path.basename(path).startswith('minimum_keys_')

    status, output = run_tool('--restore', path)
    assert status == 0
    assert 'Mode: DRY RUN' in output
    assert restore_summary(output) == (13, 0, 0)
    assert snapshot(nova_api, cloud) == after

    status, output = run_tool('--restore', path, '--run')
    assert status == 0, output
    assert restore_summary(output) == (13, 0, 0)
    assert places(output) == {
        'Flavors': (3, 0, 0), 'Request specs': (5, 0, 0),
        'cell0': (1, 0, 0), 'cell1': (4, 0, 0)}
    # Flavor rows come back with their ids and timestamps too.
    assert snapshot(nova_api, cloud) == before
    assert objects.Flavor.get_by_flavor_id(
        nova_api.context, 'legacy').extra_specs == scenarios.LEGACY_SPECS
    for instance_uuid in cloud.instances:
        nova_api.load(instance_uuid)
        cell_of(cloud, instance_uuid).load(instance_uuid)

    status, output = run_tool('--restore', path, '--run', '--verbose')
    assert status == 0
    assert restore_summary(output) == (0, 13, 0)
    assert output.count('already as in the backup') == 13
    assert snapshot(nova_api, cloud) == before

    # Migrating again from the restored state gives the same result.
    run_tool('--migrate-keys', '--run')
    migrated_again = snapshot(nova_api, cloud)
    assert migrated_again['request specs'] == after['request specs']
    assert migrated_again['cell1'] == after['cell1']


def test_restore_leaves_what_changed_after_the_migration(nova_api, cloud,
                                                         run_tool,
                                                         state_dir):
    before = snapshot(nova_api, cloud)
    run_tool('--migrate-keys', '--run')
    [path] = backups(state_dir)
    resized, archived = cloud.legacy
    nova_api.resize_unconfirmed(cloud.cell1, resized, 'plain')
    nova_api.archive(archived)
    cloud.cell1.delete_instance(archived)
    nova_api.set_extra_specs('legacy', xloud__minimum_cpu='3')
    nova_api.delete_flavor('bigger')
    changed = snapshot(nova_api, cloud)

    status, output = run_tool('--restore', path, '--run', '--verbose')

    assert status == 0, output
    assert places(output) == {
        'Flavors': (1, 2, 0), 'Request specs': (3, 2, 0),
        'cell0': (1, 0, 0), 'cell1': (2, 2, 0)}
    assert re.search(r'\[WARNING\] Skipping flavor flavor-legacy \(flavorid '
                     r'legacy\): its minimum keys changed after the '
                     r'migration', output)
    assert 'Skipping flavor flavor-bigger (flavorid bigger): it no longer ' \
           'exists' in output
    assert re.search(rf'\[WARNING\] Skipping {resized}: its RequestSpec '
                     r'changed after the migration', output)
    assert re.search(rf'\[WARNING\] Skipping instance {resized}: its flavor '
                     r'changed after the migration', output)
    assert f'Skipping {archived}: instance no longer exists' in output
    assert f'Skipping instance {archived}: it no longer exists' in output
    restored = snapshot(nova_api, cloud)
    assert restored['request specs'][resized] == \
        changed['request specs'][resized]
    assert restored['cell1'][resized] == changed['cell1'][resized]
    assert objects.Flavor.get_by_flavor_id(
        nova_api.context, 'legacy').extra_specs['xloud:minimum_cpu'] == '3'
    for instance_uuid in cloud.both + cloud.failed:
        assert (restored['request specs'][instance_uuid] ==
                before['request specs'][instance_uuid])
        cell = 'cell0' if instance_uuid in cloud.failed else 'cell1'
        assert restored[cell][instance_uuid] == before[cell][instance_uuid]


def test_no_backup_and_progress(nova_api, cloud, run_tool, state_dir,
                                monkeypatch):
    monkeypatch.setattr(sync, 'PROGRESS_EVERY', 3)

    status, output = run_tool('--migrate-keys', '--run', '--no-backup',
                              '--verbose', '--batch-size', '2')

    assert status == 0, output
    assert summary(output) == (13, 7, 0)
    assert backups(state_dir) == []
    assert not os.listdir(os.path.join(state_dir, 'backups'))
    assert 'Progress: 6/8 request specs checked' in output
    assert re.search(r'Progress: 6/6 instances in cell cell1 \(\S+\) '
                     r'checked', output)
    written = [int(count) for count in
               re.findall(r'Progress: (\d+)/13 records written', output)]
    # Flavors (3) in two batches, specs (5) in three, cells 1 and 4.
    assert written == [2, 3, 5, 7, 8, 9, 11, 13]
    assert_nova_reads_migrated(nova_api, cloud)


def test_rows_not_written_like_nova(nova_api, cloud, run_tool):
    """Escaped keys are found; broken rows holding a legacy key are
    reported; broken rows without one are no business of the migration."""
    escaped, broken, empty = cloud.legacy + cloud.plain
    cell = cloud.cell1
    original = cell.flavors()[escaped]
    cell.set_raw_flavor(escaped, original.replace(
        '"minimum_cpu"', '"\\u006dinimum_cpu"').replace(
        '"minimum_memory"', '"minimum\\u005fmemory"'))
    cell.set_raw_flavor(broken, original[:-1])
    cell.set_raw_flavor(empty, None)
    bad_spec = nova_api.insert_raw_spec(
        '{"nova_object.name": "RequestSpec", "minimum_cpu": ')
    unrelated_bad_spec = nova_api.insert_raw_spec('{"not": "a spec"')
    before = snapshot(nova_api, cloud)

    status, output = run_tool('--migrate-keys', '--run')

    assert status == 1
    assert places(output)['cell1'] == (3, 2, 1)
    assert places(output)['Request specs'] == (5, 4, 1)
    assert re.search(rf'\[ERROR\] Instance {broken} in cell cell1 \(\S+\) '
                     rf'\(instance_extra id \d+\): flavor is not valid JSON',
                     output)
    assert re.search(rf'\[ERROR\] RequestSpec {bad_spec} \(id \d+\): spec is '
                     rf'not valid JSON', output)
    assert unrelated_bad_spec not in output
    after = snapshot(nova_api, cloud)
    assert after['cell1'][broken] == before['cell1'][broken]
    assert after['cell1'][empty] is None
    assert after['request specs'][bad_spec] == before['request specs'][
        bad_spec]
    # The escaped key is renamed, and the row written as Nova writes it:
    # what migrating the row as Nova wrote it gives.
    expected = json.loads(original)
    data = expected['cur']['nova_object.data']
    data['extra_specs'] = renamed_in_place(data['extra_specs'])
    assert after['cell1'][escaped] == json.dumps(expected)
    assert cell.load(escaped).flavor.extra_specs == scenarios.MIGRATED_SPECS


def test_templated_cell_connection(nova_api, cell_urls, run_tool, tmp_path):
    """A cell mapping may hold a template Nova fills in from [database]."""
    url = cell_urls[1]
    if nova_api.backend == 'sqlite':
        template = 'sqlite:////{path}'
    else:
        template = ('{scheme}://{username}@{hostname}:{port}/{path}'
                    '?{query}')
    cell = nova_api.add_cell('cell1', url, database_connection=template)
    nova_api.create_flavor('legacy', extra_specs=dict(scenarios.LEGACY_SPECS))
    instance_uuid = nova_api.boot('legacy', cell=cell)
    config = tmp_path / 'nova.conf'
    config.write_text(f'[database]\nconnection = {url}\n'
                      f'[api_database]\nconnection = {nova_api.url}\n')

    status, output = run_tool('--migrate-keys', '--run', '--config-file',
                              str(config))

    assert status == 0, output
    assert places(output)['cell1'] == (1, 0, 0)
    assert cell.load(instance_uuid).flavor.extra_specs == \
        scenarios.MIGRATED_SPECS

    config.write_text(f'[api_database]\nconnection = {nova_api.url}\n')
    status, output = run_tool('--migrate-keys', '--config-file', str(config))
    assert status == 2
    assert re.search(r'\[ERROR\] cell cell1 \(\S+\): its database_connection '
                     r'is a template, filled in from \[database\] '
                     r'connection: \S+ has no \[database\] connection',
                     output)


def test_unreachable_cell_stops_the_run_before_any_write(nova_api, cloud,
                                                         run_tool, state_dir,
                                                         tmp_path):
    nova_api.add_cell('cell2', f'sqlite:///{tmp_path}/missing/cell2.db')
    before = snapshot(nova_api, cloud)

    status, output = run_tool('--migrate-keys', '--run')

    assert status == 2
    assert re.search(r'\[ERROR\] cell cell2 \(\S+\): cannot read its '
                     r'database: .*; nothing was changed', output)
    assert 'Summary' not in output
    assert snapshot(nova_api, cloud) == before
    assert not os.listdir(os.path.join(state_dir, 'backups'))


def test_both_kinds_of_backup_are_listed_and_told_apart(nova_api, cloud,
                                                        run_tool, state_dir):
    nova_api.set_extra_specs('plain', hw__cpu_policy='dedicated')
    run_tool('--run')
    run_tool('--migrate-keys', '--run')
    sync_backup, migration_backup = sorted(
        backups(state_dir), key=lambda path: 'minimum_keys_' in path)

    status, output = run_tool('--list-backups')

    assert status == 0
    assert re.search(r'request_specs_\S+\.jsonl - 1 records', output)
    assert re.search(r'minimum_keys_\S+\.jsonl - 13 records', output)
    with backup.BackupReader(sync_backup) as reader:
        assert reader.kind == backup.FORMAT
    with backup.BackupReader(migration_backup) as reader:
        assert reader.kind == backup.KEY_MIGRATION_FORMAT
        reader.verify()
        kinds = [type(record).__name__ for record in reader]
    assert kinds == (['FlavorKeysRecord'] * 3 + ['BackupRecord'] * 5 +
                     ['InstanceFlavorRecord'] * 5)


def _rewrite_first_record(path: str, change) -> None:
    """Change the first record (a flavor's) and seal the file again, as a
    forger would: only checking each record can tell."""
    with open(path, 'rb') as backup_file:
        lines = backup_file.readlines()
    record = json.loads(lines[1])
    assert record['table'] == 'flavor_extra_specs'
    change(record)
    lines[1] = (json.dumps(record) + '\n').encode()
    body = b''.join(lines[:-1])
    trailer = {'records': len(lines) - 2,
               'sha256': hashlib.sha256(body).hexdigest()}
    with open(path, 'wb') as backup_file:
        backup_file.write(body + (json.dumps(trailer) + '\n').encode())


@pytest.mark.parametrize('change', [
    lambda record: record.update(renames=[[10 ** 6, None]]),
    lambda record: record.update(rows=[[1, 'minimum_cpu']]),
    lambda record: record.update(table='instances'),
    lambda record: record.update(flavorid=7),
])
def test_sealed_migration_backup_with_a_bad_record_is_refused(
        nova_api, cloud, run_tool, state_dir, change):
    run_tool('--migrate-keys', '--run')
    [path] = backups(state_dir)
    after = snapshot(nova_api, cloud)
    _rewrite_first_record(path, change)

    status, output = run_tool('--restore', path, '--run')

    assert status == 2
    assert re.search(r'line 2 is not a backup record', output)
    assert snapshot(nova_api, cloud) == after
