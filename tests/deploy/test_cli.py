"""``xloud-nova-ext`` against a real Nova 34 install in a throwaway venv.

See ``conftest.py`` for how that venv is built within the suite's budget.
Every command runs as an operator runs it: the console script pip
generated in the venv, in its own process, on Nova's sample files.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nova_ext.deploy import paste_ini

FILTER_LINE = ('keystone = cors http_proxy_to_wsgi compute_req_id faultwrap '
               'request_log sizelimit osprofiler authtoken keystonecontext '
               'xloud_adjust osapi_compute_app_v21')


@pytest.fixture
def host(nova_venv, sample_nova_conf, tmp_path):
    """This test's copies of Nova's sample api-paste.ini and nova.conf."""
    api_paste = tmp_path / 'api-paste.ini'
    shutil.copy2(nova_venv.api_paste, api_paste)
    nova_conf = tmp_path / 'nova.conf'
    nova_conf.write_text(sample_nova_conf)
    return {'api_paste': api_paste, 'nova_conf': nova_conf, 'dir': tmp_path}


def paths(host) -> list[str]:
    return ['--api-paste', str(host['api_paste']),
            '--nova-conf', str(host['nova_conf'])]


def both_roles() -> list[str]:
    return ['--role', 'api', '--role', 'compute']


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def by_check(output: str) -> dict[str, dict]:
    report = json.loads(output)
    assert report['name'] == 'Upgrade Check Results'
    return {row['check']: row for row in report['checks']}


def verify(nova_venv, host, *roles: str) -> tuple[int, dict[str, dict]]:
    result = nova_venv.run('verify', *roles, *paths(host), '--format',
                           'json')
    assert result.stdout, result.stderr
    return result.returncode, by_check(result.stdout)


def table_rows(output: str) -> list[tuple[str, str, str]]:
    """(check, result, details) from oslo.upgradecheck's table, the
    details' wrapped lines joined again."""
    rows = []
    for cell in re.split(r'(?m)^\+-+\+$', output):
        lines = [line[2:-1].rstrip() for line in cell.strip().splitlines()]
        if not lines or not lines[0].startswith('Check: '):
            continue
        assert lines[1].startswith('Result: ') and \
            lines[2].startswith('Details: '), lines
        details = ' '.join([lines[2].removeprefix('Details: ')]
                           + [line.strip() for line in lines[3:]])
        rows.append((lines[0].removeprefix('Check: '),
                     lines[1].removeprefix('Result: '), details))
    return rows


def test_install_verify_uninstall_round_trip(nova_venv, host):
    before = digest(host['dir'])
    nova_before = nova_venv.nova_tree_digest()

    result = nova_venv.run('install', *both_roles(), *paths(host))
    assert result.returncode == 0, result.stderr
    assert 'xloud_adjust added' in result.stdout
    assert 'compute_driver = xloud.XloudLibvirtDriver (was None' \
        in result.stdout

    backup = Path(str(host['api_paste']) + '.xloud-backup')
    assert backup.read_bytes() == (nova_venv.api_paste).read_bytes()
    paste_text = host['api_paste'].read_text()
    assert FILTER_LINE in paste_text.splitlines()
    assert paste_text.endswith(paste_ini.FILTER_TEXT)
    # Only the pipeline line changed and the filter section was appended.
    original = nova_venv.api_paste.read_text().splitlines()
    changed = [line for line in paste_text.splitlines()
               if line not in original]
    assert changed == [FILTER_LINE, '[filter:xloud_adjust]',
                       'paste.filter_factory = '
                       'nova_ext.api.filter:filter_factory']
    # In the generated sample the setting lands under its documentation.
    conf_lines = host['nova_conf'].read_text().splitlines()
    index = conf_lines.index('compute_driver = xloud.XloudLibvirtDriver')
    assert re.match(r'#\s*compute_driver\s*=', conf_lines[index - 1])

    status, rows = verify(nova_venv, host, *both_roles())
    # A warning, the exit status of nova-status upgrade check's warnings:
    # both API probes need credentials, which this test does not give.
    assert status == 1, rows
    expected = {'nova version', 'package', 'nova configuration',
                'api-paste.ini', 'extra spec validators', 'policy rules',
                'paste filter loaded', 'api answers', 'compute hosts (API)',
                'nova.conf', 'compute driver'}
    assert set(rows) == expected
    assert {k: r['result'] for k, r in rows.items()
            if r['result'] != 'Success'} == {'api answers': 'Warning',
                                             'compute hosts (API)': 'Warning'}
    assert rows['api answers']['details'].startswith(
        'not checked: no credentials given')
    assert 'NovaKeystoneContext > ElasticSizingFilter > APIRouterV21' \
        in rows['paste filter loaded']['details']
    assert str(nova_venv.root) in rows['package']['details']
    assert 'previous compute_driver = None' in rows['nova.conf']['details']

    result = nova_venv.run('uninstall', *both_roles(), *paths(host))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('from its backup') == 2
    assert digest(host['dir']) == before
    assert nova_venv.nova_tree_digest() == nova_before

    # The table operators read, oslo.upgradecheck's: one cell per check,
    # failures and warnings named again on stderr, nova-status upgrade
    # check's exit status for automation (2: a failure).
    result = nova_venv.run('verify', *both_roles(), *paths(host))
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r'\| Upgrade Check Results +\|', lines[1])
    rows = table_rows(result.stdout)
    assert [check for check, _result, _details in rows] == [
        'nova version', 'package', 'nova configuration', 'api-paste.ini',
        'extra spec validators', 'policy rules', 'paste filter loaded',
        'api answers', 'compute hosts (API)', 'nova.conf', 'compute driver']
    assert rows[0][1] == 'Success'
    assert rows[0][2].startswith('34.0.0 (supported ')
    assert [check for check, outcome, _details in rows
            if outcome == 'Failure'] == [
        'api-paste.ini', 'paste filter loaded', 'nova.conf',
        'compute driver']
    assert result.stderr.strip().splitlines()[-2:] == [
        'missing or broken: api-paste.ini, paste filter loaded, nova.conf, '
        'compute driver',
        'to look at: api answers, compute hosts (API)']


def test_installing_twice_changes_nothing(nova_venv, host):
    nova_venv.run('install', *both_roles(), *paths(host), check=True)
    after_first = digest(host['dir'])
    mtimes = {p: p.stat().st_mtime_ns for p in host['dir'].iterdir()}

    result = nova_venv.run('install', *both_roles(), *paths(host))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('nothing changed') == 2
    assert digest(host['dir']) == after_first
    assert {p: p.stat().st_mtime_ns
            for p in host['dir'].iterdir()} == mtimes


@pytest.mark.parametrize('version', ['33.1.0', '35.0.0'])
def test_refuses_a_nova_outside_the_supported_range(nova_venv, host,
                                                     version):
    metadata = nova_venv.nova_metadata()
    original = metadata.read_text()
    before = digest(host['dir'])
    try:
        metadata.write_text(re.sub(r'(?m)^Version: .*$',
                                   f'Version: {version}', original))
        result = nova_venv.run('install', *both_roles(), *paths(host))
        status, rows = verify(nova_venv, host, '--role', 'api')
    finally:
        metadata.write_text(original)
    assert result.returncode == 2
    assert f'Nova {version} is outside the supported range ' \
        '>=34.0.0,<35.0.0' in result.stderr
    assert digest(host['dir']) == before
    assert status == 2
    assert rows['nova version']['result'] == 'Failure'


UNRECOGNISED_PIPELINES = {
    'app not last': ('keystonecontext osapi_compute_app_v21',
                     'osapi_compute_app_v21 keystonecontext',
                     'unrecognised pipeline'),
    'no keystonecontext': (' keystonecontext osapi_compute_app_v21',
                           ' osapi_compute_app_v21',
                           'unrecognised pipeline'),
    'other factory': ('use = call:nova.api.auth:pipeline_factory_v21\n'
                      'keystone = cors',
                      'use = call:example.auth:factory\nkeystone = cors',
                      'does not use call:nova.api.auth:pipeline_factory_v21'),
    'foreign filter of our name': (
        '[filter:keystonecontext]',
        '[filter:xloud_adjust]\npaste.filter_factory = example:factory\n\n'
        '[filter:keystonecontext]',
        '[filter:xloud_adjust] already exists with different content'),
}


@pytest.mark.parametrize('case', sorted(UNRECOGNISED_PIPELINES))
def test_refuses_an_api_paste_it_does_not_recognise(nova_venv, host, case):
    old, new, message = UNRECOGNISED_PIPELINES[case]
    text = host['api_paste'].read_text()
    assert old in text
    host['api_paste'].write_text(text.replace(old, new, 1))
    before = digest(host['dir'])

    result = nova_venv.run('install', '--role', 'api', *paths(host))
    assert result.returncode == 2
    assert 'refused' in result.stderr and message in result.stderr
    assert digest(host['dir']) == before


def test_refusal_of_one_role_changes_no_file(nova_venv, host):
    host['nova_conf'].write_text('[DEFAULT]\n'
                                 'compute_driver = ironic.IronicDriver\n')
    before = digest(host['dir'])
    result = nova_venv.run('install', *both_roles(), *paths(host))
    assert result.returncode == 2
    assert 'compute_driver = ironic.IronicDriver; the elastic driver ' \
        'extends libvirt.LibvirtDriver only' in result.stderr
    assert digest(host['dir']) == before


def test_refuses_a_missing_file(nova_venv, host):
    missing = host['dir'] / 'absent' / 'api-paste.ini'
    result = nova_venv.run('install', '--role', 'api', '--api-paste',
                           str(missing), '--nova-conf',
                           str(host['nova_conf']))
    assert result.returncode == 2
    assert f'api-paste.ini not found: {missing}' in result.stderr


def test_refuses_over_a_backup_left_by_an_earlier_install(nova_venv, host):
    backup = host['dir'] / 'nova.conf.xloud-backup'
    backup.write_text('[DEFAULT]\n')
    before = digest(host['dir'])
    result = nova_venv.run('install', '--role', 'compute', *paths(host))
    assert result.returncode == 2
    assert f'{backup} already exists from an earlier install' \
        in result.stderr
    assert digest(host['dir']) == before


def test_uninstall_keeps_changes_made_after_install(nova_venv, host):
    host['nova_conf'].write_text('[DEFAULT]\n'
                                 'compute_driver = libvirt.LibvirtDriver\n')
    nova_venv.run('install', *both_roles(), *paths(host), check=True)
    with host['nova_conf'].open('a') as conf:
        conf.write('\n[libvirt]\nvirt_type = qemu\n')
    with host['api_paste'].open('a') as paste:
        paste.write('\n[filter:audit]\npaste.filter_factory = '
                    'keystonemiddleware.audit:filter_factory\n')

    result = nova_venv.run('uninstall', *both_roles(), *paths(host))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('changed since install') == 2
    assert host['nova_conf'].read_text() == (
        '[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n'
        '\n[libvirt]\nvirt_type = qemu\n')
    assert host['api_paste'].read_text() == (
        nova_venv.api_paste.read_text()
        + '\n[filter:audit]\npaste.filter_factory = '
          'keystonemiddleware.audit:filter_factory\n')
    assert (host['dir'] / 'nova.conf.xloud-backup').exists()


def test_pip_uninstall_leaves_nova_as_it_was(nova_venv):
    """The shim is a file of this package, not an edit of Nova."""
    assert (nova_venv.purelib / 'nova' / 'virt' / 'xloud').is_dir()
    try:
        nova_venv.pip('uninstall', '-y', 'xloud-elastic')
        assert nova_venv.nova_tree_digest() == nova_venv.nova_only_digest
        assert not nova_venv.tool.exists()
    finally:
        nova_venv.pip('install', '--no-deps', '--no-compile',
                      str(nova_venv.project_wheel))


def _nova_compute_process(nova_conf: Path) -> subprocess.Popen:
    """A process that presents itself as nova-compute reading
    ``nova_conf``; only its command line and start time matter to
    verify, and a real nova-compute would need a message bus."""
    return subprocess.Popen(
        ['bash', '-c', 'exec -a nova-compute "$0" "$@"', sys.executable,
         '-c', 'import time; time.sleep(120)', '--config-file',
         str(nova_conf)])


def test_verify_tells_when_nova_compute_needs_a_restart(nova_venv, host):
    running = _nova_compute_process(host['nova_conf'])
    try:
        time.sleep(2.5)
        nova_venv.run('install', '--role', 'compute', *paths(host),
                      check=True)
        status, rows = verify(nova_venv, host, '--role', 'compute')
        assert status == 2
        assert rows['compute driver']['result'] == 'Failure'
        assert f'nova-compute (pid [{running.pid}]) started before the ' \
            'configuration changed: restart it' \
            in rows['compute driver']['details']
    finally:
        running.kill()
        running.wait()
    time.sleep(2.5)
    restarted = _nova_compute_process(host['nova_conf'])
    try:
        status, rows = verify(nova_venv, host, '--role', 'compute')
    finally:
        restarted.kill()
        restarted.wait()
    assert status == 0, rows
    assert {row['result'] for row in rows.values()} == {'Success'}
    assert f'running nova-compute (pid [{restarted.pid}]) started after ' \
        'the change' in rows['compute driver']['details']


def test_xloud_status_upgrade_check_is_verify(nova_venv, host):
    """The same checks under nova-status's command line, for runbooks
    that run each service's ``<project>-status upgrade check``."""
    nova_venv.run('install', '--role', 'compute', *paths(host), check=True)
    status, rows = verify(nova_venv, host, '--role', 'compute')
    result = subprocess.run(
        [str(nova_venv.root / 'bin' / 'xloud-status'), 'upgrade', 'check',
         '--json', '--role', 'compute', *paths(host)],
        capture_output=True, text=True, timeout=180, cwd=nova_venv.root)
    assert result.returncode == status == 0, result.stderr
    assert by_check(result.stdout) == rows

    host['nova_conf'].write_text('[DEFAULT]\n')
    result = subprocess.run(
        [str(nova_venv.root / 'bin' / 'xloud-status'), 'upgrade', 'check',
         '--role', 'compute', *paths(host)],
        capture_output=True, text=True, timeout=180, cwd=nova_venv.root)
    assert result.returncode == 2, result.stderr
    assert [(check, outcome) for check, outcome, _details
            in table_rows(result.stdout) if outcome != 'Success'] == [
        ('nova.conf', 'Failure'), ('compute driver', 'Failure')]
