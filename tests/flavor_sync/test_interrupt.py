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
