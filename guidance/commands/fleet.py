"""`guidance fleet reprocess|retrack|report RECORDINGS... -o OUT [--engine local|dask]`: many recordings at once."""

from __future__ import annotations

import argparse

from guidance.errors import UserError

HELP = {
    "reprocess": "re-judge every recording exactly from its recorded observations (guidance reprocess), "
                 "optionally with another plan or margin",
    "retrack": "track every recording's video again (another landmark model or tracker settings) and judge it",
    "report": "the cohort report of recordings as recorded",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="review many recordings at once, one task per recording, on this machine or a "
                                     "Dask cluster; a cohort report (HTML, CSV)",
                       description="Finds every recording (a folder with info.json) under the given folders or fsspec "
                                   "URLs, runs one task per recording, writes OUT/results/KEY.json per recording as it "
                                   "comes back (a rerun skips the done ones), then OUT/cohort.html, cohort.csv and "
                                   "cohort_zones.csv. docs/fleet.md.")
    fs = p.add_subparsers(dest="fleet_command", metavar="COMMAND")
    fs.required = True
    for name, text in HELP.items():
        q = fs.add_parser(name, help=text, description=text + ".")
        q.add_argument("recordings", nargs="+", metavar="RECORDINGS",
                       help="recording folders, folder trees to search, or URLs (file://, s3://... with its fsspec "
                            "package installed on every worker)")
        q.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created; a rerun resumes)")
        q.add_argument("--engine", choices=("local", "dask"), default="local",
                       help="local: this process, one recording after another; dask: a dask.distributed cluster")
        q.add_argument("--address", metavar="tcp://HOST:8786", help="the Dask scheduler (default: start a local "
                       "cluster of --workers processes)")
        q.add_argument("--workers", type=int, metavar="N", help="worker processes of the local Dask cluster "
                       "(default: one per core)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "reprocess":
            q.add_argument("--plan", help="another treatment plan (default: each recording's own)")
            q.add_argument("--margin", type=float, help="another boundary margin in mm")
        if name == "retrack":
            q.add_argument("--landmark-model", metavar="NAME", help="a face landmark model bundled in "
                           "guidance/data/MANIFEST.json (face_landmark, face_landmark_occlusion); default: each "
                           "recording's own")
            q.add_argument("--config", metavar="CONFIG.yaml", help="pipeline settings laid over the recorded ones "
                           "(the keys of info.json's config, e.g. {tracker: {smoothing: false}})")
        q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guidance.fleet.run import run_fleet
    from guidance.fleet.tasks import Job

    overrides: dict = {}
    if getattr(args, "config", None):
        from guidance.yamlfile import read_yaml

        overrides = read_yaml(args.config)
        if not isinstance(overrides, dict):
            raise UserError("must be a mapping of pipeline settings", path=args.config)
    job = Job(args.fleet_command, plan=getattr(args, "plan", None), margin_mm=getattr(args, "margin", None),
              landmark_model=getattr(args, "landmark_model", None), config_overrides=overrides)
    result = run_fleet(job, args.recordings, args.output, engine=args.engine, address=args.address,
                       workers=args.workers, progress=not args.quiet)
    for line in result.lines():
        print(line)
    return 0
