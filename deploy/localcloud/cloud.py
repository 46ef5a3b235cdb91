"""Bring the whole local cloud up, in dependency order, and keep it up."""

import concurrent.futures
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable

from deploy.localcloud import bootstrap, configs, seed
from deploy.localcloud import layout as layout_mod
from deploy.localcloud.control import ControlServer
from deploy.localcloud.layout import Layout
from deploy.localcloud.supervisor import (
    PYTHON,
    Child,
    ServiceFailed,
    Supervisor,
    child_env,
    http_ready,
    log_ready,
)

Say = Callable[[str], None]


class CloudError(RuntimeError):
    """A problem the person starting the cloud can fix; printed as is."""


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop()


def check_prerequisites(lay: Layout) -> None:
    try:
        layout_mod.check_ports_free(lay.ports)
    except layout_mod.PortInUse as exc:
        raise CloudError(str(exc)) from None
    if lay.mode == "mariadb":
        for what, hp in (("MariaDB", layout_mod.MARIADB_HOST_PORT),
                         ("RabbitMQ", layout_mod.RABBITMQ_HOST_PORT)):
            if not layout_mod.reachable(hp):
                raise CloudError(
                    f"--mode mariadb needs {what} at {hp[0]}:{hp[1]}, which "
                    f"does not answer. Start it, or use the default mode "
                    f"(SQLite and the in-process transport).")
    if lay.hypervisor == "qemu":
        from deploy.localcloud import libvirthost
        missing = libvirthost.missing_prerequisites()
        if missing:
            raise CloudError("--hypervisor qemu needs " + "; ".join(missing))
    kind_file = lay.state / "nova" / "hypervisor-kind"
    if kind_file.exists() and kind_file.read_text().strip() != lay.hypervisor:
        raise CloudError(
            f"{lay.state} holds a cloud of --hypervisor "
            f"{kind_file.read_text().strip()}, whose instances this "
            f"hypervisor does not have: start it with that option, or "
            f"with --wipe to start afresh.")


def wipe(lay: Layout, say: Say) -> None:
    if not lay.state.exists():
        return
    # Refuses (CloudError) while a launcher runs from this directory.
    _lock(lay).close()
    if (lay.state / "secrets.json").exists() and layout_mod.reachable(
            layout_mod.MARIADB_HOST_PORT):
        dropped = bootstrap.drop_mariadb_databases(lay)
        if dropped:
            say(f"wipe: dropped MariaDB databases {', '.join(dropped)}")
    shutil.rmtree(lay.state)
    say(f"wipe: removed {lay.state}")


def _lock(lay: Layout):
    lay.state.mkdir(parents=True, exist_ok=True)
    handle = lay.lock_file.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        raise CloudError(
            f"a local cloud is already running from {lay.state} (launcher "
            f"pid {pid}); stop it with Ctrl-C in its terminal first, or "
            f"use another --state-dir.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _nova_children(lay: Layout) -> list[Child]:
    base = [PYTHON, "-m", "deploy.localcloud.novaservices",
            "--config-dir", str(lay.etc / "nova"),
            "--hypervisor-state", str(lay.hypervisor_state)]
    if lay.hypervisor == "qemu":
        base += ["--libvirt-hosts", str(lay.libvirt_hosts)]
    env = child_env()

    def child(name: str, args: list[str], ready,
              stop_last: bool = False) -> Child:
        return Child(name, base + args, lay.logs / f"{name}.log", env,
                     ready, timeout=240, stop_last=stop_last)

    api_ready = http_ready(lay.url("nova"))
    if lay.mode == "sqlite":
        args = ["--api", str(lay.ports.nova), "--conductor", "--scheduler"]
        for host in layout_mod.COMPUTE_HOSTS:
            args += ["--compute", host]
        return [child("nova", args, api_ready)]
    children = [
        # The other services reach the database through it.
        child("nova-conductor", ["--conductor"],
              log_ready("nova: ready"), stop_last=True),
        child("nova-scheduler", ["--scheduler"], log_ready("nova: ready")),
    ]
    children += [child(f"nova-{host}", ["--compute", host],
                       log_ready("nova: ready"))
                 for host in layout_mod.COMPUTE_HOSTS]
    children.append(child("nova-api", ["--api", str(lay.ports.nova)],
                          api_ready))
    return children


def _libvirt_children(lay: Layout) -> list[Child]:
    """One libvirtd per compute host (``--hypervisor qemu``).

    Stopped after Nova: a nova-compute still running would see its guests
    power off and record them as stopped, and would not boot them again
    on the next start.
    """
    return [Child(f"libvirt-{host}",
                  [PYTHON, "-m", "deploy.localcloud.libvirthost",
                   "--root", str(lay.libvirt_hosts / host), "--host", host],
                  lay.logs / f"libvirt-{host}.log", child_env(),
                  log_ready("libvirt: "), timeout=90, stop_last=True)
            for host in layout_mod.COMPUTE_HOSTS]


def _probe_virt_type(lay: Layout, say: Say) -> str:
    """KVM if a guest really runs under it here, else QEMU's TCG."""
    from deploy.localcloud import guestimage, libvirthost

    kernel = guestimage.fetch_kernel(progress=say)
    probe = guestimage.build_initramfs(
        kernel, lay.state / "nova" / "kvm-probe.initrd", balloon_driver=False)
    # What the machine can run, not the cloud: kept beside the kernel, so
    # a wiped state directory does not probe again.
    virt_type = libvirthost.virt_type(
        probe.kernel, probe.initrd, guestimage.CACHE_DIR / "virt-type.json")
    say(f"hypervisor: real QEMU, virt_type {virt_type}"
        + ("" if virt_type == "kvm" else
           " (KVM does not run a guest here: TCG emulation)"))
    return virt_type


def _horizon_child(lay: Layout) -> Child:
    env = child_env({
        "DJANGO_SETTINGS_MODULE": "deploy.localcloud.horizon_settings",
        "LOCALCLOUD_STATE": str(lay.state),
        "LOCALCLOUD_KEYSTONE_URL": lay.url("keystone"),
        "LOCALCLOUD_SECRET_KEY": lay.secret("django_secret_key"),
    })
    argv = [PYTHON, "-m", "django", "runserver", "--noreload", "--insecure",
            f"{layout_mod.HOST}:{lay.ports.horizon}"]
    # The login page compiles Horizon's stylesheets on first use: waiting
    # for it here means the first person to open the URL does not wait.
    return Child("horizon", argv, lay.logs / "horizon.log", env,
                 http_ready(lay.dashboard_url + "auth/login/", ok=(200,)),
                 timeout=300)


def up(lay: Layout, say: Say, *, do_seed: bool = True,
       xloud_options: dict[str, object] | None = None,
       autopilot: dict[str, object] | None = None,
       stock: bool = False) -> int:
    """Start everything, then watch the services until Ctrl-C or SIGTERM.

    ``xloud_options`` go to the ``[xloud]`` section of nova.conf,
    ``autopilot`` to its ``[xloud_autopilot]`` section; ``stock``
    leaves every piece of this project out (Nova's own driver and API,
    Horizon without the plugin), to compare with.
    """
    check_prerequisites(lay)
    lock = _lock(lay)
    sup = Supervisor(say)
    control = ControlServer(lay.control_socket, sup, say)
    previous = {s: signal.signal(s, _on_signal)
                for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        ext = (configs.Extension.stock() if stock
               else configs.Extension.detect())
        for line in ext.summary():
            say(line)
        virt_type = (_probe_virt_type(lay, say) if lay.hypervisor == "qemu"
                     else "kvm")
        configs.write_all(lay, ext, xloud_options, virt_type,
                          autopilot)
        (lay.state / "nova" / "hypervisor-kind").write_text(lay.hypervisor)
        if lay.mode == "mariadb":
            bootstrap.create_mariadb_databases(lay, say)

        # Placement's, Glance's and Nova's databases do not need Keystone:
        # create them while Keystone sets up and starts.
        databases = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bootstrap")
        prepared = databases.submit(_prepare_databases, lay, say)
        databases.shutdown(wait=False)

        bootstrap.keystone(lay, say)
        bootstrap.sqlite_wal(lay, "keystone")
        sup.start(Child(
            "keystone",
            [PYTHON, "-m", "deploy.localcloud.wsgi_server", "keystone",
             str(lay.ports.keystone), str(lay.etc / "keystone")],
            lay.logs / "keystone.log", child_env(),
            http_ready(lay.url("keystone")), timeout=120, stop_last=True))
        bootstrap.catalog(lay, say)

        prepared.result()
        sup.start(Child(
            "placement",
            [PYTHON, "-m", "deploy.localcloud.wsgi_server", "placement",
             str(lay.ports.placement), str(lay.etc / "placement")],
            lay.logs / "placement.log", child_env(),
            http_ready(lay.url("placement")), timeout=120, stop_last=True))
        sup.start(Child(
            "glance",
            [PYTHON, "-m", "deploy.localcloud.wsgi_server", "glance",
             str(lay.ports.glance), str(lay.etc / "glance")],
            lay.logs / "glance.log", child_env(),
            http_ready(lay.url("glance")), timeout=120))
        # Nova needs the images only to boot: they are built and uploaded
        # (the kernel downloaded, the first time) while Nova starts.
        uploads = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="images")
        guest_images = uploads.submit(
            seed.upload_guest_images, seed.admin_connection(lay), say,
            kinds=(seed.QEMU_GUEST_KINDS if lay.hypervisor == "qemu"
                   else seed.GUEST_KINDS))
        uploads.shutdown(wait=False)

        if lay.hypervisor == "qemu":
            for child in _libvirt_children(lay):
                sup.start(child)
        for child in _nova_children(lay):
            sup.start(child)
        if lay.mode == "mariadb":
            bootstrap.discover_hosts(lay)
            say("nova: compute hosts mapped to cell1")

        sup.start(_horizon_child(lay))

        guest_images.result()
        if do_seed:
            seed.seed(lay, say)

        control.open()
        lay.run_file.write_text(json.dumps(
            {**lay.describe(), "pid": os.getpid()}, indent=2))
        _print_banner(lay, say, time.monotonic() - started)
        while True:
            failed = sup.failed()
            if failed is not None:
                raise ServiceFailed(
                    f"{failed.name} stopped unexpectedly (exit "
                    f"{failed.proc.returncode}); last lines of "
                    f"{failed.log}:\n    {failed.tail()}")
            for child in sup.children:
                for line in child.new_progress_lines():
                    say(line)
            control.serve(timeout=1)
    except _Stop:
        say("stopping the local cloud")
        return 0
    except (ServiceFailed, bootstrap.BootstrapError, seed.SeedError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        lay.run_file.unlink(missing_ok=True)
        control.close()
        sup.stop_all()
        lock.close()


def _prepare_databases(lay: Layout, say: Say) -> None:
    bootstrap.placement(lay, say)
    bootstrap.glance(lay, say)
    bootstrap.nova(lay, say)
    bootstrap.sqlite_wal(lay, "placement", "glance", "nova_api",
                         "nova_cell0", "nova_cell1")


def _print_banner(lay: Layout, say: Say, seconds: float) -> None:
    lines = [
        "",
        f"The local cloud is up ({lay.mode} mode, {seconds:.0f} s).",
        f"  Dashboard:  {lay.dashboard_url}",
        f"  Admin:      {layout_mod.ADMIN_USER} / "
        f"{layout_mod.ADMIN_PASSWORD}  (Admin > Compute > Elastic Sizing)",
        f"  Member:     {layout_mod.MEMBER_USER} / "
        f"{layout_mod.MEMBER_PASSWORD}  (project "
        f"{layout_mod.PROJECTS[0]})",
        f"  Keystone:   {lay.url('keystone')}",
        f"  Nova API:   {lay.url('nova')}",
        f"  Placement:  {lay.url('placement')}",
        f"  Glance:     {lay.url('glance')}",
        f"  CLI:        export OS_CLIENT_CONFIG_FILE="
        f"{lay.state / 'clouds.yaml'} OS_CLOUD=localcloud-admin",
        f"  State:      {lay.state} (logs in {lay.logs})",
        "Press Ctrl-C to stop; `make up` again restarts with the same "
        "state, `--wipe` starts afresh.",
    ]
    for line in lines:
        say(line)
    sys.stdout.flush()
