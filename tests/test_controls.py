"""Controls of Table 3: a random model is really untrained, a hard prompt is its tokens' embeddings."""

import pytest
import torch

from skill_neurons.controls import hard_prompt_embeddings, save_random_model
from skill_neurons.io import read_tensors
from skill_neurons.models import load_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.stages.controls import control_prompt

from .conftest import fake_job, save_tiny_model


def test_the_random_model_has_the_architecture_but_not_the_weights(tmp_path):
    pretrained_dir = save_tiny_model(tmp_path / "pretrained", "llama")
    save_random_model(pretrained_dir, tmp_path / "random", seed=0)  # the tiny "pre-trained" model used seed 0 too
    pretrained, _ = load_model(pretrained_dir)
    random, tokenizer = load_model(tmp_path / "random")
    assert pretrained.config.to_dict()["num_hidden_layers"] == random.config.num_hidden_layers
    weights, fresh = pretrained.state_dict(), random.state_dict()
    assert weights.keys() == fresh.keys()
    matrices = [name for name, value in weights.items() if value.ndim == 2]
    assert matrices and all(not torch.equal(weights[n], fresh[n]) for n in matrices)
    assert all(weights[n].shape == fresh[n].shape for n in weights)
    assert tokenizer.get_vocab() == load_model(pretrained_dir)[1].get_vocab()
    save_random_model(pretrained_dir, tmp_path / "again", seed=0)  # seeded: the same weights again
    assert torch.equal(load_model(tmp_path / "again")[0].state_dict()[matrices[0]], fresh[matrices[0]])


def test_a_hard_prompt_is_the_embeddings_of_its_tokens(tmp_path):
    model, tokenizer = load_model(save_tiny_model(tmp_path / "m", "llama"))
    lm = PromptedLM(model, tokenizer, "Review : {sentence}", [" negative", " positive"], 2)
    prompt = hard_prompt_embeddings(lm, "Sentiment : good")
    ids = tokenizer("Sentiment : good", add_special_tokens=False).input_ids
    assert len(ids) == 3 and torch.equal(prompt, model.get_input_embeddings().weight[ids])
    with pytest.raises(ValueError, match="hard prompt '' has no tokens"):
        hard_prompt_embeddings(lm, "")


TASK = {
    "name": "toy",
    "dataset": "toy",
    "subset": None,
    "train_split": "train",
    "test_split": "validation",
    "fallback_train_split": None,
    "label_column": "label",
    "text_fields": ["sentence"],
    "template": "Review : {sentence}",
    "labels": [0, 1],
    "label_words": [" negative", " positive"],
    "subtask_name": [],
    "subtask_positive": [],
    "subtask_negative": [],
}


def test_the_random_prompt_control_is_random_vectors_not_token_embeddings(tmp_path):
    model_dir = save_tiny_model(tmp_path / "m", "llama")
    params = {**TASK, "n_tokens": 4, "init_std": 0.03, "hard_prompt": "unused"}
    control_prompt(
        fake_job(
            input={"model": str(model_dir)},
            output=[str(tmp_path / "p.safetensors")],
            params=params,
            wildcards={"control": "random_prompt", "seed": "3"},
        )
    )
    prompt = read_tensors(tmp_path / "p.safetensors")["prompt"]
    # Wang et al.'s initialisation drawn with the trial's seed, whatever init the tuned prompts used.
    assert torch.equal(prompt, torch.randn(4, 32, generator=torch.Generator().manual_seed(3)) * 0.03)
    embeddings = load_model(model_dir)[0].get_input_embeddings().weight
    assert not any(torch.isclose(row, embeddings, atol=1e-6).all(-1).any() for row in prompt)
