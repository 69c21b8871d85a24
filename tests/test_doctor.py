"""``python -m nst_engine doctor``: reports the weights and says what to fix."""

from __future__ import annotations

import json
from argparse import Namespace

from nst_engine import doctor
from nst_engine.model import weights as W


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
