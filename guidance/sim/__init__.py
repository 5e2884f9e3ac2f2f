"""Simulated treatment sessions: a scripted handpiece path on the face chart, rendered into real face video.

`path.py` reads the path file and turns it into a chart-space trajectory,
`skin.py` puts a chart point on this frame's face, `simulate.py` renders and
writes the simulation folder, `ground_truth.py` reads and writes its per-frame
truth. See docs/simulate.md.
"""
