"""The command as a separate process: killed mid-run, raced by Nova.

The process is stopped (SIGSTOP, by the documented test hook) right after a
given write batch has committed, which makes "between batches" a known
point rather than a timing guess.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from nova import objects

from nova_ext.flavor_sync import backup
from nova_ext.flavor_sync.sync import STOP_AFTER_BATCH_ENV
from tests.flavor_sync import scenario as scenarios
from tests.flavor_sync.test_sync import assert_loads_in_sync, backups

WORKTREE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def start(nova_api, state_dir, *args, stop_after=None):
    env = dict(os.environ, PYTHONPATH=WORKTREE)
    env.pop(STOP_AFTER_BATCH_ENV, None)
    if stop_after is not None:
        env[STOP_AFTER_BATCH_ENV] = str(stop_after)
    return subprocess.Popen(
        [sys.executable, '-m', 'nova_ext.flavor_sync.cli',
         '--connection', nova_api.url, '--state-dir', state_dir, *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_stopped(process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(process.pid, os.WNOHANG | os.WUNTRACED)
        if pid:
            if os.WIFSTOPPED(status):
                return
            pytest.fail(f'the command ended before the stop point:\n'
                        f'{process.stdout.read()}')
        time.sleep(0.05)
    process.kill()
    pytest.fail('the command never reached the stop point')


def boot_stale(nova_api, count):
    nova_api.create_flavor('storage', extra_specs=dict(
        scenarios.STORAGE_SPECS))
    nova_api.create_flavor('plain')
    stale = [nova_api.boot('storage') for _ in range(count)]
    fresh = [nova_api.boot('plain') for _ in range(2)]
    nova_api.set_extra_specs(
        'storage', aggregate_instance_extra_specs__storage_type='ceph')
    return stale, fresh


def test_kill_9_between_batches_loses_nothing(nova_api, run_tool,
                                              state_dir):
    stale, fresh = boot_stale(nova_api, 11)
    before = nova_api.specs()

    process = start(nova_api, state_dir, '--run', '--batch-size', '3',
                    stop_after=2)
    wait_until_stopped(process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    output = process.stdout.read()
    assert 'Stopping after batch 2' in output
    assert 'Summary' not in output

    # The backup of every row the run was going to change is on disk,
    # complete and intact.
    [path] = backups(state_dir)
    with backup.BackupReader(path) as reader:
        reader.verify()
        assert {record.instance_uuid: record.spec for record in reader} == {
            uuid_: before[uuid_] for uuid_ in stale}

    # Every row is either exactly as it was or wholly rewritten.
    killed = nova_api.specs()
    rewritten = [uuid_ for uuid_ in stale if killed[uuid_] != before[uuid_]]
    assert len(rewritten) == 6
    assert rewritten == stale[:6]
    for instance_uuid in rewritten:
        assert (scenarios.without_flavor(killed[instance_uuid]) ==
                scenarios.without_flavor(before[instance_uuid]))
    assert_loads_in_sync(nova_api, rewritten)
    for instance_uuid in fresh:
        assert killed[instance_uuid] == before[instance_uuid]

    status, output = run_tool('--run')
    assert status == 0
    assert 'Summary: Updated=5, Skipped=8, Errors=0' in output
    assert_loads_in_sync(nova_api, stale + fresh)
    finished = nova_api.specs()
    for instance_uuid in rewritten:
        assert finished[instance_uuid] == killed[instance_uuid]

    status, output = run_tool('--run')
    assert 'Summary: Updated=0, Skipped=13, Errors=0' in output
    assert nova_api.specs() == finished

    # The first backup alone undoes everything, including the rows the
    # second run wrote.
    status, output = run_tool('--restore', path, '--run')
    assert status == 0
    assert 'Summary: Restored=11, Skipped=0, Errors=0' in output
    assert nova_api.specs() == before


def test_row_changed_by_nova_during_the_run_is_kept(nova_api, state_dir):
    stale, fresh = boot_stale(nova_api, 6)
    last = stale[-1]

    process = start(nova_api, state_dir, '--run', '--batch-size', '2',
                    stop_after=1)
    wait_until_stopped(process)
    try:
        nova_api.resize(last, 'plain')
        resized = nova_api.specs()[last]
    finally:
        process.send_signal(signal.SIGCONT)
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 0, output
    assert (f'[WARNING] RequestSpec {last} changed during the sync; left '
            f'as Nova wrote it') in output
    assert 'Summary: Updated=5, Skipped=3, Errors=0' in output
    assert nova_api.specs()[last] == resized
    assert nova_api.load(last).flavor.flavorid == 'plain'
    assert_loads_in_sync(nova_api, stale + fresh)


def boot_legacy(nova_api, cell, count):
    nova_api.create_flavor('legacy', extra_specs=dict(
        scenarios.LEGACY_SPECS))
    nova_api.create_flavor('plain')
    legacy = [nova_api.boot('legacy', cell=cell) for _ in range(count)]
    fresh = [nova_api.boot('plain', cell=cell) for _ in range(2)]
    return legacy, fresh


def test_key_migration_killed_between_batches_loses_nothing(
        nova_api, cells, run_tool, state_dir):
    _, cell = cells
    legacy, fresh = boot_legacy(nova_api, cell, 5)
    rows_before = nova_api.extra_spec_rows()
    specs_before = nova_api.specs()
    flavors_before = cell.flavors()

    # Batches of 2: the flavor, then the RequestSpecs (3 batches), then
    # the instances (3 batches). Killed after the second spec batch.
    process = start(nova_api, state_dir, '--migrate-keys', '--run',
                    '--batch-size', '2', stop_after=3)
    wait_until_stopped(process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    output = process.stdout.read()
    assert 'Stopping after batch 3' in output
    assert 'Summary' not in output

    # The backup of every row the run was going to change is on disk,
    # complete and intact.
    [path] = backups(state_dir)
    with backup.BackupReader(path) as reader:
        reader.verify()
        records = list(reader)
    assert len(records) == 11
    assert {record.instance_uuid: record.spec for record in records
            if isinstance(record, backup.BackupRecord)} == {
        uuid_: specs_before[uuid_] for uuid_ in legacy}
    assert {record.instance_uuid: record.flavor for record in records
            if isinstance(record, backup.InstanceFlavorRecord)} == {
        uuid_: flavors_before[uuid_] for uuid_ in legacy}

    # Every row is either exactly as it was or wholly rewritten: the
    # flavor and the first four RequestSpecs are migrated, nothing else.
    killed_specs = nova_api.specs()
    assert [uuid_ for uuid_ in legacy
            if killed_specs[uuid_] != specs_before[uuid_]] == legacy[:4]
    for instance_uuid in legacy[:4]:
        assert nova_api.load(instance_uuid).flavor.extra_specs == \
            scenarios.MIGRATED_SPECS
    assert cell.flavors() == flavors_before
    assert objects.Flavor.get_by_flavor_id(
        nova_api.context, 'legacy').extra_specs == scenarios.MIGRATED_SPECS

    status, output = run_tool('--migrate-keys', '--run')
    assert status == 0, output
    assert 'Summary: Updated=6, Skipped=10, Errors=0' in output
    for instance_uuid in legacy:
        assert nova_api.load(instance_uuid).flavor.extra_specs == \
            scenarios.MIGRATED_SPECS
        assert cell.load(instance_uuid).flavor.extra_specs == \
            scenarios.MIGRATED_SPECS
    finished = (nova_api.specs(), cell.flavors())
    assert {uuid_: finished[0][uuid_] for uuid_ in legacy[:4]} == {
        uuid_: killed_specs[uuid_] for uuid_ in legacy[:4]}

    status, output = run_tool('--migrate-keys', '--run')
    assert 'Summary: Updated=0, Skipped=16, Errors=0' in output
    assert (nova_api.specs(), cell.flavors()) == finished

    # The first backup alone undoes everything, including the rows the
    # second run wrote, flavor rows to the timestamp.
    status, output = run_tool('--restore', path, '--run')
    assert status == 0, output
    assert 'Summary: Restored=11, Skipped=0, Errors=0' in output
    assert nova_api.extra_spec_rows() == rows_before
    assert nova_api.specs() == specs_before
    assert cell.flavors() == flavors_before
    for instance_uuid in fresh:
        assert cell.flavors()[instance_uuid] == flavors_before[instance_uuid]


def test_instance_resized_during_the_key_migration_is_kept(
        nova_api, cells, state_dir, run_tool):
    _, cell = cells
    legacy, fresh = boot_legacy(nova_api, cell, 3)
    resized = legacy[-1]

    # Stopped after the flavor's batch: the scan is done, the copies not
    # yet written. Nova resizes an instance meanwhile.
    process = start(nova_api, state_dir, '--migrate-keys', '--run',
                    stop_after=1)
    wait_until_stopped(process)
    try:
        nova_api.resize_unconfirmed(cell, resized, 'plain')
        spec_written_by_nova = nova_api.specs()[resized]
        flavor_written_by_nova = cell.flavors()[resized]
    finally:
        process.send_signal(signal.SIGCONT)
    output, _ = process.communicate(timeout=120)

    assert process.returncode == 0, output
    assert (f'[WARNING] RequestSpec {resized} changed during the migration; '
            f'left as Nova wrote it') in output
    assert (f'[WARNING] Instance {resized} changed during the migration; '
            f'its flavor left as Nova wrote it') in output
    assert 'Summary: Updated=5, Skipped=7, Errors=0' in output
    assert nova_api.specs()[resized] == spec_written_by_nova
    assert cell.flavors()[resized] == flavor_written_by_nova

    # Nova kept the flavor it resized from, legacy keys and all, for a
    # revert: the next run finds that copy and migrates it.
    status, output = run_tool('--migrate-keys', '--run', '--verbose')
    assert status == 0, output
    assert 'Summary: Updated=1, Skipped=11, Errors=0' in output
    assert f'Instance {resized} in cell cell1 ' in output
    instance = cell.load(resized)
    assert instance.old_flavor.extra_specs == scenarios.MIGRATED_SPECS
    assert instance.flavor.flavorid == 'plain'
