"""Attention pruning (ours): removing key/value groups equals silencing their query heads, reloads, scores."""

import copy

import pandas as pd
import pytest
import torch
from transformers import Olmo2Config, Olmo2ForCausalLM, Qwen2Config, Qwen2ForCausalLM

from skill_neurons.architecture import ModelError, ffn_output_projections, ffn_width
from skill_neurons.attention import group_scores, layer_attentions, prune_attention, record_kv_heads
from skill_neurons.models import load_model
from skill_neurons.neurons import on_neurons
from skill_neurons.pruning import prune_ffns, save_pruned

from .conftest import tiny_model, word_tokenizer


def silenced_logits(model, ids, silenced_heads: dict[int, list[int]]):
    """The unpruned model with the attention output of the given query heads set to zero (o_proj's input)."""
    attentions = layer_attentions(model)

    def silence(layer, output):
        if layer not in silenced_heads:
            return None
        changed = output.clone()
        size = attentions[layer].head_dim
        for head in silenced_heads[layer]:
            changed[..., head * size : (head + 1) * size] = 0
        return changed

    with torch.no_grad(), on_neurons([a.output for a in attentions], silence):
        return model(input_ids=ids).logits


def qwen2_mha(vocab_size: int = 40) -> torch.nn.Module:
    """Multi-head attention (a group is one head) with q/k/v biases."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize(
    "architecture, silenced, removed_per_group",
    [
        # LLaMA, 4 query heads on 2 key/value heads: groups {0, 1} and {2, 3}; per group head_dim rows of W_k and
        # W_v, 2 * head_dim rows of W_q and columns of W_o
        ("llama", {0: [0, 1], 2: [2, 3]}, 2 * 8 * 32 + 2 * 2 * 8 * 32),
        # Qwen2 as multi-head attention, q/k/v with biases: group g is head g
        ("qwen2", {0: [1], 2: [0]}, 4 * 8 * 32 + 3 * 8),
    ],
)
def test_removing_a_key_value_group_computes_the_model_with_its_query_heads_silenced(
    architecture, silenced, removed_per_group
):
    model = tiny_model("llama", 40) if architecture == "llama" else qwen2_mha()
    attentions = layer_attentions(model)
    size = attentions[0].group_size
    n_groups = attentions[0].n_groups
    assert [(a.n_groups, a.group_size, a.head_dim) for a in attentions] == [(4 // size, size, 8)] * 3
    ids = torch.randint(7, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    expected = silenced_logits(model, ids, silenced)

    pruned = copy.deepcopy(model)
    keep = {layer: [g for g in range(n_groups) if g * size not in heads] for layer, heads in silenced.items()}
    kept = prune_attention(pruned, {layer: torch.tensor(groups) for layer, groups in keep.items()})
    assert kept == [len(keep.get(layer, range(n_groups))) for layer in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    removed = sum(n_groups - len(groups) for groups in keep.values()) * removed_per_group
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters()) == removed


def test_silencing_every_query_head_of_a_group_differs_from_silencing_half_of_it():
    """The reference above must see which heads a group holds: silencing heads {0, 2} is not group 0's removal."""
    model = tiny_model("llama", 40)
    ids = torch.randint(7, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    pruned = copy.deepcopy(model)
    prune_attention(pruned, {1: torch.tensor([1])})
    with torch.no_grad():
        logits = pruned(input_ids=ids).logits
    assert not torch.allclose(logits, silenced_logits(model, ids, {1: [0, 2]}), atol=1e-4)


def test_a_model_pruned_in_ffn_and_attention_reloads_with_the_same_logits(tmp_path):
    vocab = len(word_tokenizer())
    model = tiny_model("llama", vocab)
    widths = prune_ffns(model, {1: torch.tensor([3, 1, 4])})
    kv_heads = prune_attention(model, {1: torch.tensor([0]), 2: torch.tensor([1])})
    record_kv_heads(model, kv_heads)
    save_pruned(model, word_tokenizer(), tmp_path / "pruned", widths)
    reloaded, _ = load_model(tmp_path / "pruned")
    assert [a.n_groups for a in layer_attentions(reloaded)] == [2, 1, 1]
    assert [ffn_width(p) for p in ffn_output_projections(reloaded)] == widths
    ids = torch.randint(7, vocab, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_model_pruned_in_attention_alone_reloads_with_the_same_logits(tmp_path):
    vocab = len(word_tokenizer())
    model = qwen2_mha(vocab)
    record_kv_heads(model, prune_attention(model, {0: torch.tensor([3, 1])}))
    model.save_pretrained(tmp_path / "pruned")
    word_tokenizer().save_pretrained(tmp_path / "pruned")
    reloaded, _ = load_model(tmp_path / "pruned")
    assert [a.n_groups for a in layer_attentions(reloaded)] == [2, 4, 4]
    ids = torch.randint(7, vocab, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_group_scores_sum_the_dimensions_of_every_query_head_that_reads_the_group():
    attentions = layer_attentions(tiny_model("llama", 40))  # head_dim 8, 2 query heads per group: 16 dims each
    dims = pd.DataFrame({"layer": [0] * 32 + [1] * 32, "neuron": list(range(32)) * 2})
    dims["attribution"] = [float(i) for i in range(64)]
    groups = group_scores(dims, attentions[:2])
    assert groups[["layer", "neuron"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert groups["attribution"].tolist() == [
        sum(range(16)),
        sum(range(16, 32)),
        sum(range(32, 48)),
        sum(range(48, 64)),
    ]


def olmo2() -> torch.nn.Module:
    """Its q/k norms act over all heads at once: removing heads would need them sliced too."""
    config = Olmo2Config(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    return Olmo2ForCausalLM(config)


@pytest.mark.parametrize("architecture", ["gpt2", "bert", "olmo2"])
def test_attention_pruning_names_the_model_type_it_cannot_prune(architecture):
    model = olmo2() if architecture == "olmo2" else tiny_model(architecture, 40)
    with pytest.raises(ModelError, match=rf"pruning.skeleton.attention: layer 0 of model type '{architecture}'"):
        layer_attentions(model)
