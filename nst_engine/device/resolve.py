"""Which torch device a run uses: ``auto`` = CUDA, else Apple MPS, else the CPU."""

from __future__ import annotations

from dataclasses import dataclass

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


#: Compute capability from which NVIDIA GPUs run bfloat16 natively (Ampere, sm_80): cuDNN and
#: cuBLAS take bfloat16 on the tensor cores there. On older cards recent torch still answers
#: ``is_bf16_supported()`` True (emulated: convolutions fall back to slow native kernels).
BF16_MIN_CAPABILITY = (8, 0)
#: From here (Volta, Turing: V100, T4, RTX 20xx) float16 runs on tensor cores, several times
#: float32's speed (T4: 65 against 8 TFLOPS). Below it (Pascal: GTX 10xx at sm_61 multiplies
#: float16 at 1/64 of float32's rate; P100 at sm_60 twice float32 but without tensor cores, for
#: which cuDNN gains little) float32 is the fast and exact choice.
FP16_MIN_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class Precision:
    """A device's convolution precision and why, as ``doctor`` shows it.

    ``dtype`` None = float32 (no autocast). ``loss_scale``: the loss is multiplied before the
    backward pass and the gradient divided after it (``transfer.scaler``), because float16's
    range is too small for the feature gradients of relative losses: 7-43 % per layer round to
    zero without it (measured on the CPU at 1536x1152 with the test weights, issue 26).
    """

    dtype: torch.dtype | None
    loss_scale: bool
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def cuda_precision(index: int | None = None) -> Precision:
    """The precision for a CUDA device, from its compute capability (not from
    ``is_bf16_supported``, which answers True through emulation on recent torch and False on
    torch 2.2 for the same pre-Ampere card)."""
    major, minor = torch.cuda.get_device_capability(index)
    cap = f"compute capability {major}.{minor}"
    if (major, minor) >= BF16_MIN_CAPABILITY:
        return Precision(torch.bfloat16, False,
                         f"{cap}: bfloat16 runs natively on the tensor cores, with float32's "
                         "range (no loss scaling needed)")
    if (major, minor) >= FP16_MIN_CAPABILITY:
        return Precision(torch.float16, True,
                         f"{cap}: no native bfloat16 (emulated, slow), but float16 tensor "
                         "cores; the loss is scaled (backing off on inf) so small gradients "
                         "keep their digits")
    return Precision(None, False,
                     f"{cap}: no tensor cores and slow float16 arithmetic (sm_61 runs it at "
                     "1/64 of float32), so float32 is both faster and exact")


def device_precision(device: torch.device) -> Precision:
    """The convolution precision on ``device``.

    Losses and Gram matrices stay float32 either way (the engine casts features up).
    CUDA: by compute capability (``cuda_precision``).
    CPU: bfloat16 where timing both on this CPU says it is clearly faster (AMX, AMD Zen 4/5),
    else float32; measured once and cached, ``NST_ENGINE_CPU_BF16`` overrides
    (``cpu_precision``).
    MPS: float32 (autocast there is too young across the torch versions we support).
    """
    if device.type == "cuda":
        return cuda_precision(device.index)
    if device.type == "cpu":
        from .cpu_precision import choose

        choice = choose()
        return Precision(torch.bfloat16 if choice.bf16 else None, False, choice.reason)
    return Precision(None, False, f"{device.type}: float32 (autocast there is too young "
                     "across the torch versions the engine supports)")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for the convolutions on this device, or None for float32
    (``device_precision``)."""
    return device_precision(device).dtype


def torch_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of this torch (or of ``version``): ``2.6.0+cu124`` -> (2, 6)."""
    parts = (version or torch.__version__).split("+")[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of the images and weights on ``device``.

    Channels-last where convolutions run natively in it: oneDNN on the CPU and the tensor
    cores on CUDA (no reorder per convolution). Not on MPS: convolution and pooling backward
    in channels-last have had open bugs there (view-size errors, aborts, wrong gradients)
    across the torch versions allowed, and Metal gains nothing from it.
    """
    return torch.contiguous_format if device.type == "mps" else torch.channels_last
