"""The real hypervisor of a local cloud compute host (``--hypervisor qemu``).

``python -m deploy.localcloud.libvirthost --root DIR --host NAME``

Each compute host gets a libvirtd of its own, run as root in system mode,
as on a production compute node, but in a private mount namespace whose
``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt`` and ``/var/log/libvirt`` are directories under
``DIR``, and in a UTS namespace whose host name is ``NAME``: two hosts
share one machine without sharing a domain, and the machine's own libvirt
is never read or written.  QEMU processes started by the daemon live in the
same namespaces.  nova-compute reaches the daemon
through ``qemu+unix:///system?socket=DIR/run/libvirt-sock``
(:func:`connection_uri`).

This process stays the daemon's parent.  Stopped (SIGTERM or SIGINT, as the
launcher stops every service), it powers the host's guests off the way a
host shutdown without ``libvirt-guests`` would, then stops the daemon: no
QEMU process outlives the cloud, and nova-compute, started again with
``resume_guests_state_on_host_boot``, boots the guests that should be
running, through the same hard-reboot path the extension claims capacity
on.  Killed (SIGKILL), it leaves the daemon and its guests running, as a
crashed management process would; the next start finds the guests through
the status files the daemon keeps under ``DIR/run``.
"""

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from deploy.localcloud import guestimage, supervisor

# Where libvirt's system daemon keeps its state: each is bind-mounted from
# the host's own directory.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
SOCKET_NAME = "libvirt-sock"
LIBVIRTD = "/usr/sbin/libvirtd"
HOST_UUID_NAMESPACE = uuid.UUID("0d3c7a8e-52b4-4d55-9a40-1c2e5a6f7b80")

LIBVIRTD_CONF = """\
# Written by deploy/localcloud/libvirthost.py.
# Only nova-compute (root) connects, over this host's own socket.
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
# Both hosts run on one machine: without a UUID of its own, each would
# report the machine's SMBIOS UUID and look like the other to libvirt.
host_uuid = "{host_uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

QEMU_CONF = """\
# Written by deploy/localcloud/libvirthost.py.
# QEMU runs as root, as the daemon does: Nova's disk files under the
# instances path are root's, and there is no DAC relabelling to do.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
# No AppArmor or SELinux in this container.
security_driver = "none"
# The container's cgroup hierarchy is not the daemon's to manage.
cgroup_controllers = [ ]
# /dev of the guests stays the machine's (no per-guest mount namespace).
namespaces = [ ]
# QEMU writes its own stdio and chardev logs (Nova's console.log): no
# virtlogd daemon is needed beside this one.
stdio_handler = "file"
"""


PRIVSEP_SECTIONS = ("nova_sys_admin", "privsep_osbrick",
                    "vif_plug_ovs_privileged",
                    "vif_plug_linux_bridge_privileged")
KVM_PROBE_SECONDS = 10


def nova_options(nova_etc: Path, virt_type: str) -> dict[str, dict]:
    """What nova.conf needs for its computes to run real guests here."""
    sections: dict[str, dict] = {
        "DEFAULT": {
            # Stopping the cloud powers its hosts' guests off
            # (power_off_guests); starting it boots those Nova still
            # counts as running, as a compute node does after a reboot.
            "resume_guests_state_on_host_boot": True,
        },
        "libvirt": {
            "virt_type": virt_type,
            # TCG emulates a generic CPU: there is no host model to copy.
            "cpu_mode": "host-model" if virt_type == "kvm" else "none",
        },
        "xloud": {
            # The project's guest loads its balloon driver within seconds
            # of its start, even under TCG; a guest without one is known
            # for what it is after this, not the default two minutes.
            "boot_memory_confirm_timeout": 45,
        },
    }
    # nova-compute runs as root without sudo: each privsep context starts
    # its helper directly, as devstack does for a root deployment.
    helper = Path(sys.prefix) / "bin" / "privsep-helper"
    for section in PRIVSEP_SECTIONS:
        sections[section] = {
            "helper_command": f"{helper} --config-dir {nova_etc}"}
    return sections


def virt_type(kernel: Path, initrd: Path, cache: Path) -> str:
    """``kvm`` when a guest really runs under KVM here, ``qemu`` otherwise.

    ``/dev/kvm`` opening, or even creating a VM, is not enough: on some
    nested hosts a KVM guest stops after the firmware.  So the project's
    own guest boots under KVM for a few seconds; the answer is kept in
    ``cache`` until the machine reboots.
    """
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    if cache.exists():
        known = json.loads(cache.read_text())
        if known.get("boot_id") == boot_id:
            return known["virt_type"]
    found = "kvm" if _boots_under_kvm(kernel, initrd) else "qemu"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": boot_id, "virt_type": found}))
    return found


def _boots_under_kvm(kernel: Path, initrd: Path) -> bool:
    if not Path("/dev/kvm").exists():
        return False
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35",
            "-m", "256", "-display", "none", "-nodefaults", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel), "-initrd",
            str(initrd), "-append", guestimage.KERNEL_CMDLINE]
    try:
        probe = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
    except OSError:
        return False
    # The guest never powers off by itself: stop it at the first line it
    # prints, or when the time is up.
    deadline = time.monotonic() + KVM_PROBE_SECONDS
    seen = b""
    try:
        while time.monotonic() < deadline and probe.poll() is None:
            ready, _, _ = select.select([probe.stdout], [], [], 0.5)
            if ready:
                seen += os.read(probe.stdout.fileno(), 4096)
                if f"{guestimage.STATUS_PREFIX} boot".encode() in seen:
                    return True
        return False
    finally:
        probe.kill()
        probe.wait()


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a host's daemon, as sentences."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: the daemons run in mount namespaces of their "
                       "own, as libvirt's system daemon runs as root")
    for program, package in ((LIBVIRTD, "libvirt-daemon-system"),
                             ("qemu-system-x86_64", "qemu-system-x86"),
                             ("qemu-img", "qemu-utils"),
                             ("unshare", "util-linux")):
        if shutil.which(program) is None:
            missing.append(f"{program} (Debian package {package}; "
                           f"`make setup` installs it)")
    return missing


def socket_path(root: Path) -> Path:
    return root / "run" / SOCKET_NAME


def connection_uri(root: Path) -> str:
    """``[libvirt] connection_uri`` of the host whose daemon lives in root."""
    return f"qemu+unix:///system?socket={socket_path(root)}"


def write_config(root: Path, hostname: str) -> None:
    for name in PRIVATE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    host_uuid = uuid.uuid5(HOST_UUID_NAMESPACE, hostname)
    (root / "etc" / "libvirtd.conf").write_text(
        LIBVIRTD_CONF.format(host_uuid=host_uuid))
    (root / "etc" / "qemu.conf").write_text(QEMU_CONF)


def daemon_argv(root: Path, hostname: str) -> list[str]:
    """libvirtd in new mount and UTS namespaces: the private directories,
    and the host's name, which libvirt reports and Nova takes for its
    compute node's (``hypervisor_hostname``)."""
    mounts = [f"hostname {hostname}"]
    for name, target in PRIVATE_DIRS.items():
        mounts.append(f"mkdir -p {target} && "
                      f"mount --bind {root / name} {target}")
    # The daemon's socket is /run/libvirt/libvirt-sock inside the
    # namespace, which is root/run/libvirt-sock outside.
    # Its pid file (/run/libvirtd.pid by default) goes with its state:
    # two hosts' daemons would otherwise claim the same one.
    script = (" && ".join(mounts) + " && exec " + LIBVIRTD
              + " --pid-file /run/libvirt/libvirtd.pid")
    return ["unshare", "--mount", "--uts", "--propagation", "private", "--",
            "sh", "-c", script]


def power_off_guests(uri: str) -> list[str]:
    """Destroy every running guest, as pulling the host's plug would."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        stopped = []
        active = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        for dom in conn.listAllDomains(active):
            try:
                dom.destroy()
                stopped.append(dom.name())
            except libvirt.libvirtError as exc:
                print(f"libvirt: could not stop {dom.name()}: {exc}",
                      flush=True)
        return stopped
    finally:
        conn.close()


def wait_for_socket(root: Path, daemon: subprocess.Popen,
                    timeout: float) -> None:
    import libvirt

    deadline = time.monotonic() + timeout
    while True:
        if daemon.poll() is not None:
            raise RuntimeError(f"libvirtd exited with {daemon.returncode}; "
                               f"see {root / 'log' / 'libvirtd.log'}")
        if socket_path(root).exists():
            try:
                libvirt.open(connection_uri(root)).close()
                return
            except libvirt.libvirtError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd did not answer within {timeout} s")
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="localcloud-libvirt")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--host", required=True)
    args = parser.parse_args(argv)
    # A session of its own: Ctrl-C in the launcher's terminal (or a signal
    # to its process group) reaches the launcher, which stops Nova first
    # and this host after, never both at once.
    os.setsid()
    root = args.root.resolve()
    write_config(root, args.host)
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon = subprocess.Popen(daemon_argv(root, args.host),
                              stdin=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for_socket(root, daemon, timeout=60)
        print(f"libvirt: {args.host} ready at {connection_uri(root)}",
              flush=True)
        while not stopping and daemon.poll() is None:
            time.sleep(0.5)
        if daemon.poll() is not None:
            print(f"libvirt: libvirtd of {args.host} exited with "
                  f"{daemon.returncode}", flush=True)
            return 1
        stopped = power_off_guests(connection_uri(root))
        print(f"libvirt: {args.host} powered off "
              f"({len(stopped)} guests stopped)", flush=True)
        return 0
    finally:
        supervisor.stop_process(daemon, grace=30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
