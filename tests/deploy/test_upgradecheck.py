"""``verify`` as oslo.upgradecheck checks: codes, the table, JSON, exit
status, and the lists of what this release registers.

The command-line tests run ``xloud-nova-ext verify`` / ``xloud-status
upgrade check`` in this process with the checks replaced by ones whose
outcome each test chooses; tests/deploy/test_cli.py runs the real checks
against a real Nova install.
"""

import importlib.metadata
import json
from collections.abc import Callable

import pytest
from oslo_upgradecheck import upgradecheck
from oslo_upgradecheck.upgradecheck import Code, Result

from nova_ext import policies
from nova_ext.api import extra_specs
from nova_ext.deploy import checks, cli
from nova_ext.deploy.files import Refused


def test_validated_specs_are_those_the_plugin_registers():
    registered = {validator.name for validator in extra_specs.register()}
    assert set(checks.VALIDATED_SPECS) == registered
    assert len(checks.VALIDATED_SPECS) == len(registered)


def test_policy_rules_are_those_the_plugin_lists():
    listed = {rule.name for rule in policies.list_rules()}
    assert set(checks.POLICY_RULES) == listed
    assert len(checks.POLICY_RULES) == len(listed)


def _returning(code: Code, details: str) -> Callable[[], Result]:
    return lambda: Result(code, details)


def _raising(exc: Exception) -> Callable[[], Result]:
    def check() -> Result:
        raise exc
    return check


class _OsloCommands(upgradecheck.UpgradeCommands):
    """What oslo.upgradecheck prints for the same results, for comparison."""

    def __init__(self, results: list[tuple[str, Result]]) -> None:
        self._upgrade_checks = tuple(
            (name, lambda _self, result=result: result)
            for name, result in results)


@pytest.mark.parametrize('codes, expected', [
    ((Code.SUCCESS, Code.SUCCESS), Code.SUCCESS),
    ((Code.SUCCESS, Code.WARNING), Code.WARNING),
    ((Code.WARNING, Code.FAILURE, Code.SUCCESS), Code.FAILURE),
])
def test_the_highest_code_is_the_outcome(codes, expected, capsys):
    named = [(f'check {index}', _returning(code, f'details {index}'))
             for index, code in enumerate(codes)]
    commands = checks.VerifyCommands(named)
    assert commands.check() is expected
    assert [result.code for _name, result in commands.results] == \
        list(codes)
    table = capsys.readouterr().out

    assert _OsloCommands(commands.results).check() is expected
    assert table == capsys.readouterr().out


def test_the_table_is_oslo_upgradechecks(capsys):
    commands = checks.VerifyCommands([
        ('nova version', _returning(Code.SUCCESS, '34.0.0')),
        ('api answers', _returning(Code.WARNING, 'not checked')),
    ])
    commands.check()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split('|')[1].strip() == 'Upgrade Check Results'
    cells = [line.strip('| ') for line in lines if line.startswith('|')]
    assert cells[1:] == ['Check: nova version', 'Result: Success',
                         'Details: 34.0.0', 'Check: api answers',
                         'Result: Warning', 'Details: not checked']


def test_an_exception_fails_its_check_and_the_others_still_run(capsys):
    ran: list[str] = []

    def after() -> Result:
        ran.append('after')
        return Result(Code.SUCCESS, 'ran')

    commands = checks.VerifyCommands([
        ('before', _returning(Code.SUCCESS, 'ran')),
        ('broken', _raising(RuntimeError('boom'))),
        ('refused', _raising(Refused('nova.conf not found: /x'))),
        ('after', after),
    ])
    assert commands.check_json() is Code.FAILURE
    assert ran == ['after']
    report = json.loads(capsys.readouterr().out)
    assert report == {'name': 'Upgrade Check Results', 'checks': [
        {'check': 'before', 'result': 'Success', 'details': 'ran'},
        {'check': 'broken', 'result': 'Failure',
         'details': 'RuntimeError: boom'},
        {'check': 'refused', 'result': 'Failure',
         'details': 'nova.conf not found: /x'},
        {'check': 'after', 'result': 'Success', 'details': 'ran'}]}
    assert commands.named(Code.FAILURE) == ['broken', 'refused']


def test_a_second_run_reports_only_itself(capsys):
    outcomes = iter([Code.FAILURE, Code.SUCCESS])
    commands = checks.VerifyCommands(
        [('flaky', lambda: Result(next(outcomes), 'x'))])
    assert commands.check() is Code.FAILURE
    assert commands.check_json() is Code.SUCCESS
    assert [name for name, _result in commands.results] == ['flaky']
    assert commands.code() is Code.SUCCESS


def test_without_credentials_the_api_checks_warn():
    assert checks.api_answer(None).code is Code.WARNING
    assert checks.compute_hosts_via_api(None).code is Code.WARNING


def test_the_checks_follow_the_roles(tmp_path):
    def names(*roles: str) -> list[str]:
        target = checks.Target(nova_conf=tmp_path / 'nova.conf',
                               api_paste=tmp_path / 'api-paste.ini',
                               roles=roles)
        return [name for name, _check in checks.checks_for(target)]

    common = ['nova version', 'package', 'nova configuration']
    api = ['api-paste.ini', 'extra spec validators', 'policy rules',
           'paste filter loaded', 'api answers', 'compute hosts (API)']
    compute = ['nova.conf', 'compute driver']
    assert names('api') == common + api
    assert names('compute') == common + compute
    assert names('api', 'compute') == common + api + compute


def test_a_missing_file_fails_its_check_in_the_operators_words(tmp_path):
    missing = tmp_path / 'nova.conf'
    target = checks.Target(nova_conf=missing, api_paste=None,
                           roles=('compute',))
    commands = checks.VerifyCommands(
        [(name, check) for name, check in checks.checks_for(target)
         if name == 'nova.conf'])
    commands.check()
    [(_name, result)] = commands.results
    assert result.code is Code.FAILURE
    assert str(missing) in result.details
    assert 'Traceback' not in result.details


@pytest.fixture
def chosen_checks(monkeypatch):
    """Make the command run these checks instead of the real ones."""
    def choose(*named: tuple[str, Callable[[], Result]]) -> None:
        monkeypatch.setattr(checks, 'checks_for', lambda target: list(named))
    return choose


VERIFY = ['verify', '--role', 'api', '--nova-conf', '/nonexistent/nova.conf',
          '--api-paste', '/nonexistent/api-paste.ini']
STATUS = ['upgrade', 'check', '--role', 'api', '--nova-conf',
          '/nonexistent/nova.conf', '--api-paste',
          '/nonexistent/api-paste.ini']


@pytest.mark.parametrize('code', list(Code))
@pytest.mark.parametrize('command', ['verify', 'xloud-status'])
def test_exit_status_is_nova_status_upgrade_checks(code, command,
                                                   chosen_checks, capsys,
                                                   monkeypatch):
    monkeypatch.delenv('OS_AUTH_URL', raising=False)
    chosen_checks(('fine', _returning(Code.SUCCESS, 'ok')),
                  ('chosen', _returning(code, 'what it found')))
    if command == 'verify':
        status = cli.main(VERIFY)
    else:
        status = cli.status_main(STATUS)
    assert status == int(code)
    captured = capsys.readouterr()
    assert 'Check: chosen' in captured.out
    summary = {Code.SUCCESS: '', Code.WARNING: 'to look at: chosen\n',
               Code.FAILURE: 'missing or broken: chosen\n'}
    assert captured.err == summary[code]


@pytest.mark.parametrize('argv, run', [
    ([*VERIFY, '--format', 'json'], cli.main),
    ([*STATUS, '--json'], cli.status_main),
])
def test_json_from_the_command_line(argv, run, chosen_checks, capsys):
    chosen_checks(('fine', _returning(Code.SUCCESS, 'ok')),
                  ('look', _returning(Code.WARNING, 'not checked')))
    assert run(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(row['check'], row['result']) for row in report['checks']] == \
        [('fine', 'Success'), ('look', 'Warning')]


def test_an_error_outside_the_checks_is_255(monkeypatch, capsys):
    def broken(target):
        raise RuntimeError('cannot list the checks')
    monkeypatch.setattr(checks, 'checks_for', broken)
    assert cli.main(VERIFY) == 255
    captured = capsys.readouterr()
    assert captured.err.startswith('Error:\nTraceback')
    assert 'RuntimeError: cannot list the checks' in captured.err


def test_without_nova_verify_refuses_as_a_failure(monkeypatch, capsys):
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == 'nova':
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)
    monkeypatch.setattr(importlib.metadata, 'version', version)
    assert cli.main(VERIFY) == int(Code.FAILURE)
    assert 'Nova is not installed in this Python environment' \
        in capsys.readouterr().err
