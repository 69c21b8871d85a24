"""bfloat16 or float32 convolutions on this CPU: decided by timing both here, not by a flag.

bfloat16 pays only where the CPU multiplies it fast: Intel's AMX tiles (~2.9x float32 per
iteration) and the AVX-512 BF16 units of AMD Zen 4/5 (~2x). Elsewhere it is slower than float32:
somewhat where bfloat16 exists without AMX's throughput (a Xeon whose hypervisor hides AMX),
up to 40x without bfloat16 instructions (an AVX2 cap), where oneDNN converts every element.
(Figures: benchmarks/README.md and issue 14.) No feature flag tells these
apart (a VM hides flags; ``ONEDNN_MAX_CPU_ISA`` changes the code oneDNN runs, not the chip), so
we time a few convolutions of the engine's kind, forward and backward, in each precision,
interleaved, and keep bfloat16 only when its best time is clearly below float32's.

The answer is cached in the data folder (``cpu-precision.json``), one entry per CPU model and
flags, thread count, torch version and ISA cap: measured on first use (or by ``doctor`` and the
installer's self-check, which runs the engine once): a second or so (time limits in the
constants below; oneDNN's first-use kernel building comes on top, and takes seconds only on a
heavily loaded machine). ``NST_ENGINE_CPU_BF16=1`` / ``=0`` overrides it.

    python -m nst_engine.device.cpu_precision [--json]    # measure now (the cache is not touched)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

#: ``1`` = bfloat16 convolutions on the CPU, ``0`` = float32, unset = measured.
ENV = "NST_ENGINE_CPU_BF16"
#: oneDNN's instruction-set caps (the second is its older name): part of the cache key.
ISA_CAP_ENVS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
#: Bump when the probe or the rule changes, so older answers are measured again.
PROBE_VERSION = 2
#: bfloat16 is chosen only when its best time is at most this fraction of float32's: near a
#: tie float32 wins (it is exact, and a busy machine can shift a close race either way).
BF16_MAX_RATIO = 0.8
#: 3x3 convolutions timed (channels in = out, side in px), equal work each, in the channel
#: counts of VGG19's blocks 1-4. Forward and input gradient, as in an optimiser step. Small, so
#: that many short rounds fit in the budget: the best of many short samples is what a busy
#: machine disturbs least.
PROBE_SHAPES = ((64, 32), (128, 16), (256, 8))
#: Rounds of (float32, bfloat16), alternating which goes first; stop after MAX_ROUNDS, or when
#: BUDGET_S has passed since the warm-up began (but not before MIN_ROUNDS, unless DEADLINE_S
#: has: a machine so busy that rounds take that long), or as soon as bfloat16 is GIVE_UP times
#: slower (a CPU without bfloat16 instructions: no later round can reverse that).
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S, DEADLINE_S, GIVE_UP = 3, 12, 0.6, 1.2, 3.0
#: A 1-minute load average above this many runnable tasks per CPU, before or after the race,
#: means other work shared the cores: its timings cannot be trusted (seen here: at load 11 on
#: 2 cores bfloat16 timed 0.68x float32, quiet it takes 1.5x). float32 for that process, and
#: nothing cached.
BUSY_LOAD_PER_CPU = 0.75
#: Entries kept in the cache file (one per CPU / thread count / torch / cap seen).
MAX_ENTRIES = 16


@dataclass(frozen=True)
class CpuPrecision:
    """The CPU's choice and why, as ``doctor`` shows it."""

    bf16: bool
    source: str                   # "override", "cache" or "measured"
    reason: str
    key: dict[str, Any] = field(default_factory=dict)
    fp32_ms: float | None = None  # best time of one probe round in each precision
    bf16_ms: float | None = None
    rounds: int = 0
    seconds: float = 0.0          # how long the measurement took
    load: float | None = None     # 1-minute load average when measured (Unix): how busy
    settled: bool = True          # False: too few rounds to trust; not cached, measured again
    measured_at: str = ""
    cache_path: str = ""
    cache_note: str = ""          # e.g. the cache could not be written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def override() -> bool | None:
    """``NST_ENGINE_CPU_BF16``: True (``1``), False (``0``), None (unset or anything else)."""
    value = os.environ.get(ENV, "").strip()
    return {"1": True, "0": False}.get(value)


def _cpu_identity() -> tuple[str, str]:
    """(model name, short hash of the feature flags): a VM may hide flags of the same model."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k in ("model name", "Processor", "cpu model") and not name:
                    name = v.strip()
                elif k in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(v.split()))
                if name and flags:
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else ""
    return name, digest


def cache_key() -> dict[str, Any]:
    """What the answer depends on: the CPU, the threads torch uses, torch, the ISA cap."""
    import torch

    name, flags = _cpu_identity()
    cap = next((f"{e}={os.environ[e]}" for e in ISA_CAP_ENVS if os.environ.get(e)), "")
    return {"cpu": name, "flags": flags, "machine": platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "isa_cap": cap,
            "probe": PROBE_VERSION}


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def cache_path() -> Path:
    from ..bridge.config import cpu_precision_cache_path

    return cpu_precision_cache_path()


# -- measuring ------------------------------------------------------------------------------

def _probe_inputs(shapes, seed: int = 0):
    """One (input, weight, bias, upstream gradient) per shape, channels-last like the engine's."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    cl = torch.channels_last
    out = []
    for channels, side in shapes:
        x = torch.rand(1, channels, side, side, generator=gen).contiguous(memory_format=cl)
        w = (torch.randn(channels, channels, 3, 3, generator=gen) / (3 * channels ** 0.5))
        g = torch.randn(1, channels, side, side, generator=gen).contiguous(memory_format=cl)
        out.append((x.requires_grad_(True), w.contiguous(memory_format=cl),
                    torch.zeros(channels), g))
    return out


def _round(inputs, bf16: bool) -> float:
    """Seconds for one forward + input-gradient pass over the probe's convolutions."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    for x, w, b, g in inputs:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = F.relu(F.conv2d(x, w, b, padding=1))
        torch.autograd.grad(y, x, g)
    return time.perf_counter() - start


def _race(inputs, start: float) -> tuple[float, float, int]:
    """Best seconds of float32 and of bfloat16 over interleaved rounds, and rounds run;
    ``start``: when the measurement (warm-up included) began, for the time limits."""
    best = {False: float("inf"), True: float("inf")}
    rounds = 0
    while rounds < MAX_ROUNDS:
        for bf16 in ((False, True) if rounds % 2 == 0 else (True, False)):
            best[bf16] = min(best[bf16], _round(inputs, bf16))
        rounds += 1
        if rounds >= 2 and best[True] > GIVE_UP * best[False]:
            break
        spent = time.perf_counter() - start
        if spent > DEADLINE_S or (rounds >= MIN_ROUNDS and spent > BUDGET_S):
            break
    return best[False], best[True], rounds


def _load_per_cpu() -> float | None:
    """1-minute load average per CPU (Unix), or None where the OS does not say."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def measure() -> CpuPrecision:
    """Time both precisions now (well under 2 s) and decide; nothing is cached."""
    import torch

    key = cache_key()
    start = time.perf_counter()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None

    def result(bf16: bool, reason: str, fp32_s=None, bf16_s=None, rounds=0) -> CpuPrecision:
        return CpuPrecision(
            bf16=bf16, source="measured", reason=reason, key=key,
            fp32_ms=None if fp32_s is None else round(fp32_s * 1e3, 2),
            bf16_ms=None if bf16_s is None else round(bf16_s * 1e3, 2), rounds=rounds,
            seconds=round(time.perf_counter() - start, 3), load=load, measured_at=stamp)

    with torch.inference_mode(False), torch.enable_grad():
        probe = _probe_inputs(PROBE_SHAPES)
        try:
            _round(probe, True)  # warm-up: oneDNN builds its kernels on first use
        except RuntimeError as e:  # an old torch, or a CPU without bfloat16 convolutions
            return result(False, f"bfloat16 convolutions do not run here ({e}): float32")
        _round(probe, False)
        busy_before = _load_per_cpu()
        fp32_s, bf16_s, rounds = _race(probe, start)
        busy = max((x for x in (busy_before, _load_per_cpu()) if x is not None), default=0.0)
    ratio = bf16_s / fp32_s
    why = (f"bfloat16 convolutions take {ratio:.2f}x the time of float32 here (best of "
           f"{rounds} interleaved rounds each); bfloat16 is used at <= {BF16_MAX_RATIO}x: ")
    if busy > BUSY_LOAD_PER_CPU:
        return replace(result(False, why + f"float32 for now (load average {busy:.2f} per "
                                     "CPU: other work shared the cores, so the race is not "
                                     "trusted; measured again at the next start)",
                              fp32_s, bf16_s, rounds), settled=False)
    if rounds < MIN_ROUNDS and ratio <= GIVE_UP:
        # A machine so busy that the time limit cut the race short: too few samples to trust
        # either way. float32 (exact, never far slower) for this process; not cached.
        return replace(result(False, why + f"float32 for now (only {rounds} round(s) in "
                                     "the time limit: a busy machine; measured again at the "
                                     "next start)", fp32_s, bf16_s, rounds), settled=False)
    chosen = ratio <= BF16_MAX_RATIO
    return result(chosen, why + ("bfloat16" if chosen else "float32"), fp32_s, bf16_s, rounds)


# -- the cache ------------------------------------------------------------------------------

def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, key_text: str, entry: dict[str, Any]) -> str:
    """Add one entry (atomically: other engines may read the file); '' or what went wrong."""
    entries = _read_cache(path)
    entries.pop(key_text, None)
    entries[key_text] = entry
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"entries": entries}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        return f"not cached ({path}: {e.strerror or e}); it is measured again next start"
    return ""


_ENTRY_FIELDS = ("bf16", "reason", "fp32_ms", "bf16_ms", "rounds", "seconds", "load",
                 "measured_at")
_memo: dict[tuple[str, str], CpuPrecision] = {}
_lock = threading.Lock()


def choose(*, remeasure: bool = False) -> CpuPrecision:
    """This CPU's precision: the override, else the cached answer, else measured and cached.

    Remembered in the process as well, so only the first CPU run of a process pays for it.
    """
    forced = override()
    if forced is not None:
        return CpuPrecision(bf16=forced, source="override",
                            reason=f"{ENV}={int(forced)} (not measured)")
    path = cache_path()
    key = cache_key()
    memo_key = (str(path), _key_text(key))
    with _lock:
        if not remeasure and memo_key in _memo:
            return _memo[memo_key]
        entry = None if remeasure else _read_cache(path).get(memo_key[1])
        if isinstance(entry, dict) and all(k in entry for k in _ENTRY_FIELDS):
            choice = CpuPrecision(source="cache", key=key, cache_path=str(path),
                                  **{k: entry[k] for k in _ENTRY_FIELDS})
        else:
            m = measure()
            note = (_write_cache(path, memo_key[1],
                                 {k: getattr(m, k) for k in _ENTRY_FIELDS} | {"key": key})
                    if m.settled else "")
            choice = CpuPrecision(**{**m.to_json(), "cache_path": str(path),
                                     "cache_note": note})
        _memo[memo_key] = choice
        return choice


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Time bfloat16 against float32 convolutions on "
                                             "this CPU (the cache is neither read nor written).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    m = measure()
    if args.json:
        print(json.dumps(m.to_json()))
    else:
        print(f"float32 {m.fp32_ms} ms, bfloat16 {m.bf16_ms} ms per probe round; {m.reason} "
              f"({m.seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
