"""``kronos-fetch``: download Kronos checkpoints from the model hub into plain folders in our layout,
for images built offline and air-gapped hosts.

Examples::

    kronos-fetch NeoQuasar/Kronos-small --out /models/small     # /models/small + /models/small/tokenizer
    kronos-fetch NeoQuasar/Kronos-small NeoQuasar/Kronos-mini --out /models   # /models/Kronos-small, ...
    kronos-fetch my-org/my-kronos --tokenizer NeoQuasar/Kronos-Tokenizer-base --revision v2 --out /models/mine
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ..errors import KronosError
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
from .hub import OFFICIAL_MODELS, Checkpoint, HubOffline, HubUnreachable, official_model, resolve_checkpoint


def _copy(checkpoint: Checkpoint, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(checkpoint.folder / name, folder / name)  # follows the cache's symlinks


def fetch(
    model_id: str,
    out: Path,
    revision: str | None = None,
    tokenizer: str | None = None,
    tokenizer_revision: str | None = None,
) -> dict[str, str | None]:
    """``model_id`` into ``out``, and its tokenizer (the named one, else the official pairing, else none)
    into ``out/tokenizer``; returns what was fetched and the commits."""
    predictor = resolve_checkpoint(model_id, revision)
    official = official_model(model_id)
    tokenizer = tokenizer or (official.tokenizer if official else None)
    paired = resolve_checkpoint(tokenizer, tokenizer_revision) if tokenizer else None
    _copy(predictor, out)
    if paired is not None:
        _copy(paired, out / "tokenizer")
    return {
        "model": model_id,
        "revision": predictor.revision,
        "tokenizer": tokenizer,
        "tokenizer_revision": paired.revision if paired else None,
        "folder": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kronos-fetch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ids", nargs="+", metavar="ID", help=f"hub ids, e.g. {', '.join(OFFICIAL_MODELS)}")
    parser.add_argument("--out", required=True, help="the folder (one ID), or the parent of one folder per ID")
    parser.add_argument("--revision", default=None, help="commit, branch or tag of the model(s) (default main)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer id (default: the official pairing)")
    parser.add_argument("--tokenizer-revision", default=None, help="commit, branch or tag of the tokenizer")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser()
    try:
        fetched = [
            fetch(
                model_id,
                out if len(args.ids) == 1 else out / model_id.rsplit("/", 1)[-1],
                args.revision,
                args.tokenizer,
                args.tokenizer_revision,
            )
            for model_id in args.ids
        ]
    except HubOffline:  # kronos-fetch is what downloads: the generic advice (run kronos-fetch) would loop
        print(
            "kronos-fetch: error: HF_HUB_OFFLINE is set, which forbids downloading, and the model is not in the "
            "model cache; kronos-fetch downloads: run it with HF_HUB_OFFLINE unset (or 0) on a machine that "
            "reaches the hub (files already in the cache are copied even offline)",
            file=sys.stderr,
        )
        return 2
    except HubUnreachable as exc:
        print(
            f"kronos-fetch: error: cannot reach {exc.endpoint} ({exc.reason}): the network is unreachable from "
            "here and the model is not in the model cache; run kronos-fetch on a machine that reaches the hub "
            "and copy its --out folder here, or set HF_ENDPOINT to a mirror (HTTPS_PROXY to a proxy) that can "
            "be reached",
            file=sys.stderr,
        )
        return 2
    except (KronosError, OSError) as exc:
        print(f"kronos-fetch: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(fetched if len(fetched) > 1 else fetched[0], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
