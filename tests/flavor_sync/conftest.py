"""Fixtures: real nova_api and cell databases per test, SQLite and MariaDB."""

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


@pytest.fixture(scope='session')
def sqlite_cell_template(tmp_path_factory):
    return novaapi.SqliteCellTemplate(str(tmp_path_factory.mktemp('cells')))


@pytest.fixture(scope='session')
def mysql_cell_databases(mysql_database):
    databases = novaapi.MysqlCellDatabases(2)
    yield databases
    databases.drop()


@pytest.fixture
def cell_urls(nova_api, request, tmp_path):
    """Two empty cell databases with Nova's schema, on nova_api's backend."""
    if nova_api.backend == 'sqlite':
        databases = request.getfixturevalue('sqlite_cell_template')
    else:
        databases = request.getfixturevalue('mysql_cell_databases')
    return databases.new_databases(str(tmp_path), ['cell0', 'cell1'])


@pytest.fixture
def cells(nova_api, cell_urls):
    """cell0 and cell1, mapped in nova_api as nova-manage maps them."""
    from nova import objects
    cell0 = nova_api.add_cell('cell0', cell_urls[0],
                              objects.CellMapping.CELL0_UUID)
    cell1 = nova_api.add_cell('cell1', cell_urls[1])
    return cell0, cell1


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
