"""ExecuTorch export: a block or subnet module -> `.pte`, lowered to XNNPACK and checked against PyTorch.

`torch.export` -> alias removal -> `to_edge_transform_and_lower` with the XNNPACK partitioner ->
`to_executorch`. Alias removal matters: lutnas's blocks slice their weights (`conv.weight[:cout,
:cin]`, `bias[:cout]`, the shared functional code of the elastic supernet), and a full-range slice
exports as an `alias` or a `slice` of the parameter; XNNPACK only takes a parameter as a static
weight, so with them the convolutions and linear layers stay on ExecuTorch's portable kernels (a
128 px stem conv: 17 ms instead of 0.12 ms, measured). Dropping those no-op nodes is enough. ExecuTorch's own
`constant_prop_pass` would also fold them, and lowers attention whole, but it is wrong in
composition (measured, executorch 1.5.1: `tiny`'s MBConv followed by an attention block is off by
0.51 at output scale 0.39, every block alone is right), so it is not used. What stays outside the
delegate (`undelegated_ops`: attention's relative-position index ops, layer norms) runs on the
portable kernels, as it would in a user's app lowered the same way.

The written file is loaded back with ExecuTorch's own runtime (`executorch.runtime`) and run on the
same input as PyTorch; the caller compares the outputs with the fp32 tolerance of the other formats.
int8 is not offered: `format_for` in export.py refuses `--precision int8 --runtime executorch`.
Measured (executorch 1.5.1, torchao 0.18): the XNNPACK quantizer's PT2E flow (per-channel symmetric,
after the same no-op removal, which its weight annotation also needs) gives conv, MBConv, FFN and
head blocks within cosine 0.9996 of PyTorch, fully delegated, but fails on attention
(`IndexError: tensors used as indices must be long, int, byte or bool tensors` in the
relative-position index), so no `elasticvit` subnet would quantize; wiring it is left for later.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "pte"
EXTENSION = ".pte"
# Graph nodes that are not computation: what may remain outside the delegate in a fully lowered file.
_PLUMBING = ("executorch_call_delegate", "getitem", "alloc", "view_copy", "_to_dim_order_copy")


def version() -> str:
    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        return "absent"


def cache_identity() -> dict[str, str]:
    """What a .pte depends on beyond torch and lutnas (part of its cache key)."""
    return {"executorch": version(), "partitioner": "xnnpack", "lowering": "without-aliases"}


def lower(module: nn.Module, example: torch.Tensor) -> Any:
    """The edge program of `module` lowered to XNNPACK (an `EdgeProgramManager`).

    Raises whatever torch.export or the lowering raises; the caller names the block.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        program = torch.export.export(module.eval(), (example,)).run_decompositions({})
    return to_edge_transform_and_lower(_without_aliases(program), partitioner=[XnnpackPartitioner()])


def _is_no_op(node: Any) -> bool:
    """An `aten.alias`, or an `aten.slice` that keeps its whole dimension (`bias[:cout]` at full width)."""
    if node.op != "call_function":
        return False
    if node.target is torch.ops.aten.alias.default:
        return True
    if node.target is not torch.ops.aten.slice.Tensor:
        return False
    source = node.args[0].meta.get("val")
    dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1:])[:4]
    if source is None or not isinstance(end, (int, type(None))):
        return False
    return (start in (0, None)) and step == 1 and (end is None or end >= int(source.shape[dim]))


def _without_aliases(program: Any) -> Any:
    """`program` with every no-op alias or slice replaced by its input (in place; returned)."""
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if _is_no_op(node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def undelegated_ops(edge: Any) -> list[str]:
    """Names of the compute ops the partitioner left outside XNNPACK (empty when fully lowered)."""
    graph = edge.exported_program().graph_module.graph
    names = [getattr(node.target, "__name__", str(node.target)) for node in graph.nodes
             if node.op == "call_function"]
    return sorted({n for n in names if not any(p in n for p in _PLUMBING)})


def run_pte(path: Path | str, inputs: list[torch.Tensor]) -> np.ndarray:
    """The first output of the .pte at `path` on `inputs`, run by ExecuTorch's Python runtime."""
    from executorch.runtime import Runtime, Verification

    program = Runtime.get().load_program(str(path), verification=Verification.Minimal)
    outputs = program.load_method("forward").execute(inputs)
    return outputs[0].detach().numpy()


def write_pte(module: nn.Module, example: torch.Tensor, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write `module` as a .pte at `out`; returns (ExecuTorch's output, PyTorch's) on `example`."""
    edge = lower(module, example)
    out.write_bytes(edge.to_executorch().buffer)
    with torch.no_grad():
        reference = module(example).numpy()
    return run_pte(out, [example]), reference
