"""`guidance evaluate`: the service judged against simulated ground truth on faces nothing was tuned on.

- `face_sets.py`  which faces train and which evaluate (guidance/data/face_sets.yaml)
- `truth.py`      what the ground truth says about a frame under a plan (exclusion, outside, usable)
- `metrics.py`    the figures, pure functions of frame records and ground truth
- `chain.py`      one session's processes: simulate, controller-sim, run, reprocess with lifted dose limits
- `judge.py`      one finished session's figures
- `evaluation.py` sessions over faces x paths x plans, a few at a time; totals, per face, the targets
- `tables.py`     the printed tables

Docs: docs/evaluate.md.
"""
