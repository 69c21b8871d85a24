"""VGG19 weight files: the known downloads, layouts, validation, the compact cache, `fetch-weights`.

Two kinds of weights, each wanting its own input preprocessing (applied in ``vgg.py``):

* ``torchvision`` -- torchvision's ImageNet VGG19: RGB in [0, 1], normalised by ImageNet mean/std.
* ``caffe`` -- the Caffe-converted VGG19 (Simonyan & Zisserman's original, as used by Gatys et al.
  and neural-style-pt): BGR, 0-255, minus the Caffe channel means.

Two key layouts are read: torchvision's ``features.N.weight`` (both torchvision's file and
neural-style-pt's Caffe conversion use it) and the ``conv1_1.weight`` names of Gatys'
``vgg_conv.pth``. Only the 16 convolutions are kept, in a compact cache file (a plain dict saved
with ``torch.save``), which is what the engine reads by default.

What decides the kind, strongest first: an explicit ``kind`` argument, a known file's checksum,
the kind recorded in a compact cache, and finally the key layout (conv names = caffe,
``features.N`` = torchvision).

Files are only ever read with ``torch.load(..., weights_only=True)``: a file holding anything but
tensors and plain containers is refused before any of its code could run.

The raw download is deleted once the cache is built: the cache holds everything the engine uses
and records the download's SHA-256, and keeping 548 MB around for the classifier would only cost
disk. ``fetch-weights`` fetches it again when needed.

Torch is imported inside the functions, so ``default_weights_path()`` and the tables below work
without it (the installer and ``doctor`` use them).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..bridge import config
from ..errors import WeightsInvalid, WeightsMissing
from .layers import CONV_LAYERS, INDEX, LAYERS, vgg19_state_shapes

if TYPE_CHECKING:  # pragma: no cover
    import torch

KINDS = ("torchvision", "caffe")
#: Preprocessing per kind: channel order, scale of the [0, 1] input, mean and std (after scaling,
#: in the channel order the network expects).
PREPROCESS: dict[str, dict[str, Any]] = {
    "torchvision": {"bgr": False, "scale": 1.0,
                    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "caffe": {"bgr": True, "scale": 255.0,
              "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
}

#: The compact cache: file name in ``config.weights_dir()`` and the format tag inside it.
CACHE_FILE = "vgg19-convs.pt"
CACHE_FORMAT = "nst-vgg19-convs/1"
#: Gatys' normalised network (``normalise.py``), cached once per weights file beside the compact
#: cache: its own file, whose name and metadata carry the version, so that a cache made by an
#: older rule or reference set is rebuilt, never read as this one (and a raw cache never as a
#: normalised one: the format tag differs). Bump the version whenever the factors would change.
NORMALISED_FORMAT = "nst-vgg19-normalised"
NORMALISE_VERSION = 1

#: neural-style-pt's conversion of the Caffe VGG19 (torchvision key layout, Caffe preprocessing).
CAFFE_URL = "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth"
#: torchvision's ``VGG19_Weights.IMAGENET1K_V1.url``, written out so that loading weights does not
#: import torchvision (seconds); tests/test_weights.py checks it against torchvision's.
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"

_CONV_KEY = re.compile(r"^conv[1-5]_[1-4]\.(weight|bias)$")
_OFFLINE_HINT = ("Offline: copy a VGG19 weights file to this machine and run "
                 "`python -m nst_engine fetch-weights --from-file FILE`, or pass "
                 "`--weights FILE` to `stylize`.")
_FETCH_HINT = ("Run `python -m nst_engine fetch-weights` (or `python install.py`) to download "
               "them. " + _OFFLINE_HINT)


@dataclass(frozen=True)
class KnownFile:
    kind: str
    url: str
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """The SHA-256 prefix in the file name, read the way torch.hub reads it."""
        import torch.hub

        m = torch.hub.HASH_REGEX.search(self.filename)
        assert m and m.group(1), self.filename
        return m.group(1)


@functools.lru_cache(maxsize=None)
def known_files() -> dict[str, KnownFile]:
    """The downloadable files, by kind."""
    return {
        "torchvision": KnownFile("torchvision", TORCHVISION_URL,
                                 "torchvision VGG19 IMAGENET1K_V1 (548 MB)"),
        "caffe": KnownFile("caffe", CAFFE_URL,
                           "Caffe-converted VGG19 from neural-style-pt (548 MB)"),
    }


@dataclass(frozen=True)
class VGGWeights:
    convs: dict[str, "torch.Tensor"]  # "conv1_1.weight", "conv1_1.bias", ... the 16 convs only
    kind: str                         # "torchvision" | "caffe"; see PREPROCESS
    source: Path
    verified: bool                    # the source's checksum matched a known file
    notice: str | None                # said to the user when not verified
    sha256: str | None = None         # of the raw source file, when known
    network: str = "raw"              # "raw" | "normalised" (``normalise.normalised``)


def default_weights_path() -> Path:
    """The compact cache that ``load_weights(None)`` reads and ``fetch-weights`` writes."""
    return config.weights_dir() / CACHE_FILE


def normalised_cache_path(sha256: str, kind: str, version: int = NORMALISE_VERSION) -> Path:
    """Where the normalised network of the weights with this source checksum and kind (the
    preprocessing, hence the factors, depend on it) is cached."""
    return config.weights_dir() / f"vgg19-normalised-v{version}-{kind}-{sha256[:16]}.pt"


# ---------------------------------------------------------------------------------------------
# Layouts and validation

@functools.lru_cache(maxsize=None)
def _torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """Every key and shape of torchvision's vgg19 state dict (tests compare it with
    torchvision's own)."""
    return vgg19_state_shapes()


def conv_shapes() -> dict[str, tuple[int, ...]]:
    """``conv1_1.weight`` -> shape, for the 16 convolutions, in network order."""
    tv = _torchvision_shapes()
    return {f"{name}.{p}": tv[f"features.{INDEX[name]}.{p}"]
            for name in CONV_LAYERS for p in ("weight", "bias")}


def _layout_of(keys: list[str]) -> str | None:
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(_CONV_KEY.match(k) for k in keys):
        return "caffe_names"
    return None


def _to_conv_name(key: str, layout: str) -> str | None:
    """The conv name of a file key, or None for keys that are accepted and dropped."""
    if layout == "caffe_names":
        return key
    if key.startswith("classifier."):
        return None
    _, idx, param = key.split(".")
    return f"{LAYERS[int(idx)]}.{param}"


def _expected(layout: str) -> dict[str, tuple[int, ...]]:
    if layout == "caffe_names":
        return conv_shapes()
    return _torchvision_shapes()


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, s)) + ")"


def _validated_convs(state: Mapping[str, Any], layout: str, path: Path) -> dict[str, "torch.Tensor"]:
    """Check every key and shape; return the 16 convs as float32 tensors of their own.

    Classifier keys are optional and dropped (their shapes are still checked); any other extra
    key, a missing key or a wrong shape is an error that names the key.
    """
    import torch

    expected = _expected(layout)
    optional = {k for k in expected if k.startswith("classifier.")}
    for key, value in state.items():
        if key not in expected:
            raise WeightsInvalid(
                f"{path} is not a VGG19 weights file: unexpected key {key!r}.",
                "Use torchvision's VGG19 (features.N.* keys) or the Caffe-converted VGG19. "
                + _OFFLINE_HINT)
        if not isinstance(value, torch.Tensor):
            raise WeightsInvalid(f"{path}: {key!r} is a {type(value).__name__}, not a tensor.",
                                 "The file is not a VGG19 state dict. " + _OFFLINE_HINT)
        if tuple(value.shape) != expected[key]:
            raise WeightsInvalid(
                f"{path} does not fit VGG19: {key!r} has shape {_shape(tuple(value.shape))}, "
                f"expected {_shape(expected[key])}.",
                "This is another network (VGG16? a different model?). " + _OFFLINE_HINT)
        if not value.is_floating_point():
            raise WeightsInvalid(f"{path}: {key!r} holds {value.dtype}, not floating-point "
                                 "numbers.", _OFFLINE_HINT)
    for key in expected:
        if key not in state and key not in optional:
            raise WeightsInvalid(f"{path} is incomplete: key {key!r} is missing.",
                                 "The file is damaged or holds only part of VGG19. "
                                 + _OFFLINE_HINT)
    convs: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _to_conv_name(key, layout)
        if name is None:
            continue
        t = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            # A view would keep (and torch.save would write) its whole storage: copy it out.
            t = t.clone()
        # aminmax propagates NaN and shows inf; several times cheaper than isfinite().all().
        if not all(torch.isfinite(v) for v in torch.aminmax(t)):
            raise WeightsInvalid(f"{path}: {key!r} contains NaN or infinite values.",
                                 "The file is damaged. " + _OFFLINE_HINT)
        convs[name] = t
    return {k: convs[k] for k in conv_shapes()}  # network order


# ---------------------------------------------------------------------------------------------
# Reading

def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _known_by_checksum(sha: str | None) -> KnownFile | None:
    if not sha:
        return None
    for known in known_files().values():
        if sha.startswith(known.sha256_prefix):
            return known
    return None


def _unknown_notice(sha: str | None) -> str:
    short = f" (sha256 {sha[:12]}…)" if sha else ""
    return (f"unknown checksum{short}, valid VGG19 layout: accepted. This is not one of the "
            "known VGG19 downloads, so results are not those of the real VGG19 (random or "
            "retrained weights give different, possibly meaningless, styles).")


def _torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, errors in the user's words."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise to a user; the file is judged below.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long and tells people to retry with weights_only=False, which is
        # exactly what must not be done with an untrusted file: keep only the reason.
        lines = [ln.strip() for ln in str(e).splitlines()]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln
                       or "unrecognized" in ln), "")
        raise WeightsInvalid(
            f"{path} is not a weights file: it holds Python objects other than tensors"
            f"{f' ({reason})' if reason else ''}, so it was refused before loading "
            "(no code was run).",
            "Use a VGG19 state dict (.pth) from a trusted source. " + _OFFLINE_HINT) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise WeightsInvalid(f"Cannot read {path}: {e.strerror or e}.",
                             "Check the path and its permissions.") from None
    except Exception as e:  # noqa: BLE001 -- garbage bytes fail in many ways (struct.error...)
        detail = str(e).splitlines()[0][:160] if str(e).strip() else ""
        detail = f" ({detail})" if detail and not isinstance(e, KeyError) else ""
        raise WeightsInvalid(f"{path} is truncated, corrupt or not a PyTorch weights file: "
                             f"PyTorch could not read it{detail}.",
                             "Download it again. " + _OFFLINE_HINT) from None


def _from_cache(data: dict, path: Path, kind: str | None) -> VGGWeights:
    recorded = data.get("kind")
    convs = data.get("convs")
    sha = data.get("source_sha256")
    if recorded not in KINDS or not isinstance(convs, dict) or not isinstance(sha, (str, type(None))):
        raise WeightsInvalid(f"{path} is a damaged weights cache (kind or convs missing).",
                             "Delete it and run `python -m nst_engine fetch-weights` again. "
                             + _OFFLINE_HINT)
    convs = _validated_convs(convs, "caffe_names", path)
    known = _known_by_checksum(sha)
    return VGGWeights(convs=convs, kind=kind or recorded, source=path, verified=known is not None,
                      notice=None if known else _unknown_notice(sha), sha256=sha)


def _from_raw(state: Mapping[str, Any], path: Path, kind: str | None) -> VGGWeights:
    keys = list(state)
    layout = _layout_of(keys)
    if layout is None:
        shown = ", ".join(repr(k) for k in keys[:3]) or "none"
        raise WeightsInvalid(f"{path} is not a VGG19 weights file: its keys ({shown}…) are "
                             "neither torchvision's (features.N.weight) nor the Caffe "
                             "conversion's (conv1_1.weight).", _OFFLINE_HINT)
    sha = sha256_of(path)
    known = _known_by_checksum(sha)
    by_name = next((k for k in known_files().values() if k.filename == path.name), None)
    if by_name is not None and known is not by_name:
        raise WeightsInvalid(
            f"{path} has the name of a known download but the wrong checksum "
            f"(sha256 {sha[:12]}…, expected {by_name.sha256_prefix}…): it is damaged or altered.",
            "Delete it and run `python -m nst_engine fetch-weights` again.")
    convs = _validated_convs(state, layout, path)
    if kind is None:
        kind = known.kind if known else ("caffe" if layout == "caffe_names" else "torchvision")
    return VGGWeights(convs=convs, kind=kind, source=path, verified=known is not None,
                      notice=None if known else _unknown_notice(sha), sha256=sha)


def load_weights(path: str | os.PathLike | None = None, *, kind: str | None = None) -> VGGWeights:
    """Read a compact cache or a raw VGG19 file (either layout), validated key by key.

    ``path=None`` reads the default cache. Raises ``WeightsMissing`` when there is no file and
    ``WeightsInvalid`` when the file is not usable VGG19 weights.
    """
    if kind is not None and kind not in KINDS:
        raise WeightsInvalid(f"Unknown weights kind {kind!r}.", f"Use one of {', '.join(KINDS)}.")
    p = Path(path).expanduser() if path is not None else default_weights_path()
    if not p.exists():
        if path is None:
            raise WeightsMissing(f"The VGG19 weights are not installed (looked for {p}).",
                                 _FETCH_HINT)
        raise WeightsMissing(f"Weights file {p} does not exist.",
                             "Check the path given to --weights. " + _FETCH_HINT)
    if p.is_dir():
        raise WeightsInvalid(f"{p} is a folder, not a weights file.",
                             "Pass the .pth file itself to --weights.")
    if not p.is_file():  # a FIFO would block reading forever, a device never end
        raise WeightsInvalid(f"{p} is not a regular file (a pipe, device or socket), so it was "
                             "not read.", "Pass the .pth file itself to --weights.")
    data = _torch_load(p)
    if not isinstance(data, dict):
        raise WeightsInvalid(f"{p} holds a {type(data).__name__}, not a state dict of tensors.",
                             _OFFLINE_HINT)
    if data.get("format") == CACHE_FORMAT:
        return _from_cache(data, p, kind)
    # Training checkpoints often wrap the state dict.
    for wrapper in ("state_dict", "model"):
        if isinstance(data.get(wrapper), dict) and _layout_of(list(data[wrapper])):
            data = data[wrapper]
            break
    return _from_raw(data, p, kind)


# ---------------------------------------------------------------------------------------------
# Writing the compact cache

def save_cache(weights: VGGWeights, dst: str | os.PathLike | None = None) -> Path:
    """Write the 16 convs, the kind and the source's checksum; atomically."""
    import torch

    dst = Path(dst) if dst is not None else default_weights_path()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    data = {"format": CACHE_FORMAT, "kind": weights.kind, "source_sha256": weights.sha256,
            "source_name": weights.source.name, "convs": dict(weights.convs)}
    try:
        torch.save(data, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def convert(src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
            kind: str | None = None) -> VGGWeights:
    """Validate ``src`` and write its convs to the compact cache ``dst`` (default location)."""
    w = load_weights(src, kind=kind)
    out = save_cache(w, dst)
    return VGGWeights(convs=w.convs, kind=w.kind, source=out, verified=w.verified,
                      notice=w.notice, sha256=w.sha256)


# ---------------------------------------------------------------------------------------------
# `python -m nst_engine fetch-weights`

def _describe(w: VGGWeights) -> str:
    state = "verified" if w.verified else "NOT verified"
    return f"{w.kind} weights, {state}, at {w.source}"


def _download(known: KnownFile, raw: Path) -> None:
    import torch.hub
    import urllib.error

    print(f"Downloading {known.description}\n  from {known.url}", file=sys.stderr)
    try:
        torch.hub.download_url_to_file(known.url, str(raw), hash_prefix=known.sha256_prefix,
                                       progress=True)
    except RuntimeError as e:
        if "invalid hash" in str(e):
            raw.unlink(missing_ok=True)  # torch.hub removes its temp file; be sure
            raise WeightsInvalid(
                f"The download from {known.url} has the wrong checksum ({e}); the bad file was "
                "removed.", "Try again later. " + _OFFLINE_HINT) from None
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raw.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise WeightsMissing(f"Could not download {known.url}: {reason}.",
                             "Check the network connection and try again. " + _OFFLINE_HINT
                             ) from None


def run_fetch(args: Any) -> int:
    dst = default_weights_path()
    if getattr(args, "from_file", None):
        w = convert(args.from_file, dst, kind=getattr(args, "weights_kind", None))
        print(f"Installed {_describe(w)}")
        if w.notice:
            print(f"notice: {w.notice}")
        return 0

    kind = getattr(args, "kind", None) or "torchvision"
    known = known_files()[kind]
    if dst.exists():
        try:
            current = load_weights(dst)
        except (WeightsInvalid, WeightsMissing) as e:
            print(f"The existing cache is not usable ({e.message}); replacing it.")
        else:
            if current.verified and current.kind == kind:
                print(f"Already installed: {_describe(current)}. Nothing to do.")
                return 0
            print(f"Installed now: {_describe(current)}; fetching the {kind} download to "
                  "replace it.")

    # torchvision's own download cache may already hold the file: use it, checksum-checked.
    import torch.hub

    hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / known.filename
    if hub_copy.is_file():
        try:
            w = convert(hub_copy, dst, kind=kind)
        except WeightsInvalid as e:
            print(f"Ignoring {hub_copy}: {e.message}", file=sys.stderr)
        else:
            if w.verified:
                print(f"Installed {_describe(w)} (from {hub_copy})")
                return 0

    dst.parent.mkdir(parents=True, exist_ok=True)
    raw = dst.parent / known.filename
    try:
        _download(known, raw)
        w = convert(raw, dst, kind=kind)
    finally:
        raw.unlink(missing_ok=True)  # the cache keeps all the engine needs (see module doc)
    print(f"Installed {_describe(w)}")
    return 0
