"""Calls of the os-xloud-adjust API (doc/design.md) shared by the tests."""

import time

import openstack.exceptions

ADJUST = "/os-xloud-adjust"
ACTION = "xloud-adjust"
EVENT = "compute_xloud_adjust"
# Placement's microversion with name filters and resources per provider.
PLACEMENT_MICROVERSION = "1.14"
# Instances the tests of this session have adjusted, across modules.
USED: set[str] = set()


def sizes(conn, **query) -> list[dict]:
    resp = conn.compute.get(ADJUST, params=query)
    openstack.exceptions.raise_from_response(resp)
    return resp.json()["servers"]


def size(conn, server_id: str) -> dict:
    resp = conn.compute.get(f"{ADJUST}/{server_id}")
    openstack.exceptions.raise_from_response(resp)
    return resp.json()["server"]


def adjust(conn, server_id: str, **body):
    """POST an adjustment; returns the raw response (the tests check it)."""
    return conn.compute.post(f"{ADJUST}/{server_id}", json=body)


def wait_for_action(conn, server_id: str, request_id: str,
                    timeout: float = 90) -> dict:
    """Wait until the adjustment's instance action has a finished event."""
    deadline = time.monotonic() + timeout
    while True:
        resp = conn.compute.get(
            f"/servers/{server_id}/os-instance-actions/{request_id}",
            microversion="2.51")
        openstack.exceptions.raise_from_response(resp)
        action = resp.json()["instanceAction"]
        events = [e for e in action.get("events", [])
                  if e["event"] == EVENT and e.get("finish_time")]
        if events:
            return {"action": action, "event": events[-1]}
        if time.monotonic() > deadline:
            raise AssertionError(
                f"action {request_id} on {server_id} not finished after "
                f"{timeout} s: {action}")
        time.sleep(0.5)


def wait_for_status(conn, server_id: str, status: str,
                    timeout: float = 120):
    server = conn.compute.get_server(server_id)
    return conn.compute.wait_for_server(server, status=status,
                                        failures=["ERROR"], wait=timeout)


def pick_server(conn, *, flavor: str, status: str = "ACTIVE",
                locked: bool = False, exclude: tuple = (),
                max_vcpus_now: int | None = None) -> dict:
    """An instance in the given state, from the sizing index.

    Prefers instances not in ``exclude`` (used by earlier tests), and takes
    a used one rather than none: the tests compare before and after, so a
    cloud reused from ``make up`` or an earlier run serves as well.
    """
    candidates = []
    for entry in sizes(conn, all_tenants=1):
        if entry["flavor"]["name"] != flavor or entry["status"] != status:
            continue
        if entry["adjustment"]["status"] == "adjusting":
            continue
        if max_vcpus_now is not None and (
                entry["current_vcpus"] > max_vcpus_now):
            continue
        if bool(conn.compute.get_server(entry["id"]).is_locked) != locked:
            continue
        candidates.append(entry)
    candidates.sort(key=lambda e: e["id"] in exclude)
    if not candidates:
        raise AssertionError(f"no {status} {'locked ' if locked else ''}"
                             f"instance of flavor {flavor} in the cloud")
    return candidates[0]


def other_size(entry: dict, *choices: tuple[int, int]) -> tuple[int, int]:
    """The first (vcpus, memory_mb) of ``choices`` the instance is not at."""
    now = (entry["current_vcpus"], entry["current_memory_mb"])
    return next(choice for choice in choices if choice != now)


def action_count(conn, server_id: str) -> int:
    actions = conn.compute.get(
        f"/servers/{server_id}/os-instance-actions").json()
    return sum(a["action"] == ACTION for a in actions["instanceActions"])


def take(conn, **kwargs) -> dict:
    """pick_server, preferring instances no earlier test has used."""
    entry = pick_server(conn, exclude=tuple(USED), **kwargs)
    USED.add(entry["id"])
    return entry


def provider(conn, host: str) -> str:
    """The uuid of the compute host's resource provider in placement."""
    resp = conn.placement.get("/resource_providers", params={"name": host},
                              microversion=PLACEMENT_MICROVERSION)
    openstack.exceptions.raise_from_response(resp)
    providers = resp.json()["resource_providers"]
    assert len(providers) == 1, providers
    return providers[0]["uuid"]


def allocations(conn, server_id: str) -> dict[str, dict]:
    """{provider uuid: resources} the server holds in placement."""
    resp = conn.placement.get(f"/allocations/{server_id}",
                              microversion=PLACEMENT_MICROVERSION)
    openstack.exceptions.raise_from_response(resp)
    return {rp: alloc["resources"]
            for rp, alloc in resp.json()["allocations"].items()}
