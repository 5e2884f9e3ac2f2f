"""The client's face: detector, 468-point landmarks, ROI tracking, smoothing, head pose, the head band."""
