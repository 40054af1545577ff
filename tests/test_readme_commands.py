"""Every shell line of README.md's "On the command line" section, run for real as a user types it.

The lines run in a fresh folder that holds what they need (the configs are shipped ones, by name): a `corpus.jsonl` with a `body`
column and a `chats.jsonl` of chat records (the README's placeholders), and RUN_DIR, the run the README's own `launch` line starts. That run is shared:
`checkpoint` runs right after `launch` (it wants the job alive) and `stop` runs last."""
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

EXE = shutil.which("deepseek-wb") or pytest.skip("deepseek-wb is not installed", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    "The commands of the first ```sh block under '## On the command line', comments dropped and `;` lines split."
    section = ROOT.joinpath("README.md").read_text().split("## On the command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";")
        lex.whitespace_split = True
        command = []
        for token in list(lex) + [";"]:
            if token != ";": command.append(token)
            elif command: commands.append(command); command = []
    return commands


def in_run_order(commands: list[list[str]]) -> list[list[str]]:
    "The README's order, but `checkpoint` right after `launch` (while the run surely runs, on any machine) and `stop` last."
    later = {"checkpoint", "stop"}
    out = []
    for c in commands:
        if c[1] not in later: out.append(c)
        if c[1] == "launch": out += [d for d in commands if d[1] == "checkpoint"]
    return out + [d for d in commands if d[1] == "stop"]


COMMANDS = in_run_order(readme_commands())

# what each command's output must show (stdout), by its subcommand
SENSIBLE = {"--version": r"^deepseek-wb \d+\.\d+", "env": r"Python", "examples": r"tiny-cpu +A complete small run|wrote my-run\.yaml",
            "config check": r"my-run\.yaml: valid", "grafana": r"wrote deepseek_wb\.json", "config deepspeed": r'"train_batch_size": 4096',
            "data inspect": r"corpus\.jsonl: \d+ rows|chats\.jsonl: \d+ records, format messages", "data clean": r"wrote clean\.parquet and clean\.parquet\.report\.json",
            "launch": r"run directory: ", "runs": r"tiny-cpu-\S+ +(queued|running|finished)",
            "status": r"Job\(.*tiny-cpu-\S+\): (queued|running|finished)", "checkpoint": r"a checkpoint is saved",
            "diagnose": r"no problems found|(warning|info): \w+", "stop": r": (stopped|finished)"}


def subcommand(argv: list[str]) -> str:
    return " ".join(argv[1:3]) if argv[1] in ("config", "data") else argv[1]


def corpus(path: Path):
    "A small JSONL corpus with a `body` column: long help texts to keep, a near-duplicate, markup and short rows to drop."
    from pydoc_data.topics import topics
    long = [t for t in topics.values() if 700 <= len(t.split()) <= 1500][:4]
    rows = [dict(body=t) for t in long]
    rows.append(dict(body=long[0].replace("\n", " ", 3) + " again"))  # near-duplicate of the first
    rows.append(dict(body="<p>See https://docs.python.org/3/ for more.</p>  " + long[1]))
    rows += [dict(body="too short"), dict(body="")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    "The folder the commands run in; the run they launch is stopped at the end whatever happens."
    here = tmp_path_factory.mktemp("readme")
    corpus(here/"corpus.jsonl")
    from deepseek_wb.chat import write_demo_instructions
    write_demo_instructions(here/"chats.jsonl", n=50)  # the README's chat placeholder: records with `messages`
    state = dict(here=here, run_dir=None)
    yield state
    if state["run_dir"]:
        from deepseek_wb.jobs import Job
        job = Job.attach(state["run_dir"])
        if job.alive(): job.stop(grace=30)


def trained(run_dir: Path) -> bool:
    "Whether the run has logged a training step."
    metrics = run_dir/"metrics.jsonl"
    lines = metrics.read_text(errors="replace").splitlines() if metrics.is_file() else []
    return any('"train"' in line and json.loads(line).get("kind") == "train" for line in lines[:-1])  # the last may be torn


def wait_for_metrics(run_dir: Path, timeout: float = 900):
    "Wait until the run has logged a training step, for `diagnose` to read."
    start = time.time()
    while not trained(run_dir):
        status = json.loads((run_dir/"status.json").read_text())
        assert status.get("state") in ("queued", "running"), f"{run_dir} ended before a training step: {status}"
        assert time.time() - start < timeout, f"{run_dir}: no training step after {timeout} s"
        time.sleep(2)


def test_the_section_has_every_command():
    assert len(COMMANDS) >= 11, COMMANDS
    assert {subcommand(c) for c in COMMANDS} == set(SENSIBLE), "a README command without an expected output here"
    assert all(c[0] == "deepseek-wb" for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_readme_command(argv, place):
    here, argv = place["here"], list(argv)
    if "RUN_DIR" in argv:
        assert place["run_dir"], "the README's launch line did not start a run"
        argv = [str(place["run_dir"]) if a == "RUN_DIR" else a for a in argv]
    if argv[1] == "diagnose": wait_for_metrics(place["run_dir"])
    r = subprocess.run([os.path.abspath(EXE), *argv[1:]], capture_output=True, text=True, timeout=900, cwd=here)
    # documented exit codes: env exits 1 when one of its checks fails, diagnose when a finding is an error
    allowed = {0, 1} if argv[1] == "env" else {0}
    assert r.returncode in allowed, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert re.search(SENSIBLE[subcommand(argv)], r.stdout), r.stdout
    if argv[1] == "launch":
        place["run_dir"] = Path(re.search(r"run directory: (\S+)", r.stdout).group(1))
        assert place["run_dir"].is_relative_to(here.resolve()/"runs")
    if subcommand(argv) == "config deepspeed": json.loads(r.stdout)
    if subcommand(argv) == "data clean":
        report = json.loads((here/"clean.parquet.report.json").read_text())
        assert 0 < report["clean"]["rows_out"] < report["clean"]["rows_in"], report
