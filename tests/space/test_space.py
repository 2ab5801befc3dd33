import json
import random

import pytest

from lutnas.errors import ConfigError, SpaceFileError, UnknownSpaceError
from lutnas.space import SearchSpace, SubnetConfig


def test_elasticvit_matches_the_paper_space(elasticvit_space: SearchSpace) -> None:
    space = elasticvit_space
    assert space.resolutions == (128, 160, 176, 192, 224, 256)
    assert [s.type for s in space.stages] == ["mbconv"] * 2 + ["transformer"] * 4
    assert [s.stride for s in space.stages] == [2, 2, 2, 1, 2, 2]
    assert space.stages[3].widths == tuple(range(80, 161, 16))
    assert space.stages[5].widths == tuple(range(160, 321, 16))
    assert not space.stages[0].se and space.stages[1].se
    # The paper's space spans roughly 37M to 3G MACs.
    assert 30e6 < space.complexity(space.smallest()).macs < 50e6
    assert 2.5e9 < space.complexity(space.largest()).macs < 4e9


def test_unique_blocks_cover_every_sampled_subnet(tiny_space: SearchSpace) -> None:
    keys = {b.key for b in tiny_space.unique_blocks()}
    rng = random.Random(3)
    for _ in range(200):
        config = tiny_space.sample(rng)
        assert {b.key for b in tiny_space.blocks_of(config)} <= keys


def test_unique_blocks_elasticvit_cover_samples(elasticvit_space: SearchSpace) -> None:
    keys = {b.key for b in elasticvit_space.unique_blocks([160])}
    rng = random.Random(0)
    for _ in range(50):
        config = elasticvit_space.sample(rng)
        if config.resolution == 160:
            assert {b.key for b in elasticvit_space.blocks_of(config)} <= keys


def test_config_json_round_trip(tiny_space: SearchSpace) -> None:
    rng = random.Random(1)
    for _ in range(20):
        config = tiny_space.sample(rng)
        again = tiny_space.config_from_json(config.to_json())
        assert again == config
        assert json.loads(again.to_json()) == json.loads(config.to_json())


def test_validation_names_stage_field_value_and_allowed(tiny_space: SearchSpace) -> None:
    data = tiny_space.largest().to_dict()
    data["stages"][2]["width"] = 40
    with pytest.raises(ConfigError, match=r"stage3 \(transformer\): width=40 is not one of \[32, 48\]"):
        tiny_space.config_from_json(json.dumps(data))
    data = tiny_space.largest().to_dict()
    data["stages"][0]["mlp_ratio"] = 2
    with pytest.raises(ConfigError, match="do not apply"):
        tiny_space.config_from_json(json.dumps(data))
    with pytest.raises(ConfigError, match="not valid JSON"):
        SubnetConfig.from_json("{resolution: 32")
    with pytest.raises(ConfigError, match="missing required key 'stem'"):
        SubnetConfig.from_json('{"resolution": 32}')


def test_mutation_and_crossover_stay_in_space(tiny_space: SearchSpace) -> None:
    rng = random.Random(2)
    a, b = tiny_space.sample(rng), tiny_space.sample(rng)
    changed = 0
    for _ in range(100):
        child = tiny_space.crossover(a, b, rng)
        tiny_space.validate(child)
        mutant = tiny_space.mutate(child, rng, prob=0.3)
        tiny_space.validate(mutant)
        changed += mutant != child
    assert changed > 50
    assert tiny_space.mutate(a, rng, prob=0.0) == a


def test_unknown_space_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(UnknownSpaceError, match="elasticvit, tiny"):
        SearchSpace.load("mobilenet")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [\n")
    with pytest.raises(SpaceFileError, match="not valid YAML"):
        SearchSpace.load(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: x\nresolutions: [32]\nstages: []\n")
    with pytest.raises(SpaceFileError, match="missing required key 'stem'"):
        SearchSpace.load(missing)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "resolutions: [32]\nstem: {widths: [8]}\n"
        "stages: [{type: transformer, depths: [1], widths: [20], mlp_ratios: [2], v_scales: [2]}]\n"
    )
    with pytest.raises(SpaceFileError, match="not multiples of head_dim"):
        SearchSpace.load(wrong)


def test_user_space_file_loads(tmp_path, tiny_space: SearchSpace) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nnum_classes: 5\nresolutions: [32]\nstem: {widths: [8]}\n"
        "stages:\n  - {type: mbconv, depths: [1, 2], widths: [8, 16], expands: [2], kernels: [3],"
        " stride: 2}\n"
        "head: {hidden: 32}\n"
    )
    space = SearchSpace.load(path)
    assert space.num_subnets() == 4
    assert space.blocks_of(space.largest())[-1].key.endswith("ncls=5,act=hswish")
