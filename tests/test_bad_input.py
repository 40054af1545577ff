"""Bad input of every kind gets a clear error or a counted reason, and changes no file but the intended output.

Each case writes its files into a fresh folder, runs the `deepseek-wb` command in-process from there
(`deepseek_wb.cli.main`), and checks: the exit code; that the message names the file (and line) or the field;
no traceback; and, by hashing every file of the folder before and after, that nothing changed but the case's
own outputs. Run directories here are forged, as one copied from someone else could be: only commands that read
them (`status`, `runs`, `diagnose`) are run on them (the forged-run-directory test covers `stop`)."""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from deepseek_wb.cli import main


def parquet(rows: list[dict], cut: int | None = None) -> Callable[[Path], None]:
    "A writer of a Parquet file holding `rows` (cut to its first `cut` bytes: a truncated copy)."
    def write(path: Path):
        import pyarrow as pa, pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
        if cut is not None: path.write_bytes(path.read_bytes()[:cut])
    return write


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


TEXTS = jsonl(*({"text": f"line {i} of a small corpus of plain words"} for i in range(6)))
STATUS = json.dumps(dict(state="finished", pid=None, pgid=None, started_at=1.7e9, ended_at=1.7e9 + 60, exit_code=0, max_steps=20))
GOOD_METRICS = jsonl(dict(kind="event", time=1.7e9, event="started", schema=1),
                     *(dict(kind="train", time=1.7e9 + s, step=s, loss=5 - s / 10, lr=1e-3, grad_norm=1.0) for s in range(1, 21)))
GARBAGE = (b"\x00\xff\xfe garbage bytes\n" b"42\n" b'{"step": 3, "loss": 1.0}\n' b'{"kind": "train", "step": "x", "loss": "high"}\n'
           b'["a", "list"]\n' b'{"kind": "train", "time": 1.7e9, "step": 21, "loss": NaN}\n' b'{"kind": "train", "ste')


def cleaned(*argv) -> Callable[[Path], None]:
    "A writer that runs `deepseek-wb data clean` with `argv` first (from the case's folder): an earlier output of ours."
    def write(path: Path): assert main(["data", "clean", *argv]) == 0
    return write


BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
PROFILE_OVER = "name: x\ndeepspeed:\n  flops_profiler:\n    output_file: victim.txt\n    enabled: true\n"
OWN_CODE = {"m/config.json": json.dumps(dict(model_type="own", n_embd=32, n_layer=1, n_head=2, vocab_size=64,
                                             auto_map={"AutoConfig": "own.Config", "AutoModelForCausalLM": "own.Model"})),
            "m/own.py": "open('pwned', 'w').write('code from the model folder ran')\n"}


@dataclass
class Case:
    name: str
    files: dict                 # path -> text, bytes, or a writer taking the path
    argv: list[str]
    codes: set                  # acceptable exit codes
    says: list[str]             # phrases the output (stdout + stderr) must hold: the file and line, or the field
    outputs: list[str] = field(default_factory=list)  # paths the command may write or change (prefixes)


CASES = [
    # data files, inspected
    Case("jsonl: a malformed line", {"c.jsonl": '{"text": "fine"}\n{"text": broken}\n'}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl:2", "malformed JSON"]),
    Case("jsonl: a malformed line, lenient", {"c.jsonl": '{"text": "fine"}\n{"text": broken}\n'},
         ["data", "inspect", "c.jsonl", "--lenient"], {0}, ["malformed_json: 1", "c.jsonl:2"]),
    Case("jsonl: a line that is not an object", {"c.jsonl": '{"text": "fine"}\n[1, 2]\n'}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl:2", "JSON object"]),
    Case("jsonl: no such text column", {"c.jsonl": '{"body": "fine"}\n'}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl:1", "the columns are: body"]),
    Case("jsonl: a lone surrogate escape, lenient", {"c.jsonl": '{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n'},
         ["data", "inspect", "c.jsonl", "--lenient"], {0}, ["invalid_unicode: 1", "c.jsonl:2"]),
    Case("jsonl: invalid UTF-8 on one line, lenient", {"c.jsonl": b'{"text": "fine"}\n{"text": "bad \xff\xfe bytes"}\n'},
         ["data", "inspect", "c.jsonl", "--lenient"], {0}, ["invalid_utf8: 1", "c.jsonl:2"]),
    Case("jsonl: text null and empty", {"c.jsonl": '{"text": "fine"}\n{"text": null}\n{"text": "  "}\n'},
         ["data", "inspect", "c.jsonl"], {0}, ["missing_text: 1", "empty_text: 1", "c.jsonl:2", "c.jsonl:3"]),
    Case("jsonl: an empty file", {"c.jsonl": ""}, ["data", "inspect", "c.jsonl"], {0, 1}, ["c.jsonl"]),
    Case("jsonl: a binary file", {"c.jsonl": bytes(range(256)) * 64}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl", "not UTF-8"]),
    Case("jsonl: gzip-compressed under .jsonl", {"c.jsonl": b"\x1f\x8b\x08\x00" + b"\x00" * 64}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl", "gzip"]),
    Case("csv: a UTF-8 BOM before the header", {"c.csv": "\ufefftext,label\nhello there,a\nhi again,b\n"},
         ["data", "inspect", "c.csv", "--label-column", "label"], {0}, ["c.csv: 2 rows"]),
    Case("csv: a field past the default 128 KiB limit", {"c.csv": "text\n" + "word " * 40_000 + "\nshort\n"}, ["data", "inspect", "c.csv"], {0}, ["c.csv: 2 rows"]),
    Case("csv: a row with too few fields", {"c.csv": "text,label\nhello,a\nno label here\n"},
         ["data", "inspect", "c.csv", "--label-column", "label"], {1}, ["c.csv:3", "1 fields"]),
    Case("csv: a row with too few fields, lenient", {"c.csv": "text,label\nhello,a\nno label here\n"},
         ["data", "inspect", "c.csv", "--label-column", "label", "--lenient"], {0}, ["malformed_csv: 1", "c.csv:3"]),
    Case("csv: a binary file named .csv", {"c.csv": bytes(range(256)) * 64}, ["data", "inspect", "c.csv"], {1}, ["c.csv", "not UTF-8"]),
    Case("csv: an open quote runs to the end", {"c.csv": 'text\n"never closed\nmore\n'}, ["data", "inspect", "c.csv"], {1}, ["c.csv:2"]),
    Case("parquet: truncated", {"c.parquet": parquet([{"text": f"row {i}"} for i in range(50)], cut=100)},
         ["data", "inspect", "c.parquet"], {1}, ["c.parquet", "not a readable Parquet file"]),
    Case("parquet: null and empty texts counted with their row numbers", {"c.parquet": parquet([{"text": "a"}, {"text": None}, {"text": ""}, {"text": "b"}])},
         ["data", "inspect", "c.parquet"], {0}, ["2 rows", "missing_text: 1", "c.parquet:row 1", "empty_text: 1", "c.parquet:row 2"]),
    Case("parquet: the text column holds numbers", {"c.parquet": parquet([{"text": 1}, {"text": 2}])},
         ["data", "inspect", "c.parquet"], {1}, ["c.parquet", "not text"]),
    Case("a Parquet file named .jsonl", {"c.jsonl": parquet([{"text": "a"}])}, ["data", "inspect", "c.jsonl"], {1}, ["c.jsonl", "Parquet"]),
    Case("no such file", {}, ["data", "inspect", "missing.jsonl"], {1}, ["missing.jsonl", "no such file"]),
    Case("an unknown file type", {"c.xlsx": b"PK\x03\x04"}, ["data", "inspect", "c.xlsx"], {1}, ["c.xlsx", "unknown file type"]),
    Case("a folder without data files", {"d/readme.rst": "nothing"}, ["data", "inspect", "d"], {1}, ["no data files"]),
    # data clean: rules, rules files and outputs
    Case("clean: a misspelled rule", {"c.jsonl": TEXTS}, ["data", "clean", "c.jsonl", "out.jsonl", "--rules", "htlm"], {1}, ["did you mean 'html'"]),
    Case("clean: a rule parameter without =", {"c.jsonl": TEXTS}, ["data", "clean", "c.jsonl", "out.jsonl", "--rules", "length:min_tokens"], {1}, ["key=value"]),
    Case("clean: a rules file with a YAML error", {"c.jsonl": TEXTS, "rules.yaml": "- rule: html\n- {rule: length\n"},
         ["data", "clean", "c.jsonl", "out.jsonl", "--rules-file", "rules.yaml"], {1}, ["rules.yaml:3", "fix the YAML"]),
    Case("clean: a rules file that is a mapping", {"c.jsonl": TEXTS, "rules.yaml": "rule: html\n"},
         ["data", "clean", "c.jsonl", "out.jsonl", "--rules-file", "rules.yaml"], {1}, ["rules.yaml", "a list of rules"]),
    Case("clean: a missing rules file", {"c.jsonl": TEXTS}, ["data", "clean", "c.jsonl", "out.jsonl", "--rules-file", "nope.yaml"], {1}, ["nope.yaml"]),
    Case("clean: a length rule that removes every row", {"c.jsonl": TEXTS},
         ["data", "clean", "c.jsonl", "out.jsonl", "--rules", "length:min_tokens=512", "near_dedup"], {0}, ["6 rows in, 0 out"],
         ["out.jsonl", ".out.jsonl"]),
    Case("clean: an empty input", {"c.jsonl": ""}, ["data", "clean", "c.jsonl", "out.parquet"], {0, 1}, ["c.jsonl"], ["out.parquet", ".out.parquet"]),
    Case("clean: into a folder of the user's", {"c.jsonl": TEXTS, "keep/notes.txt": "mine"},
         ["data", "clean", "c.jsonl", "keep", "--force"], {1}, ["keep", "not an earlier output"]),
    Case("clean: over the input", {"c.jsonl": TEXTS}, ["data", "clean", "c.jsonl", "c.jsonl", "--force"], {1}, ["c.jsonl", "the input"]),
    Case("clean: over the folder holding the input", {"d/c.jsonl": TEXTS}, ["data", "clean", "d/c.jsonl", "d", "--force"], {1}, ["holds the input"]),
    Case("clean: into the current folder", {"c.jsonl": TEXTS}, ["data", "clean", "c.jsonl", ".", "--force"], {1}, ["current folder"]),
    Case("clean: over a report that is not ours", {"c.jsonl": TEXTS, "out.jsonl.report.json": "my notes"},
         ["data", "clean", "c.jsonl", "out.jsonl", "--force"], {1}, ["out.jsonl.report.json"]),
    Case("clean: a rules file with YAML aliases", {"c.jsonl": TEXTS, "rules.yaml": "- &r {rule: html}\n- *r\n"},
         ["data", "clean", "c.jsonl", "out.jsonl", "--rules-file", "rules.yaml"], {1}, ["rules.yaml:1", "anchors and aliases"]),
    Case("clean: a rules file past 1 MB", {"c.jsonl": TEXTS, "rules.yaml": "- rule: html\n" + "#\n" * 600_000},
         ["data", "clean", "c.jsonl", "out.jsonl", "--rules-file", "rules.yaml"], {1}, ["rules.yaml", "larger than 1,000,000 bytes"]),
    Case("clean: --force over its own output named with a trailing slash", {"c.jsonl": TEXTS, "out": cleaned("c.jsonl", "out/")},
         ["data", "clean", "c.jsonl", "out/", "--force"], {0}, ["out.report.json"], ["out/", "out.report.json", ".out."]),
    # configs
    Case("config: no such file", {}, ["config", "check", "nope.yaml"], {1}, ["nope.yaml", "no such config file"]),
    Case("config: a YAML syntax error", {"c.yaml": "name: x\nzero: {stage: 3\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml:", "syntax"]),
    Case("config: a list, not a mapping", {"c.yaml": "- a\n- b\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml", "mapping"]),
    Case("config: a Python object tag", {"c.yaml": "name: !!python/object/apply:os.system ['touch pwned']\n"},
         ["config", "check", "c.yaml"], {1}, ["c.yaml"]),
    Case("config: a binary file", {"c.yaml": bytes(range(256)) * 16}, ["config", "check", "c.yaml"], {1}, ["c.yaml", "not UTF-8"]),
    Case("config: JSON with NaN", {"c.json": '{"gradient_clipping": NaN}'}, ["config", "check", "c.json"], {1}, ["gradient_clipping", "finite"]),
    Case("config: YAML .inf", {"c.yaml": "optimizer:\n  lr: .inf\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml:2", "optimizer.lr"]),
    Case("config: a seed numpy cannot take", {"c.yaml": "seed: 4294967296\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml:1", "seed"]),
    Case("config: a run name that climbs out", {"c.yaml": "name: ../../elsewhere\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml:1", "name"]),
    Case("config: a misspelled key", {"c.yaml": "max_step: 5\n"}, ["config", "check", "c.yaml"], {1}, ["c.yaml:1", "did you mean 'max_steps'"]),
    Case("config: an override without a key", {"c.yaml": "name: x\n"}, ["config", "check", "c.yaml", "=5"], {1}, ["key=value"]),
    Case("config: a folder, not a file", {"d/x": ""}, ["config", "check", "d"], {1}, ["is a folder, not a config file"]),
    Case("config: an alias bomb", {"c.yaml": BOMB}, ["config", "check", "c.yaml"], {1}, ["c.yaml:1", "anchors and aliases", "write the values out"]),
    Case("config: past 1 MB", {"c.yaml": "name: x\n" + "#\n" * 600_000}, ["config", "check", "c.yaml"], {1}, ["c.yaml", "larger than 1,000,000 bytes"]),
    Case("config: JSON nested 5000 levels", {"c.json": '{"deepspeed": ' + '{"a": ' * 5000 + "1" + "}" * 5001},
         ["config", "check", "c.json"], {1}, ["c.json", "nested more than 32 levels"]),
    Case("config: DeepSpeed's profiler told to overwrite a file", {"c.yaml": PROFILE_OVER, "victim.txt": "mine"},
         ["config", "check", "c.yaml"], {1}, ["c.yaml:4", "deepspeed.flops_profiler.output_file"]),
    Case("config: metrics sent to Weights & Biases", {"c.yaml": "name: x\ndeepspeed:\n  wandb: {enabled: true}\n"},
         ["config", "check", "c.yaml"], {1}, ["c.yaml:3", "deepspeed.wandb", "over the network"]),
    Case("config: universal checkpoints, unpickled", {"c.yaml": "deepspeed:\n  checkpoint:\n    load_universal: true\n"},
         ["config", "check", "c.yaml"], {1}, ["c.yaml:3", "deepspeed.checkpoint.load_universal"]),
    Case("config deepspeed: DeepSpeed's TensorBoard writing elsewhere", {"c.yaml": "deepspeed:\n  tensorboard: {enabled: true, output_path: tb}\n"},
         ["config", "deepspeed", "c.yaml"], {1}, ["deepspeed.tensorboard", "outside the run directory"]),
    Case("config: a model folder that asks to run its own code", {"c.yaml": "model:\n  path: m\n", **OWN_CODE},
         ["config", "check", "c.yaml"], {1}, ["c.yaml:2", "model.path", "never runs code"]),
    # run directories, forged
    Case("status: not a run directory", {"r/notes.txt": "x"}, ["status", "r"], {1}, ["r", "status.json"]),
    Case("status: garbage status.json", {"r/status.json": b"\x00\xffnot json", "r/metrics.jsonl": GOOD_METRICS}, ["status", "r"], {0, 1}, ["r"]),
    Case("status: status.json holds a list", {"r/status.json": "[1, 2]", "r/metrics.jsonl": GOOD_METRICS}, ["status", "r"], {0, 1}, ["r"]),
    Case("status: garbage metrics lines", {"r/status.json": STATUS, "r/metrics.jsonl": GOOD_METRICS.encode() + GARBAGE},
         ["status", "r"], {0}, ["step 21/20", "unreadable metrics lines skipped"]),
    Case("runs: one bad run directory among good ones",
         {"runs/good/status.json": STATUS, "runs/good/metrics.jsonl": GOOD_METRICS, "runs/bad/status.json": b"\xff\xfe",
          "runs/bad/metrics.jsonl": GARBAGE, "runs/worse/status.json": '"a string"'}, ["runs", "runs"], {0}, ["good", "finished"]),
    Case("launch: a forged run's config.json points DeepSpeed at a file",
         {"r/config.json": json.dumps(dict(name="forged", deepspeed=dict(flops_profiler=dict(enabled=True, output_file="victim.txt")))),
          "r/status.json": STATUS, "victim.txt": "mine"}, ["launch", "r/config.json", "--run-dir", "r"], {1},
         ["r/config.json", "deepspeed.flops_profiler.output_file"]),
    Case("diagnose: no metrics", {"r/status.json": STATUS}, ["diagnose", "r"], {1}, ["r", "metrics.jsonl"]),
    Case("diagnose: garbage metrics lines", {"r/status.json": STATUS, "r/metrics.jsonl": GOOD_METRICS.encode() + GARBAGE},
         ["diagnose", "r"], {0, 1}, []),
    Case("diagnose: only garbage", {"r/status.json": STATUS, "r/metrics.jsonl": GARBAGE}, ["diagnose", "r"], {0, 1}, []),
    # command lines
    Case("an unknown command", {}, ["trian", "x.yaml"], {2}, ["invalid choice: 'trian'"]),
    Case("a word that is not an override", {"c.yaml": "name: x\n"}, ["config", "check", "c.yaml", "--json", "lr"], {2}, ["lr", "key=value"]),
    Case("a number option given text", {"c.yaml": "name: x\n"}, ["launch", "c.yaml", "--procs", "two"], {2}, ["--procs", "invalid int value"]),
    Case("a missing argument", {}, ["config", "check"], {2}, ["file"]),
    Case("an override for a command without them", {}, ["diagnose", "r", "max_steps=5"], {2}, ["max_steps=5"]),
]


def tree(root: Path) -> dict[str, str]:
    "Every file under `root` (relative path -> sha256), symbolic links by their target."
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink(): out[rel] = "-> " + str(p.readlink())
        elif p.is_file(): out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir(): out[rel + "/"] = "dir"
    return out


def test_enough_cases():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, content in case.files.items():
        path = tmp_path/name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content): content(path)
        elif isinstance(content, bytes): path.write_bytes(content)
        else: path.write_text(content)
    before = tree(tmp_path)
    try: code = main(case.argv)
    except SystemExit as e: code = e.code  # argparse's usage errors
    except Exception as e:
        pytest.fail(f"{case.name}: raised {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    said = out + err
    assert code in case.codes, f"exit {code}\n{said}"
    assert "Traceback" not in said, said
    for phrase in case.says: assert phrase in said, f"{phrase!r} not in:\n{said}"
    after = tree(tmp_path)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    unexpected = {p for p in changed if not any(p.startswith(o) for o in case.outputs)}
    assert not unexpected, f"changed outside the intended output: {sorted(unexpected)}"
    assert not (tmp_path/"pwned").exists()
