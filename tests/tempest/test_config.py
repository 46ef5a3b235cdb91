"""tempest.conf as deploy.localcloud.tempest renders it for a cloud.

The run file, the cloud's answers (``CloudFacts``) and its nova.conf are
made up here: nothing is started and nothing is asked over the network.
"""

import configparser
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.localcloud import __main__ as cli
from deploy.localcloud import tempest

RUN = {
    "pid": 1,
    "state_dir": "/srv/cloud",
    "hypervisor": "fake",
    "region": "RegionTest",
    "auth_url": "http://127.0.0.1:15000/v3",
    "dashboard_url": "http://127.0.0.1:18000/",
    "admin": {"username": "root", "password": "s3cret", "project": "ops"},
}
FACTS = tempest.CloudFacts(
    services=frozenset({"identity", "compute", "image", "placement"}),
    roles=frozenset({"admin", "member", "reader", "_member_"}),
    compute_max_microversion="2.104",
    compute_nodes=2,
    image_ref="image-a",
    image_ref_alt="image-b",
    flavor_ref="flavor-1",
    flavor_ref_alt="flavor-2",
    flavors_created=(),
)
# The sections whose every key is a decision about this cloud.
SWITCH_SECTIONS = ("compute-feature-enabled", "service_available",
                   "validation", "enforce_scope", "identity-feature-enabled")


def _nova(text: str = "") -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def _render(run: dict | None = None, facts: tempest.CloudFacts = FACTS,
            nova: str = "") -> str:
    return tempest.render(run or RUN, facts, _nova(nova),
                          Path("/srv/cloud/tempest"))


def _parse(text: str) -> configparser.ConfigParser:
    # [DEFAULT] is Tempest's section like any other, not every section's
    # defaults.
    parser = configparser.ConfigParser(interpolation=None,
                                       default_section="unused")
    parser.read_string(text)
    return parser


def _reasons(text: str) -> dict[tuple[str, str], str]:
    """(section, key): the comment lines right above the key, joined."""
    reasons: dict[tuple[str, str], str] = {}
    section, comment = "", []
    for line in text.splitlines():
        if line.startswith("["):
            section, comment = line.strip("[]"), []
        elif line.startswith("# "):
            comment.append(line[2:])
        elif " = " in line:
            reasons[section, line.split(" = ")[0]] = " ".join(comment)
            comment = []
    return reasons


def test_every_switch_has_its_reason_above_it():
    text = _render()
    reasons = _reasons(text)
    conf = _parse(text)
    for section in SWITCH_SECTIONS:
        assert conf.options(section), section
        for key in conf.options(section):
            assert reasons[section, key], f"[{section}] {key} has no reason"
    for key in ("use_dynamic_credentials", "create_isolated_networks"):
        assert reasons["auth", key]


def test_services_the_catalog_lacks_are_off_with_the_reason():
    text = _render()
    conf, reasons = _parse(text), _reasons(text)
    available = conf["service_available"]
    assert available.getboolean("nova") and available.getboolean("glance")
    assert reasons["service_available", "glance"] == "image is in the catalog"
    for name, kind in (("neutron", "network"),
                       ("cinder", "block-storage/volumev3"),
                       ("swift", "object-store")):
        assert not available.getboolean(name), name
        assert reasons["service_available", name].startswith(
            f"no {kind} service in the catalog: "), name
    features = conf["compute-feature-enabled"]
    for switch in ("interface_attach", "attach_encrypted_volume",
                   "swap_volume", "volume_multiattach",
                   "volume_backed_live_migration"):
        assert not features.getboolean(switch), switch
    assert not conf["auth"].getboolean("create_isolated_networks")
    assert not conf["validation"].getboolean("run_validation")


def test_services_in_the_catalog_are_on():
    facts = dataclasses.replace(
        FACTS, services=FACTS.services | {"network", "volumev3"})
    conf = _parse(_render(facts=facts))
    assert conf["service_available"].getboolean("neutron")
    assert conf["service_available"].getboolean("cinder")
    for switch in ("interface_attach", "attach_encrypted_volume",
                   "swap_volume"):
        assert conf["compute-feature-enabled"].getboolean(switch), switch


def test_no_image_service_gives_no_snapshot_and_no_shelve():
    facts = dataclasses.replace(
        FACTS, services=FACTS.services - {"image"})
    conf = _parse(_render(facts=facts))
    assert not conf["service_available"].getboolean("glance")
    assert not conf["compute-feature-enabled"].getboolean("snapshot")
    assert not conf["compute-feature-enabled"].getboolean("shelve")


def test_horizon_is_the_run_files_dashboard():
    assert _parse(_render())["service_available"].getboolean("horizon")
    conf = _parse(_render())
    assert conf["dashboard"]["login_url"] == (
        "http://127.0.0.1:18000/auth/login/")
    run = {k: v for k, v in RUN.items() if k != "dashboard_url"}
    assert not _parse(_render(run))["service_available"].getboolean(
        "horizon")


NOVA_CONF = """\
[DEFAULT]
allow_resize_to_same_host = true
[vnc]
enabled = true
[spice]
enabled = true
[serial_console]
enabled = false
[filter_scheduler]
enabled_filters = ComputeFilter,AggregateInstanceExtraSpecsFilter
[quota]
driver = nova.quota.UnifiedLimitsDriver
[oslo_policy]
enforce_new_defaults = false
"""


def test_nova_options_are_mirrored():
    conf = _parse(_render(nova=NOVA_CONF))
    features = conf["compute-feature-enabled"]
    assert features.getboolean("vnc_console")
    assert features.getboolean("spice_console")
    assert not features.getboolean("serial_console")
    assert features["scheduler_enabled_filters"] == (
        "ComputeFilter,AggregateInstanceExtraSpecsFilter")
    assert features.getboolean("unified_limits")
    assert not conf["enforce_scope"].getboolean("nova")


def test_nova_defaults_apply_to_options_nova_conf_leaves_out():
    conf = _parse(_render(nova="[vnc]\n"))
    features = conf["compute-feature-enabled"]
    # Nova's own defaults: [vnc] enabled is true, the rest false.
    assert features.getboolean("vnc_console")
    assert not features.getboolean("spice_console")
    assert not features.getboolean("unified_limits")
    assert features["scheduler_enabled_filters"] == ""
    assert conf["enforce_scope"].getboolean("nova")


@pytest.mark.parametrize("nodes, nova, resize, migrate", [
    (2, "", True, True),
    (1, "", False, False),
    (1, "[DEFAULT]\nallow_resize_to_same_host = true\n", True, False),
])
def test_moves_follow_the_compute_hosts(nodes, nova, resize, migrate):
    facts = dataclasses.replace(FACTS, compute_nodes=nodes)
    conf = _parse(_render(facts=facts, nova=nova))
    features = conf["compute-feature-enabled"]
    assert features.getboolean("resize") is resize
    assert features.getboolean("cold_migration") is migrate
    assert features.getboolean("live_migration") is migrate
    assert conf["compute"].getint("min_compute_nodes") == nodes


def test_policy_roles_are_those_keystone_has():
    conf = _parse(_render())
    assert conf["compute-feature-enabled"]["nova_policy_roles"] == (
        "admin,member,reader")
    facts = dataclasses.replace(
        FACTS, roles=FACTS.roles | {"manager"})
    conf = _parse(_render(facts=facts))
    assert conf["compute-feature-enabled"]["nova_policy_roles"] == (
        "admin,manager,member,reader")


def test_credentials_endpoints_images_and_flavors_come_from_the_cloud():
    conf = _parse(_render())
    assert dict(conf["auth"]).items() >= {
        "admin_username": "root", "admin_password": "s3cret",
        "admin_project_name": "ops", "use_dynamic_credentials": "true",
    }.items()
    assert conf["identity"]["uri_v3"] == "http://127.0.0.1:15000/v3"
    assert conf["identity"]["region"] == "RegionTest"
    compute = conf["compute"]
    assert (compute["image_ref"], compute["image_ref_alt"]) == (
        "image-a", "image-b")
    assert (compute["flavor_ref"], compute["flavor_ref_alt"]) == (
        "flavor-1", "flavor-2")
    assert compute["max_microversion"] == "2.104"
    assert compute["region"] == "RegionTest"
    assert conf["DEFAULT"]["log_dir"] == "/srv/cloud/tempest/logs"
    assert conf["oslo_concurrency"]["lock_path"] == "/srv/cloud/tempest/lock"


@pytest.mark.parametrize("hypervisor, timeout", [("fake", 60), ("qemu", 300)])
def test_build_timeout_follows_the_hypervisor(hypervisor, timeout):
    conf = _parse(_render(RUN | {"hypervisor": hypervisor}))
    assert conf["compute"].getint("build_timeout") == timeout


def test_console_output_needs_a_real_guest():
    fake = _render()
    assert not _parse(fake)["compute-feature-enabled"].getboolean(
        "console_output")
    assert "fake libvirt runs no guest" in _reasons(fake)[
        "compute-feature-enabled", "console_output"]
    qemu = _parse(_render(RUN | {"hypervisor": "qemu"}))
    assert qemu["compute-feature-enabled"].getboolean("console_output")


def test_flavors_made_for_tempest_are_named():
    facts = dataclasses.replace(
        FACTS, flavors_created=("tempest.small", "tempest.medium"))
    reasons = _reasons(_render(facts=facts))
    assert "created: tempest.small, tempest.medium" in (
        reasons["compute", "flavor_ref"])
    assert "created" not in _reasons(_render())["compute", "flavor_ref"]


def _flavor(name: str, vcpus: int, ram: int, disk: int = 1,
            extra_specs: dict | None = None, disabled: bool = False):
    return SimpleNamespace(id=f"id-{name}", name=name, vcpus=vcpus, ram=ram,
                           disk=disk, extra_specs=extra_specs or {},
                           is_disabled=disabled)


class _Compute:
    def __init__(self, flavors: list) -> None:
        self.listed = flavors
        self.created: list[dict] = []

    def flavors(self, **query):
        return list(self.listed)

    def find_flavor(self, name):
        return None

    def create_flavor(self, **fields):
        self.created.append(fields)
        return SimpleNamespace(id=f"new-{fields['name']}")


def test_flavors_are_the_two_smallest_plain_ones():
    compute = _Compute([
        _flavor("elastic", 1, 128, extra_specs={"xloud:minimum_cpu": "1"}),
        _flavor("diskless", 1, 128, disk=0),
        _flavor("off", 1, 128, disabled=True),
        _flavor("tiny", 1, 512),
        _flavor("big", 8, 16384),
        _flavor("small", 2, 2048),
        _flavor("same-ram", 2, 512),
    ])
    said: list[str] = []
    chosen = tempest._flavors(SimpleNamespace(compute=compute), said.append)
    assert chosen == ("id-tiny", "id-small", ())
    assert compute.created == [] and said == []


def test_flavors_are_made_when_the_cloud_has_no_plain_pair():
    compute = _Compute([_flavor("tiny", 1, 512),
                        _flavor("elastic", 4, 4096,
                                extra_specs={"xloud:minimum_cpu": "1"})])
    said: list[str] = []
    chosen = tempest._flavors(SimpleNamespace(compute=compute), said.append)
    assert chosen == ("new-tempest.small", "new-tempest.medium",
                      ("tempest.small", "tempest.medium"))
    assert [f["name"] for f in compute.created] == [
        "tempest.small", "tempest.medium"]
    assert "tempest.small, tempest.medium" in said[0]


def test_no_image_service_in_the_catalog_is_an_error():
    with pytest.raises(tempest.TempestError,
                       match="the catalog has no image service"):
        tempest._images(object(), frozenset({"compute", "identity"}))


def test_no_run_file_is_an_error_naming_how_to_start_one(tmp_path):
    with pytest.raises(tempest.TempestError) as caught:
        tempest.read_run_file(tmp_path)
    message = str(caught.value)
    assert f"no local cloud is running from {tmp_path}" in message
    assert str(tmp_path / "cloud.json") in message
    assert "python -m deploy.localcloud up" in message


def test_a_dead_launcher_is_an_error(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "cloud.json").write_text(
        json.dumps(RUN | {"pid": gone.pid}))
    with pytest.raises(tempest.TempestError,
                       match=rf"names launcher pid {gone.pid}, which is not "
                             r"running: start the cloud again"):
        tempest.read_run_file(tmp_path)


def test_the_command_prints_the_error_and_writes_nothing(tmp_path, capsys):
    assert cli.main(["tempest", "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: no local cloud is running from {tmp_path}")
    assert list(tmp_path.iterdir()) == []


def test_every_excluded_test_has_its_reason_above_it():
    lines = tempest.EXCLUDE_LIST.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        assert number and lines[number - 1].startswith("# "), (
            f"no reason above {line!r}")
        assert line.startswith(r"^tempest\."), line
        re.compile(line)


def test_images_are_the_public_bootable_ones_by_name():
    def image(name, visibility="public", status="active", disk_format="raw"):
        return SimpleNamespace(id=f"id-{name}", name=name,
                               visibility=visibility, status=status,
                               disk_format=disk_format)

    listed = [image("zeta"), image("alpha-kernel", disk_format="aki"),
              image("alpha-ramdisk", disk_format="ari"),
              image("admins-own", visibility="shared"),
              image("a-snapshot", visibility="private"),
              image("queued", status="queued"), image("beta")]
    asked: list[dict] = []

    def images(**query):
        asked.append(query)
        return listed

    conn = SimpleNamespace(image=SimpleNamespace(images=images))
    assert tempest._images(conn, frozenset({"image"})) == ["id-beta",
                                                         "id-zeta"]
    assert asked == [{"visibility": "public"}]


@pytest.mark.parametrize("text", ["{not json", "[]", '{"pid": "x"}',
                                  '{"admin": {}}'])
def test_a_broken_run_file_is_an_error(tmp_path, text):
    (tmp_path / "cloud.json").write_text(text)
    with pytest.raises(tempest.TempestError,
                       match="is not a local cloud's run file"):
        tempest.read_run_file(tmp_path)
