"""Extract a small slice of real Chinese prose from Debian's `manpages-zh` into `deepseek_wb/corpora/`.

    apt-get install manpages-zh          # once, on the machine that regenerates the slice
    python tools/zh_corpus.py [--docs 400] [--per-page 1] [--out deepseek_wb/corpora]

Writes `zh.jsonl` (one object a line: text, source page, section), `README.md` (where the text
came from, the package version and its licence as Debian's copyright file states it) and the
licence text. The slice is committed: the demo corpus and the tests never need apt.

Each page is rendered by groff in its default safe mode (no `.sy`/`.pso`: nothing in a page runs)
with a very long line, so a filled paragraph comes out as one line. Kept: paragraphs that are
mostly Chinese, outside the name/synopsis/see-also/author sections and without translator credits;
consecutive paragraphs of one section are joined into documents of `MIN_CHARS` to `MAX_CHARS`
characters. The one change to the words: a space between two Chinese characters is removed (the
older translations put spaces between words, and groff turns a line break into a space).
Pages under another licence than the package's (named in the copyright file) are left out.
"""
import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAN = Path("/usr/share/man/zh_CN")
DOC = Path("/usr/share/doc/manpages-zh")
LICENSE = "GFDL-1.2+"
MIN_CHARS, MAX_CHARS = 120, 600
SKIP_SECTIONS = ("名称", "名字", "NAME", "概述", "总览", "语法", "大纲", "SYNOPSIS", "参见", "另见", "参阅", "SEE ALSO", "作者", "AUTHOR",
                 "版权", "COPYRIGHT", "译者", "翻译", "TRANSLAT", "跋", "COLOPHON", "BUG", "报告错误", "REPORTING")
CREDITS = re.compile(r"中文版|翻译计划|linux\s*论坛|译者|校对|cmpp|linuxforum", re.I)


def wide(ch: str) -> bool:
    "A character East Asian typography sets full width (ideographs, kana, hangul, full-width punctuation)."
    return unicodedata.east_asian_width(ch) in "WF"


def cjk_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(map(wide, chars)) / max(1, len(chars))


def join_cjk(text: str) -> str:
    "Remove the spaces between two wide characters (word-separating spaces of old translations, line breaks)."
    return re.sub(r"(?<=\S)\s+(?=\S)", lambda m: "" if wide(m.string[m.start() - 1]) and wide(m.string[m.end()]) else " ", text)


def render(page: Path) -> str:
    "The page as groff renders it for a terminal: one line per filled paragraph, no bold or underline."
    src = gzip.decompress(page.read_bytes())
    out = subprocess.run(["groff", "-K", "utf-8", "-t", "-Tutf8", "-mandoc", "-rLL=4000n", "-rHY=0", "-P-cbou"],
                         input=src, capture_output=True, timeout=60, env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    return out.stdout.decode("utf-8", "replace")


def paragraphs(text: str):
    "(section, paragraph) pairs of Chinese prose from a rendered page."
    section, lines = None, text.strip().splitlines()
    for line in lines[1:-1]:  # the first and last lines are the page's header and footer
        if not line.strip(): continue
        if not line[0].isspace():
            section = line.strip(); continue
        if section is None or any(s in section.upper() for s in SKIP_SECTIONS): continue
        body = re.sub(r"^\s*\S+(?: \S+)?\s{2,}(?=\S)", "", line) if re.match(r"^\s*[-\w\[\]+.,=/<>|]+\s{2,}", line) else line
        body = body.strip()
        if re.search(r"\S\s{3,}\S", body) or CREDITS.search(body): continue  # a table row, or a translator's credit
        if len(body) >= 20 and cjk_share(body) >= 0.5: yield section, join_cjk(body)


def documents(page: Path, per_page: int):
    "Up to `per_page` documents of a page: consecutive paragraphs of one section, MIN_CHARS to MAX_CHARS characters."
    name = f"{page.name.removesuffix('.gz').rsplit('.', 1)[0]}({page.parent.name.removeprefix('man')})"
    out, cur, cur_section = [], [], None
    def flush():
        text = "\n".join(cur)
        if MIN_CHARS <= len(text) <= MAX_CHARS: out.append(dict(text=text, source=name, section=cur_section))
        cur.clear()
    for section, para in paragraphs(render(page)):
        if section != cur_section or sum(map(len, cur)) + len(para) > MAX_CHARS: flush()
        cur_section = section
        cur.append(para)
        if sum(map(len, cur)) >= MIN_CHARS: flush()
        if len(out) >= per_page: break
    else: flush()
    return out[:per_page]


def other_licences(copyright: str) -> dict[str, str]:
    "Pages the copyright file puts under a licence other than LICENSE: {'kill.1': 'GPL-2.0', ...}."
    out = {}
    for stanza in copyright.split("\n\n"):
        files = re.search(r"^Files:((?:.*\n?)(?:^ .*\n?)*)", stanza, re.M)
        lic = re.search(r"^License: (\S+)", stanza, re.M)
        if files and lic and lic.group(1) != LICENSE:
            out.update({Path(f).name: lic.group(1) for f in files.group(1).split() if f.startswith("src/man")})
    return out


README = """# Chinese slice of the demo corpus

`zh.jsonl`: {n} documents ({chars:,} characters) of real Chinese prose from {pages} manual pages of
Debian's `manpages-zh` {version} (the Chinese translations of the Linux manual pages; upstream
<https://github.com/man-pages-zh/manpages-zh>). One JSON object a line: `text`, `source` (the page,
e.g. `ls(1)`), `section` (the page's section heading). Made by `tools/zh_corpus.py`: pages rendered
by groff, paragraphs of mostly Chinese text kept, spaces between two Chinese characters removed,
consecutive paragraphs of a section joined. These are excerpts: a modified version of the pages.

## Licence

Debian's copyright file for the package (`/usr/share/doc/manpages-zh/copyright`) says of its files:

{stanza}

The pages it puts under other licences ({others}) are not in this
slice, so every document here is {license}: the GNU Free Documentation License, version 1.2 or later, with no Invariant Sections, no
Front-Cover Texts and no Back-Cover Texts. Its text is in `GFDL-1.2.txt`. This licence applies to
`zh.jsonl`, not to the rest of deepseek_wb.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400, help="documents to keep")
    ap.add_argument("--per-page", type=int, default=1, help="documents at most from one page")
    ap.add_argument("--out", type=Path, default=ROOT / "deepseek_wb" / "corpora")
    args = ap.parse_args(argv)
    if not MAN.is_dir() or not shutil.which("groff"):
        print(f"needs Debian's manpages-zh in {MAN} and groff: apt-get install manpages-zh groff-base", file=sys.stderr)
        return 1
    copyright = (DOC / "copyright").read_text()
    others = other_licences(copyright)
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "manpages-zh"], capture_output=True, text=True).stdout.strip()
    docs, seen = [], set()
    for page in sorted(MAN.glob("man*/*.gz")):
        if page.name.removesuffix(".gz") in others: continue
        for d in documents(page, args.per_page):
            if d["text"] not in seen: seen.add(d["text"]); docs.append(d)
    if len(docs) > args.docs:  # evenly over all sections and pages, not the first pages of the alphabet
        docs = [docs[i * len(docs) // args.docs] for i in range(args.docs)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zh.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    stanza = re.search(r"^Files: \*\n.*?(?=\n\n)", copyright, re.M | re.S).group(0)
    (args.out / "README.md").write_text(README.format(
        n=len(docs), chars=sum(len(d["text"]) for d in docs), pages=len({d["source"] for d in docs}), version=version,
        stanza="\n".join("    " + l for l in stanza.splitlines()), others=", ".join(f"{p}: {l}" for p, l in sorted(others.items())),
        license=LICENSE))
    shutil.copy("/usr/share/common-licenses/GFDL-1.2", args.out / "GFDL-1.2.txt")
    size = (args.out / "zh.jsonl").stat().st_size
    print(f"{len(docs)} documents, {size / 1e3:.0f} kB -> {args.out / 'zh.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
