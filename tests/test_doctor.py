"""``python -m nst_engine doctor``: reports the weights and says what to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

from nst_engine import doctor
from nst_engine.model import weights as W

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, **kw):
    rc = doctor.run(Namespace(**{"weights": None, "json": True, **kw}))
    return rc, json.loads(capsys.readouterr().out)


def test_doctor_reports_usable_random_weights_with_a_warning(random_weights_file, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    rc, report = _run(capsys, weights=str(random_weights_file))
    assert rc == 0 and report["ok"] is True
    w = report["weights"]
    assert (w["ok"], w["kind"], w["verified"], w["convs"]) == (True, "torchvision", False, 16)
    assert "unknown checksum" in w["notice"]
    assert report["torch"] and any(d["type"] == "cpu" for d in report["devices"])
    warnings = [p for p in report["problems"] if not p["fatal"]]
    assert any("fetch-weights" in p["fix"] for p in warnings)
    assert report["presets"]["user_dir"] == str(tmp_path / "config" / "presets")


def test_doctor_reads_the_default_cache(random_caffe_weights_file, tmp_path, monkeypatch,
                                        capsys):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    W.convert(random_caffe_weights_file)
    rc = doctor.run(Namespace(weights=None, json=False))
    text = capsys.readouterr().out
    assert rc == 0
    assert str(W.default_weights_path()) in text and "caffe, NOT verified" in text
    assert "OK: ready" in text


def test_doctor_without_weights_fails_and_says_how_to_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    rc, report = _run(capsys)
    assert rc == 1 and report["ok"] is False and report["weights"]["found"] is False
    fatal = [p for p in report["problems"] if p["fatal"]]
    assert len(fatal) == 1 and "fetch-weights" in fatal[0]["fix"] and "--weights" in fatal[0]["fix"]


def test_doctor_names_a_bad_weights_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    rc, report = _run(capsys, weights=str(bad))
    assert rc == 1 and report["weights"]["ok"] is False
    assert str(bad) in report["weights"]["error"]


def test_doctor_shows_the_cpu_precision_its_timings_and_why(tmp_path, monkeypatch, capsys):
    from nst_engine.device import cpu_precision as CP

    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv(CP.ENV, raising=False)
    monkeypatch.setattr(CP, "_memo", {})
    monkeypatch.setattr(CP, "_round", lambda inputs, bf16: 0.004 if bf16 else 0.010)
    # A busy machine (others sharing the cores) would make the race untrusted: float32.
    monkeypatch.setattr(CP, "_load_per_cpu", lambda: 0.0)
    c = _run(capsys)[1]["cpu_precision"]
    assert (c["precision"], c["source"], c["fp32_ms"], c["bf16_ms"]) == (
        "bfloat16", "measured", 10.0, 4.0)
    assert "0.40x" in c["reason"]
    monkeypatch.setattr(CP, "_memo", {})  # as a new process: from the cache
    doctor.run(Namespace(weights=None, json=False))
    text = capsys.readouterr().out
    assert f"precision:   bfloat16 convolutions (measured {c['measured_at']}, cached in " in text
    assert "float32 10.0 ms, bfloat16 4.0 ms" in text
    assert "why: bfloat16 convolutions take 0.40x" in text

    monkeypatch.setenv(CP.ENV, "0")
    c = _run(capsys)[1]["cpu_precision"]
    assert (c["precision"], c["source"]) == ("float32", "override")


# ------------------------------------------------------------------------------------------
# What install.py reads from `doctor --json`: packages, where the weights go, the verdict

def _doctor_process(*args: str, python: tuple[str, ...] = (sys.executable,), env=None):
    """`python -m nst_engine doctor --json ARGS` as install.py runs it: its own process, the
    engine on PYTHONPATH."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*python, "-m", "nst_engine", "doctor", "--json", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout)


def test_doctor_reports_each_package_and_its_version(tmp_path, monkeypatch, capsys):
    from importlib.metadata import version

    import numpy
    import torch

    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    packages = _run(capsys, quick=True)[1]["packages"]
    assert list(packages) == ["torch", "torchvision", "PIL", "numpy", "yaml"]
    assert [p["pip"] for p in packages.values()] == [
        "torch", "torchvision", "pillow", "numpy", "pyyaml"]
    assert all(p["found"] for p in packages.values())
    assert torch.__version__.startswith(packages["torch"]["version"])
    assert packages["numpy"]["version"] == numpy.__version__
    assert packages["yaml"]["version"] == version("PyYAML")
    doctor.run(Namespace(weights=None, json=False, quick=True))
    assert f"packages:    torch {packages['torch']['version']}, " in capsys.readouterr().out


def test_doctor_reports_opencv_for_animations(tmp_path, monkeypatch, capsys):
    import cv2
    import importlib.util

    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    report = _run(capsys, quick=True)[1]
    assert report["optional"]["cv2"]["found"]
    assert report["optional"]["cv2"]["version"].startswith(cv2.__version__)
    assert not any("OpenCV" in p["problem"] for p in report["problems"])
    # Without it: a warning that says what still works and what to install, not an error.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cv2" else real(name, *a))
    report = _run(capsys, quick=True)[1]
    (problem,) = [p for p in report["problems"] if "OpenCV" in p["problem"]]
    assert not problem["fatal"] and "stills work" in problem["problem"]
    assert "opencv-python-headless" in problem["fix"]
    doctor.run(Namespace(weights=None, json=False, quick=True))
    assert "optional:    cv2 missing (for animations: optical flow)" in capsys.readouterr().out


def test_doctor_without_torch_names_every_missing_package():
    # -S: this Python without its site-packages, so none of the engine's packages.
    rc, report = _doctor_process(python=(sys.executable, "-S"))
    assert rc == 1 and report["ok"] is False
    assert [m for m, p in report["packages"].items() if not p["found"]] == [
        "torch", "torchvision", "PIL", "numpy", "yaml"]
    assert "torch" not in report and "devices" not in report
    (fatal,) = [p for p in report["problems"] if p["fatal"]]
    assert "lacks what the engine needs: torch, torchvision, PIL, numpy, yaml" in fatal["problem"]
    assert "-m pip install torch torchvision pillow numpy pyyaml" in fatal["fix"]


def test_doctor_quick_imports_no_torch_and_says_where_the_weights_go(tmp_path):
    env = {"NST_DATA_DIR": str(tmp_path / "data"), "NST_CONFIG_DIR": str(tmp_path / "config")}
    code = ("import sys; from nst_engine.cli import main; rc = main(sys.argv[1:]); "
            "sys.stderr.write('torch imported' if 'torch' in sys.modules else ''); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "doctor", "--json", "--quick"],
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "torch imported" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["quick"] is True and report["ok"] is True
    assert "torch" not in report and "cpu_precision" not in report
    cache = tmp_path / "data" / "weights" / W.CACHE_FILE
    assert report["weights"] == {"path": str(cache), "from": "default cache", "found": False,
                                 "default_path": str(cache)}


def test_doctor_gives_the_weights_verdict_and_the_default_path_apart(random_weights_file,
                                                                     tmp_path):
    env = {"NST_DATA_DIR": str(tmp_path / "data"), "NST_CONFIG_DIR": str(tmp_path / "config"),
           "NST_ENGINE_CPU_BF16": "0"}
    rc, report = _doctor_process("--weights", str(random_weights_file), env=env)
    w = report["weights"]
    assert rc == 0 and report["quick"] is False
    assert (w["path"], w["ok"], w["kind"], w["verified"]) == (
        str(random_weights_file), True, "torchvision", False)
    assert "unknown checksum" in w["notice"]
    assert w["default_path"] == str(tmp_path / "data" / "weights" / W.CACHE_FILE)
    missing = tmp_path / "nothing.pth"
    rc, report = _doctor_process("--weights", str(missing), env=env)
    w = report["weights"]
    assert rc == 1 and w["ok"] is False and w["found"] is False and str(missing) in w["error"]


def test_doctor_says_whether_the_normalised_network_is_cached(random_weights_file, tmp_path,
                                                             monkeypatch, capsys):
    """Issue 32: the normalised network is made once per weights file; doctor shows whether
    that has happened for these weights (the first normalised run pays the seconds)."""
    from nst_engine.model import normalise

    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NST_CONFIG_DIR", str(tmp_path / "config"))
    _, report = _run(capsys, weights=str(random_weights_file))
    n = report["weights"]["normalised"]
    assert n["cached"] is False and str(tmp_path / "data") in n["path"]
    normalise.normalised(W.load_weights(random_weights_file))
    _, report = _run(capsys, weights=str(random_weights_file))
    assert report["weights"]["normalised"] == {"path": n["path"], "cached": True}
    doctor.run(Namespace(weights=str(random_weights_file), json=False))
    assert f"normalised network: cached in {n['path']}" in capsys.readouterr().out
