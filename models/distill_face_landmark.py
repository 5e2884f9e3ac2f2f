#!/usr/bin/env python3
"""Make face_landmark_occlusion.onnx: the face landmark model taught to look past the handpiece.

Why: the handpiece in front of the face moves the original model's landmarks
(about 3 px over the whole face, not only under the tip; docs/face_template.md),
which puts the tip about 3 mm off on the face chart. Filling the handpiece's
pixels with the true face removes almost all of that error, so the model is
reacting to the occluder. Here the model is fine-tuned by self-distillation:
the student (initialised with the original weights) sees the crop with the
handpiece rendered in front of the face, and is taught the teacher's answer on
the same crop without it (models/occlusion_pairs.py makes the pairs). Clean
crops are in every batch too, so the student keeps the teacher's answers where
nothing is in the way. The held-out face (single_face.mp4, the demo's face) is
never trained on; its pairs are the validation figures.

Crops with no face are in every batch as well (models/nonface_crops.py),
taught only the teacher's presence: without them the student learns that every
crop is a face, and a tracker that cannot lose the face does not fail closed.
Their validation figures come from no_face.mp4 and a landscape, never trained on.

The graph is not rebuilt: a small interpreter runs face_landmark.onnx's nodes
with torch ops for training, and the trained weights are written back into a
copy of the same ONNX graph, so the runtime model has exactly the original's
structure, inputs and outputs. The copy is checked against the interpreter on
the validation crops before it is written.

Usage (from the repository root):
    python models/distill_face_landmark.py              # pairs, training env, train, write, MANIFEST
    python models/distill_face_landmark.py --keep-env DIR --pairs-dir DIR
Step by step (what the default does; PAIR_RUNS below lists the pair maker's arguments):
    python models/occlusion_pairs.py PAIRS/train_a.npz --per-frame 4 --seed 1 --only ...   (and b, c, val)
    python models/nonface_crops.py PAIRS/nonface.npz --per-frame 3 --seed 11               (and nonface_val)
    TRAINENV/bin/python models/distill_face_landmark.py train PAIRS/train_a.npz,PAIRS/train_b.npz,PAIRS/train_c.npz \
        PAIRS/val.npz OUT.onnx --nonface PAIRS/nonface.npz --nonface-val PAIRS/nonface_val.npz
Training takes about 20 minutes on 2 CPU cores (8000 steps of 16 face and 6 non-face crops). torch's CPU kernels are not
bit-reproducible across machines, so a rebuild gives a model that matches within training noise,
not the same bytes; MANIFEST.json records the sha256 of the shipped file and its validation figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bundle  # noqa: E402  (models/bundle.py, beside this script)
TRAIN_PINS = ["torch==2.13.0", "onnx==1.17.0", "numpy<2"]
SOURCE = "face_landmark"
TARGET = "face_landmark_occlusion"
SETTINGS = {"steps": 8000, "batch_occluded": 12, "batch_clean": 4, "batch_nonface": 6, "lr": 1e-4,
            "lr_final": 5e-6, "seed": 3, "z_weight": 0.3, "presence_weight": 0.5}


# -- training (runs in the training environment: torch + onnx) ------------------------------------

def _interpreter(model_path: Path):
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    class OnnxNet(torch.nn.Module):
        """Executes the landmark model's graph node by node; its float initialisers are the parameters."""

        def __init__(self, proto: onnx.ModelProto):
            super().__init__()
            self.input_name = proto.graph.input[0].name
            self.outputs = [o.name for o in proto.graph.output]
            self.consts: dict[str, np.ndarray] = {}
            self.params = torch.nn.ParameterDict()
            trainable = {n.input[i] for n in proto.graph.node if n.op_type in ("Conv", "PRelu")
                         for i in range(1, len(n.input))}
            for t in proto.graph.initializer:
                a = numpy_helper.to_array(t)
                if t.name in trainable:
                    self.params[t.name] = torch.nn.Parameter(torch.from_numpy(a.astype(np.float32).copy()))
                else:
                    self.consts[t.name] = a
            self.nodes = [(n.op_type, list(n.input), list(n.output),
                           {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in proto.graph.node]
            for op, *_ in self.nodes:
                if op not in ("Conv", "PRelu", "Add", "MaxPool", "Pad", "Reshape", "Transpose"):
                    raise ValueError(f"operator {op} not supported by the interpreter")

        def _get(self, env, name):
            return env[name] if name in env else self.params[name]

        def forward(self, x):
            env = {self.input_name: x}
            for op, ins, outs, at in self.nodes:
                if op == "Transpose":
                    y = env[ins[0]].permute(*at["perm"])
                elif op == "Conv":
                    xin = env[ins[0]]
                    p = list(at.get("pads", [0, 0, 0, 0]))
                    if any(p):
                        xin = F.pad(xin, (p[1], p[3], p[0], p[2]))
                    y = F.conv2d(xin, self.params[ins[1]], self.params[ins[2]] if len(ins) > 2 else None,
                                 stride=tuple(at.get("strides", [1, 1])), dilation=tuple(at.get("dilations", [1, 1])),
                                 groups=int(at.get("group", 1)))
                elif op == "PRelu":
                    y = F.prelu(env[ins[0]], self.params[ins[1]].reshape(-1))
                elif op == "Add":
                    y = self._get(env, ins[0]) + self._get(env, ins[1])
                elif op == "MaxPool":
                    if any(at.get("pads", [0])) or at.get("ceil_mode", 0):
                        raise ValueError("MaxPool with padding is not supported")
                    y = F.max_pool2d(env[ins[0]], tuple(at["kernel_shape"]), tuple(at["strides"]))
                elif op == "Pad":
                    p = [int(v) for v in self.consts[ins[1]]]
                    n = len(p) // 2
                    flat = []
                    for d in reversed(range(n)):
                        flat += [p[d], p[d + n]]
                    y = F.pad(env[ins[0]], tuple(flat))
                elif op == "Reshape":
                    shape = [int(v) for v in self.consts[ins[1]]]
                    y = env[ins[0]].reshape(-1, *shape[1:])
                env[outs[0]] = y
            return tuple(env[o] for o in self.outputs)

    return OnnxNet(onnx.load(str(model_path)))


def _to_input(batch_bgr):
    import numpy as np
    import torch
    rgb = batch_bgr[..., ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb))


def _landmark_error(coords, teacher):
    """Mean and p90 2D distance per crop (crop pixels, 192 per side), averaged over landmarks."""
    import numpy as np
    d = np.linalg.norm(coords.reshape(len(coords), -1, 3)[..., :2] - teacher.reshape(len(teacher), -1, 3)[..., :2], axis=2)
    per = d.mean(1)
    return float(per.mean()), float(np.percentile(per, 90))


def _run(net, crops):
    import numpy as np
    import torch
    coords, logits = [], []
    with torch.no_grad():
        for i in range(0, len(crops), 32):
            c, lg = net(_to_input(crops[i:i + 32]))
            coords.append(c.reshape(-1, 1404).numpy())
            logits.append(lg.reshape(-1).numpy())
    return np.concatenate(coords), np.concatenate(logits)


def _evaluate(net, data, nonface=None) -> dict:
    """Landmark error against the teacher's clean answer, and whether presence agrees with the teacher's.

    Presence figures: on face crops, the share the student still calls a face (teacher says face on the clean
    crop); on the held-out non-face crops, the share it calls a face where the teacher does not (what would
    keep the tracker on a face that is not there) and the highest such probability.
    """
    import numpy as np
    out = {}
    teacher_face = data["teacher_logit"] > 0
    for key in ("occluded", "clean"):
        coords, logit = _run(net, data[key])
        m, p90 = _landmark_error(coords, data["teacher_coords"])
        out[key] = {"mean_px": round(m, 3), "p90_px": round(p90, 3),
                    "face_kept": round(float((logit[teacher_face] > 0).mean()), 4)}
    if nonface is not None:
        _, logit = _run(net, nonface["crops"])
        neg = nonface["teacher_logit"] <= 0
        p = 1.0 / (1.0 + np.exp(-logit[neg]))
        out["nonface"] = {"crops": int(neg.sum()), "false_face": round(float((p > 0.5).mean()), 4),
                          "max_p": round(float(p.max()), 4), "p99": round(float(np.percentile(p, 99)), 4)}
    return out


def train(train_npz: str, val_npz: Path, out_onnx: Path, source_onnx: Path, nonface_npz: Path,
          nonface_val_npz: Path) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    s = SETTINGS
    torch.manual_seed(s["seed"])
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    rng = np.random.default_rng(s["seed"])
    parts = [dict(np.load(p)) for p in str(train_npz).split(",")]
    tr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    va = dict(np.load(val_npz))
    nf = dict(np.load(nonface_npz))
    nf_va = dict(np.load(nonface_val_npz))
    teacher = _interpreter(source_onnx).eval()
    net = _interpreter(source_onnx)
    before = _evaluate(teacher, va, nf_va)
    print("validation before:", before, flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=s["lr"])
    decay = (s["lr_final"] / s["lr"]) ** (1.0 / s["steps"])
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    n = len(tr["clean"])
    bo, bc, bn = s["batch_occluded"], s["batch_clean"], s["batch_nonface"]
    n_nf = len(nf["crops"])
    w = torch.tensor([1.0, 1.0, s["z_weight"]]).repeat(468)
    t0 = time.time()
    net.train()
    for step in range(1, s["steps"] + 1):
        io = rng.integers(0, n, bo)
        ic = rng.integers(0, n, bc)
        inf = rng.integers(0, n_nf, bn)
        x = _to_input(np.concatenate([tr["occluded"][io], tr["clean"][ic], nf["crops"][inf]]))
        target = torch.from_numpy(np.concatenate([tr["teacher_coords"][io], tr["teacher_coords"][ic]]))
        tlogit = torch.from_numpy(np.concatenate([tr["teacher_logit"][io], tr["teacher_logit"][ic],
                                                  nf["teacher_logit"][inf]]))
        coords, logit = net(x)
        # landmarks only where there is a face; presence everywhere, as the teacher's probability
        loss = ((coords.reshape(-1, 1404)[:bo + bc] - target).abs() * w).mean() \
            + s["presence_weight"] * F.binary_cross_entropy_with_logits(logit.reshape(-1), torch.sigmoid(tlogit))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
        if step % 500 == 0 or step == s["steps"]:
            net.eval()
            print("validation:", _evaluate(net, va, nf_va), flush=True)
            net.train()
    net.eval()
    after = _evaluate(net, va, nf_va)

    proto = onnx.load(str(source_onnx))
    trained = {k: v.detach().numpy() for k, v in net.params.items()}
    for t in proto.graph.initializer:
        if t.name in trained:
            t.CopyFrom(numpy_helper.from_array(trained[t.name].astype(np.float32), t.name))
    onnx.checker.check_model(proto)
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_onnx.with_suffix(".part")
    onnx.save(proto, str(tmp))
    # the written graph must answer as the trained interpreter does
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(va["occluded"]), 7):
            x = _to_input(va["occluded"][i:i + 1])
            ref = net(x)[0].numpy().reshape(-1)
            got = sess.run(None, {name: x.numpy()})[0].reshape(-1)
            worst = max(worst, float(np.abs(ref - got).max()))
    if worst > 1e-2:
        tmp.unlink()
        raise SystemExit(f"written model differs from the trained one by {worst} px")
    tmp.replace(out_onnx)
    report = {"validation_before": before, "validation_after": after, "onnx_vs_torch_max_px": worst,
              "train_pairs": int(n), "val_pairs": int(len(va["clean"])), "settings": s,
              "train_nonface": int(n_nf), "val_nonface": int(len(nf_va["crops"])),
              "nonface_sources": sorted(set(nf["source"].tolist())),
              "nonface_val_sources": sorted(set(nf_va["source"].tolist())),
              "train_sources": sorted(set(tr["source"].tolist())), "val_sources": sorted(set(va["source"].tolist())),
              "train_seconds": round(time.time() - t0)}
    print(json.dumps(report, indent=2))
    return report


# -- orchestration (runs in the project environment) -------------------------------------------

def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# The pairs the shipped model was trained on: three runs of the pair maker, concatenated.
ORIGINAL_SOURCES = ["0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg",
                    "45-m7-di-ph.jpg", "astronaut.png", "multi_face.jpg", "Image_with_alpha.png"]
MORE_FACES = ["grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg", "facetorch_test.jpg", "facetorch_test2.jpg",
              "facetorch_test3.jpg", "facexlib_test.jpg", "facexlib_test2.jpg"]
PAIR_RUNS = {
    "train_a.npz": ["--per-frame", "4", "--seed", "1", "--only", *ORIGINAL_SOURCES],
    "train_b.npz": ["--per-frame", "8", "--seed", "2", "--only", *ORIGINAL_SOURCES],
    "train_c.npz": ["--per-frame", "6", "--seed", "4", "--only", *MORE_FACES],
    "val.npz": ["--held-out", "--per-frame", "3", "--seed", "99"],
}
# The non-face crops for the presence output (models/nonface_crops.py).
NONFACE_RUNS = {
    "nonface.npz": ["--per-frame", "3", "--seed", "11"],
    "nonface_val.npz": ["--held-out", "--per-frame", "3", "--seed", "11"],
}


def manifest_entry(out: Path, report: dict, manifest: dict) -> dict:
    return {
        "file": out.resolve().relative_to(bundle.DATA.resolve()).as_posix(), "sha256": _sha256(out),
        "derived_from": SOURCE, "derived_from_sha256": manifest["models"][SOURCE]["sha256"],
        "script": "models/distill_face_landmark.py", "pairs_script": "models/occlusion_pairs.py",
        "nonface_script": "models/nonface_crops.py",
        "pair_runs": PAIR_RUNS, "nonface_runs": NONFACE_RUNS, "trainer": TRAIN_PINS[:2], "settings": report["settings"],
        "train_pairs": report["train_pairs"], "val_pairs": report["val_pairs"],
        "train_nonface": report["train_nonface"], "val_nonface": report["val_nonface"],
        "train_sources": report["train_sources"], "val_sources": report["val_sources"],
        "nonface_sources": report["nonface_sources"], "nonface_val_sources": report["nonface_val_sources"],
        "validation_crop_px": {"before": report["validation_before"], "after": report["validation_after"]},
    }


def build(keep_env: Path | None, pairs_dir: Path | None, steps: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        env = keep_env or tmp / "trainenv"
        py = env / "bin" / "python"
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", *TRAIN_PINS, "onnxruntime"], check=True)
        pairs = pairs_dir or tmp
        pairs.mkdir(parents=True, exist_ok=True)
        runs = [("occlusion_pairs", PAIR_RUNS), ("nonface_crops", NONFACE_RUNS)]
        for module, named in runs:
            for name, args in named.items():
                if not (pairs / name).exists():
                    subprocess.run([sys.executable, str(HERE / f"{module}.py"), str(pairs / name), *args], check=True)
        out = bundle.MODELS / f"{TARGET}.onnx"
        report_path = tmp / "report.json"
        train_files = ",".join(str(pairs / n) for n in PAIR_RUNS if n != "val.npz")
        subprocess.run([str(py), __file__, "train", train_files, str(pairs / "val.npz"), str(out),
                        "--nonface", str(pairs / "nonface.npz"), "--nonface-val", str(pairs / "nonface_val.npz"),
                        "--report", str(report_path), *(["--steps", str(steps)] if steps else [])], check=True)
        report = json.loads(report_path.read_text())
    manifest = bundle.read_manifest()
    manifest["models"][TARGET] = manifest_entry(out, report, manifest)
    bundle.write_manifest(manifest)
    print(f"wrote {out} and its MANIFEST entry")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        ap = argparse.ArgumentParser()
        ap.add_argument("train_npz", help="training pairs: one .npz, or several separated by commas")
        ap.add_argument("val_npz", type=Path)
        ap.add_argument("out", type=Path)
        ap.add_argument("--source", type=Path, default=bundle.MODELS / f"{SOURCE}.onnx")
        ap.add_argument("--nonface", type=Path, required=True, help="non-face crops (nonface_crops.py)")
        ap.add_argument("--nonface-val", type=Path, required=True, help="held-out non-face crops")
        ap.add_argument("--report", type=Path)
        ap.add_argument("--steps", type=int)
        a = ap.parse_args(argv[1:])
        if a.steps:
            SETTINGS["steps"] = a.steps
        report = train(a.train_npz, a.val_npz, a.out, a.source, a.nonface, a.nonface_val)
        if a.report:
            a.report.write_text(json.dumps(report))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-env", type=Path, help="reuse (or create) this training virtual environment")
    ap.add_argument("--pairs-dir", type=Path, help="reuse (or create) the pair and non-face files here")
    ap.add_argument("--steps", type=int, help="fewer training steps (a smoke run of the whole build)")
    a = ap.parse_args(argv)
    build(a.keep_env, a.pairs_dir, a.steps)


if __name__ == "__main__":
    main()
