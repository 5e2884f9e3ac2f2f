"""The `guidance` command line.

Each command lives in its own module under `guidance/commands/` exposing
`register(subparsers)`; this file only assembles them and turns user errors
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os

# Library noise off before OpenCV (and its FFmpeg) load: a user's mistake ends with our one line, not with
# lines of "[ WARN:0@1.7] global cap_v4l.cpp ..." or "[mov,mp4 @ 0x..] moov atom not found" before it. Set
# either variable in the environment to see them again (OPENCV_LOG_LEVEL=INFO, OPENCV_FFMPEG_LOGLEVEL=32).
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

from guidance import __version__  # noqa: E402
from guidance.errors import UserError, UserNotice  # noqa: E402

# Modules under guidance.commands, each with register(subparsers).
COMMAND_MODULES = [
    "landmarks",
    "bench",
    "media",
    "demo",
    "evaluate",
    "controller_sim",
    "keys",
    "tip",
    "calibrate",
    "markers",
    "plan",
    "locate",
    "atlas",
    "simulate",
    "run",
    "reprocess",
    "replay",
    "report",
    "fleet",
    "console",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line too (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="guidance",
        description="Camera-based treatment guidance for needle-free mesotherapy.",
    )
    parser.add_argument("--version", action="version", version=f"guidance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"guidance.commands.{name}").register(sub)
    return parser


def _quiet_opencv() -> None:
    """The same silence when cv2 was imported before main() (in-process use): its log level is live."""
    if "cv2" in sys.modules and os.environ.get("OPENCV_LOG_LEVEL") == "SILENT":
        cv2 = sys.modules["cv2"]
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:  # pragma: no cover - a cv2 build without the logging utilities
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_opencv()
    shown = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserNotice):
            print(f"guidance {args.command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserNotice)
            warnings.showwarning = one_line
            rc = args.func(args)
    except UserError as exc:
        print(f"guidance {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"guidance {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `guidance ... | head`: the reader left; nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        return 141
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
