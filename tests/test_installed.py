"""The package as a user installs it, away from this repository.

The sdist is built from the checkout and the wheel from the sdist (what `python -m build` does), so
a file the sdist forgets is missing from the wheel too. The wheel goes into a fresh virtual
environment whose dependencies come from the one running the tests (a `.pth` line: fast, and
nothing is downloaded), and every command runs from a temporary folder outside the repository."""
import json
import re
import site
import subprocess
import sys
import sysconfig
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

import deepseek_wb

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {p.name for p in (ROOT/"deepseek_wb"/"examples").glob("*.yaml")}


def build(hook: str, src: Path, out: Path) -> Path:
    "Run the project's PEP 517 `hook` (build_sdist or build_wheel) in `src`; the file it wrote in `out`."
    code = f"from setuptools import build_meta as b; print(b.{hook}({str(out)!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict:
    "The sdist, built from the checkout, and the wheel, built from the sdist."
    tmp = tmp_path_factory.mktemp("dist")
    sdist = build("build_sdist", ROOT, tmp)
    with tarfile.open(sdist) as t: t.extractall(tmp/"src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dict(sdist=sdist, wheel=build("build_wheel", next((tmp/"src").iterdir()), tmp))


@pytest.fixture(scope="module")
def user(dists, tmp_path_factory) -> dict:
    "A fresh virtual environment with the wheel installed, and a working folder outside the repository."
    tmp = tmp_path_factory.mktemp("user")
    env = tmp/"venv"
    venv.create(env, with_pip=False)
    python = env/"bin"/"python"
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                        "--quiet", str(dists["wheel"])], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    theirs = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()])
    (theirs/"deps-from-the-test-environment.pth").write_text("".join(f"{d}\n" for d in ours))  # appended after the wheel's own
    work = tmp/"elsewhere"
    work.mkdir()
    return dict(env=env, python=python, exe=env/"bin"/"deepseek-wb", work=work)


def run(user: dict, *argv, timeout: float = 600) -> subprocess.CompletedProcess:
    "A command run as the user types it, in their folder, with the environment's scripts first on the PATH."
    env = dict(PATH=f"{user['env']/'bin'}:/usr/bin:/bin", HOME=str(user["work"]), HF_HUB_OFFLINE="1", LANG="C.UTF-8")
    return subprocess.run([str(a) for a in argv], cwd=user["work"], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_distributions_carry_the_shipped_files(dists):
    with zipfile.ZipFile(dists["wheel"]) as z: names = set(z.namelist())
    assert {f"deepseek_wb/examples/{n}" for n in SHIPPED} <= names, sorted(names)
    assert {"deepseek_wb/grafana/deepseek_wb.json", "deepseek_wb/corpora/zh.jsonl", "deepseek_wb/__main__.py"} <= names
    with tarfile.open(dists["sdist"]) as t: in_sdist = {Path(n).name for n in t.getnames()}
    assert SHIPPED <= in_sdist and "deepseek_wb.json" in in_sdist


def test_installed_not_the_checkout(user):
    r = run(user, user["python"], "-c", "import deepseek_wb; print(deepseek_wb.__file__)")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(user["env"]), r.stdout


def test_version_and_python_m(user):
    for argv in ([user["exe"], "--version"], [user["python"], "-m", "deepseek_wb", "--version"]):
        r = run(user, *argv)
        assert (r.returncode, r.stdout.strip()) == (0, f"deepseek-wb {deepseek_wb.__version__}"), r.stderr


def test_examples_listed_and_written_out(user):
    r = run(user, user["exe"], "examples", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert {e["name"] + ".yaml" for e in listed} == SHIPPED and all(e["description"] for e in listed)
    assert all(Path(e["path"]).is_relative_to(user["env"]) for e in listed)
    r = run(user, user["exe"], "examples", "tiny-cpu", "mine.yaml")
    assert r.returncode == 0 and (user["work"]/"mine.yaml").read_text() == (ROOT/"deepseek_wb"/"examples"/"tiny-cpu.yaml").read_text()
    r = run(user, user["exe"], "grafana")
    assert r.returncode == 0 and json.loads((user["work"]/"deepseek_wb.json").read_text())["panels"], r.stderr


def test_config_check_by_name(user):
    r = run(user, user["exe"], "config", "check", "tiny-cpu")
    assert r.returncode == 0 and "tiny-cpu: valid" in r.stdout, r.stdout + r.stderr
    assert re.search(r"the shipped config tiny-cpu \(.*/venv/.*tiny-cpu\.yaml\)", r.stderr), r.stderr
    r = run(user, user["exe"], "config", "check", "tiny-cpx")
    assert r.returncode == 1 and "did you mean tiny-cpu?" in r.stdout, r.stdout


def test_readme_script_lines(user):
    "The README's first script lines (load a shipped config by name, plan the hardware), run by the installed package."
    section = (ROOT/"README.md").read_text().split("## In a notebook or a script", 1)[1].split("Train in the background", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "RunConfig.load(" in code
    r = run(user, user["python"], "-c", code)
    assert r.returncode == 0, r.stderr[-3000:]


def test_a_shipped_config_launches_and_finishes(user):
    r = run(user, user["exe"], "launch", "tiny-cpu", "max_steps=5", "checkpoint_every=5", "log_every=1", "eval_every=5",
            "data.limit=200", "schedule.warmup_steps=1", "--run-dir", "runs/five")
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir, deadline = user["work"]/"runs"/"five", time.time() + 600
    while True:
        r = run(user, user["exe"], "status", run_dir, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        status = json.loads(r.stdout)
        if status["state"] not in ("queued", "running") or time.time() > deadline: break
        time.sleep(2)
    assert status["state"] == "finished", (status, (run_dir/"logs").is_dir() and sorted((run_dir/"logs").iterdir()))
    assert (run_dir/"final"/"config.json").is_file()
