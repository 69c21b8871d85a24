"""``python -m nst_engine doctor``: what this engine has to work with, and what to fix.

Checks Python, the packages the engine imports (found and their versions, without importing
them) and the optional ones (OpenCV, for animations: a warning when missing), torch/torchvision, the devices torch sees, the CPU's precision (bfloat16 or float32,
measured on this CPU: ``cpu_precision``), the weights (found, validated, checksum-verified,
kind) and the preset folders. Exit code 0 when a stylize run can work, 1 otherwise. Every check
is guarded, so one broken part never hides the report on the others; without torch it still
reports, which is how ``install.py`` learns what a Python lacks.

``--quick`` leaves out everything that imports torch (devices, CPU precision, loading the
weights): the installer asks it before the engine is complete, and torch takes seconds to load.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .bridge import config
from .errors import OPENCV_HINT


#: What the engine imports beyond the standard library: (module, the pip name that provides it).
REQUIREMENTS = (("torch", "torch"), ("torchvision", "torchvision"), ("PIL", "pillow"),
                ("numpy", "numpy"), ("yaml", "pyyaml"))
#: What only some features import: (module, the pip names that provide it, what needs it).
OPTIONAL = (("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                     "opencv-contrib-python"), "animations: optical flow"),)


def _problem(report: dict, what: str, fix: str, *, fatal: bool = True) -> None:
    report["problems"].append({"problem": what, "fix": fix, "fatal": fatal})


def _check_packages(report: dict) -> list[str]:
    """Which of REQUIREMENTS this Python has, and their versions, found without importing them.
    Returns the missing modules."""
    from importlib.metadata import version

    packages: dict[str, dict[str, Any]] = {}
    for module, pip_name in REQUIREMENTS:
        found = importlib.util.find_spec(module) is not None
        installed = None
        if found:
            try:
                installed = version(pip_name)
            except Exception:  # noqa: BLE001 -- no or broken metadata: the module still imports
                pass
        packages[module] = {"pip": pip_name, "found": found, "version": installed}
    report["packages"] = packages
    missing = [m for m, p in packages.items() if not p["found"]]
    if missing:
        pip_names = " ".join(packages[m]["pip"] for m in missing)
        _problem(report, f"This Python lacks what the engine needs: {', '.join(missing)}.",
                 f"Install them in this Python (`{sys.executable} -m pip install {pip_names}`); "
                 "`python install.py` does it.")
    return missing


def _check_optional(report: dict) -> None:
    """The optional packages: found, their version, what lacks without them (a warning)."""
    from importlib.metadata import PackageNotFoundError, version

    optional: dict[str, dict[str, Any]] = {}
    for module, pip_names, needed_by in OPTIONAL:
        found = importlib.util.find_spec(module) is not None
        installed = None
        for name in pip_names if found else ():
            try:
                installed = version(name)
                break
            except PackageNotFoundError:
                continue
            except Exception:  # noqa: BLE001 -- broken metadata: the module still imports
                break
        optional[module] = {"pip": pip_names[0], "found": found, "version": installed,
                            "for": needed_by}
        if not found and module == "cv2":
            _problem(report, "OpenCV is not installed: stills work, animations do not.",
                     OPENCV_HINT, fatal=False)
    report["optional"] = optional


def _check_torch(report: dict) -> bool:
    try:
        import torch
        import torchvision
    except Exception as e:  # noqa: BLE001 -- any import failure is the finding
        _problem(report, f"PyTorch cannot be imported: {e}",
                 "Install torch and torchvision in this Python (`python install.py` does it).")
        return False
    report["torch"] = torch.__version__
    report["torchvision"] = torchvision.__version__
    devices: list[dict[str, Any]] = []
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                devices.append({"type": "cuda", "index": i,
                                "name": torch.cuda.get_device_name(i), **_cuda_precision(i)})
        else:
            report["cuda_note"] = ("PyTorch built without CUDA" if torch.version.cuda is None
                                   else f"CUDA {torch.version.cuda} build, no usable GPU seen")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append({"type": "mps", "name": "Apple Metal (MPS)", **_mps_notes()})
    except Exception as e:  # noqa: BLE001
        _problem(report, f"Probing GPUs failed: {e}", "Check the GPU driver; the CPU still "
                 "works.", fatal=False)
    devices.append({"type": "cpu", "name": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads()})
    report["devices"] = devices
    return True


def _cuda_precision(index: int) -> dict[str, Any]:
    """A CUDA device's compute capability and the precision the engine runs there, and why."""
    from .device.resolve import cuda_precision
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    p = cuda_precision(index)
    return {"capability": f"{major}.{minor}", "precision": p.name,
            "loss_scaling": p.loss_scale, "why": p.reason}


def _mps_notes() -> dict[str, Any]:
    """What the engine does differently on Apple's GPU with this torch."""
    from .device.resolve import device_precision, torch_version
    from .transfer.convert import MPS_BICUBIC_TORCH, resize_on_host
    import torch

    mps = torch.device("mps")
    host = resize_on_host(mps, down=False)
    need = ".".join(map(str, MPS_BICUBIC_TORCH))
    return {"precision": device_precision(mps).name, "loss_scaling": False,
            "why": "float32 (autocast on MPS is too young across the torch versions allowed); "
                   "default memory layout (channels-last backward is unreliable on MPS); "
                   + (f"pyramid upsampling on the CPU (MPS has bicubic from torch {need}, "
                      f"this is {'.'.join(map(str, torch_version()))})" if host
                      else "bicubic upsampling on the GPU")}


def _check_cpu_precision(report: dict, args: Any) -> None:
    """The CPU's convolution precision, the timings behind it and why (measured if not yet)."""
    from .device.cpu_precision import choose

    try:
        choice = choose(remeasure=bool(getattr(args, "measure_cpu", False)))
    except Exception as e:  # noqa: BLE001 -- a failed measurement is a finding, not a crash
        report["cpu_precision"] = {"error": str(e)}
        _problem(report, f"Timing the CPU's precisions failed: {e}", "The engine runs in "
                 "float32 if it fails again; set NST_ENGINE_CPU_BF16=0 to skip the timing.",
                 fatal=False)
        return
    report["cpu_precision"] = {"precision": "bfloat16" if choice.bf16 else "float32",
                               **choice.to_json()}
    if choice.cache_note:
        _problem(report, f"CPU precision {choice.cache_note}.", "Make the data folder "
                 "writable (or set NST_DATA_DIR to a writable folder).", fatal=False)


def _weights_path(args: Any) -> tuple[Path | None, str]:
    if getattr(args, "weights", None):
        return Path(args.weights), "--weights"
    try:
        configured = config.load_config().get("weights")
    except config.ConfigError:
        configured = None
    if configured:
        return Path(configured), f"config {config.config_path()}"
    return None, "default cache"


def _find_weights(report: dict, args: Any) -> Path | None:
    """Which weights file a run would read, and where ``fetch-weights`` puts the cache."""
    from .model.weights import default_weights_path

    path, origin = _weights_path(args)
    report["weights"] = {"path": str(path or default_weights_path()), "from": origin,
                         "found": (path or default_weights_path()).exists(),
                         "default_path": str(default_weights_path())}
    return path


def _check_weights(report: dict, args: Any) -> bool:
    from .errors import EngineError
    from .model.weights import load_weights, normalised_cache_path, sha256_of

    path = _find_weights(report, args)
    info = report["weights"]
    try:
        w = load_weights(path)
    except EngineError as e:
        info.update(ok=False, error=e.message)
        _problem(report, e.message, e.hint)
        return False
    info.update(ok=True, kind=w.kind, verified=w.verified, notice=w.notice,
                sha256=w.sha256, convs=len(w.convs) // 2)
    # Gatys' normalised network (issue 32, ``network: normalised``) is made from these weights
    # once and cached beside them; say whether that has happened (the first run pays seconds).
    normalised = normalised_cache_path(w.sha256 or sha256_of(w.source), w.kind)
    info["normalised"] = {"path": str(normalised), "cached": normalised.is_file()}
    if not w.verified:
        _problem(report, "The weights are not a known VGG19 download (unknown checksum): "
                 "results will not be those of the real VGG19.",
                 "For real results run `python -m nst_engine fetch-weights`.", fatal=False)
    return True


def _check_presets(report: dict) -> None:
    builtin = Path(__file__).with_name("presets")
    user = config.user_presets_dir()
    info: dict[str, Any] = {
        "builtin_dir": str(builtin), "builtin_files": len(list(builtin.glob("*.y*ml"))),
        "user_dir": str(user), "user_dir_exists": user.is_dir(),
        "user_files": len(list(user.glob("*.y*ml"))) if user.is_dir() else 0}
    report["presets"] = info
    try:
        from .presets import load_presets
    except ImportError:
        return  # the presets module is optional for this report
    try:
        pset = load_presets()
    except Exception as e:  # noqa: BLE001 -- a broken built-in is a finding, not a crash
        info["error"] = str(e)
        _problem(report, f"The built-in presets do not load: {e}",
                 "Reinstall Style Transfer (`python install.py`); please report this.")
        return
    info["count"] = len(pset.presets)
    info["builtin"] = len(pset.builtins)
    info["names"] = sorted(pset.presets)
    for err in pset.problems:
        text = err.user_text() if hasattr(err, "user_text") else str(err)
        _problem(report, f"User preset skipped: {getattr(err, 'message', str(err))}",
                 getattr(err, "hint", "") or text, fatal=False)
    if config.DEFAULT_PRESET not in pset.presets:
        _problem(report, f"The default preset '{config.DEFAULT_PRESET}' is missing.",
                 "Reinstall Style Transfer, or fix the user preset of that name.")


def collect(args: Any) -> dict:
    report: dict[str, Any] = {
        "nst_engine": __version__,
        "python": sys.version.split()[0], "python_executable": sys.executable,
        "platform": platform.platform(), "quick": bool(getattr(args, "quick", False)),
        "problems": []}
    missing = _check_packages(report)
    _check_optional(report)
    if report["quick"]:
        _find_weights(report, args)
    elif "torch" not in missing and "torchvision" not in missing and _check_torch(report):
        _check_cpu_precision(report, args)
        _check_weights(report, args)
    _check_presets(report)
    report["ok"] = not any(p["fatal"] for p in report["problems"])
    return report


def _print_cpu_precision(c: dict | None) -> None:
    if not c or "precision" not in c:
        return
    how = {"override": "set by NST_ENGINE_CPU_BF16",
           "cache": f"measured {c['measured_at']}, cached in {c['cache_path']}",
           "measured": f"measured now in {c['seconds']:.2f} s"
                       + (f", cached in {c['cache_path']}"
                          if c.get("settled", True) and not c["cache_note"] else ", not cached")
           }[c["source"]]
    print(f"precision:   {c['precision']} convolutions ({how})")
    if c["fp32_ms"] is not None:
        load = f", load average {c['load']}" if c.get("load") is not None else ""
        print(f"             probe: float32 {c['fp32_ms']} ms, bfloat16 {c['bf16_ms']} ms "
              f"(best of {c['rounds']} rounds, {c['key'].get('threads')} threads{load})")
    print(f"             why: {c['reason']}")
    if c["source"] != "override":
        print("             (`doctor --measure-cpu` times it again; NST_ENGINE_CPU_BF16=1/0 "
              "forces bfloat16/float32)")


def _print_text(r: dict) -> None:
    print(f"nst_engine {r['nst_engine']} on Python {r['python']} ({r['python_executable']})")
    print(f"platform:    {r['platform']}")
    found = [f"{m} {p['version'] or '(version unknown)'}" for m, p in r["packages"].items()
             if p["found"]]
    missing = [m for m, p in r["packages"].items() if not p["found"]]
    print(f"packages:    {', '.join(found) or 'none'}"
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    for module, p in r.get("optional", {}).items():
        state = (f"{module} {p['version'] or '(version unknown)'}" if p["found"]
                 else f"{module} missing")
        print(f"optional:    {state} (for {p['for']})")
    if "torch" in r:
        print(f"torch:       {r['torch']}, torchvision {r['torchvision']}")
        names = ", ".join(f"{d['type']}" + (f":{d['index']}" if "index" in d else "")
                          + f" ({d['name']})" for d in r["devices"])
        print(f"devices:     {names}")
        if "cuda_note" in r:
            print(f"             (no CUDA: {r['cuda_note']})")
        for d in r["devices"]:
            if d["type"] != "cpu" and "precision" in d:
                tag = d["type"] + (f":{d['index']}" if "index" in d else "")
                scaled = " with loss scaling" if d["loss_scaling"] else ""
                print(f"{tag + ':':<13}{d['precision']} convolutions{scaled}")
                print(f"             why: {d['why']}")
    _print_cpu_precision(r.get("cpu_precision"))
    w = r.get("weights")
    if w:
        if w.get("ok"):
            state = "verified" if w["verified"] else "NOT verified (unknown checksum)"
            print(f"weights:     {w['path']} [{w['from']}]: {w['kind']}, {state}")
            if w.get("notice"):
                print(f"             notice: {w['notice']}")
            n = w.get("normalised")
            if n:
                print("             normalised network: " + (
                    f"cached in {n['path']}" if n["cached"] else
                    "not made yet (made once, in seconds, by the first run with "
                    "network: normalised)"))
        elif "ok" not in w:  # --quick: looked for, not loaded
            print(f"weights:     {w['path']} [{w['from']}]: "
                  + ("found, not loaded (--quick)" if w["found"] else "not found"))
        else:
            print(f"weights:     {w['path']} [{w['from']}]: not usable")
    p = r["presets"]
    count = f"{p['count']} presets" if "count" in p else f"{p['builtin_files']} files"
    print(f"presets:     {count}; built-in {p['builtin_dir']}; user {p['user_dir']}"
          + ("" if p["user_dir_exists"] else " (not created)"))
    if r["problems"]:
        print("\nproblems:")
        for prob in r["problems"]:
            tag = "error" if prob["fatal"] else "warning"
            print(f"  {tag}: {prob['problem']}")
            if prob["fix"]:
                print(f"    fix: {prob['fix']}")
    if not r["ok"]:
        print("\nNOT READY: fix the errors above.")
    elif r["quick"]:
        print("\nOK so far (--quick: torch, the devices and the weights were not loaded).")
    else:
        print("\nOK: ready to stylize.")


def run(args: Any) -> int:
    report = collect(args)
    if getattr(args, "json", False):
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_text(report)
    return 0 if report["ok"] else 1
