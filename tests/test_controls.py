"""Controls of Table 3: a random model is really untrained, a hard prompt is its tokens' embeddings."""

import pytest
import torch

from skill_neurons.activation_store import read_meta
from skill_neurons.controls import hard_prompt_embeddings, save_random_model
from skill_neurons.io import read_tensors
from skill_neurons.models import load_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.pruning import layer_ffns, prune_ffns, save_pruned
from skill_neurons.stages.controls import dump_control

from .conftest import TOY_TASK_PARAMS, fake_job, save_tiny_model, toy_reviews


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


def test_a_random_copy_of_a_pruned_model_keeps_its_widths_and_folded_biases(tmp_path):
    model, tokenizer = load_model(save_tiny_model(tmp_path / "dense", "llama"))
    widths = prune_ffns(model, {0: torch.arange(5), 2: torch.arange(30)})
    layer_ffns(model)[0].output.bias = torch.nn.Parameter(torch.ones(model.config.hidden_size), requires_grad=False)
    save_pruned(model, tokenizer, tmp_path / "pruned", widths)
    save_random_model(tmp_path / "pruned", tmp_path / "random", seed=1)
    random, _ = load_model(tmp_path / "random")
    weights, fresh = model.state_dict(), random.state_dict()
    assert {name: tensor.shape for name, tensor in fresh.items()} == {name: t.shape for name, t in weights.items()}
    assert [ffn.output.weight.shape[1] for ffn in layer_ffns(random)] == widths == [5, 48, 30]
    name = "model.layers.2.mlp.down_proj.weight"
    assert not torch.equal(fresh[name], weights[name])


def test_a_hard_prompt_is_the_embeddings_of_its_tokens(tmp_path):
    model, tokenizer = load_model(save_tiny_model(tmp_path / "m", "llama"))
    lm = PromptedLM(model, tokenizer, "Review : {sentence}", [" negative", " positive"], 2)
    prompt = hard_prompt_embeddings(lm, "Sentiment : good")
    ids = tokenizer("Sentiment : good", add_special_tokens=False).input_ids
    assert len(ids) == 3 and torch.equal(prompt, model.get_input_embeddings().weight[ids])
    with pytest.raises(ValueError, match="hard prompt '' has no tokens"):
        hard_prompt_embeddings(lm, "")


def control_job(tmp_path, model_dir, control: str, seed: int, **leaves):
    """A dump_control job on toy splits, without stored text (as for the random model)."""
    splits = {}
    for index, split in enumerate(("train", "dev", "test")):
        splits[split] = str(tmp_path / f"{split}.parquet")
        toy_reviews(12, index).assign(example=range(12)).to_parquet(splits[split])
    prompting = {"n_tokens": 4, "max_field_tokens": None, "precision": "fp32", "eval_batch_size": 8, "device": "cpu"}
    return fake_job(
        input={**splits, "model": str(model_dir), "text": []},
        output={
            "prompt": str(tmp_path / control / "prompt.safetensors"),
            "activations": str(tmp_path / control / "activations"),
        },
        params={**TOY_TASK_PARAMS, **prompting, "dtype": "float32", "max_gb": 1.0, **leaves},
        wildcards={"control": control, "seed": str(seed)},
    )


def test_the_random_prompt_control_is_random_vectors_not_token_embeddings(tmp_path):
    model_dir = save_tiny_model(tmp_path / "m", "llama")
    job = control_job(tmp_path, model_dir, "random_prompt", 3, init_std=0.03, hard_prompt=None)
    dump_control(job)
    prompt = read_tensors(job.output.prompt)["prompt"]
    # Wang et al.'s initialisation drawn with the trial's seed, whatever init the tuned prompts used.
    assert torch.equal(prompt, torch.randn(4, 32, generator=torch.Generator().manual_seed(3)) * 0.03)
    assert read_meta(job.output.activations)["n_prompt"] == 4
    embeddings = load_model(model_dir)[0].get_input_embeddings().weight
    assert not any(torch.isclose(row, embeddings, atol=1e-6).all(-1).any() for row in prompt)


def test_the_hard_prompt_control_dumps_through_its_own_token_count(tmp_path):
    model_dir = save_tiny_model(tmp_path / "m", "llama")
    job = control_job(tmp_path, model_dir, "hard_prompt", 0, init_std=None, hard_prompt="Sentiment : good")
    dump_control(job)
    model, tokenizer = load_model(model_dir)
    ids = tokenizer("Sentiment : good", add_special_tokens=False).input_ids
    assert torch.equal(read_tensors(job.output.prompt)["prompt"], model.get_input_embeddings().weight[ids])
    assert read_meta(job.output.activations)["n_prompt"] == len(ids) == 3  # not the 4 of prompt.n_tokens
