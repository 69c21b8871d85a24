"""The GPU decisions, tested on the CPU by faking what the engine asks torch: the compute
capability (precision per NVIDIA card), the torch version and device type (Apple MPS), where
random directions are drawn, what an out-of-memory error teaches the plan, cuDNN's
determinism, float16 loss scaling, and the GPU benchmark's CPU-side arithmetic.

No test here needs a GPU; what they cannot show (speed, the real kernels) is pending
``benchmarks/bench_gpu.py`` on a GPU (benchmarks/README.md, "GPU rows: pending").
"""

from __future__ import annotations

import importlib.util
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine import StyleParams, doctor
from nst_engine.device import determinism, memory
from nst_engine.device import resolve as R
from nst_engine.transfer import convert, losses, objective as objective_module
from nst_engine.transfer import optimise as optimise_module
from nst_engine.transfer import pipeline, scaler as S, stylize, tiles

ROOT = Path(__file__).resolve().parents[1]

CARDS = {  # name: (compute capability, is_bf16_supported on recent torch: emulated before 8.0)
    "NVIDIA GeForce GTX 1080": ((6, 1), True),
    "Tesla T4": ((7, 5), True),
    "NVIDIA A100-SXM4-80GB": ((8, 0), True),
    "NVIDIA H100 80GB HBM3": ((9, 0), True),
}


@pytest.fixture(autouse=True)
def fresh_memory():
    """Each test starts and ends with nothing learnt about memory in this process."""
    memory.forget()
    yield
    memory.forget()


def fake_cuda(monkeypatch, name: str, bf16_answer: bool | None = None) -> None:
    cap, bf16 = CARDS[name]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: cap)
    answer = bf16 if bf16_answer is None else bf16_answer
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: answer)


# ---------------------------------------------------------------- precision per NVIDIA card

@pytest.mark.parametrize("name,dtype,scaled", [
    ("NVIDIA GeForce GTX 1080", None, False),       # sm_61: float16 at 1/64 rate, no tensor cores
    ("Tesla T4", torch.float16, True),              # sm_75: float16 tensor cores, bf16 emulated
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, False),
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, False),
])
@pytest.mark.parametrize("bf16_answer", [True, False])  # recent torch (emulation) and torch 2.2
def test_precision_follows_the_compute_capability_not_is_bf16_supported(
        monkeypatch, name, dtype, scaled, bf16_answer):
    fake_cuda(monkeypatch, name, bf16_answer)
    p = R.device_precision(torch.device("cuda"))
    assert (p.dtype, p.loss_scale) == (dtype, scaled)
    assert R.autocast_dtype(torch.device("cuda")) == dtype
    major, minor = CARDS[name][0]
    assert f"compute capability {major}.{minor}" in p.reason


@pytest.mark.parametrize("name,precision,scaling", [
    ("NVIDIA GeForce GTX 1080", "float32", False), ("Tesla T4", "float16", True),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", False), ("NVIDIA H100 80GB HBM3", "bfloat16", False)])
def test_doctor_says_each_gpus_precision_and_why(monkeypatch, tmp_path, capsys, name, precision,
                                                  scaling):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NST_ENGINE_CPU_BF16", "0")
    fake_cuda(monkeypatch, name)
    doctor.run(Namespace(weights=None, json=True))
    report = json.loads(capsys.readouterr().out)
    gpu = [d for d in report["devices"] if d["type"] == "cuda"]
    assert len(gpu) == 1 and gpu[0]["name"] == name
    assert (gpu[0]["precision"], gpu[0]["loss_scaling"]) == (precision, scaling)
    assert gpu[0]["capability"] == "%d.%d" % CARDS[name][0] and gpu[0]["why"]
    doctor.run(Namespace(weights=None, json=False))
    text = capsys.readouterr().out
    assert f"cuda:0:      {precision} convolutions" in text
    assert ("with loss scaling" in text) == scaling and gpu[0]["why"] in text


# ---------------------------------------------------------------- float16 loss scaling

def test_loss_scaling_changes_no_digit_of_a_finite_gradient():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    (x * 1e-3).pow(2).sum().backward()
    plain, x.grad = x.grad, None
    sc = S.LossScaler(x.device, True)
    sc.backward((x * 1e-3).pow(2).sum())
    assert bool(sc.unscale(x)) and torch.equal(x.grad, plain)
    assert float(sc.scale) == S.INIT_SCALE
    off = S.LossScaler(x.device, False)  # disabled: a plain backward, nothing unscaled
    x.grad = None
    off.backward((x * 1e-3).pow(2).sum())
    assert off.unscale(x) is None and torch.equal(x.grad, plain)


def test_loss_scaling_backs_off_on_inf_and_grows_again(monkeypatch):
    monkeypatch.setattr(S, "GROWTH_INTERVAL", 3)
    x = torch.ones(4, requires_grad=True)
    sc = S.LossScaler(x.device, True)
    x.grad = torch.tensor([1.0, float("inf"), 2.0, 3.0])
    assert not bool(sc.unscale(x))
    assert torch.equal(x.grad, torch.zeros(4)) and float(sc.scale) == S.INIT_SCALE / 2
    for _ in range(3):
        x.grad = torch.ones(4)
        sc.unscale(x)
    assert float(sc.scale) == S.INIT_SCALE and float(sc.good) == 0


def _stylize(weights, params: StyleParams, content=None) -> np.ndarray:
    content = content or Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8))
    style = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), np.uint8))
    out = stylize(content=content, styles=[(style, 1.0)], params=params, device="cpu",
                  weights=weights)
    return np.asarray(out)


def _small(**kw) -> StyleParams:
    base = dict(max_size=64, levels=1, iterations=6, seed=4, full_resolution="never")
    return StyleParams().with_overrides(**{**base, **kw})


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_adam_and_lbfgs_results_do_not_change_with_the_loss_scale(random_weights_file,
                                                                  monkeypatch, optimizer):
    """The scale is a power of two: the unscaled gradient is the very float32 gradient, so the
    result is bit for bit the unscaled run's (in either CPU precision)."""
    plain = _stylize(random_weights_file, _small(optimizer=optimizer))
    real = R.device_precision

    def scaled(dev):
        p = real(dev)
        return R.Precision(p.dtype, True, p.reason)
    monkeypatch.setattr("nst_engine.transfer.run.device_precision", scaled)
    seen = []
    real_unscale = S.LossScaler.unscale
    monkeypatch.setattr(S.LossScaler, "unscale",
                        lambda self, x: seen.append(self.enabled) or real_unscale(self, x))
    assert np.array_equal(_stylize(random_weights_file, _small(optimizer=optimizer)), plain)
    assert seen and all(seen)


# ---------------------------------------------------------------- Apple MPS

def test_torch_versions_compare_as_numbers():
    assert R.torch_version("2.4.1+cpu") == (2, 4) and R.torch_version("2.10.0") == (2, 10)
    assert R.torch_version("2.6.0a0+git123") == (2, 6) and R.torch_version("2.10.0") > (2, 6)


@pytest.mark.parametrize("version,host", [((2, 2), True), ((2, 4), True), ((2, 5), True),
                                          ((2, 6), False), ((2, 10), False)])
def test_mps_upsamples_on_the_host_before_torch_2_6(monkeypatch, version, host):
    monkeypatch.setattr(R, "torch_version", lambda v=None: version)
    mps = torch.device("mps")
    assert convert.resize_on_host(mps, down=False) is host
    assert convert.resize_on_host(mps, down=True) is True  # antialiased bilinear: not verified
    for other in ("cpu", "cuda"):
        assert convert.resize_on_host(torch.device(other), down=False) is False
        assert convert.resize_on_host(torch.device(other), down=True) is False


@pytest.mark.parametrize("hw", [(41, 57), (9, 13)])  # up (bicubic) and down (antialiased)
def test_a_host_resize_gives_the_same_pixels(monkeypatch, hw):
    t = torch.rand(1, 3, 20, 30)
    direct = convert.resize(t, hw)
    asked = []  # the first call says "on the host", the host's own call computes
    monkeypatch.setattr(convert, "resize_on_host",
                        lambda dev, down, version=None: asked.append(down) or len(asked) == 1)
    assert torch.equal(convert.resize(t, hw), direct) and len(asked) == 2


def test_mps_keeps_the_default_layout_other_devices_channels_last():
    assert R.memory_format(torch.device("mps")) == torch.contiguous_format
    assert R.memory_format(torch.device("cuda")) == torch.channels_last
    assert R.memory_format(torch.device("cpu")) == torch.channels_last


def test_the_model_takes_the_layout_of_its_device(random_weights_file, monkeypatch):
    from nst_engine.model.vgg import VGGFeatures
    from nst_engine.model.weights import load_weights

    model = VGGFeatures(load_weights(random_weights_file), ["relu1_1", "relu2_1"]).to("cpu")
    conv = model.body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    # On MPS (faked: the layout asked for on the CPU is MPS's) the weights are contiguous.
    monkeypatch.setattr("nst_engine.model.vgg.memory_format",
                        lambda dev: torch.contiguous_format)
    assert model.to("cpu").body[0].weight.is_contiguous()


def test_style_masks_are_averaged_on_the_host_for_mps(monkeypatch):
    """MPS refuses area averaging between sizes that do not divide; the mask goes to the host."""
    feat = torch.rand(1, 4, 5, 7)
    mask = torch.rand(1, 1, 23, 31)
    seen = []
    real = torch.nn.functional.interpolate

    def spy(x, *a, **k):
        seen.append(x.device.type)
        return real(x, *a, **k)
    monkeypatch.setattr(losses.F, "interpolate", spy)
    ref = losses.opaque_pixels(feat, mask)

    class FakeMps:  # a mask that says it lives on MPS and moves to the host when asked
        device = torch.device("mps")

        def float(self):
            return self

        def cpu(self):
            return mask
    assert torch.equal(losses.opaque_pixels(feat, FakeMps()), ref) and seen == ["cpu", "cpu"]


# ---------------------------------------------------------------- sliced Wasserstein's draws

def test_directions_come_from_a_generator_on_the_images_device(monkeypatch):
    host = torch.Generator().manual_seed(9)
    assert losses.direction_generator(torch.device("cpu"), 9, host) is host  # CPU: unchanged
    made = []

    class FakeGenerator:
        def __init__(self, device):
            self.device = torch.device(device)

        def manual_seed(self, seed):
            made.append((self.device, seed))
            return self
    monkeypatch.setattr(torch, "Generator", FakeGenerator)
    gen = losses.direction_generator(torch.device("cuda"), 9, host)
    assert gen is not host and made == [(torch.device("cuda"), 9)]


def test_directions_are_drawn_where_the_generator_and_image_are_without_a_copy(monkeypatch):
    drawn, copied = [], []
    real_randn, real_to = torch.randn, torch.Tensor.to

    class Gen:
        device = torch.device("meta")
    monkeypatch.setattr(torch, "randn", lambda *s, generator=None, device=None: drawn.append(
        device) or real_randn(*s, device=device))
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: copied.append(a) or
                        real_to(self, *a, **k))
    dirs = losses.random_directions(8, 5, Gen(), torch.device("meta"))
    assert drawn == [torch.device("meta")] and not copied and dirs.shape == (8, 5)


def test_same_seed_same_directions_and_sliced_wasserstein_losses():
    feats, x = [torch.rand(1, 6, 9, 9)], torch.rand(1, 6, 7, 7)

    def run(seed):
        host = torch.Generator().manual_seed(seed)
        draws = losses.direction_generator(torch.device("cpu"), seed, host)
        loss = losses.SlicedWassersteinLoss(feats, [None], [1.0], generator=host, draws=draws)
        return [float(loss(x)) for _ in range(3)]
    assert run(3) == run(3) and run(3) != run(4)
    assert len(set(run(3))) == 3  # fresh directions every call


def test_the_pipeline_gives_the_objective_the_devices_generator(random_weights_file, monkeypatch):
    seen = []
    real = objective_module.Objective.__init__

    def spy(self, model, params, styles, amp, generator, draws=None):
        seen.append((generator, draws))
        real(self, model, params, styles, amp, generator, draws)
    monkeypatch.setattr(objective_module.Objective, "__init__", spy)
    made = []
    real_gen = losses.direction_generator
    monkeypatch.setattr(pipeline, "direction_generator",
                        lambda dev, seed, host: made.append((dev, seed)) or
                        real_gen(dev, seed, host))
    _stylize(random_weights_file, _small(style_loss="sliced_wasserstein", iterations=2))
    assert made == [(torch.device("cpu"), 4)]
    assert seen and all(d is g for g, d in seen)  # on the CPU: the run's own generator


# ---------------------------------------------------------------- tiles blended on the device

def _old_blend_into(canvas, tile, result):
    """``tiles.blend_into`` as it was before it blurred only the overlap bands (reference)."""
    ys, xs = tile.slices
    region = canvas[..., ys, xs]
    result = result.to(canvas.device, canvas.dtype)
    overlap = max(tile.overlap_top, tile.overlap_left)
    if overlap == 0:
        region.copy_(result)
        return
    sigma = max(1.0, overlap / tiles.LOW_PASS_FRACTION)
    wide = tiles.weights(tile).to(canvas.device, canvas.dtype)
    narrow = tiles.weights(tile, texture=True).to(canvas.device, canvas.dtype)
    shared = (wide < 1).to(canvas.dtype)
    low_old = tiles._low_pass(region * shared, sigma) / tiles._low_pass(shared, sigma).clamp_min(1e-6)
    low_new = tiles._low_pass(result, sigma)
    high = (region - low_old).mul_(1 - narrow).add_((result - low_new).mul_(narrow))
    region.copy_(low_old.mul_(1 - wide).add_(low_new.mul_(wide)).add_(high))


@pytest.mark.parametrize("hw,tile", [((96, 128), 64), ((300, 41), 100), ((200, 260), 96),
                                     ((512, 700), 256), ((70, 70), 64)])
def test_band_blend_is_the_whole_tile_blend(hw, tile):
    gen = torch.Generator().manual_seed(0)
    start = torch.rand(1, 3, *hw, generator=gen)
    new, old = start.clone(), start.clone()
    for t in tiles.grid(hw, tile):
        result = torch.rand(1, 3, t.bottom - t.top, t.right - t.left, generator=gen)
        tiles.blend_into(new, t, result)
        _old_blend_into(old, t, result)
    assert (new - old).abs().max() <= 1e-5


def test_only_the_overlap_bands_are_blurred(monkeypatch):
    hw, side = (1792, 1792), 1024  # 2x2 tiles of 1024 px, 256 px overlaps (a GPU's tiles)
    blurred = []
    monkeypatch.setattr(tiles, "_low_pass", lambda img, s: blurred.append(
        img.shape[-2] * img.shape[-1]) or torch.zeros_like(img))  # the blur's cost is the point
    canvas = torch.rand(1, 3, *hw)
    grid = tiles.grid(hw, side)
    for t in grid:
        tiles.blend_into(canvas, t, torch.rand(1, 3, t.bottom - t.top, t.right - t.left))
    whole = sum(3 * (t.bottom - t.top) * (t.right - t.left) for t in grid
                if t.overlap_top or t.overlap_left)
    assert 0 < sum(blurred) < 0.6 * whole  # three blurs of each whole tile before


def test_a_gpu_level_keeps_its_canvas_on_the_device_when_it_fits():
    cuda = torch.device("cuda")
    big = memory.Budget(cuda, torch.bfloat16, total=8 << 30)
    assert big.holds_canvas((4000, 3000)) and not big.holds_canvas((40000, 30000))
    assert memory.Budget(torch.device("cpu"), None, total=1 << 20).holds_canvas((9999, 9999))
    assert big.holds_output((3000, 4000)) and not big.holds_output((30000, 40000))


# ---------------------------------------------------------------- out of memory teaches the plan

def test_out_of_memory_sets_a_ceiling_per_device_precision_and_style_loss():
    cuda = torch.device("cuda")
    b = memory.Budget(cuda, torch.float16, total=40 << 30, style_loss="gram")
    assert b.fits((2000, 2000))
    memory.out_of_memory(cuda, torch.float16, 2000 * 2000, "gram")
    again = memory.Budget(cuda, torch.float16, total=40 << 30, style_loss="gram")
    assert not again.fits((2000, 2000)) and again.tile_side() ** 2 < 2000 * 2000
    assert again.largest_side((2000, 2000)) < 2000
    for other in (memory.Budget(cuda, torch.bfloat16, total=40 << 30),
                  memory.Budget(cuda, torch.float16, total=40 << 30, style_loss="mean_cov")):
        assert other.fits((2000, 2000))


def test_the_table_knows_each_style_loss():
    cpu = torch.device("cpu")
    for loss in ("gram", "mean_cov", "sliced_wasserstein"):
        assert loss in memory.BYTES_PER_PIXEL
        for amp in (None, torch.bfloat16, torch.float16):
            assert memory.bytes_per_pixel(cpu, amp, loss) == \
                memory.BYTES_PER_PIXEL[loss][memory._precision(amp)]
    assert memory.BYTES_PER_PIXEL["sliced_wasserstein"]["float32"] > \
        memory.BYTES_PER_PIXEL["gram"]["float32"]


def inject_out_of_memory(monkeypatch, when=lambda run: True) -> list:
    """A device too small for a whole 96x128 level: ``pipeline.optimise`` raises torch's
    out-of-memory error for more than 7000 px at once (0.57 of the level) when ``when(run)``,
    while the memory table says the whole level fits. Returns the failed shapes, as they come."""
    monkeypatch.setenv(memory.BUDGET_ENV, "4096")
    failures, real = [], optimise_module.optimise

    def small_device(run, objective, init, n_steps, check_cancel):
        if when(run) and init.shape[-2] * init.shape[-1] > 7000:
            failures.append(tuple(init.shape[-2:]))
            raise torch.OutOfMemoryError("injected: out of memory")
        return real(run, objective, init, n_steps, check_cancel)
    monkeypatch.setattr(pipeline, "optimise", small_device)
    return failures


def out_of_memory_pictures():
    """The 96x128 content and a style for ``inject_out_of_memory``'s level."""
    rng = np.random.default_rng
    return (Image.fromarray(rng(1).integers(0, 255, (96, 128, 3), np.uint8)),
            Image.fromarray(rng(2).integers(0, 255, (40, 40, 3), np.uint8)))


def test_a_later_job_does_not_repeat_an_out_of_memory_error(random_weights_file, monkeypatch):
    """Job 1 runs out of memory at its level and retries in tiles; job 2 (a warm engine's
    next job, same size) plans the tiles from the start: no second error."""
    failures = inject_out_of_memory(monkeypatch)
    content, style = out_of_memory_pictures()
    params = _small(max_size=128, iterations=2)
    notes = []

    def job():
        progress = []
        stylize(content=content, styles=[(style, 1.0)], params=params, device="cpu",
                weights=random_weights_file, progress=progress.append)
        notes.append({p.note for p in progress if p.note})
        return [p for p in progress if p.stage == "optimizing"][-1]
    first = job()
    assert failures == [(96, 128)] and first.tiles > 1 and notes[0]
    failures.clear()
    second = job()
    assert failures == [] and second.tiles > 1 and notes[1] == set()


# ---------------------------------------------------------------- seeds on CUDA

def test_cudnn_is_deterministic_for_a_cuda_run_and_restored_after():
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark)
    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        with determinism.repeatable(torch.device("cuda")):
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with determinism.repeatable(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def test_stylize_runs_inside_the_repeatable_scope(random_weights_file, monkeypatch):
    entered = []
    real = determinism.repeatable

    def spy(dev):
        entered.append(dev)
        return real(dev)
    monkeypatch.setattr(pipeline, "repeatable", spy)
    _stylize(random_weights_file, _small(iterations=1))
    assert entered == [torch.device("cpu")]


def test_the_loop_term_asks_its_images_device_and_gathers_without_grid_sample(monkeypatch):
    """CUDA's grid_sample backward adds with atomics (and MPS has none): where
    ``reverse_by_gather`` says so, the loop term never reaches it (issue 31, item 2)."""
    from nst_engine.transfer import warp
    asked = []
    monkeypatch.setattr(warp, "reverse_by_gather", lambda dev: asked.append(dev) or True)
    monkeypatch.setattr(warp.F, "grid_sample", lambda *a, **k: pytest.fail("grid_sample"))
    x = torch.rand(1, 3, 8, 10, requires_grad=True)
    shift = torch.zeros(1, 2, 8, 10)
    shift[:, 0] = 0.5
    term = warp.TemporalTerm([], 1.0, [(torch.rand(1, 3, 8, 10), torch.ones(1, 1, 8, 10),
                                        warp.coords(shift))]).crop(slice(0, 8), slice(0, 10))
    term(x).backward()
    assert asked == [x.device] and x.grad.abs().sum() > 0
    first = x.grad.clone()
    x.grad = None
    term(x).backward()
    assert torch.equal(x.grad, first)  # the same sums in the same order


# ---------------------------------------------------------------- bench_gpu's CPU side

def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_imports_and_measures_the_read_back_cadence():
    b = _bench_gpu()
    stamps = [(25, 1.0), (50, 1.5), (75, 2.0), (90, 2.3), (100, 2.5)]
    c = b.cadence(stamps)
    assert c == {"reads": 5, "steps_min": 10, "steps_median": 25, "steps_max": 25}
    assert b.allocator({"num_alloc_retries": 3, "num_ooms": 1, "other": 7}) == \
        {"alloc_retries": 3, "ooms": 1}
    assert b.STYLE_LOSSES == ("gram", "mean_cov", "sliced_wasserstein")
