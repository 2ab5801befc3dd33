"""ElasticViT's 10-tuple encoding, the released models as named configs, and the one config reader."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lutnas.errors import ConfigError
from lutnas.space import SearchSpace, SubnetConfig, read_config, released_config, released_models

SHARED_RELEASED = Path(__file__).resolve().parents[3] / "shared" / "spaces" / "elasticvit-released.json"


def test_released_models_ship_in_the_package_with_their_source() -> None:
    from importlib import resources

    data = json.loads(resources.files("lutnas.space.builtin").joinpath(
        "elasticvit-released.json").read_text())
    assert "MIT" in data["source"] and "microsoft/Moonlit" in data["source"]
    assert "MIT" in data["license"]
    assert list(released_models()) == ["elastic_T1", "elastic_T2", "elastic_S1", "elastic_S2",
                                       "elastic_M", "elastic_L1", "elastic_L1.5", "elastic_L2",
                                       "elastic_L3"]
    if SHARED_RELEASED.is_file():
        assert json.loads(SHARED_RELEASED.read_text())["models"] == data["models"]


@pytest.mark.parametrize("name", list(released_models()))
def test_released_models_round_trip_exactly(name: str, elasticvit_space: SearchSpace) -> None:
    config = released_config(name, elasticvit_space)
    assert config.to_elasticvit(elasticvit_space) == tuple(released_models()[name])
    again = SubnetConfig.from_elasticvit(config.to_elasticvit(elasticvit_space), elasticvit_space)
    assert again == config


def test_t1_decodes_stage_by_stage(elasticvit_space: SearchSpace) -> None:
    config = released_config("elasticvit:T1", elasticvit_space)
    assert config.resolution == 128
    assert (config.stem.width, config.stem.depth, config.stem.kernel) == (16, 1, 3)
    assert [(s.depth, s.width, s.expand, s.kernel) for s in config.stages[:2]] == \
        [(2, 24, 3, 3), (3, 32, 3, 3)]
    assert [(s.depth, s.width, s.mlp_ratio, s.v_scale) for s in config.stages[2:]] == \
        [(1, 64, 2, 2), (1, 96, 2, 2), (1, 176, 3, 2), (1, 272, 4, 2)]


@pytest.mark.parametrize("space_name", ["elasticvit", "tiny"])
def test_sampled_configs_round_trip(space_name: str) -> None:
    space = SearchSpace.load(space_name)
    rng = random.Random(0)
    for _ in range(50):
        config = space.sample(rng)
        encoding = config.to_elasticvit(space)
        assert json.loads(json.dumps(encoding)) == list(encoding)
        assert SubnetConfig.from_elasticvit(json.loads(json.dumps(encoding)), space) == config


def _t1() -> list:
    return copy.deepcopy(released_models()["elastic_T1"])


def _edit(index: int, position: int, value: object, *more: tuple[int, int, object]) -> list:
    encoding = _t1()
    for i, p, v in ((index, position, value), *more):
        encoding[i][p] = v
    return encoding


@pytest.mark.parametrize("encoding, message", [
    (_t1()[:9], r"a list of 10 elements .* got 9 elements"),
    ("128", r"got str"),
    (_edit(3, 2, 4), r"element 4 \(conv expand ratios\): stage1 layers have \[3, 4\]; lutnas takes "
                     r"one value per stage"),
    (_edit(3, 0, 3), r"element 4 \(conv expand ratios\): stem layers have ratio 3"),
    (_edit(4, 5, 5), r"element 5 \(conv kernel sizes\): stage2 layers have \[3, 3, 5\]"),
    (_edit(6, 0, 5), r"element 7 \(num heads\): stage3 has 5 heads; its width 64 / head dim 16 "
                     r"gives 4"),
    (_edit(7, 1, 7), r"element 8 \(window sizes\): stage4 has 7; lutnas supports only 1"),
    (_edit(8, 3, 0.5), r"element 9 \(qk scales\): 0.5 is not an integer"),
    (_edit(8, 3, 2), r"element 9 \(qk scales\): stage6 has 2"),
    (_edit(1, 3, 40, (6, 0, 2)), r"does not fit space 'elasticvit': stage3 \(transformer\): width=40 is not "
                      r"one of \[48, 64, 80, 96\]"),
    (_edit(1, 3, 96, (6, 0, 6), (1, 4, 80), (6, 1, 5)),
     r"does not fit space 'elasticvit': space 'elasticvit' has monotone_widths .*: stage4 width=80 "
     r"< stage3 width=96; widen the later stage"),
    (_edit(2, 1, 3), r"element 4 \(conv expand ratios\) has 6 values; the depths \(element 3\) "
                     r"give 7 MBConv layers"),
    (_edit(2, 6, 2), r"element 6 \(mlp ratios\) has 4 values; the depths \(element 3\) give 5"),
    (_edit(1, 0, "x"), r"element 2 \(channels\): 'x' is not an integer"),
])
def test_encoding_errors_name_the_element(encoding: object, message: str,
                                          elasticvit_space: SearchSpace) -> None:
    with pytest.raises(ConfigError, match=message):
        SubnetConfig.from_elasticvit(encoding, elasticvit_space)


def test_to_elasticvit_refuses_a_stage_type_it_cannot_express(elasticvit_space) -> None:
    from dataclasses import replace

    odd = replace(elasticvit_space, stages=(replace(elasticvit_space.stages[0], type="ghost"),
                                            *elasticvit_space.stages[1:]))
    with pytest.raises(ConfigError, match="'ghost' stage, which ElasticViT's encoding cannot"):
        SubnetConfig.from_elasticvit(_t1(), odd)


# ------------------------------------------------------------------------------ the one reader
def test_read_config_accepts_every_form(tmp_path: Path, elasticvit_space: SearchSpace) -> None:
    space = elasticvit_space
    s1 = released_config("elastic_S1", space)
    as_json, as_tuple = s1.to_json(), json.dumps(s1.to_elasticvit(space))
    (tmp_path / "cfg.json").write_text(as_json)
    (tmp_path / "tuple.json").write_text(as_tuple)
    best = {"config": s1.to_dict(), "predicted_ms": 12.5, "elasticvit": s1.to_elasticvit(space)}
    (tmp_path / "best.json").write_text(json.dumps(best))
    forms = [as_json, as_tuple, str(tmp_path / "cfg.json"), str(tmp_path / "tuple.json"),
             str(tmp_path / "best.json"), json.dumps(best), json.dumps({"config": s1.to_elasticvit(space)}),
             "elasticvit:S1", "elastic_S1", "elasticvit:s1", "elasticvit:elastic_S1", f"  {as_json}\n"]
    for form in forms:
        assert read_config(space, form) == s1, form
    assert read_config(space, "smallest") == space.smallest()
    assert read_config(space, "largest") == space.largest()
    assert read_config(space, "elasticvit:L1.5") == released_config("elastic_L1.5", space)


def test_a_file_wins_over_a_released_name(tmp_path: Path, elasticvit_space, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("elastic_T1").write_text(released_config("elastic_L3", elasticvit_space).to_json())
    assert read_config(elasticvit_space, "elastic_T1") == released_config("L3", elasticvit_space)


@pytest.mark.parametrize("source, message", [
    ("elasticvit:S9", r"no released ElasticViT model 'elasticvit:S9'; known: elasticvit:\{T1, T2, "
                      r"S1, S2, M, L1, L1.5, L2, L3\}"),
    ("nothing.json", r"config file 'nothing.json' does not exist; check the path, or give the "
                     r"config itself \(accepted: a SubnetConfig as JSON text or a .json file; a "
                     r"JSON object holding one under \"config\""),
    ("nothing", r"neither a JSON file nor JSON text nor a known name; accepted: a SubnetConfig "
                r"as JSON text or a .json file; a JSON object holding one under \"config\""),
    ('{"resolution": 128', r"not valid JSON .*accepted: .*10-tuple"),
    ("42x", r"accepted: .*smallest; largest; or a released ElasticViT model"),
    ('"just a string"', r"neither a JSON file"),
])
def test_read_config_errors_list_the_accepted_forms(source: str, message: str,
                                                    elasticvit_space: SearchSpace) -> None:
    with pytest.raises(ConfigError, match=message):
        read_config(elasticvit_space, source)


def test_released_model_in_another_space_says_which_space(tiny_space: SearchSpace) -> None:
    with pytest.raises(ConfigError, match=r"released model elastic_S1 does not fit space 'tiny' "
                                          r"\(use --space elasticvit\)"):
        read_config(tiny_space, "elasticvit:S1")


def test_cli_reads_named_and_tuple_configs(elasticvit_space: SearchSpace) -> None:
    """`lutnas space blocks --config` goes through the CLI's one reader."""
    def blocks(config: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lutnas", "space", "blocks", "elasticvit",
                               "--config", config], capture_output=True, text=True, timeout=120)

    named = blocks("elasticvit:T1")
    assert named.returncode == 0, named.stderr
    assert "total: 64.90 MMACs" in named.stdout
    as_tuple = blocks(json.dumps(released_models()["elastic_T1"]))
    assert as_tuple.returncode == 0 and "total: 64.90 MMACs" in as_tuple.stdout
    bad = blocks("elasticvit:Z")
    assert bad.returncode == 2 and "no released ElasticViT model" in bad.stderr
    sample = subprocess.run([sys.executable, "-m", "lutnas", "space", "sample", "elasticvit",
                             "--elasticvit", "-n", "3"], capture_output=True, text=True, timeout=120)
    for line in sample.stdout.splitlines():
        config = SubnetConfig.from_elasticvit(json.loads(line), elasticvit_space)
        assert elasticvit_space.shrinking_widths(config) == []
