"""Weight files: layouts, kinds, validation messages, safety, the compact cache, fetch-weights."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import urllib.error
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from nst_engine.model import weights as W
from nst_engine.errors import WeightsInvalid, WeightsMissing
from nst_engine.testing import random_vgg19_state
from nst_engine.model.layers import CONV_LAYERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Keep the default cache and torch.hub's cache in temporary folders."""
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _save(state, path: Path) -> Path:
    torch.save(state, path)
    return path


def _pretend_known(monkeypatch, path: Path, kind: str) -> W.KnownFile:
    """Make ``path`` one of the known downloads, as if its checksum were published."""
    sha = W.sha256_of(path)
    known = W.KnownFile(kind, f"https://example.invalid/models/vgg19-{sha[:8]}.pth", "test file")
    others = {k: v for k, v in W.known_files().items() if k != kind}
    monkeypatch.setattr(W, "known_files", lambda: {**others, kind: known})
    return known


# --- layouts and kinds -------------------------------------------------------------------------

def test_torchvision_layout_loads_as_torchvision_with_notice(random_weights_file):
    w = W.load_weights(random_weights_file)
    assert w.kind == "torchvision"
    assert not w.verified
    assert "unknown checksum" in w.notice and "not" in w.notice and "real VGG19" in w.notice
    assert list(w.convs) == [f"{n}.{p}" for n in CONV_LAYERS for p in ("weight", "bias")]
    assert w.convs["conv1_1.weight"].shape == (64, 3, 3, 3)
    assert w.convs["conv5_4.weight"].shape == (512, 512, 3, 3)
    assert all(t.dtype == torch.float32 for t in w.convs.values())


def test_caffe_layout_loads_as_caffe_with_the_same_convs(random_weights_file,
                                                          random_caffe_weights_file):
    tv = W.load_weights(random_weights_file)
    caffe = W.load_weights(random_caffe_weights_file)
    assert caffe.kind == "caffe"
    assert list(caffe.convs) == list(tv.convs)
    for key in tv.convs:  # same seed: same numbers, only the names differ
        assert torch.equal(caffe.convs[key], tv.convs[key]), key


def test_explicit_kind_beats_layout(random_weights_file, random_caffe_weights_file):
    assert W.load_weights(random_weights_file, kind="caffe").kind == "caffe"
    assert W.load_weights(random_caffe_weights_file, kind="torchvision").kind == "torchvision"
    with pytest.raises(WeightsInvalid, match="kind"):
        W.load_weights(random_weights_file, kind="bgr")


def test_known_checksum_sets_kind_and_verified(random_weights_file, monkeypatch):
    _pretend_known(monkeypatch, random_weights_file, "caffe")
    w = W.load_weights(random_weights_file)
    assert (w.kind, w.verified, w.notice) == ("caffe", True, None)  # checksum beats layout
    assert W.load_weights(random_weights_file, kind="torchvision").kind == "torchvision"


def test_classifier_keys_are_checked_and_dropped(tmp_path):
    path = _save(random_vgg19_state(classifier=True), tmp_path / "with-classifier.pth")
    w = W.load_weights(path)
    assert len(w.convs) == 32 and not any("classifier" in k for k in w.convs)

    state = random_vgg19_state(classifier=True)
    state["classifier.6.weight"] = torch.zeros(1).expand(10, 4096)  # a 10-class head
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(_save(state, tmp_path / "other-head.pth"))
    assert "'classifier.6.weight'" in e.value.message and "(10, 4096)" in e.value.message


def test_wrapped_state_dict_is_unwrapped(tmp_path):
    path = _save({"state_dict": random_vgg19_state(), "epoch": 3}, tmp_path / "ckpt.pth")
    assert W.load_weights(path).kind == "torchvision"


# --- validation messages name the first wrong key ---------------------------------------------

def test_unexpected_key_is_named(tmp_path):
    state = random_vgg19_state()
    state["features.1.weight"] = torch.zeros(3)  # index 1 is a ReLU: no weights there
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(_save(state, tmp_path / "extra.pth"))
    assert "unexpected key 'features.1.weight'" in e.value.message


def test_missing_key_is_named(tmp_path):
    state = random_vgg19_state(layout="caffe_names")
    del state["conv5_4.bias"]
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(_save(state, tmp_path / "missing.pth"))
    assert "'conv5_4.bias' is missing" in e.value.message


def test_wrong_shape_is_named_with_got_and_expected(tmp_path):
    state = random_vgg19_state()
    state["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(_save(state, tmp_path / "shape.pth"))
    msg = e.value.message
    assert "'features.2.weight'" in msg and "(64, 32, 3, 3)" in msg and "(64, 64, 3, 3)" in msg


def test_vgg16_is_rejected_naming_a_key(tmp_path):
    import torchvision

    with torch.device("meta"):
        keys = torchvision.models.vgg16(weights=None).features.state_dict()
    state = {f"features.{k}": torch.zeros(1).expand(v.shape) for k, v in keys.items()}
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(_save(state, tmp_path / "vgg16.pth"))
    assert "'features." in e.value.message


def test_non_tensor_value_and_nan_rejected(tmp_path):
    state = random_vgg19_state()
    state["features.0.bias"] = [0.0] * 64
    with pytest.raises(WeightsInvalid, match="'features.0.bias' is a list"):
        W.load_weights(_save(state, tmp_path / "list.pth"))
    state = random_vgg19_state()
    state["features.5.bias"][3] = float("nan")
    with pytest.raises(WeightsInvalid, match="'features.5.bias' contains NaN"):
        W.load_weights(_save(state, tmp_path / "nan.pth"))


def test_unrelated_state_dict_is_rejected(tmp_path):
    path = _save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsInvalid, match="not a VGG19 weights file"):
        W.load_weights(path)


# --- damaged and hostile files ----------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_file_is_rejected(random_weights_file, tmp_path, fraction):
    data = random_weights_file.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(path)
    assert "truncated" in e.value.message and str(path) in e.value.message


def test_truncated_legacy_format_file_is_rejected(tmp_path):
    # torchvision's own VGG19 download uses the pre-zip format.
    full = tmp_path / "legacy.pth"
    torch.save(random_vgg19_state(), full, _use_new_zipfile_serialization=False)
    assert W.load_weights(full).kind == "torchvision"
    cut = tmp_path / "legacy-cut.pth"
    cut.write_bytes(full.read_bytes()[:1_000_000])
    with pytest.raises(WeightsInvalid, match="truncated"):
        W.load_weights(cut)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all" * 50, b"PK\x03\x04garbage"])
def test_garbage_is_rejected(tmp_path, content):
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsInvalid):
        W.load_weights(path)


class _Marker:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, how):
    marker = tmp_path / "pwned"
    # The trap works: a plain unpickle creates the marker.
    pickle.loads(pickle.dumps(_Marker(marker))).close()
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.pth"
    payload = {"features.0.weight": _Marker(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(path)
    assert "not a weights file" in e.value.message and "no code was run" in e.value.message
    assert "weights_only=False" not in e.value.user_text()  # never advise the unsafe retry
    assert not marker.exists()


def test_known_name_with_wrong_checksum_is_rejected(random_weights_file, tmp_path):
    fake = tmp_path / W.known_files()["torchvision"].filename  # vgg19-dcbb9e9d.pth
    shutil.copy(random_weights_file, fake)
    with pytest.raises(WeightsInvalid) as e:
        W.load_weights(fake)
    assert "checksum" in e.value.message and "dcbb9e9d" in e.value.message
    assert "fetch-weights" in e.value.hint


def test_known_files_come_from_torchvision_and_torch_hub():
    import torchvision

    tv = W.known_files()["torchvision"]
    assert tv.url == torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert tv.sha256_prefix == "dcbb9e9d"
    assert W.known_files()["caffe"].sha256_prefix == "d01eb7cb"


# --- missing weights --------------------------------------------------------------------------

def test_missing_default_weights_say_how_to_get_them(dirs):
    with pytest.raises(WeightsMissing) as e:
        W.load_weights(None)
    text = e.value.user_text()
    assert str(W.default_weights_path()) in text
    assert "fetch-weights" in text and "--weights" in text and "--from-file" in text


def test_missing_explicit_file(dirs):
    with pytest.raises(WeightsMissing, match="does not exist"):
        W.load_weights(dirs / "nope.pth")
    with pytest.raises(WeightsInvalid, match="folder"):
        W.load_weights(dirs)


# --- compact cache ----------------------------------------------------------------------------

def test_cache_round_trips_and_is_compact(random_weights_file, dirs):
    src = W.load_weights(random_weights_file)
    out = W.save_cache(src)
    assert out == W.default_weights_path()
    back = W.load_weights()  # the default location
    assert (back.kind, back.verified, back.sha256) == ("torchvision", False, src.sha256)
    assert back.notice and "unknown checksum" in back.notice
    for key in src.convs:
        assert torch.equal(back.convs[key], src.convs[key])
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == W.CACHE_FORMAT and len(raw["convs"]) == 32
    # Only the convs: the full VGG19 file (with its classifier) is ~7x larger.
    full_bytes = 4 * sum(torch.Size(s).numel() for s in W._torchvision_shapes().values())
    conv_bytes = 4 * sum(t.numel() for t in src.convs.values())
    assert conv_bytes <= out.stat().st_size < conv_bytes * 1.01
    assert out.stat().st_size < full_bytes / 6


def test_cache_keeps_its_recorded_kind_over_its_key_layout(random_weights_file, dirs):
    # Cache keys are conv names (the caffe layout), but the recorded kind wins.
    W.convert(random_weights_file)
    assert W.load_weights().kind == "torchvision"
    assert W.load_weights(kind="caffe").kind == "caffe"


def test_cache_of_a_verified_file_stays_verified(random_weights_file, dirs, monkeypatch):
    _pretend_known(monkeypatch, random_weights_file, "torchvision")
    W.convert(random_weights_file)
    w = W.load_weights()
    assert w.verified and w.notice is None


def test_damaged_cache_is_rejected(random_weights_file, dirs):
    out = W.convert(random_weights_file).source
    data = torch.load(out, weights_only=True)
    data["convs"]["conv3_1.weight"] = data["convs"]["conv3_1.weight"][:10]
    torch.save(data, out)
    with pytest.raises(WeightsInvalid, match="'conv3_1.weight' has shape"):
        W.load_weights()
    data["kind"] = "rgb"
    torch.save(data, out)
    with pytest.raises(WeightsInvalid, match="damaged weights cache"):
        W.load_weights()


# --- fetch-weights ----------------------------------------------------------------------------

def _fetch_args(**kw) -> Namespace:
    return Namespace(**{"kind": "torchvision", "from_file": None, "weights_kind": None, **kw})


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


def test_fetch_from_file_is_offline(random_caffe_weights_file, dirs, no_network, capsys):
    assert W.run_fetch(_fetch_args(from_file=str(random_caffe_weights_file))) == 0
    assert no_network == []
    w = W.load_weights()
    assert w.kind == "caffe" and not w.verified
    out = capsys.readouterr().out
    assert "NOT verified" in out and "notice:" in out
    assert random_caffe_weights_file.exists()  # the user's own file is left alone


def test_fetch_from_file_with_explicit_kind(random_weights_file, dirs, no_network):
    W.run_fetch(_fetch_args(from_file=str(random_weights_file), weights_kind="caffe"))
    assert W.load_weights().kind == "caffe"


def test_fetch_from_bad_file_leaves_the_cache_alone(random_weights_file, dirs, tmp_path):
    W.convert(random_weights_file)
    before = W.default_weights_path().read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    with pytest.raises(WeightsInvalid):
        W.run_fetch(_fetch_args(from_file=str(bad)))
    assert W.default_weights_path().read_bytes() == before
    assert list(W.default_weights_path().parent.iterdir()) == [W.default_weights_path()]


def test_fetch_network_failure_names_the_offline_route(dirs, no_network):
    with pytest.raises(WeightsMissing) as e:
        W.run_fetch(_fetch_args())
    assert no_network == [W.known_files()["torchvision"].url]
    assert "--from-file" in e.value.hint and "--weights" in e.value.hint
    assert not W.default_weights_path().exists()


def test_fetch_downloads_verifies_converts_and_removes_the_raw_file(random_weights_file, dirs,
                                                                    monkeypatch, capsys):
    known = _pretend_known(monkeypatch, random_weights_file, "torchvision")
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, progress=progress)
        shutil.copy(random_weights_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert W.run_fetch(_fetch_args()) == 0
    assert seen["url"] == known.url and seen["hash_prefix"] == known.sha256_prefix
    assert seen["progress"] is True
    w = W.load_weights()
    assert w.verified and w.kind == "torchvision"
    assert not Path(seen["dst"]).exists()  # the 548 MB download is not kept
    assert sorted(p.name for p in W.default_weights_path().parent.iterdir()) == [W.CACHE_FILE]

    # Idempotent: a second run does nothing (and would fail if it tried to download).
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("downloaded again"))
    assert W.run_fetch(_fetch_args()) == 0
    assert "Nothing to do" in capsys.readouterr().out


def test_fetch_hash_mismatch_removes_the_file(random_weights_file, dirs, monkeypatch):
    W.convert(random_weights_file)
    before = W.default_weights_path().read_bytes()

    def bad_download(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"tampered")
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0123abcd")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_download)
    with pytest.raises(WeightsInvalid) as e:
        W.run_fetch(_fetch_args(kind="caffe"))
    assert "wrong checksum" in e.value.message and "removed" in e.value.message
    assert sorted(p.name for p in W.default_weights_path().parent.iterdir()) == [W.CACHE_FILE]
    assert W.default_weights_path().read_bytes() == before


def test_fetch_uses_torch_hub_cache_when_it_holds_the_file(random_weights_file, dirs,
                                                           monkeypatch, no_network):
    known = _pretend_known(monkeypatch, random_weights_file, "torchvision")
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(random_weights_file, hub / known.filename)
    assert W.run_fetch(_fetch_args()) == 0
    assert no_network == [] and W.load_weights().verified
    assert (hub / known.filename).exists()  # torchvision's cache is not ours to delete


# --- the generator's command line -------------------------------------------------------------

def test_testing_command_writes_a_loadable_file(tmp_path):
    path = tmp_path / "cli.pth"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "nst_engine.testing", str(path),
                          "--layout", "caffe_names", "--seed", "3"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    w = W.load_weights(path)
    assert w.kind == "caffe"
    assert torch.equal(w.convs["conv1_1.weight"],
                       random_vgg19_state(layout="caffe_names", seed=3)["conv1_1.weight"])


def test_the_normalised_cache_is_named_by_version_kind_and_source(dirs):
    """Issue 32: the normalised network's cache sits beside the compact cache, one file per
    source checksum and kind (the preprocessing changes the factors), the version in its name,
    so a cache made by another version is never the file read (and is rebuilt:
    tests/test_normalise.py)."""
    sha = "ab" * 32
    path = W.normalised_cache_path(sha, "caffe")
    assert path.parent == W.default_weights_path().parent
    assert f"v{W.NORMALISE_VERSION}" in path.name and sha[:16] in path.name
    others = {W.normalised_cache_path(sha, "torchvision"),
              W.normalised_cache_path("cd" * 32, "caffe"),
              W.normalised_cache_path(sha, "caffe", version=W.NORMALISE_VERSION + 1),
              W.default_weights_path()}
    assert path not in others and len(others) == 4
    assert W.NORMALISED_FORMAT != W.CACHE_FORMAT
