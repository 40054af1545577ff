"""The quickstart in a real browser: JupyterLab, headless Chromium driven by Playwright, clicking like a user.

One JupyterLab session for the module. The quickstart, prepared by papermill with small parameters, is
opened in the page and run up to the builder, whose controls are changed on the page (the checks and the
DeepSpeed JSON must follow); then on up to the live monitor of the background training job, whose loss
curve must grow, and whose Stop button must stop the job (on the page and in the run's status.json).
Cells after the monitor never run. Screenshots go to $DEEPSEEK_WB_ARTIFACTS (default runs/browser-artifacts/),
and on a failure a screenshot and the JupyterLab log's tail too.

Needs Debian's chromium and Python's playwright: `tools/test_deps.sh browser` installs both.
Run: `pytest tests/test_browser.py -m browser`
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "nbs" / "tutorials" / "quickstart.ipynb"
# Small data, but enough steps that the main job is still running while the monitor is checked.
PARAMS = dict(data_limit=600, gpu_memory_gb=24, warmup_steps=2, max_steps=3000)
BUILDER_MARKER = "ConfigBuilder(config"  # the cell that shows the builder
DATA_PANEL_MARKER = "panel = DataPanel("  # the cell that shows the data inspection panel
MONITOR_MARKER = "Monitor(job"  # the live monitor; the cell before it launches the job; nothing after it runs
SERVING = ROOT / "nbs" / "tutorials" / "serving.ipynb"
SERVING_PARAMS = dict(max_steps=10, warmup_steps=2, load_seconds=2, export=False)
PLAYGROUND_MARKER = "playground = Playground("  # the serving tutorial's playground; nothing after it runs
ARTIFACTS = Path(os.environ.get("DEEPSEEK_WB_ARTIFACTS") or ROOT / "runs" / "browser-artifacts")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-breakpad",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# JupyterLab settings for a test: every cell in the DOM (no virtual scrolling), no news or update pop-ups.
LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}

pytestmark = pytest.mark.browser


# ---------------------------------------------------------------- waiting and evidence

def poll(probe, done, timeout: float, what: str, interval: float = 0.5):
    "Call `probe()` until `done(value)`; return the value, or fail saying what was seen last."
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value): return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {value!r}")
        time.sleep(interval)


def read_json(path: Path) -> dict:
    try: return json.loads(path.read_text())
    except (OSError, ValueError) as e: return {"unreadable": repr(e)}


def tail(path: Path, n: int = 80) -> str:
    try: return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError: return ""


# ---------------------------------------------------------------- JupyterLab server

class Lab:
    "A JupyterLab server on loopback with a random token, in its own process group."

    def __init__(self, root_dir: Path, home: Path):
        self.root_dir, self.home, self.log = root_dir, home, home / "jupyterlab.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); self.port = s.getsockname()[1]
        self.token = os.urandom(16).hex()
        self.base = f"http://127.0.0.1:{self.port}"
        for name, values in LAB_SETTINGS.items():
            f = home / "lab-settings" / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(values))
        self.proc = None

    def start(self):
        home = self.home
        env = dict(os.environ, HF_HUB_OFFLINE="1",
                   JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.allow_root=True",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        poll(self._status, lambda s: s != "down", 120, "JupyterLab answering /api/status")

    def _status(self) -> str:
        if self.proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with code {self.proc.returncode}:\n{tail(self.log, 30)}")
        try:
            with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5) as r:
                return r.read().decode()
        except OSError: return "down"

    def url(self, path: str) -> str: return f"{self.base}/{path}?token={self.token}"

    def stop(self):
        "Shut down kernels and server (through the API), then kill whatever of it is left."
        import psutil
        if self.proc is None: return
        try: family = psutil.Process(self.proc.pid).children(recursive=True)  # kernels run in sessions of their own
        except psutil.Error: family = []
        try:
            req = urllib.request.Request(f"{self.base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {self.token}"})
            urllib.request.urlopen(req, timeout=10).close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired): pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                try: os.killpg(self.proc.pid, sig)
                except ProcessLookupError: pass
                try: self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired: pass
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:
            try: p.kill()
            except psutil.Error: pass


# ---------------------------------------------------------------- a notebook in the page

JS_CELLS = "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]"
JS_PROMPTS = f"""([first, last]) => ({JS_CELLS})().slice(first, last + 1)
    .filter(c => c.classList.contains('jp-CodeCell'))
    .map(c => (c.querySelector('.jp-InputPrompt') || {{}}).textContent || '')"""
JS_KERNEL = """() => ([...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .map(e => e.textContent.trim()).find(t => / \\| \\w+$/.test(t)) || '')"""


class NotebookPage:
    "A notebook open in JupyterLab in a Playwright page, with the cells of `source` (the .ipynb on disk)."

    def __init__(self, page, lab: Lab, path: str, source: Path, artifacts: Path, workspace: str | None = None):
        self.page, self.lab, self.path, self.artifacts, self.workspace = page, lab, path, artifacts, workspace
        cells = json.loads(source.read_text())["cells"]
        self.sources = ["".join(c["source"]) for c in cells]
        self.kinds = [c["cell_type"] for c in cells]
        self.shots = 0
        self.ran_through = -1  # the last cell run so far

    def open(self):
        # a workspace of its own shows this notebook alone (the default one restores every notebook opened before)
        self.page.goto(self.lab.url(f"lab/workspaces/{self.workspace}/tree/{self.path}" if self.workspace else f"lab/tree/{self.path}"))
        n = len(self.sources)
        poll(lambda: self.page.evaluate(f"() => ({JS_CELLS})().length"), lambda k: k == n, 120,
             f"{self.path} showing its {n} cells")
        self.wait_kernel_idle(180)

    def kernel(self) -> str:
        "The status bar's kernel item, e.g. 'Python 3 (ipykernel) | Idle'."
        return self.page.evaluate(JS_KERNEL)

    def wait_kernel_idle(self, timeout: float):
        poll(self.kernel, lambda k: k.endswith("| Idle") and not k.startswith("No Kernel"), timeout,
             "the kernel idle (status bar)")

    def index(self, marker: str) -> int:
        "The index of the first cell whose source contains `marker`."
        hits = [i for i, s in enumerate(self.sources) if marker in s]
        assert hits, f"no cell of {self.path} contains {marker!r}"
        return hits[0]

    def cell(self, i: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(i)

    def prompts(self, first: int, last: int) -> list[str]:
        return self.page.evaluate(JS_PROMPTS, [first, last])

    def output_text(self, i: int) -> str:
        return self.cell(i).locator(".jp-OutputArea").inner_text()

    def run_cells(self, first: int, last: int, timeout: float):
        """Run cells first..last as a user would: click the first cell, shift-click the last, Shift+Enter.
        Waits until each code cell among them has an execution count; fails with the output of the cell
        that stopped the run (an error stops the queued cells)."""
        code = [i for i in range(first, last + 1) if self.kinds[i] == "code"]
        assert code, f"no code cell in {first}..{last}"
        first, last = code[0], code[-1]
        self.page.keyboard.press("Escape")
        self.cell(first).locator(".jp-InputPrompt").click()
        if last != first: self.cell(last).locator(".jp-InputPrompt").click(modifiers=["Shift"])
        selected = self.page.evaluate(f"""() => ({JS_CELLS})().map((c, i) => c.classList.contains('jp-mod-selected')
            || c.classList.contains('jp-mod-active') ? i : -1).filter(i => i >= 0)""")
        assert selected == list(range(first, last + 1)), f"selecting cells {first}..{last} selected {selected}"
        before = self.prompts(first, last)
        started = time.monotonic()
        self.page.keyboard.press("Shift+Enter")

        def probe():
            return dict(prompts=self.prompts(first, last), kernel=self.kernel())

        def done(s):
            if all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"]): return True
            if re.search(r"\| (Dead|Unknown|Restarting)", s["kernel"]): return True
            moved = s["prompts"] != before or time.monotonic() - started > 10
            return moved and s["kernel"].endswith("| Idle") and "[*]:" not in s["prompts"]

        s = poll(probe, done, timeout, f"running cells {first}..{last}", interval=1)
        numbered = [i for i, p in zip(code, s["prompts"]) if re.fullmatch(r"\[\d+\]:", p)]
        if len(numbered) < len(code):
            culprit = numbered[-1] if numbered else first
            raise AssertionError(f"running cells {first}..{last} stopped at cell {culprit} "
                                 f"(kernel: {s['kernel']}); prompts {s['prompts']}; its source:\n"
                                 f"{self.sources[culprit][:500]}\nits output:\n{self.output_text(culprit)[-3000:]}")

    def shot(self, name: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    @contextmanager
    def evidence(self, step: str):
        "On a failure inside, save a screenshot of the page and the JupyterLab log's tail."
        try:
            yield
        except BaseException:
            try: self.page.screenshot(path=str(self.artifacts / f"FAILED-{step}.png"))
            except Exception as e: (self.artifacts / f"FAILED-{step}.screenshot-error.txt").write_text(repr(e))
            (self.artifacts / f"FAILED-{step}-jupyterlab.log").write_text(tail(self.lab.log, 300))
            raise


def show(locator, block: str = "center"):
    "Scroll the notebook so that `locator` is in view (for the screenshots)."
    locator.evaluate(f"el => el.scrollIntoView({{block: '{block}'}})")


# ---------------------------------------------------------------- the monitor panel's contract

def monitor_in(nb: NotebookPage, i: int):
    "The monitor panel shown by cell `i`."
    return nb.cell(i).locator(".dswb-monitor").first


def monitor_state(monitor) -> str:
    return monitor.locator(".dswb-state").first.inner_text().strip()


def loss_points(monitor) -> int:
    "How many points the loss chart's first trace has now (-1: no chart drawn yet)."
    graph = monitor.locator(".dswb-loss .js-plotly-plot")
    if graph.count() == 0: return -1
    return graph.first.evaluate("el => (el.data && el.data[0] && el.data[0].x) ? el.data[0].x.length : -1")


def wait_state(monitor, word: str, timeout: float, avoid: tuple = ()) -> str:
    "Wait until the state element shows `word`; fail at once if it shows one of `avoid`."
    def done(text):
        bad = [w for w in avoid if re.search(rf"\b{w}\b", text)]
        assert not bad, f"the monitor's state shows {bad[0]!r} while waiting for {word!r}: {text!r}"
        return re.search(rf"\b{word}\b", text) is not None
    return poll(lambda: monitor_state(monitor), done, timeout, f"the monitor's state showing {word!r}")


def wait_loss_growth(monitor, timeout: float) -> tuple[int, int]:
    "Points on the loss curve, once some are there and again after it gained some."
    first = poll(lambda: loss_points(monitor), lambda n: n > 0, timeout, "the loss curve's first points")
    later = poll(lambda: loss_points(monitor), lambda n: n > first, timeout,
                 f"the loss curve growing past {first} points")
    return first, later


def click_stop(monitor):
    stop = monitor.locator(".dswb-stop").first
    assert stop.inner_text().strip() == "Stop", f"the stop button reads {stop.inner_text()!r}"
    stop.click()


# ---------------------------------------------------------------- fixtures

def _missing_browser() -> str:
    "Why the browser test cannot run here ('' when it can)."
    missing = [] if shutil.which("chromium") else ["chromium (Debian's package)"]
    try: import playwright.sync_api  # noqa: F401
    except ImportError: missing.append("Python's playwright")
    return f"the browser test needs {' and '.join(missing)}: run tools/test_deps.sh browser" if missing else ""


def opened(quickstart) -> "NotebookPage":
    "The notebook page, or a failure (not a skip, not a setup error) saying what to install."
    if isinstance(quickstart, str): pytest.fail(quickstart, pytrace=False)
    return quickstart


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("[0-9][0-9]-*.png"), *ARTIFACTS.glob("FAILED-*")]: old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The quickstart in a folder of its own, WORK/nbs/tutorials/quickstart.ipynb, so that its runs land in
    WORK/nbs/tutorials/runs, out of the checkout (its config is a shipped one, by name)."""
    work = tmp_path_factory.mktemp("browser")
    (work / "nbs" / "tutorials").mkdir(parents=True)
    import papermill
    for source, params in ((QUICKSTART, PARAMS), (SERVING, SERVING_PARAMS)):
        papermill.execute_notebook(str(source), str(work / "nbs" / "tutorials" / source.name), parameters=params,
                                   prepare_only=True, kernel_name="python3", progress_bar=False, log_output=False)
    return work


def stop_live_runs(runs_root: Path):
    "Stop every server and every job under `runs_root` that is still running."
    from deepseek_wb.jobs import Job
    from deepseek_wb.servers import ServerProcess
    for status in runs_root.glob("serve-*/status.json"):
        try: ServerProcess.attach(status.parent).stop(30)
        except Exception as e: print(f"could not stop the server of {status.parent}: {e!r}")
    for status in runs_root.glob("*/status.json"):
        if status.parent.name.startswith("serve-"): continue
        try:
            job = Job.attach(status.parent)
            if job.alive(): job.stop(grace=30)
        except Exception as e:  # keep stopping the others
            print(f"could not stop {status.parent}: {e!r}")


@pytest.fixture(scope="module")
def quickstart(request, artifacts):
    "The prepared quickstart open in JupyterLab in headless Chromium; everything stopped afterwards."
    problem = _missing_browser()
    if problem:  # the tests fail with this message (see `opened`)
        yield problem
        return
    from playwright.sync_api import sync_playwright
    workspace = request.getfixturevalue("workspace")
    home = workspace / "lab-home"; home.mkdir()
    lab = Lab(workspace, home)
    pw = browser = None
    try:
        lab.start()
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        nb = NotebookPage(page, lab, "nbs/tutorials/quickstart.ipynb",
                          workspace / "nbs" / "tutorials" / "quickstart.ipynb", artifacts)
        with nb.evidence("open"):
            nb.open()
        yield nb
    finally:
        stop_live_runs(workspace / "nbs" / "tutorials" / "runs")
        if browser: browser.close()
        if pw: pw.stop()
        lab.stop()
        if lab.log.exists(): shutil.copy(lab.log, artifacts / "jupyterlab.log")


def run_through(nb: NotebookPage, marker: str, timeout: float) -> int:
    "Run the cells after the last one run, up to and including the cell containing `marker`; its index."
    i = nb.index(marker)
    if i > nb.ran_through:
        nb.run_cells(nb.ran_through + 1, i, timeout)
        nb.ran_through = i
    return i


# ---------------------------------------------------------------- the checks

def test_builder_follows_the_page(quickstart):
    nb = opened(quickstart)
    with nb.evidence("builder"):
        i = run_through(nb, BUILDER_MARKER, timeout=300)
        # On the way, the data panel drew both its charts: the live length histogram and the static labels chart.
        data_panel = nb.cell(nb.index(DATA_PANEL_MARKER)).locator(".jp-OutputArea")
        poll(lambda: data_panel.locator(".js-plotly-plot").count(), lambda n: n == 2, 30, "the data panel's two charts")
        out = nb.cell(i).locator(".jp-OutputArea")
        page = nb.page
        micro = out.locator(".widget-text", has=page.locator(".widget-label", has_text=re.compile(r"^\s*micro batch\s*$")))
        micro_input = micro.locator("input").first
        offload = out.locator(".widget-checkbox", has_text="offload optimizer to CPU").locator("input[type=checkbox]")
        checks_tab = out.locator(".lm-TabBar-tab", has_text="Checks and memory")
        json_tab = out.locator(".lm-TabBar-tab", has_text="DeepSpeed JSON")
        out_text = lambda: out.inner_text()
        show(micro_input)
        before = int(micro_input.input_value())
        assert not offload.is_checked(), "optimizer offload starts on"
        json_tab.click()
        poll(out_text, lambda t: f'"train_micro_batch_size_per_gpu": {before}' in t, 30,
             f"the DeepSpeed JSON showing micro batch {before}")
        nb.shot("builder-initial")

        after = before * 2
        micro_input.fill(str(after)); micro_input.press("Enter")
        poll(out_text, lambda t: f'"train_micro_batch_size_per_gpu": {after}' in t, 30,
             f"the DeepSpeed JSON following micro batch {before} -> {after}")
        nb.shot("builder-micro-batch-json")
        checks_tab.click()
        poll(out_text, lambda t: re.search(rf"global batch = {after} ×", t), 30,
             f"the global batch line following micro batch {after}")
        nb.shot("builder-micro-batch-checks")

        offload.check()  # optimizer offload with ZeRO stage 0: an error
        poll(out_text, lambda t: "zero.offload_optimizer" in t and "needs ZeRO stage" in t, 30,
             "the builder's messages naming zero.offload_optimizer")
        nb.shot("builder-invalid")
        json_tab.click()
        poll(out_text, lambda t: "fix the errors" in t and "train_micro_batch_size_per_gpu" not in t, 30,
             "the DeepSpeed JSON replaced by 'fix the errors'")

        offload.uncheck(); micro_input.fill(str(before)); micro_input.press("Enter")  # back as it was
        poll(out_text, lambda t: f'"train_micro_batch_size_per_gpu": {before}' in t, 30,
             f"the DeepSpeed JSON back at micro batch {before}")
        checks_tab.click()
        poll(out_text, lambda t: "zero.offload_optimizer" not in t and re.search(rf"global batch = {before} ×", t), 30,
             "the builder's messages clear of the offload error")
        nb.shot("builder-restored")


def test_monitor_follows_and_stops_the_job(quickstart):
    nb = opened(quickstart)
    with nb.evidence("monitor-run"):
        i = run_through(nb, MONITOR_MARKER, timeout=480)  # includes the smoke run and the main job's launch
        after = nb.prompts(i + 1, len(nb.sources) - 1)
        assert all(p in ("", "[ ]:") for p in after), f"cells after the monitor ran: {after}"
        launched = [j for j in range(i) if "launch(" in nb.sources[j]]  # the last one before the monitor: the main job
        assert launched, "no cell launching the job before the monitor"
        found = re.search(r"run directory: (\S+)", nb.output_text(launched[-1]))
        assert found, f"the launch cell's output names no run directory: {nb.output_text(launched[-1])!r}"
        run_dir = Path(found.group(1))
        if not run_dir.is_absolute(): run_dir = nb.lab.root_dir / "nbs" / "tutorials" / run_dir
        monitor = monitor_in(nb, i)
        monitor.wait_for(state="visible", timeout=60_000)
        show(monitor, "start")
        nb.wait_kernel_idle(60)  # the panel follows the run without holding the kernel

    with nb.evidence("monitor-live"):
        wait_state(monitor, "running", 120, avoid=("failed", "finished", "stopped"))
        nb.shot("monitor-running")
        t = time.monotonic()
        first, later = wait_loss_growth(monitor, 120)
        print(f"loss curve: {first} -> {later} points in {time.monotonic() - t:.1f} s")
        state = monitor_state(monitor)
        assert re.search(r"\brunning\b", state), f"the state shows {state!r} after the loss grew {first} -> {later}"
        nb.shot("monitor-loss-growing")

    with nb.evidence("monitor-stop"):
        t = time.monotonic()
        click_stop(monitor)
        wait_state(monitor, "stopped", 90, avoid=("failed",))
        print(f"stopped on the page {time.monotonic() - t:.1f} s after the click")
        nb.shot("monitor-stopped")
        poll(lambda: read_json(run_dir / "status.json"), lambda s: s.get("state") == "stopped", 60,
             f"{run_dir}/status.json saying stopped")
        from deepseek_wb.jobs import Job
        poll(lambda: Job.attach(run_dir).alive(), lambda alive: not alive, 60, "the job's processes ending")
        print(f"status.json stopped and the job's processes gone {time.monotonic() - t:.1f} s after the click")


def test_playground_streams_a_reply(quickstart):
    "The serving tutorial, run to its playground: a prompt typed on the page, Send clicked, the reply streamed in."
    nb = opened(quickstart)
    page = nb.page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    serving = NotebookPage(page, nb.lab, "nbs/tutorials/serving.ipynb", nb.lab.root_dir / "nbs" / "tutorials" / "serving.ipynb",
                           nb.artifacts, workspace="serving")
    try:
        with serving.evidence("serving-open"):
            serving.open()
            i = run_through(serving, PLAYGROUND_MARKER, timeout=480)  # trains the run and starts its server first
        with serving.evidence("serving-playground"):
            out = serving.cell(i).locator(".jp-OutputArea")
            box = out.locator("textarea").first
            box.wait_for(state="visible", timeout=60_000)
            show(box)
            box.fill("How do I sort a list in Python?")
            out.get_by_role("button", name="Send").click()
            info, asked = out.locator(".dswb-reply-info"), out.locator(".dswb-prompt")
            poll(lambda: asked.inner_text() if asked.count() else "", lambda t: "sort a list" in t, 30, "the prompt shown above the reply")
            said = poll(lambda: info.inner_text() if info.count() else "", lambda t: t.startswith(("done:", "error:")), 120,
                        "the reply to finish streaming")
            assert said.startswith("done:"), said
            pieces = int(re.search(r"done: (\d+) pieces", said).group(1))
            reply = out.locator(".dswb-reply").inner_text()
            assert pieces > 0 and reply.strip(), f"an empty reply: {said!r} {reply!r}"
            serving.shot("playground-reply")
    finally:
        stop_live_runs(nb.lab.root_dir / "nbs" / "tutorials" / "runs")
        page.close()
