"""LoRA and BitFit in place of the prompt (Wang et al. §5): what trains, what stays, and the stages on a tiny model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from skill_neurons.architecture import ffn_output_projections
from skill_neurons.io import read_parquet, read_tensors
from skill_neurons.models import load_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.settings import MethodTuning
from skill_neurons.stages.methods import method_sweep, methods_table, tune_method
from skill_neurons.tuning import evaluate
from skill_neurons.tuning_methods import (
    apply_method,
    attention_projections,
    load_trainable_state,
    trainable_state,
    tune_model,
)

from .conftest import TOY_TASK_PARAMS, fake_job, toy_reviews


def forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture()
def model_and_tokenizer(llama_dir):
    return load_model(llama_dir)  # fresh each test: the methods change the model in place


def test_lora_sits_on_the_attention_projections_only_and_starts_as_the_model(model_and_tokenizer):
    model, _ = model_and_tokenizer
    names = attention_projections(model)
    assert names and all(n.rsplit(".", 1)[-1] in {"q_proj", "k_proj", "v_proj", "o_proj"} for n in names)
    ids = torch.tensor([[1, 5, 7, 9]])
    before = forward(model, ids)
    counts = apply_method(model, "lora", lora_rank=2, lora_alpha=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "mlp" not in n for n in trainable)
    assert counts == {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "added_biases": 0}
    torch.testing.assert_close(forward(model, ids), before)  # B = 0: the adapters add nothing yet


def test_bitfit_adds_zero_biases_where_there_are_none_and_trains_only_biases(model_and_tokenizer):
    model, _ = model_and_tokenizer
    without_bias = sum(isinstance(m, torch.nn.Linear) and m.bias is None for m in model.modules())
    ids = torch.tensor([[1, 5, 7, 9]])
    before = forward(model, ids)
    counts = apply_method(model, "bitfit")
    assert counts["added_biases"] == without_bias > 0
    assert all(n.endswith("bias") for n, p in model.named_parameters() if p.requires_grad)
    torch.testing.assert_close(forward(model, ids), before)
    with pytest.raises(ValueError, match="unknown tuning method 'adapter'"):
        apply_method(model, "adapter")


def test_tuning_lora_changes_no_ffn_weight_and_keeps_the_best_dev_state(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    apply_method(model, "lora", lora_rank=2, lora_alpha=4)
    lm = PromptedLM(model, tokenizer, "Review : {sentence} Sentiment :", (" negative", " positive"), 0)
    ffn = [p.weight.detach().clone() for p in ffn_output_projections(model)]
    train = toy_reviews(32, 0).assign(example=range(32))
    dev_batches = lm.batches(toy_reviews(16, 1).assign(example=range(16)), ["sentence"], 8)
    state, curve = tune_model(lm, train, dev_batches, ["sentence"], 0, MethodTuning(0.05, 8, 6, 2, 5))
    assert curve["step"].tolist() == [0, 2, 4, 6]
    assert all(torch.equal(p.weight, w) for p, w in zip(ffn_output_projections(model), ffn))
    load_trainable_state(model, state)
    empty = torch.zeros(0, lm.hidden_size)
    assert evaluate(lm, empty, dev_batches, one_forward=True) == curve["dev_accuracy"].max()
    assert set(state) == set(trainable_state(model))


def test_the_method_stages_tune_sweep_and_tabulate(llama_dir, tmp_path):
    splits = {}
    for index, split in enumerate(("train", "dev", "test")):
        splits[split] = str(tmp_path / f"{split}.parquet")
        toy_reviews(16, index).assign(example=range(16)).to_parquet(splits[split])
    model, _ = load_model(llama_dir)
    widths = [p.in_features for p in ffn_output_projections(model)]
    ranking = pd.DataFrame(
        [(layer, n) for layer, w in enumerate(widths) for n in range(w)], columns=["layer", "neuron"]
    )
    ranking.assign(rank=np.arange(1, len(ranking) + 1)).to_parquet(tmp_path / "ranking.parquet")
    prompting = {"n_tokens": 3, "max_field_tokens": None, "precision": "fp32", "eval_batch_size": 8, "device": "cpu"}
    method = {"lr": 0.01, "batch_size": 8, "max_steps": 2, "eval_every": 2, "patience": 2, "lora_rank": 2}
    params = {**TOY_TASK_PARAMS, **prompting, **method, "lora_alpha": 4, "seed": 0}
    folder = tmp_path / "bitfit"
    tune = fake_job(
        input={**splits, "model": str(llama_dir)},
        output={
            k: str(folder / f) for k, f in (("weights", "w.safetensors"), ("curve", "c.parquet"), ("metrics", "m.json"))
        },
        params=params,
        wildcards={"method": "bitfit"},
    )
    tune_method(tune)
    metrics = json.loads((folder / "m.json").read_text())
    assert metrics["added_biases"] > 0 and metrics["method"] == "bitfit" and metrics["task"] == "toy"
    assert all(name.endswith("bias") for name in read_tensors(folder / "w.safetensors"))
    sweep = fake_job(
        input={
            **splits,
            "model": str(llama_dir),
            "weights": str(folder / "w.safetensors"),
            "rankings": [str(tmp_path / "ranking.parquet")],
        },
        output=[str(folder / "sweep.parquet")],
        params={**params, "sources": ["toy"], "rates": [0, 0.5], "sigma": 0.1, "max_examples": None},
        wildcards={"method": "bitfit"},
    )
    method_sweep(sweep)
    rows = read_parquet(folder / "sweep.parquet")
    assert sorted(set(rows["order"])) == ["random", "toy"] and set(rows["method"]) == {"bitfit"}
    # rate 0 is the tuned model unperturbed, on the same test split as its metrics
    assert rows.loc[rows["rate"] == 0, "accuracy"].iloc[0] == metrics["test_accuracy"]
    outputs = {k: str(tmp_path / f"t.{k}") for k in ("parquet", "markdown", "html", "importance", "tuned")}
    methods_table(
        fake_job(input={"sweeps": [str(folder / "sweep.parquet")], "metrics": [str(folder / "m.json")]}, output=outputs)
    )
    table = read_parquet(outputs["parquet"])
    assert set(table["method"]) == {"bitfit"} and "random drop (points)" in table
    assert read_parquet(outputs["importance"])["source"].tolist() == ["toy"]
