#!/usr/bin/env python3
"""Rebuild the ONNX models in this folder from the mediapipe==0.10.21 wheel.

What it does, so that anyone can check our models against their source:
1. downloads (does not install) the pinned mediapipe wheel from PyPI and
   verifies its sha256 (via guidance.samples, the same checksummed fetcher the
   tests use);
2. extracts the .tflite files we use and verifies each sha256;
3. creates a throwaway virtual environment with tensorflow-cpu and tf2onnx
   (pinned below), converts each model to ONNX there, and deletes it;
   models listed in DENSIFY first go through densify_tflite.py, which turns
   their sparse constant weights into dense ones (tf2onnx cannot read
   TFLite's sparse tensors) and checks the result against TFLite itself;
   every ONNX file then goes through canonicalize_onnx.py, which renames
   tf2onnx's run-dependent constant names so a rebuild gives the same bytes;
4. extracts the face-mesh topology (edge sets from
   mediapipe/python/solutions/face_mesh_connections.py) as JSON, and the
   wheel's LICENSE (Apache-2.0) as LICENSE.mediapipe.txt;
5. writes MANIFEST.json with every sha256 and the converter versions;
   models/README.md quotes it.

The runtime never imports mediapipe or TensorFlow: it loads the .onnx files
with onnxruntime and checks them against MANIFEST.json.

Usage:  python models/build.py            (from the repository root, project venv active)
        python models/build.py --keep-env DIR   (reuse a converter venv)
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from guidance import samples  # noqa: E402

import bundle  # noqa: E402  (models/bundle.py, beside this script)

CONVERTER_PINS = ["tensorflow-cpu==2.15.1", "tf2onnx==1.16.1", "onnx==1.17.0", "numpy<2"]
OPSET = 13

# model name in models/ -> sample key of the tflite file in the mediapipe wheel
MODELS = {
    "face_detection_short_range": "face_detection_short_range.tflite",
    "face_landmark": "face_landmark.tflite",
    "iris_landmark": "iris_landmark.tflite",
    "pose_landmark_full": "pose_landmark_full.tflite",
    "pose_detection": "pose_detection.tflite",
}

# Models whose tflite holds sparse weights (DENSIFY ops): pre-pass needed.
DENSIFY = {"pose_detection"}
DENSIFY_SCRIPT = HERE / "densify_tflite.py"
CANONICALIZE_SCRIPT = HERE / "canonicalize_onnx.py"

TOPOLOGY_SOURCE = "mediapipe/python/solutions/face_mesh_connections.py"
# Apache-2.0 asks that redistributions carry the licence: copied verbatim from the wheel.
LICENCE_SOURCE = "mediapipe-0.10.21.dist-info/LICENSE"
LICENCE_FILE = "LICENSE.mediapipe.txt"


def converter_env(keep: Path | None, tmp: Path) -> Path:
    env = keep or (tmp / "convenv")
    py = env / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *CONVERTER_PINS], check=True)
    return py


def run(cmd: list[str]) -> None:
    """Run a converter step; on failure show its output, which capture would hide."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def converter_versions(py: Path) -> dict[str, str]:
    code = ("import tensorflow, tf2onnx, onnx, json; print(json.dumps({'tensorflow-cpu': tensorflow.__version__, "
            "'tf2onnx': tf2onnx.__version__, 'onnx': onnx.__version__}))")
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def previous_manifest() -> dict:
    return bundle.read_manifest()


def extract_topology(wheel: Path) -> dict:
    """Parse the connection frozensets without importing mediapipe."""
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read(TOPOLOGY_SOURCE).decode()
    tree = ast.parse(source)
    sets: dict[str, list[list[int]]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            name = node.targets[0].id
            call = node.value
            if getattr(call.func, "id", None) == "frozenset" and call.args:
                try:
                    edges = ast.literal_eval(call.args[0])
                except ValueError:
                    continue  # unions of other sets: we keep only the literal ones
                sets[name] = sorted([list(e) for e in edges])
    return {"source": f"mediapipe==0.10.21 {TOPOLOGY_SOURCE}", "licence": "Apache-2.0", "connections": sets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-env", type=Path, help="converter venv to create or reuse")
    args = ap.parse_args(argv)

    wheel = samples.fetch_dist("mediapipe")
    manifest: dict = {
        "source_wheel": {"file": samples.DISTS["mediapipe"].filename, "sha256": samples.DISTS["mediapipe"].sha256},
        "opset": OPSET,
        "postpass": CANONICALIZE_SCRIPT.name,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        py = converter_env(args.keep_env, tmp)
        manifest["converter"] = converter_versions(py)
        for name, key in MODELS.items():
            tflite = samples.fetch(key)
            out = tmp / f"{name}.onnx"  # moved into models/ only once every model converted
            entry = {
                "file": "models/" + out.name,
                "sha256": "",
                "tflite": samples.MEMBERS[key].member,
                "tflite_sha256": samples.MEMBERS[key].sha256,
            }
            if name in DENSIFY:
                dense = tmp / f"{name}.dense.tflite"
                run([str(py), str(DENSIFY_SCRIPT), str(tflite), str(dense)])
                entry["prepass"] = DENSIFY_SCRIPT.name
                entry["tflite_dense_sha256"] = samples.sha256_file(dense)
                tflite = dense
            run([str(py), "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(out), "--opset", str(OPSET)])
            run([str(py), str(CANONICALIZE_SCRIPT), str(out)])
            entry["sha256"] = samples.sha256_file(out)
            manifest["models"][name] = entry
            print(f"{name}: {manifest['models'][name]['sha256']}")
        for name in MODELS:
            shutil.move(str(tmp / f"{name}.onnx"), str(bundle.MODELS / f"{name}.onnx"))

    topo = extract_topology(wheel)
    topo_path = bundle.MODELS / "face_mesh_topology.json"
    topo_path.write_text(json.dumps(topo, separators=(",", ":")) + "\n")
    licence = bundle.MODELS / LICENCE_FILE
    with zipfile.ZipFile(wheel) as zf:
        licence.write_bytes(zf.read(LICENCE_SOURCE))
    # Other data files in models/ (made by their own scripts) keep their entries.
    manifest["data"] = dict(previous_manifest().get("data", {}))
    manifest["data"]["face_mesh_topology"] = {"file": "models/" + topo_path.name, "sha256": samples.sha256_file(topo_path)}
    manifest["data"]["mediapipe_licence"] = {"file": "models/" + licence.name, "sha256": samples.sha256_file(licence), "source": LICENCE_SOURCE}
    bundle.write_manifest({**bundle.read_manifest(), **manifest})
    print("wrote", bundle.MANIFEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
