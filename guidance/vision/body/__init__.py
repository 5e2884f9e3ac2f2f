"""Below the face: the shoulder line from the pose model (neck and décolletage)."""
