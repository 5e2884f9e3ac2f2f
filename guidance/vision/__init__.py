"""Vision: frame sources, face tracking, marker tracking, camera model, rendering."""
