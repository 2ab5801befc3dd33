"""Which host interpreter runs a .tflite file, and which versions are installed.

LiteRT (`ai_edge_litert`) is the default; `tflite_runtime` and TensorFlow's `tf.lite` are used when
they are what a user has (tflite-runtime 2.14 imports under numpy 2 but fails to create an
interpreter, so a failure to construct falls through to the next candidate). The name of the one
used is recorded with every measurement, since two builds of one runtime measure differently.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

from lutnas.errors import DeviceError

TFLITE_CANDIDATES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow", "tensorflow.lite", "tensorflow"),
)


def package_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def load_tflite_interpreter(model_path: str, threads: int = 1) -> Any:
    """An Interpreter for `model_path` from the first TFLite runtime that works here."""
    interpreter, _ = load_tflite_interpreter_named(model_path, threads)
    return interpreter


def load_tflite_interpreter_named(model_path: str, threads: int = 1) -> tuple[Any, str]:
    """Like `load_tflite_interpreter`, also returning `name==version` of the runtime used."""
    failures = []
    for name, module_name, distribution in TFLITE_CANDIDATES:
        try:
            module = import_module(module_name)
            interpreter = module.Interpreter(model_path=model_path, num_threads=threads)
        except Exception as exc:  # ImportError, or a runtime that imports but cannot run here
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        return interpreter, f"{name}=={package_version(distribution)}"
    raise DeviceError(
        "no TFLite interpreter works here (" + "; ".join(failures) + "); install ai-edge-litert"
    )


def runtime_versions() -> dict[str, str]:
    return {dist: package_version(dist) for dist in
            ("ai-edge-litert", "tflite-runtime", "tensorflow", "onnxruntime", "torch", "executorch",
             "numpy")}
