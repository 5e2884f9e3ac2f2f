"""guidance: real-time, camera-based treatment guidance for needle-free mesotherapy."""

__version__ = "0.1.0"
