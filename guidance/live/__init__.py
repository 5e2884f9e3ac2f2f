"""`guidance run`: the run loop, the display thread and the practitioner's overlay."""
