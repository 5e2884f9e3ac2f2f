#!/usr/bin/env python3
"""Rewrite a .tflite model that stores sparse constant tensors as a dense one.

Why this exists: mediapipe's ``pose_detection.tflite`` keeps 38 of its
convolution weights (float16) in TFLite's sparse format -- a tensor with
``sparsity`` metadata whose value is produced at run time by a DENSIFY op --
and tf2onnx 1.16 cannot read such tensors (it reshapes the packed non-zeros to
the dense shape and fails; TF's own ``Interpreter.get_tensor_details`` even
segfaults on them). The weights are constants, so densifying them ahead of
time changes no arithmetic: each DENSIFY op is removed, its output tensor gets
the dense values as a constant buffer, and the sparse tensor is dropped.

The sparse layout is decoded here from the TFLite schema (the
``SparsityParameters`` table, see tensorflow/lite/schema/schema.fbs): the dense
tensor, reshaped to its blocked form (one axis per original dimension, sized
dim/block, followed by one axis per block dimension), is walked in
``traversal_order``; each level in ``dim_metadata`` is either DENSE (every
index 0..dense_size-1) or SPARSE_CSR (for parent position p, the indices
``array_indices[array_segments[p]:array_segments[p+1]]``). The stored values
are the leaves of that walk in order.

Trust, but verify: ``verify`` (run by models/build.py) checks every decoded
tensor bit-for-bit against what TensorFlow Lite's own DENSIFY kernel produces,
and checks that the dense model gives exactly the same outputs as the
original (both run on TFLite's builtin kernels, one thread).

Runs in models/build.py's converter environment (the verification needs
tensorflow); the decoding itself needs only numpy, flatbuffers and the
generated TFLite schema, which ai-edge-litert also ships, so the tests can
exercise it. Never imported by the guidance runtime.

Usage:  python densify_tflite.py IN.tflite OUT.tflite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import flatbuffers
import numpy as np

try:
    from tensorflow.lite.python import schema_py_generated as schema
except ImportError:  # the project venv: ai-edge-litert ships the same generated schema
    from ai_edge_litert import schema_py_generated as schema

_FILE_IDENTIFIER = b"TFL3"

_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.FLOAT64: np.float64,
}


def _vector(v) -> np.ndarray:
    """The values of an Int32Vector/Uint16Vector/Uint8Vector union member."""
    if v is None or v.values is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(v.values, dtype=np.int64)


def sparse_to_dense(values: np.ndarray, shape: list[int], sparsity) -> np.ndarray:
    """Dense array of `shape` from the packed `values` and a SparsityParametersT.

    The walk is done one level at a time, breadth first, which yields the
    leaves in the same (lexicographic, traversal-order) sequence as the
    depth-first walk that defines the format.
    """
    rank = len(shape)
    order = [int(x) for x in sparsity.traversalOrder]
    block_map = [int(x) for x in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    levels = sparsity.dimMetadata
    if len(order) != rank + len(block_map) or len(levels) != len(order):
        raise ValueError(f"inconsistent sparsity metadata: rank {rank}, traversal {order}, block map {block_map}, {len(levels)} levels")
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"traversal order {order} is not a permutation")

    # Coordinate along each expanded axis (original axes, then block axes) for every leaf.
    parent = np.zeros(1, dtype=np.int64)  # position in the previous level
    coords: dict[int, np.ndarray] = {}
    block_size: dict[int, int] = {}
    for level, (axis, meta) in enumerate(zip(order, levels)):
        if meta.format == schema.DimensionType.DENSE:
            n = int(meta.denseSize)
            idx = np.tile(np.arange(n, dtype=np.int64), parent.size)
            reps = np.full(parent.size, n, dtype=np.int64)
            pos = np.repeat(parent, n) * n + idx
        elif meta.format == schema.DimensionType.SPARSE_CSR:
            seg = _vector(meta.arraySegments)
            ind = _vector(meta.arrayIndices)
            start, stop = seg[parent], seg[parent + 1]
            reps = stop - start
            if np.any(reps < 0) or (reps.size and stop.max() > ind.size):
                raise ValueError(f"level {level}: array_segments out of range")
            pos = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in zip(start, stop)]) if reps.sum() else np.zeros(0, dtype=np.int64)
            idx = ind[pos]
        else:
            raise ValueError(f"level {level}: unknown dimension format {meta.format}")
        for k in coords:
            coords[k] = np.repeat(coords[k], reps)
        coords[axis] = idx
        parent = pos
        if axis >= rank:
            block_size[axis - rank] = int(meta.denseSize)

    if parent.size != values.size:
        raise ValueError(f"metadata describes {parent.size} stored values, buffer holds {values.size}")

    orig = [coords[d].copy() for d in range(rank)]
    for b, d in enumerate(block_map):
        orig[d] = orig[d] * block_size[b] + coords[rank + b]
    for d in range(rank):
        if orig[d].size and (orig[d].min() < 0 or orig[d].max() >= shape[d]):
            raise ValueError(f"axis {d}: index out of range for shape {shape}")
    dense = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    flat = np.ravel_multi_index(orig, shape) if rank else np.zeros(values.size, dtype=np.int64)
    if np.unique(flat).size != flat.size:
        raise ValueError("sparse metadata maps two values to the same element")
    dense[flat] = values
    return dense.reshape(shape)


def read_model(path: Path):
    """The .tflite flatbuffer as a mutable object tree (schema ModelT)."""
    buf = bytearray(Path(path).read_bytes())
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


def model_bytes(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _opcode(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def densify_model(model) -> dict[str, str]:
    """Remove every DENSIFY op of `model` (a ModelT) in place.

    Returns {dense tensor name: sparse tensor name} for the verification step.
    """
    replaced: dict[str, str] = {}
    for sg in model.subgraphs:
        keep_ops = []
        drop: set[int] = set()
        for op in sg.operators:
            if _opcode(model, op) != schema.BuiltinOperator.DENSIFY:
                keep_ops.append(op)
                continue
            (src,), (dst,) = list(op.inputs), list(op.outputs)
            ts, td = sg.tensors[src], sg.tensors[dst]
            if ts.sparsity is None or model.buffers[ts.buffer].data is None:
                raise ValueError(f"DENSIFY input {ts.name!r} is not a constant sparse tensor")
            dtype = _NUMPY_TYPES[ts.type]
            values = np.frombuffer(bytes(np.asarray(model.buffers[ts.buffer].data, dtype=np.uint8)), dtype=dtype)
            dense = sparse_to_dense(values, [int(x) for x in ts.shape], ts.sparsity)
            if list(td.shape) != list(dense.shape) or td.type != ts.type:
                raise ValueError(f"DENSIFY output {td.name!r} does not match its input's dense shape/type")
            buf = schema.BufferT()
            buf.data = np.frombuffer(dense.astype(dense.dtype.newbyteorder("<")).tobytes(), dtype=np.uint8)
            model.buffers.append(buf)
            td.buffer = len(model.buffers) - 1
            model.buffers[ts.buffer].data = None  # the packed values are no longer referenced
            drop.add(src)
            replaced[td.name.decode()] = ts.name.decode()
        sg.operators = keep_ops
        _drop_tensors(model, sg, drop)
    _drop_unused_opcodes(model)
    return replaced


def _drop_tensors(model, sg, drop: set[int]) -> None:
    """Delete tensors `drop` from subgraph `sg` and renumber every reference."""
    if not drop:
        return
    used = {i for op in sg.operators for i in list(op.inputs) + list(op.outputs)}
    if used & drop:
        raise ValueError("a dropped sparse tensor is still used by an op")
    remap = {}
    kept = []
    for i, t in enumerate(sg.tensors):
        if i not in drop:
            remap[i] = len(kept)
            kept.append(t)
    sg.tensors = kept

    def re(ix):
        return [remap[int(i)] if int(i) >= 0 else int(i) for i in ix] if ix is not None else None

    for op in sg.operators:
        op.inputs, op.outputs = re(op.inputs), re(op.outputs)
        op.intermediates = re(op.intermediates)
    sg.inputs, sg.outputs = re(sg.inputs), re(sg.outputs)
    for sig in model.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = remap[int(tm.tensorIndex)]


def _drop_unused_opcodes(model) -> None:
    used = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for sg in model.subgraphs:
        for op in sg.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def verify(original: Path, dense: Path, replaced: dict[str, str]) -> float:
    """Check the dense model against TensorFlow Lite running the original.

    Every densified weight must equal, bit for bit, the tensor TFLite's DENSIFY
    kernel produced; the model outputs on a fixed pseudo-random input must
    agree. Returns the largest absolute output difference.
    """
    import tensorflow as tf

    # Without the default XNNPACK delegate and on one thread (several threads
    # split the matrix products differently from run to run) both models run
    # the same builtin kernels on the same weights: outputs must be identical.
    plain = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    ref = tf.lite.Interpreter(model_path=str(original), experimental_preserve_all_tensors=True,
                                 experimental_op_resolver_type=plain, num_threads=1)
    ref.allocate_tensors()
    new = tf.lite.Interpreter(model_path=str(dense), experimental_op_resolver_type=plain, num_threads=1)
    new.allocate_tensors()
    inputs = []
    rng = np.random.default_rng(0)
    for d in ref.get_input_details():
        x = rng.uniform(-1.0, 1.0, size=d["shape"]).astype(d["dtype"])
        inputs.append(x)
        ref.set_tensor(d["index"], x)
    for d, x in zip(new.get_input_details(), inputs):
        new.set_tensor(d["index"], x)
    ref.invoke()
    new.invoke()

    # get_tensor_details() crashes on the original (the reason for this
    # script), so find tensors by name through the flatbuffer instead.
    ref_model = read_model(original)
    new_model = read_model(dense)
    ref_index = {t.name.decode(): i for i, t in enumerate(ref_model.subgraphs[0].tensors)}
    for t in new_model.subgraphs[0].tensors:
        name = t.name.decode()
        if name in replaced:
            want = ref.get_tensor(ref_index[name])
            dtype = _NUMPY_TYPES[t.type]
            got = np.frombuffer(bytes(np.asarray(new_model.buffers[t.buffer].data, dtype=np.uint8)), dtype=dtype).reshape(t.shape)
            if want.shape != got.shape or want.tobytes() != got.tobytes():
                raise AssertionError(f"{name}: densified values differ from TFLite's DENSIFY output")
    worst = 0.0
    for a, b in zip(ref.get_output_details(), new.get_output_details()):
        ya, yb = ref.get_tensor(a["index"]), new.get_tensor(b["index"])
        if ya.shape != yb.shape:
            raise AssertionError(f"output {a['name']}: shape {ya.shape} vs {yb.shape}")
        diff = float(np.max(np.abs(ya.astype(np.float64) - yb)))
        worst = max(worst, diff)
        if diff != 0.0:
            raise AssertionError(f"output {a['name']}: dense model differs from original by {diff}")
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--no-verify", action="store_true", help="skip the check against TFLite (for debugging only)")
    args = ap.parse_args(argv)
    model = read_model(args.src)
    replaced = densify_model(model)
    args.dst.write_bytes(model_bytes(model))
    msg = f"{args.src.name}: densified {len(replaced)} tensors"
    if not args.no_verify:
        worst = verify(args.src, args.dst, replaced)
        msg += f"; weights identical to TFLite's DENSIFY output; max output difference {worst:.3g}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
