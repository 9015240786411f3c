"""Word selectivity (Wang et al. Table 2): the right weight vectors, cosines, per-token mean activations, the table."""

import re
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from skill_neurons.architecture import ModelError
from skill_neurons.neurons import on_neurons
from skill_neurons.prompting import PromptedLM
from skill_neurons.stages.words import word_selectivity, write_token_table
from skill_neurons.word_selectivity import (
    MEAN_ACTIVATION,
    Neuron,
    input_weight_vectors,
    token_activation_sums,
    tokenize_texts,
    word_selectivity_table,
)

from .conftest import TOY_TASK_PARAMS, fake_job, save_tiny_model, tiny_model, word_tokenizer

TEXTS = [
    "the movie was good",
    "a dull plot and a boring actor",
    "good good film",
    "it was superb and the scene was lovely",
    "the actor was poor",
    "superb",
]


def prompted(architecture: str) -> PromptedLM:
    tokenizer = word_tokenizer()
    model = tiny_model(architecture, len(tokenizer))
    return PromptedLM(model, tokenizer, "{sentence}", [" negative", " positive"], 2)


def token_id(lm: PromptedLM, word: str) -> int:
    return lm.tokenizer.convert_tokens_to_ids(word)


def embedding(lm: PromptedLM, word: str) -> torch.Tensor:
    return lm.model.get_input_embeddings().weight[token_id(lm, word)].detach().clone()


def rows_of(table: pd.DataFrame, method: str, side: str) -> pd.DataFrame:
    return table[(table["method"] == method) & (table["side"] == side)].sort_values("order")


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_a_gated_ffn_reads_gate_and_up_apart_and_a_gate_row_on_a_token_embedding_puts_it_first(architecture):
    lm = prompted(architecture)
    mlp = lm.model.model.layers[1].mlp
    with torch.no_grad():
        # The raw embedding row: Gemma's forward scales it by sqrt(hidden), which no cosine sees.
        mlp.gate_proj.weight[5] = 2 * embedding(lm, "good")
    vectors = input_weight_vectors(lm.model, Neuron(1, 5, 1))
    assert list(vectors) == ["cosine, gate", "cosine, up"]
    assert torch.equal(vectors["cosine, up"], mlp.up_proj.weight[5])
    table = word_selectivity_table(lm, [Neuron(1, 5, 1)], TEXTS, min_count=1, batch_size=4)
    gate = rows_of(table, "cosine, gate", "highest")
    assert gate["token"].iloc[0] == "good" and gate["value"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert gate["token id"].iloc[0] == token_id(lm, "good") and gate["count"].isna().all()
    up = rows_of(table, "cosine, up", "highest")
    assert len(up) == 10 and up["value"].iloc[0] < 0.99  # the up row is random: its own tokens, reported apart
    assert set(table["method"]) == {"cosine, gate", "cosine, up", MEAN_ACTIVATION}


def test_gpt2_reads_the_column_of_its_conv1d_weight():
    lm = prompted("gpt2")
    c_fc = lm.model.transformer.h[0].mlp.c_fc
    with torch.no_grad():
        c_fc.weight[:, 7] = 3 * embedding(lm, "great")  # Conv1D stores (in, out): neuron 7 is a column
    vectors = input_weight_vectors(lm.model, Neuron(0, 7, 1))
    assert list(vectors) == ["cosine"] and torch.equal(vectors["cosine"], c_fc.weight[:, 7])
    table = word_selectivity_table(lm, [Neuron(0, 7, 1)], TEXTS, min_count=1, batch_size=4)
    top = rows_of(table, "cosine", "highest").iloc[0]
    assert top["token"] == "great" and top["value"] == pytest.approx(1.0, abs=1e-4)


def test_bert_reads_the_row_of_its_intermediate_dense_and_a_negated_embedding_comes_lowest():
    lm = prompted("bert")
    dense = lm.model.bert.encoder.layer[1].intermediate.dense
    with torch.no_grad():
        dense.weight[3] = -embedding(lm, "dull")
    table = word_selectivity_table(lm, [Neuron(1, 3, 1)], TEXTS, min_count=1, batch_size=4)
    lowest = rows_of(table, "cosine", "lowest")
    assert lowest["token"].iloc[0] == "dull" and lowest["value"].iloc[0] == pytest.approx(-1.0, abs=1e-4)
    highest = rows_of(table, "cosine", "highest")
    assert highest["value"].is_monotonic_decreasing and lowest["value"].is_monotonic_increasing
    # Special and placeholder tokens ([CLS], [PAD], ...) are never reported.
    assert not table["token"].str.startswith("[").any()


def test_an_unknown_ffn_layout_names_the_model_type():
    lm = prompted("llama")
    mlp = lm.model.model.layers[0].mlp
    mlp.gate_up_proj = mlp.gate_proj  # a fused gate and up matrix (as Phi-3's), which no layout lists
    del mlp.gate_proj, mlp.up_proj
    with pytest.raises(ModelError, match="model type 'llama'.*FFN_INPUT_PROJECTIONS"):
        input_weight_vectors(lm.model, Neuron(1, 0, 1))


def test_the_mean_activation_of_a_context_free_neuron_is_its_formula_on_each_token():
    """Layer 0 of a LLaMA with its attention output zeroed sees the token's embedding alone:
    a_i = SiLU(g_i . x) * (u_i . x), x = RMSNorm(e_t) * w_norm, the same at every occurrence."""
    lm = prompted("llama")
    layer = lm.model.model.layers[0]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
    neuron = Neuron(0, 11, 1)
    table = word_selectivity_table(lm, [neuron], TEXTS, min_count=1, batch_size=4)
    norm = layer.post_attention_layernorm
    counts: dict[str, int] = defaultdict(int)
    for text in TEXTS:
        for word in text.split():
            counts[word] += 1
    expected = {}
    for word in counts:
        e = embedding(lm, word)
        x = e / torch.sqrt(e.pow(2).mean() + norm.variance_epsilon) * norm.weight
        with torch.no_grad():
            gate = torch.nn.functional.silu(layer.mlp.gate_proj.weight[neuron.index] @ x)
            expected[word] = float(gate * (layer.mlp.up_proj.weight[neuron.index] @ x))
    highest = rows_of(table, MEAN_ACTIVATION, "highest")
    assert highest["token"].tolist() == sorted(expected, key=expected.get, reverse=True)[:10]
    for row in highest.itertuples(index=False):
        assert row.value == pytest.approx(expected[row.token], rel=1e-3, abs=1e-5)
        assert row.count == counts[row.token]


def alone(lm: PromptedLM, ids: list[int]) -> dict[int, torch.Tensor]:
    """Every layer's neuron activations (T, D) of one text run on its own, no padding."""
    seen = {}
    with torch.no_grad(), on_neurons(lm.projections, lambda layer, a: seen.__setitem__(layer, a[0])):
        lm.model.base_model(input_ids=torch.tensor([ids]))
    return seen


@pytest.mark.parametrize("architecture", ["llama", "bert", "gpt2"])
def test_batched_token_means_match_one_hooked_forward_per_text(architecture):
    """Right padding in batches of 4 must give each token the activations of its text run alone."""
    lm = prompted(architecture)
    neurons = [Neuron(1, 2, 1), Neuron(0, 9, 2), Neuron(1, 30, 3)]
    token_ids = tokenize_texts(lm, TEXTS)
    sums, counts = token_activation_sums(lm, token_ids, neurons, batch_size=4)
    expected_sums, expected_counts = defaultdict(lambda: np.zeros(3)), defaultdict(int)
    for ids in token_ids:
        seen = alone(lm, ids)
        for position, token in enumerate(ids):
            expected_sums[token] += [float(seen[n.layer][position, n.index]) for n in neurons]
            expected_counts[token] += 1
    assert {t: int(c) for t, c in enumerate(counts) if c} == dict(expected_counts)
    for token, total in expected_sums.items():
        np.testing.assert_allclose(sums[token].numpy(), total, rtol=1e-4, atol=1e-5)


def test_tokens_seen_fewer_than_min_count_times_are_left_out():
    lm = prompted("bert")
    neuron = Neuron(0, 4, 1)
    # "superb" occurs twice, "good" three times, "was" four times.
    kept = set(
        word_selectivity_table(lm, [neuron], TEXTS, min_count=3, batch_size=2).query("method == @MEAN_ACTIVATION")[
            "token"
        ]
    )
    assert "superb" not in kept and {"good", "was"} <= kept
    assert kept == {"the", "was", "good"}
    every = word_selectivity_table(lm, [neuron], TEXTS, min_count=2, batch_size=2)
    assert "superb" in set(every.query("method == @MEAN_ACTIVATION")["token"])


PROMPTING = {"n_tokens": 4, "max_field_tokens": None, "precision": "fp32", "eval_batch_size": 4, "device": "cpu"}


def test_the_stage_writes_a_table_of_the_top_neurons_of_the_ranking(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", "llama")
    train = tmp_path / "train.parquet"
    pd.DataFrame({"example": range(len(TEXTS)), "sentence": TEXTS, "label": [1, 0, 1, 1, 0, 1]}).to_parquet(train)
    ranking = tmp_path / "ranking.parquet"
    pd.DataFrame({"rank": [3, 1, 2], "layer": [2, 1, 0], "neuron": [7, 5, 3], "subtask": "toy"}).to_parquet(ranking)
    outputs = {kind: str(tmp_path / f"table.{kind[:2]}") for kind in ("parquet", "markdown", "html")}
    job = fake_job(
        input={"model": str(model_dir), "train": str(train), "ranking": str(ranking)},
        output=outputs,
        params={**TOY_TASK_PARAMS, **PROMPTING, "top_neurons": 2, "min_count": 3},
        log=[str(tmp_path / "log")],
    )
    word_selectivity(job)
    table = pd.read_parquet(outputs["parquet"])
    assert list(table.columns) == [
        "task",
        "layer",
        "neuron",
        "rank",
        "method",
        "side",
        "order",
        "token",
        "token id",
        "value",
        "count",
    ]
    assert set(table["task"]) == {"toy"}
    assert sorted(set(zip(table["rank"], table["layer"], table["neuron"]))) == [(1, 1, 5), (2, 0, 3)]
    for rank in (1, 2):
        of_rank = table[table["rank"] == rank]
        for method in ("cosine, gate", "cosine, up"):
            for side in ("highest", "lowest"):
                assert rows_of(of_rank, method, side)["order"].tolist() == list(range(1, 11))
        # Seen 3 times or more: the template's "Review" and ":" (in every text) and the, was, good.
        activation = of_rank[of_rank["method"] == MEAN_ACTIVATION]
        assert set(activation["token"]) == {"Review", ":", "the", "was", "good"}
        assert activation.set_index("token")["count"].to_dict()["Review"] == len(TEXTS)
    assert (tmp_path / "table.ma").read_text().startswith("| task | layer | neuron | rank | method |")
    assert "cosine, gate" in (tmp_path / "table.ht").read_text()


def test_the_markdown_quotes_tokens_so_a_leading_space_a_newline_or_a_pipe_keeps_its_row(tmp_path):
    table = pd.DataFrame({"task": "toy", "token": [" good", "|", ".\n"], "value": [0.5, 0.25, -1.0]})
    outputs = {kind: str(tmp_path / f"table.{kind[:2]}") for kind in ("parquet", "markdown", "html")}
    write_token_table(table, outputs)
    lines = (tmp_path / "table.ma").read_text().splitlines()
    assert lines[2:] == ["| toy | ' good' | 0.5 |", "| toy | '\\|' | 0.25 |", "| toy | '.\\n' | -1.0 |"]
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 4 for line in lines)  # 3 columns in every row
    assert pd.read_parquet(outputs["parquet"])["token"].tolist() == [" good", "|", ".\n"]
