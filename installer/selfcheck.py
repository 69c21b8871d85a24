"""The self-check: the engine started from config.json exactly as the plug-in starts it,
through the same bridge, stylizing a tiny image."""

from __future__ import annotations

import time
from typing import Any

from nst_engine.bridge import config as nst_config
from nst_engine.bridge.client import EngineClient, EngineFailed, list_presets
from nst_engine.bridge.wire import RGBAImage

from .errors import InstallError


def self_check(cfg: dict[str, Any]) -> str:
    """Start the engine from ``cfg`` exactly as the plug-in does and stylize a 16x16 image.
    Returns a line for the user; raises InstallError."""
    preset = nst_config.DEFAULT_PRESET
    try:
        names = {p.get("name") for p in list_presets(cfg).get("presets", [])}
        if "quick" in names:
            preset = "quick"
    except EngineFailed as e:
        raise InstallError(f"The engine cannot list its presets: {e.message}", e.hint) from None
    size = 16
    content = RGBAImage(size, size, bytes(
        v for y in range(size) for x in range(size) for v in (x * 16, y * 16, 128, 255)))
    style = RGBAImage(size, size, bytes(
        v for y in range(size) for x in range(size)
        for v in ((255, 40, 40, 255) if (x // 4 + y // 4) % 2 else (30, 30, 200, 255))))
    started = time.monotonic()
    try:
        # keep_warm 0: a per-run engine, so the installer leaves no engine running behind it.
        with EngineClient.from_config(cfg, keep_warm=0) as client:
            hello = client.start()
            out = client.stylize(content, [(style, 1.0)], preset=preset,
                                 overrides={"max_size": 64, "levels": 1, "iterations": 2},
                                 device=cfg.get("device") or "auto")
    except EngineFailed as e:
        raise InstallError(f"The engine failed the self-check: {e.message}",
                           (e.hint + " " if e.hint else "") + f"Engine log: {e.log_path}") \
            from None
    if (out.width, out.height) != (size, size):
        raise InstallError(f"The engine returned a {out.width}x{out.height} image for a "
                           f"{size}x{size} one.", "Report this as a bug, with the engine log.")
    notices = [str(n) for n in hello.get("notices") or []]
    w = hello.get("weights") or {}
    if w.get("notice"):
        notices.append(str(w["notice"]))
    text = (f"stylized a {size}x{size} test image with preset {preset!r} on "
            f"{hello.get('device') or 'the default device'} (torch {hello.get('torch')}) "
            f"in {time.monotonic() - started:.1f} s")
    for n in dict.fromkeys(notices):
        text += f"\n      notice: {n}"
    return text
