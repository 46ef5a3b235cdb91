"""The guest's own view through the QEMU guest agent, on the local cloud.

The local cloud's default image (``seed.GUEST_IMAGE``) runs the agent and
carries ``hw_qemu_guest_agent=yes``, so Nova gives its servers the agent's
channel; ``hypervisor.WITHOUT_GUEST_AGENT_IMAGE`` has neither.  After an
adjustment the compute host records what the guest showed (the ``guest``
block of ``GET /os-xloud-adjust/{id}``): the first answers through its
agent, the second has none configured.  On the fake hypervisor, where
the guest answers at once; a real guest starts its agent some seconds
after it is ACTIVE.
"""

from pathlib import Path

import pytest

from deploy.localcloud import hypervisor, seed
from tests.e2e import helpers

FLAVOR = "x1.elastic"
# The virtio-serial port Nova adds for hw_qemu_guest_agent.
AGENT_CHANNEL = "org.qemu.guest_agent.0"
BOOT_TIMEOUT = 120


@pytest.fixture(scope="module")
def servers(cloud, admin_conn, elastic_driver):
    """A server of each image, booted at once, deleted at the end."""
    if cloud["hypervisor"] != "fake":
        pytest.skip("the fake hypervisor's guest answers as soon as it is "
                    "ACTIVE")
    flavor = admin_conn.compute.find_flavor(FLAVOR, ignore_missing=False)
    images = {
        "agent": admin_conn.image.find_image(seed.GUEST_IMAGE,
                                             ignore_missing=False).id,
        "no_agent": hypervisor.WITHOUT_GUEST_AGENT_IMAGE,
    }
    booted = {
        kind: admin_conn.compute.create_server(
            name=f"e2e-guest-{kind.replace('_', '-')}", image_id=image,
            flavor_id=flavor.id, networks="none")
        for kind, image in images.items()}
    try:
        for server in booted.values():
            admin_conn.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"],
                wait=BOOT_TIMEOUT)
        yield {kind: server.id for kind, server in booted.items()}
    finally:
        for server in booted.values():
            admin_conn.compute.delete_server(server, ignore_missing=True)
        for server in booted.values():
            admin_conn.compute.wait_for_delete(server, wait=BOOT_TIMEOUT)


def _adjusted(admin_conn, server_id: str) -> tuple[dict, tuple[int, int]]:
    """Adjust the server to another size; its size once that is done."""
    entry = helpers.size(admin_conn, server_id)
    vcpus, memory_mb = helpers.other_size(entry, (2, 2048), (3, 3072))
    resp = helpers.adjust(admin_conn, server_id, current_vcpus=vcpus,
                          current_memory_mb=memory_mb)
    assert resp.status_code == 202, resp.text
    done = helpers.wait_for_action(admin_conn, server_id,
                                   resp.json()["adjustment"]["request_id"])
    assert done["event"]["result"] == "Success", done
    return helpers.size(admin_conn, server_id), (vcpus, memory_mb)


def _saved_domain(cloud, admin_conn, server_id: str) -> dict:
    host = admin_conn.compute.get_server(server_id).compute_host
    return hypervisor.saved_domains(
        Path(cloud["hypervisor_state"]) / f"{host}.json")[server_id]


def test_the_agent_image_boots_a_guest_whose_agent_answers(
        cloud, admin_conn, servers):
    # Nova gave the domain the agent's channel, for the image's property.
    domain = _saved_domain(cloud, admin_conn, servers["agent"])
    assert AGENT_CHANNEL in domain["xml"]
    assert domain["guest"]["guest_agent"] is True
    size, (vcpus, _memory_mb) = _adjusted(admin_conn, servers["agent"])
    assert size["current_vcpus"] == vcpus
    guest = size["guest"]
    assert guest["agent"] == "answering", guest
    assert guest["online_vcpus"] == vcpus
    assert guest["as_of"] is not None


def test_the_image_without_agent_boots_a_guest_without_one(
        cloud, admin_conn, servers):
    size, (vcpus, _memory_mb) = _adjusted(admin_conn, servers["no_agent"])
    assert size["current_vcpus"] == vcpus
    guest = size["guest"]
    assert guest["agent"] == "not_configured", guest
    assert guest["online_vcpus"] is None
    domain = _saved_domain(cloud, admin_conn, servers["no_agent"])
    assert AGENT_CHANNEL not in domain["xml"]
    assert domain["guest"]["guest_agent"] is False
