"""Hostile preset files: each is skipped with a one-line message naming the file and the reason,
quoting at most a bounded excerpt, and every other preset keeps working."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nst_engine import presets
from nst_engine.errors import InvalidInput, PresetError

#: Longest message a skipped file may produce: the path plus a bounded excerpt.
BOUND = 600


def alias_bomb(levels: int = 5) -> str:
    """"Billion laughs": each anchor is a list of 9 aliases of the previous one. Five levels
    (59049 strings expanded) are over the limit yet small enough that a regression fails the
    test instead of exhausting the machine's memory."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nname: *l{levels}\n"


HOSTILE = {
    "deep.yaml": ("iterations: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than"),
    "deep-map.yaml": ("style_layers: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
                      "nests deeper than"),
    "digits.yaml": ("iterations: " + "9" * 5000 + "\n", "too many digits"),
    "long-float.yaml": ("learning_rate: " + "9" * 1000 + "\n", "out of range"),
    "long-int.yaml": ("iterations: " + "7" * 3000 + "\n", "out of range"),
    "bomb.yaml": (alias_bomb(), "expands to more than"),
    "bomb-in-layers.yaml": (alias_bomb().replace("name:", "style_layers:"),
                            "expands to more than"),
    "big.yaml": ("description: '" + "x" * (2 << 20) + "'\n", "over the limit of"),
    "long-name.yaml": ("name: " + "n" * 5000 + "\n", "bad name"),
    "long-choice.yaml": ("optimizer: " + "q" * 50_000 + "\n", "must be one of"),
    "bad-date.yaml": ("seed: 2020-13-45\n", "cannot be read"),
    "zero-content.yaml": ("content_layers: {relu4_2: 0, relu5_2: 0.0}\n", "weight 0"),
    "zero-style.yaml": ("style_layers: {relu1_1: 0}\n", "weight 0"),
    "not-utf8.yaml": (b"name: \xff\xfe\n", "not UTF-8"),
}


@pytest.mark.parametrize("filename", sorted(HOSTILE))
def test_hostile_file_is_skipped_with_a_short_message(tmp_path, filename):
    text, reason = HOSTILE[filename]
    path = tmp_path / filename
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    (tmp_path / "mine.yaml").write_text("extends: quick\niterations: 7\n")
    pset = presets.load_presets(tmp_path)
    assert len(pset.problems) == 1, [e.message for e in pset.problems]
    err = pset.problems[0]
    assert reason in err.message and str(path) in err.message
    assert "\n" not in err.message and len(err.message) < BOUND + len(str(path))
    # The others still work, and asking for the bad one names its problem.
    assert presets.resolve("mine", user_dir=tmp_path).iterations == 7
    assert presets.resolve("quick", user_dir=tmp_path).iterations > 0
    with pytest.raises(PresetError) as e:
        presets.resolve(Path(filename).stem, user_dir=tmp_path)
    assert reason in e.value.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_in_the_preset_folder_is_skipped_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")  # nobody ever writes to it: reading would block forever
    pset = presets.load_presets(tmp_path)
    assert "not a regular file" in pset.problems[0].message
    assert "quick" in pset.presets


def test_size_limit_is_what_a_preset_needs(tmp_path):
    # Just under the limit still loads (comments are fine); one byte more is refused unread.
    body = "iterations: 5\n"
    pad = presets.MAX_FILE_BYTES - len(body)
    (tmp_path / "ok.yaml").write_text(body + "#" * (pad - 1) + "\n")
    (tmp_path / "over.yaml").write_text(body + "#" * pad + "\n")
    pset = presets.load_presets(tmp_path)
    assert "ok" in pset.presets and "over" not in pset.presets
    assert "65537 bytes" in pset.problems[0].message


@pytest.mark.parametrize("overrides, words", [
    ({"k" * 100_000: 1}, "Unknown setting"),
    ({"learning_rate": 10 ** 400}, "out of range"),
    ({"iterations": 10 ** 4000}, "out of range"),
    ({"optimizer": "x" * 100_000}, "must be one of"),
    ({"content_layers": {"relu4_2": 0}}, "weight 0"),
    ({"style_layers": {"y" * 100_000: 1}}, "unknown layer"),
    ({"style_layers": {"relu1_1": "z" * 100_000}}, "weights are numbers"),
])
def test_hostile_overrides_get_a_bounded_message(overrides, words):
    # Overrides come from the CLI and from the plug-in's requests (the serve mode).
    with pytest.raises(InvalidInput) as e:
        presets.resolve("quick", overrides)
    assert words in e.value.message and len(e.value.message) < BOUND


def test_unknown_preset_name_is_quoted_as_an_excerpt():
    with pytest.raises(PresetError) as e:
        presets.resolve("p" * 100_000)
    assert "There is no preset named" in e.value.message and len(e.value.message) < BOUND


def test_presets_command_lists_good_presets_beside_a_bomb(tmp_path):
    import subprocess

    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "deep.yaml").write_text(HOSTILE["deep.yaml"][0])
    env = {**os.environ, "NST_PRESETS_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "nst_engine", "presets"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "quick" in run.stdout
    skipped = [ln for ln in run.stderr.splitlines() if ln.startswith("  ")]
    assert len(skipped) == 2 and all(len(ln) < BOUND + len(str(tmp_path)) for ln in skipped)
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("params, words", [
    ({"content_layers": {"relu4_2": 0}}, "weight 0"),
    ({"style_layers": {"relu1_1": 0.0, "relu2_1": 0}}, "weight 0"),
    ({"iterations": 0}, "out of range"),
    ({"learning_rate": float("nan")}, "finite"),
    ({"optimizer": "sgd"}, "must be one of"),
])
def test_python_api_params_are_checked_before_any_work(tmp_path, params, words):
    """StyleParams built in Python meet the preset checks too, before the weights are read
    (the path given does not exist: reaching it would be a different error)."""
    from PIL import Image

    from nst_engine import StyleParams, stylize

    img = Image.new("RGB", (8, 8), (10, 20, 30))
    with pytest.raises(InvalidInput) as e:
        stylize(content=img, styles=[(img, 1.0)], params=StyleParams(**params),
                device="cpu", weights=tmp_path / "none.pth")
    assert words in e.value.message
