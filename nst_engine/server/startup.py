"""The server's start-up, once per process: import torch, look at the device, load the weights
and the model (kept loaded for the jobs: ``model.cache``); the ``hello`` every session gets, or
the start-up error in its place. (The *engine* is the whole server process; this is only how it
starts.)"""

from __future__ import annotations

import os
import traceback
from typing import Any

from .. import __version__
from ..bridge import wire
from ..bridge.wire import Code, Msg
from ..errors import DeviceUnavailable, EngineError, WeightsMissing
from ..params import StyleParams
from .streams import log


class Ready:
    """What start-up gives every session: the hello to send, or the error in its place."""

    def __init__(self, header: dict[str, Any] | None = None, notices: list[str] | None = None,
                 error: tuple[str, str, str] | None = None) -> None:
        self.header, self.notices, self.error = header, notices or [], error


def load_model(args: Any) -> Ready:
    """Import torch, look at the device and weights, load the model; the hello to send."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means no engine
        log("importing torch failed:\n" + traceback.format_exc())
        return Ready(error=(Code.ENGINE_NOT_STARTED,
                            f"PyTorch cannot be loaded by the engine's Python ({e}).",
                            "Run `python install.py` again to repair the engine's environment."))
    # Imported here, after torch: a broken torch is answered above, not with a traceback.
    from ..device.resolve import resolve_device
    from ..model.cache import model_for

    notices: list[str] = []
    result_notices: list[str] = []  # attached to every result (e.g. unverified weights)
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as e:
        device = None
        notices.append(e.user_text())
    try:  # loads the weights now (status for the hello) and keeps the model for the jobs
        _, desc = model_for(args.weights, None, StyleParams(), device or torch.device("cpu"))
        weights = {"status": "verified" if desc.verified else "unverified",
                   "notice": desc.notice}
        if desc.notice:
            result_notices.append(desc.notice)
    except EngineError as e:
        weights = {"status": "missing" if isinstance(e, WeightsMissing) else "invalid",
                   "notice": e.user_text()}
    notices += [n for n in (weights["notice"],) if n]
    log(f"engine {__version__}, torch {torch.__version__}, device {device}, "
         f"weights {weights['status']}")
    listen = getattr(args, "listen", None)
    warm = ({"keep_warm": args.keep_warm, "key": args.warm_key,
             "options": {"weights": args.weights, "device": args.device}} if listen else None)
    return Ready({"type": Msg.HELLO, "protocol": wire.PROTOCOL_VERSION,
                  "engine_version": __version__,
                  "device": str(device) if device is not None else None,
                  "torch": torch.__version__, "weights": weights, "notices": notices,
                  "pid": os.getpid(), "warm": warm}, result_notices)

