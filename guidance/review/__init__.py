"""After the session: the player (`guidance replay`) and the HTML report (`guidance report`).

Both read a recording through `guidance.session.recording.open_session` and share
`timeline.py` (per-frame series, placed events, coverage rebuilt from pulses).
"""
