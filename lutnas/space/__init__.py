"""The space vocabulary, at the ground floor of lutnas (imports no torch).

`BlockSpec` and the `BlockKind` registry, stage types, `SearchSpace`, `SubnetConfig` (with
ElasticViT's 10-tuple encoding), `blocks_of`, the analytic complexity (MACs, params, bytes), and the
one reader of configs (`read_config`, with ElasticViT's released models). Everything else speaks in
these terms.
"""

from lutnas.space.blockspec import BlockSpec, as_specs
from lutnas.space.builtin_kinds import BLOCKS_REVISION, register_builtin_kinds
from lutnas.space.complexity import Complexity, Tally, block_complexity, total_complexity
from lutnas.space.config import ELASTICVIT_ELEMENTS
from lutnas.space.config_sources import read_config, released_config, released_models
from lutnas.space.keys import subnet_key
from lutnas.space.kinds import BlockKind, all_kinds, get_kind, kind_fields, register_kind, unregister_kind
from lutnas.space.searchspace import (
    BUILTIN_SPACES,
    STEM_FIELDS,
    SearchSpace,
    Slot,
    StageChoice,
    StageSpace,
    StemChoice,
    StemSpace,
    SubnetConfig,
)
from lutnas.space.stages import (
    MBCONV,
    TRANSFORMER,
    StageType,
    get_stage_type,
    register_builtin_stage_types,
    register_stage_type,
    unregister_stage_type,
)
from lutnas.space.vocabulary import ACTIVATIONS, STRING_FIELDS, conv_out, se_channels

register_builtin_kinds()
register_builtin_stage_types()

__all__ = [
    "ACTIVATIONS", "BLOCKS_REVISION", "BUILTIN_SPACES", "ELASTICVIT_ELEMENTS", "MBCONV",
    "STEM_FIELDS", "STRING_FIELDS", "TRANSFORMER",
    "BlockKind", "BlockSpec", "Complexity", "SearchSpace", "Slot", "StageChoice", "StageSpace",
    "StageType", "StemChoice", "StemSpace", "SubnetConfig", "Tally", "all_kinds", "as_specs",
    "block_complexity", "conv_out", "get_kind", "get_stage_type", "kind_fields", "read_config",
    "register_kind", "register_stage_type", "released_config", "released_models", "se_channels",
    "subnet_key", "total_complexity", "unregister_kind", "unregister_stage_type",
]
