#!/usr/bin/env python3
"""Give a tf2onnx output stable tensor names so a rebuild is byte-identical.

Why: tf2onnx 1.16 numbers the constants it creates (``const_fold_opt__471``,
``pad_const__70``...) in an order that depends on object addresses, so two
conversions of the same .tflite differ in names and initializer order (not in
the graph) and get different sha256s. The sha256 in MANIFEST.json is how the
runtime refuses a tampered model, and how anyone checks that our models come
from mediapipe's; both work better if rebuilding reproduces the same bytes.

The same goes for node names: when tf2onnx merges duplicate nodes (two
identical max pools in face_landmark) the survivor's name is whichever it met
first. So this renames every node to ``n<k>_<OpType>`` and every tensor that is
neither a graph input nor a graph output to ``t<k>``, k in order of first
appearance walking the nodes (initializers are named when first consumed),
orders the initializers the same way, drops value_info (shape hints
onnxruntime re-infers) and the doc string (it holds the converter's temporary
input path). Graph inputs and outputs keep their tflite names; ops, attributes,
weights and node order are untouched, and the numbers are checked by
tests/test_model_fidelity.py.

Runs in models/build.py's converter environment (needs the onnx package).

Usage:  python canonicalize_onnx.py MODEL.onnx      (rewrites it in place)
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    if any(True for n in g.node for _ in _subgraphs(n)):
        raise ValueError("graphs with subgraphs (If/Loop) are not handled")
    fixed = {v.name for v in g.input} | {v.name for v in g.output} | {""}
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if name in fixed:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    for k, node in enumerate(g.node):
        # tf2onnx merges duplicate nodes (face_landmark has two identical max
        # pools) keeping whichever name it meets first, so names go too.
        node.name = f"n{k}_{node.op_type}"
        node.input[:] = [rename(x) for x in node.input]
        node.output[:] = [rename(x) for x in node.output]
    order = {new: k for k, new in enumerate(names.values())}
    inits = list(g.initializer)
    for init in inits:
        if init.name not in names:
            raise ValueError(f"initializer {init.name!r} is not used by any node")
        init.name = names[init.name]
    inits.sort(key=lambda t: order[t.name])
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    model.doc_string = ""
    g.doc_string = ""
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(args[0])
    model = canonicalize(onnx.load(str(path)))
    onnx.save(model, str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
