"""Attention pruning (ours): removing key/value groups equals silencing their query heads, reloads, scores."""

import copy

import pandas as pd
import pytest
import torch

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


def test_removing_a_key_value_group_computes_the_model_with_its_query_heads_silenced():
    model = tiny_model("llama", 40)  # 4 query heads, 2 key/value heads: groups {0, 1} and {2, 3}
    attentions = layer_attentions(model)
    assert [(a.n_groups, a.group_size, a.head_dim) for a in attentions] == [(2, 2, 8)] * 3
    ids = torch.randint(7, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    expected = silenced_logits(model, ids, {0: [0, 1], 2: [2, 3]})

    pruned = copy.deepcopy(model)
    assert prune_attention(pruned, {0: torch.tensor([1]), 2: torch.tensor([0])}) == [1, 2, 1]
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    # per removed group: head_dim rows of W_k and W_v, group_size * head_dim rows of W_q and columns of W_o
    removed = 2 * (2 * 8 * 32 + 2 * 2 * 8 * 32)
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


@pytest.mark.parametrize("architecture", ["gpt2", "bert"])
def test_attention_pruning_names_the_model_type_it_cannot_prune(architecture):
    with pytest.raises(ModelError, match=rf"pruning.skeleton.attention: layer 0 of model type '{architecture}'"):
        layer_attentions(tiny_model(architecture, 40))
