"""The warm engine inside a real GIMP 3.0.4 and 3.2.6: two runs in one GIMP session and one in
a second GIMP session share one engine; the same seed gives a cold engine's pixels; a SIGKILLed
engine is replaced; a run that finds another client's job running waits, then gets its own
result; keep_warm 0 leaves no engine behind; the socket's folder and files are the user's alone.

Both GIMP sessions run in one command (scripts/warm_runs.py, phases 1 and 2): each command in
the tree gets its own PID namespace, so an engine cannot outlive the command, and the second
GIMP must start while the first one's engine is still warm.
"""

from __future__ import annotations

import shlex

import pytest

from .session import GIMP_BATCH, SCRIPTS

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def warm_runs(gimp):
    out = gimp.findings_path("warm runs")
    assert (SCRIPTS / "warm_runs.py").is_file()
    batch = " ".join(shlex.quote(a) for a in [gimp.tree.console, *GIMP_BATCH])
    script = shlex.quote(f"{gimp.scripts}/warm_runs.py")
    command = "; ".join(f"NST_WARM_PHASE={phase} {batch} < {script}" for phase in "12")
    # One precision for every engine here: this compares pixels across engines, and on a CPU
    # where bfloat16 pays, an engine started while the machine is busy measures the race
    # untrusted and runs float32 (device/cpu_precision.py), so its pixels differ by design.
    env = gimp.env(NST_E2E_OUT=out, NST_ENGINE_CPU_BF16="0")
    try:
        done = gimp.sh(["sh", "-c", command], "warm runs", env=env, timeout=900, check=False)
    finally:
        gimp.set_config(keep_warm=0)  # whatever happened, the other e2e modules run per-run
    facts = {}
    for phase in "12":
        facts.update(gimp.read_findings(f"{out}.{phase}", done, f"GIMP session {phase}"))
    facts["log"] = gimp.file_text(f"{gimp.home}/.local/share/nst-style-transfer/logs/engine.log")
    return facts


def ok(run):
    assert run["status"] == "success", run.get("message")
    assert run.get("pixels"), "no result layer"
    return run


def test_runs_in_one_and_in_a_second_gimp_share_one_engine(warm_runs):
    first, second = ok(warm_runs["first"]), ok(warm_runs["second"])
    later = ok(warm_runs["second_gimp"])
    assert first["engine_pid"] is not None, "the plug-in did not reach a warm engine"
    assert first["engine_pid"] == second["engine_pid"] == later["engine_pid"]
    assert warm_runs["log"].count("warm engine starting") >= 1


def test_warm_runs_give_the_cold_engines_pixels(warm_runs):
    cold = ok(warm_runs["cold"])
    assert cold["engine_pid"] is None  # keep_warm 0: no relay, a per-run engine
    pixels = {ok(warm_runs[k])["pixels"] for k in ("first", "second", "second_gimp",
                                                   "after_kill", "while_busy")}
    assert pixels == {cold["pixels"]}


def test_a_killed_engine_is_replaced_by_the_next_run(warm_runs):
    assert warm_runs["killed_gone"]
    after = ok(warm_runs["after_kill"])
    assert after["engine_pid"] not in (None, warm_runs["second_gimp"]["engine_pid"])


def test_keep_warm_0_leaves_no_engine(warm_runs):
    assert warm_runs["stopped_gone"]
    assert warm_runs["left_after_cold"] == []


def test_socket_folder_and_files_are_the_users_alone(warm_runs):
    uid = warm_runs["my_uid"]
    assert warm_runs["folder"] == {"mode": "0o700", "uid": uid, "socket": False, "dir": True}
    assert warm_runs["socket"] == {"mode": "0o600", "uid": uid, "socket": True, "dir": False}
    assert warm_runs["lock"]["mode"] == "0o600" and warm_runs["lock"]["uid"] == uid


def test_a_run_while_another_clients_job_runs_waits_then_gets_its_own_result(warm_runs):
    busy = ok(warm_runs["while_busy"])
    assert busy["waited"], "the run did not wait for the other client's job"
    assert busy["engine_pid"] == warm_runs["first"]["engine_pid"]
    other = [line for line in warm_runs["other_client"] if line]
    assert warm_runs["other_rc"] == 0, other
    assert other[0] == "optimizing"
    assert other[-1].startswith(f"result 20 10 {busy['engine_pid']}"), other
