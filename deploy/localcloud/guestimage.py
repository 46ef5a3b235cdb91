"""A tiny Linux guest: a Debian kernel and a busybox initramfs.

The kernel comes from Debian's own package (``apt-get download``), unpacked
once into ``var/guest-image/`` and reused by later runs. The initramfs is
rebuilt each run (a fraction of a second): its ``/init`` optionally loads
``virtio_balloon``, optionally runs Debian's QEMU guest agent (``qemu-ga``
with the shared libraries ``ldd`` lists, from the host's
``qemu-guest-agent`` package), onlines every CPU that appears (what udev
does on a distribution image) unless told not to, powers off when the ACPI
power button is pressed and prints a status line to the serial console
whenever the guest's own view of its size changes. An image built with
``virtio_mem`` also loads ``virtio_mem`` and counts its online memory
blocks.
"""

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / 'var' / 'guest-image'

# Debian's meta package always depends on the current kernel ABI package.
KERNEL_META_PACKAGE = 'linux-image-amd64'
# The balloon driver and the PCI transport its device sits on; modinfo
# supplies what each depends on.
BALLOON_MODULES = ('virtio_pci', 'virtio_balloon')
# ACPI's power button driver: without a handler the kernel ignores the
# button's event (and refuses to enable it).
POWER_BUTTON_MODULES = ('button',)
# What is unpacked from the kernel package; a cache without one of them
# was made by an older version of this module and is unpacked again.
# The virtio-serial port the guest agent talks through.
AGENT_MODULES = ('virtio_pci', 'virtio_console')
UNPACKED_MODULES = ('./lib/modules/*/kernel/drivers/virtio/*',
                    './lib/modules/*/kernel/drivers/acpi/button.ko',
                    './lib/modules/*/kernel/drivers/char/virtio_console.ko')
# Debian's qemu-guest-agent package installs it here.
GUEST_AGENT_BINARY = pathlib.Path('/usr/sbin/qemu-ga')
# The port Nova's channel names (LibvirtDriver._add_qga_device).
AGENT_PORT_NAME = 'org.qemu.guest_agent.0'

STATUS_PREFIX = 'XLOUD-GUEST'

# Busybox shell only, no forks in the loop: under TCG every fork costs.
# cpus: online CPUs as the guest's scheduler sees them (/proc/cpuinfo).
# memtotal_kb: MemTotal; a balloon without deflate-on-OOM takes its pages
# out of it. balloon_kb: pages the balloon driver holds (its inflate and
# deflate counters in /proc/vmstat), which is the guest's view of the
# balloon whichever way the device was negotiated.
INIT_SCRIPT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
state() {
    cpus=0
    while read -r key rest; do
        [ "$key" = processor ] && cpus=$((cpus + 1))
    done < /proc/cpuinfo
    while read -r key value unit; do
        [ "$key" = MemTotal: ] && memtotal=$value && break
    done < /proc/meminfo
    inflated=0
    deflated=0
    while read -r key value; do
        case $key in
            balloon_inflate) inflated=$value ;;
            balloon_deflate) deflated=$value ;;
        esac
    done < /proc/vmstat
    now="cpus=$cpus memtotal_kb=$memtotal"
    now="$now balloon_kb=$(( (inflated - deflated) * 4 ))"@MEMORY_STATE@
}
state
echo "@PREFIX@ boot $now"
for module in @MODULES@; do
    insmod "/lib/modules/$module.ko" || echo "@PREFIX@ error insmod $module"
done
echo "@PREFIX@ ready modules=@MODULES_CSV@"@MEMORY_READY@
mkdir -p /tmp
agent=@AGENT@
# QEMU's power button (libvirt's shutdown, Nova's stop and soft reboot) is
# ACPI's fixed-feature button; with its driver loaded the kernel counts
# each press here, which stands in for acpid.
button=/sys/firmware/acpi/interrupts/ff_pwr_btn
last=
while :; do
    if [ -e "$button" ]; then
        read -r presses rest < "$button"
        if [ "$presses" != 0 ]; then
            echo "@PREFIX@ power-button"
            poweroff -f
        fi
    fi
    # The guest agent, once QEMU has named its port as Nova names it
    # (the host announces ports after the driver loaded); devtmpfs makes
    # the node, udev would make the /dev/virtio-ports/ link.
    if [ "$agent" = 1 ]; then
        for port in /sys/class/virtio-ports/*; do
            [ -e "$port/name" ] || continue
            read -r name < "$port/name"
            if [ "$name" = @AGENT_PORT@ ]; then
                /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${port##*/}" \
                    -t /tmp -f /tmp/qemu-ga.pid -l /tmp/qemu-ga.log &
                echo "@PREFIX@ agent ${port##*/}"
                agent=0
            fi
        done
    fi
    # Without it a hot-plugged CPU stays offline until the agent (or an
    # operator) onlines it, as on an image without the udev rule.
    if [ @ONLINE_CPUS@ = 1 ]; then
        for online in /sys/devices/system/cpu/cpu*/online; do
            [ -e "$online" ] || continue
            read -r value < "$online"
            [ "$value" = 0 ] && echo 1 > "$online"
        done
    fi
    state@MEMORY_FILL@
    if [ "$now" != "$last" ]; then
        echo "@PREFIX@ state $now"
        last=$now
    fi
    sleep 0.3
done
'''

KERNEL_CMDLINE = 'console=ttyS0 quiet panic=-1'

# virtio-mem: the driver, on the PCI transport its device sits on.
VIRTIO_MEM_MODULES = ('virtio_pci', 'virtio_mem')
# Debian's kernel leaves hot-added memory blocks offline (udev would online
# them); this onlines each as it is added, into ZONE_MOVABLE, whose pages
# can be migrated away: without that an unplug finds them pinned.
VIRTIO_MEM_CMDLINE = KERNEL_CMDLINE + ' memhp_default_state=online_movable'
# The status line's memory blocks (Linux's hotplug unit) online, counted
# the way the rest of state() reads: builtins only.
VIRTIO_MEM_STATE = r'''
    blocks=0
    for block in /sys/devices/system/memory/memory*/online; do
        read -r value < "$block"
        [ "$value" = 1 ] && blocks=$((blocks + 1))
    done
    now="$now memory_blocks=$blocks"'''
VIRTIO_MEM_READY = r'''
read -r block_size < /sys/devices/system/memory/block_size_bytes
read -r auto_online < /sys/devices/system/memory/auto_online_blocks
echo "@PREFIX@ memory block_size=0x$block_size auto_online=$auto_online"
fill_at_kb=0
fill_mb=0
fill_keep=0
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case $word in
        xloud.fill_at_kb=*) fill_at_kb=${word#*=} ;;
        xloud.fill_mb=*) fill_mb=${word#*=} ;;
        xloud.fill_keep=*) fill_keep=${word#*=} ;;
    esac
done
armed=0'''
# xloud.fill_at_kb=K xloud.fill_mb=N [xloud.fill_keep=1] on the kernel
# command line: the first time the memory the guest can use (MemTotal less
# the balloon) reaches K KiB after having been below it, /init writes N MiB
# to a tmpfs of its own, so that the guest has touched that memory (QEMU
# holds it from then on), and removes them again unless fill_keep=1, which
# leaves the guest's memory busy for a later unplug or inflation.
VIRTIO_MEM_FILL = r'''
    usable=$((memtotal - (inflated - deflated) * 4))
    if [ "$fill_mb" != 0 ]; then
        if [ "$usable" -lt "$fill_at_kb" ]; then
            armed=1
        elif [ "$armed" = 1 ]; then
            mkdir -p /fill
            mount -t tmpfs -o size="$fill_mb"m fill /fill
            dd if=/dev/zero of=/fill/data bs=1M count="$fill_mb" 2>/dev/null
            written=$?
            [ "$fill_keep" = 1 ] || rm /fill/data
            echo "@PREFIX@ filled mb=$fill_mb kept=$fill_keep status=$written"
            fill_mb=0
        fi
    fi'''


def _modules(balloon_driver: bool, guest_agent: bool,
             virtio_mem: bool = False) -> tuple[str, ...]:
    return (POWER_BUTTON_MODULES
            + (BALLOON_MODULES if balloon_driver else ())
            + (AGENT_MODULES if guest_agent else ())
            + (VIRTIO_MEM_MODULES if virtio_mem else ()))


def _init_script(modules: list[str], guest_agent: bool,
                 onlines_cpus: bool, virtio_mem: bool = False) -> str:
    # Without virtio-mem the placeholders vanish: the same /init, byte for
    # byte, as before the option existed.
    return (INIT_SCRIPT
            .replace('@MEMORY_STATE@', VIRTIO_MEM_STATE if virtio_mem else '')
            .replace('@MEMORY_READY@', VIRTIO_MEM_READY if virtio_mem else '')
            .replace('@MEMORY_FILL@', VIRTIO_MEM_FILL if virtio_mem else '')
            .replace('@PREFIX@', STATUS_PREFIX)
            .replace('@MODULES@', ' '.join(modules))
            .replace('@MODULES_CSV@', ','.join(modules) or 'none')
            .replace('@AGENT@', '1' if guest_agent else '0')
            .replace('@AGENT_PORT@', AGENT_PORT_NAME)
            .replace('@ONLINE_CPUS@', '1' if onlines_cpus else '0'))


def init_version(balloon_driver: bool, guest_agent: bool = False,
                 onlines_cpus: bool = True, virtio_mem: bool = False) -> str:
    """Names what an initramfs of this module runs: a changed ``/init`` or
    module list gives another (the local cloud uploads it again)."""
    script = _init_script(
        list(_modules(balloon_driver, guest_agent, virtio_mem)),
        guest_agent, onlines_cpus, virtio_mem)
    return hashlib.sha256(script.encode()).hexdigest()[:16]


class GuestImageUnavailable(Exception):
    """The guest kernel could not be obtained on this machine."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    package: str
    vmlinuz: pathlib.Path
    module_dir: pathlib.Path


@dataclasses.dataclass(frozen=True)
class GuestImage:
    kernel: pathlib.Path
    initrd: pathlib.Path
    cmdline: str
    balloon_driver: bool
    guest_agent: bool = False
    virtio_mem: bool = False


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          timeout=300, **kwargs)


def current_kernel_package(progress=print) -> str:
    """The kernel package Debian's meta package points to today.

    A machine whose package lists were never fetched (or were cleaned, as
    container images do) knows none: root fetches them once and asks again.
    """
    try:
        return _kernel_package_from_apt_cache()
    except GuestImageUnavailable:
        if os.geteuid() != 0:
            raise
    progress('apt knows no kernel package: running apt-get update')
    try:
        _run(['apt-get', 'update', '-qq'])
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestImageUnavailable(
            f'apt-get update failed (package registry unreachable?): '
            f'{getattr(exc, "stderr", "") or exc}')
    return _kernel_package_from_apt_cache()


def _kernel_package_from_apt_cache() -> str:
    try:
        out = _run(['apt-cache', 'depends', '--important',
                    KERNEL_META_PACKAGE]).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestImageUnavailable(
            f'apt-cache cannot resolve {KERNEL_META_PACKAGE}: {exc}')
    for line in out.splitlines():
        key, _, value = line.strip().partition(':')
        value = value.strip()
        if key == 'Depends' and value.startswith('linux-image-'):
            return value
    raise GuestImageUnavailable(
        f'apt-cache knows no kernel behind {KERNEL_META_PACKAGE} '
        '(apt-get update fetches the package lists)')


def _cached_kernels(cache_dir: pathlib.Path) -> list[Kernel]:
    found = []
    for stamp in sorted((cache_dir / 'kernel').glob('*/complete')):
        root = stamp.parent
        found.append(Kernel(root.name, root / 'vmlinuz', root / 'modules'))
    return found


def fetch_kernel(cache_dir: pathlib.Path = CACHE_DIR,
                 progress=print) -> Kernel:
    """The Debian kernel and its virtio modules, downloaded once."""
    try:
        package = current_kernel_package(progress)
    except GuestImageUnavailable:
        cached = _cached_kernels(cache_dir)
        if cached:
            return cached[-1]
        raise
    root = cache_dir / 'kernel' / package
    kernel = Kernel(package, root / 'vmlinuz', root / 'modules')
    if (root / 'complete').exists() and all(
            (kernel.module_dir / f'{name}.ko').exists()
            for name in POWER_BUTTON_MODULES + AGENT_MODULES):
        return kernel
    progress(f'downloading {package} into {root} (once; about 70 MB)')
    with tempfile.TemporaryDirectory(prefix='realguest-kernel-') as tmp:
        tmp = pathlib.Path(tmp)
        try:
            _run(['apt-get', 'download', '-q', package], cwd=tmp)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, 'stderr', '') or exc
            raise GuestImageUnavailable(
                f'apt-get download {package} failed (package registry '
                f'unreachable?): {detail}')
        deb = next(tmp.glob('*.deb'))
        unpacked = tmp / 'unpacked'
        unpacked.mkdir()
        progress(f'unpacking {deb.name}')
        # Through a file, not a pipe between two processes: the suite
        # imports Nova's fake libvirt, which monkey-patches eventlet, and a
        # green pipe handed to tar as its stdin reads as empty.
        tar = tmp / 'filesystem.tar'
        try:
            with open(tar, 'wb') as out:
                subprocess.run(['dpkg-deb', '--fsys-tarfile', str(deb)],
                               stdout=out, check=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise GuestImageUnavailable(
                f'dpkg-deb cannot read {deb}: {exc}')
        _run(['tar', '-x', '-f', str(tar), '-C', str(unpacked),
              '--wildcards', './boot/vmlinuz-*', *UNPACKED_MODULES])
        if root.exists():
            shutil.rmtree(root)
        kernel.module_dir.mkdir(parents=True)
        shutil.copy(next((unpacked / 'boot').glob('vmlinuz-*')),
                    kernel.vmlinuz)
        for module in unpacked.glob('lib/modules/*/kernel/drivers/*/*.ko'):
            shutil.copy(module, kernel.module_dir / module.name)
    (root / 'complete').write_text(package + '\n')
    progress(f'kernel cached: {kernel.vmlinuz}')
    return kernel


def module_load_order(module_dir: pathlib.Path,
                      modules: tuple[str, ...]) -> list[str]:
    """``modules`` and their dependencies, each after what it needs."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise GuestImageUnavailable(f'module dependency loop: {path}')
        ko = module_dir / f'{name}.ko'
        if not ko.exists():
            raise GuestImageUnavailable(
                f'{name}.ko is not among the unpacked virtio modules')
        depends = _run(['modinfo', '-F', 'depends', str(ko)]).stdout.strip()
        for dependency in filter(None, depends.split(',')):
            visit(dependency, path + (name,))
        order.append(name)

    for module in modules:
        visit(module, ())
    return order


def shared_libraries(binary: pathlib.Path) -> list[pathlib.Path]:
    """What the dynamic loader maps for ``binary``, itself included."""
    try:
        out = _run(['ldd', str(binary)]).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestImageUnavailable(f'ldd {binary} failed: {exc}')
    found = []
    for line in out.splitlines():
        # "libglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0
        # (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso..."
        words = line.split()
        path = words[2] if '=>' in words else words[0]
        if path.startswith('/'):
            found.append(pathlib.Path(path))
    return found


def build_initramfs(kernel: Kernel, target: pathlib.Path,
                    balloon_driver: bool, guest_agent: bool = False,
                    onlines_cpus: bool = True,
                    virtio_mem: bool = False) -> GuestImage:
    """Write a newc initramfs to ``target`` (overwriting it).

    ``guest_agent`` adds the QEMU guest agent (the host's
    ``qemu-guest-agent`` package, tools/setup.sh installs it);
    ``onlines_cpus`` False leaves hot-plugged CPUs offline. ``virtio_mem``
    loads the virtio-mem driver, boots with hot-added memory onlined
    movable (``VIRTIO_MEM_CMDLINE``), adds the online memory blocks to
    the status line and obeys the ``xloud.fill_*`` kernel options
    (``VIRTIO_MEM_FILL``).
    """
    modules = module_load_order(
        kernel.module_dir, _modules(balloon_driver, guest_agent, virtio_mem))
    script = _init_script(modules, guest_agent, onlines_cpus, virtio_mem)
    if guest_agent and not GUEST_AGENT_BINARY.exists():
        raise GuestImageUnavailable(
            f'{GUEST_AGENT_BINARY} is missing; install qemu-guest-agent')
    busybox = shutil.which('busybox')
    if busybox is None:
        raise GuestImageUnavailable('busybox is not installed')
    # The initramfs has no C library: only a static busybox runs there.
    linkage = subprocess.run(['ldd', busybox], capture_output=True,
                             text=True, timeout=30)
    if linkage.returncode == 0:
        raise GuestImageUnavailable(
            f'{busybox} is dynamically linked; install busybox-static')
    with tempfile.TemporaryDirectory(prefix='realguest-initramfs-') as tmp:
        tree = pathlib.Path(tmp)
        for name in ('bin', 'dev', 'proc', 'sys', 'lib/modules'):
            (tree / name).mkdir(parents=True)
        shutil.copy(busybox, tree / 'bin' / 'busybox')
        if guest_agent:
            for binary in [GUEST_AGENT_BINARY,
                           *shared_libraries(GUEST_AGENT_BINARY)]:
                copy = tree / binary.relative_to('/')
                copy.parent.mkdir(parents=True, exist_ok=True)
                # The file a library's name links to, under that name.
                shutil.copy(binary.resolve(), copy)
        for module in modules:
            shutil.copy(kernel.module_dir / f'{module}.ko',
                        tree / 'lib' / 'modules' / f'{module}.ko')
        init = tree / 'init'
        init.write_text(script)
        init.chmod(0o755)
        names = sorted(str(p.relative_to(tree)) for p in tree.rglob('*'))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix('.partial')
        with open(partial, 'wb') as archive:
            subprocess.run(['cpio', '--create', '--format=newc', '--quiet'],
                           input='\n'.join(names).encode(), stdout=archive,
                           cwd=tree, check=True, timeout=60)
        os.replace(partial, target)
    return GuestImage(kernel=kernel.vmlinuz, initrd=target,
                      cmdline=(VIRTIO_MEM_CMDLINE if virtio_mem
                               else KERNEL_CMDLINE),
                      balloon_driver=balloon_driver,
                      guest_agent=guest_agent, virtio_mem=virtio_mem)
