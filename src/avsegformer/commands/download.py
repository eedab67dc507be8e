"""``avsegformer download NAME...``: fetch released weights into the cache and verify them.

Examples::

    avsegformer download res50_s4 pvt2_s4         # two of the authors' checkpoints
    avsegformer download backbones                # resnet50, pvt_v2_b5, vggish
    avsegformer download all --dir /data/weights  # everything, into another folder
    avsegformer download res50_s4 --offline       # only say where the file must be placed

NAME: a model with released weights or a backbone file (``avsegformer models`` lists
them with their cache status), ``backbones`` or ``all``. Each file is verified (strict
load into its configuration; sha256 where recorded) before it gets its final name; one
line per name says where it is. Google Drive links need ``pip install
'avsegformer[download]'`` (gdown); ``$AVSEGFORMER_MIRROR`` points at a copy of the files
instead. A failure is reported on one line and the other names still run; the exit
status is 2 if any failed.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import AVSegFormerError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """\
examples:
  avsegformer download res50_s4 pvt2_s4         two of the authors' checkpoints
  avsegformer download backbones                resnet50, pvt_v2_b5, vggish
  avsegformer download all --dir /data/weights  everything, into another folder

Each file is verified (strict load into its configuration; sha256 where recorded) before
it gets its final name; a bad download is removed. Google Drive links need
`pip install 'avsegformer[download]'` (gdown).
environment:
  AVSEGFORMER_HOME     cache root (files in $AVSEGFORMER_HOME/weights; default
                       ~/.cache/avsegformer)
  AVSEGFORMER_MIRROR   URL or folder holding the files under their names, used instead
                       of the published links
  AVSEGFORMER_OFFLINE  1: --offline everywhere (download, predict, test, Python)
"""
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="released weights (see `avsegformer models`), `backbones` or `all`",
    )
    parser.add_argument(
        "--dir", default=None, metavar="DIR", help="keep the files here instead of the cache"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="fetch nothing: check what is cached, and say where missing files go",
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even when the file is cached"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="reconnections after a cut connection, each resuming the download (default 3)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def expand_names(names: list[str]) -> list[str]:
    """``all`` and ``backbones`` -> registered names; the order is kept, repeats dropped."""
    from ..zoo import get_weights, list_weights

    backbones = [n for n in list_weights() if get_weights(n).target]
    groups = {"all": list_weights(), "backbones": backbones}
    out: list[str] = []
    for name in names:
        for item in groups.get(name, [name]):
            if item not in out:
                out.append(item)
    return out


def run(args: argparse.Namespace) -> int:
    from ..hub import cache_status, download, weights_dir
    from ..zoo import get_weights

    if args.retries < 0:
        raise AVSegFormerError(f"--retries must be >= 0, got {args.retries}")
    names = expand_names(args.names)
    for name in names:
        get_weights(name)  # unknown names fail before anything is fetched
    failed = 0
    for name in names:
        before = cache_status(name, args.dir)
        try:
            path = download(
                name,
                cache_dir=args.dir,
                force=args.force,
                offline=args.offline,
                progress=not args.no_progress,
                retries=args.retries,
            )
        except AVSegFormerError as error:
            failed += 1
            line = " ".join(error.cli_text().split("\n", 1)[0].split())
            print(f"avsegformer download: error: {line}", file=sys.stderr, flush=True)
            continue
        how = (
            "in the cache, verified"
            if before == "verified" and not args.force
            else "downloaded and verified"
            if before == "missing" or args.force
            else "in the cache, verified now"
        )
        print(f"{name}: {path} ({how})", flush=True)
    if failed:
        print(
            f"{len(names) - failed} of {len(names)} done; cache: {weights_dir(args.dir)}",
            file=sys.stderr,
        )
    return 2 if failed else 0
