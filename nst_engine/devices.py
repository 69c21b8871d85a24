"""Which torch device a run uses: ``auto`` = CUDA, else Apple MPS, else the CPU."""

from __future__ import annotations

import os

import torch

from .errors import DeviceUnavailable

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices this torch can use here, best first (always ends with ``cpu``)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def _why_absent(name: str) -> str:
    if name == "cuda":
        if torch.version.cuda is None:
            return "this PyTorch was built without CUDA"
        return (f"this PyTorch has CUDA {torch.version.cuda} but sees no usable GPU "
                "(driver missing, or CUDA_VISIBLE_DEVICES hides it)")
    return ("this PyTorch has no MPS support or this is not an Apple-silicon Mac"
            if name == "mps" else "")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for a user's choice; ``DeviceUnavailable`` when it is not here."""
    if isinstance(name, torch.device):
        name = name.type
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES:
        raise DeviceUnavailable(f"Unknown device '{name}'.",
                                f"Choose one of: {', '.join(DEVICE_CHOICES)}.")
    found = available_devices()
    if name == "auto":
        return torch.device(found[0])
    if name not in found:
        raise DeviceUnavailable(
            f"Device '{name}' was asked for but is not available: {_why_absent(name)}. "
            f"Devices found: {', '.join(found)}.",
            "Choose device 'auto' or 'cpu', or install a PyTorch build for your GPU "
            "(see https://pytorch.org/get-started/locally/).")
    return torch.device(name)


#: Set to 0 to keep the CPU in float32 even where it has bfloat16 matrix units (or 1 to force).
CPU_BF16_ENV = "NST_ENGINE_CPU_BF16"


def _cpu_has_amx_bf16() -> bool:
    """True on x86 CPUs with AMX bfloat16 tiles (Linux; elsewhere we do not guess)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for the convolutions on this device, or None for float32.

    Losses and Gram matrices stay float32 either way (stylize casts features up).
    CUDA: bfloat16 where the GPU supports it (no overflow risk), else float16.
    CPU: bfloat16 only with AMX (measured ~1.9x faster per iteration at the same final loss,
    benchmarks/README.md); without hardware bfloat16 it would be slower, so float32.
    MPS: float32 (autocast there is too young across the torch versions we support).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        forced = os.environ.get(CPU_BF16_ENV, "").strip()
        if forced in ("0", "1"):
            return torch.bfloat16 if forced == "1" else None
        return torch.bfloat16 if _cpu_has_amx_bf16() else None
    return None
