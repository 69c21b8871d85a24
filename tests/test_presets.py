"""Presets: the built-in set, user folders, validation messages and the torch-free command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nst_engine import presets
from nst_engine.bridge.config import DEFAULT_PRESET
from nst_engine.errors import InvalidInput, PresetError
from nst_engine.params import StyleParams

REPO = Path(__file__).resolve().parents[1]
BUILT_INS = {"quick", "balanced", "detailed", "bold", "subtle", "keep-colors"}


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "user-presets"
    d.mkdir()
    return d


def write(folder: Path, filename: str, text: str) -> Path:
    path = folder / filename
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def only_problem(pset: presets.PresetSet) -> PresetError:
    assert len(pset.problems) == 1, [e.message for e in pset.problems]
    return pset.problems[0]


# --- built-ins ---------------------------------------------------------------------------------

def test_every_builtin_validates_and_resolves(user_dir):
    pset = presets.load_presets(user_dir)
    assert pset.problems == []
    assert BUILT_INS <= set(pset.presets)
    assert DEFAULT_PRESET in pset.presets
    for name, preset in pset.presets.items():
        assert preset.origin == "built-in"
        assert preset.label and preset.description, name
        assert preset.source.parent == presets.BUILTIN_DIR
        params = presets.resolve(name, user_dir=user_dir)
        assert isinstance(params, StyleParams)
        for key, value in preset.values.items():  # the file's own values win over its base
            assert getattr(params, key) == value, (name, key)


def test_builtins_differ_the_way_their_names_say(user_dir):
    r = {name: presets.resolve(name, user_dir=user_dir) for name in BUILT_INS}
    base = r["balanced"]
    assert r["quick"].max_size < base.max_size and r["quick"].iterations < base.iterations
    assert r["detailed"].max_size > base.max_size and r["detailed"].levels > base.levels
    assert r["bold"].style_weight > base.style_weight
    assert r["subtle"].style_weight < base.style_weight
    assert r["keep-colors"].preserve_colors and not base.preserve_colors
    assert presets.resolve(None, user_dir=user_dir) == r[DEFAULT_PRESET]


def test_a_bad_builtin_is_a_bug_not_a_skipped_file(tmp_path, user_dir, monkeypatch):
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    write(builtin, "balanced.yaml", "iterations: lots\n")
    monkeypatch.setattr(presets, "BUILTIN_DIR", builtin)
    with pytest.raises(PresetError, match="balanced.yaml.*'iterations'"):
        presets.load_presets(user_dir)


# --- user presets ------------------------------------------------------------------------------

def test_user_preset_overrides_builtin_by_name(user_dir):
    path = write(user_dir, "my-balanced.yaml", """
        name: balanced
        label: My balanced
        iterations: 12
    """)
    pset = presets.load_presets(user_dir)
    assert pset.presets["balanced"].origin == "user"
    assert pset.presets["balanced"].source == path
    params = presets.resolve("balanced", user_dir=user_dir)
    assert params.iterations == 12
    assert params.max_size == StyleParams().max_size  # no extends: the built-in is replaced


def test_user_preset_extending_its_own_name_starts_from_the_builtin(user_dir):
    write(user_dir, "balanced.yaml", "extends: balanced\niterations: 12\n")
    builtin = presets.load_presets(user_dir).builtins["balanced"]
    params = presets.resolve("balanced", user_dir=user_dir)
    assert params.iterations == 12
    assert params.max_size == builtin.values["max_size"]


def test_env_variable_names_the_user_folder(user_dir, monkeypatch):
    write(user_dir, "mine.yaml", "iterations: 7\n")
    monkeypatch.setenv("NST_PRESETS_DIR", str(user_dir))
    assert presets.load_presets().presets["mine"].origin == "user"
    assert presets.resolve("mine").iterations == 7


def test_extends_chain_resolves_base_first(user_dir):
    write(user_dir, "a.yaml", "extends: quick\niterations: 11\nstyle_weight: 5.0\n")
    write(user_dir, "b.yaml", "extends: a\nstyle_weight: 6.0\n")
    quick = presets.resolve("quick", user_dir=user_dir)
    params = presets.resolve("b", user_dir=user_dir)
    assert [p.name for p in presets.load_presets(user_dir).chain("b")] == \
        ["balanced", "quick", "a", "b"]
    assert (params.max_size, params.iterations, params.style_weight) == \
        (quick.max_size, 11, 6.0)


def test_user_extends_follows_user_override_of_base(user_dir):
    write(user_dir, "quick.yaml", "max_size: 128\n")
    write(user_dir, "mine.yaml", "extends: quick\n")
    assert presets.resolve("mine", user_dir=user_dir).max_size == 128


def test_extends_loop_is_reported_and_skipped(user_dir):
    write(user_dir, "a.yaml", "extends: b\n")
    write(user_dir, "b.yaml", "iterations: 3\nextends: a\n")
    write(user_dir, "good.yaml", "extends: quick\n")
    pset = presets.load_presets(user_dir)
    assert "good" in pset.presets and "a" not in pset.presets and "b" not in pset.presets
    text = " ".join(e.message for e in pset.problems)
    assert "a -> b -> a" in text and "b -> a -> b" in text
    with pytest.raises(PresetError, match=r"b\.yaml, preset 'b', key 'extends' \(line 2\).*loops"):
        presets.resolve("b", user_dir=user_dir)


def test_extends_that_points_nowhere(user_dir):
    write(user_dir, "mine.yaml", "label: Mine\nextends: balancd\n")
    err = only_problem(presets.load_presets(user_dir))
    assert "mine.yaml, preset 'mine', key 'extends' (line 2)" in err.message
    assert "'balancd', which does not exist" in err.message
    assert "did you mean 'balanced'" in err.message
    with pytest.raises(PresetError, match="balancd"):
        presets.resolve("mine", user_dir=user_dir)


def test_extending_a_skipped_user_preset_is_reported(user_dir):
    write(user_dir, "broken.yaml", "iterations: -1\n")
    write(user_dir, "child.yaml", "extends: broken\n")
    pset = presets.load_presets(user_dir)
    assert {e.preset for e in pset.problems} == {"broken", "child"}
    with pytest.raises(PresetError, match="child.yaml.*'extends'.*skipped"):
        presets.resolve("child", user_dir=user_dir)


def test_bad_user_file_does_not_hide_the_good_ones(user_dir):
    write(user_dir, "bad.yaml", "max_size: [1,\n")
    write(user_dir, "good.yaml", "iterations: 9\n")
    write(user_dir, ".#good.yaml", "not: [a preset\n")  # an editor's lock file: ignored
    pset = presets.load_presets(user_dir)
    assert pset.presets["good"].values == {"iterations": 9}
    assert BUILT_INS <= set(pset.presets)
    assert only_problem(pset).path.name == "bad.yaml"
    assert presets.resolve("good", user_dir=user_dir).iterations == 9
    with pytest.raises(PresetError, match=r"bad\.yaml.*not valid YAML"):
        presets.resolve("bad", user_dir=user_dir)


def test_bad_user_file_with_a_builtin_name_fails_instead_of_falling_back(user_dir):
    write(user_dir, "quick.yaml", "iterations: 0\n")
    with pytest.raises(PresetError, match=r"quick\.yaml, preset 'quick', key 'iterations'"):
        presets.resolve("quick", user_dir=user_dir)
    assert presets.resolve("balanced", user_dir=user_dir).iterations > 0


def test_unknown_preset_name_suggests_a_close_one(user_dir):
    with pytest.raises(PresetError, match="no preset named 'quik'.*") as e:
        presets.resolve("quik", user_dir=user_dir)
    assert "Did you mean 'quick'" in e.value.hint


# --- one message per kind of bad file ----------------------------------------------------------

@pytest.mark.parametrize("text, key, line, words", [
    ("label: Mine\niteratons: 5\n", "iteratons", 2,
     ["is not a preset key", "did you mean 'iterations'"]),
    ("max_size: 512.5\n", "max_size", 1, ["must be a whole number", "512.5"]),
    ("label: x\n\niterations: true\n", "iterations", 3, ["must be a whole number", "true/false"]),
    ("style_weight: '1e4'\n", "style_weight", 1, ["must be a number", "'1e4'"]),
    ("learning_rate: .nan\n", "learning_rate", 1, ["finite"]),
    ("preserve_colors: 1\n", "preserve_colors", 1, ["true or false"]),
    ("label: x\nmax_size: 10\n", "max_size", 2, ["out of range", "from 64 to 8192"]),
    ("seed: -3\n", "seed", 1, ["out of range"]),
    ("optimizer: lbgfs\n", "optimizer", 1, ["adam, lbfgs", "did you mean 'lbfgs'"]),
    ("content_layers:\n  relu4_2: 1.0\n  relu4_9: 0.5\n", "content_layers", 3,
     ["unknown layer 'relu4_9'", "did you mean"]),
    ("style_layers: {pool1: 1.0}\n", "style_layers", 1, ["unknown layer 'pool1'"]),
    ("style_layers: {relu1_1: -1}\n", "style_layers", 1, ["weights are numbers >= 0"]),
    ("style_layers: [relu1_1]\n", "style_layers", 1, ["must map layer names to weights"]),
    ("levels: 2\nlevels: 3\n", "levels", 2, ["twice", "lines 1 and 2"]),
    ("label: [a]\n", "label", 1, ["must be a text"]),
])
def test_bad_value_message_names_file_preset_key_and_line(user_dir, text, key, line, words):
    write(user_dir, "mine.yaml", text)
    err = only_problem(presets.load_presets(user_dir))
    assert f"mine.yaml, preset 'mine', key '{key}' (line {line}):" in err.message
    assert (err.preset, err.key, err.line) == ("mine", key, line)
    for w in words:
        assert w in err.message + " " + err.hint, w


def test_message_uses_the_name_key_when_there_is_one(user_dir):
    write(user_dir, "file.yaml", "name: Pretty\nmax_size: 1\n")
    err = only_problem(presets.load_presets(user_dir))
    assert "file.yaml, preset 'Pretty', key 'max_size' (line 2)" in err.message


def test_not_yaml_gives_the_line(user_dir):
    write(user_dir, "broken.yaml", "label: ok\niterations: [1, 2\nmax_size: 3\n")
    err = only_problem(presets.load_presets(user_dir))
    assert "broken.yaml, preset 'broken'" in err.message and "not valid YAML" in err.message
    assert err.line is not None and 2 <= err.line <= 4
    assert f"(line {err.line})" in err.message


@pytest.mark.parametrize("text, words", [("- a\n- b\n", "a list, not a mapping"),
                                        ("", "empty, not a mapping"),
                                        ("just words\n", "a text, not a mapping")])
def test_file_that_is_not_a_mapping(user_dir, text, words):
    write(user_dir, "odd.yaml", text)
    err = only_problem(presets.load_presets(user_dir))
    assert "odd.yaml, preset 'odd': the file is " in err.message and words in err.message


def test_duplicate_names_in_two_files(user_dir):
    a = write(user_dir, "one.yaml", "name: twin\niterations: 1\n")
    b = write(user_dir, "two.yaml", "name: twin\niterations: 2\n")
    pset = presets.load_presets(user_dir)
    err = only_problem(pset)
    assert str(a) in err.message and str(b) in err.message and "'twin'" in err.message
    assert "twin" not in pset.presets
    with pytest.raises(PresetError, match="twin"):
        presets.resolve("twin", user_dir=user_dir)


def test_float_keys_take_ints_and_plain_exponents(user_dir):
    write(user_dir, "mine.yaml", "learning_rate: 1\nstyle_weight: 1e4\ntv_weight: 2.5E-3\n")
    params = presets.resolve("mine", user_dir=user_dir)
    assert (params.learning_rate, params.style_weight, params.tv_weight) == (1.0, 1e4, 2.5e-3)
    assert isinstance(params.learning_rate, float)


def test_seed_may_be_null(user_dir):
    write(user_dir, "mine.yaml", "seed: null\n")
    assert presets.resolve("mine", user_dir=user_dir).seed is None


# --- overrides ---------------------------------------------------------------------------------

def test_overrides_beat_the_preset_and_none_means_not_given(user_dir):
    quick = presets.resolve("quick", user_dir=user_dir)
    params = presets.resolve("quick", {"iterations": 5, "max_size": None, "strength": 2.5,
                                       "preserve_colors": True}, user_dir=user_dir)
    assert (params.iterations, params.max_size, params.strength, params.preserve_colors) == \
        (5, quick.max_size, 2.5, True)


@pytest.mark.parametrize("overrides, words", [({"max_size": 10}, "'max_size' is 10"),
                                              ({"strength": "x"}, "must be a number"),
                                              ({"iteratons": 3}, "did you mean 'iterations'")])
def test_bad_override_is_an_invalid_input(user_dir, overrides, words):
    with pytest.raises(InvalidInput, match=words):
        presets.resolve("balanced", overrides, user_dir=user_dir)


# --- the command, with torch unimportable ------------------------------------------------------

def run_presets(tmp_path: Path, *args: str, user_dir: Path) -> subprocess.CompletedProcess:
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True, exist_ok=True)
    (blocker / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is blocked: the presets command must not import it')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]),
           "NST_PRESETS_DIR": str(user_dir), "NST_CONFIG_DIR": str(tmp_path / "config")}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "torch is blocked" in probe.stderr  # the blocker works
    return subprocess.run([sys.executable, "-m", "nst_engine", "presets", *args], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_command_lists_without_torch(tmp_path, user_dir):
    write(user_dir, "mine.yaml", "label: Mine\nextends: quick\n")
    write(user_dir, "bad.yaml", "iterations: many\n")
    r = run_presets(tmp_path, user_dir=user_dir)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert BUILT_INS <= set(lines) and "mine" in lines
    assert "user" in lines["mine"] and "built-in" in lines["quick"]
    assert "bad.yaml" in r.stderr and "'iterations'" in r.stderr


def test_command_json_without_torch(tmp_path, user_dir):
    write(user_dir, "bad.yaml", "iterations: many\n")
    r = run_presets(tmp_path, "--json", user_dir=user_dir)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["default"] == DEFAULT_PRESET
    names = [p["name"] for p in data["presets"]]
    assert names == sorted(names) and BUILT_INS <= set(names)
    assert set(data["presets"][0]) == {"name", "label", "description", "origin", "source"}
    [problem] = data["problems"]
    assert problem["file"].endswith("bad.yaml") and problem["key"] == "iterations"
    assert problem["line"] == 1 and problem["preset"] == "bad"


def test_command_show_without_torch(tmp_path, user_dir):
    r = run_presets(tmp_path, "--show", "keep-colors", user_dir=user_dir)
    assert r.returncode == 0, r.stderr
    assert "preserve_colors: true  # from keep-colors" in r.stdout
    assert "balanced -> keep-colors" in r.stdout
    r = run_presets(tmp_path, "--show", "keep-colors", "--json", user_dir=user_dir)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    expected = presets.resolve("keep-colors", user_dir=user_dir)
    assert data["extends"] == ["balanced"] and data["origin"] == "built-in"
    assert data["values"]["preserve_colors"] is True
    assert StyleParams(**data["values"]) == expected


def test_command_show_unknown_name_is_a_clear_error(tmp_path, user_dir):
    r = run_presets(tmp_path, "--show", "nosuch", user_dir=user_dir)
    assert r.returncode == 2
    assert "no preset named 'nosuch'" in r.stderr and "Traceback" not in r.stderr
