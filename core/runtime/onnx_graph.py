"""An ONNX file read and cut down without the onnx package's Python code.

``import onnx`` costs about a second (its helpers, reference evaluator and ml_dtypes), most of the line
application's start-up; the runtime needs only its protobuf messages (``onnx.onnx_ml_pb2``, generated code over
``google.protobuf``), loaded here on their own. :func:`cut` keeps the nodes, constants and outputs that the named
outputs depend on: inspection without the reconstruction then never runs the denoiser (ONNX Runtime runs every node
of a graph, whatever outputs are asked for).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

PB2 = "onnx.onnx_ml_pb2"


def messages() -> Any:
    """The ONNX protobuf module (``ModelProto`` ...), or None where the onnx package is not installed. Registered
    under its own name, so a later ``import onnx`` uses this same module."""
    if PB2 in sys.modules:
        return sys.modules[PB2]
    parent = importlib.util.find_spec("onnx")  # a top-level name: found, not imported
    if parent is None or not parent.submodule_search_locations:
        return None
    for finder in sys.meta_path:  # the path finder from source, PyInstaller's importer in a bundle
        find = getattr(finder, "find_spec", None)
        spec = find(PB2, list(parent.submodule_search_locations)) if find else None
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[PB2] = module
            try:
                spec.loader.exec_module(module)
            except Exception:
                del sys.modules[PB2]
                raise
            return module
    return None


def cut(model: Any, outputs: list[str]) -> Any | None:
    """A copy of ``model`` (a ``ModelProto``) with only what ``outputs`` need; None where the graph has nested
    graphs (control flow), which this does not follow."""
    graph = model.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for node in graph.node for a in node.attribute):
        return None
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):  # nodes are stored in topological order
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    out = type(model)()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(reversed(kept))
    for field in (g.initializer, g.value_info):
        keep = [item for item in field if item.name in needed]
        del field[:]
        field.extend(keep)
    keep_out = [o for o in graph.output if o.name in outputs]
    del g.output[:]
    g.output.extend(keep_out)
    return out
