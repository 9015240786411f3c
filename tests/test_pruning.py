"""Pruning: folding frozen neurons into the bias is exact, removal equals masking, pruned models reload."""

import copy
from pathlib import Path

import pytest
import torch

from skill_neurons.architecture import ffn_output_projections, ffn_width
from skill_neurons.models import load_model
from skill_neurons.neurons import on_neurons
from skill_neurons.pruning import prune_ffns, save_pruned, skill_keep, top_layers

from .conftest import tiny_model, word_tokenizer


def clamped_logits(model, ids, keep, constants, mask=None):
    """The unpruned model with every non-kept neuron of the pruned layers held at its constant."""

    def clamp(layer, activation):
        if layer not in keep:
            return None
        frozen = torch.ones(activation.shape[-1], dtype=torch.bool)
        frozen[keep[layer]] = False
        changed = activation.clone()
        changed[..., frozen] = constants[layer][frozen].to(activation.dtype)
        return changed

    with torch.no_grad(), on_neurons(ffn_output_projections(model), clamp):
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "bert", "roberta"])
def test_a_pruned_ffn_computes_the_model_with_frozen_neurons_at_their_baseline(architecture):
    model = tiny_model(architecture, 40)
    widths = [ffn_width(p) for p in ffn_output_projections(model)]
    generator = torch.Generator().manual_seed(0)
    constants = [torch.randn(w, generator=generator) for w in widths]
    keep = {layer: torch.randperm(widths[layer], generator=generator)[:5] for layer in top_layers(len(widths), 0.5)}
    ids = torch.randint(7, 40, (3, 7), generator=generator)
    expected = clamped_logits(model, ids, keep, constants)

    pruned = copy.deepcopy(model)
    new_widths = prune_ffns(pruned, keep, constants)
    assert new_widths == [5 if layer in keep else w for layer, w in enumerate(widths)]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    removed = sum(widths[layer] - 5 for layer in keep)
    per_neuron = {"llama": 3 * 32, "gpt2": 2 * 32 + 1, "bert": 2 * 32 + 1, "roberta": 2 * 32 + 1}[architecture]
    added_bias = 32 * len(keep) if architecture == "llama" else 0  # LLaMA's down_proj had no bias
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters()) == (
        removed * per_neuron - added_bias
    )


class UngatedFFN(torch.nn.Module):
    """down(act(up(x))): a `down_proj` FFN without a gate (the second layout `architecture` knows)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.up_proj, self.down_proj = torch.nn.Linear(hidden, width), torch.nn.Linear(width, hidden)
        self.act_fn = torch.nn.ReLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.up_proj(x)))


def test_pruning_finds_a_ffns_projections_where_the_rest_of_the_library_does():
    model = tiny_model("llama", 40)
    for layer in model.model.layers:
        layer.mlp = UngatedFFN(32, 48)
    generator = torch.Generator().manual_seed(0)
    constants = [torch.randn(48, generator=generator) for _ in range(3)]
    keep = {1: torch.tensor([3, 7, 40]), 2: torch.arange(10)}
    ids = torch.randint(7, 40, (2, 6), generator=generator)
    expected = clamped_logits(model, ids, keep, constants)
    assert prune_ffns(model, keep, constants) == [48, 3, 10]
    assert model.model.layers[1].mlp.up_proj.weight.shape == (3, 32)  # its one input projection, sliced
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_folding_adds_only_the_frozen_neurons_baseline():
    """Wang et al.'s code also added the kept neurons' baseline: with constants that differ from the kept
    neurons' real activations, that bug would move the output; the clamp reference above would catch it."""
    model = tiny_model("llama", 40)
    widths = [ffn_width(p) for p in ffn_output_projections(model)]
    keep = {2: torch.tensor([0, 1, 2])}
    constants = [torch.full((w,), 3.0) for w in widths]
    pruned = copy.deepcopy(model)
    prune_ffns(pruned, keep, constants)
    down = ffn_output_projections(model)[2]
    frozen = torch.arange(3, widths[2])
    expected_bias = down.weight[:, frozen] @ constants[2][frozen]
    torch.testing.assert_close(ffn_output_projections(pruned)[2].bias, expected_bias)


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "bert"])
def test_a_saved_pruned_model_reloads_with_the_same_logits(tmp_path, architecture):
    vocab = len(word_tokenizer())
    model = tiny_model(architecture, vocab)
    widths = [ffn_width(p) for p in ffn_output_projections(model)]
    constants = [torch.linspace(-1, 1, w) for w in widths]
    new_widths = prune_ffns(model, {len(widths) - 1: torch.tensor([3, 1, 4])}, constants)
    save_pruned(model, word_tokenizer(), tmp_path / "pruned", new_widths)
    reloaded, _ = load_model(tmp_path / "pruned")
    assert [ffn_width(p) for p in ffn_output_projections(reloaded)] == new_widths
    ids = torch.randint(7, vocab, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_skill_keep_takes_each_layers_first_ranked_neurons():
    layers, neurons = [1, 0, 1, 1, 0, 1], [7, 2, 3, 0, 5, 9]
    keep = skill_keep(layers, neurons, widths=[4, 10], layers=[1], keep_share=0.2)
    assert {k: v.tolist() for k, v in keep.items()} == {1: [7, 3]}
    assert top_layers(30, 0.75) == list(range(8, 30)) and top_layers(4, 0.1) == [3]


def test_retuning_a_pruned_causal_model_runs_its_text_once_not_once_a_step(llama_dir, monkeypatch):
    import numpy as np

    from skill_neurons.data import Task
    from skill_neurons.prompting import PromptedLM
    from skill_neurons.settings import Retuning
    from skill_neurons.stages.pruning import retune
    from skill_neurons.tuning import evaluate, init_prompt

    from .conftest import toy_reviews

    model, tokenizer = load_model(llama_dir)
    lm = PromptedLM(model, tokenizer, "Review : {sentence} \n Sentiment :", [" negative", " positive"], 3)
    frames = {
        name: toy_reviews(n, seed).assign(example=np.arange(n)) for name, n, seed in (("train", 20, 0), ("dev", 12, 1))
    }
    text_runs = []
    original = PromptedLM._text_cache
    monkeypatch.setattr(
        PromptedLM, "_text_cache", lambda self, batch: text_runs.append(len(batch.input_ids)) or original(self, batch)
    )
    start = init_prompt(lm, "normal", 0.3, seed=0)
    task = Task("toy", "toy", ("sentence",), lm.template, (0, 1), lm.label_words)
    retuning = Retuning(lr=0.01, batch_size=8, max_steps=12, eval_every=4, patience=5)
    result = retune(lm, frames, task, start, seed=0, retuning=retuning, batch_size=8)
    # The train (20) and dev (12) texts run once each: 12 steps of batch 8 and 3 dev evaluations add none.
    assert sum(text_runs) == 20 + 12 and len(text_runs) == 5 and result.steps == 12
    assert evaluate(lm, result.prompt, lm.batches(frames["dev"], ["sentence"], 8), one_forward=True) == pytest.approx(
        result.dev_accuracy
    )


def pruned_toy_lm(llama_dir):
    """A tiny prompted llama with its last FFN cut to 3 neurons, the task and settings that load it back."""
    import numpy as np

    from skill_neurons.data import Task
    from skill_neurons.prompting import PromptedLM
    from skill_neurons.settings import Prompting

    from .conftest import toy_reviews

    model, tokenizer = load_model(llama_dir)
    widths = [ffn_width(p) for p in ffn_output_projections(model)]
    constants = [torch.linspace(-1, 1, w) for w in widths]
    new_widths = prune_ffns(model, {len(widths) - 1: torch.tensor([3, 1, 4])}, constants)
    task = Task("toy", "toy", ("sentence",), "Review : {sentence} \n Sentiment :", (0, 1), (" negative", " positive"))
    lm = PromptedLM(model, tokenizer, task.template, task.label_words, 3)
    batch = lm.batches(toy_reviews(6, 0).assign(example=np.arange(6)), ["sentence"], 6)[0]
    return lm, new_widths, batch, task, Prompting(3, None, "fp32", 8, "cpu")


def test_a_pruned_model_is_verified_bit_for_bit_after_saving(llama_dir, tmp_path):
    from skill_neurons.stages.pruning import save_and_verify

    lm, widths, batch, task, prompting = pruned_toy_lm(llama_dir)
    prompt = torch.randn(3, lm.model.config.hidden_size)
    save_and_verify(lm, prompt, widths, [batch], str(tmp_path / "pruned"), task, prompting, threads=1)
    reloaded, _ = load_model(tmp_path / "pruned")
    assert [ffn_width(p) for p in ffn_output_projections(reloaded)] == widths


def test_a_pruned_model_that_does_not_reload_as_saved_is_refused_by_name(llama_dir, tmp_path, monkeypatch):
    from skill_neurons.stages import pruning as stage

    lm, widths, batch, task, prompting = pruned_toy_lm(llama_dir)
    original = stage.save_pruned

    def save_then_change(model, *args):
        original(model, *args)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0  # the copy in memory no longer matches

    monkeypatch.setattr(stage, "save_pruned", save_then_change)
    with pytest.raises(RuntimeError, match=r"differs from the saved one in 1 tensor\(s\): model\.layers\.0\.mlp\.down"):
        stage.save_and_verify(lm, torch.zeros(3, 32), widths, [batch], str(tmp_path / "p"), task, prompting, 1)


def test_a_pruned_model_whose_saved_config_computes_otherwise_is_refused(llama_dir, tmp_path, monkeypatch):
    import json

    from skill_neurons.stages import pruning as stage

    lm, widths, batch, task, prompting = pruned_toy_lm(llama_dir)
    original = stage.save_pruned

    def save_with_another_norm(model, tokenizer, folder, *args):
        original(model, tokenizer, folder, *args)
        config = Path(folder) / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "rms_norm_eps": 0.5}))  # same tensors

    monkeypatch.setattr(stage, "save_pruned", save_with_another_norm)
    with pytest.raises(RuntimeError, match="scores a test batch differently from the saved one"):
        stage.save_and_verify(lm, torch.randn(3, 32), widths, [batch], str(tmp_path / "p"), task, prompting, 1)


@pytest.mark.parametrize("attention", [False, True])
def test_the_pruning_table_has_an_attention_column_only_where_that_variant_ran(tmp_path, attention):
    import json

    import pandas as pd

    from skill_neurons.stages.pruning import pruning_table

    from .conftest import fake_job

    variants = ["dense", "skeleton", "skill_neurons"] + (["skeleton_attention"] if attention else [])
    speed = pd.DataFrame(
        {"variant": variants, "dtype": "float32", "reference": True, "speedup": [1.0, 1.5, 1.6, 2.0][: len(variants)]}
    ).assign(speedup_q1=lambda f: f["speedup"] - 0.1, speedup_q3=lambda f: f["speedup"] + 0.1)
    speed.to_parquet(tmp_path / "speed.parquet")
    dense = {"total_neurons": 100, "dense_parameters": 1000, "dense_test_accuracy": 0.8}
    skeleton = {**dense, "test_accuracy": 0.81, "kept_neurons": 30, "parameters": 600}
    files = {
        "skeleton.json": {**skeleton, "dense_retuned_test_accuracy": 0.82},
        "skill.json": {**skeleton, "constant": "prompt_mean", "test_accuracy": 0.7},
        "attention.json": {**skeleton, "test_accuracy": 0.79, "parameters": 500, "kept_groups": 6, "total_groups": 9},
    }
    for name, metrics in files.items():
        (tmp_path / name).write_text(json.dumps(metrics))
    outputs = {kind: str(tmp_path / f"pruning.{kind}") for kind in ("parquet", "markdown", "html")}
    pruning_table(
        fake_job(
            input={
                "skeleton": [str(tmp_path / "skeleton.json")],
                "skill_neurons": [str(tmp_path / "skill.json")],
                "speed": [str(tmp_path / "speed.parquet")],
                "skeleton_attention": [str(tmp_path / "attention.json")] if attention else [],
            },
            output=outputs,
            params={"tasks": ["toy"], "constants": ["prompt_mean"]},
        )
    )
    table = pd.read_parquet(outputs["parquet"]).set_index("method")
    if not attention:
        assert "attention groups kept (%)" not in table and len(table) == 4
        return
    row = table.loc["skeleton + attention groups (ours)"]
    assert row["attention groups kept (%)"] == round(100 * 6 / 9, 1) and row["change (points)"] == "-1.0"
    assert row["speedup float32"] == "2.00x (1.90-2.10)" and row["parameters kept (%)"] == 50.0
    assert (table.drop(index="skeleton + attention groups (ours)")["attention groups kept (%)"] == 100.0).all()
    columns = list(table.columns)
    assert columns.index("attention groups kept (%)") == columns.index("FFN neurons kept (%)") + 1
