"""Fail when a notebook cell mixes import lines with other code.

nbdev's docs build executes every cell that imports something (so that `show_doc` works), so a
test cell that also imports would run, without its context, while the docs are built. House
style keeps imports in the one import cell of each notebook.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mixed_cells(nb_path: Path):
    nb = json.loads(nb_path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        top = [l for l in "".join(cell["source"]).splitlines() if l and not l.startswith((" ", "\t", "#"))]
        imports = [l for l in top if re.match(r"^(import |from \S+ import )", l)]
        if imports and len(imports) != len(top):
            yield i, imports[0]


def main() -> int:
    bad = [(p, i, line) for p in sorted((ROOT / "nbs").rglob("*.ipynb")) for i, line in mixed_cells(p)]
    for p, i, line in bad:
        print(f"{p.relative_to(ROOT)}: cell {i} mixes imports ({line}) with other code: move the import to the import cell")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
