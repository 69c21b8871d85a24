"""The feature extractors kept loaded between jobs: a warm engine runs many jobs with the same
weights, and loading them costs a second or more."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch

from ..params import StyleParams
from .normalise import normalised
from .vgg import VGGFeatures
from .weights import VGGWeights, default_weights_path, load_weights

#: Models kept loaded between calls.
MODEL_CACHE_SIZE = 2
_model_cache: OrderedDict[tuple, tuple[VGGFeatures, VGGWeights]] = OrderedDict()
_cache_lock = threading.Lock()


def model_for(weights: str | os.PathLike | None, weights_kind: str | None, params: StyleParams,
              device: torch.device) -> tuple[VGGFeatures, VGGWeights]:
    """The feature extractor for these weights, layers, pooling and device, and the weights'
    description (``VGGWeights`` without its tensors: ``verified``, ``notice``, ``kind``).

    Cached in-process by (file, its size and mtime, kind, network (raw or normalised),
    layers, pooling, circular padding (``seamless``), device): a warm engine keeps the raw and
    the normalised network apart. The normalised one is made from the raw weights, once per
    weights file, and cached on disk (``normalise.normalised``).
    """
    path = Path(weights) if weights is not None else default_weights_path()
    layers = tuple(sorted(set(params.content_layers) | set(params.style_layers)))
    try:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # load_weights says what is wrong
    key = (str(path.resolve() if stamp else path), stamp, weights_kind, params.network, layers,
           params.pooling, params.seamless, str(device))
    with _cache_lock:
        if key in _model_cache:
            _model_cache.move_to_end(key)
            return _model_cache[key]
    loaded = load_weights(path, kind=weights_kind)
    if params.network == "normalised":
        loaded = normalised(loaded)
    model = VGGFeatures(loaded, layers, params.pooling, params.seamless).to(device)
    entry = (model, replace(loaded, convs={}))
    with _cache_lock:
        _model_cache[key] = entry
        while len(_model_cache) > MODEL_CACHE_SIZE:
            _model_cache.popitem(last=False)
    return entry


def clear() -> None:
    """Forget every loaded model (tests; a re-installed weights file has a new stamp anyway)."""
    with _cache_lock:
        _model_cache.clear()
