"""Several nodes, tested as two "nodes" on this machine: one launcher per node (--no_ssh), and node 0's
launcher starting both nodes over ssh (pdsh) through a private sshd on loopback."""
import os
import shutil
import subprocess
import sys

import psutil
import pytest

from deepseek_wb.jobs import Job, free_port, job_env, launch
from jobs_util import events, losses, tiny_config, wait_for


def same_losses(run, reference) -> bool:
    """The same losses at the same steps, to float32 rounding: a node with one slot runs its rank on all the node's cores
    (OMP_NUM_THREADS), the reference's two ranks share them, and matmuls split over other thread counts add in another order."""
    ours, theirs = losses(run), losses(reference)
    return sorted(ours) == sorted(theirs) and all(ours[s] == pytest.approx(theirs[s], rel=1e-5) for s in theirs)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    "The reference: one node with two processes."
    cfg = tiny_config(max_steps=6, checkpoint_every=3)
    job = launch(cfg, procs=2, run_dir=tmp_path_factory.mktemp("one") / "run")
    assert job.wait(timeout=600)["state"] == "finished", job.status()
    return cfg, job.run_dir


def test_two_nodes_one_launcher_each_match_one_node(one_node, tmp_path):
    cfg, reference = one_node
    hostfile = tmp_path / "hostfile"  # two names for this machine, so the launcher sees two nodes
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = free_port()
    common = dict(run_dir=tmp_path / "two", hostfile=str(hostfile), no_ssh=True, master_addr="127.0.0.1", master_port=port)
    node0 = launch(cfg, node_rank=0, **common)
    node1 = launch(cfg, node_rank=1, **common)
    assert node0.wait(timeout=600)["state"] == "finished", node0.status()
    node1.wait(timeout=120)
    assert node0.status()["nodes"] == 2
    assert same_losses(node0.run_dir, reference)  # the same world of 2 ranks, the same numbers
    assert sorted(p.name for p in (tmp_path / "two" / "logs").glob("launcher*.log")) == ["launcher.log", "launcher_node1.log"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd of our own on 127.0.0.1 and 127.0.0.2 (a free port, a throwaway host key and client key): logins
    as this user, nothing in ~/.ssh or /etc/ssh used or changed. Yields the ssh options pdsh must pass."""
    binary = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not binary or not shutil.which("pdsh"):
        pytest.skip("needs sshd and pdsh (apt-get install openssh-server pdsh; `make test` installs them)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {d}/host_key\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder, made by its service
    log = open(d / "sshd.log", "w")
    server = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    options = (f"-i {d}/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               "-o BatchMode=yes -o LogLevel=ERROR")
    probe = ["ssh", "-p", str(port), *options.split(), "127.0.0.2", "true"]
    try:
        wait_for(lambda: server.poll() is not None or subprocess.run(probe, capture_output=True).returncode == 0,
                 timeout=30, poll=0.2, what="sshd to take logins")
        assert server.poll() is None, f"sshd exited: {(d / 'sshd.log').read_text()}"
        yield dict(port=port, options=options)
    finally:
        server.terminate(); server.wait(timeout=10); log.close()


def _ranks(run_dir) -> list[psutil.Process]:
    "The processes training `run_dir` (the ranks, found by their command line)."
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(a == "-m" and b == "deepseek_wb.train" for a, b in zip(cmd, cmd[1:])) and str(run_dir) in cmd:
            found.append(p)
    return found


def _over_ssh(sshd, run_dir, hostfile, env=None, **values):
    return launch(tiny_config(), run_dir=run_dir, **values, hostfile=str(hostfile), ssh_port=sshd["port"],
                  master_addr="127.0.0.1", runner_args=["--no_ssh_check"],  # DeepSpeed's check would use ~/.ssh
                  env={"PDSH_SSH_ARGS_APPEND": sshd["options"], "DEEPSEEK_WB_TEST_MARK": "sent", **(env or {})})


SECRETS = {"HF_AUTH": "leaked-hf-auth", "HF_TOKEN": "leaked-hf-token", "MLFLOW_TRACKING_PASSWORD": "leaked-mlflow",
           "NCCL_API_KEY": "leaked-nccl", "DEEPSEEK_WB_DB": "postgres://me:leaked-pw@db/runs"}


def test_two_nodes_over_ssh_match_one_node(sshd, one_node, tmp_path, monkeypatch):
    """...and the secrets of the launching shell stay home: only what is passed in env= travels, and no log shows it."""
    cfg, reference = one_node
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    hostfile = tmp_path / "hostfile"  # 127.0.0.0/8 is all loopback: two addresses, two "nodes"
    hostfile.write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    run = (tmp_path / "ssh").resolve()
    job = _over_ssh(sshd, run, hostfile, env={"DEEPSEEK_WB_TEST_TOKEN": "passed-on-purpose"}, max_steps=6, checkpoint_every=3)
    wait_for(lambda: len(_ranks(run)) == 2 or not job.alive(), timeout=300, poll=0.2, what="both ranks to start")
    ranks = _ranks(run)
    assert len(ranks) == 2, job.tail(30)
    for rank in ranks:  # started by sshd, not by this process group, and with the job's environment
        assert any(parent.name() == "sshd" for parent in rank.parents()), [p.name() for p in rank.parents()]
        assert os.getpgid(rank.pid) != job._status_file()["pgid"]
        environ = rank.environ()
        assert environ.get("HF_HUB_OFFLINE") == "1" and environ.get("DEEPSEEK_WB_TEST_MARK") == "sent", environ
        assert environ.get("OMP_NUM_THREADS") == job_env(1)["OMP_NUM_THREADS"]  # the cores of a node with one slot
        assert environ.get("DEEPSEEK_WB_TEST_TOKEN") == "passed-on-purpose" and not set(SECRETS) & set(environ), environ
    assert job.wait(timeout=600)["state"] == "finished", job.status()
    status = job.status()
    assert status["launcher"] == "pdsh" and status["nodes"] == 2 and status["ssh_port"] == sshd["port"]
    assert "teardown" not in status and (run / "hostfile").read_text() == hostfile.read_text()
    assert same_losses(run, reference)
    assert not _ranks(run)
    launcher_log = (run / "logs" / "launcher.log").read_text()
    assert "DEEPSEEK_WB_TEST_TOKEN=***" in launcher_log and "export HF_HUB_OFFLINE=1" in launcher_log  # redacted, not dropped
    for path in [run / "status.json", run / ".deepspeed_env", *(run / "logs").iterdir()]:
        text = path.read_text(errors="replace")
        assert "leaked" not in text and ("passed-on-purpose" not in text or path.name == ".deepspeed_env"), path
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (run / "logs", run / "logs" / "launcher.log", run / ".deepspeed_env")}
    assert modes == {"logs": "0o700", "launcher.log": "0o600", ".deepspeed_env": "0o600"}, modes


def test_stop_over_ssh_saves_and_ends_every_node(sshd, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    run = (tmp_path / "stopped").resolve()
    job = _over_ssh(sshd, run, hostfile, max_steps=100_000, checkpoint_every=1000)
    wait_for(lambda: len(losses(run)) >= 3 or not job.alive(), timeout=300, what="three steps")
    final = job.stop(grace=60)  # no signal reaches these ranks: rank 0 takes the request, every rank agrees
    assert final["state"] == "stopped", final
    assert (run / "control" / "stop.taken").is_file()  # it went by the request (a kill would have saved nothing)
    step = final["step"]
    assert job.checkpoints() == [step] and events(run, "stopped")[-1]["step"] == step
    assert not _ranks(run) and not job.alive()
    again = _over_ssh(sshd, run, hostfile, max_steps=step + 2, checkpoint_every=1000)  # and it resumes
    assert again.wait(timeout=600)["state"] == "finished", again.status()
    assert events(run, "resumed")[-1]["step"] == step and max(losses(run, after_last_resume=True)) == step + 2


def test_unreachable_node_is_reported_with_its_cause(sshd, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    job = _over_ssh(dict(sshd, port=free_port()), tmp_path / "unreachable", hostfile)  # no sshd on that port
    final = job.wait(timeout=120)
    assert final["state"] == "failed" and "could not be reached over ssh" in final["error"], final


def test_kill_over_ssh_ends_this_run_on_every_node_and_nothing_else(sshd, tmp_path, monkeypatch):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\n127.0.0.2 slots=1\n")
    run = (tmp_path / "killed").resolve()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "-m", "deepspeed.launcher.launch",
                                  "--world_info=e30=", "--module", "deepseek_wb.train", "--run-dir", str(tmp_path / "other")])
    try:
        job = _over_ssh(sshd, run, hostfile, max_steps=100_000, checkpoint_every=1000)
        wait_for(lambda: len(losses(run)) >= 2 or not job.alive(), timeout=300, what="two steps")
        assert len(_ranks(run)) == 2, job.tail(30)
        monkeypatch.setenv("PDSH_SSH_ARGS_APPEND", sshd["options"])  # ssh's options come from the caller, never the run
        final = Job.attach(run).kill()  # a fresh handle: the kill command is rebuilt from the run's hostfile and ssh port
        assert final["state"] == "failed" and not job.alive() and not _ranks(run), final
        assert bystander.poll() is None  # DeepSpeed's own teardown would have pkilled every launch of this Python
    finally:
        bystander.kill(); bystander.wait()
