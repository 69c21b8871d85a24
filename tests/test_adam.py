"""The engine's own Adam: torch.optim.Adam's arithmetic, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from nst_engine.transfer.adam import Adam

ROOT = Path(__file__).resolve().parents[1]


def test_steps_match_torch_optim_adam_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    start = torch.rand(1, 3, 17, 23, generator=gen)
    ours = start.clone().requires_grad_(True)
    theirs = start.clone().requires_grad_(True)
    mine, ref = Adam(ours, lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    target = torch.rand(1, 3, 17, 23, generator=gen)
    for _ in range(25):
        for x, opt in ((ours, mine), (theirs, ref)):
            opt.zero_grad()
            ((x - target) ** 2 * torch.linspace(0.1, 3, 23)).sum().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)  # as the engine does between steps
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, start)


def test_a_whole_job_does_not_import_torch_dynamo(random_weights_file):
    """torch.optim would import it (seconds) on every engine start; the job must not."""
    code = textwrap.dedent(f"""
        import sys
        from PIL import Image
        from nst_engine import StyleParams, stylize
        params = StyleParams().with_overrides(max_size=64, levels=2, iterations=4, seed=0)
        stylize(content=Image.new("RGB", (64, 48), (200, 120, 40)),
                styles=[(Image.new("RGB", (32, 32), (20, 90, 200)), 1.0)], params=params,
                device="cpu", weights={str(random_weights_file)!r})
        print("torch._dynamo" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={"NST_ENGINE_CPU_BF16": "0",
                                                      "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
