"""The sync command against a real nova_api database (SQLite, MariaDB)."""

import json
import os
import re
import stat

from nova import objects

from tests.flavor_sync import scenario as scenarios

SUMMARY = re.compile(r'Summary: Updated=(\d+), Skipped=(\d+), Errors=(\d+)')
LOG_LINE = re.compile(
    r'^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[(INFO|WARNING|ERROR)\] ')


def summary(output: str) -> tuple[int, int, int]:
    found = SUMMARY.findall(output)
    assert len(found) == 1, output
    return tuple(int(count) for count in found[0])


def backups(state_dir: str) -> list[str]:
    directory = os.path.join(state_dir, 'backups')
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name)
                  for name in os.listdir(directory))


def assert_loads_in_sync(nova_api, instance_uuids):
    """Nova's own loader reads the row and sees the current flavor."""
    for instance_uuid in instance_uuids:
        spec = nova_api.load(instance_uuid)
        current = objects.Flavor.get_by_flavor_id(
            nova_api.context, spec.flavor.flavorid)
        assert spec.flavor.extra_specs == current.extra_specs
        for field in ('vcpus', 'memory_mb', 'root_gb', 'ephemeral_gb',
                      'swap'):
            assert getattr(spec.flavor, field) == getattr(current, field)


def test_dry_run_changes_nothing(nova_api, run_tool, state_dir):
    scenarios.build(nova_api)
    before = nova_api.checksums()

    status, output = run_tool('--verbose')

    assert status == 0
    assert 'Mode: DRY RUN' in output
    assert summary(output) == (5, 2, 0)
    assert nova_api.checksums() == before
    assert backups(state_dir) == []
    assert "Changed: 'aggregate_instance_extra_specs:storage_type': " \
           "'ssd' -> 'ceph'" in output
    assert "Added: {'minimum_memory': '512'}" in output
    assert "Removed: {'minimum_cpu': '1'}" in output
    assert 'Fields: vcpus 2 -> 4, memory_mb 2048 -> 4096' in output
    assert '>>> To apply changes, run: ' in output
    assert output.rstrip().endswith('--verbose --run')
    assert all(LOG_LINE.match(line) for line in output.splitlines())


def test_run_fixes_exactly_the_stale_ones(nova_api, run_tool, state_dir):
    scenario = scenarios.build(nova_api)
    before = nova_api.specs()

    status, output = run_tool('--run')

    assert status == 0, output
    assert 'Mode: LIVE RUN' in output
    assert summary(output) == (5, 2, 0)
    after = nova_api.specs()
    for instance_uuid in scenario.plain:
        assert after[instance_uuid] == before[instance_uuid]
    for instance_uuid in scenario.stale:
        assert after[instance_uuid] != before[instance_uuid]
        # Only the embedded flavor's data changed, envelope and all.
        assert (scenarios.without_flavor(after[instance_uuid]) ==
                scenarios.without_flavor(before[instance_uuid]))
    assert_loads_in_sync(nova_api, scenario.stale + scenario.plain)
    assert scenarios.embedded_flavor(after[scenario.sized[0]])['vcpus'] == 4

    status, output = run_tool('--run')
    assert status == 0
    assert summary(output) == (0, 7, 0)
    assert nova_api.specs() == after
    assert len(backups(state_dir)) == 1


def test_backup_is_private_and_holds_the_originals(nova_api, run_tool,
                                                  state_dir):
    scenario = scenarios.build(nova_api)
    before = nova_api.specs()

    run_tool('--run')

    [path] = backups(state_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(
        os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path) as backup:
        lines = [json.loads(line) for line in backup]
    records = {line['instance_uuid']: line['spec'] for line in lines[1:-1]}
    assert records == {uuid_: before[uuid_] for uuid_ in scenario.stale}
    assert lines[-1]['records'] == 5


def test_no_backup_leaves_no_file(nova_api, run_tool, state_dir):
    scenario = scenarios.build(nova_api)

    status, output = run_tool('--run', '--no-backup')

    assert status == 0
    assert summary(output) == (5, 2, 0)
    assert backups(state_dir) == []
    assert_loads_in_sync(nova_api, scenario.stale)


def test_verify_exit_status(nova_api, run_tool):
    scenarios.build(nova_api)
    before = nova_api.checksums()

    status, output = run_tool('--verify')
    assert status == 1
    assert output.splitlines() == [output.strip()]
    assert summary(output) == (5, 2, 0)
    assert nova_api.checksums() == before

    status, output = run_tool('--verify', '--verbose')
    assert status == 1
    assert output.count('Mismatch: ') == 5

    run_tool('--run')
    status, output = run_tool('--verify')
    assert status == 0
    assert summary(output) == (0, 7, 0)


def test_filters(nova_api, run_tool):
    scenario = scenarios.build(nova_api)
    before = nova_api.specs()

    status, output = run_tool('--run', '--flavor', 'flavor-storage')
    assert status == 0
    assert summary(output) == (3, 0, 0)
    after = nova_api.specs()
    changed = {uuid_ for uuid_ in before if before[uuid_] != after[uuid_]}
    assert changed == set(scenario.storage)

    status, output = run_tool('--run', '--instance', scenario.sized[1],
                              '--instance', scenario.plain[0])
    assert status == 0
    assert summary(output) == (1, 1, 0)
    assert nova_api.specs()[scenario.sized[0]] == before[scenario.sized[0]]
    assert_loads_in_sync(nova_api, [scenario.sized[1]])

    status, output = run_tool('--verify', '--flavor', 'sized')
    assert status == 1
    assert summary(output) == (1, 1, 0)


def test_malformed_rows_reported_and_left_untouched(nova_api, run_tool):
    scenario = scenarios.build(nova_api)
    nova_api.create_flavor('doomed', extra_specs={'minimum_cpu': '1'})
    orphaned_flavor = nova_api.boot('doomed')
    nova_api.delete_flavor('doomed')
    broken = [
        nova_api.insert_raw_spec('{"nova_object.name": "RequestSpec", '),
        nova_api.insert_raw_spec(
            '{"nova_object.name": "Instance", "nova_object.data": {}}'),
        nova_api.insert_raw_spec(
            '{"nova_object.name": "RequestSpec", "nova_object.data": '
            '{"flavor": null}}'),
        orphaned_flavor,
    ]
    before = nova_api.specs()

    status, output = run_tool('--run')

    assert status == 1
    assert summary(output) == (5, 2, 4)
    after = nova_api.specs()
    for instance_uuid in broken:
        assert after[instance_uuid] == before[instance_uuid]
        assert re.search(rf'\[ERROR\] RequestSpec {instance_uuid} \(id \d+\)'
                         r': .*; left untouched', output)
    assert 'spec is not valid JSON' in output
    assert "is a 'Instance' object, not RequestSpec" in output
    assert 'flavor doomed (flavor-doomed) no longer exists' in output
    assert_loads_in_sync(nova_api, scenario.stale)


def test_unmapped_specs_are_skipped(nova_api, run_tool):
    nova_api.create_flavor('storage', extra_specs={'minimum_cpu': '1'})
    mapped = nova_api.boot('storage')
    unmapped = nova_api.boot('storage', mapped=False)
    nova_api.set_extra_specs('storage', minimum_cpu='2')
    before = nova_api.specs()

    status, output = run_tool('--run', '--verbose')

    assert status == 0
    assert summary(output) == (1, 1, 0)
    assert f'Skipping {unmapped}: no instance mapping' in output
    assert nova_api.specs()[unmapped] == before[unmapped]
    assert_loads_in_sync(nova_api, [mapped])


def test_progress_every_hundred_specs(nova_api, run_tool):
    nova_api.create_flavor('plain')
    for _ in range(101):
        nova_api.boot('plain')
    nova_api.set_extra_specs('plain', minimum_cpu='1')

    status, output = run_tool('--run', '--verbose', '--batch-size', '40')

    assert status == 0
    assert summary(output) == (101, 0, 0)
    assert 'Progress: 100/101 request specs checked' in output
    assert 'Progress: 101/101 request specs checked' not in output
    assert 'Progress: 80/101 request specs written' in output
    assert 'Progress: 101/101 request specs written' in output


def test_log_file(nova_api, run_tool, state_dir):
    scenarios.build(nova_api)
    run_tool('--verify')
    log_file = os.path.join(state_dir, 'flavor-sync.log')
    with open(log_file) as log:
        lines = log.read().splitlines()
    assert all(LOG_LINE.match(line) for line in lines)
    assert 'Mode: VERIFY' in lines[1]
    assert SUMMARY.search(lines[-1])


def test_list_backups(nova_api, run_tool, state_dir):
    scenario = scenarios.build(nova_api)
    run_tool('--run', '--flavor', 'storage')
    run_tool('--run', '--instance', scenario.sized[0])

    status, output = run_tool('--list-backups')

    assert status == 0
    assert '=== Available Backups ===' in output
    listed = re.findall(r'(request_specs_\S+\.jsonl) - (\d+) records - (\S+)',
                        output)
    assert [name for name, _, _ in listed] == [
        os.path.basename(path) for path in reversed(backups(state_dir))]
    assert sorted(int(count) for _, count, _ in listed) == [1, 3]
