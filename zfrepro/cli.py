"""The ``zfrepro`` console script: ``zfrepro reproduce`` and ``zfrepro train``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, ZFReproError

__all__ = ["main", "build_parser", "add_train_arguments", "run_from_args", "parse_sets"]


def parse_sets(items: Sequence[str] | None, example: str = "layer=conv3") -> dict[str, str]:
    """``["k=v", ...]`` of repeated ``--set`` options → ``{k: v}``; an item without ``=`` is one line."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got {item!r} (e.g. --set {example})")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (``zfrepro train``, also under ``torchrun ... -m zfrepro train``)."""
    parser.add_argument("--profile", default="default", help="profile name: smoke, default or paper (default: default)")
    parser.add_argument("--arch", default="zfnet", help="zfnet (Fig. 3) or alexnet (the paper's Krizhevsky replica)")
    parser.add_argument("--data-root", default=None, help="ImageFolder root with train/ and val/ (default: $ZFREPRO_DATA)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--out-dir", default=None, help="run directory (default: runs/<profile>/<arch>[-hash])")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over: delete this run's previous snapshots")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile field, e.g. --set epochs=10 --set renorm=false (repeatable)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision (default: on for CUDA, off for the CPU)")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                        help="also write latest.pt every N batches within an epoch (cheap kill/resume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def run_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`train` from parsed :func:`add_train_arguments` options; returns the run directory."""
    sets = parse_sets(args.overrides, "epochs=10")
    arch = args.arch
    if "arch" in sets:  # --set arch=alexnet, as the docstring of resolve_profile allows
        if arch not in ("zfnet", sets["arch"]):
            raise ConfigError(f"arch given twice (--arch {arch} and --set arch={sets['arch']}): give it once")
        arch = sets.pop("arch")
    from .train import train

    return train(args.profile, arch=arch, data_root=args.data_root, device=args.device,
                 out_dir=args.out_dir, resume=args.resume, amp=args.amp, snapshot_every=args.snapshot_every,
                 progress=not args.quiet, **sets)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``zfrepro`` command."""
    from .config import profile_names

    parser = argparse.ArgumentParser(prog="zfrepro", description="Reproduce Zeiler & Fergus (2013).")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run every notebook in order with papermill (executed copies in build/)")
    rep.add_argument("--profile", default="default", choices=profile_names(), help="configuration (default: default)")
    rep.add_argument("--data-root", default=None, help="ImageFolder with train/ and val/ (else $ZFREPRO_DATA, else download Imagenette)")
    rep.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")
    rep.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    rep.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a notebook parameter, e.g. --set layer=conv3, or a profile field, e.g. --set epochs=3 "
                          "(a profile override: the notebooks that train or load the network train their own and "
                          "write apart); repeatable, unknown keys are rejected")
    rep.add_argument("--val-split", default=None, metavar="NAME",
                     help="folder of the validation split beside train/, e.g. test (default: $ZFREPRO_VAL_SPLIT or val)")
    rep.add_argument("--force", action="store_true", help="rerun notebooks even if unchanged since their last run")
    rep.add_argument("--with-ablations", action="store_true",
                     help="also run notebook 09 (Table 3: 24 trainings, about 30 min for default on 2 free CPU cores)")
    tr = sub.add_parser("train", help="train a network with a profile (snapshots in runs/)")
    add_train_arguments(tr)
    tr.add_argument("--val-split", default=None, metavar="NAME",
                    help="folder of the validation split beside train/, e.g. test (default: $ZFREPRO_VAL_SPLIT or val)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (errors print one line, exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "reproduce":
            from .reproduce import reproduce

            only = [s.strip() for s in args.only.split(",")] if args.only else None
            sets = parse_sets(args.sets)
            reproduce(args.profile, data_root=args.data_root, device=args.device, only=only, sets=sets,
                      force=args.force, val_split=args.val_split, with_ablations=args.with_ablations)
        elif args.command == "train":
            from .datasets import VAL_SPLIT_ENV, check_data_root, val_split

            old = os.environ.get(VAL_SPLIT_ENV)
            try:
                if args.val_split:  # read by the data layer wherever the validation split is opened
                    os.environ[VAL_SPLIT_ENV] = args.val_split
                    val_split()
                    check_data_root(args.data_root)
                run_dir = run_from_args(args)
                if int(os.environ.get("RANK", "0") or 0) == 0:  # under torchrun: one line, from rank 0
                    print(run_dir)
            finally:  # main() may be called in-process (tests, notebooks): leave the environment as it was
                if old is None:
                    os.environ.pop(VAL_SPLIT_ENV, None)
                else:
                    os.environ[VAL_SPLIT_ENV] = old
    except ZFReproError as exc:
        print(f"zfrepro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a Ctrl-C that reaches the kernel while it starts kills it: nbclient's pending reply task then ends with
        # DeadKernelError, which asyncio would log with its traceback when the task is collected at exit
        import logging

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        print("zfrepro: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
