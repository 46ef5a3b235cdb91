"""Reading a run's outcome back from stestr's repository.

The stream is a real one: a small unittest module run by subunit's runner,
loaded into a fresh stestr repository, as ``tempest run`` leaves it.
"""

import subprocess
import sys
import textwrap

import pytest

from deploy.localcloud import tempest

SAMPLE_TESTS = textwrap.dedent('''\
    import unittest


    class Tagged(unittest.TestCase):
        # Tempest appends its idempotent id and attributes to test ids.
        def id(self):
            return super().id() + "[id-0001,smoke]"

        def test_passes(self):
            pass

        def test_skips(self):
            self.skipTest("no swift here")

        def test_fails(self):
            self.assertEqual(1, 2, "one is not two")

        @unittest.expectedFailure
        def test_fails_as_expected(self):
            self.fail("known")

        @unittest.expectedFailure
        def test_passes_unexpectedly(self):
            pass


    class BrokenSetUp(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            raise RuntimeError("no flavor to boot")

        def test_never_runs(self):
            pass
''')


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> tempest.Outcome:
    code = tmp_path_factory.mktemp("code")
    (code / "sample_tests.py").write_text(SAMPLE_TESTS)
    stream = subprocess.run(
        [sys.executable, "-m", "subunit.run", "sample_tests"], cwd=code,
        capture_output=True, check=True).stdout
    workspace = tmp_path_factory.mktemp("workspace")
    stestr = str(tempest.BIN / "stestr")
    subprocess.run([stestr, "init"], cwd=workspace, check=True,
                   capture_output=True)
    # load exits 1 when the stream has failures: that is the point here.
    subprocess.run([stestr, "load"], cwd=workspace, input=stream,
                   capture_output=True)
    return tempest.read_last_run(workspace)


def test_passed_tests_are_listed_without_their_attributes(outcome):
    assert sorted(outcome.passed) == [
        "sample_tests.Tagged.test_fails_as_expected",
        "sample_tests.Tagged.test_passes",
    ]


def test_skipped_tests_keep_their_reason(outcome):
    assert outcome.skipped == {"sample_tests.Tagged.test_skips":
                               "no swift here"}


def test_failed_tests_keep_their_traceback(outcome):
    assert set(outcome.failed) == {
        "sample_tests.Tagged.test_fails",
        "sample_tests.Tagged.test_passes_unexpectedly",
        "setUpClass (sample_tests.BrokenSetUp)",
    }
    assert "AssertionError: 1 != 2 : one is not two" in (
        outcome.failed["sample_tests.Tagged.test_fails"])
    assert "RuntimeError: no flavor to boot" in (
        outcome.failed["setUpClass (sample_tests.BrokenSetUp)"])


def test_an_unexpected_success_says_so(outcome):
    assert "expected to fail" in (
        outcome.failed["sample_tests.Tagged.test_passes_unexpectedly"])


def test_an_empty_workspace_is_an_error(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        tempest.read_last_run(tmp_path)


def _workspace_with_a_run(tmp_path, stream: bytes):
    workspace = tmp_path / "tempest"
    (workspace / "etc").mkdir(parents=True)
    stestr = str(tempest.BIN / "stestr")
    subprocess.run([stestr, "init"], cwd=workspace, check=True,
                   capture_output=True)
    subprocess.run([stestr, "load"], cwd=workspace, input=stream,
                   capture_output=True)
    return workspace


def test_a_run_that_records_nothing_does_not_report_the_one_before(
        tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "sample_tests.py").write_text(SAMPLE_TESTS)
    earlier = subprocess.run(
        [sys.executable, "-m", "subunit.run", "sample_tests"], cwd=code,
        capture_output=True, check=True).stdout
    workspace = _workspace_with_a_run(tmp_path, earlier)
    assert tempest.recorded_runs(workspace) == 1
    (workspace / "last-run.json").write_text("{}")
    conf = workspace / "etc" / "tempest.conf"
    conf.write_text("[DEFAULT]\n")
    monkeypatch.setattr(tempest, "write_config", lambda state, say: conf)
    monkeypatch.setattr(tempest, "workspace_of", lambda state: workspace)
    said: list[str] = []

    status = tempest.run(tmp_path, r"^tempest\.no_such_module\.", 1,
                         said.append)

    assert status != 0
    assert tempest.recorded_runs(workspace) == 1
    assert "this run recorded no results" in said[-1], said
    assert not (workspace / "last-run.json").exists()
