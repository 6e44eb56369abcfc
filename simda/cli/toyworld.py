"""``simda toyworld data|base|ship``: the toy world's data set, its stage-1 image model, and
storing a trained model as the built-in one."""

from __future__ import annotations

import os

from simda.cli import common
from simda.errors import SimDAError


def register(sub) -> None:
    p = sub.add_parser("toyworld", help="toy-world data set, stage-1 image model, shipping")
    actions = p.add_subparsers(
        dest="action",
        required=True,
        metavar="{data,base,ship}",
        help="data: write clips; base: train the image model; ship: store the built-in model",
    )

    data = actions.add_parser("data", help="write captioned clips (GIF + .txt)")
    data.add_argument("--output", default="out/toyworld-data", help="folder for the clips")
    data.add_argument("--clips", type=common.positive_int, default=2048, help="number of clips")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument("--quiet", action="store_true", help="only warnings and errors")
    data.add_argument("--debug", action="store_true", help="show tracebacks")
    data.set_defaults(func=run_data)

    base = actions.add_parser("base", help="train the stage-1 image model")
    base.add_argument("--output", default="out/toyworld-base", help="folder for the model")
    base.add_argument("--steps", type=common.positive_int, default=3000, help="training steps")
    base.add_argument("--batch-size", type=common.positive_int, default=64, help="frames per step")
    base.add_argument("--lr", type=common.positive_float, default=1e-3, help="peak learning rate")
    base.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    base.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    base.add_argument("--quiet", action="store_true", help="no progress bars")
    base.add_argument("--debug", action="store_true", help="show tracebacks")
    base.set_defaults(func=run_base)

    ship = actions.add_parser("ship", help="store a trained model as the built-in one (fp16)")
    ship.add_argument("--model", required=True, help="the trained pipeline folder")
    ship.add_argument("--quiet", action="store_true", help="only warnings and errors")
    ship.add_argument("--debug", action="store_true", help="show tracebacks")
    ship.set_defaults(func=run_ship)


def run_data(args) -> int:
    from simda import toyworld

    print(toyworld.write_dataset(args.output, args.clips, args.seed))
    return 0


def run_base(args) -> int:
    from simda import toyworld

    toyworld.check_new_model_folder(args.output)
    losses = toyworld.train_base(
        args.output,
        steps=args.steps,
        batch=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.quiet,
        device=common.device(args.device),
    )
    print(common.loss_plot(losses, os.path.join(args.output, "stage1-loss.png")))
    print(args.output)
    return 0


def run_ship(args) -> int:
    from simda import toyworld

    if not os.path.isdir(args.model):
        raise SimDAError(f"--model {args.model!r} does not exist or is not a folder")
    print(f"{toyworld.ship(args.model)} (now holds {args.model})")
    return 0
