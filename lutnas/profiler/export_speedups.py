"""Make litert-torch's conversion cheaper, without changing a byte it writes.

A warm .tflite conversion of an `elasticvit` block took ~2.1 s here, much of it set-up that is the
same for every block rather than work on the block:
- `run_decompositions` runs ~2.9 times a block (measured), and each run collects the
  CompositeImplicitAutograd ops by walking every op namespace (~0.15 s a block):
  `memoize_cia_ops` keeps the set until an op is registered.
- Each run also registers ~530 ops x 22 dispatch keys through `OpOverload.py_impl`, whose inner
  function evaluates `Callable[_P, _T]` annotations on every call: 0.24 s a block (timer around the
  context, unprofiled). `fast_cia_override` makes the same registrations by writing `py_kernels`
  directly: 0.07 s. Paired in one process over 30 blocks: -7% a block, 30 of 30 files identical.
- ~50 ops a block are lowered through JAX (`jax.jit(f).lower(...)` and a VHLO serialisation,
  ~7 ms each), cached only within one model. `memoize_jax_lowering` keeps them across models under
  litert-torch's own key: in plan order 84% of lowerings were reused and a block took 1.11 s
  instead of 1.60 s (40 blocks, 40 of 40 files identical).
- Every node a decomposition makes records where it came from, deep-copying that node's whole
  history (`NodeSource.__init__`): 0.065 s a block (median of 20 sampled blocks, timer around the
  constructor). `share_node_provenance` copies the list and shares the entries, which nothing
  changes after they are made: 0.007 s, 24 of 24 files identical.
- Each JAX lowering made a fresh MLIR context and loaded every dialect into it (~3 ms, ~40 a
  block): `reuse_jax_ir_context` lets 256 lowerings share one (-11%, 30 of 30 files identical);
  the VHLO serialisation, which made a context of its own each time, parses in that one too
  (`VhloSerializer`: the same bytecode on 362 of 362 texts, checked on a sample as it runs;
  ~-10%).

All five replace private functions, so each is installed only where it is known to be equivalent:
the memos where the private functions exist, the override, the provenance constructor and the shared
context only over the torch or jax source they were written against (a digest of the source text;
any other version keeps its own). `LUTNAS_EXPORT_SPEEDUPS=off` leaves all of them out.
tests/profiler/test_export_speedups.py checks files written with and without them are
byte-identical. ExecuTorch's export (.pte) runs torch's decompositions too and gets the first two
(46.5 blocks/min instead of 34.4, 40 of 40 files identical) and the provenance one
(benchmarks/results/export_throughput_pte*.json).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch

_CIA_MEMO: dict[tuple[int, int], set[Any]] = {}
# (module, attribute) -> what was there before lutnas replaced it, for uninstall().
_ORIGINALS: dict[tuple[ModuleType | type, str], Any] = {}
# Set to "off" to convert with torch's and litert-torch's own functions (a suspected speed-up fault).
SWITCH_ENV = "LUTNAS_EXPORT_SPEEDUPS"
# JAX lowerings kept across models: a few KB of text and bytecode each, so ~40 MB at most.
JAX_LOWERINGS_KEPT = 4096
# sha256 of inspect.getsource(torch.export.exported_program._override_composite_implicit_decomp)
# in torch 2.13.0, the version fast_cia_override reproduces line by line.
_OVERRIDE_SOURCE_SHA256 = "4422dc79d0792af728dd8eacf0a2fadcf00195c8802ceca15632b737d9d5c9bd"
# sha256 of inspect.getsource(torch.fx.traceback.NodeSource.__init__) in torch 2.13.0, the version
# share_node_provenance reproduces with one change.
_NODE_SOURCE_INIT_SHA256 = "99395e7f40a4a0490145b2b1ca70c03cd5b7f2d8037480bd399a2fc195ee152f"
# sha256 of inspect.getsource(jax._src.interpreters.mlir.make_ir_context) in jax 0.10.2: a context
# with JAX's dialects loaded and nothing else, which reuse_jax_ir_context hands out again.
_MAKE_IR_CONTEXT_SHA256 = "294dc621ddee78d9634408ca350100ce5a0fb0d27de7f4a7d5d3b7aa12083b22"
# sha256 of inspect.getsource(litert_torch.backend.jax_bridge._wrap._stablehlo_to_vhlo) in
# litert-torch 0.10.0, whose choice of VHLO version _vhlo_in_jax_context repeats.
_TO_VHLO_SHA256 = "a66c2e1f3b410de4b25231502baf9a540481d2dcca026f0e39836b0fd3ef57f7"
# VhloSerializer compares its bytecode with jaxlib's for the first this many texts of a process,
# every this-many-th after and every text with op names not seen before (~5 ms each).
VHLO_CHECK_EVERY = 32
# The jaxlib whose `serialize_portable_artifact` VhloSerializer was compared with (its C++ passes
# decide the bytecode; the litert-torch digest above does not pin them).
_JAXLIB_VERSION = "0.10.2"
# Lowerings served by one reused MLIR context before a fresh one: a context keeps every type and
# attribute it ever uniqued, so a long profile would grow without bound on one; 3-6 blocks' worth.
LOWERINGS_PER_CONTEXT = 256


def memoize_cia_ops() -> None:
    """Let torch.export reuse its set of CompositeImplicitAutograd ops between decompositions.

    Every `run_decompositions` walks all op namespaces to rebuild that set (from exported_program,
    and twice a block more from decomp_utils when litert-torch's decomposition tables
    materialise), though it changes only when an op is registered; torch does not cache it because
    custom ops can be registered later. Keyed on the count of registered CIA kernels and op
    namespaces it is recomputed exactly then; each caller gets its own copy. Idempotent; a torch
    without these private functions is left alone.
    """
    from torch._export import utils as export_utils
    from torch.export import decomp_utils, exported_program

    original = getattr(export_utils, "_collect_all_valid_cia_ops", None)
    if original is None:
        return

    def collect() -> set[Any]:
        key = (len(torch._C._dispatch_get_registrations_for_dispatch_key("CompositeImplicitAutograd")),
               len(torch.ops._dir))
        if key not in _CIA_MEMO:
            _CIA_MEMO.clear()
            _CIA_MEMO[key] = set(original())
        return set(_CIA_MEMO[key])

    collect.lutnas_memo = True  # type: ignore[attr-defined]
    for module in (exported_program, decomp_utils):  # each imported the function by name
        current = getattr(module, "_collect_all_valid_cia_ops", None)
        if current is not None and not getattr(current, "lutnas_memo", False):
            _replace(module, "_collect_all_valid_cia_ops", collect)


def _replace(module: ModuleType | type, name: str, new: Any) -> None:
    _ORIGINALS.setdefault((module, name), getattr(module, name))
    setattr(module, name, new)


def uninstall() -> None:
    """Put back every function the speed-ups replaced (tests compare files written both ways)."""
    for (module, name), original in _ORIGINALS.items():
        setattr(module, name, original)
    _ORIGINALS.clear()


def _force_dispatch_to_orig_cia_callable(fake_tensor_mode: Any, op: Any, *args: Any,
                                         **kwargs: Any) -> Any:
    """The fake-tensor rule torch registers for a preserved CIA op: run its original decomposition
    under the fake mode (torch's own nested function, here at module level to be reusable)."""
    original = kwargs.pop("original_callable")
    with fake_tensor_mode:
        return original(*args, **kwargs)


_AUTOGRAD_KERNELS: dict[Any, Callable[..., Any]] = {}


def _autograd_kernel(op: Any, make: Callable[..., Callable[..., Any]]) -> Callable[..., Any]:
    """`autograd_not_implemented(op, deferred_error=True)`, made once per op: a closure over the
    op and the flag only, so one serves every decomposition (torch makes ~19k a block)."""
    kernel = _AUTOGRAD_KERNELS.get(op)
    if kernel is None:
        kernel = _AUTOGRAD_KERNELS[op] = make(op, deferred_error=True)
    return kernel


@contextmanager
def fast_cia_override(cia_ops_to_callable: dict[Any, Callable[..., Any]]) -> Iterator[None]:
    """torch 2.13's `_override_composite_implicit_decomp`, with `py_kernels` written directly.

    `OpOverload.py_impl(key)(fn)` for a DispatchKey checks the key is not taken, stores `fn` in
    `py_kernels` and clears the op's dispatch cache; this does the same, clearing each op's cache
    once. Unlike the original, a failure while registering restores the ops already touched.
    """
    from torch._export.utils import _get_decomp_for_cia
    from torch._higher_order_ops.utils import autograd_not_implemented
    from torch._subclasses.fake_impls import (
        _deregister_op_impl,
        _is_op_registered_to_fake_rule,
        register_op_impl,
    )
    from torch.export import exported_program as ep

    cia_key = torch._C.DispatchKey.CompositeImplicitAutograd
    saved: dict[Any, dict[Any, Any]] = {}
    try:
        for op, decomp in cia_ops_to_callable.items():
            saved[op] = op.py_kernels.copy()
            kernels = op.py_kernels
            for key in ep._AUTOGRAD_ALIAS_BACKEND_KEYS_TO_OVERRIDE:
                if key not in kernels:
                    kernels[key] = _autograd_kernel(op, autograd_not_implemented)
            original = _get_decomp_for_cia(op)  # before the CIA entry is replaced (torch's order)
            kernels.pop(cia_key, None)
            kernels[cia_key] = decomp
            if not _is_op_registered_to_fake_rule(op):
                register_op_impl(op)(functools.partial(_force_dispatch_to_orig_cia_callable,
                                                       original_callable=original))
            for key in ep._BACKEND_KEYS_TO_OVERRIDE:
                if key not in kernels:
                    kernels[key] = original
            op._dispatch_cache.clear()
        yield
    finally:
        for op, table in saved.items():
            op.py_kernels.clear()
            op.py_kernels.update(table)
            op._dispatch_cache.clear()
            _deregister_op_impl(op)


@functools.lru_cache(maxsize=8)
def _source_sha256(function: Callable[..., Any]) -> str:
    """Digest of a function's source text, read once per function: install() runs before every
    conversion, and over an unknown torch it would otherwise read torch's file each time."""
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return ""


def _is_measured_source(function: Callable[..., Any], digest: str) -> bool:
    """Whether `function` is the library source a speed-up was measured against. A wrapper
    (`__wrapped__`) digests as what it wraps, since inspect unwraps: it never counts, so nobody's
    wrapper is dropped by a replacement."""
    return not hasattr(function, "__wrapped__") and _source_sha256(function) == digest


def install_fast_cia_override() -> bool:
    """Put `fast_cia_override` in place of torch's when torch's is the source it reproduces;
    returns whether it is in place. Idempotent."""
    from torch.export import exported_program as ep

    current = getattr(ep, "_override_composite_implicit_decomp", None)
    if current is None:
        return False
    if current is fast_cia_override:
        return True
    if _source_sha256(getattr(current, "__wrapped__", current)) != _OVERRIDE_SOURCE_SHA256:
        return False
    _replace(ep, "_override_composite_implicit_decomp", fast_cia_override)
    return True


def memoize_jax_lowering(entries: int = JAX_LOWERINGS_KEPT) -> bool:
    """Keep litert-torch's JAX lowerings across models, not only within one.

    litert-torch lowers ~50 ops a block through JAX (`jax.jit(f).lower(...).as_text()`, then a
    serialisation to VHLO bytecode): ~7 ms each here. It caches them per MLIR module, keyed by
    `get_cache_fingerprint` (the JAX function with its closure, the argument shapes and dtypes and
    the static arguments), so every block lowers its permutes, clamps and reshapes afresh although
    the next block of the same widths has the same ones. Here the text is kept under that same key
    across modules (the last `entries`), and the bytecode under its text. Returns whether installed
    (False where litert-torch's bridge lacks these private functions). Idempotent.
    """
    from litert_torch.backend.jax_bridge import _wrap

    original = getattr(_wrap, "_lower_to_ir_text", None)
    to_vhlo = getattr(_wrap, "_stablehlo_to_vhlo", None)
    fingerprint = getattr(_wrap, "get_cache_fingerprint", None)
    if original is None or to_vhlo is None or fingerprint is None:
        return False
    if getattr(original, "lutnas_memo", False):
        return True
    texts: dict[Any, str] = {}

    def lower(jaxfn: Any, args: Any, kwargs: Any, ir_input_names: Any = None) -> tuple[Any, Any]:
        getter, inputs = original(jaxfn, args, kwargs, ir_input_names=ir_input_names)
        key = fingerprint((jaxfn, args, kwargs, ir_input_names))  # _wrap.wrapped's identifier
        if key is None:  # unhashable arguments: litert-torch does not cache these either
            return getter, inputs

        def text() -> str:
            if key not in texts:
                if len(texts) >= entries:
                    texts.pop(next(iter(texts)))  # the oldest first
                texts[key] = getter()
            return texts[key]

        return text, inputs

    lower.lutnas_memo = True  # type: ignore[attr-defined]
    _replace(_wrap, "_lower_to_ir_text", lower)
    _replace(_wrap, "_stablehlo_to_vhlo", _vhlo_in_jax_context(to_vhlo, entries))
    return True


def _jaxlib_version() -> str:
    import jaxlib

    return str(getattr(jaxlib, "__version__", ""))


def _vhlo_in_jax_context(to_vhlo: Callable[[str], bytes], entries: int = JAX_LOWERINGS_KEPT,
                         check_every: int = VHLO_CHECK_EVERY) -> Callable[[str], bytes]:
    """litert-torch's text -> VHLO conversion, kept for `entries` texts and, where it is the
    litert-torch source and the jaxlib measured, done in JAX's shared context (`VhloSerializer`).
    Elsewhere: `to_vhlo` behind a plain memo (the bytes are jaxlib's)."""
    if not _is_measured_source(to_vhlo, _TO_VHLO_SHA256) or _jaxlib_version() != _JAXLIB_VERSION:
        return functools.lru_cache(maxsize=entries)(to_vhlo)
    return VhloSerializer(to_vhlo, entries, check_every)


class VhloSerializer:
    """StableHLO text -> VHLO bytecode in JAX's (reused) MLIR context, checked against jaxlib's.

    litert-torch hands the text to jaxlib's `serialize_portable_artifact`, which builds an MLIR
    context of its own for every call: ~5 ms, 4.3 of them the context. Here the text is parsed with
    `make_ir_context` (shared while reuse_jax_ir_context is in place), canonicalised (jaxlib's path
    canonicalises: without it 352 of 362 bytecodes of 8 blocks matched, with it 362 of 362) and
    serialised from the module: ~0.6 ms. Checked against `to_vhlo` (jaxlib's way): every text whose
    set of op names has not been seen before, the first `check_every` texts and every
    `check_every`-th after. On a difference, or when jaxlib refuses a text this path took, the
    process goes back to jaxlib's way for good and forgets every bytecode it kept, so a jaxlib
    whose path changed costs time; a difference in a text never checked would go unseen (mismatches
    are detected on a sample). Keeps the last `entries` bytecodes (litert-torch asks for the same
    text once per block that lowers it)."""

    _OP_NAME = re.compile(r"\b(?:stablehlo|chlo|mhlo|func|sdy)\.[a-z_]+")

    def __init__(self, to_vhlo: Callable[[str], bytes], entries: int, check_every: int) -> None:
        self.to_vhlo, self.entries, self.check_every = to_vhlo, entries, check_every
        self.calls = 0  # texts serialised this way
        self.hits = 0  # texts served from `kept`
        self.agrees = True
        self.kept: dict[str, bytes] = {}
        self.seen_ops: set[str] = set()
        # litert-torch's own choice of target version, as its _stablehlo_to_vhlo makes it.
        from jax._src.lib.mlir.dialects import hlo

        if hlo.get_api_version() < 9:
            self.target = hlo.get_minimum_version()
        else:
            self.target = hlo.get_version_from_compatibility_requirement(
                hlo.StablehloCompatibilityRequirement.WEEK_12)

    def __call__(self, ir_text: str) -> bytes:
        if ir_text in self.kept:
            self.hits += 1
            return self.kept[ir_text]
        if len(self.kept) >= self.entries:
            self.kept.pop(next(iter(self.kept)))  # the oldest first
        bytecode = self.kept[ir_text] = self._serialize(ir_text)
        return bytecode

    def _serialize(self, ir_text: str) -> bytes:
        if not self.agrees:
            return self.to_vhlo(ir_text)
        try:
            bytecode = self._in_shared_context(ir_text)
        except Exception:  # noqa: BLE001 - what this path cannot take, jaxlib's reports as before
            return self.to_vhlo(ir_text)
        self.calls += 1
        ops = set(self._OP_NAME.findall(ir_text))
        if ops <= self.seen_ops and self.check_every < self.calls and self.calls % self.check_every:
            return bytecode
        self.seen_ops |= ops
        try:
            reference = self.to_vhlo(ir_text)
        except Exception:
            self._give_up()
            raise
        if reference != bytecode:
            self._give_up()
        return reference

    def _in_shared_context(self, ir_text: str) -> bytes:
        from jax._src.interpreters import mlir
        from jax._src.lib.mlir import ir, passmanager
        from jax._src.lib.mlir.dialects import hlo

        with mlir.make_ir_context():
            module = ir.Module.parse(ir_text)
            passmanager.PassManager.parse("builtin.module(canonicalize)").run(module.operation)
            return hlo.serialize_portable_artifact(module, self.target)

    def _give_up(self) -> None:
        self.agrees = False
        self.kept.clear()


def _node_source_init(self: Any, node: Any, pass_name: str = "", action: Any = None) -> None:
    """torch 2.13's `NodeSource.__init__`, with the node's provenance list copied, not deep-copied.

    Every node a decomposition makes records the node it came from, with that node's whole
    history deep-copied; the history grows with every pass, so the copies took ~0.18 s of a
    block's ~3 s under cProfile. Nothing in torch, litert-torch, executorch or torchao changes a
    NodeSource already in a history, or its lists, in place (they read it: serialisation,
    `to_dict`; litert-torch rebinds `from_node` only on one it has just made), so sharing the older
    entries records the same history."""
    from torch.fx.traceback import NodeSource, NodeSourceAction

    self.pass_name = pass_name
    actions = [] if action is None else action if isinstance(action, list) else [action]
    for a in actions:
        if not isinstance(a, NodeSourceAction):
            raise AssertionError(f"Expected NodeSourceAction, got {type(a)}")
    self.action = actions
    if node:
        self.node_info = NodeSource.NodeInfo(name=node.name, target=str(node.target),
                                             graph_id=id(node.graph))
        self.from_node = list(node.meta["from_node"]) if "from_node" in node.meta else []
    else:
        self.node_info = None
        self.from_node = []
    self._action_string = None
    self._dict = None


def share_node_provenance() -> bool:
    """Put `_node_source_init` in place of torch's `NodeSource.__init__` when torch's is the source
    it reproduces; returns whether it is in place. Idempotent."""
    from torch.fx import traceback as fx_traceback

    current = fx_traceback.NodeSource.__init__
    if current is _node_source_init:
        return True
    if not _is_measured_source(current, _NODE_SOURCE_INIT_SHA256):
        return False
    _replace(fx_traceback.NodeSource, "__init__", _node_source_init)
    return True


def reuse_jax_ir_context(lowerings: int = LOWERINGS_PER_CONTEXT) -> bool:
    """Let JAX's lowerings share an MLIR context, `lowerings` at a time.

    Each of the ~40 JAX lowerings of a block (`jax.jit(f).lower`) made its own context and loaded
    every dialect into it (`make_ir_context`, ~3 ms each here). On the CPU lowerings litert-torch
    asks for, the context holds no state a lowering depends on (the module's text is the same in a
    fresh one), so one serves `lowerings` calls (lowerings and VhloSerializer's parses); then a
    fresh one, so the types and attributes a context keeps do not pile up. A context someone
    altered (JAX's TPU and Mosaic paths register dialects and allow unregistered ones) is not
    handed out again. 30 sampled blocks in one process: 40.5 and 39.9 s against 45.9 and 44.8 s,
    the same bytes in all four runs. Memory: after 120 consecutive plan blocks in one process
    (with VhloSerializer) 769 MiB resident against 763 MiB with a fresh context each time, 154 s
    against 174 s. Returns whether installed (only over the jax source it was measured with).
    Idempotent."""
    from jax._src.interpreters import mlir

    original = mlir.make_ir_context
    if getattr(original, "lutnas_shared", False):
        return True
    if not _is_measured_source(original, _MAKE_IR_CONTEXT_SHA256):
        return False
    state: dict[str, Any] = {"context": None, "served": 0}

    def make() -> Any:
        context = state["context"]
        if context is None or state["served"] >= lowerings or context.allow_unregistered_dialects:
            state["context"], state["served"] = original(), 0
        state["served"] += 1
        return state["context"]

    make.lutnas_shared = True  # type: ignore[attr-defined]
    _replace(mlir, "make_ir_context", make)
    return True


def install() -> None:
    """The speed-ups (idempotent); called before every .tflite conversion and in export workers.
    The JAX memo and the shared JAX context are installed once litert-torch is imported
    (converter.litert_torch()). None is installed while LUTNAS_EXPORT_SPEEDUPS=off."""
    if os.environ.get(SWITCH_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return
    memoize_cia_ops()
    install_fast_cia_override()
    share_node_provenance()
    if "litert_torch" in sys.modules:
        memoize_jax_lowering()
        reuse_jax_ir_context()
