"""One running local cloud for every end-to-end test of the session.

The ``cloud`` fixture reuses a cloud that is already up (its
``cloud.json``: ``XLOUD_E2E_STATE`` names the state directory, default
``var/localcloud``), or starts a fresh one with ``python -m
deploy.localcloud up`` on free loopback ports in ``var/e2e-localcloud`` and
stops it with SIGINT (as Ctrl-C would) at the end.  ``XLOUD_E2E_MODE=mariadb``
starts it in the MariaDB/RabbitMQ mode instead (one process per Nova
service, RPC over the broker).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openstack
import pytest

from deploy.localcloud import configs, layout

REPO = layout.REPO_ROOT
SCREENSHOTS = REPO / "artifacts" / "screenshots" / "e2e"
START_TIMEOUT = 600


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
    state = REPO / "var" / f"e2e-localcloud{suffix}"
    log_path = REPO / "artifacts" / f"e2e-localcloud{suffix}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "deploy.localcloud", "up", "--wipe",
            "--mode", mode, "--state-dir", str(state)]
    for name, _ in layout.Ports().items():
        argv += [f"--{name}-port", str(layout.free_port())]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while (info := _running_cloud(state)) is None:
            if proc.poll() is not None:
                pytest.fail("the local cloud failed to start; see "
                            f"{log_path}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the local cloud was not up after "
                            f"{START_TIMEOUT} s; see {log_path}")
            time.sleep(2)
        yield info
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if mode == "mariadb":
            # Its databases live on the shared server, not in var/: drop
            # them (the SQLite state stays for its logs until the next run).
            subprocess.run([sys.executable, "-m", "deploy.localcloud",
                            "wipe", "--state-dir", str(state)],
                           cwd=REPO, env=env, timeout=120, check=False)


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
