"""The local cloud's guest kinds: Glance's images and the fake hypervisor.

The seed runs against an image proxy that keeps openstacksdk's own
``Image`` resources (so attribute reads and the JSON patch of an update
are the SDK's), with the kernel download and the initramfs build stubbed:
what is checked is which images are uploaded or updated, with which
properties, and how each initramfs is asked for.  The fake hypervisor is
the local cloud's own, on the elastic fake libvirt, its state in a
temporary directory, restarted by building a second one on it.
"""

import itertools
import uuid

import pytest
from nova.tests.fixtures import libvirt as nova_fake
from openstack.image.v2.image import Image

from deploy.localcloud import guestimage, hypervisor, seed
from tests.nova import fakelibvirt

LIVE = nova_fake.VIR_DOMAIN_AFFECT_LIVE
AGENT_PATCH = [{'op': 'add', 'path': f'/{seed.GUEST_AGENT_PROPERTY}',
                'value': 'yes'}]


class ImageProxy:
    """``conn.image`` of openstacksdk over a dict of images."""

    def __init__(self) -> None:
        self.stored: dict[str, Image] = {}
        self.created: list[tuple[str, dict]] = []
        self.patches: list[tuple[str, list]] = []
        self._ids = (f'00000000-0000-4000-8000-{n:012d}'
                     for n in itertools.count(1))

    def images(self):
        return list(self.stored.values())

    def add(self, name: str, **attrs) -> Image:
        image = Image.existing(id=attrs.pop('id', None) or next(self._ids),
                               name=name, status='active', stores='file',
                               visibility='public', **attrs)
        self.stored[image.id] = image
        return image

    def create_image(self, name, filename, disk_format, container_format,
                     visibility, allow_duplicates, validate_checksum,
                     **properties):
        self.created.append((name, dict(properties)))
        return self.add(name, disk_format=disk_format, **properties)

    def update_image(self, image, **attrs):
        image._update(**attrs)
        # What openstacksdk sends Glance for this update.
        self.patches.append(
            (image.name, image._prepare_request(patch=True).body))
        # As if Glance's answer came back: nothing left to send.
        image._body.clean()
        return image

    def delete_image(self, image):
        del self.stored[image.id]

    def by_name(self, name: str) -> Image:
        return next(i for i in self.stored.values() if i.name == name)


class Connection:
    def __init__(self) -> None:
        self.image = ImageProxy()


@pytest.fixture
def builds(monkeypatch, tmp_path):
    """Stubs the kernel download and the initramfs build; records each
    build's (image name, balloon driver, guest agent, onlines CPUs)."""
    vmlinuz = tmp_path / 'vmlinuz'
    vmlinuz.write_bytes(b'kernel')
    kernel = guestimage.Kernel('linux-image-test', vmlinuz,
                               tmp_path / 'modules')
    made = []

    def build_initramfs(kernel, target, balloon_driver, guest_agent=False,
                        onlines_cpus=True, virtio_mem=False):
        made.append((target.stem, balloon_driver, guest_agent, onlines_cpus))
        target.write_bytes(b'070701')
        return guestimage.GuestImage(kernel.vmlinuz, target, 'cmdline',
                                     balloon_driver, guest_agent)

    monkeypatch.setattr(guestimage, 'fetch_kernel',
                        lambda cache_dir, progress: kernel)
    monkeypatch.setattr(guestimage, 'build_initramfs', build_initramfs)
    return made


def seeded_glance(agent_property: bool) -> Connection:
    """A Glance holding every guest kind, current, as an earlier seed left
    it; ``agent_property`` False: its root disks lack the agent's
    property (a seed from before the guest ran the agent)."""
    conn = Connection()
    for kind in seed.GUEST_KINDS:
        kernel = conn.image.add(kind.kernel_name, disk_format='aki')
        ramdisk = conn.image.add(
            kind.ramdisk_name, disk_format='ari',
            **{seed.INIT_VERSION: kind.init_version})
        conn.image.add(
            kind.name, id=kind.image_id, disk_format='raw',
            kernel_id=kernel.id, ramdisk_id=ramdisk.id,
            os_command_line=guestimage.KERNEL_CMDLINE,
            **(kind.root_properties if agent_property else {}))
    return conn


def kind_of(image_id: str) -> seed.GuestKind:
    return next(k for k in seed.GUEST_KINDS if k.image_id == image_id)


def test_the_default_guest_runs_the_agent_and_the_new_kind_does_not():
    default = seed.GUEST_KINDS[-1]
    assert default.name == seed.GUEST_IMAGE
    assert (default.balloon_driver, default.guest_agent) == (True, True)
    assert default.root_properties == {'hw_qemu_guest_agent': 'yes'}
    without_agent = kind_of(hypervisor.WITHOUT_GUEST_AGENT_IMAGE)
    assert (without_agent.balloon_driver, without_agent.guest_agent) == (
        True, False)
    assert without_agent.root_properties == {}
    without_balloon = kind_of(hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE)
    assert without_balloon.balloon_driver is False
    # Each its own initramfs.
    assert len({k.init_version for k in seed.GUEST_KINDS}) == len(
        seed.GUEST_KINDS)
    assert without_agent.init_version == guestimage.init_version(
        True, guest_agent=False)
    assert default.init_version == guestimage.init_version(
        True, guest_agent=True)


def test_a_real_hypervisor_cloud_also_gets_the_virtio_mem_guest():
    kinds = seed.QEMU_GUEST_KINDS
    assert kinds[-1] == seed.GUEST_KINDS[-1]
    assert set(kinds) - set(seed.GUEST_KINDS) == {
        kind_of_kinds(kinds, seed.VIRTIO_MEM_GUEST_IMAGE)}
    virtio_mem = kind_of_kinds(kinds, seed.VIRTIO_MEM_GUEST_IMAGE)
    assert virtio_mem.command_line == guestimage.VIRTIO_MEM_CMDLINE
    assert virtio_mem.initramfs_options == {
        'guest_agent': True, 'onlines_cpus': True, 'virtio_mem': True}
    assert seed.GUEST_KINDS[-1].command_line == guestimage.KERNEL_CMDLINE
    assert len({kind.init_version for kind in kinds}) == len(kinds)


def kind_of_kinds(kinds, name: str) -> seed.GuestKind:
    [kind] = [kind for kind in kinds if kind.name == name]
    return kind


def test_a_fresh_glance_gets_the_agent_property_where_the_guest_runs_it(
        builds):
    conn = Connection()
    said: list[str] = []
    seed.upload_guest_images(conn, said.append)
    images = conn.image
    for kind in seed.GUEST_KINDS:
        root = images.by_name(kind.name)
        assert (root.hw_qemu_guest_agent == 'yes') is kind.guest_agent
        if kind.image_id:
            assert root.id == kind.image_id
        ramdisk = images.by_name(kind.ramdisk_name)
        assert ramdisk.properties[seed.INIT_VERSION] == kind.init_version
    assert sorted(builds) == sorted(
        (f'{k.name}', k.balloon_driver, k.guest_agent, k.onlines_vcpus)
        for k in seed.GUEST_KINDS)
    assert ('localcloud-guest-without-agent', True, False, True) in builds
    assert ('localcloud-guest', True, True, True) in builds
    # The agent property is not added to the kernels or ramdisks.
    for name, properties in images.created:
        if not name.endswith(('-kernel', '-initramfs')):
            continue
        assert seed.GUEST_AGENT_PROPERTY not in properties, name


def test_a_seeded_glance_gets_the_property_without_uploads(builds):
    conn = seeded_glance(agent_property=False)
    before = {i.id for i in conn.image.images()}
    said: list[str] = []
    seed.upload_guest_images(conn, said.append)

    assert builds == [] and conn.image.created == []
    assert {i.id for i in conn.image.images()} == before
    agent_kinds = [k for k in seed.GUEST_KINDS if k.guest_agent]
    assert seed.GUEST_IMAGE in {k.name for k in agent_kinds}
    # One patch per root disk that lacked it, the property alone: none
    # of Glance's read-only attributes (it refuses those with 409).
    assert sorted(conn.image.patches) == sorted(
        (k.name, AGENT_PATCH) for k in agent_kinds)
    for kind in seed.GUEST_KINDS:
        root = conn.image.by_name(kind.name)
        assert (root.hw_qemu_guest_agent == 'yes') is kind.guest_agent
    default = conn.image.by_name(seed.GUEST_IMAGE)
    assert (f'seed: image {seed.GUEST_IMAGE} ({default.id}): setting '
            f'hw_qemu_guest_agent=yes') in said

    said.clear()
    seed.upload_guest_images(conn, said.append)
    assert len(conn.image.patches) == len(agent_kinds)
    assert said == ['seed: guest images already in Glance: ' + ', '.join(
        kind.name for kind in seed.GUEST_KINDS)]


def test_a_glance_seeded_with_the_property_is_left_alone(builds):
    conn = seeded_glance(agent_property=True)
    said: list[str] = []
    seed.upload_guest_images(conn, said.append)
    assert conn.image.patches == [] and conn.image.created == []
    assert builds == []


def test_a_glance_without_the_new_kind_gets_it_and_the_property(builds):
    """A state directory seeded before the guest without the agent."""
    conn = seeded_glance(agent_property=False)
    new = kind_of(hypervisor.WITHOUT_GUEST_AGENT_IMAGE)
    for name in (new.kernel_name, new.ramdisk_name, new.name):
        conn.image.delete_image(conn.image.by_name(name))
    seed.upload_guest_images(conn, [].append)

    assert [name for name, _ in conn.image.created] == [
        new.kernel_name, new.ramdisk_name, new.name]
    assert builds == [(new.name, True, False, True)]
    root = conn.image.by_name(new.name)
    assert root.id == hypervisor.WITHOUT_GUEST_AGENT_IMAGE
    assert root.hw_qemu_guest_agent is None
    assert conn.image.by_name(
        seed.GUEST_IMAGE).hw_qemu_guest_agent == 'yes'


@pytest.fixture
def elastic_fake():
    fixture = fakelibvirt.ElasticLibvirtFixture()
    fixture.setUp()
    yield
    fixture.cleanUp()


AGENT_CHANNEL = f"""<channel type='unix'>
  <source mode='bind'
          path='/var/lib/libvirt/qemu/{fakelibvirt.AGENT_CHANNEL}.i.sock'/>
  <target type='virtio' name='{fakelibvirt.AGENT_CHANNEL}'/>
</channel>"""


def domain_xml(image_id: str, agent_channel: bool) -> str:
    """A domain as Nova defines it for a server booted from ``image_id``:
    its image in Nova's metadata, the agent's channel where the image
    asked for it."""
    instance = uuid.uuid4()
    return f"""<domain type='kvm'>
  <name>instance-{instance.hex[:8]}</name>
  <uuid>{instance}</uuid>
  <metadata>
    <nova:instance xmlns:nova="{hypervisor.NOVA_NS}">
      <nova:root type="image" uuid="{image_id}"/>
    </nova:instance>
  </metadata>
  <memory>4194304</memory>
  <currentMemory>2097152</currentMemory>
  <vcpu current='2'>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <memballoon model='virtio'><stats period='10'/></memballoon>
    {AGENT_CHANNEL if agent_channel else ''}
  </devices>
</domain>"""


def boot(host: hypervisor.FakeHypervisor, image_id: str,
         agent_channel: bool):
    dom = host.connection.defineXML(domain_xml(image_id, agent_channel))
    dom.create()
    return dom


def agent_error(dom) -> str | None:
    """What libvirt says where guestVcpus fails, None where it answers."""
    if dom.guestVcpus() is not None:
        return None
    return fakelibvirt.virGetLastError()[2]


def test_the_guest_without_agent_is_known_by_its_image():
    assert hypervisor.GUEST_IMAGES[hypervisor.WITHOUT_GUEST_AGENT_IMAGE] == (
        'localcloud-guest-without-agent', {'guest_agent': False})
    xml = domain_xml(hypervisor.WITHOUT_GUEST_AGENT_IMAGE, False)
    assert hypervisor.guest_behaviour_of(xml) == {'guest_agent': False}


def test_each_guest_kind_answers_the_agent_as_libvirt_would(elastic_fake):
    host = hypervisor.FakeHypervisor('compute1', None)
    default = boot(host, str(uuid.uuid4()), agent_channel=True)
    assert default.behaviour.guest_agent is True
    assert default.guestVcpus()['online'] == '0-1'
    without = boot(host, hypervisor.WITHOUT_GUEST_AGENT_IMAGE,
                   agent_channel=False)
    assert without.behaviour.guest_agent is False
    assert agent_error(without) == (
        'argument unsupported: QEMU guest agent is not configured')
    # The property set on that image all the same: Nova adds the
    # channel, and nothing in the guest opens it.
    channel_only = boot(host, hypervisor.WITHOUT_GUEST_AGENT_IMAGE,
                        agent_channel=True)
    assert agent_error(channel_only) == (
        'Guest agent is not responding: QEMU guest agent is not connected')
    no_balloon = boot(host, hypervisor.WITHOUT_BALLOON_DRIVER_IMAGE,
                      agent_channel=True)
    assert no_balloon.behaviour.balloon_driver is False
    assert agent_error(no_balloon) is None


def test_a_restart_keeps_the_guest_agent_fields(elastic_fake, tmp_path):
    before = hypervisor.FakeHypervisor('compute1', tmp_path)
    dom = boot(before, str(uuid.uuid4()), agent_channel=True)
    behaviour = dom.behaviour
    behaviour.guest_agent = False
    behaviour.onlines_vcpus = False
    behaviour.memory_stats = False
    before.save()

    after = hypervisor.FakeHypervisor('compute1', tmp_path)
    assert after.restore() == 1
    restored = after.connection.lookupByUUIDString(dom.UUIDString())
    assert (restored.behaviour.guest_agent, restored.behaviour.onlines_vcpus,
            restored.behaviour.memory_stats) == (False, False, False)
    assert agent_error(restored) == (
        'Guest agent is not responding: QEMU guest agent is not connected')


def test_a_restart_keeps_the_guest_without_agent(elastic_fake, tmp_path):
    before = hypervisor.FakeHypervisor('compute1', tmp_path)
    dom = boot(before, hypervisor.WITHOUT_GUEST_AGENT_IMAGE,
               agent_channel=False)
    saved = hypervisor.saved_domains(tmp_path / 'compute1.json')
    assert saved[dom.UUIDString()]['guest'] == {
        'balloon_driver': True, 'releases_vcpus': True,
        'guest_agent': False, 'onlines_vcpus': True, 'memory_stats': True}

    after = hypervisor.FakeHypervisor('compute1', tmp_path)
    after.restore()
    restored = after.connection.lookupByUUIDString(dom.UUIDString())
    assert restored.behaviour.guest_agent is False
    assert agent_error(restored) == (
        'argument unsupported: QEMU guest agent is not configured')


def test_a_restart_keeps_what_the_guest_runs_offline(elastic_fake, tmp_path):
    """A guest that does not online a plugged vCPU itself keeps it offline
    across a nova-compute restart, until the agent onlines it."""
    before = hypervisor.FakeHypervisor('compute1', tmp_path)
    dom = boot(before, str(uuid.uuid4()), agent_channel=True)
    dom.behaviour.onlines_vcpus = False
    dom.setVcpusFlags(3, LIVE)
    assert dom.guestVcpus() == {'vcpus': '0-2', 'online': '0-1',
                                'offlinable': '1-2'}

    after = hypervisor.FakeHypervisor('compute1', tmp_path)
    after.restore()
    restored = after.connection.lookupByUUIDString(dom.UUIDString())
    assert restored.guestVcpus()['online'] == '0-1'
    # Onlining through the agent is saved too.
    assert restored.setGuestVcpus('2', 1) == 0
    again = hypervisor.FakeHypervisor('compute1', tmp_path)
    again.restore()
    assert again.connection.lookupByUUIDString(
        dom.UUIDString()).guestVcpus()['online'] == '0-2'


def test_a_restart_keeps_a_statistics_period_set_live(elastic_fake,
                                                      tmp_path):
    before = hypervisor.FakeHypervisor('compute1', tmp_path)
    dom = boot(before, str(uuid.uuid4()), agent_channel=True)
    dom.setMemoryStatsPeriod(0, LIVE)
    after = hypervisor.FakeHypervisor('compute1', tmp_path)
    after.restore()
    restored = after.connection.lookupByUUIDString(dom.UUIDString())
    # No period: the balloon driver sends nothing, QEMU reports never.
    assert restored.memoryStats()['last_update'] == 0
    assert "<stats" not in restored.XMLDesc(0)
    assert "<stats period='10'/>" in restored.XMLDesc(
        nova_fake.VIR_DOMAIN_XML_INACTIVE).replace('"', "'")
