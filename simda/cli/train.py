"""``simda train --data DIR``: train the adapters on captioned clips."""

from __future__ import annotations

import os

from simda.cli import common


def register(sub) -> None:
    p = sub.add_parser("train", help="train the adapters on captioned clips")
    p.add_argument("--data", required=True, help="folder of videos + .txt captions, or a CSV")
    common.add_common(p)
    p.add_argument(
        "--frames",
        type=common.positive_int,
        help="frames per clip (default: the model's recommendation, else 16)",
    )
    common.add_size(p)
    p.add_argument(
        "--steps", type=common.positive_int, default=1000, help="optimizer steps (default 1000)"
    )
    p.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=1,
        help="global batch size, over all processes (default 1)",
    )
    p.add_argument(
        "--lr", type=common.positive_float, default=5e-5, help="AdamW learning rate (default 5e-5)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=common.positive_int,
        default=100,
        help="write OUTPUT/checkpoint every this many steps (default 100)",
    )
    p.add_argument(
        "--log-every",
        type=common.positive_int,
        default=10,
        help="write the mean loss to OUTPUT/losses.jsonl every this many steps (default 10)",
    )
    p.add_argument(
        "--caption-dropout",
        type=float,
        default=0.1,
        help="fraction of empty captions, for classifier-free guidance (default 0.1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/checkpoint (--steps must go beyond its step)",
    )
    p.add_argument("--no-checkpointing", action="store_true", help="no gradient checkpointing")
    common.add_mixed_precision(p)
    p.add_argument(
        "--superres",
        type=common.positive_int,
        metavar="SCALE",
        help="train the super-resolution variant for this scale",
    )
    p.add_argument("--save-pipeline", metavar="DIR", help="also save the whole trained model")
    p.add_argument(
        "--ablate",
        nargs="+",
        choices=("temporal", "spatial", "lsa"),
        default=[],
        help="train without these components (ablation studies)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from simda.pipelines import ClipDataset, TrainConfig, make_superres, train
    from simda.pipelines.training import rank_world
    from simda.unet import remove_components

    if args.save_pipeline:
        common.check_new_folder(args.save_pipeline, "--save-pipeline")
    chosen = common.rank_device(common.device(args.device))
    pipe = common.load_pipeline(args, chosen)
    if args.superres:
        make_superres(pipe, args.superres)
    if args.ablate:
        remove_components(pipe.unet, **{name: True for name in args.ablate})
    common.resolve_sampling(args, pipe)
    dataset = ClipDataset(args.data, args.frames, args.height, args.width)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        caption_dropout=args.caption_dropout,
        gradient_checkpointing=not args.no_checkpointing,
        mixed_precision=args.mixed_precision,
        superres_scale=args.superres,
    )
    state = train(pipe, dataset, args.output, config, resume=args.resume, progress=not args.quiet)
    if rank_world()[0] == 0:
        if args.save_pipeline:
            pipe.save_pretrained(args.save_pipeline)
        print(common.loss_plot(state.losses, os.path.join(args.output, "loss.png")))
        print(os.path.join(args.output, "losses.jsonl"))
        print(os.path.join(args.output, "adapters.safetensors"))
    return 0
