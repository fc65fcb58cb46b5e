"""The runtime reads and cuts ONNX graphs with onnx's protobuf messages alone (no `import onnx`: start-up time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from core.runtime import onnx_graph

ROOT = Path(__file__).resolve().parent.parent


def _two_branch_model() -> onnx.ModelProto:
    """x -> Relu -> cheap; x -> Mul(w) -> Sigmoid -> costly (w a constant only the second branch uses)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in ("cheap", "costly")]
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["cheap"]), helper.make_node("Mul", ["x", "w"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["costly"])]
    graph = helper.make_graph(nodes, "g", [x], outs, initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_cut_graph_keeps_only_what_its_outputs_need_and_gives_the_same_values():
    model = _two_branch_model()
    pb2 = onnx_graph.messages()
    proto = pb2.ModelProto()
    proto.ParseFromString(model.SerializeToString())
    cut = onnx_graph.cut(proto, ["cheap"])
    assert [n.op_type for n in cut.graph.node] == ["Relu"]
    assert [o.name for o in cut.graph.output] == ["cheap"] and not cut.graph.initializer
    assert len(proto.graph.node) == 3  # the original is left whole
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    lean = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(lean.run(["cheap"], {"x": x})[0], whole.run(["cheap"], {"x": x})[0])
    both = onnx_graph.cut(proto, ["costly"])
    assert {n.op_type for n in both.graph.node} == {"Mul", "Sigmoid"}
    assert [i.name for i in both.graph.initializer] == ["w"]


def test_the_messages_load_without_importing_onnx_and_onnx_still_imports_after():
    code = ("import sys; from core.runtime import onnx_graph; m = onnx_graph.messages(); "
            "assert m is not None and hasattr(m, 'ModelProto'); assert 'onnx' not in sys.modules; "
            "import onnx; assert onnx.ModelProto is m.ModelProto; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
