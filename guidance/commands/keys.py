"""`guidance keys`: CurveZMQ key pairs for the service and its controllers.

    guidance keys generate DIR [--controller NAME ...]   service pair, one pair per controller, the allow-list
    guidance keys add-controller DIR NAME                one more controller in DIR
    guidance keys fingerprint FILE ...                   the short name a refused key is reported under

A controller's NAME is the id it must report under: the service binds the
key in authorized_controllers/NAME.key to that id.
"""

from __future__ import annotations

import argparse

from guidance.device_bridge import keys
from guidance.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make CurveZMQ key pairs for the permit link")
    p.add_argument("action", choices=["generate", "add-controller", "fingerprint"],
                   help="generate: write service and controller key pairs and the allow-list; add-controller: one "
                        "more controller in DIR; fingerprint: print the fingerprint of key files")
    p.add_argument("dir", help="key directory (for fingerprint: a key file)")
    p.add_argument("names", nargs="*", help="add-controller: the controller id; fingerprint: more key files")
    p.add_argument("--controller", action="append", metavar="NAME",
                   help="generate: a controller id to make a pair for and allow-list (repeatable; default 'controller')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "generate":
        if args.names:
            raise UserError("generate takes one directory; name controllers with --controller", field="names")
        written = keys.generate(args.dir, tuple(args.controller or (keys.DEFAULT_CONTROLLER,)))
    elif args.action == "add-controller":
        if len(args.names) != 1 or args.controller:
            raise UserError("usage: guidance keys add-controller DIR NAME", field="NAME")
        written = keys.add_controller(args.dir, args.names[0])
    else:
        for f in [args.dir, *args.names]:
            print(f"{keys.fingerprint(keys.load_public(f))}\t{f}")
        return 0
    for name, path in written.items():
        print(f"{name}\t{path}")
    return 0
