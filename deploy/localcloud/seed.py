"""Seed the local cloud through its public APIs (openstacksdk).

The guest images first (:func:`upload_guest_images`, also for a cloud that
is not seeded otherwise): the tiny Linux guest of ``guestimage``, a Debian
kernel and a busybox initramfs, with the balloon driver and the QEMU guest
agent, without the balloon driver, and without the agent, each as a
kernel, a ramdisk and a blank root disk that boots them; a cloud on a
real hypervisor can also hold the guest that loads virtio-mem's driver
(:data:`QEMU_GUEST_KINDS`).
Then two projects with a member user, flavors with and without elastic
minimums, and about twenty instances spread by the scheduler over both
compute hosts: most running, some stopped, some locked, one in error.
Seeding runs once per state directory; a restarted cloud keeps what it had.
"""

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openstack
import yaml

from deploy.localcloud import guestimage, hypervisor
from deploy.localcloud import layout as layout_mod
from deploy.localcloud.layout import Layout

Say = Callable[[str], None]


class SeedError(RuntimeError):
    """An instance could not be brought to its seeded state."""

# name: (vcpus, memory_mb, minimum_cpu, minimum_memory)
FLAVORS = {
    "x1.tiny": (1, 512, None, None),
    "x1.small": (2, 2048, None, None),
    "x1.elastic": (4, 4096, 1, 1024),
    "x1.elastic-large": (8, 8192, 2, 2048),
}

# A real host offers no more vCPUs to one guest than it has CPUs (Nova's
# VCPU max_unit), two on the machines this runs on; its guests are kept
# small too, as every one is a QEMU process.
QEMU_FLAVORS = {
    "x1.tiny": (1, 256, None, None),
    "x1.elastic": (2, 1024, 1, 512),
}

# (project, flavor, count, final state)
INSTANCES = (
    ("demo", "x1.elastic", 4, "active"),
    ("demo", "x1.small", 2, "active"),
    ("demo", "x1.elastic-large", 1, "active"),
    ("demo", "x1.elastic", 2, "stopped"),
    ("demo", "x1.elastic", 1, "locked"),
    ("demo", "x1.tiny", 1, "error"),
    ("research", "x1.elastic", 3, "active"),
    ("research", "x1.elastic-large", 2, "active"),
    ("research", "x1.tiny", 1, "active"),
    ("research", "x1.small", 1, "stopped"),
    ("research", "x1.elastic", 1, "locked"),
)
# On a real hypervisor every instance is a QEMU process, under TCG an
# emulated one: a few, each state and each flavor kind once.
QEMU_INSTANCES = (
    ("demo", "x1.elastic", 2, "active"),
    ("demo", "x1.tiny", 1, "stopped"),
    ("research", "x1.elastic", 1, "active"),
)

COMPUTE_MICROVERSION = "2.79"
# Boots in small batches: two cores and SQLite do not need 20 at once.
BOOT_BATCH = 5
# The extra specs of nova_ext.sizing (MINIMUM_CPU, MINIMUM_MEMORY); that
# module needs Nova's objects registered, which the launcher does not do.
MINIMUM_CPU = "xloud:minimum_cpu"
MINIMUM_MEMORY = "xloud:minimum_memory"


def connect(lay: Layout, username: str, password: str,
            project: str) -> openstack.connection.Connection:
    return openstack.connect(
        auth_url=lay.url("keystone"), username=username, password=password,
        project_name=project, user_domain_id="default",
        project_domain_id="default", region_name=layout_mod.REGION,
        compute_api_version=COMPUTE_MICROVERSION)


def admin_connection(lay: Layout,
                     project: str = layout_mod.ADMIN_PROJECT
                     ) -> openstack.connection.Connection:
    return connect(lay, layout_mod.ADMIN_USER, layout_mod.ADMIN_PASSWORD,
                   project)


def write_clouds_yaml(lay: Layout) -> None:
    def cloud(user: str, password: str, project: str) -> dict:
        return {"auth": {"auth_url": lay.url("keystone"),
                         "username": user, "password": password,
                         "project_name": project,
                         "user_domain_id": "default",
                         "project_domain_id": "default"},
                "region_name": layout_mod.REGION,
                "identity_api_version": 3}
    clouds = {"clouds": {
        "localcloud-admin": cloud(layout_mod.ADMIN_USER,
                                  layout_mod.ADMIN_PASSWORD,
                                  layout_mod.ADMIN_PROJECT),
        "localcloud-demo": cloud(layout_mod.MEMBER_USER,
                                 layout_mod.MEMBER_PASSWORD,
                                 layout_mod.PROJECTS[0]),
    }}
    path = lay.state / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds, sort_keys=False))
    path.chmod(0o600)


def _identity(conn: openstack.connection.Connection, say: Say) -> None:
    ident = conn.identity
    member = ident.find_role("member")
    admin_user = ident.find_user(layout_mod.ADMIN_USER, domain_id="default")
    for name in layout_mod.PROJECTS:
        project = ident.find_project(name, domain_id="default") or \
            ident.create_project(name=name, domain_id="default",
                                 description="local cloud demo project")
        # The admin boots the seeded instances inside each project (the
        # role is taken back once they are up, see seed()).
        ident.assign_project_role_to_user(project, admin_user, member)
    demo = ident.find_project(layout_mod.PROJECTS[0], domain_id="default")
    user = ident.find_user(layout_mod.MEMBER_USER, domain_id="default")
    if user is None:
        user = ident.create_user(name=layout_mod.MEMBER_USER,
                                 password=layout_mod.MEMBER_PASSWORD,
                                 domain_id="default",
                                 default_project_id=demo.id)
    ident.assign_project_role_to_user(demo, user, member)
    say(f"seed: projects {', '.join(layout_mod.PROJECTS)}; users "
        f"{layout_mod.ADMIN_USER} (admin), {layout_mod.MEMBER_USER} "
        f"(member of {demo.name})")


def _flavors(conn: openstack.connection.Connection, say: Say,
             flavors: dict) -> None:
    for name, (vcpus, ram, min_cpu, min_mem) in flavors.items():
        flavor = conn.compute.find_flavor(name) or conn.compute.create_flavor(
            name=name, vcpus=vcpus, ram=ram, disk=1, is_public=True)
        specs = {}
        if min_cpu:
            specs[MINIMUM_CPU] = str(min_cpu)
        if min_mem:
            specs[MINIMUM_MEMORY] = str(min_mem)
        if specs:
            conn.compute.create_flavor_extra_specs(flavor, specs)
    say("seed: flavors " + ", ".join(
        f"{n} ({v} vCPU/{r} MB"
        + (f", minimum {c}/{m}" if c else "") + ")"
        for n, (v, r, c, m) in flavors.items()))


@dataclasses.dataclass(frozen=True)
class GuestKind:
    """One guest of ``guestimage``, as Glance holds it."""

    name: str
    balloon_driver: bool
    # Its initramfs runs the QEMU guest agent, and its root disk asks
    # Nova for the agent's channel (GUEST_AGENT_PROPERTY).
    guest_agent: bool = True
    # Its /init onlines a hot-plugged CPU (as udev does on a distribution
    # image); False: the CPU stays offline until the agent onlines it.
    onlines_vcpus: bool = True
    # A fixed id for its root disk image, where the fake hypervisor knows
    # the guest by it (hypervisor.GUEST_IMAGES).
    image_id: str | None = None
    # Its initramfs also loads virtio_mem and its kernel onlines hot-added
    # memory movable (guestimage.VIRTIO_MEM_CMDLINE).
    virtio_mem: bool = False

    @property
    def kernel_name(self) -> str:
        return f"{self.name}-kernel"

    @property
    def ramdisk_name(self) -> str:
        return f"{self.name}-initramfs"

    @property
    def init_version(self) -> str:
        return guestimage.init_version(self.balloon_driver, self.guest_agent,
                                       self.onlines_vcpus, self.virtio_mem)

    @property
    def initramfs_options(self) -> dict[str, bool]:
        """What :func:`guestimage.build_initramfs` is asked for, besides
        the balloon driver."""
        return {"guest_agent": self.guest_agent,
                "onlines_cpus": self.onlines_vcpus,
                "virtio_mem": self.virtio_mem}

    @property
    def command_line(self) -> str:
        """The kernel command line its root disk boots with."""
        return (guestimage.VIRTIO_MEM_CMDLINE if self.virtio_mem
                else guestimage.KERNEL_CMDLINE)

    @property
    def root_properties(self) -> dict[str, str]:
        """What its root disk image tells Nova about the guest."""
        return {GUEST_AGENT_PROPERTY: "yes"} if self.guest_agent else {}


# Nova adds the guest agent's virtio-serial channel to the domain of an
# image with this property (LibvirtDriver._set_qemu_guest_agent).
GUEST_AGENT_PROPERTY = "hw_qemu_guest_agent"
GUEST_IMAGE = "localcloud-guest"
# Uploaded in this order: Glance lists the newest image first, and the
# seed, the tests and people boot the first image listed.  Each kind is
# the guest hypervisor.GUEST_IMAGES describes (the fake hypervisor's
# GuestBehaviour defaults for what it leaves out).
GUEST_KINDS = (
    *(GuestKind(name, behaviour.get("balloon_driver", True),
                guest_agent=behaviour.get("guest_agent", True),
                onlines_vcpus=behaviour.get("onlines_vcpus", True),
                image_id=image_id)
      for image_id, (name, behaviour) in hypervisor.GUEST_IMAGES.items()),
    GuestKind(GUEST_IMAGE, balloon_driver=True),
)
# The default guest with virtio-mem's driver as well, for flavors with
# xloud:memory_model=virtio-mem.  QEMU plugs the memory; the fake
# hypervisor has no virtio-mem device, so only a cloud on a real
# hypervisor gets it.  It is uploaded before the default guest, which
# stays the newest image.
VIRTIO_MEM_GUEST_IMAGE = "localcloud-guest-virtio-mem"
QEMU_GUEST_KINDS = (
    *GUEST_KINDS[:-1],
    GuestKind(VIRTIO_MEM_GUEST_IMAGE, balloon_driver=True, virtio_mem=True),
    GUEST_KINDS[-1],
)
# Property of a ramdisk image: the guestimage.init_version it was built as.
INIT_VERSION = "xloud_guest_init"
# The guest runs from its initramfs and never mounts its root disk.
ROOT_DISK_MIB = 4


def _active(image) -> bool:
    return image is not None and image.status == "active"


def upload_guest_images(conn: openstack.connection.Connection, say: Say,
                        cache_dir: Path = guestimage.CACHE_DIR,
                        kinds: tuple[GuestKind, ...] = GUEST_KINDS) -> None:
    """Put ``kinds`` into Glance, public, unless already there, in their
    order (the last is the newest image).

    The kernel is downloaded from Debian once into ``cache_dir``; the
    initramfs is built only for an image that is missing.  A root disk
    already there is given the properties of its kind it lacks
    (``hw_qemu_guest_agent``), without an upload.
    """
    images = {image.name: image for image in conn.image.images()}
    wanted = [name for kind in kinds
              for name in (kind.kernel_name, kind.ramdisk_name, kind.name)]
    for name in wanted:
        if name in images and not _active(images[name]):
            raise SeedError(
                f"image {name} ({images[name].id}) is {images[name].status}, "
                f"not active: an upload was cut short. Delete it (openstack "
                f"image delete {images[name].id}) or start with --wipe.")
    stale = {}
    for kind in kinds:
        ramdisk = images.get(kind.ramdisk_name)
        if ramdisk is not None and (ramdisk.properties or {}).get(
                INIT_VERSION) != kind.init_version:
            # Built by an older guestimage: its guest behaves otherwise.
            stale[kind.ramdisk_name] = images.pop(kind.ramdisk_name)
    if all(name in images for name in wanted):
        for kind in kinds:
            _update_root(conn, say, kind, images[kind.name], {})
        say("seed: guest images already in Glance: "
            + ", ".join(kind.name for kind in kinds))
        return

    try:
        _build_and_upload(conn, say, images, cache_dir, kinds)
    except guestimage.GuestImageUnavailable as exc:
        raise SeedError(f"the guest images cannot be built: {exc}") from None
    for name, image in stale.items():
        say(f"seed: deleting the outdated image {name} ({image.id})")
        conn.image.delete_image(image)


def _build_and_upload(conn: openstack.connection.Connection, say: Say,
                      images: dict, cache_dir: Path,
                      kinds: tuple[GuestKind, ...]) -> None:
    kernel = guestimage.fetch_kernel(
        cache_dir, progress=lambda line: say(f"seed: {line}"))
    with tempfile.TemporaryDirectory(prefix="localcloud-guest-") as tmp:
        root_disk = Path(tmp) / "root.raw"
        with root_disk.open("wb") as disk:
            disk.truncate(ROOT_DISK_MIB * 1024 * 1024)
        for kind in kinds:
            kernel_image = images.get(kind.kernel_name) or _upload(
                conn, say, kind.kernel_name, kernel.vmlinuz, "aki")
            ramdisk_image = images.get(kind.ramdisk_name)
            if ramdisk_image is None:
                guest = guestimage.build_initramfs(
                    kernel, Path(tmp) / f"{kind.name}.initrd",
                    kind.balloon_driver, **kind.initramfs_options)
                ramdisk_image = _upload(
                    conn, say, kind.ramdisk_name, guest.initrd, "ari",
                    **{INIT_VERSION: kind.init_version})
            boots = {"kernel_id": kernel_image.id,
                     "ramdisk_id": ramdisk_image.id,
                     "os_command_line": kind.command_line}
            root = images.get(kind.name)
            if root is None:
                if kind is kinds[-1]:
                    # Glance may keep creation times to the second: a
                    # second apart, this image is the newest.
                    time.sleep(1)
                extra = {"id": kind.image_id} if kind.image_id else {}
                _upload(conn, say, kind.name, root_disk, "raw", **boots,
                        **kind.root_properties, **extra)
            else:
                _update_root(conn, say, kind, root, boots)


def _update_root(conn: openstack.connection.Connection, say: Say,
                 kind: GuestKind, root, boots: dict[str, str]) -> None:
    """Bring a root disk image uploaded earlier up to ``kind``: a kernel
    or ramdisk uploaded again (``boots``), a property it lacks (a Glance
    seeded before the guest ran the agent).  Glance takes both without
    the image's data being uploaded again.

    A server booted before keeps the domain Nova defined for it (Nova
    copies the image's properties into the instance at boot): only new
    servers get the agent's channel.
    """
    changes = {key: value
               for key, value in {**boots, **kind.root_properties}.items()
               if getattr(root, key, None) != value}
    if not changes:
        return
    added = sorted(set(changes) & set(kind.root_properties))
    if added:
        say(f"seed: image {kind.name} ({root.id}): setting "
            + ", ".join(f"{key}={changes[key]}" for key in added))
    conn.image.update_image(root, **changes)


def _upload(conn: openstack.connection.Connection, say: Say, name: str,
            path: Path, disk_format: str, **properties: str):
    size_mib = path.stat().st_size / (1024 * 1024)
    say(f"seed: uploading image {name} ({disk_format}, {size_mib:.1f} MiB)")
    container_format = "bare" if disk_format == "raw" else disk_format
    return conn.image.create_image(
        name, filename=str(path), disk_format=disk_format,
        container_format=container_format, visibility="public",
        allow_duplicates=True, validate_checksum=True, **properties)


def _image_id(conn: openstack.connection.Connection) -> str:
    return conn.image.find_image(GUEST_IMAGE, ignore_missing=False).id


def _wait(conn: openstack.connection.Connection, ids: list[str],
          status: str, say: Say, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        servers = {s.id: s for s in conn.compute.servers(all_projects=True)}
        failed = [i for i in ids if servers[i].status == "ERROR"]
        if failed:
            raise SeedError(
                f"seeding failed: instance {failed[0]} went to ERROR: "
                f"{servers[failed[0]].fault}")
        done = sum(servers[i].status == status for i in ids)
        if done != last:
            say(f"seed: {done}/{len(ids)} instances {what}")
            last = done
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise SeedError(f"seeding timed out: {done}/{len(ids)} "
                               f"instances {what} after {timeout:.0f} s")
        time.sleep(1)


def seed(lay: Layout, say: Say) -> None:
    write_clouds_yaml(lay)
    done = lay.state / "db" / ".done-seed"
    if done.exists():
        say("seed: already seeded (state kept from the previous run)")
        return
    admin = admin_connection(lay)
    _identity(admin, say)
    qemu = lay.hypervisor == "qemu"
    _flavors(admin, say, QEMU_FLAVORS if qemu else FLAVORS)
    image = _image_id(admin)

    instances = QEMU_INSTANCES if qemu else INSTANCES
    total = sum(count for _, _, count, _ in instances)
    say(f"seed: booting {total} instances, {BOOT_BATCH} at a time")
    plan = [(project, flavor_name, final)
            for project, flavor_name, count, final in instances
            for _ in range(count)]
    created: list[tuple[str, str]] = []
    connections = {p: admin_connection(lay, p) for p in layout_mod.PROJECTS}
    for start in range(0, len(plan), BOOT_BATCH):
        batch = []
        for project, flavor_name, final in plan[start:start + BOOT_BATCH]:
            conn = connections[project]
            flavor = conn.compute.find_flavor(flavor_name)
            name = (f"{project}-{flavor_name.split('.')[1]}-"
                    f"{len(created) + len(batch):02d}")
            server = conn.compute.create_server(
                name=name, image_id=image, flavor_id=flavor.id,
                networks="none")
            batch.append((server.id, final))
        _wait(admin, [sid for sid, _ in batch], "ACTIVE", say,
              f"of batch {start // BOOT_BATCH + 1} active")
        created += batch

    stopped = [sid for sid, final in created if final == "stopped"]
    for sid in stopped:
        admin.compute.stop_server(sid)
    _wait(admin, stopped, "SHUTOFF", say, "stopped")
    for sid, final in created:
        if final == "locked":
            admin.compute.lock_server(sid, locked_reason="seeded: locked")
        elif final == "error":
            # As an operator marks a broken guest (``nova reset-state``).
            admin.compute.reset_server_state(sid, "error")
    # Horizon scopes a login to the first project the user has a role in
    # (unordered): leave the admin with its own project only, so that its
    # dashboard session is always the admin project's.
    ident = admin.identity
    member = ident.find_role("member")
    admin_user = ident.find_user(layout_mod.ADMIN_USER, domain_id="default")
    for name in layout_mod.PROJECTS:
        ident.unassign_project_role_from_user(
            ident.find_project(name, domain_id="default"), admin_user, member)
    hosts: dict[str, int] = {}
    for server in admin.compute.servers(all_projects=True):
        hosts[server.compute_host] = hosts.get(server.compute_host, 0) + 1
    say("seed: instances per host: " + ", ".join(
        f"{h}={n}" for h, n in sorted(hosts.items(), key=str)))
    done.touch()
