"""The wrap pad's indexed border (issue 31 item 7): on CUDA the border is filled and folded by
index operations (fewer dispatched operations a step), elsewhere by line copies on views. No
GPU here: the decision is checked on what it asks of a tensor, and the indexed path is run on
the CPU (``INDEXED_DEVICES`` made to name it) against the line copies, bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nst_engine import StyleParams
from nst_engine.model import wrap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_the_border_is_indexed_on_cuda_only():
    def t(device: str, shape=(1, 64, 34, 34)):
        return SimpleNamespace(device=torch.device(device), shape=shape)
    assert wrap._indexed(t("cuda"))
    assert not wrap._indexed(t("cpu")) and not wrap._indexed(t("mps"))
    # A side of 1 px would add twice to one element in the fold: left to the line adds.
    assert not wrap._indexed(t("cuda", (1, 512, 3, 34)))


def _pads(x: torch.Tensor, indexed: bool, monkeypatch) -> list[torch.Tensor]:
    monkeypatch.setattr(wrap, "INDEXED_DEVICES", ("cpu",) if indexed else ())
    xi = x.clone().requires_grad_()
    y, feature = wrap.relu_wrap_pad_keep(xi)
    z, plain = wrap.wrap_pad(xi), wrap.relu_wrap_pad(xi)
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in (y, feature, z, plain))
    loss.backward()
    return [y.detach(), feature.detach(), z.detach(), plain.detach(), xi.grad]


@pytest.mark.parametrize("shape", [(1, 64, 34, 18), (1, 3, 17, 9), (2, 5, 6, 7), (1, 8, 1, 5),
                                   (1, 8, 2, 2)])
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_indexed_border_equals_the_line_copies(shape, fmt, monkeypatch):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=fmt)
    lines, indexed = _pads(x, False, monkeypatch), _pads(x, True, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(lines, indexed))
    # ... and it is a wrap: the padded border is the opposite interior.
    y = indexed[2]
    assert torch.equal(y[..., 0, 1:-1], x[..., -1, :]) and torch.equal(y[..., 1:-1, -1], x[..., 0])
    assert torch.equal(y[..., 0, 0], x[..., -1, -1]) and torch.equal(y[..., -1, -1], x[..., 0, 0])


def test_an_indexed_step_dispatches_fewer_operations(random_weights_file, monkeypatch):
    """The count ``bench_gpu.py`` records on a GPU, here with the indexed path forced onto the
    CPU: fewer compute operations (kernel launches on a GPU) and far fewer views."""
    from bench_seamless import step_ops

    lines = step_ops(64, True, random_weights_file)
    monkeypatch.setattr(wrap, "INDEXED_DEVICES", ("cpu",))
    indexed = step_ops(64, True, random_weights_file)
    plain = step_ops(64, False, random_weights_file)
    assert indexed[0] <= lines[0] - 20 and indexed[1] <= lines[1] // 2, (lines, indexed)
    assert plain[0] < indexed[0]


def test_the_seamless_result_is_the_same_with_the_indexed_border(random_weights_file,
                                                                  monkeypatch):
    """A whole seamless run: the indexed path changes no pixel."""
    import numpy as np
    from PIL import Image

    from nst_engine import stylize

    content = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8))
    style = Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 32, 3), np.uint8))
    params = StyleParams().with_overrides(max_size=64, levels=2, iterations=3, seamless=True)
    out = []
    for devices in ((), ("cpu",)):
        monkeypatch.setattr(wrap, "INDEXED_DEVICES", devices)
        out.append(np.asarray(stylize(content=content, styles=[(style, 1.0)], params=params,
                                      device="cpu", weights=random_weights_file)))
    assert np.array_equal(*out)
