"""Fixtures: a real nova_api database per test, SQLite and MariaDB."""

import pytest

from tests.flavor_sync import novaapi


@pytest.fixture(scope='session')
def sqlite_template(tmp_path_factory):
    return novaapi.SqliteTemplate(str(tmp_path_factory.mktemp('template')))


@pytest.fixture(scope='session')
def mysql_database():
    reason = novaapi.mysql_available()
    if reason:
        pytest.skip(f'MariaDB tests skipped: {reason}')
    database = novaapi.MysqlDatabase()
    yield database
    database.drop()


@pytest.fixture(params=['sqlite', 'mysql'])
def nova_api(request, tmp_path):
    """An empty, migrated nova_api database bound to Nova's objects."""
    if request.param == 'sqlite':
        template = request.getfixturevalue('sqlite_template')
    else:
        template = request.getfixturevalue('mysql_database')
    api = novaapi.NovaApi(template.new_database(str(tmp_path)),
                          request.param)
    yield api
    api.close()


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / 'state')


@pytest.fixture
def run_tool(nova_api, state_dir, capsys):
    """Run the command in-process against the test database.

    Returns (exit status, console output).
    """
    from nova_ext.flavor_sync import cli

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        status = cli.main(['--connection', nova_api.url,
                           '--state-dir', state_dir, *args])
        return status, capsys.readouterr().out

    return run
