#!/usr/bin/env python3
"""Build the tiny hand-made ONNX models used by pulsewatch's tests.

    python tests/data/models/make_fixtures.py

Needs only the ``onnx`` and ``numpy`` packages; the output is deterministic
(rerunning it rewrites byte-identical files next to this script). Every model
uses opset 17 and IR version 8, takes a float32 input ``window`` and produces
a float32 output ``reconstruction``, and (except no_metadata.onnx) carries the
pulsewatch metadata JSON under metadata_props["pulsewatch"].

  zero_w4_c2.onnx        [batch,4,2] -> input * 0; channels a(mean 10, std 2),
                         b(mean 100, std 10); threshold 2.0, step 60 s.
                         Error = mean of z^2, so score = mean(z^2) / 2.
  zero_w4_c1.onnx        [batch,4,1] -> input * 0; value(mean 0, std 1);
                         threshold 1.0, step 60 s.
  half_w4_c1.onnx        like zero_w4_c1 but input * 0.5 (error = mean(z^2)/4);
                         used to test hot-swapping.
  fixed_batch_w4_c1.onnx like zero_w4_c1 but the batch dimension is fixed to 1.
  unsupported_op.onnx    [batch,4,1] through one node of the unknown op
                         PulsewatchNoSuchOp (the ONNX checker rejects it).
  bad_output_shape.onnx  [batch,4,1] -> [batch,2,1] (Slice of the first 2 steps).
  no_metadata.onnx       zero_w4_c1 without metadata_props.
  float64_w4_c1.onnx     like zero_w4_c1 in float64.
  batch2_w4_c1.onnx      like zero_w4_c1 with the batch fixed to 2.
  window_20000_c1.onnx   like zero_w4_c1 with a window of 20,000 samples.
  lstm_no_initial_state.onnx
                         [batch,4,1] through an LSTM without initial state: a
                         valid model on which tract panics while loading.
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OPSET = 17
IR_VERSION = 8
HERE = os.path.dirname(os.path.abspath(__file__))

C1 = [{"name": "value", "mean": 0, "std": 1}]
C2 = [{"name": "a", "mean": 10, "std": 2}, {"name": "b", "mean": 100, "std": 10}]


def metadata(channels, threshold, step_seconds=60):
    return json.dumps({"format": 1, "channels": channels, "threshold": threshold, "step_seconds": step_seconds},
                      sort_keys=False)


def value_info(name, shape, elem_type=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def make(name, nodes, initializers, in_shape, out_shape, meta, check=True, elem_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        name.removesuffix(".onnx"),
        [value_info("window", in_shape, elem_type)],
        [value_info("reconstruction", out_shape, elem_type)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pulsewatch-fixtures", producer_version="1")
    model.ir_version = IR_VERSION
    if meta is not None:
        helper.set_model_props(model, {"pulsewatch": meta})
    if check:
        onnx.checker.check_model(model, full_check=True)
    path = os.path.join(HERE, name)
    data = model.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)
    assert len(data) < 2048, f"{name}: {len(data)} bytes"
    print(f"{name}: {len(data)} bytes")
    return model


def scale(name, factor, channels, threshold, batch="batch", meta=True):
    c = len(channels)
    k = numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor")
    node = helper.make_node("Mul", ["window", "factor"], ["reconstruction"])
    model = make(name, [node], [k], [batch, 4, c], [batch, 4, c],
                 metadata(channels, threshold) if meta else None)
    sess = ReferenceEvaluator(model)
    for bs in ([1] if batch == 1 else [1, 3]):
        x = np.arange(bs * 4 * c, dtype=np.float32).reshape(bs, 4, c) - 5
        (y,) = sess.run(None, {"window": x})
        assert y.shape == x.shape and y.dtype == np.float32 and np.array_equal(y, x * np.float32(factor)), name
    return model


def main():
    scale("zero_w4_c2.onnx", 0.0, C2, 2.0)
    scale("zero_w4_c1.onnx", 0.0, C1, 1.0)
    scale("half_w4_c1.onnx", 0.5, C1, 1.0)
    scale("fixed_batch_w4_c1.onnx", 0.0, C1, 1.0, batch=1)
    scale("no_metadata.onnx", 0.0, C1, 1.0, meta=False)

    make("unsupported_op.onnx",
         [helper.make_node("PulsewatchNoSuchOp", ["window"], ["reconstruction"])],
         [], ["batch", 4, 1], ["batch", 4, 1], metadata(C1, 1.0), check=False)

    ints = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    model = make("bad_output_shape.onnx",
                 [helper.make_node("Slice", ["window", "starts", "ends", "axes"], ["reconstruction"])],
                 [ints("starts", [0]), ints("ends", [2]), ints("axes", [1])],
                 ["batch", 4, 1], ["batch", 2, 1], metadata(C1, 1.0))
    (y,) = ReferenceEvaluator(model).run(None, {"window": np.ones((3, 4, 1), np.float32)})
    assert y.shape == (3, 2, 1)

    # Valid models pulsewatch refuses: float64 in and out, a batch fixed at 2, a window too long.
    mul = helper.make_node("Mul", ["window", "factor"], ["reconstruction"])
    zero64 = numpy_helper.from_array(np.array(0.0, dtype=np.float64), "factor")
    make("float64_w4_c1.onnx", [mul], [zero64], ["batch", 4, 1], ["batch", 4, 1], metadata(C1, 1.0),
         elem_type=TensorProto.DOUBLE)
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "factor")
    make("batch2_w4_c1.onnx", [mul], [zero], [2, 4, 1], [2, 4, 1], metadata(C1, 1.0))
    make("window_20000_c1.onnx", [mul], [zero], ["batch", 20000, 1], ["batch", 20000, 1], metadata(C1, 1.0))

    # A valid LSTM without initial_h/initial_c: tract asks the symbolic batch size for a number
    # and panics while loading it, which pulsewatch must turn into an error.
    floats = lambda name, shape: numpy_helper.from_array(np.full(shape, 0.1, dtype=np.float32), name)  # noqa: E731
    model = make("lstm_no_initial_state.onnx",
                 [helper.make_node("Transpose", ["window"], ["x"], perm=[1, 0, 2]),
                  helper.make_node("LSTM", ["x", "w", "r", "b"], ["y"], hidden_size=1),
                  helper.make_node("Squeeze", ["y", "axis"], ["y3"]),
                  helper.make_node("Transpose", ["y3"], ["reconstruction"], perm=[1, 0, 2])],
                 [floats("w", [1, 4, 1]), floats("r", [1, 4, 1]), floats("b", [1, 8]), ints("axis", [1])],
                 ["batch", 4, 1], ["batch", 4, 1], metadata(C1, 1.0))
    (y,) = ReferenceEvaluator(model).run(None, {"window": np.ones((3, 4, 1), np.float32)})
    assert y.shape == (3, 4, 1)


if __name__ == "__main__":
    main()
