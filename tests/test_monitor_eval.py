"""The evaluations of a real job in the monitor: the task's metrics as numbers, the eval panel with the best
checkpoint's step, the samples a causal LM generates at each evaluation, and the stop reason of an early stop."""
from deepseek_wb.checkpoints import read_best
from deepseek_wb.figures import PANELS
from deepseek_wb.jobs import launch
from deepseek_wb.metrics import read_metrics
from deepseek_wb.monitor import SAMPLE_CHARS, Monitor, _sample_text


def test_monitor_follows_evaluations_samples_and_early_stop(tmp_path):
    # min_delta 100: the second evaluation cannot beat the first by that much, so patience 1 stops the run at step 8
    job = launch("tiny-cpu", run_dir=tmp_path / "run", max_steps=12, eval_every=4, checkpoint_every=4, log_every=2,
                 **{"data.limit": 200, "schedule.warmup_steps": 1, "eval.patience": 1, "eval.min_delta": 100.0})
    try:
        mon = Monitor(job, follow=False, interval=0.2)  # made at launch: the eval panel and the samples join as they come
        status = mon.wait(timeout=600)
    finally:
        if job.alive(): job.stop(grace=10)
    assert status["state"] == "finished" and status["stop_reason"].startswith("early stopping: eval_loss"), status

    m = read_metrics(job.run_dir)
    assert m.eval.step.tolist() == [4, 8] and m.bad_lines == 0
    for name in ("eval_loss", "perplexity", "token_accuracy"):
        assert m.eval[name].dtype == float and m.eval[name].notna().all(), name
    assert m.samples.step.tolist() == [4, 4, 8, 8] and m.samples["index"].tolist() == [0, 1, 0, 1]
    assert all(isinstance(p, str) and p for p in m.samples.prompt) and all(isinstance(o, str) for o in m.samples.output)
    kept = read_best(job.run_dir / "checkpoints")["step"]  # the best value's checkpoint (min_delta is early stopping's)

    assert mon.panels[:2] == ("loss", "eval")
    *lines, best = mon.chart.data[mon._slices["eval"]]
    assert [t.name for t in lines] == ["perplexity", "token_accuracy"] and lines[0].yaxis != lines[1].yaxis  # perplexity: the log axis
    assert list(lines[1].x) == [4, 8] and list(best.x) == [kept, kept] and best.name.startswith(f"best checkpoint: step {kept} (eval_loss")
    shown = mon._samples.value
    assert shown.startswith("<b>Samples at step 8</b>") and shown.count("<b style='color:#888'>") == 2
    assert all(_sample_text(p, SAMPLE_CHARS) in shown for p in m.samples.prompt[2:])
    assert [o[0] for o in mon._sample_step.options] == ["newest", "step 8", "step 4"]
    assert "early stopping: eval_loss did not improve by more than 100 for 1 evaluations" in mon._state.value
    assert f"(the best checkpoint: step {kept}," in mon._state.value
    assert PANELS["eval"][0] in [a.text for a in mon.figure().layout.annotations]
