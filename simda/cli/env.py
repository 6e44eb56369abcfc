"""``simda env``: versions, GPUs and the kernel each op runs, to paste into bug reports."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "env", help="versions, GPUs and the kernels each op runs (paste it into bug reports)"
    )
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run, quiet=False)


def run(args) -> int:
    from simda import env

    info = env.collect()
    print(json.dumps(info, indent=2) if args.json else env.report(info))
    return 0
