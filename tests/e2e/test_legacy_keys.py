"""The seed's cloud: legacy unscoped minimum keys under Nova's aggregate
extra specs filter, made bootable by ``xloud-flavor-sync --migrate-keys``.

The local cloud's scheduler runs the filters production clouds enable
(``deploy/localcloud/configs.py``), AggregateInstanceExtraSpecsFilter among
them, which takes every unscoped flavor extra spec for a host requirement.
"""

import subprocess
import sys
from pathlib import Path

from tests.e2e import helpers

REPO = Path(__file__).resolve().parents[2]
LEGACY = {"minimum_cpu": "2", "minimum_memory": "2048"}


def _boot(conn, flavor, name: str):
    image = conn.compute.get(
        "/images", microversion="2.35").json()["images"][0]["id"]
    return conn.compute.create_server(name=name, image_id=image,
                                      flavor_id=flavor.id, networks="none")


def _migrate_keys(cloud: dict, tmp_path: Path, *options: str):
    nova_conf = Path(cloud["state_dir"]) / "etc" / "nova" / "nova.conf"
    return subprocess.run(
        [sys.executable, "-m", "nova_ext.flavor_sync.cli", "--migrate-keys",
         "--config-file", str(nova_conf), "--state-dir", str(tmp_path),
         *options],
        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_legacy_keys_boot_after_the_migration(cloud, admin_conn,
                                              elastic_driver, tmp_path):
    flavor = admin_conn.compute.create_flavor(
        name="x1.e2e-legacy", vcpus=4, ram=4096, disk=1)
    servers = []
    try:
        admin_conn.compute.create_flavor_extra_specs(flavor, LEGACY)
        refused = _boot(admin_conn, flavor, "e2e-legacy-refused")
        servers.append(refused)
        refused = admin_conn.compute.wait_for_server(
            refused, status="ERROR", failures=["ACTIVE"], wait=120)
        assert "No valid host" in refused.fault["message"], refused.fault

        dry_run = _migrate_keys(cloud, tmp_path)
        assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
        assert "minimum_cpu -> xloud:minimum_cpu" in dry_run.stdout
        specs = admin_conn.compute.fetch_flavor_extra_specs(flavor)
        assert specs.extra_specs == LEGACY, "a dry run changed the flavor"

        run = _migrate_keys(cloud, tmp_path, "--run")
        assert run.returncode == 0, run.stdout + run.stderr
        specs = admin_conn.compute.fetch_flavor_extra_specs(flavor)
        assert specs.extra_specs == {"xloud:minimum_cpu": "2",
                                     "xloud:minimum_memory": "2048"}
        verify = _migrate_keys(cloud, tmp_path, "--verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr

        booted = _boot(admin_conn, flavor, "e2e-legacy-migrated")
        servers.append(booted)
        helpers.wait_for_status(admin_conn, booted.id, "ACTIVE")
        size = helpers.size(admin_conn, booted.id)
        assert (size["current_vcpus"], size["min_vcpus"]) == (2, 2), size
    finally:
        for server in servers:
            admin_conn.compute.delete_server(server, ignore_missing=True)
        for server in servers:
            admin_conn.compute.wait_for_delete(server, wait=120)
        admin_conn.compute.delete_flavor(flavor, ignore_missing=True)
