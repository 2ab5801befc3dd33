"""Bad input to the space loader and the config reader: one line naming the key and the fix.

Every key of a space YAML and of a subnet config JSON is read by a typed parser
(`lutnas.space.fields`), so a wrong type, an out-of-range value or a misspelt key is refused with
the key path, what is allowed and what arrived; never a traceback, never a key silently ignored.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from lutnas.cli import main
from lutnas.errors import ConfigError, SpaceFileError, UnknownSpaceError
from lutnas.space import (
    BUILTIN_SPACES,
    SearchSpace,
    StageType,
    SubnetConfig,
    read_config,
    register_stage_type,
    unregister_stage_type,
)
from lutnas.space.stages import MBCONV, get_stage_type

TINY = resources.files("lutnas.space.builtin").joinpath("tiny.yaml").read_text()
STAGE1 = "{name: stage1, type: mbconv, depths: [1, 2], widths: [16, 24], expands: [3, 6],"


def tiny_with(old: str, new: str) -> str:
    """tiny.yaml with one piece of text replaced (the piece must be there)."""
    assert old in TINY, old
    return TINY.replace(old, new, 1)


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_builtin_spaces_still_load(name: str) -> None:
    space = SearchSpace.load(name)
    text = resources.files("lutnas.space.builtin").joinpath(f"{name}.yaml").read_text()
    assert SearchSpace.from_yaml(text, source=name) == space


@pytest.mark.parametrize("old, new, message", [
    # 1. a string where an integer belongs
    ("  kernel: 3\n", "  kernel: three\n",
     r"my\.yaml: stem\.kernel must be an integer, got the string 'three'"),
    ("num_classes: 10", "num_classes: true", r"num_classes must be an integer, got the boolean true"),
    ("[32, 48]", "[32, '48']", r"resolutions must be a list of positive integers; item 2 is the string '48'"),
    # 2. values range-checked
    ("head_dim: 16, stride: 1", "head_dim: 0, stride: 1",
     r"stage 3\.head_dim must be a positive integer, got 0"),
    ("hidden: 128", "hidden: -1", r"head\.hidden must be a positive integer, got -1"),
    ("kernels: [3, 5]", "kernels: [3, 4]",
     r"stage 2\.kernels must be a list of odd positive integers; item 2"),
    ("stride: 2, se: false", "stride: 3, se: false",
     r"stage 1\.stride must be one of 1, 2, got the integer 3"),
    # 3. unknown keys at every level, with the close match and the allowed keys
    ("hidden: 128", "hiden: 128",
     r"unknown key 'hiden' in head; did you mean 'hidden'\? allowed keys: expand, hidden$"),
    ("activation: hswish", "activaton: relu",
     r"unknown key 'activaton' at the top level; did you mean 'activation'\? allowed keys: name, "),
    ("  kernel: 3\n", "  kernal: 3\n", r"unknown key 'kernal' in stem; did you mean 'kernel'\?"),
    ("{name: stage1, type: mbconv", "{name: stage1, tpye: mbconv",
     r"unknown key 'tpye' in stage 1; did you mean 'type'\?"),
    ("mlp_ratios: [2, 3],", "mlp_ratios: [2, 3], expands: [2],",
     r"unknown key 'expands' in stage 3 \(a transformer stage\); allowed keys: name, type, stride, depths"),
    ("downsample: {expand: 6", "downsample: {expnad: 6",
     r"unknown key 'expnad' in downsample; did you mean 'expand'"),
    # 4. booleans are real booleans
    ("se: false", "se: maybe", r"stage 1\.se must be true or false, got the string 'maybe'"),
    ("se: false", 'se: "false"', r"stage 1\.se must be true or false, got the string 'false'"),
    ("se: false", "se: 0", r"stage 1\.se must be true or false, got the integer 0"),
    ("kernel: 3, se: true}", "kernel: 3, se: yes please}", r"downsample\.se must be true or false"),
    # 5. a list where a list is required
    (STAGE1, STAGE1.replace("depths: [1, 2]", "depths: 2"),
     r"stage 1\.depths must be a list of positive integers, got the integer 2 \(write \[2\]\)"),
    ("widths: [8, 16]", "widths: []",
     r"stem\.widths must be a non-empty list of positive integers, got the list \[\]"),
    # strings and mappings
    ("name: tiny", "name: 2024",
     r"name must be a non-empty string, got the integer 2024 \(put it in quotes\)"),
    ("activation: hswish", "activation: swish", r"activation must be one of hswish, .*did you mean 'hswish'"),
    ("{name: stage1, type: mbconv", "{name: stage1, type: [mbconv]",
     r"stage 1\.type must be one of mbconv, transformer"),
    ("head: {expand: 6, hidden: 128}", "head: 5",
     r"head must be a mapping of keys \(expand, hidden\), got the integer 5"),
    ("head: {expand: 6, hidden: 128}", "head: {expand: 6, hidden: 128}\nhead: {hidden: 64}",
     r"not valid YAML \(key 'head' is given twice in one mapping at line \d+, column 1\)"),
])
def test_bad_space_yaml_is_one_line_naming_the_key(old: str, new: str, message: str) -> None:
    with pytest.raises(SpaceFileError, match=message) as refused:
        SearchSpace.from_yaml(tiny_with(old, new), source="my.yaml")
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("my.yaml: ")


def test_missing_and_empty_documents() -> None:
    with pytest.raises(SpaceFileError, match=r"missing required key 'widths' in stem; add it"):
        SearchSpace.from_yaml(tiny_with("  widths: [8, 16]\n", ""), source="my.yaml")
    with pytest.raises(SpaceFileError, match=r"missing required key 'type' in stage 1"):
        SearchSpace.from_yaml(tiny_with("{name: stage1, type: mbconv,", "{name: stage1,"))
    with pytest.raises(SpaceFileError, match=r"the top level must be a mapping .*the document is empty"):
        SearchSpace.from_yaml("", source="my.yaml")
    with pytest.raises(SpaceFileError, match=r"stages must be a non-empty list of mappings"):
        SearchSpace.from_yaml(TINY.split("stages:")[0] + "stages: []\n")


def test_a_yaml_merge_key_may_still_repeat_what_it_merges() -> None:
    text = tiny_with("head: {expand: 6, hidden: 128}", "base: &b {expand: 6, hidden: 64}\n"
                     "head: {<<: *b, hidden: 128}")
    with pytest.raises(SpaceFileError, match="unknown key 'base' at the top level"):
        SearchSpace.from_yaml(text)  # the anchor's holder is itself an unknown key ...
    merged = SearchSpace.from_yaml(tiny_with("head: {expand: 6, hidden: 128}",
                                             "head: {<<: {expand: 6, hidden: 64}, hidden: 128}"))
    assert merged.head_hidden == 128  # ... but a merge overridden in place is no duplicate


def test_a_plugin_parser_error_names_the_stage_and_key() -> None:
    """A stage type registered with a plain parser (`int`) gets its ValueError reported as one line."""
    mbconv = get_stage_type(MBCONV)
    register_stage_type(StageType("plain", mbconv.fields, mbconv.blocks, options=(("se", int, 0),)))
    try:
        text = tiny_with("type: mbconv, depths: [1, 2], widths: [16, 24], expands: [3, 6],\n"
                         "     kernels: [3], stride: 2, se: false",
                         "type: plain, depths: [1, 2], widths: [16, 24], expands: [3, 6],\n"
                         "     kernels: [3], stride: 2, se: maybe")
        with pytest.raises(SpaceFileError, match=r"stage 1\.se: the string 'maybe' is not accepted "
                                                 r"\(invalid literal for int\(\)"):
            SearchSpace.from_yaml(text)
    finally:
        unregister_stage_type("plain")


def test_load_says_a_path_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(UnknownSpaceError, match=r"space file '.*nope\.yaml' does not exist; check the path"):
        SearchSpace.load(tmp_path / "nope.yaml")
    with pytest.raises(UnknownSpaceError, match=r"is a directory; give the path of a space YAML file"):
        SearchSpace.load(tmp_path)
    with pytest.raises(UnknownSpaceError, match=r"unknown search space 'mobilenet': use one of"):
        SearchSpace.load("mobilenet")
    binary = tmp_path / "space.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(SpaceFileError, match=r"cannot be read as a text file"):
        SearchSpace.load(binary)


# ------------------------------------------------------------------------------ subnet configs
def config_with(tiny_space: SearchSpace, change) -> dict:
    data = tiny_space.smallest().to_dict()
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    # 6. unknown keys at every level
    (lambda d: d.update(extra_key=1),
     r"^subnet config: unknown key 'extra_key' at the top level; allowed keys: resolution, stem, stages$"),
    (lambda d: d["stem"].update(kernal=3), r"unknown key 'kernal' in stem; did you mean 'kernel'\?"),
    # 7. a stage-key typo names the stage, the key, the close match and the allowed keys
    (lambda d: d["stages"][0].update(widht=d["stages"][0].pop("width")),
     r"unknown key 'widht' in stage 1; did you mean 'width'\? allowed keys: depth, width, expand, "
     r"kernel, mlp_ratio, v_scale$"),
    # 8. not an integer: say so
    (lambda d: d["stages"][0].update(width="16"), r"stage 1\.width must be an integer, got the string '16'"),
    (lambda d: d["stem"].update(width=True), r"stem\.width must be an integer, got the boolean true"),
    (lambda d: d["stages"][1].update(expand=4.0), r"stage 2\.expand must be an integer, got the number 4\.0"),
    (lambda d: d.update(resolution="32"), r"resolution must be an integer, got the string '32'"),
    (lambda d: d["stages"][0].update(expand=-3), r"stage 1\.expand must be an integer >= 0, got -3"),
    (lambda d: d["stages"][0].update(depth=0), r"stage 1\.depth must be a positive integer, got 0"),
    (lambda d: d.update(stem=[16, 1, 3]), r"stem must be a mapping of keys \(width, depth, kernel\)"),
    (lambda d: d.update(stages={"width": 16}), r"stages must be a non-empty list of objects"),
    (lambda d: d["stages"].__setitem__(0, 16), r"stage 1 must be a mapping of keys \(depth, width"),
])
def test_bad_subnet_config_is_one_line_naming_the_key(tiny_space: SearchSpace, change, message: str) -> None:
    data = config_with(tiny_space, change)
    with pytest.raises(ConfigError, match=message) as refused:
        SubnetConfig.from_dict(data)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=message.removeprefix("^")):
        read_config(tiny_space, json.dumps(data))


def test_unknown_keys_are_reported_before_missing_ones(tiny_space: SearchSpace) -> None:
    # 9. the typo first, with the key it hides
    with pytest.raises(ConfigError, match=r"unknown key 'resolutionn' at the top level; "
                                          r"did you mean 'resolution'\?"):
        SubnetConfig.from_json('{"resolutionn": 64}')
    data = config_with(tiny_space, lambda d: d.pop("stem"))
    data["stages"][0]["widht"] = data["stages"][0].pop("width")
    with pytest.raises(ConfigError, match=r"unknown key 'widht' in stage 1"):
        SubnetConfig.from_dict(data)
    with pytest.raises(ConfigError, match=r"missing required key 'stem'; add it \(allowed keys: "
                                          r"resolution, stem, stages\)"):
        SubnetConfig.from_dict(config_with(tiny_space, lambda d: d.pop("stem")))
    with pytest.raises(ConfigError, match=r"missing required key 'width' in stage 2"):
        SubnetConfig.from_dict(config_with(tiny_space, lambda d: d["stages"][1].pop("width")))


def test_a_key_given_twice_is_refused(tiny_space: SearchSpace) -> None:
    with pytest.raises(ConfigError, match=r"key 'resolution' is given twice in one JSON object"):
        read_config(tiny_space, '{"resolution": 32, "resolution": 48, "stem": {}, "stages": []}')


def test_numpy_integers_and_zero_fields_still_read(tiny_space: SearchSpace) -> None:
    config = tiny_space.largest()
    data = config.to_dict()
    data["resolution"] = np.int64(data["resolution"])
    data["stages"][2]["expand"] = 0  # a field that does not apply may be written as 0
    assert tiny_space.validate(SubnetConfig.from_dict(data)) == config


def test_a_missing_config_file_is_reported_as_such(tmp_path: Path, tiny_space: SearchSpace) -> None:
    # 10. a path-like name that is no file
    for name in ("/tmp/bad/missing.json", "missing.json", str(tmp_path / "cfg")):
        with pytest.raises(ConfigError, match=rf"config file '{re.escape(name)}' does not exist"):
            read_config(tiny_space, name)
    with pytest.raises(ConfigError, match=r"is a directory, not a file"):
        read_config(tiny_space, str(tmp_path))
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config_with(tiny_space, lambda d: d.update(extra_key=1))))
    with pytest.raises(ConfigError, match=rf"^config file '{re.escape(str(path))}': unknown key 'extra_key'"):
        read_config(tiny_space, str(path))


# ------------------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize("old, new, needle", [
    ("  kernel: 3\n", "  kernel: three\n", "stem.kernel must be an integer, got the string 'three'"),
    ("head_dim: 16, stride: 1", "head_dim: 0, stride: 1", "stage 3.head_dim must be a positive integer"),
    ("hidden: 128", "hiden: 128", "unknown key 'hiden' in head; did you mean 'hidden'?"),
])
def test_cli_space_show_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              old: str, new: str, needle: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(tiny_with(old, new))
    assert main(["space", "show", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.parametrize("config, needle", [
    ('{"resolutionn": 64}', "did you mean 'resolution'?"),
    ("/tmp/bad/missing.json", "config file '/tmp/bad/missing.json' does not exist"),
    ('{"resolution": 32, "stem": {"width": 8, "depth": 1, "kernel": 3}, "stages": [{"depth": 1, '
     '"width": "16", "expand": 3, "kernel": 3}]}', "stage 1.width must be an integer, got the string '16'"),
])
def test_cli_config_exits_2_with_one_line(capsys: pytest.CaptureFixture, config: str, needle: str) -> None:
    assert main(["space", "blocks", "tiny", "--config", config]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_a_checkpoint_whose_embedded_space_no_longer_reads_names_its_json() -> None:
    from lutnas.supernet.checkpoint import space_from_record

    record = {"yaml": tiny_with("", "legacy_option: 3\n"), "path": "gone/my.yaml"}
    with pytest.raises(SpaceFileError, match=r"legacy_option.*embedded in run/checkpoint\.json: "
                                             r"correct its \"space\" entry there, or retrain"):
        space_from_record(record, "run/checkpoint.json")
