"""The memory model's seamless figure (issue 31 item 4): a seamless level keeps the wrap pad's
padded activations for the backward pass, so it plans with ``SEAMLESS_FACTOR`` times the
table's bytes per pixel, and what the engine learns from seamless levels (measured peaks,
out-of-memory errors) is kept apart from the plain levels' figures. The GPU is faked: its free
memory is what ``torch.cuda.mem_get_info`` is made to answer, as tests/test_devices_gpu.py
does."""

from __future__ import annotations

import pytest
import torch

from nst_engine import StyleParams
from nst_engine.device import memory
from nst_engine.transfer import levels
from nst_engine.transfer.run import RunState

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    memory.forget()
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    yield
    memory.forget()


def _fake_free_gpu(monkeypatch, free: int) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, 80 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 0)


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16])
def test_a_seamless_level_plans_with_more_bytes_per_pixel(amp):
    plain = memory.bytes_per_pixel(CUDA, amp, "gram")
    wrapped = memory.bytes_per_pixel(CUDA, amp, "gram", seamless=True)
    assert wrapped == pytest.approx(plain * memory.SEAMLESS_FACTOR[memory._precision(amp)])
    # At least the +24 % of kept activations counted at 256 px float32 (issue 31).
    assert wrapped >= 1.24 * plain


def test_on_a_faked_gpu_a_level_that_fits_plain_is_tiled_seamless(monkeypatch):
    """The free memory holds a 2048x2048 level plain but not with the wrap's kept pads: the
    seamless plan tiles it, with the plain tile side (tiles run the zero-padded network)."""
    per_px = memory.bytes_per_pixel(CUDA, None)
    free = int((memory.FIXED_BYTES + 2048 * 2048 * per_px * 1.1) / memory.BUDGET_SHARE["cuda"])
    _fake_free_gpu(monkeypatch, free)
    plain, wrapped = memory.Budget(CUDA, None), memory.Budget(CUDA, None, seamless=True)
    assert plain.total == wrapped.total == int(free * memory.BUDGET_SHARE["cuda"])
    assert plain.fits((2048, 2048)) and not wrapped.fits((2048, 2048))
    assert wrapped.tile_side() == plain.tile_side()
    assert wrapped.largest_side((2048, 2048)) < 2048 <= plain.largest_side((2048, 2048))
    assert wrapped.style_side((2048, 2048)) == plain.style_side((2048, 2048))
    for on, tiled in ((False, False), (True, True)):
        params = StyleParams().with_overrides(max_size=2048, levels=1, seamless=on)
        budget = memory.Budget(CUDA, None, seamless=on)
        (level,) = levels.plan(params, (2048, 2048), CUDA, budget)
        assert (level.tile is not None) is tiled, on


def test_a_run_plans_with_its_seamless_option():
    for on in (False, True):
        params = StyleParams().with_overrides(max_size=64, levels=1, seamless=on)
        run = RunState(params, torch.device("cpu"), (64, 64), None, 0.0)
        assert run.memory.seamless is on
        assert run.memory.per_pixel == memory.bytes_per_pixel(torch.device("cpu"), run.amp,
                                                              "gram", on)


def test_a_seamless_measurement_does_not_inflate_later_plain_plans():
    """A warm engine: one seamless job measures its (larger) figure; the next plain job still
    plans with the plain one, and a plain measurement still raises the seamless one."""
    px = 2 * memory.OBSERVE_MIN_PIXELS
    table = memory.bytes_per_pixel(CUDA, None)
    memory.observe(CUDA, None, px, int(px * table * 2), "gram", seamless=True)
    assert memory.bytes_per_pixel(CUDA, None) == table
    assert memory.bytes_per_pixel(CUDA, None, seamless=True) == pytest.approx(2 * table)
    memory.forget()
    memory.observe(CUDA, None, px, int(px * table * 1.5), "gram")
    factor = memory.SEAMLESS_FACTOR["float32"]
    assert memory.bytes_per_pixel(CUDA, None) == pytest.approx(1.5 * table)
    assert memory.bytes_per_pixel(CUDA, None, seamless=True) == pytest.approx(1.5 * table * factor)


def test_out_of_memory_ceilings_are_kept_apart():
    """A seamless level that ran out of memory lowers only the seamless ceiling (a plain level
    of that size needs less); a plain one lowers both."""
    memory.out_of_memory(CUDA, None, 4_000_000, "gram", seamless=True)
    assert memory.pixel_ceiling(CUDA, None) == float("inf")
    assert memory.pixel_ceiling(CUDA, None, seamless=True) == 4_000_000 * memory.OOM_SHARE
    memory.out_of_memory(CUDA, None, 3_000_000, "gram")
    assert memory.pixel_ceiling(CUDA, None) == 3_000_000 * memory.OOM_SHARE
    assert memory.pixel_ceiling(CUDA, None, seamless=True) == 3_000_000 * memory.OOM_SHARE


def test_a_seamless_out_of_memory_error_leaves_plain_jobs_whole(random_weights_file,
                                                                monkeypatch):
    """The engine's own path (``pipeline``): a whole seamless level runs out of memory and
    retries in tiles; the error is recorded as seamless, so the next plain job of the same
    size still runs whole."""
    from nst_engine.transfer import stylize
    from tests.test_devices_gpu import inject_out_of_memory, out_of_memory_pictures

    failures = inject_out_of_memory(monkeypatch, when=lambda run: run.params.seamless)
    content, style = out_of_memory_pictures()

    def job(seamless: bool):
        progress = []
        stylize(content=content, styles=[(style, 1.0)], device="cpu",
                params=StyleParams().with_overrides(max_size=128, levels=1, iterations=2,
                                                    seamless=seamless),
                weights=random_weights_file, progress=progress.append)
        return [p for p in progress if p.stage == "optimizing"][-1]
    assert job(True).tiles > 1 and failures == [(96, 128)]
    cpu = torch.device("cpu")
    # The run's precision is the CPU's choice (bfloat16 or float32: None), so both are read.
    def ceiling(**kw):
        return min(memory.pixel_ceiling(cpu, amp, "gram", **kw) for amp in (None, torch.bfloat16))
    assert ceiling(seamless=True) < 96 * 128
    assert ceiling() == float("inf")
    assert job(False).tiles == 0  # whole: no tiles
