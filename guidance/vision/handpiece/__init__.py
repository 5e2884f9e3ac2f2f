"""The handpiece: marker designs and printouts, detection, rigid-body pose, the tip and its uncertainty, pivot calibration."""
