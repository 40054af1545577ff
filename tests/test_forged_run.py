"""A run directory is data, never instructions: forged run directories are refused and their bystanders survive.

Each test writes a status.json that names a real process of ours (started in its own session, as a job's supervisor
is) and checks that stop/kill send nothing to it, that nothing named in the file is run, and that alive() agrees.
A control launches the real supervisor of the run directory, so the proofs can pass and the test can fail."""
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from deepseek_wb.core import atomic_write_json
from deepseek_wb.checkpoints import UntrustedRunDirError
from deepseek_wb.jobs import Job, cause_from_logs, launch, leader_check, list_runs, redact, start_ticks
from jobs_util import wait_for


def _started(proc) -> float:
    return psutil.Process(proc.pid).create_time()


@pytest.fixture
def bystander():
    "A process of ours that leads its own process group and is no run's supervisor."
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill(); proc.wait()


def _supervisor(run_dir: Path) -> subprocess.Popen:
    """The real supervisor of `run_dir`, started as `launch` starts it, over a stand-in for DeepSpeed's launcher (which,
    like DeepSpeed's, handles the SIGTERM the supervisor ignores)."""
    ready = run_dir.parent / f"{run_dir.name}.ready"
    launcher = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
                "open(sys.argv[1], 'w').close(); time.sleep(60)", str(ready)]
    proc = subprocess.Popen([sys.executable, "-m", "deepseek_wb.jobs", "supervise", str(run_dir.resolve()), "0", "--", *launcher],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(ready.exists, timeout=60, what="the stand-in launcher")
    return proc


def _forge(run_dir: Path, **status) -> Job:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "status.json", {"state": "running", "launch_host": socket.gethostname(), **status})
    return Job.attach(run_dir)


def _refused(job: Job, proc: subprocess.Popen, reason: str):
    "stop and kill both refuse, saying why; the process named gets nothing and the run is not alive."
    for act in (job.kill, lambda: job.stop(grace=1)):
        with pytest.raises(RuntimeError, match=reason) as e:
            act()
        assert str(job.run_dir) in str(e.value) and "nothing was sent" in str(e.value)
    time.sleep(0.2)
    assert proc.poll() is None, "the bystander was signalled"
    assert not job.alive() and job.state == "failed"
    assert not (job.run_dir / "control").exists()  # not even a stop request was left


@pytest.mark.parametrize("offset", [-3600, -1, -0.2, 0.2, 1, 3600])
def test_pid_reuse_is_refused(tmp_path, bystander, offset):
    """The status names a live process of ours whose number the supervisor once had (earlier or later start)."""
    job = _forge(tmp_path / "run", pid=bystander.pid, pgid=bystander.pid, leader_started=_started(bystander) + offset)
    _refused(job, bystander, "its number was reused")


@pytest.mark.parametrize("pgid", [1, 0, -1, "1", str(os.getpgid(0)), 1.0, 2.5, True, [1], {"pgid": 1}])
def test_pgid_that_is_not_a_group_number_is_refused(tmp_path, bystander, pgid):
    job = _forge(tmp_path / "run", pid=bystander.pid, pgid=pgid, leader_started=_started(bystander))
    _refused(job, bystander, "is not a process group number above 1")


def test_no_leader_start_time_is_refused(tmp_path, bystander):
    for started in (None, "now", [0]):
        job = _forge(tmp_path / "run", pgid=bystander.pid, leader_started=started)
        _refused(job, bystander, "no start time of the group's leader")


def test_a_process_that_is_not_our_supervisor_is_refused(tmp_path, bystander):
    """The right number and start time, but the leader runs something else: `sleep`, or the supervisor of ANOTHER run."""
    job = _forge(tmp_path / "run", pgid=bystander.pid, leader_started=_started(bystander))
    _refused(job, bystander, "is not the supervisor of")
    other = _supervisor(tmp_path / "other")
    try:
        job = _forge(tmp_path / "run", pgid=other.pid, leader_started=_started(other))
        _refused(job, other, "is not the supervisor of")
        assert psutil.Process(other.pid).children(), "the other run's launcher was hit"
    finally:
        os.killpg(other.pid, signal.SIGKILL); other.wait()


def test_a_process_in_another_group_is_refused(tmp_path):
    """A process of ours that does not lead a group (a child of this test's group)."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        job = _forge(tmp_path / "run", pgid=child.pid, leader_started=_started(child))
        _refused(job, child, "does not lead a process group")
    finally:
        child.kill(); child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting another user's process needs root")
def test_another_users_process_is_refused(tmp_path):
    nobody = pwd.getpwnam("nobody").pw_uid
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True, user=nobody)
    try:
        job = _forge(tmp_path / "run", pgid=proc.pid, leader_started=_started(proc))
        _refused(job, proc, "not to you")
    finally:
        proc.kill(); proc.wait()


def test_a_command_in_the_status_is_never_run(tmp_path, bystander):
    """`teardown`, `command` and anything else in status.json are data: nothing of it runs, whether the group proof fails
    (a forged run) or passes (our own run whose files were changed under it)."""
    payload = tmp_path / "owned"
    touch = ["sh", "-c", f"touch {payload}"]
    forged = dict(launcher="pdsh", teardown=dict(cmd=touch, env={"PDSH_RCMD_TYPE": "exec"}), command=touch,
                  ssh_port=f"22 -oProxyCommand=touch {payload}")
    job = _forge(tmp_path / "run", pgid=bystander.pid, leader_started=_started(bystander) - 60, **forged)
    _refused(job, bystander, "its number was reused")

    for n, (port, host) in enumerate([(forged["ssh_port"], "node1"), (22, f"-oProxyCommand=touch$IFS{payload}")]):
        ours = tmp_path / f"ours{n}"  # our own run, whose port or hostfile was changed under it
        supervisor = _supervisor(ours)
        try:
            job = _forge(ours, pgid=supervisor.pid, leader_started=_started(supervisor), **dict(forged, ssh_port=port))
            (ours / "hostfile").write_text(f"{host} slots=1\n")
            assert job.alive()
            with pytest.raises(RuntimeError, match="ranks on the other nodes maybe not .*(is not a port number|is not a host name)"):
                job.kill()  # its own processes die; the forged port or host is refused
            assert supervisor.wait(timeout=10) == -signal.SIGKILL
        finally:
            if supervisor.poll() is None: os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()
    job = _forge(ours, pgid=None, **forged)
    assert job.kill()["state"] == "failed"  # no group named: nothing to kill, nothing run
    assert not payload.exists(), "a command from the run directory ran"


def test_our_own_supervisor_is_proven_and_stopped(tmp_path):
    """The control: the real supervisor of this run directory passes every proof, through a path that is not the
    resolved one too, and stop reaches it (SIGTERM to its group); the supervisor records the end."""
    run = tmp_path / "run"
    supervisor = _supervisor(run)
    try:
        job = _forge(run, pid=supervisor.pid, pgid=supervisor.pid, leader_started=_started(supervisor))
        (tmp_path / "link").symlink_to(run)
        assert leader_check(tmp_path / "link", json.loads((run / "status.json").read_text())) == (supervisor.pid, "")
        assert job.alive() and Job.attach(tmp_path / "link").alive()
        final = job.stop(grace=20)
        assert final["state"] == "failed" and "code -15" in final["error"], final
        assert (run / "control" / "stop").is_file()
        assert supervisor.wait(timeout=10) not in (-signal.SIGTERM, -signal.SIGKILL)  # it outlived the signal and recorded the end
    finally:
        if supervisor.poll() is None: os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def test_a_finished_run_naming_a_reused_number_is_left_alone(tmp_path, bystander):
    """A run that says it ended is not stopped again, whatever its status names: nothing sent, no error."""
    job = _forge(tmp_path / "run", pgid=bystander.pid, leader_started=_started(bystander) - 60)
    atomic_write_json(job.run_dir / "status.json", dict(json.loads((job.run_dir / "status.json").read_text()), state="finished"))
    assert job.stop()["state"] == "finished" and job.kill()["state"] == "finished"
    assert bystander.poll() is None


def test_runs_lists_every_run_however_broken(tmp_path):
    (tmp_path / "good").mkdir()
    atomic_write_json(tmp_path / "good" / "status.json", dict(state="finished", started_at="yesterday", max_steps=4))
    (tmp_path / "good" / "metrics.jsonl").write_bytes(b'{"kind": "train", "step": 4, "loss": 1.5}\n\x00\xff\n[1]\n"x"\n'
                                                      b'{"kind": 3}\n{"kind": "train", "step": 5, "loss": "abc"}\n{"kind": "tr')
    for name, content in dict(listed=b"[]", number=b"42", binary=b"\xff\xfe\x00", empty=b"", text=b"running").items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_bytes(content)
    (tmp_path / "folder" / "status.json").mkdir(parents=True)  # a status.json that cannot be read at all
    table = list_runs(tmp_path).set_index("run")
    assert table.loc["good", "state"] == "finished" and table.loc["good", "skipped_lines"] == 4
    assert table.loc["good", "step"] == 5 and table["loss"].isna()["good"]  # "abc" is no loss
    for name in ("listed", "number", "binary", "empty", "text", "folder"):
        assert table.loc[name, "state"] == "unreadable" and "status.json" in table.loc[name, "error"], table.loc[name]
    assert "4 unreadable metrics lines skipped" in repr(Job(tmp_path / "good"))


def test_the_start_is_proven_in_clock_ticks_where_recorded(tmp_path, bystander):
    """The leader's start in clock ticks since boot is compared exactly: a wall clock stepped since the launch (leader_started
    an hour off) does not refuse our own supervisor, and a process whose ticks differ is refused whatever leader_started says."""
    run = tmp_path / "run"
    supervisor = _supervisor(run)
    try:
        job = _forge(run, pgid=supervisor.pid, leader_started=_started(supervisor) + 3600,
                     leader_start_ticks=start_ticks(supervisor.pid))
        assert job.alive()
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL); supervisor.wait()
    job = _forge(tmp_path / "forged", pgid=bystander.pid, leader_started=_started(bystander),
                 leader_start_ticks=start_ticks(bystander.pid) - 1)
    _refused(job, bystander, "its number was reused")


def test_kill_checks_the_group_again_before_signalling(tmp_path, monkeypatch):
    """pdsh runs up to a minute: a group that ended meanwhile (its number free for another) gets no signal, and a node pdsh
    did not reach (exit 255) is named."""
    run = tmp_path / "run"
    supervisor = _supervisor(run)
    (tmp_path / "bin").mkdir()
    pdsh = tmp_path / "bin" / "pdsh"  # ends the job's group, as the kill on the nodes does, then fails to reach nodeB
    pdsh.write_text(f"#!/bin/sh\nkill -KILL -{supervisor.pid}\n"  # and waits until its leader has ended (a zombie of ours)
                    f"while ! grep -q '^State:.*Z' /proc/{supervisor.pid}/status; do sleep 0.05; done\n"
                    "echo 'nodeB: ssh: connect to host nodeB port 22: Connection refused' >&2\necho 'pdsh@node0: nodeB: ssh exited with exit code 255' >&2\nexit 255\n")
    pdsh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    sent = []
    monkeypatch.setattr(os, "killpg", lambda *a: sent.append(a))
    try:
        job = _forge(run, pgid=supervisor.pid, leader_started=_started(supervisor), launcher="pdsh")
        (run / "hostfile").write_text("nodeA slots=1\nnodeB slots=1\n")
        assert job.alive()
        with pytest.raises(RuntimeError, match=r"exited with code 255, so nodeB may not have been reached"):
            job.kill()
        assert sent == [], "a signal went to a group whose leader had ended"
    finally:
        monkeypatch.undo()
        if supervisor.poll() is None: os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def test_a_future_heartbeat_keeps_nothing_alive(tmp_path):
    "A run followed from another host is alive while its heartbeat is recent, never for one forged as Infinity or years ahead."
    for updated, alive in [(time.time(), True), (float("inf"), False), (time.time() + 10 * 365 * 86400, False), (float("nan"), False)]:
        job = _forge(tmp_path / "run", launch_host="elsewhere", updated_at=updated)
        assert job.alive() == alive, updated


def test_no_request_is_written_through_a_linked_control_folder(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "stop").write_text("the user's own file\n")
    job = _forge(tmp_path / "run", launch_host="elsewhere", updated_at=time.time())
    (job.run_dir / "control").symlink_to(victim)
    with pytest.raises(RuntimeError, match="control is a symbolic link"):
        job.stop(wait=False)
    assert (victim / "stop").read_text() == "the user's own file\n" and sorted(os.listdir(victim)) == ["stop"]


def test_launch_refuses_an_existing_folder_with_links(tmp_path):
    """An existing run directory without config.json is checked too: its logs/ links elsewhere, and the file there is the user's."""
    from jobs_util import tiny_config
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "launcher.log").write_text("precious\n")
    (victim / "launcher.log").chmod(0o644)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "logs").symlink_to(victim)
    with pytest.raises(UntrustedRunDirError, match="logs is a symbolic link"):
        launch(tiny_config(max_steps=4), run_dir=tmp_path / "run")
    assert (victim / "launcher.log").read_text() == "precious\n" and (victim / "launcher.log").stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path / "run")) == ["logs"]
    with pytest.raises(ValueError, match="control character"):
        launch(tiny_config(max_steps=4), run_dir=tmp_path / "a\nb")


def test_fifos_and_dangling_links_neither_hang_nor_crash(tmp_path):
    "A FIFO status.json or log, a link to /dev/zero, a dangling log link: read as unreadable or skipped, at once."
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "status.json")
    assert Job(fifo).status()["state"] == "unreadable"
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "status.json").symlink_to("/dev/zero")
    assert Job(tmp_path / "zero").status()["state"] == "unreadable"
    logs = _forge(tmp_path / "logs", pgid=None).run_dir / "logs"
    logs.mkdir()
    (logs / "a.log").symlink_to(tmp_path / "nonexistent")
    os.mkfifo(logs / "b.log")
    os.mkfifo(logs.parent / "metrics.jsonl")
    (logs / "c_rank0.log").write_text("RuntimeError: could not fetch https://alice:S3cret@host/x token hf_abcdefghijklmnopqrstuvwxyz01\n")
    job = Job(logs.parent)
    assert cause_from_logs(job.run_dir) == "RuntimeError: could not fetch https://***@host/x token ***"
    assert job.tail().startswith("RuntimeError") and "Job(" in repr(job)
    assert set(list_runs(tmp_path)["state"]) == {"unreadable", "failed"}


def test_redact_hides_secrets_in_export_lists():
    line = "srun --export=ALL,WANDB_API_KEY=abc123,HF_AUTH=zzz,HF_HUB_PASS=p,SLACK_WEBHOOK=w,MASTER_PORT=29500 python"
    assert redact(line) == "srun --export=ALL,WANDB_API_KEY=***,HF_AUTH=***,HF_HUB_PASS=***,SLACK_WEBHOOK=***,MASTER_PORT=29500 python"
