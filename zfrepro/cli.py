"""The ``zfrepro`` console script: ``zfrepro reproduce`` and ``zfrepro train``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import ConfigError, ZFReproError

__all__ = ["main", "build_parser"]


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
    from . import train as _train

    tr = sub.add_parser("train", help="train a network with a profile (snapshots in runs/)")
    _train.add_train_arguments(tr)
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
            sets = {}
            for item in args.sets:
                if "=" not in item:
                    raise ConfigError(f"--set needs key=value, got {item!r} (e.g. --set layer=conv3)")
                k, v = item.split("=", 1)
                sets[k.strip()] = v.strip()
            reproduce(args.profile, data_root=args.data_root, device=args.device, only=only, sets=sets,
                      force=args.force, val_split=args.val_split, with_ablations=args.with_ablations)
        elif args.command == "train":
            import os

            from . import train as _train
            from .data import VAL_SPLIT_ENV, check_data_root, val_split

            old = os.environ.get(VAL_SPLIT_ENV)
            try:
                if args.val_split:  # read by the data layer wherever the validation split is opened
                    os.environ[VAL_SPLIT_ENV] = args.val_split
                    val_split()
                    check_data_root(args.data_root)
                print(_train.run_from_args(args))
            finally:  # main() may be called in-process (tests, notebooks): leave the environment as it was
                if old is None:
                    os.environ.pop(VAL_SPLIT_ENV, None)
                else:
                    os.environ[VAL_SPLIT_ENV] = old
    except ZFReproError as exc:
        print(f"zfrepro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zfrepro: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
