"""The CPU's precision is chosen by timing both on this CPU, cached per CPU, overridable."""

from __future__ import annotations

import json

import pytest
import torch

from nst_engine.device import cpu_precision as CP
from nst_engine.device.resolve import autocast_dtype


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A private data folder, no override, and nothing remembered from earlier tests."""
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(CP.ENV, raising=False)
    for env in CP.ISA_CAP_ENVS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(CP, "_memo", {})
    # The races below are faked; the machine running the tests may be busy or not.
    monkeypatch.setattr(CP, "_load_per_cpu", lambda: 0.1)
    return tmp_path / "data"


def fake_rounds(monkeypatch, fp32, bf16):
    """Replace the timed rounds by given sequences of seconds (the last one repeats)."""
    calls = {False: 0, True: 0}
    seq = {False: list(fp32), True: list(bf16)}

    def fake(inputs, bf16_flag):
        i = calls[bf16_flag]
        calls[bf16_flag] += 1
        s = seq[bf16_flag]
        return s[min(i, len(s) - 1)]

    monkeypatch.setattr(CP, "_round", fake)
    return calls


def test_override_is_not_measured(data, monkeypatch):
    monkeypatch.setattr(CP, "measure", lambda: pytest.fail("measured despite the override"))
    monkeypatch.setenv(CP.ENV, "1")
    assert CP.choose().bf16 is True and autocast_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv(CP.ENV, "0")
    c = CP.choose()
    assert (c.bf16, c.source) == (False, "override") and CP.ENV in c.reason
    assert autocast_dtype(torch.device("cpu")) is None
    assert not CP.cache_path().exists()


def test_clearly_faster_bfloat16_is_chosen_and_cached(data, monkeypatch):
    # Warm-up rounds first (one each), then the race; bfloat16 at half the time.
    fake_rounds(monkeypatch, [0.05, 0.010], [0.05, 0.005])
    first = CP.choose()
    assert (first.bf16, first.source) == (True, "measured")
    assert (first.fp32_ms, first.bf16_ms) == (10.0, 5.0) and first.rounds >= CP.MIN_ROUNDS
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16
    entries = json.loads(CP.cache_path().read_text())["entries"]
    (key_text, entry), = entries.items()
    key = json.loads(key_text)
    assert key["threads"] == torch.get_num_threads() and key["torch"] == torch.__version__
    assert entry["bf16"] is True and "0.50x" in entry["reason"]

    # A new process (nothing remembered) reads the cache instead of measuring.
    monkeypatch.setattr(CP, "_memo", {})
    monkeypatch.setattr(CP, "measure", lambda: pytest.fail("measured although cached"))
    again = CP.choose()
    assert (again.bf16, again.source, again.bf16_ms) == (True, "cache", 5.0)


def test_near_tie_keeps_float32(data, monkeypatch):
    fake_rounds(monkeypatch, [0.01], [0.009])  # 0.9x: faster, but not clearly
    c = CP.choose()
    assert c.bf16 is False and "0.90x" in c.reason and "float32" in c.reason


def test_a_disturbed_round_does_not_decide(data, monkeypatch):
    # float32's second race round was hit by another process; the best rounds still decide.
    fake_rounds(monkeypatch, [0.01, 0.01, 0.08, 0.01], [0.009])
    assert CP.choose().bf16 is False
    monkeypatch.setattr(CP, "_memo", {})
    CP.cache_path().unlink()
    # And the other way round: bfloat16 disturbed once, still chosen on its best rounds.
    fake_rounds(monkeypatch, [0.01], [0.005, 0.005, 0.05, 0.005])
    assert CP.choose().bf16 is True


def test_much_slower_bfloat16_stops_early(data, monkeypatch):
    calls = fake_rounds(monkeypatch, [0.01], [0.4])
    c = CP.choose()
    assert c.bf16 is False and c.rounds == 2 and "40.00x" in c.reason
    assert calls[True] == 3  # warm-up + 2 rounds, not MAX_ROUNDS


def test_each_isa_cap_and_thread_count_has_its_own_answer(data, monkeypatch):
    fake_rounds(monkeypatch, [0.01], [0.005])
    CP.choose()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    fake_rounds(monkeypatch, [0.01], [0.05])
    capped = CP.choose()
    assert capped.bf16 is False and capped.key["isa_cap"] == "ONEDNN_MAX_CPU_ISA=AVX2"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fake_rounds(monkeypatch, [0.01], [0.02])
        assert CP.choose().bf16 is False
    finally:
        torch.set_num_threads(old)
    assert CP.choose().bf16 is True  # the first answer, from memory
    entries = json.loads(CP.cache_path().read_text())["entries"]
    assert len(entries) == 3


def test_unwritable_data_folder_still_decides_and_says_so(tmp_path, data, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NST_DATA_DIR", str(blocker / "data"))
    fake_rounds(monkeypatch, [0.01], [0.02])
    c = CP.choose()
    assert c.bf16 is False and "not cached" in c.cache_note
    assert blocker.read_text() == "not a folder"


def test_a_damaged_cache_is_measured_again_and_replaced(data, monkeypatch):
    data.mkdir(parents=True)
    CP.cache_path().write_text("{ this is not json")
    fake_rounds(monkeypatch, [0.01], [0.02])
    assert CP.choose().source == "measured"
    assert json.loads(CP.cache_path().read_text())["entries"]


def test_real_measurement_on_this_cpu(data):
    """The real probe (no fakes): consistent numbers and a decision that follows the rule."""
    m = CP.measure()
    assert m.source == "measured" and m.rounds >= 1
    assert m.fp32_ms > 0 and m.bf16_ms > 0
    ratio = m.bf16_ms / m.fp32_ms
    # The times are kept rounded to 0.01 ms and the rule saw them unrounded: on the bound
    # (1.76 / 2.2 = 0.8 was seen) the rounded ratio may fall on either side.
    if abs(ratio - CP.BF16_MAX_RATIO) > 0.01 * CP.BF16_MAX_RATIO:
        assert m.bf16 == (m.settled and ratio <= CP.BF16_MAX_RATIO)
    assert not m.bf16 or m.settled
    assert not CP.cache_path().exists()  # measure() alone caches nothing


def test_a_race_cut_short_by_a_busy_machine_is_float32_and_not_cached(data, monkeypatch):
    # The clock passes the deadline within the first round; bfloat16 looks faster.
    clock = iter(range(10_000))
    monkeypatch.setattr(CP.time, "perf_counter", lambda: float(next(clock)) * CP.DEADLINE_S)
    fake_rounds(monkeypatch, [0.01], [0.004])
    c = CP.choose()
    assert (c.bf16, c.settled) == (False, False) and c.rounds < CP.MIN_ROUNDS
    assert "measured again" in c.reason and not CP.cache_path().exists()


def test_busy_machine_gives_float32_and_caches_nothing(data, monkeypatch):
    # Other work on the cores makes bfloat16 look faster than it is (seen: 0.68x under load,
    # 1.5x quiet): such a race decides nothing.
    fake_rounds(monkeypatch, fp32=[0.020], bf16=[0.010])
    monkeypatch.setattr(CP, "_load_per_cpu", lambda: 5.0)
    c = CP.choose()
    assert (c.bf16, c.settled) == (False, False) and "load average 5.00 per CPU" in c.reason
    assert not CP.cache_path().exists()
    monkeypatch.setattr(CP, "_memo", {})
    monkeypatch.setattr(CP, "_load_per_cpu", lambda: 0.2)
    quiet = CP.choose()
    assert (quiet.bf16, quiet.source) == (True, "measured") and CP.cache_path().exists()
