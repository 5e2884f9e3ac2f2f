"""The controller side: the reference fail-closed controller gate and the controller simulator."""
