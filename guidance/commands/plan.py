"""`guidance plan check PLAN`: validate a treatment plan against the schema and the atlas, and summarise it."""

from __future__ import annotations

import argparse

from guidance.zones.plan import load_plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="treatment plan files", description="Treatment plan files (YAML).")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION")
    psub.required = True
    c = psub.add_parser("check", help="validate a plan and print a summary",
                        description="Validates PLAN (schema, zone names against the atlas, passes, handpiece "
                                    "profile reference). A bad plan prints one line naming the file and field "
                                    "and exits with code 2.")
    c.add_argument("plan", help="plan file (YAML)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    print(plan.summary())
    return 0
