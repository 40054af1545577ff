"""A Hub id as model.path: read from the Hugging Face cache (which the test fills; no network), refused clearly when it is not there."""
import json
import shutil

import huggingface_hub.constants
import pytest
import torch

from deepseek_wb.config import ConfigError, check
from deepseek_wb.jobs import launch
from jobs_util import events, tiny_config

REPO, COMMIT = "acme/tiny-llama", "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache, src, repo=REPO, skip=()):
    "Put the saved model folder `src` in a Hugging Face cache as `repo` at main, the layout huggingface_hub writes."
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(src, root / "snapshots" / COMMIT, ignore=shutil.ignore_patterns(*skip))
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty Hugging Face cache for this process (huggingface_hub reads the constant at each call) and for the job."
    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(path))
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    "A tiny Llama and its tokenizer saved as a model folder, as the Hub holds one."
    from deepseek_wb.data import demo_corpus
    from deepseek_wb.models import build_model, build_tokenizer
    cfg = tiny_config(**{"model.family": "llama", "model.vocab_size": 1024})
    tok = build_tokenizer(cfg, list(demo_corpus()["text"][:300]))
    out = tmp_path_factory.mktemp("src") / "tiny-llama"
    build_model(cfg, tok).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_a_hub_id_trains_from_the_cache(cache, saved_llama, tmp_path):
    fill_cache(cache, saved_llama)
    cfg = tiny_config(max_steps=4, checkpoint_every=4, mode="lora", **{"model.path": REPO, "model.offline": True})
    job = launch(cfg, run_dir=tmp_path / "run")
    status = job.wait(timeout=600)
    assert status["state"] == "finished", (status, job.tail(30))
    assert events(job.run_dir, "started")[0]["params"] > 0
    adapter = json.loads((job.run_dir / "final" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == REPO  # portable: whoever loads it finds the base on the Hub or in a cache
    assert not (job.run_dir / "base").exists()  # the cache has the base: no copy in the run
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(REPO)  # through the same cache, offline
    tuned = PeftModel.from_pretrained(base, job.run_dir / "final").eval()
    assert torch.isfinite(tuned(input_ids=torch.tensor([[5, 6, 7]])).logits).all()
    # the tokenizer came from the model's own folder, not trained on the data
    assert json.loads((job.run_dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"] == \
        json.loads((saved_llama / "tokenizer.json").read_text())["model"]["vocab"]


def test_offline_and_not_cached_is_refused_before_launch(cache, tmp_path):
    cfg = tiny_config().model_dump()
    cfg["model"].update(path="acme/not-here", offline=True)
    _, problems = check(cfg, parse=False)
    (p,) = [p for p in problems if p.field == "model.path"]
    assert "acme/not-here is not in the Hugging Face cache" in p.message and "hf download acme/not-here" in p.message
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        launch(cfg, run_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_pickled_weights_are_not_loaded(cache, saved_llama, tmp_path):
    "A Hub snapshot with only a pickled .bin checkpoint is refused before launch: safetensors or nothing."
    src = tmp_path / "pickled"
    shutil.copytree(saved_llama, src, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({}, src / "pytorch_model.bin")
    fill_cache(cache, src, repo="acme/pickled")
    cfg = tiny_config().model_dump()
    cfg["model"].update(path="acme/pickled", offline=True)
    _, problems = check(cfg, parse=False)
    assert any(p.field == "model.path" and "no safetensors weights" in p.message for p in problems), problems
