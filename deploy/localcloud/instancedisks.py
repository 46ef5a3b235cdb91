"""The disk files of a fake-mode instance, where Nova's driver expects them.

Nova's ``LibvirtImageBackendFixture`` hands the driver mock disks that
write nothing, and its functional tests stub ``LibvirtDriver._create_image``
out.  Nova's driver reads the files afterwards all the same: a hard reboot
(also a start) and a resize or cold migration ``os.stat`` each file disk of
the domain (``_get_instance_disk_info_from_config``), a resize copies them
with ``cp`` and converts them with ``qemu-img``.  :func:`create_image`
takes ``_create_image``'s place and makes those files: sparse raw files
(the fixture's disks say ``raw``) of the size Nova gives each disk, in the
instance directory, holding nothing.  Imports Nova inside the function, as
``deploy.localcloud.hypervisor`` does.
"""

import os

# A root disk of a flavor without one (root_gb 0) is the image's size;
# when Glance does not say, this.
ROOT_SIZE_UNKNOWN = 1024 * 1024


def create_image(driver, context, instance, disk_mapping,
                 injection_info=None, suffix="", disk_images=None,
                 block_device_info=None, fallback_from_host=None,
                 ignore_bdi_for_swap=False) -> tuple[bool, bool]:
    """``LibvirtDriver._create_image`` for the fake image backend.

    Creates the instance directory and every local file disk of
    ``disk_mapping`` that does not exist yet (an existing one is kept, as
    the image backend keeps it); returns, as Nova's does, whether it
    created the directory and whether it created a disk.
    """
    from nova.virt import driver as virt_driver
    from nova.virt.libvirt import blockinfo
    from nova.virt.libvirt import utils as libvirt_utils
    from oslo_utils import units

    instance_dir = libvirt_utils.get_instance_path(instance)
    created_instance_dir = not os.path.exists(instance_dir)
    os.makedirs(instance_dir, exist_ok=True)

    flavor = instance.get_flavor()
    image_meta = instance.image_meta
    sizes = {"disk.local": flavor.ephemeral_gb * units.Gi,
             "disk.swap": flavor.swap * units.Mi}
    if not driver._is_booted_from_volume(block_device_info):
        sizes["disk"] = flavor.root_gb * units.Gi or (
            image_meta.size if image_meta.obj_attr_is_set("size")
            else ROOT_SIZE_UNKNOWN)
    for index, ephemeral in enumerate(
            virt_driver.block_device_info_get_ephemerals(block_device_info)):
        sizes[blockinfo.get_eph_disk(index)] = ephemeral["size"] * units.Gi

    created_disks = False
    for name, size in sizes.items():
        path = os.path.join(instance_dir, name + suffix)
        if name not in disk_mapping or os.path.exists(path):
            continue
        with open(path, "xb") as disk:
            disk.truncate(size)
        created_disks = True
    return created_instance_dir, created_disks
