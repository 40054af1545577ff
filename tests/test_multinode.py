"""Several nodes: one launcher per node (--no_ssh), tested as two "nodes" on 127.0.0.1."""
from deepseek_wb.jobs import free_port, launch
from jobs_util import losses, tiny_config


def test_two_nodes_one_launcher_each_match_one_node(tmp_path):
    cfg = tiny_config(max_steps=6, checkpoint_every=3)
    one_node = launch(cfg, procs=2, run_dir=tmp_path / "one")
    assert one_node.wait(timeout=600)["state"] == "finished", one_node.status()

    hostfile = tmp_path / "hostfile"  # two names for this machine, so the launcher sees two nodes
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = free_port()
    common = dict(run_dir=tmp_path / "two", hostfile=str(hostfile), no_ssh=True, master_addr="127.0.0.1", master_port=port)
    node0 = launch(cfg, node_rank=0, **common)
    node1 = launch(cfg, node_rank=1, **common)
    assert node0.wait(timeout=600)["state"] == "finished", node0.status()
    node1.wait(timeout=120)
    assert node0.status()["nodes"] == 2
    assert losses(node0.run_dir) == losses(one_node.run_dir)  # the same world of 2 ranks, the same numbers
    assert sorted(p.name for p in (tmp_path / "two" / "logs").glob("launcher*.log")) == ["launcher.log", "launcher_node1.log"]
