import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Horizon's handler logs every handled exception when this is set; its own
# test base class sets it too.
os.environ.setdefault('HORIZON_TEST_RUN', 'True')

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember a failed test so fixtures can keep what it saw."""
    outcome = yield
    report = outcome.get_result()
    if report.when == 'call':
        item.stash[FAILED] = report.failed


def run(args: list[str], env: dict[str, str], timeout: float):
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (
        f'{" ".join(args)} failed:\n{result.stdout}\n{result.stderr}')
    return result


@pytest.fixture(scope='session')
def production_static(tmp_path_factory) -> pathlib.Path:
    """Static files as production builds them: ``collectstatic`` then
    django-compressor's offline ``compress``, with the plugin enabled."""
    root = tmp_path_factory.mktemp('static')
    env = dict(os.environ, XLOUD_STATIC_ROOT=str(root),
               DJANGO_SETTINGS_MODULE='tests.dashboard.production_settings',
               PYTHONPATH=str(ROOT))
    run([sys.executable, '-m', 'django', 'collectstatic', '--noinput',
         '-v0'], env, timeout=300)
    run([sys.executable, '-m', 'django', 'compress', '--force'], env,
        timeout=600)
    return root
