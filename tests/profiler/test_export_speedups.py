"""The conversion speed-ups (profiler/export_speedups.py) register what torch registers and write
the same bytes as litert-torch without them."""

import contextlib
import functools
import random

import pytest
from torch.export import exported_program

from lutnas.profiler import export_speedups
from lutnas.profiler.export import ModelCache, export_spec


def _patched() -> list:
    """(owner, name) of everything install() may replace."""
    from jax._src.interpreters import mlir
    from litert_torch.backend.jax_bridge import _wrap
    from torch.export import decomp_utils
    from torch.fx import traceback as fx_traceback

    return [(exported_program, "_collect_all_valid_cia_ops"),
            (decomp_utils, "_collect_all_valid_cia_ops"),
            (exported_program, "_override_composite_implicit_decomp"),
            (fx_traceback.NodeSource, "__init__"), (mlir, "make_ir_context"),
            (_wrap, "_lower_to_ir_text"), (_wrap, "_stablehlo_to_vhlo")]


@pytest.fixture(autouse=True)
def _speed_ups_as_before():
    """Every test starts from the libraries' own functions and leaves the speed-ups installed,
    even when it fails half way (install state is process-wide)."""
    from lutnas.profiler import converter

    converter.litert_torch()
    export_speedups.uninstall()
    real = {key: getattr(*key) for key in _patched()}
    yield
    export_speedups.uninstall()
    for (owner, name), function in real.items():
        setattr(owner, name, function)
    export_speedups.install()


def test_memoized_cia_ops_are_torchs_own_set() -> None:
    from torch.export import decomp_utils

    export_speedups.memoize_cia_ops()
    memoized = exported_program._collect_all_valid_cia_ops
    assert getattr(memoized, "lutnas_memo", False)
    assert decomp_utils._collect_all_valid_cia_ops is memoized  # the decomposition tables' caller
    export_speedups.memoize_cia_ops()  # idempotent: never wraps the wrapper
    assert exported_program._collect_all_valid_cia_ops is memoized
    from torch._export.utils import _collect_all_valid_cia_ops

    assert memoized() == set(_collect_all_valid_cia_ops())
    memoized().clear()  # a caller that changes its copy does not change the memo
    assert memoized() == set(_collect_all_valid_cia_ops())


def _kernel_name(kernel: object) -> str:
    """What a registered kernel is, comparable across two registrations of the same thing."""
    if isinstance(kernel, functools.partial):
        keywords = sorted((k, _kernel_name(v)) for k, v in kernel.keywords.items())
        return f"partial({getattr(kernel.func, '__qualname__', kernel.func)}, {keywords})"
    return getattr(kernel, "__qualname__", repr(kernel))


def _registrations(ops: list) -> dict:
    from torch._subclasses.fake_impls import op_implementations_dict

    return {op: ({key: _kernel_name(kernel) for key, kernel in op.py_kernels.items()},
                 op in op_implementations_dict) for op in ops}


def _original_override() -> object:
    current = exported_program._override_composite_implicit_decomp
    if current is export_speedups.fast_cia_override:
        return export_speedups._ORIGINALS[(exported_program, "_override_composite_implicit_decomp")]
    return current


def test_fast_override_registers_what_torchs_registers_and_restores_it() -> None:
    from torch._export.utils import _collect_all_valid_cia_ops

    ops = sorted(_collect_all_valid_cia_ops(), key=str)
    chosen = random.Random(0).sample(ops, 40)
    table = {op: (lambda *args, **kwargs: NotImplemented) for op in chosen}
    with _original_override()(table):  # torch keeps a fake rule or two from its first pass
        pass
    before = _registrations(chosen)
    seen = {}
    for name, override in (("torch", _original_override()),
                           ("fast", export_speedups.fast_cia_override)):
        with override(table):
            seen[name] = _registrations(chosen)
        assert _registrations(chosen) == before, f"{name} left registrations behind"
    assert seen["fast"] == seen["torch"]
    assert seen["fast"] != before  # the check can fail: the override did register something


def test_fast_override_restores_what_it_touched_when_registering_fails() -> None:
    class Refuses(dict):
        def items(self):  # two ops registered, then a failure
            yield from list(super().items())[:2]
            raise RuntimeError("refused")

    from torch._export.utils import _collect_all_valid_cia_ops

    chosen = sorted(_collect_all_valid_cia_ops(), key=str)[:3]
    before = _registrations(chosen)
    with pytest.raises(RuntimeError, match="refused"):
        with export_speedups.fast_cia_override(Refuses({op: (lambda: None) for op in chosen})):
            pass
    assert _registrations(chosen) == before


def test_fast_override_is_installed_only_over_the_torch_source_it_reproduces(monkeypatch) -> None:
    @contextlib.contextmanager
    def another_torchs_override(table):
        yield

    monkeypatch.setattr(exported_program, "_override_composite_implicit_decomp",
                        another_torchs_override)
    assert export_speedups.install_fast_cia_override() is False
    assert exported_program._override_composite_implicit_decomp is another_torchs_override


def _histories(node_source_init) -> list:
    """Every node's provenance after two decompositions of a small module, as dicts with each
    graph's id (an address, different in every run) replaced by its order of first appearance."""
    import torch
    from torch.fx import traceback as fx_traceback

    graphs: dict[int, int] = {}

    def strip(entry: dict) -> dict:
        return {k: [strip(e) for e in v] if k == "from_node"
                else graphs.setdefault(v, len(graphs)) if k == "graph_id" else v
                for k, v in entry.items()}

    class Small(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.hardswish(torch.nn.functional.layer_norm(x, (8,))) @ x.T

    saved = fx_traceback.NodeSource.__init__
    fx_traceback.NodeSource.__init__ = node_source_init
    try:
        program = torch.export.export(Small(), (torch.randn(4, 8),))
        program = program.run_decompositions().run_decompositions()
    finally:
        fx_traceback.NodeSource.__init__ = saved
    return [[strip(s.to_dict()) for s in node.meta.get("from_node", [])]
            for node in program.graph.nodes]


def test_shared_provenance_records_torchs_history() -> None:
    from torch.fx import traceback as fx_traceback

    assert export_speedups.share_node_provenance() is True
    torchs = export_speedups._ORIGINALS[(fx_traceback.NodeSource, "__init__")]
    shared = _histories(export_speedups._node_source_init)
    assert any(len(h) and h[0]["from_node"] for h in shared)  # histories two passes deep
    assert shared == _histories(torchs)


def test_shared_provenance_is_installed_only_over_the_torch_source_it_reproduces(monkeypatch) -> None:
    from torch.fx import traceback as fx_traceback

    def another_torchs_init(self, node, pass_name="", action=None):
        pass

    monkeypatch.setattr(fx_traceback.NodeSource, "__init__", another_torchs_init)
    assert export_speedups.share_node_provenance() is False
    assert fx_traceback.NodeSource.__init__ is another_torchs_init


def test_jax_contexts_are_reused_a_bounded_number_of_times(monkeypatch) -> None:
    from jax._src.interpreters import mlir

    made = []
    original = mlir.make_ir_context

    def counted():
        made.append(original())
        return made[-1]

    monkeypatch.setattr(export_speedups, "_source_sha256",
                        lambda f: export_speedups._MAKE_IR_CONTEXT_SHA256 if f is counted else "")
    monkeypatch.setattr(mlir, "make_ir_context", counted)
    assert export_speedups.reuse_jax_ir_context(lowerings=3) is True
    served = [mlir.make_ir_context() for _ in range(7)]
    assert len(made) == 3  # 3 + 3 + 1
    assert [id(c) for c in served] == [id(made[i // 3]) for i in range(7)]
    made[-1].allow_unregistered_dialects = True  # altered (as JAX's TPU path does): not reused
    assert mlir.make_ir_context() is not made[2] and len(made) == 4
    export_speedups.uninstall()
    assert mlir.make_ir_context is counted


def test_jax_context_reuse_is_installed_only_over_the_jax_source_it_was_measured_with(
        monkeypatch) -> None:
    from jax._src.interpreters import mlir

    jaxs = mlir.make_ir_context

    def another_jaxs_make_ir_context():
        return None

    monkeypatch.setattr(mlir, "make_ir_context", another_jaxs_make_ir_context)
    assert export_speedups.reuse_jax_ir_context() is False
    assert mlir.make_ir_context is another_jaxs_make_ir_context

    def a_wrapper():  # someone's wrapper around jax's own: its source digest is jax's
        return jaxs()

    a_wrapper.__wrapped__ = jaxs
    monkeypatch.setattr(mlir, "make_ir_context", a_wrapper)
    assert export_speedups.reuse_jax_ir_context() is False
    assert mlir.make_ir_context is a_wrapper


def _jax_texts() -> list[str]:
    """Four StableHLO texts with the same op names (one function at four shapes; its constants come
    out of order, so canonicalisation matters), then one with others."""
    import jax
    import jax.numpy as jnp

    same_ops = [jax.jit(lambda x: jnp.clip(x.T @ x, 0, 6)).lower(jnp.zeros((rows, 8))).as_text()
                for rows in (4, 2, 3, 5)]
    return same_ops + [jax.jit(lambda x: jax.nn.hard_swish(x).reshape(8, 4)).lower(
        jnp.zeros((4, 8))).as_text()]


def _jaxlibs() -> object:
    """litert-torch's own text -> VHLO (the fixture starts every test without the speed-ups)."""
    from litert_torch.backend.jax_bridge import _wrap

    return _wrap._stablehlo_to_vhlo


def test_vhlo_from_the_shared_context_is_jaxlibs_bytecode() -> None:
    original = _jaxlibs()
    serializer = export_speedups._vhlo_in_jax_context(original)
    assert isinstance(serializer, export_speedups.VhloSerializer)
    texts = _jax_texts()
    assert [serializer._in_shared_context(t) for t in texts] == [original(t) for t in texts]
    assert [serializer(t) for t in texts] == [original(t) for t in texts]
    assert serializer.calls == len(texts) and serializer.agrees
    assert serializer(texts[0]) == original(texts[0]) and serializer.hits == 1


def _counting(original, differ_on: int = 0, raise_on: int = 0) -> tuple:
    calls: list[str] = []

    def another_jaxlib(ir_text: str) -> bytes:
        calls.append(ir_text)
        if len(calls) == raise_on:
            raise ValueError("jaxlib refused it")
        return b"another jaxlib's bytecode" if len(calls) == differ_on else original(ir_text)

    return another_jaxlib, calls


def test_vhlo_is_checked_on_a_sample_and_on_new_op_names() -> None:
    original = _jaxlibs()
    another_jaxlib, calls = _counting(original)
    serializer = export_speedups.VhloSerializer(another_jaxlib, entries=100, check_every=3)
    texts = _jax_texts()
    for text in texts[:4]:
        assert serializer(text) == original(text)
    assert len(calls) == 3  # the first 3 checked; the 4th (same op names, 4 % 3) not
    assert serializer(texts[4]) == original(texts[4]) and len(calls) == 4  # new op names: checked
    assert serializer.calls == 5 and serializer.agrees


def test_vhlo_goes_back_to_jaxlibs_path_for_good_once_they_differ() -> None:
    original = _jaxlibs()
    another_jaxlib, calls = _counting(original, differ_on=3)
    serializer = export_speedups.VhloSerializer(another_jaxlib, entries=100, check_every=2)
    texts = _jax_texts()
    assert serializer(texts[0]) == original(texts[0])  # checked (1st of the first 2)
    assert serializer(texts[1]) == original(texts[1])  # checked (2nd)
    assert serializer(texts[2]) == original(texts[2]) and len(calls) == 2  # not checked
    assert serializer(texts[3]) == b"another jaxlib's bytecode"  # checked (4th): differs
    assert not serializer.agrees  # what it kept is forgotten but jaxlib's answer
    assert serializer.kept == {texts[3]: b"another jaxlib's bytecode"}
    assert serializer(texts[2]) == original(texts[2]) and len(calls) == 4  # jaxlib's way for good


def test_vhlo_gives_up_when_jaxlib_refuses_what_it_took() -> None:
    original = _jaxlibs()
    another_jaxlib, _ = _counting(original, raise_on=1)
    serializer = export_speedups.VhloSerializer(another_jaxlib, entries=100, check_every=2)
    with pytest.raises(ValueError, match="refused"):
        serializer(_jax_texts()[0])
    assert not serializer.agrees


def test_vhlo_text_the_module_path_refuses_goes_through_jaxlibs_path() -> None:
    another_jaxlib, calls = _counting(_jaxlibs())
    serializer = export_speedups.VhloSerializer(another_jaxlib, entries=100, check_every=2)
    with pytest.raises(Exception):  # noqa: B017 - jaxlib's own error for text that is not MLIR
        serializer("not mlir")
    assert calls == ["not mlir"] and serializer.calls == 0


def test_vhlo_path_only_over_the_litert_torch_and_jaxlib_it_was_compared_with(monkeypatch) -> None:
    another_jaxlib, _ = _counting(_jaxlibs())
    monkeypatch.setattr(export_speedups, "_source_sha256", lambda f: "another litert-torch")
    assert not isinstance(export_speedups._vhlo_in_jax_context(another_jaxlib),
                          export_speedups.VhloSerializer)
    monkeypatch.setattr(export_speedups, "_source_sha256",
                        lambda f: export_speedups._TO_VHLO_SHA256)
    assert isinstance(export_speedups._vhlo_in_jax_context(another_jaxlib),
                      export_speedups.VhloSerializer)
    monkeypatch.setattr(export_speedups, "_jaxlib_version", lambda: "0.11.0")
    assert not isinstance(export_speedups._vhlo_in_jax_context(another_jaxlib),
                          export_speedups.VhloSerializer)


def test_switched_off_installs_nothing(monkeypatch) -> None:
    export_speedups.uninstall()
    monkeypatch.setenv(export_speedups.SWITCH_ENV, "off")
    export_speedups.install()
    assert not export_speedups._ORIGINALS
    assert not getattr(exported_program._collect_all_valid_cia_ops, "lutnas_memo", False)


@pytest.mark.slow
def test_tflite_files_are_byte_identical_with_and_without_the_speed_ups(elasticvit_space,
                                                                         tmp_path,
                                                                         monkeypatch) -> None:
    from lutnas.profiler import converter

    converter.litert_torch()
    # Two blocks of the same widths one after the other (the second reuses JAX lowerings of the
    # first), an attention block and a feed-forward one: every kind of lowering the memo serves.
    blocks = elasticvit_space.unique_blocks([128])
    mbconv = [s for s in blocks if s.kind == "mbconv" and s.hw <= 8][:2]
    others = [next(s for s in blocks if s.kind == kind) for kind in ("attn", "ffn")]
    specs = mbconv + others
    from jax._src.interpreters import mlir
    from litert_torch.backend.jax_bridge import _wrap
    from torch.fx.traceback import NodeSource

    shas = {}
    for mode in ("on", "off"):
        export_speedups.uninstall()
        if mode == "off":  # export_spec installs the speed-ups unless they are switched off
            monkeypatch.setenv(export_speedups.SWITCH_ENV, "off")
        cache = ModelCache(tmp_path / mode)
        shas[mode] = {s.key: export_spec(s, "tflite", cache).sha256 for s in specs}
        speed_ups = [exported_program._override_composite_implicit_decomp is
                     export_speedups.fast_cia_override,
                     NodeSource.__init__ is export_speedups._node_source_init,
                     getattr(mlir.make_ir_context, "lutnas_shared", False),
                     isinstance(_wrap._stablehlo_to_vhlo, export_speedups.VhloSerializer)]
        assert speed_ups == [mode == "on"] * 4
        if mode == "on":
            serializer = _wrap._stablehlo_to_vhlo
            assert serializer.calls > 0 and serializer.agrees  # its own bytecode, never refused
            assert serializer.hits > 0  # the memo served the second block
    assert shas["on"] == shas["off"]


@pytest.mark.slow
def test_pte_files_are_byte_identical_with_and_without_the_speed_ups(elasticvit_space,
                                                                      tmp_path,
                                                                      monkeypatch) -> None:
    """ExecuTorch runs torch's decompositions as well: the CIA memo and the fast override serve
    it; its files must not change either."""
    blocks = elasticvit_space.unique_blocks([128])
    specs = [next(s for s in blocks if s.kind == kind) for kind in ("mbconv", "attn")]
    from torch.fx.traceback import NodeSource

    shas = {}
    for mode in ("on", "off"):
        export_speedups.uninstall()
        if mode == "off":  # export_spec installs the speed-ups unless they are switched off
            monkeypatch.setenv(export_speedups.SWITCH_ENV, "off")
        cache = ModelCache(tmp_path / mode)
        shas[mode] = {s.key: export_spec(s, "pte", cache).sha256 for s in specs}
        assert (NodeSource.__init__ is export_speedups._node_source_init) == (mode == "on")
    assert shas["on"] == shas["off"]
