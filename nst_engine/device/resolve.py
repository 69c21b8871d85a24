"""Which torch device a run uses: ``auto`` = CUDA, else Apple MPS, else the CPU."""

from __future__ import annotations

import torch

from ..errors import DeviceUnavailable

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


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for the convolutions on this device, or None for float32.

    Losses and Gram matrices stay float32 either way (the engine casts features up).
    CUDA: bfloat16 where the GPU supports it (no overflow risk), else float16.
    CPU: bfloat16 where timing both on this CPU says it is clearly faster (AMX, AMD Zen 4/5),
    else float32; measured once and cached, ``NST_ENGINE_CPU_BF16`` overrides
    (``cpu_precision``).
    MPS: float32 (autocast there is too young across the torch versions we support).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        from .cpu_precision import choose

        return torch.bfloat16 if choose().bf16 else None
    return None
