"""The Elastic Sizing panel in headless Chromium against the local cloud.

Real Horizon, real Keystone login, real Nova and compute hosts: every row
change below is an instance action that went through nova-api, RPC and the
compute driver.  Page handling is the dashboard's own ``Panel`` helper
(``tests/dashboard/browser.py``), which the dashboard suite runs against a
fake Nova; here it runs against the real one.  Screenshots of every step
go to ``artifacts/screenshots/e2e/``.
"""

import time

import pytest
from selenium.webdriver.common.by import By

from tests.e2e import helpers
from tests.e2e.panel import Panel


@pytest.fixture(scope="module")
def admin_browser(browser_module, cloud):
    """One Chromium, logged in once, for the admin flows of this module."""
    panel = Panel(browser_module, cloud, "admin")
    try:
        panel.login(cloud["admin"]["username"], cloud["admin"]["password"])
        panel.shot("logged-in")
        yield panel
    finally:
        panel.close()


@pytest.fixture
def admin_panel(admin_browser, request):
    admin_browser.prefix = request.node.name.removeprefix("test_")
    admin_browser.step = 0
    return admin_browser


def test_instances_show_current_and_max(admin_panel, admin_conn):
    entry = helpers.pick_server(admin_conn, flavor="x1.elastic")
    admin_panel.open("?all_tenants=1")
    text = admin_panel.row_text("instances", entry["id"])
    assert entry["name"] in text and "x1.elastic" in text
    assert entry["host"] in text
    rows = admin_panel.driver.find_elements(
        By.CSS_SELECTOR, "table#instances tbody tr")
    assert len(rows) >= 15
    admin_panel.shot("instances")


def test_adjust_one_row_updates_when_done(admin_panel, admin_conn):
    entry = helpers.take(admin_conn, flavor="x1.elastic")
    vcpus, memory_mb = helpers.other_size(entry, (3, 3072), (2, 2048))
    admin_panel.open("?all_tenants=1")
    admin_panel.open_row_action("instances", entry["id"], "adjust")
    form = admin_panel.modal()
    assert form.find_element(By.NAME, "vcpus").get_attribute("max") == "4"
    admin_panel.fill(form, {"vcpus": vcpus, "memory_mb": memory_mb})
    admin_panel.shot("adjust-form")
    admin_panel.submit(form)
    admin_panel.wait_for_message(f'Adjusting instance "{entry["name"]}"')
    admin_panel.shot("adjusting")
    done = admin_panel.wait_for_row("instances", entry["id"], "Done")
    assert f"{memory_mb // 1024}GB" in done
    admin_panel.shot("adjusted")
    live = helpers.size(admin_conn, entry["id"])
    assert (live["current_vcpus"], live["current_memory_mb"]) == (
        vcpus, memory_mb)


def test_bulk_adjust_reports_the_refused_one(admin_panel, admin_conn):
    grow = [helpers.take(admin_conn, flavor="x1.elastic", max_vcpus_now=3)
            for _ in range(2)]
    # One already at its flavor's 4 vCPUs: one more is refused by its
    # flavor limit. (x1.small, with no minimums, is not elastic at all:
    # the panel offers no row to select.)
    full = helpers.take(admin_conn, flavor="x1.elastic", max_vcpus_now=3)
    resp = helpers.adjust(admin_conn, full["id"], current_vcpus=4,
                          persist=False)
    assert resp.status_code == 202, resp.text
    done = helpers.wait_for_action(admin_conn, full["id"],
                                   resp.json()["adjustment"]["request_id"])
    assert done["event"]["result"] == "Success", done
    targets = [e["id"] for e in (*grow, full)]
    admin_panel.open("?all_tenants=1")
    admin_panel.select_rows("instances", targets)
    admin_panel.shot("bulk-selected")
    admin_panel.find("#instances__action_bulk_adjust").click()
    form = admin_panel.find("form.xloud-elastic-form")
    admin_panel.fill(form, {"mode": "relative", "vcpus_step": 1,
                            "memory_step": 0, "out_of_limits": "refuse"})
    admin_panel.shot("bulk-form")
    admin_panel.submit(form)
    admin_panel.wait_for_message("Adjusting 2 instances")
    refused = admin_panel.wait_for_message("1 instance was not adjusted")
    admin_panel.shot("bulk-submitted")
    assert full["name"] in refused
    for entry in grow:
        admin_panel.wait_for_row("instances", entry["id"], "Done")
        live = helpers.size(admin_conn, entry["id"])
        assert live["current_vcpus"] == entry["current_vcpus"] + 1
    admin_panel.shot("bulk-adjusted")
    assert helpers.size(admin_conn, full["id"])["current_vcpus"] == 4


def test_flavor_minimums_then_boot_at_minimum(admin_panel, admin_conn):
    flavor = admin_conn.compute.create_flavor(
        name="x1.e2e-ui", vcpus=4, ram=4096, disk=1)
    server = None
    try:
        admin_panel.open("?tab=elastic_sizing__flavors")
        admin_panel.open_row_action("flavors", flavor.id, "edit_minimums")
        form = admin_panel.modal()
        admin_panel.fill(form, {"minimum_cpu": 2, "minimum_memory": 2048})
        admin_panel.shot("flavor-minimums-form")
        admin_panel.submit(form)
        admin_panel.wait_for_message(
            'Updated the minimums of flavor "x1.e2e-ui".')
        admin_panel.wait_for_row("flavors", flavor.id, "2GB")
        admin_panel.shot("flavor-minimums-saved")
        specs = admin_conn.compute.fetch_flavor_extra_specs(flavor)
        assert specs.extra_specs == {"xloud:minimum_cpu": "2",
                                     "xloud:minimum_memory": "2048"}

        # Horizon's launch wizard needs the image and network services,
        # which this cloud has only as Nova-internal fixtures: boot through
        # the API, then see the new instance in the panel.
        image = admin_conn.compute.get(
            "/images", microversion="2.35").json()["images"][0]["id"]
        server = admin_conn.compute.create_server(
            name="e2e-ui-minimum", image_id=image, flavor_id=flavor.id,
            networks="none")
        helpers.wait_for_status(admin_conn, server.id, "ACTIVE")
        admin_panel.open()
        row = admin_panel.wait_for_row("instances", server.id,
                                       "e2e-ui-minimum")
        assert "x1.e2e-ui" in row
        admin_panel.shot("booted-at-minimum")
        live = helpers.size(admin_conn, server.id)
        assert (live["current_vcpus"], live["current_memory_mb"]) == (
            2, 2048)
    finally:
        if server is not None:
            admin_conn.compute.delete_server(server.id)
            admin_conn.compute.wait_for_delete(server, wait=120)
        admin_conn.compute.delete_flavor(flavor.id)


def test_history_lists_the_adjustments(admin_panel, admin_conn):
    entry = helpers.take(admin_conn, flavor="x1.elastic")
    first, _ = helpers.other_size(entry, (2, 2048), (3, 3072))
    for vcpus in (first, 1):
        resp = helpers.adjust(admin_conn, entry["id"], current_vcpus=vcpus)
        assert resp.status_code == 202, resp.text
        helpers.wait_for_action(admin_conn, entry["id"],
                                resp.json()["adjustment"]["request_id"])
    admin_panel.open("?all_tenants=1")
    admin_panel.open_row_action("instances", entry["id"], "history")
    table = admin_panel.find("table#history")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) >= 2
    newest = [row.text for row in rows[:2]]
    assert all("Success" in text for text in newest)
    # The compute's change record gives each action its from -> to.
    assert any(f"vCPUs {first} → 1" in text for text in newest), newest
    admin_panel.shot("history")


def test_member_has_no_panel_and_api_refuses(browser_module, cloud,
                                             member_conn, request):
    panel = Panel(browser_module, cloud, "member")
    try:
        member = cloud["member"]
        panel.driver.get(cloud["dashboard_url"] + "auth/login/")
        panel.find("#id_username").send_keys(member["username"])
        panel.driver.find_element(By.ID, "id_password").send_keys(
            member["password"])
        panel.driver.find_element(By.CSS_SELECTOR,
                                  "button[type=submit]").click()
        deadline = time.monotonic() + 60
        while "/auth/login" in panel.driver.current_url:
            assert time.monotonic() < deadline, "member login failed"
            time.sleep(0.5)
        panel.shot("member-home")
        assert "Elastic Sizing" not in panel.driver.page_source
        panel.driver.get(panel.panel.index_url)
        panel.shot("member-panel-url")
        assert "not authorized" in panel.driver.page_source
        assert not panel.driver.find_elements(By.ID, "instances")
    finally:
        panel.close()
    own = next(iter(member_conn.compute.servers()))
    resp = helpers.adjust(member_conn, own.id, current_vcpus=2)
    assert resp.status_code == 403, resp.text
