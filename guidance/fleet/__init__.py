"""Fleet review: re-judge, re-track or report many recordings, one task per recording, on a local process or a
Dask cluster (docs/fleet.md)."""
