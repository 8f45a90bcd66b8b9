"""Ship pretrained weights inside the package: python scripts/ship_weights.py <pretrain run dir> <zoo name> [description]

Copies ``<run>/weights/*.safetensors`` and its sidecar into ``plugins/galframe_lvm/zoo/<name>.*`` and lists
it in ``plugins/galframe_lvm/zoo.json`` with its sha256.  The sidecar already names the command that
made the weights, its wall time and the machine (``galframe pretrain`` writes them).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "galframe_lvm"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    run, name = Path(argv[0]), argv[1]
    files = sorted((run / "weights").glob("*.safetensors"))
    if len(files) != 1:
        print(f"{run}/weights: expected one .safetensors file, found {len(files)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(PACKAGE.parent))
    from galframe_lvm.weights import sha256_of

    meta = json.loads(files[0].with_suffix(".json").read_text())
    if sha256_of(files[0]) != meta["sha256"]:
        print(f"{files[0]}: sha256 differs from its sidecar", file=sys.stderr)
        return 2
    (PACKAGE / "zoo").mkdir(exist_ok=True)
    target = PACKAGE / "zoo" / f"{name}.safetensors"
    shutil.copyfile(files[0], target)
    meta["file"] = target.name
    target.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    pre = meta.get("pretrain", {})
    description = argv[2] if len(argv) > 2 else (
        f"{pre.get('command')} ({pre.get('global_step')} steps, {pre.get('wall_time_s', 0) / 60:.0f} min on {pre.get('machine')})")
    index = PACKAGE / "zoo.json"
    entries = [e for e in json.loads(index.read_text() or "[]") if e.get("name") != name]
    entries.append({"name": name, "file": target.name, "sha256": meta["sha256"], "bands": meta["bands"], "description": description})
    index.write_text(json.dumps(entries, indent=2) + "\n")
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {meta['sha256'][:12]}...) as '{name}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
