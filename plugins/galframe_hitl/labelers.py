"""Who may answer on the labeling page: per-labeler tokens kept (hashed) in the label store.

    galframe hitl labelers add alice --store runs/hitl/<run>/labels.sqlite            # prints alice's link
    galframe hitl labelers add carol --admin --store ...                               # may export and undo anyone's
    galframe hitl labelers token alice --store ...                                     # a new token; the old one stops
    galframe hitl labelers remove alice --store ...                                    # revoked (answers are kept)
    galframe hitl labelers list --store ...

(also ``python -m galframe_hitl.labelers ...``).  A store with no labelers serves the page in single-user
mode, as before: no token on 127.0.0.1, the name in the page's labeler box.  Once one labeler exists,
every answer and undo is attributed to the labeler whose token came with the request.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from galframe.errors import ConfigError, DataError

from galframe_hitl.store import LabelStore

STORE_NAME = "labels.sqlite"


def open_store(spec: str) -> LabelStore:
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / STORE_NAME
    if not path.is_file():
        raise DataError(f"{path}: label store not found (--store: a labels.sqlite or a hitl run directory).")
    return LabelStore(path)


def link(url: str, token: str) -> str:
    return url.rstrip("/") + "/?token=" + token


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m galframe_hitl.labelers") -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description="labelers of a galframe label store and their tokens")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_text in (("add", "register a labeler and print their token and link"),
                            ("token", "give a labeler a new token (the old one stops working)"),
                            ("remove", "revoke a labeler's token (their answers are kept)"),
                            ("list", "the labelers, their roles and whether they are active")):
        p = sub.add_parser(name, help=help_text)
        if name != "list":
            p.add_argument("name")
        p.add_argument("--store", required=True, help="labels.sqlite (or the hitl run directory holding it)")
        if name in ("add", "token"):
            p.add_argument("--url", default="http://127.0.0.1:8765/", help="where the page is served (for the link)")
        if name == "add":
            p.add_argument("--admin", action="store_true", help="may export every label and undo anyone's answers")
    args = parser.parse_args(argv)
    try:
        store = open_store(args.store)
        if args.cmd == "add":
            token = store.add_labeler(args.name, "admin" if args.admin else "labeler")
            print(f"Added {'admin' if args.admin else 'labeler'} {args.name} to {store.path}")
            print(f"token: {token}")
            print(f"link:  {link(args.url, token)}")
            print("The token is shown once (the store keeps only its hash); give it to this person only.")
        elif args.cmd == "token":
            token = store.rotate_token(args.name)
            print(f"New token for {args.name} (the old one no longer works)")
            print(f"token: {token}")
            print(f"link:  {link(args.url, token)}")
        elif args.cmd == "remove":
            store.remove_labeler(args.name)
            print(f"Revoked {args.name}'s token; their answers stay in {store.path}")
        else:
            rows = store.labelers()
            if not rows:
                print(f"{store.path}: no labelers (single-user mode)")
            for r in rows:
                print(f"{r['name']:<24} {r['role']:<8} {'revoked ' + r['revoked'] if r['revoked'] else 'active'}")
        return 0
    except (DataError, ConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
