"""Glance, the local cloud's image service, and the guest images it holds.

Glance is the real one (its WSGI application behind keystonemiddleware, the
file store, a database of its own); Nova finds it in the catalog.  The
seed uploads the guest that ``deploy.localcloud.guestimage`` builds from
Debian's packages: for each guest kind a kernel, an initramfs and a root
disk that boots them.
"""

import re
from pathlib import Path

import openstack.exceptions
import pytest
import requests

from deploy.localcloud import guestimage, hypervisor, seed

# A Linux x86 boot image has this magic in its setup header.
BZIMAGE_MAGIC = (0x202, b"HdrS")
# The image proxy of Nova's API (up to this microversion) lists Glance's
# images in Glance's order; the tests boot the first one.
IMAGE_PROXY_MICROVERSION = "2.35"
SERVER_ATTRIBUTES_MICROVERSION = "2.79"
BOOT_TIMEOUT = 120


def _images_by_name(conn) -> dict:
    return {image.name: image for image in conn.image.images()}


def test_glance_is_in_the_catalog_for_everyone(admin_conn, member_conn):
    access = admin_conn.session.auth.get_access(admin_conn.session)
    image = [s for s in access.service_catalog.catalog
             if s["type"] == "image"]
    assert len(image) == 1, image
    interfaces = {e["interface"]: e for e in image[0]["endpoints"]}
    assert {"public", "internal"} <= set(interfaces)
    assert {e["region_id"] for e in image[0]["endpoints"]} == {"RegionOne"}

    versions = requests.get(interfaces["public"]["url"], timeout=30).json()
    assert "CURRENT" in {v["status"] for v in versions["versions"]}
    assert all(v["id"].startswith("v2") for v in versions["versions"])

    # The seeded images are public: a project member sees them too.
    assert {kind.name for kind in seed.GUEST_KINDS} <= set(
        _images_by_name(member_conn))


@pytest.mark.parametrize("kind", seed.GUEST_KINDS, ids=lambda k: k.name)
def test_each_guest_kind_is_a_kernel_a_ramdisk_and_a_root_disk(admin_conn,
                                                               kind):
    images = _images_by_name(admin_conn)
    root = images[kind.name]
    assert (root.status, root.visibility, root.disk_format) == (
        "active", "public", "raw")
    assert root.os_command_line == guestimage.KERNEL_CMDLINE
    if kind.image_id:
        assert root.id == kind.image_id

    kernel = admin_conn.image.get_image(root.kernel_id)
    ramdisk = admin_conn.image.get_image(root.ramdisk_id)
    assert (kernel.name, kernel.disk_format, kernel.visibility) == (
        kind.kernel_name, "aki", "public")
    assert (ramdisk.name, ramdisk.disk_format, ramdisk.visibility) == (
        kind.ramdisk_name, "ari", "public")

    offset, magic = BZIMAGE_MAGIC
    vmlinuz = admin_conn.image.download_image(kernel).content
    assert vmlinuz[offset:offset + len(magic)] == magic
    initramfs = admin_conn.image.download_image(ramdisk).content
    # A newc archive, uncompressed: its member names are plain text.
    assert initramfs.startswith(b"070701")
    assert b"bin/busybox" in initramfs
    assert (b"virtio_balloon.ko" in initramfs) is kind.balloon_driver


def test_the_image_listed_first_is_the_guest_with_a_balloon_driver(
        admin_conn):
    resp = admin_conn.compute.get("/images",
                                  microversion=IMAGE_PROXY_MICROVERSION)
    openstack.exceptions.raise_from_response(resp)
    first = resp.json()["images"][0]
    assert first["name"] == seed.GUEST_IMAGE
    # Any image but those of GUEST_IMAGES boots the default guest, which
    # has the driver.
    assert first["id"] not in hypervisor.GUEST_IMAGES


def test_seeded_servers_boot_the_glance_image_kernel_and_ramdisk(
        cloud, admin_conn):
    root = admin_conn.image.find_image(seed.GUEST_IMAGE,
                                       ignore_missing=False)
    seeded = [s for s in admin_conn.compute.servers(all_projects=True)
              if s.name.split("-")[0] in cloud["projects"]]
    assert seeded
    for server in seeded:
        resp = admin_conn.compute.get(
            f"/servers/{server.id}",
            microversion=SERVER_ATTRIBUTES_MICROVERSION)
        openstack.exceptions.raise_from_response(resp)
        body = resp.json()["server"]
        assert body["image"]["id"] == root.id, server.name
        assert body["OS-EXT-SRV-ATTR:kernel_id"] == root.kernel_id
        assert body["OS-EXT-SRV-ATTR:ramdisk_id"] == root.ramdisk_id


def test_a_guest_booted_without_balloon_driver_image_has_none(cloud,
                                                              admin_conn):
    if cloud["hypervisor"] != "fake":
        pytest.skip("reads the fake hypervisor's saved domains")
    flavor = admin_conn.compute.find_flavor("x1.tiny", ignore_missing=False)
    server = admin_conn.compute.create_server(
        name="e2e-image-without-balloon",
        image_id=hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE,
        flavor_id=flavor.id, networks="none")
    try:
        server = admin_conn.compute.wait_for_server(
            server, status="ACTIVE", failures=["ERROR"], wait=BOOT_TIMEOUT)
        domains = hypervisor.saved_domains(
            Path(cloud["hypervisor_state"]) / f"{server.compute_host}.json")
        assert domains[server.id]["guest"]["balloon_driver"] is False
    finally:
        admin_conn.compute.delete_server(server)
        admin_conn.compute.wait_for_delete(server, wait=BOOT_TIMEOUT)


def test_admin_uploads_and_deletes_an_image(cloud, admin_conn):
    data = bytes(range(256)) * 4096
    image = admin_conn.image.create_image(
        "e2e-upload", data=data, disk_format="raw", container_format="bare",
        allow_duplicates=True, validate_checksum=True)
    stored = Path(cloud["state_dir"]) / "glance" / "images" / image.id
    try:
        image = admin_conn.image.get_image(image)
        assert (image.status, image.size) == ("active", len(data))
        assert admin_conn.image.download_image(image).content == data
        assert stored.read_bytes() == data
    finally:
        admin_conn.image.delete_image(image)
    with pytest.raises(openstack.exceptions.NotFoundException):
        admin_conn.image.get_image(image.id)
    assert not stored.exists()


def test_seeding_again_uploads_nothing(admin_conn):
    def listing():
        return sorted((i.id, i.name, i.updated_at)
                      for i in admin_conn.image.images())

    before = listing()
    said: list[str] = []
    seed.upload_guest_images(admin_conn, said.append)
    assert said == ["seed: guest images already in Glance: " + ", ".join(
        kind.name for kind in seed.GUEST_KINDS)]
    assert listing() == before


def test_an_outdated_ramdisk_is_built_and_uploaded_again(admin_conn):
    """A state directory from before a change to the guest's /init gets
    the new guest; the old ramdisk goes, the root disk points at the new."""
    kind = seed.GUEST_KINDS[-1]
    old = admin_conn.image.find_image(kind.ramdisk_name, ignore_missing=False)
    # A JSON patch of its own: openstacksdk's update_image patches
    # Glance's read-only "stores" too, which Glance refuses (409).
    resp = admin_conn.image.patch(
        f"/images/{old.id}",
        json=[{"op": "replace", "path": f"/{seed.INIT_VERSION}",
               "value": "outdated"}],
        headers={"Content-Type":
                 "application/openstack-images-v2.1-json-patch"})
    openstack.exceptions.raise_from_response(resp)
    said: list[str] = []
    seed.upload_guest_images(admin_conn, said.append)
    assert f"seed: deleting the outdated image {kind.ramdisk_name} " \
        f"({old.id})" in said
    new = admin_conn.image.find_image(kind.ramdisk_name, ignore_missing=False)
    assert new.id != old.id
    assert new.properties[seed.INIT_VERSION] == kind.init_version
    root = admin_conn.image.find_image(kind.name, ignore_missing=False)
    assert root.ramdisk_id == new.id
    # The other kinds were current: kept as they were.
    for other in seed.GUEST_KINDS[:-1]:
        assert admin_conn.image.find_image(
            other.ramdisk_name, ignore_missing=False).properties[
                seed.INIT_VERSION] == other.init_version


def test_dashboard_lists_the_images(cloud):
    base = cloud["dashboard_url"].rstrip("/")
    session = requests.Session()
    form = session.get(f"{base}/auth/login/", timeout=60)
    region = re.search(r'name="region" value="([^"]*)"', form.text)
    login = session.post(
        f"{base}/auth/login/", timeout=120,
        headers={"Referer": f"{base}/auth/login/"},
        data={"csrfmiddlewaretoken": session.cookies["csrftoken"],
              "region": region.group(1) if region else "",
              "username": cloud["member"]["username"],
              "password": cloud["member"]["password"],
              "next": "/project/images/"})
    assert login.url == f"{base}/project/images/", login.url
    # What the Images panel's table asks Horizon for.
    listed = session.get(f"{base}/api/glance/images/", timeout=120,
                         headers={"X-Requested-With": "XMLHttpRequest"})
    assert listed.status_code == 200, listed.text[:500]
    names = {image["name"] for image in listed.json()["items"]}
    for kind in seed.GUEST_KINDS:
        assert {kind.name, kind.kernel_name, kind.ramdisk_name} <= names
