"""The launcher's own promises, checked without starting a cloud."""

import configparser
import fcntl
import json
import socket
import subprocess
import sys

import pytest

from deploy.localcloud import configs, layout, libvirthost


def _run(*args: str, cwd=layout.REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.localcloud", *args],
                          capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)


def test_taken_port_is_named_with_its_flag_and_nothing_starts(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as busy:
        busy.bind((layout.HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = [f"--{name}-port={layout.free_port()}"
                 for name in ("keystone", "placement", "horizon")]
        result = _run("up", "--state-dir", str(state), f"--nova-port={port}",
                      *ports)
    assert result.returncode == 2
    assert (f"port {port} on 127.0.0.1, needed by nova, is already in use"
            in result.stderr)
    assert "--nova-port" in result.stderr
    # Refused before anything was written.
    assert not state.exists()


def test_second_launcher_or_wipe_on_a_running_state_is_refused(tmp_path):
    lay = layout.Layout(tmp_path, layout.Ports())
    lay.state.mkdir(parents=True, exist_ok=True)
    with lay.lock_file.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        ports = [f"--{name}-port={layout.free_port()}"
                 for name, _ in layout.Ports().items()]
        result = _run("up", "--state-dir", str(tmp_path), *ports)
        assert result.returncode == 2
        assert "already running" in result.stderr
        assert "4242" in result.stderr
        wiped = _run("wipe", "--state-dir", str(tmp_path))
        assert wiped.returncode == 2
        assert "already running" in wiped.stderr
    assert lay.lock_file.exists()


def test_wipe_removes_the_state_directory(tmp_path):
    state = tmp_path / "state"
    (state / "db").mkdir(parents=True)
    (state / "db" / "nova_api.sqlite").write_bytes(b"")
    result = _run("wipe", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert not state.exists()


def test_paste_filter_goes_right_after_keystonecontext():
    ext = configs.Extension(paste_filter=True, compute_driver=True,
                            dashboard_enabled_files=())
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(configs.api_paste_ini(ext))
    v21 = parser["composite:openstack_compute_api_v21"]["keystone"].split()
    assert v21[v21.index("keystonecontext") + 1] == configs.PASTE_FILTER
    assert v21[-1] == "osapi_compute_app_v21"
    legacy = parser["composite:openstack_compute_api_v21_legacy_v2_compatible"]
    assert configs.PASTE_FILTER not in legacy["keystone"].split()
    assert (parser[f"filter:{configs.PASTE_FILTER}"]["paste.filter_factory"]
            == configs.PASTE_FILTER_FACTORY)


def test_a_state_directory_keeps_the_hypervisor_it_was_made_with(
        tmp_path):
    state = tmp_path / "state"
    (state / "nova").mkdir(parents=True)
    (state / "nova" / "hypervisor-kind").write_text("fake")
    ports = [f"--{name}-port={layout.free_port()}"
             for name, _ in layout.Ports().items()]
    result = _run("up", "--state-dir", str(state), "--hypervisor", "qemu",
                  *ports)
    assert result.returncode == 2, result.stderr
    assert "holds a cloud of --hypervisor fake" in result.stderr
    assert "--wipe" in result.stderr
    # Refused before anything was written.
    assert [p.name for p in state.rglob("*")] == ["nova", "hypervisor-kind"]


def test_real_hypervisor_settings_in_nova_conf(tmp_path):
    ext = configs.Extension(paste_filter=True, compute_driver=True,
                            dashboard_enabled_files=())
    lay = layout.Layout(tmp_path, layout.Ports(), hypervisor="qemu")
    nova = configparser.ConfigParser(interpolation=None)
    nova.read_string(configs.nova_conf(lay, ext, {"accept_timeout": 5},
                                       virt_type="qemu"))
    assert nova["libvirt"]["virt_type"] == "qemu"
    # TCG has no host CPU model to pass through.
    assert nova["libvirt"]["cpu_mode"] == "none"
    assert nova.getboolean("DEFAULT", "resume_guests_state_on_host_boot")
    for section in libvirthost.PRIVSEP_SECTIONS:
        helper, *flags = nova[section]["helper_command"].split()
        assert helper.endswith("/bin/privsep-helper")
        assert flags == ["--config-dir", str(lay.etc / "nova")]
    # The extension's options and the real host's are both kept.
    assert nova["xloud"]["accept_timeout"] == "5"
    assert nova["xloud"]["boot_memory_confirm_timeout"] == "45"

    fake = configparser.ConfigParser(interpolation=None)
    fake.read_string(configs.nova_conf(layout.Layout(tmp_path,
                                                     layout.Ports()), ext))
    assert fake["libvirt"]["virt_type"] == "kvm"
    assert not fake.has_section("nova_sys_admin")


@pytest.mark.parametrize("ext", [
    configs.Extension(paste_filter=False, compute_driver=False,
                      dashboard_enabled_files=()),
    configs.Extension.stock(),
], ids=["absent", "--stock"])
def test_stock_pieces_without_the_extension(tmp_path, ext):
    assert configs.PASTE_FILTER not in configs.api_paste_ini(ext)
    lay = layout.Layout(tmp_path, layout.Ports())
    nova = configparser.ConfigParser(interpolation=None)
    nova.read_string(configs.nova_conf(lay, ext))
    assert nova["DEFAULT"]["compute_driver"] == configs.STOCK_DRIVER
    assert nova["DEFAULT"]["transport_url"] == "fake:/"


def test_stock_says_why_each_piece_is_off():
    summary = configs.Extension.stock().summary()
    assert len(summary) == 3
    assert all("off (--stock)" in line for line in summary), summary


def test_mariadb_mode_names_databases_and_exchange_per_state(tmp_path):
    ext = configs.Extension(paste_filter=True, compute_driver=True,
                            dashboard_enabled_files=())
    one = layout.Layout(tmp_path / "one", layout.Ports(), "mariadb")
    two = layout.Layout(tmp_path / "two", layout.Ports(), "mariadb")
    assert one.run_id() != two.run_id()
    nova = configparser.ConfigParser(interpolation=None)
    nova.read_string(configs.nova_conf(one, ext))
    assert nova["DEFAULT"]["compute_driver"] == configs.XLOUD_DRIVER
    assert nova["DEFAULT"]["transport_url"].startswith("rabbit://")
    assert nova["DEFAULT"]["control_exchange"] == one.run_id()
    assert f"/{one.run_id()}_nova_cell1" in nova["database"]["connection"]


ROUND_TRIP = '''
import json, sys
from pathlib import Path
from deploy.localcloud import novaservices
from nova import monkey_patch
monkey_patch.patch(backend="threading")
from nova.tests.fixtures import libvirt as fakelibvirt
from tests.nova import fakelibvirt as elastic

elastic.ElasticLibvirtFixture().setUp()
state = Path(sys.argv[1])
XML = """<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>
<memory>4194304</memory><currentMemory>1048576</currentMemory>
<vcpu current='1'>4</vcpu><os><type>hvm</type></os>
<devices><memballoon model='virtio'/></devices></domain>"""
before = novaservices.FakeHypervisor("compute1", state)
running = before.connection.defineXML(XML.format(
    name="instance-1", uuid="11111111-2222-3333-4444-555555555555"))
running.create()
running.setVcpusFlags(3, fakelibvirt.VIR_DOMAIN_AFFECT_LIVE)
before.connection.defineXML(XML.format(
    name="instance-2", uuid="11111111-2222-3333-4444-666666666666"))
before.save()

after = novaservices.FakeHypervisor("compute1", state)
print(json.dumps({"restored": after.restore(), "domains": {
    dom.name(): [bool(dom.isActive()), dom.XMLDesc(0),
                 dom.XMLDesc(fakelibvirt.VIR_DOMAIN_XML_INACTIVE)]
    for dom in after.connection.listAllDomains(
        fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        | fakelibvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)}}))
'''


def test_guests_survive_a_restart_with_their_live_size(tmp_path):
    """What a compute host saves on stop and defines again on start.

    Runs in its own interpreter: Nova's fixtures decide the process's
    concurrency mode when first imported.
    """
    result = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=layout.REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["restored"] == 2
    active, live, persistent = out["domains"]["instance-1"]
    assert active
    assert "<vcpu current=\"3\">4</vcpu>" in live
    assert "<vcpu current=\"1\">4</vcpu>" in persistent
    assert out["domains"]["instance-2"][0] is False
