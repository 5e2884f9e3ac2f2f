"""Every ONNX model in models/ computes what its mediapipe .tflite original computes.

The conversion (models/build.py: tf2onnx, plus a sparse-to-dense pre-pass for
pose_detection) is the one step of the pipeline we cannot read line by line,
so it is checked end to end: the original model, run by TensorFlow Lite
(ai-edge-litert, with its default XNNPACK delegate as mediapipe runs it), and
our ONNX file, run by onnxruntime exactly as the service runs it, get the same
float32 inputs and must agree. Inputs are real face crops prepared the way
mediapipe's graphs prepare them (size, value range), plus a non-face picture
and noise. Tolerances are in the unit that matters downstream: pixels of the
model's input for coordinates, probability after the sigmoid for scores.

Measured (this machine, both runtimes single-threaded) max errors are stated
in models/README.md.
"""

from __future__ import annotations

import importlib.util
import shutil
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert import format_converter_wrapper_pybind11 as tflite_format
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from guidance import samples
from guidance.errors import ModelIntegrityError
from guidance.resources import data_dir, read_manifest
from guidance.vision.models import load_model

PX_TOL = 0.05  # pixels of the model's input image
PROB_TOL = 1e-3  # after the sigmoid

# (image, centre x, centre y, side) of square face crops, in image pixels:
# the faces found by the short-range detector, enlarged 1.5x as mediapipe's
# detection-to-ROI step does for the landmark model.
FACE_CROPS = {
    "single_face.jpg": (282.0, 296.0, 303.0),
    "astronaut.png": (225.0, 128.0, 141.0),
    "multi_face.jpg": (256.0, 139.0, 248.0),
}
# (image, x, y, side) of square eye crops around the detector's eye keypoints.
EYE_CROPS = {
    "single_face.jpg": [(229.0, 249.0, 56.0), (313.0, 242.0, 56.0)],
    "astronaut.png": [(204.0, 101.0, 30.0), (248.0, 108.0, 30.0)],
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -80.0, 80.0)))


# ---------------------------------------------------------------- inputs


@lru_cache(maxsize=None)
def rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(samples.fetch(name)), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def crop(name: str, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Square crop resampled to size×size, edges replicated (mediapipe's BORDER_REPLICATE)."""
    s = size / side
    M = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return cv2.warpAffine(rgb(name), M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def letterbox(name: str, size: int) -> np.ndarray:
    """Whole image fitted into size×size keeping aspect ratio, zero borders (BORDER_ZERO)."""
    img = rgb(name)
    h, w = img.shape[:2]
    s = size / max(h, w)
    M = np.array([[s, 0.0, (size - s * w) / 2], [0.0, s, (size - s * h) / 2]])
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def to_tensor(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """uint8 RGB -> (1, H, W, 3) float32 in [lo, hi], as ImageToTensorCalculator's output_tensor_float_range."""
    return (img.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo))[None]


@lru_cache(maxsize=None)
def face_inputs(size: int) -> dict[str, np.ndarray]:
    out = {f"{n}:face": to_tensor(crop(n, *c, size), 0.0, 1.0) for n, c in FACE_CROPS.items()}
    out["single_face.jpg:face-mirrored"] = out["single_face.jpg:face"][:, :, ::-1].copy()
    out["mountain:no-face"] = to_tensor(crop("free-mountain-vector-01.jpg", 300, 250, 300, size), 0.0, 1.0)
    out["noise"] = to_tensor(noise(size, 1), 0.0, 1.0)
    return out


@lru_cache(maxsize=None)
def eye_inputs() -> dict[str, np.ndarray]:
    out = {}
    for n, eyes in EYE_CROPS.items():
        for i, (x, y, side) in enumerate(eyes):
            img = crop(n, x, y, side, 64)
            if i == 1:  # the model knows left eyes only; mediapipe mirrors the other one
                img = img[:, ::-1]
            out[f"{n}:eye{i}"] = to_tensor(np.ascontiguousarray(img), 0.0, 1.0)
    out["noise"] = to_tensor(noise(64, 2), 0.0, 1.0)
    return out


@lru_cache(maxsize=None)
def whole_image_inputs(size: int, lo: float, hi: float) -> dict[str, np.ndarray]:
    out = {n: to_tensor(letterbox(n, size), lo, hi) for n in ("single_face.jpg", "astronaut.png", "multi_face.jpg", "free-mountain-vector-01.jpg")}
    out["noise"] = to_tensor(noise(size, 3), lo, hi)
    return out


# ---------------------------------------------------------------- runners


@lru_cache(maxsize=None)
def tflite(name: str) -> Interpreter:
    it = Interpreter(model_path=str(samples.fetch(f"{name}.tflite")), num_threads=1)
    it.allocate_tensors()
    return it


@lru_cache(maxsize=None)
def onnx(name: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(data_dir() / "models" / f"{name}.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])


def run_both(name: str, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Outputs of both models keyed by tensor name (tf2onnx keeps the tflite names)."""
    it = tflite(name)
    (inp,) = it.get_input_details()
    assert tuple(inp["shape"]) == x.shape and inp["dtype"] == np.float32
    it.set_tensor(inp["index"], x)
    it.invoke()
    ref = {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}
    sess = onnx(name)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    assert set(ref) == set(got), f"{name}: output names differ: {sorted(ref)} vs {sorted(got)}"
    for k in ref:
        assert ref[k].shape == got[k].shape, f"{name}:{k}: shape {ref[k].shape} vs {got[k].shape}"
    return ref, got


def maxerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# ---------------------------------------------------------------- fidelity


@pytest.mark.parametrize("label", list(face_inputs(192)))
def test_face_landmark_matches_tflite(label):
    x = face_inputs(192)[label]
    ref, got = run_both("face_landmark", x)
    lm_ref, lm_got = ref["conv2d_21"].reshape(468, 3), got["conv2d_21"].reshape(468, 3)
    err = maxerr(lm_ref, lm_got)
    assert err <= PX_TOL, f"{label}: landmarks differ by {err:.4f} px (192-px crop)"
    p_ref, p_got = sigmoid(ref["conv2d_31"]), sigmoid(got["conv2d_31"])
    assert maxerr(p_ref, p_got) <= PROB_TOL, f"{label}: face presence {p_ref.item():.5f} vs {p_got.item():.5f}"
    if label.endswith(":face") or label.endswith("-mirrored"):
        # The inputs really are faces to the original model; otherwise this test compares noise.
        assert p_ref.item() > 0.5, f"{label}: not a face to the tflite model (presence {p_ref.item():.3f})"


@pytest.mark.parametrize("label", list(whole_image_inputs(128, -1.0, 1.0)))
def test_face_detector_matches_tflite(label):
    x = whole_image_inputs(128, -1.0, 1.0)[label]
    ref, got = run_both("face_detection_short_range", x)
    # regressors: per anchor box centre offset, size and 6 keypoints, in 128-px input pixels.
    err = maxerr(ref["regressors"], got["regressors"])
    assert err <= PX_TOL, f"{label}: box/keypoint regressors differ by {err:.4f} px"
    s_ref, s_got = sigmoid(ref["classificators"]), sigmoid(got["classificators"])
    assert maxerr(s_ref, s_got) <= PROB_TOL, f"{label}: scores differ by {maxerr(s_ref, s_got):.2e}"
    if label in ("single_face.jpg", "astronaut.png"):
        assert s_ref.max() > 0.5, f"{label}: tflite detector finds no face (best {s_ref.max():.3f})"


@pytest.mark.parametrize("label", list(whole_image_inputs(224, -1.0, 1.0)))
def test_pose_detector_matches_tflite(label):
    """The model that needed the sparse-to-dense pre-pass."""
    x = whole_image_inputs(224, -1.0, 1.0)[label]
    ref, got = run_both("pose_detection", x)
    # Identity: per anchor box + 4 keypoints in 224-px input pixels; Identity_1: score logits.
    err = maxerr(ref["Identity"], got["Identity"])
    assert err <= PX_TOL, f"{label}: box/keypoint regressors differ by {err:.4f} px"
    s_ref, s_got = sigmoid(ref["Identity_1"]), sigmoid(got["Identity_1"])
    assert maxerr(s_ref, s_got) <= PROB_TOL, f"{label}: scores differ by {maxerr(s_ref, s_got):.2e}"
    if label == "astronaut.png":
        assert s_ref.max() > 0.5, f"{label}: tflite pose detector finds no person (best {s_ref.max():.3f})"


@pytest.mark.parametrize("label", list(eye_inputs()))
def test_iris_landmark_matches_tflite(label):
    x = eye_inputs()[label]
    ref, got = run_both("iris_landmark", x)
    for k in ("output_eyes_contours_and_brows", "output_iris"):  # 71×3 and 5×3, 64-px input pixels
        err = maxerr(ref[k], got[k])
        assert err <= PX_TOL, f"{label}:{k}: differ by {err:.4f} px (64-px crop)"


@pytest.mark.parametrize("label", list(whole_image_inputs(256, 0.0, 1.0)))
def test_pose_landmark_matches_tflite(label):
    x = whole_image_inputs(256, 0.0, 1.0)[label]
    ref, got = run_both("pose_landmark_full", x)
    # Identity: 39 × (x, y, z, visibility logit, presence logit), coordinates in 256-px input pixels.
    lr, lg = ref["Identity"].reshape(39, 5), got["Identity"].reshape(39, 5)
    err = maxerr(lr[:, :3], lg[:, :3])
    assert err <= PX_TOL, f"{label}: pose landmarks differ by {err:.4f} px (256-px input)"
    perr = maxerr(sigmoid(lr[:, 3:]), sigmoid(lg[:, 3:]))
    assert perr <= PROB_TOL, f"{label}: visibility/presence differ by {perr:.2e}"
    # Identity_1: pose presence (already a probability in [0, 1]).
    assert maxerr(ref["Identity_1"], got["Identity_1"]) <= PROB_TOL
    # Identity_4: 39 world landmarks in metres; 0.5 mm.
    assert maxerr(ref["Identity_4"], got["Identity_4"]) <= 5e-4
    # Identity_3: 64×64×39 heatmap logits, compared as probabilities.
    e = maxerr(sigmoid(ref["Identity_3"]), sigmoid(got["Identity_3"]))
    assert e <= PROB_TOL, f"{label}:Identity_3: differ by {e:.2e} after sigmoid"
    # Identity_2: 256×256 segmentation logits reach ±1700, where float32
    # summation order alone moves them by ~1: TFLite's own XNNPACK and builtin
    # kernels disagree by 1.9 on these inputs, onnxruntime by 1.05 (measured).
    # So: probabilities within 1e-2, and the 0.5-thresholded masks agree on
    # all but 0.1 % of the pixels. (The service does not use this output.)
    p_ref, p_got = sigmoid(ref["Identity_2"]), sigmoid(got["Identity_2"])
    assert maxerr(p_ref, p_got) <= 1e-2, f"{label}: segmentation differs by {maxerr(p_ref, p_got):.2e}"
    flipped = float(np.mean((p_ref > 0.5) != (p_got > 0.5)))
    assert flipped <= 1e-3, f"{label}: segmentation masks differ on {flipped:.2%} of pixels"


def test_every_manifest_model_is_covered_here():
    """A model added to the manifest without a fidelity check fails here."""
    covered = {"face_landmark", "face_detection_short_range", "pose_detection", "iris_landmark", "pose_landmark_full"}
    derived = {"face_landmark_occlusion"}  # fine-tuned here from a covered model: tests/test_occlusion_model.py
    assert set(read_manifest()["models"]) == covered | derived


def test_manifest_provenance_matches_the_pinned_sources():
    """The tflite each ONNX file claims to come from is the one the tests run."""
    manifest = read_manifest()
    assert manifest["source_wheel"]["sha256"] == samples.DISTS["mediapipe"].sha256
    for name, entry in manifest["models"].items():
        if "derived_from" in entry:
            assert entry["derived_from_sha256"] == manifest["models"][entry["derived_from"]]["sha256"]
            assert samples.sha256_file(data_dir() / entry["file"]) == entry["sha256"]
            continue
        pin = samples.MEMBERS[f"{name}.tflite"]
        assert entry["tflite"] == pin.member
        assert entry["tflite_sha256"] == pin.sha256
        assert samples.sha256_file(data_dir() / entry["file"]) == entry["sha256"]


# ---------------------------------------------------------------- integrity


@pytest.mark.parametrize("name", sorted(read_manifest()["models"]))
def test_a_flipped_byte_is_refused_naming_the_file(name, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(data_dir(), d)
    load_model(name, d)  # the intact copy loads
    f = d / read_manifest(d)["models"][name]["file"]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # a single bit at the end: a truncated or bit-rotted file is no different
    f.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=rf"{f.name}.*sha256 mismatch") as exc:
        load_model(name, d)
    assert str(f) in str(exc.value)


# ---------------------------------------------------------------- the sparse pre-pass


def _densify_module():
    """models/densify_tflite.py (a build script, not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "models" / "densify_tflite.py"
    spec = importlib.util.spec_from_file_location("densify_tflite", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_D, _S = tflite_format.TfLiteDimensionType.TF_LITE_DIM_DENSE, tflite_format.TfLiteDimensionType.TF_LITE_DIM_SPARSE_CSR

# (shape, traversal order, level formats, block sizes, block map)
SPARSE_LAYOUTS = {
    "csr-last-axis-like-pose_detection": ((16, 1, 1, 24), [0, 1, 2, 3], [_D, _D, _D, _S], [], []),
    "bcsr-2x2-blocks": ((8, 12), [0, 1, 2, 3], [_D, _S, _D, _D], [2, 2], [0, 1]),
    "blocks-on-one-axis": ((6, 16), [0, 1, 2], [_D, _S, _D], [4], [1]),
    "transposed-traversal-two-sparse-levels": ((6, 5, 8), [1, 0, 2], [_D, _S, _S], [], []),
}


def _tflite_encoded(shape, order, formats, block_size, block_map, seed):
    """A random mostly-zero tensor and its sparse form as TFLite's own FormatConverter writes it.

    The converter takes one format per (expanded) dimension; the flatbuffer
    lists dim_metadata per level, in traversal order.
    """
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape).astype(np.float32)
    dense[rng.random(shape) < 0.7] = 0.0
    conv = tflite_format.FormatConverterFp32(list(shape), order, formats, block_size, block_map)
    assert conv.DenseToSparse(dense) == tflite_format.TfLiteStatus.TF_LITE_OK
    meta = conv.GetDimMetadata()  # two lists per level: [dense size], [] or segments, indices
    sp = schema.SparsityParametersT()
    sp.traversalOrder, sp.blockMap, sp.dimMetadata = list(order), list(block_map) or None, []
    for level, axis in enumerate(order):
        d = schema.DimensionMetadataT()
        if formats[axis] == _D:
            d.format, d.denseSize = schema.DimensionType.DENSE, meta[2 * level][0]
        else:
            d.format = schema.DimensionType.SPARSE_CSR
            for attr, values in (("arraySegments", meta[2 * level]), ("arrayIndices", meta[2 * level + 1])):
                v = schema.Int32VectorT()
                v.values = list(values)
                setattr(d, attr, v)
                setattr(d, attr + "Type", schema.SparseIndexVector.Int32Vector)
        sp.dimMetadata.append(d)
    return dense, np.asarray(conv.GetData(), dtype=np.float32), sp


def _tflite_densify(values: np.ndarray, shape, sp) -> np.ndarray:
    """What the TFLite runtime's DENSIFY kernel makes of a sparse constant (a one-op model)."""
    mod = _densify_module()
    m = schema.ModelT()
    m.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DENSIFY
    code.version = 1
    m.operatorCodes = [code]
    m.buffers = [schema.BufferT() for _ in range(3)]
    m.buffers[1].data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8)
    tensors = []
    for i, name in ((1, b"sparse"), (2, b"dense")):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), schema.TensorType.FLOAT32, i, name
        tensors.append(t)
    tensors[0].sparsity = sp
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.DensifyOptions, schema.DensifyOptionsT()
    sg = schema.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = tensors, [], [1], [op]
    m.subgraphs = [sg]
    it = Interpreter(model_content=mod.model_bytes(m), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("layout", list(SPARSE_LAYOUTS))
def test_sparse_decoder_agrees_with_tflites_densify_kernel(layout):
    """Layouts pose_detection does not use (blocks, other traversal orders) too, so a future model cannot slip through.

    Encoded by TFLite's FormatConverter, decoded by the TFLite runtime's
    DENSIFY kernel (which proves the encoding) and by our pre-pass.
    """
    shape = SPARSE_LAYOUTS[layout][0]
    dense, values, sp = _tflite_encoded(*SPARSE_LAYOUTS[layout], seed=len(layout))
    assert values.size < dense.size or "bcsr" in layout  # really sparse (BCSR keeps zeros inside blocks)
    np.testing.assert_array_equal(_tflite_densify(values, shape, sp), dense)
    got = _densify_module().sparse_to_dense(values, list(shape), sp)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, dense)


def test_sparse_decoder_refuses_inconsistent_metadata():
    mod = _densify_module()
    shape, *layout = SPARSE_LAYOUTS["csr-last-axis-like-pose_detection"]
    _, values, sp = _tflite_encoded(shape, *layout, seed=0)
    with pytest.raises(ValueError, match="stored values"):
        mod.sparse_to_dense(values[:-1], list(shape), sp)
    sp.dimMetadata[3].arraySegments.values[-1] += 5  # segments pointing past the indices
    with pytest.raises(ValueError):
        mod.sparse_to_dense(values, list(shape), sp)


def test_densified_pose_detector_is_the_original_on_tflite():
    """The pre-pass changes the storage, not the arithmetic: same kernels, same bits out."""
    mod = _densify_module()
    src = samples.fetch("pose_detection.tflite")
    model = mod.read_model(src)
    replaced = mod.densify_model(model)
    assert len(replaced) == 38
    ops = {mod._opcode(model, op) for op in model.subgraphs[0].operators}
    assert schema.BuiltinOperator.DENSIFY not in ops
    assert all(t.sparsity is None for t in model.subgraphs[0].tensors)

    def outputs(**where):
        it = Interpreter(**where, num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], whole_image_inputs(224, -1.0, 1.0)["astronaut.png"])
        it.invoke()
        return [it.get_tensor(d["index"]) for d in it.get_output_details()]

    for a, b in zip(outputs(model_path=str(src)), outputs(model_content=mod.model_bytes(model))):
        np.testing.assert_array_equal(a, b)
