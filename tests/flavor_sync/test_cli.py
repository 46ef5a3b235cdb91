"""Command-line handling: configuration, bad input, usage errors."""

import os
import re

import pytest

from nova_ext.flavor_sync import cli


@pytest.fixture
def run(state_dir, capsys):
    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        status = cli.main(['--state-dir', state_dir, *args])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    return run


def test_connection_from_nova_conf(nova_api, run, tmp_path):
    nova_api.create_flavor('plain')
    nova_api.boot('plain')
    config = tmp_path / 'nova.conf'
    config.write_text(
        '[DEFAULT]\ndebug = true\n'
        '[database]\nconnection = sqlite:////nonexistent/main.db\n'
        f'[api_database]\nconnection = {nova_api.url}\n')

    status, output = run('--config-file', str(config))

    assert status == 0, output
    assert 'Summary: Updated=0, Skipped=1, Errors=0' in output


@pytest.mark.parametrize('content, message', [
    (None, 'cannot read'),
    ('[api_database]\nmax_pool_size = 5\n', 'has no [api_database] '
                                            'connection'),
    ('not an ini file', 'cannot parse'),
])
def test_unusable_nova_conf(run, tmp_path, content, message):
    config = tmp_path / 'nova.conf'
    if content is not None:
        config.write_text(content)

    status, output = run('--config-file', str(config))

    assert status == 2
    assert message in output


def test_unreachable_database(run, tmp_path):
    url = f'sqlite:///{tmp_path}/missing/dir/nova_api.db'
    status, output = run('--connection', url)
    assert status == 2
    assert '[ERROR] Database error: ' in output

    status, output = run('--connection', 'nosuchdriver://x/y')
    assert status == 2
    assert 'invalid database connection' in output


@pytest.mark.parametrize('args', [
    ['--verify', '--run'],
    ['--list-backups', '--run'],
    ['--verify', '--restore', 'x'],
    ['--restore', 'x', '--no-backup'],
    ['--list-backups', '--flavor', 'x'],
    ['--batch-size', '0'],
    ['--migrate-keys', '--restore', 'x'],
    ['--migrate-keys', '--list-backups'],
    ['--migrate-keys', '--flavor', 'x'],
    ['--migrate-keys', '--instance', 'x'],
    ['--migrate-keys', '--verify', '--run'],
])
def test_conflicting_options(run, args, state_dir):
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    assert exit_info.value.code == 2
    assert not os.path.exists(os.path.join(state_dir, 'backups'))


def test_list_backups_without_any(run, state_dir):
    status, output = run('--list-backups')
    assert status == 0
    assert 'no backups in' in output


def test_unwritable_log_file(run, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    status, output = run('--list-backups', '--log-file',
                         str(blocker / 'sync.log'))
    assert status == 2
    assert 'cannot open log file' in output


def test_default_state_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_STATE_HOME', str(tmp_path))
    assert cli.default_state_dir() == str(tmp_path / 'xloud-flavor-sync')
    monkeypatch.delenv('XDG_STATE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path))
    assert cli.default_state_dir() == str(
        tmp_path / '.local' / 'state' / 'xloud-flavor-sync')


def test_password_never_echoed():
    shown = cli.redacted([
        '--verbose', '--connection', 'mysql+pymysql://nova:s3cret@db/api',
        '--connection=mysql+pymysql://nova:s3cret@db/api'])
    assert 's3cret' not in ' '.join(shown)
    assert shown[:2] == ['--verbose', '--connection']
    assert shown[2].startswith('mysql+pymysql://nova:***@db/api')


def test_backup_directory_not_writable(nova_api, run, tmp_path):
    nova_api.create_flavor('plain')
    nova_api.boot('plain')
    nova_api.set_extra_specs('plain', minimum_cpu='1')
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    before = nova_api.specs()

    status, output = run('--connection', nova_api.url, '--run',
                         '--state-dir', str(blocker / 'state'),
                         '--log-file', str(tmp_path / 'sync.log'))

    assert status == 2
    assert re.search(r'\[ERROR\] cannot create a backup in \S+/blocker/'
                     r'state/backups: Not a directory', output)
    assert nova_api.specs() == before
