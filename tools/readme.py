"""Render README.md from nbs/index.ipynb (markdown cells as they are, code cells as Python blocks).

    python tools/readme.py          write README.md
    python tools/readme.py --check  exit 1 if README.md is not what index.ipynb renders to

nbdev's own `nbdev-readme` needs Quarto; this keeps the README in step without it.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Rendered from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    parts = []
    for cell in json.loads(nb_path.read_text())["cells"]:
        src = "".join(cell["source"]).strip()
        if not src or src.startswith("#| hide"):
            continue
        if cell["cell_type"] == "markdown":
            parts.append(src)
        elif cell["cell_type"] == "code":
            parts.append("```python\n" + src + "\n```")
    return HEADER + "\n\n".join(parts) + "\n"


def main(argv) -> int:
    readme, text = ROOT / "README.md", render()
    if "--check" in argv:
        if not readme.is_file() or readme.read_text() != text:
            print("README.md is out of step with nbs/index.ipynb: run `python tools/readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
