"""Restoring RequestSpecs from a backup, on SQLite and MariaDB."""

import hashlib
import json
import re

import pytest

from tests.flavor_sync import scenario as scenarios
from tests.flavor_sync.test_sync import backups

RESTORE_SUMMARY = re.compile(
    r'Summary: Restored=(\d+), Skipped=(\d+), Errors=(\d+)')


def restore_summary(output: str) -> tuple[int, int, int]:
    [found] = RESTORE_SUMMARY.findall(output)
    return tuple(int(count) for count in found)


def synced(nova_api, run_tool, state_dir):
    scenario = scenarios.build(nova_api)
    before = nova_api.specs()
    status, _ = run_tool('--run')
    assert status == 0
    [path] = backups(state_dir)
    return scenario, before, path


def test_restore_round_trip_is_byte_identical(nova_api, run_tool,
                                              state_dir):
    scenario, before, path = synced(nova_api, run_tool, state_dir)
    after_sync = nova_api.specs()

    status, output = run_tool('--restore', path)
    assert status == 0
    assert 'Mode: DRY RUN' in output
    assert 'Records in backup: 5' in output
    assert restore_summary(output) == (5, 0, 0)
    assert '>>> To apply restore, run: ' in output
    assert nova_api.specs() == after_sync

    status, output = run_tool('--restore', path, '--run')
    assert status == 0
    assert restore_summary(output) == (5, 0, 0)
    assert nova_api.specs() == before
    for instance_uuid in scenario.stale + scenario.plain:
        nova_api.load(instance_uuid)

    status, output = run_tool('--restore', path, '--run', '--verbose')
    assert status == 0
    assert restore_summary(output) == (0, 5, 0)
    assert output.count('already as in the backup') == 5
    assert nova_api.specs() == before


def test_restore_skips_deleted_and_changed_instances(nova_api, run_tool,
                                                     state_dir):
    scenario, before, path = synced(nova_api, run_tool, state_dir)
    archived, unmapped, resized, *restorable = scenario.stale
    nova_api.archive(archived)
    nova_api.unmap(unmapped)
    nova_api.resize(resized, 'plain')
    resized_spec = nova_api.specs()[resized]

    status, output = run_tool('--restore', path, '--run', '--verbose')

    assert status == 0
    assert restore_summary(output) == (2, 3, 0)
    specs = nova_api.specs()
    assert archived not in specs
    assert f'Skipping {archived}: instance no longer exists' in output
    assert f'Skipping {unmapped}: instance no longer exists' in output
    assert specs[unmapped] != before[unmapped]
    assert re.search(rf'\[WARNING\] Skipping {resized}: its RequestSpec '
                     r'changed after the sync', output)
    assert specs[resized] == resized_spec
    assert nova_api.load(resized).flavor.flavorid == 'plain'
    for instance_uuid in restorable:
        assert specs[instance_uuid] == before[instance_uuid]


def _tamper(path: str, old: bytes, new: bytes) -> None:
    with open(path, 'rb') as backup:
        content = backup.read()
    assert old in content
    with open(path, 'wb') as backup:
        backup.write(content.replace(old, new, 1))


def test_tampered_backup_is_refused(nova_api, run_tool, state_dir):
    _, _, path = synced(nova_api, run_tool, state_dir)
    after_sync = nova_api.specs()
    # Still valid JSON, still a plausible spec: only the checksum tells.
    _tamper(path, b'\\"ssd\\"', b'\\"hdd\\"')

    status, output = run_tool('--restore', path, '--run')

    assert status == 2
    assert 'checksum mismatch' in output
    assert 'refusing to use it' in output
    assert nova_api.specs() == after_sync


def test_truncated_or_foreign_backup_is_refused(nova_api, run_tool,
                                                state_dir, tmp_path):
    _, _, path = synced(nova_api, run_tool, state_dir)
    after_sync = nova_api.specs()
    with open(path, 'rb') as backup:
        lines = backup.readlines()
    truncated = tmp_path / 'truncated.jsonl'
    truncated.write_bytes(b''.join(lines[:-1]))
    foreign = tmp_path / 'foreign.json'
    foreign.write_text('{"timestamp": "x", "request_specs": []}\n')

    status, output = run_tool('--restore', str(truncated), '--run')
    assert status == 2
    assert 'checksum mismatch' in output

    status, output = run_tool('--restore', str(foreign), '--run')
    assert status == 2
    assert 'is not a flavor sync backup' in output

    status, output = run_tool('--restore', str(tmp_path / 'none'), '--run')
    assert status == 2
    assert 'cannot open backup' in output
    assert nova_api.specs() == after_sync


def _rewrite_last_record(path: str, change) -> None:
    """Change the last record and seal the file again, as a forger would."""
    with open(path, 'rb') as backup:
        lines = backup.readlines()
    record = json.loads(lines[-2])
    change(record)
    lines[-2] = (json.dumps(record) + '\n').encode()
    body = b''.join(lines[:-1])
    trailer = {'records': len(lines) - 2,
               'sha256': hashlib.sha256(body).hexdigest()}
    with open(path, 'wb') as backup:
        backup.write(body + (json.dumps(trailer) + '\n').encode())


@pytest.mark.parametrize('patch', [
    [10, 5, 'x'], [0, 10 ** 9, 'x'], [-1, 0, 'x'], ['0', 1, 'x'],
    [0, 1], [0, 1, None]])
def test_sealed_backup_with_a_bad_record_is_refused_whole(
        nova_api, run_tool, state_dir, patch):
    _, _, path = synced(nova_api, run_tool, state_dir)
    after_sync = nova_api.specs()
    _rewrite_last_record(path, lambda record: record.update(patch=patch))

    # One record per batch: checked only batch by batch, the first records
    # would be restored before the bad one is read.
    status, output = run_tool('--restore', path, '--run', '--batch-size', '1')

    assert status == 2
    assert re.search(r'line \d+ is not a backup record', output)
    assert nova_api.specs() == after_sync
