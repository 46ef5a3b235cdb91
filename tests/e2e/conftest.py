"""One running local cloud for every end-to-end test of the session.

The ``cloud`` fixture reuses a cloud that is already up (its
``cloud.json``: ``XLOUD_E2E_STATE`` names the state directory, default
``var/localcloud``), or starts a fresh one with ``python -m
deploy.localcloud up`` on free loopback ports in ``var/e2e-localcloud`` and
stops it with SIGINT (as Ctrl-C would) at the end.  ``XLOUD_E2E_MODE=mariadb``
starts it in the MariaDB/RabbitMQ mode instead (one process per Nova
service, RPC over the broker).

The ``mariadb_cloud`` fixture is a second cloud, always started afresh in
the MariaDB/RabbitMQ mode for the tests that kill, restart and pause its
nova-compute processes (``test_crash_recovery.py``), and stopped after
them.
"""

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openstack
import pytest

from deploy.localcloud import bootstrap, configs, layout, supervisor

REPO = layout.REPO_ROOT
SCREENSHOTS = REPO / "artifacts" / "screenshots" / "e2e"
START_TIMEOUT = 600
# The crash tests' cloud is not seeded: it is up in about a minute.
MARIADB_CLOUD_START_TIMEOUT = 300
# [xloud] accept_timeout of the crash tests' cloud: a host that does not
# answer is given up on this quickly.
MARIADB_CLOUD_ACCEPT_TIMEOUT = 5


def _running_cloud(state: Path) -> dict | None:
    run_file = state / "cloud.json"
    if not run_file.exists():
        return None
    info = json.loads(run_file.read_text())
    try:
        os.kill(info["pid"], 0)
    except OSError:
        return None
    return info


@pytest.fixture(scope="session")
def cloud() -> dict:
    state = Path(os.environ.get("XLOUD_E2E_STATE",
                                REPO / "var" / "localcloud"))
    info = _running_cloud(state)
    if info is not None:
        yield info
        return

    mode = os.environ.get("XLOUD_E2E_MODE", "sqlite")
    suffix = "" if mode == "sqlite" else f"-{mode}"
    with _launched(f"e2e-localcloud{suffix}", mode, START_TIMEOUT) as info:
        yield info


@pytest.fixture(scope="module")
def mariadb_cloud(elastic_driver) -> dict:
    """A cloud of its own in the MariaDB/RabbitMQ mode, unseeded.

    Every Nova service runs in its own process, which the tests may kill,
    start again and pause through the launcher's control socket; never the
    cloud of ``make up``.
    """
    for what, (host, port) in (("MariaDB", layout.MARIADB_HOST_PORT),
                               ("RabbitMQ", layout.RABBITMQ_HOST_PORT)):
        if not layout.reachable((host, port)):
            pytest.skip(f"needs {what} at {host}:{port} for a cloud in the "
                        f"MariaDB/RabbitMQ mode")
    with _launched("e2e-localcloud-crash", "mariadb",
                   MARIADB_CLOUD_START_TIMEOUT, "--no-seed",
                   "--accept-timeout",
                   str(MARIADB_CLOUD_ACCEPT_TIMEOUT)) as info:
        yield info


class CloudStartError(RuntimeError):
    """The local cloud did not come up."""


def _launched(name: str, mode: str, timeout: float, *options: str):
    """:func:`launched_cloud` in ``var/<name>``, its log in
    ``artifacts/<name>.log``."""
    return launched_cloud(REPO / "var" / name,
                          REPO / "artifacts" / f"{name}.log", mode, timeout,
                          *options)


@contextlib.contextmanager
def launched_cloud(state: Path, log_path: Path, mode: str, timeout: float,
                   *options: str):
    """``deploy.localcloud up --wipe`` on free ports in ``state``.

    Yields the run file once the cloud is up (CloudStartError if it is not
    within ``timeout`` seconds); stops it with SIGINT (and, in the
    MariaDB mode, drops its databases) at the end, also on an error or
    Ctrl-C.  Outside pytest too: the benchmarks start their clouds with it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "deploy.localcloud", "up", "--wipe",
            "--mode", mode, "--state-dir", str(state), *options]
    for port_name, _ in layout.Ports().items():
        argv += [f"--{port_name}-port", str(layout.free_port())]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # A session of its own: Ctrl-C reaches it once, from the finally
    # below.  The terminal's SIGINT as well would come while it stops,
    # and a second one interrupts its shutdown (libvirtd and QEMU left).
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while (info := _running_cloud(state)) is None:
            if proc.poll() is not None:
                raise CloudStartError(
                    f"the local cloud failed to start; see {log_path}:\n"
                    f"{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise CloudStartError(f"the local cloud was not up after "
                                      f"{timeout} s; see {log_path}")
            time.sleep(2)
        yield info
    finally:
        supervisor.stop_process(proc, grace=90, signum=signal.SIGINT)
        if mode == "mariadb" and (state / "secrets.json").exists():
            # Its databases live on the shared server, not in var/: drop
            # them.  The state directory stays for its logs until the next
            # run's --wipe.
            bootstrap.drop_mariadb_databases(
                layout.Layout(state, layout.Ports(), mode))


def _connect(cloud: dict, who: str, project: str | None = None):
    person = cloud[who]
    return openstack.connect(
        auth_url=cloud["auth_url"], username=person["username"],
        password=person["password"],
        project_name=project or person["project"],
        user_domain_id="default", project_domain_id="default",
        region_name=cloud["region"])


@pytest.fixture(scope="session")
def admin_conn(cloud):
    return _connect(cloud, "admin")


@pytest.fixture(scope="session")
def member_conn(cloud):
    return _connect(cloud, "member")


@pytest.fixture(scope="session")
def extension():
    return configs.Extension.detect()


@pytest.fixture(scope="session")
def api_extension(extension):
    if not extension.paste_filter:
        pytest.skip("needs the os-xloud-adjust API (nova_ext.api.filter, "
                    "helper `api`), which this checkout does not have yet")
    return extension


@pytest.fixture(scope="session")
def elastic_driver(api_extension, extension):
    if not extension.compute_driver:
        pytest.skip("needs the elastic sizing compute driver "
                    "(nova_ext.virt.driver.XloudLibvirtDriver, helper "
                    "`compute`), which this checkout does not have yet")
    return extension


@pytest.fixture(scope="session")
def dashboard_plugin(elastic_driver, extension):
    if not extension.dashboard_enabled_files:
        pytest.skip("needs the Horizon plugin's enabled files (enabled/_*.py, "
                    "helper `dashboard`), which this checkout does not have "
                    "yet")
    return extension


@pytest.fixture(scope="module")
def browser_module(dashboard_plugin):
    try:
        return importlib.import_module("tests.dashboard.browser")
    except ImportError as exc:
        pytest.skip(f"needs the dashboard's page helpers "
                    f"(tests/dashboard/browser.py): {exc}")
