"""Shared test setup: the repository root on sys.path and generated random-weight VGG19 files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory):
    """No test reaches the user's warm engine: a warm engine started by any test lives in this
    folder (short: a socket path has ~104 bytes) and is stopped at the end."""
    import os
    import shutil
    import tempfile

    from nst_engine.bridge import warm

    folder = Path(tempfile.mkdtemp(prefix="nst-tests-")) / "run"
    old = os.environ.get("NST_RUNTIME_DIR")
    os.environ["NST_RUNTIME_DIR"] = str(folder)
    yield folder
    if folder.exists():
        warm.stop_engine(folder, force=True)
    shutil.rmtree(folder.parent, ignore_errors=True)
    if old is None:
        os.environ.pop("NST_RUNTIME_DIR", None)
    else:
        os.environ["NST_RUNTIME_DIR"] = old


@pytest.fixture(scope="session")
def _session_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nst-data")


@pytest.fixture(autouse=True)
def private_data_dir(request, _session_data_dir, monkeypatch):
    """Engines that tests start keep what they write to the data folder (the CPU precision
    measured once, cpu-precision.json) in a session folder, not the user's; a test may set its
    own NST_DATA_DIR. The GIMP tests have their own HOME, and the data folder in it."""
    import os

    if "gimp" not in request.node.path.parts and not os.environ.get("NST_DATA_DIR"):
        monkeypatch.setenv("NST_DATA_DIR", str(_session_data_dir))


@pytest.fixture(scope="session")
def random_weights_file(tmp_path_factory) -> Path:
    """Random VGG19 weights, torchvision layout (features.N.*), seed 0 (~80 MB, made once)."""
    from nst_engine.testing import make_random_vgg19_file

    return make_random_vgg19_file(tmp_path_factory.mktemp("weights") / "random-vgg19.pth")


@pytest.fixture(scope="session")
def random_caffe_weights_file(tmp_path_factory) -> Path:
    """The same random convs (seed 0) in the Caffe conversion's layout (conv1_1.weight …)."""
    from nst_engine.testing import make_random_vgg19_file

    return make_random_vgg19_file(tmp_path_factory.mktemp("weights") / "random-vgg-conv.pth",
                                  layout="caffe_names")
