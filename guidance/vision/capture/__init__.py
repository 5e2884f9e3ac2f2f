"""Capture: timestamped frames from a camera, a video or images; the camera model and its calibration; video out."""
