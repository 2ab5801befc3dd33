"""Assemble a whole subnet's .tflite from its blocks' files instead of converting it again.

A subnet is the composition of its blocks (export.build_subnet), and every block of a subnet that
lutnas calibrates or evaluates has already been exported, converted and checked. Converting the
whole subnet again costs 45-80 s at 128 px here (litert-torch, one warm worker: its per-op lowering
repeats for every op of the model); chaining the block files takes about a second.

Chaining alone is not what the converter makes of the whole model: a block exported on its own has
NHWC input and output, so a transformer block ends `... -> TRANSPOSE -> RESHAPE -> TRANSPOSE(NCHW
->NHWC)` and the next one starts with the inverse, where the whole-model conversion keeps the tokens
as they are. Measured on an `elasticvit` 128 px subnet (42 blocks): chained 1056 ops, converted 924;
the difference is exactly 88 TRANSPOSE and 44 RESHAPE, four and two at each of the 22 boundaries
between transformer blocks. `fold_boundaries` removes them with three rules that only ever drop
identities (two transposes that compose to one, two reshapes that make one, a reshape or transpose
that changes nothing) and shares the small constants every block file carries its own copy of,
which leaves the converter's op list, in its order and with its tensor shapes (test_stitch.py
compares op counts). Latency is the same within what this host can tell: on its LiteRT (XNNPACK,
1 thread) a stitched file ran 1.007-1.019x the converted file's time, and a copy of the converted
file 1.010-1.035x (4 subnets, 12 sets of fresh interpreters each, benchmarks/subnet_stitch.py).
The 2-6% excess reported before came from timing one interpreter per file: where an interpreter's
packed weights land in memory moves its speed by up to ±10% (per-set ratios 0.88-1.16), stable
within a process. The weights of a block that comes again are repeated, in tensors apart, as in
the converted model (export.build_subnet) and a trained one.
LUTNAS_SUBNET_ASSEMBLY=convert makes every whole subnet a conversion again (export.py).

The schema is LiteRT's own (ai_edge_litert.schema_py_generated, with the flatbuffers runtime it is
generated for): reading and writing the format with the runtime's bindings instead of a parser of
ours. Only float models of one subgraph chain here; int8 blocks each carry their own quantization
parameters at their ends, so a chained int8 model would need requantization at every boundary that a
whole-model quantization does not have: those are converted whole as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lutnas.errors import ExportError

_OP = schema.BuiltinOperator
_FLOAT32 = schema.TensorType.FLOAT32
# Buffer.data's alignment in the TFLite schema (force_align: 16).
BUFFER_ALIGNMENT = 16
# Constants up to this size (a shape or permutation vector) are shared between blocks.
SHARED_CONSTANT_BYTES = 64


def read_model(path: Path) -> schema.ModelT:
    """The object form of a .tflite file (ExportError when it is not one)."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ExportError(f"{path} is not a .tflite file (no TFL3 identifier); export it again")
    return schema.ModelT.InitFromPackedBuf(data, 0)


class _AlignedBuilder(flatbuffers.Builder):
    """A Builder that gives byte vectors (Buffer.data) the 16-byte alignment the schema declares
    (`force_align: 16`), which the generated Python `Pack` does not honour: constants then start
    at any byte offset, where the converter's files align them."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:
        if x.dtype != np.uint8 or x.ndim != 1:
            return super().CreateNumpyVector(x)
        self.StartVector(1, x.size, BUFFER_ALIGNMENT)
        payload = x.tobytes()
        self.head = self.head - len(payload)
        self.Bytes[self.head:self.head + len(payload)] = payload
        self.vectorNumElems = x.size
        return self.EndVector()


def write_model(model: schema.ModelT) -> bytes:
    builder = _AlignedBuilder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def chain(models: Sequence[schema.ModelT]) -> schema.ModelT:
    """One model running `models` in order, each block's output tensor feeding the next block.

    Every model must have one float32 subgraph with one input and one output, and each output must
    have the shape of the next input; ExportError otherwise. Operator codes are shared, buffers and
    tensors renumbered; the result has one signature, `serving_default`.
    """
    out = schema.ModelT()
    out.version, out.description = models[0].version, models[0].description
    out.operatorCodes, out.buffers, out.metadata = [], [schema.BufferT()], []
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.name = [], [], "main"
    codes: dict[tuple, int] = {}
    previous: int | None = None
    for position, model in enumerate(models):
        source = _only_subgraph(model, position)
        buffers = {0: 0}  # buffer 0 is the schema's empty sentinel in every model
        for index, buffer in enumerate(model.buffers[1:], start=1):
            if buffer.offset > 1:  # data outside the flatbuffer (models over 2 GB): not copied here
                raise ExportError(f"block {position} of the subnet keeps its weights outside the "
                                  f"flatbuffer; such files do not chain (export the subnet whole)")
            buffers[index] = len(out.buffers)
            out.buffers.append(buffer)
        opcodes = [_code_index(code, codes, out) for code in model.operatorCodes]
        tensors: dict[int, int] = {}
        for index, tensor in enumerate(source.tensors):
            if previous is not None and index == source.inputs[0]:
                _check_joint(graph.tensors[previous], tensor, position)
                tensors[index] = previous
                continue
            tensor.buffer = buffers[tensor.buffer]
            tensors[index] = len(graph.tensors)
            graph.tensors.append(tensor)
        for op in source.operators:
            op.opcodeIndex = opcodes[op.opcodeIndex]
            op.inputs = [tensors[i] if i >= 0 else i for i in op.inputs]  # -1: an omitted input
            op.outputs = [tensors[i] for i in op.outputs]
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = [tensors[i] for i in op.intermediates]
            graph.operators.append(op)
        if previous is None:
            graph.inputs = [tensors[source.inputs[0]]]
        previous = tensors[source.outputs[0]]
    graph.outputs = [previous]
    out.subgraphs = [graph]
    out.signatureDefs = [_signature(graph)]
    return out


def _only_subgraph(model: schema.ModelT, position: int) -> schema.SubGraphT:
    if len(model.subgraphs) != 1:
        raise ExportError(f"block {position} of the subnet has {len(model.subgraphs)} subgraphs; "
                          f"only single-graph block files chain (export the subnet whole)")
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ExportError(f"block {position} of the subnet has {len(graph.inputs)} inputs and "
                          f"{len(graph.outputs)} outputs; only one of each chains")
    if any(graph.tensors[i].type != _FLOAT32 for i in (graph.inputs[0], graph.outputs[0])):
        raise ExportError(f"block {position} of the subnet has non-float input or output; "
                          f"quantized blocks do not chain (export the subnet whole)")
    return graph


def _check_joint(produced: schema.TensorT, consumed: schema.TensorT, position: int) -> None:
    if list(_shape(produced)) != list(_shape(consumed)):
        raise ExportError(f"block {position - 1} of the subnet outputs shape {list(_shape(produced))} "
                          f"but block {position} takes {list(_shape(consumed))}; these blocks do "
                          f"not compose (a wrong block list for this subnet)")


def _shape(tensor: schema.TensorT) -> list[int]:
    return [] if tensor.shape is None else [int(d) for d in tensor.shape]


def _code_index(code: schema.OperatorCodeT, codes: dict[tuple, int], out: schema.ModelT) -> int:
    key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
    if key not in codes:
        codes[key] = len(out.operatorCodes)
        out.operatorCodes.append(code)
    return codes[key]


def _signature(graph: schema.SubGraphT) -> schema.SignatureDefT:
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = [], []
    for names, index, name in ((signature.inputs, graph.inputs[0], "input"),
                               (signature.outputs, graph.outputs[0], "output")):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, index
        names.append(entry)
    return signature


# ------------------------------------------------------------------------------------------------
# Removing what the boundaries added.

def fold_boundaries(model: schema.ModelT) -> int:
    """Drop the layout round trips chaining put at block boundaries; returns the ops removed.

    Rules, applied until none applies, each only where the tensor between the two ops feeds nothing
    else and is not the model's output: TRANSPOSE(p) then TRANSPOSE(q) becomes one TRANSPOSE (none
    when p then q is the identity); RESHAPE then RESHAPE becomes one RESHAPE; a RESHAPE or TRANSPOSE
    whose output has its input's shape and order is dropped. Each keeps the function computed.
    """
    graph = model.subgraphs[0]
    before = len(graph.operators)
    while _fold_once(model, graph):
        pass
    _share_constants(model, graph)
    _prune(graph, model)
    _prune_buffers(model)
    return before - len(graph.operators)


def _share_constants(model: schema.ModelT, graph: schema.SubGraphT) -> None:
    """One tensor per distinct small constant (shapes, permutations: up to SHARED_CONSTANT_BYTES),
    as the whole-model converter keeps them; every block file carries its own copies. Weights stay
    apart even when equal (two blocks of one key have one seed): a deployed model's do not repeat."""
    first: dict[tuple, int] = {}
    same: dict[int, int] = {}
    for index, tensor in enumerate(graph.tensors):
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is None or not 0 < len(data) <= SHARED_CONSTANT_BYTES or tensor.isVariable:
            continue
        key = (tensor.type, tuple(int(d) for d in _shape(tensor)), np.asarray(data).tobytes())
        same[index] = first.setdefault(key, index)
    for op in graph.operators:
        op.inputs = [same.get(t, t) if t >= 0 else t for t in op.inputs]


def _prune_buffers(model: schema.ModelT) -> None:
    """Drop buffers no tensor refers to any more (keeping the empty sentinel, buffer 0)."""
    graph = model.subgraphs[0]
    used = sorted({t.buffer for t in graph.tensors} | {0})
    new = {old: index for index, old in enumerate(used)}
    model.buffers = [model.buffers[b] for b in used]
    for tensor in graph.tensors:
        tensor.buffer = new[tensor.buffer]


def _prune(graph: schema.SubGraphT, model: schema.ModelT) -> None:
    """Keep only the tensors an op or an end of the graph uses, numbered as the converter numbers
    a whole model: the input, the constants, the intermediates in the order ops write them, the
    output last (XNNPACK plans its memory by tensor number: chained blocks numbered block by block
    ran 1.2-3.8% slower than the converter's file with the same ops, benchmarks/subnet_stitch.py)."""
    def constant(t: int) -> bool:
        buffer = graph.tensors[t].buffer
        return bool(buffer) and model.buffers[buffer].data is not None and len(model.buffers[buffer].data) > 0

    constants: list[int] = []
    produced: list[int] = []
    others: list[int] = []  # read but neither constant nor written by an op (e.g. a variable)
    for op in graph.operators:
        for t in op.inputs:
            (constants if t >= 0 and constant(t) else others).append(t)
        constants += list(op.intermediates if op.intermediates is not None else ())
        produced += [t for t in op.outputs if t not in graph.outputs]
    seen: set[int] = set()
    order = [t for t in [*graph.inputs, *constants, *produced, *others, *graph.outputs]
             if t >= 0 and not (t in seen or seen.add(t))]
    new = {old: index for index, old in enumerate(order)}
    graph.tensors = [graph.tensors[t] for t in order]
    for op in graph.operators:
        op.inputs = [new[t] if t >= 0 else t for t in op.inputs]
        op.outputs = [new[t] for t in op.outputs]
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = [new[t] for t in op.intermediates]
    graph.inputs = [new[t] for t in graph.inputs]
    graph.outputs = [new[t] for t in graph.outputs]


def _fold_once(model: schema.ModelT, graph: schema.SubGraphT) -> bool:
    kinds = [model.operatorCodes[op.opcodeIndex].builtinCode for op in graph.operators]
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs}
    uses: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            uses[t] = uses.get(t, 0) + 1
    for i, op in enumerate(graph.operators):
        if kinds[i] not in (_OP.TRANSPOSE, _OP.RESHAPE):
            continue
        if _is_identity(model, graph, op, kinds[i]) and _bypass(graph, i, op.inputs[0], op.outputs[0]):
            return True
        first = producer.get(op.inputs[0])
        if first is None or kinds[first] != kinds[i] or uses.get(op.inputs[0], 0) != 1 \
                or op.inputs[0] in graph.outputs:
            continue
        source = graph.operators[first].inputs[0]
        if kinds[i] == _OP.TRANSPOSE:
            outer, inner = _perm(model, graph, graph.operators[first]), _perm(model, graph, op)
            if outer is None or inner is None:
                continue
            _set_perm(model, graph, op, outer[inner])
        op.inputs = [source, *op.inputs[1:]]
        del graph.operators[first]
        return True
    return False


def _is_identity(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT,
                 kind: int) -> bool:
    same_shape = _shape(graph.tensors[op.inputs[0]]) == _shape(graph.tensors[op.outputs[0]])
    if kind == _OP.RESHAPE:
        return same_shape
    perm = _perm(model, graph, op)
    return same_shape and perm is not None and bool(np.array_equal(perm, np.arange(perm.size)))


def _bypass(graph: schema.SubGraphT, index: int, source: int, target: int) -> bool:
    """Remove op `index`, whose output `target` equals its input `source`: readers of `target`
    read `source` (the model's output keeps its tensor: its producer writes it instead). False,
    and nothing changed, when `source` has no producer (a graph input or constant) and `target` is
    the graph's output: the op is then the only thing that writes the output."""
    if target in graph.outputs:
        producer = next((op for op in graph.operators if source in op.outputs), None)
        if producer is None or source in graph.outputs:
            return False
        producer.outputs = [target if t == source else t for t in producer.outputs]
        for op in graph.operators:
            op.inputs = [target if t == source else t for t in op.inputs]
    else:
        for op in graph.operators:
            op.inputs = [source if t == target else t for t in op.inputs]
    del graph.operators[index]
    return True


def _perm(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT) -> np.ndarray | None:
    """A TRANSPOSE's constant permutation; None when it is computed (such an op is not folded)."""
    data = model.buffers[graph.tensors[op.inputs[1]].buffer].data
    if data is None or not len(data):
        return None
    return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.int32)


def _set_perm(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT,
              perm: np.ndarray) -> None:
    """Give `op` its own constant permutation tensor (the old one may be shared)."""
    old = graph.tensors[op.inputs[1]]
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.name = [perm.size], schema.TensorType.INT32, f"{old.name}_folded"
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(perm.astype(np.int32).tobytes(), dtype=np.uint8)
    tensor.buffer = len(model.buffers)
    model.buffers.append(buffer)
    op.inputs = [op.inputs[0], len(graph.tensors), *op.inputs[2:]]
    graph.tensors.append(tensor)


def stitch(paths: Sequence[Path]) -> tuple[bytes, int]:
    """The .tflite bytes of the block files at `paths` run in order, boundaries folded; and the
    number of ops folding removed. ExportError when the files do not chain (see `chain`)."""
    model = chain([read_model(p) for p in paths])
    folded = fold_boundaries(model)
    model.signatureDefs = [_signature(model.subgraphs[0])]  # tensor numbers moved in the fold
    return write_model(model), folded


def op_counts(path: Path) -> dict[str, int]:
    """Builtin op name -> count in a .tflite file (to compare a stitched file with a converted one)."""
    model = read_model(path)
    names = {v: k for k, v in vars(_OP).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for op in model.subgraphs[0].operators:
        name = names.get(model.operatorCodes[op.opcodeIndex].builtinCode, "CUSTOM")
        counts[name] = counts.get(name, 0) + 1
    return counts
