"""A focused selection of Tempest against the running local cloud.

The whole default selection (doc/tempest.md) takes about ten minutes on
two cores; this one keeps to the areas of issue 14 in a few minutes:
flavors and their extra specs, a few server actions, limits, quotas and
the admin servers API.  It runs ``deploy.localcloud.tempest.run`` exactly
as ``python -m deploy.localcloud tempest`` does, in the cloud's own
Tempest workspace.
"""

import json
import re
from pathlib import Path

from deploy.localcloud import tempest

FOCUSED_REGEX = (
    r"^tempest\.api\.compute\.("
    r"flavors\.|admin\.test_flavors"
    r"|limits\.|test_quotas\.|admin\.test_quotas\."
    r"|admin\.test_servers\.ServersAdmin275Test\."
    r"|admin\.test_delete_server\."
    r"|admin\.test_server_diagnostics\.ServerDiagnosticsTest\."
    r"|servers\.test_server_actions\.ServerActionsTestJSON\.test_("
    r"pause_unpause_server|suspend_resume_server|rebuild_server)\b"
    r")")
# Fewer passes mean the regex, or Tempest's configuration, lost tests.
MIN_PASSED = 60


def test_focused_tempest_selection_passes(cloud, capsys):
    state = Path(cloud["state_dir"])
    said: list[str] = []
    status = tempest.run(state, FOCUSED_REGEX, tempest.DEFAULT_CONCURRENCY,
                         said.append)
    outcome = json.loads(
        (tempest.workspace_of(state) / "last-run.json").read_text())
    passed, skipped, failed = (outcome[key] for key in
                               ("passed", "skipped", "failed"))
    with capsys.disabled():
        print(f"\ntempest (focused): {len(passed)} passed, {len(skipped)} "
              f"skipped, {len(failed)} failed in {outcome['seconds']} s")
    assert not failed, "\n\n".join(f"{test_id}\n{trace}" for test_id, trace
                                   in sorted(failed.items()))
    assert status == 0, "\n".join(said)
    selected = re.compile(FOCUSED_REGEX)
    assert all(selected.search(test_id) for test_id in passed)
    assert len(passed) >= MIN_PASSED, sorted(passed)
