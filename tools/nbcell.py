"""Edit the source notebooks cell by cell, by cell id: the notebooks in nbs/ are the source of the package.

    python tools/nbcell.py show NB                 # every cell: id, type, first line
    python tools/nbcell.py show NB ID              # one cell's source
    python tools/nbcell.py set NB ID [FILE|-]      # replace a cell's source (stdin by default)
    python tools/nbcell.py insert NB AFTER_ID code|markdown [FILE|-]   # a new cell after AFTER_ID ("top" for first); prints its id
    python tools/nbcell.py delete NB ID

Run `nbdev-export` afterwards (and `nbdev-clean` before committing)."""
import json
import secrets
import sys
from pathlib import Path


def load(nb: str) -> dict:
    return json.loads(Path(nb).read_text(encoding="utf-8"))


def save(nb: str, data: dict):
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    tmp = Path(nb).with_suffix(".ipynb.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(nb)


def find(data: dict, cell_id: str) -> int:
    for i, c in enumerate(data["cells"]):
        if c.get("id") == cell_id: return i
    sys.exit(f"no cell with id {cell_id}")


def read_source(arg: str | None) -> list[str]:
    text = sys.stdin.read() if arg in (None, "-") else Path(arg).read_text(encoding="utf-8")
    text = text.rstrip("\n")
    return text.splitlines(keepends=True)


def new_cell(kind: str, source: list[str], ids: set) -> dict:
    cid = secrets.token_hex(4)
    while cid in ids: cid = secrets.token_hex(4)
    if kind == "markdown": return {"cell_type": "markdown", "id": cid, "metadata": {}, "source": source}
    return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {}, "outputs": [], "source": source}


def main(argv: list[str]):
    if len(argv) < 2: sys.exit(__doc__)
    cmd, nb, rest = argv[0], argv[1], argv[2:]
    data = load(nb)
    if cmd == "show":
        if rest: print("".join(data["cells"][find(data, rest[0])]["source"])); return
        for c in data["cells"]:
            src = "".join(c["source"])
            print(f"{c.get('id')} {c['cell_type'][:4]:4} {len(src.splitlines()):4} | {(src.splitlines() or [''])[0][:100]}")
    elif cmd == "set":
        data["cells"][find(data, rest[0])]["source"] = read_source(rest[1] if len(rest) > 1 else None)
        save(nb, data)
    elif cmd == "insert":
        after, kind = rest[0], rest[1]
        cell = new_cell(kind, read_source(rest[2] if len(rest) > 2 else None), {c.get("id") for c in data["cells"]})
        at = 0 if after == "top" else find(data, after) + 1
        data["cells"].insert(at, cell)
        save(nb, data)
        print(cell["id"])
    elif cmd == "delete":
        del data["cells"][find(data, rest[0])]
        save(nb, data)
    else: sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
