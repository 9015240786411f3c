import numpy as np
import pandas as pd
import pytest
import torch

from skill_neurons.activation_store import activation_values, read_baseline, read_layer, read_meta
from skill_neurons.activations import DiskBudgetError, check_budget, dump_activations, layer_table
from skill_neurons.io import DamagedFile
from skill_neurons.models import load_model
from skill_neurons.plan import expected_bytes
from skill_neurons.prompting import PromptedLM
from skill_neurons.tuning import init_prompt

from .conftest import tiny_model, toy_reviews, word_tokenizer


def split(n, seed):
    frame = toy_reviews(n, seed)
    frame.insert(0, "example", np.arange(n))
    return frame


@pytest.fixture(scope="module")
def dumped(llama_dir, tmp_path_factory):
    model, tokenizer = load_model(llama_dir)
    lm = PromptedLM(model, tokenizer, "Review : {sentence} \n Sentiment :", [" negative", " positive"], 3)
    prompt = init_prompt(lm, "normal", 0.3, seed=0)
    frames = {"train": split(20, 0), "dev": split(9, 1), "test": split(7, 2)}
    batches = {name: lm.batches(frame, ["sentence"], 4) for name, frame in frames.items()}
    out = tmp_path_factory.mktemp("acts") / "run"
    dump_activations(
        lm, prompt, batches["train"], {"dev": batches["dev"], "test": batches["test"]}, out, dtype="float32"
    )
    return lm, prompt, batches, out


def test_parquet_read_back_equals_what_was_captured(dumped):
    lm, prompt, batches, out = dumped
    captured = [lm.capture(prompt, batch) for batch in batches["dev"]]
    examples = torch.cat([b.examples for b in batches["dev"]]).numpy()
    order = np.argsort(examples)
    for layer in range(len(lm.projections)):
        acts = read_layer(out, "dev", layer)
        np.testing.assert_array_equal(acts.examples, np.arange(9))
        expected = torch.cat([c.prompt[layer] for c in captured]).numpy()[order]
        np.testing.assert_allclose(acts.prompt, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            acts.input_avg, torch.cat([c.input_avg[layer] for c in captured]).numpy()[order], rtol=1e-6, atol=1e-6
        )
        assert acts.prompt.shape == (9, 3, 48)


def test_only_the_index_columns_carry_statistics(dumped):
    import pyarrow.parquet as pq

    *_, out = dumped
    metadata = pq.ParquetFile(out / "dev" / "layer=00" / "part-0.parquet").metadata
    groups = [metadata.row_group(g) for g in range(metadata.num_row_groups)]
    columns = [{group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)} for group in groups]
    examples = [group["example"].statistics for group in columns]
    assert min(stats.min for stats in examples) == 0 and max(stats.max for stats in examples) == 8  # 9 dev examples
    assert {column.statistics for group in columns for path, column in group.items() if "activation" in path} == {None}


def test_input_avg_and_max_cover_the_text_tokens_only(dumped):
    lm, prompt, batches, _ = dumped
    batch = batches["dev"][0]
    seen = {}
    from skill_neurons.neurons import on_neurons

    def keep_input_pass(layer, activation):
        if lm._phase == "input":
            seen[layer] = activation.clone()

    with on_neurons(lm.projections, keep_input_pass), torch.no_grad():
        lm.label_logits(prompt, batch)
    captured = lm.capture(prompt, batch)
    for i in range(len(batch.labels)):
        text = seen[0][i][batch.attention_mask[i].bool()]
        torch.testing.assert_close(captured.input_avg[0][i], text.mean(0))
        torch.testing.assert_close(captured.input_max[0][i], text.max(0).values)


def test_text_mean_and_max_of_a_bf16_activation_are_fp32_over_the_text():
    from skill_neurons.prompting import text_mean_and_max

    # one example, 3 tokens (the middle one padding), 2 neurons; every value exact in bf16
    activation = torch.tensor([[[1.5, -2.0], [100.0, 100.0], [0.25, -3.0]]], dtype=torch.bfloat16)
    text = torch.tensor([[True, False, True]])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a hook of a bf16 forward
        mean, peak = text_mean_and_max(activation, text)
    assert mean.dtype == peak.dtype == torch.float32
    torch.testing.assert_close(mean, torch.tensor([[(1.5 + 0.25) / 2, (-2.0 - 3.0) / 2]]), rtol=0, atol=0)
    torch.testing.assert_close(peak, torch.tensor([[1.5, -2.0]]), rtol=0, atol=0)


def test_text_mean_and_max_of_a_row_without_text_are_0_and_minus_inf():
    from skill_neurons.prompting import text_mean_and_max

    activation = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, -6.0], [7.0, 8.0]]])
    mean, peak = text_mean_and_max(activation, torch.tensor([[False, False], [True, False]]))
    assert mean.tolist() == [[0.0, 0.0], [5.0, -6.0]]
    assert peak.tolist() == [[float("-inf"), float("-inf")], [5.0, -6.0]]


def test_baseline_is_the_train_mean(dumped):
    lm, prompt, batches, out = dumped
    captured = [lm.capture(prompt, batch) for batch in batches["train"]]
    baseline = read_baseline(out)
    for layer in range(len(lm.projections)):
        expected = torch.cat([c.prompt[layer] for c in captured]).mean(0).numpy()
        np.testing.assert_allclose(baseline["prompt"][layer], expected, rtol=1e-5, atol=1e-6)
    meta = read_meta(out)
    assert meta["examples"] == {"dev": 9, "test": 7} and meta["widths"] == [48, 48, 48]
    examples = pd.read_parquet(out / "examples.parquet")
    assert set(examples.columns) >= {
        "split",
        "example",
        "label",
        "loss",
        "loss_label_words",
        "confidence",
        "prediction",
    }
    assert ((examples["confidence"] >= 0.5) & (examples["confidence"] <= 1)).all()


def full_vocabulary_loss(lm, prompt, batch):
    """-log p(gold label word) under the softmax over the whole vocabulary, from one plain forward of the model."""
    embeds = lm.model.get_input_embeddings()(batch.input_ids)
    size, n = len(embeds), lm.n_prompt
    if lm.kind == "causal":  # text then prompt; the next token after the prompt
        embeds = torch.cat([embeds, prompt.expand(size, -1, -1)], 1)
        mask = torch.cat([batch.attention_mask, batch.attention_mask.new_ones(size, n)], 1)
        logits = lm.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).logits[:, -1]
    else:  # [CLS] prompt [MASK] text [SEP]: the prompt fills positions 1..n, [MASK] is at n + 1
        embeds = embeds.clone()
        embeds[:, 1 : 1 + n] = prompt
        logits = lm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits[:, n + 1]
    gold = lm.label_ids[batch.labels]
    return -logits.log_softmax(-1)[torch.arange(size), gold]


def mlm_dump(tmp_path):
    lm = PromptedLM(
        tiny_model("bert", len(word_tokenizer())),
        word_tokenizer(),
        "Review : {sentence}",
        [" negative", " positive"],
        2,
    )
    prompt = init_prompt(lm, "normal", 0.3, seed=0)
    batches = {name: lm.batches(split(n, seed), ["sentence"], 3) for name, n, seed in (("train", 6, 0), ("dev", 7, 1))}
    dump_activations(lm, prompt, batches["train"], {"dev": batches["dev"]}, tmp_path / "run", dtype="float32")
    return lm, prompt, batches, tmp_path / "run"


@pytest.mark.parametrize("kind", ["causal", "mlm"])
def test_loss_is_the_gold_label_words_loss_over_the_whole_vocabulary(kind, dumped, tmp_path):
    lm, prompt, batches, out = dumped if kind == "causal" else mlm_dump(tmp_path)
    examples = pd.read_parquet(out / "examples.parquet").query("split == 'dev'").set_index("example")
    with torch.no_grad():
        for batch in batches["dev"]:
            ids = batch.examples.numpy()
            expected = full_vocabulary_loss(lm, prompt, batch).numpy()
            np.testing.assert_allclose(examples.loc[ids, "loss"], expected, rtol=1e-5, atol=1e-6)
            label_words = torch.nn.functional.cross_entropy(
                lm.label_logits(prompt, batch), batch.labels, reduction="none"
            ).numpy()
            np.testing.assert_allclose(examples.loc[ids, "loss_label_words"], label_words, rtol=1e-5, atol=1e-6)
    # the whole vocabulary's normaliser holds the label words' and more: a larger loss on every example
    assert (examples["loss"] > examples["loss_label_words"]).all()
    if kind == "causal":  # text keys/values computed beforehand: the hooks see the prompt's pass alone
        kept = {
            name: lm.keep_text_cache(lm.batches(split(n, seed), ["sentence"], 4))  # the fixture's splits
            for name, n, seed in (("train", 20, 0), ("dev", 9, 1))
        }
        dump_activations(lm, prompt, kept["train"], {"dev": kept["dev"]}, tmp_path / "kept", dtype="float32")
        again = pd.read_parquet(tmp_path / "kept" / "examples.parquet").set_index("example")
        np.testing.assert_allclose(again.loc[examples.index, "loss"], examples["loss"], rtol=1e-5)


def test_size_estimate_and_budget_error_name_the_setting():
    # 10 examples x (4 positions + Avg + Max) x (3 layers x 100 neurons) x 2 bytes
    assert expected_bytes(10, 4, [100, 100, 100], "float16") == 10 * 6 * 300 * 2
    assert check_budget(10, 4, [100] * 3, "float16", max_gb=1.0) == 36000
    with pytest.raises(DiskBudgetError, match=r"activations.max_gb = 1e-05.*lower data.max_dev / data.max_test"):
        check_budget(10, 4, [100] * 3, "float16", max_gb=1e-5)


def test_a_failed_dump_leaves_no_folder(llama_dir, tmp_path):
    model, tokenizer = load_model(llama_dir)
    lm = PromptedLM(model, tokenizer, "Review : {sentence}", [" negative", " positive"], 2)
    batches = lm.batches(split(4, 0), ["sentence"], 2)
    with pytest.raises(RuntimeError):
        dump_activations(lm, torch.zeros(5, 5), batches, {"dev": batches}, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def flip_bytes(path, count: int = 64, start_share: float = 0.3) -> None:
    """Invert `count` bytes a few apart from `start_share` of the file on: damage on disk, the size kept."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * start_share)
    for index in range(count):
        data[start + 3 * index] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_activation_file_is_named_instead_of_read_as_numbers(dumped, tmp_path):
    import shutil

    _, _, _, out = dumped
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (layer_file,) = (copy / "test" / "layer=01").glob("*.parquet")
    flip_bytes(layer_file)
    np.testing.assert_array_equal(read_layer(copy, "test", 0).prompt, read_layer(out, "test", 0).prompt)
    with pytest.raises(DamagedFile, match=r"layer=01 cannot be read .*delete it and rerun"):
        read_layer(copy, "test", 1)


def test_packed_activations_come_back_as_written_from_a_slice_of_the_table_too():
    generator = torch.Generator().manual_seed(0)
    prompt, avg, peak = torch.randn(4, 2, 5, generator=generator), torch.randn(4, 5), torch.randn(4, 5)
    table = layer_table(prompt, avg, peak, np.arange(4), np.float16)
    expected = np.concatenate([prompt.reshape(-1, 5).numpy(), avg.numpy(), peak.numpy()]).astype(np.float16)
    assert table.schema.field("activation").metadata == {b"dtype": b"float16", b"neurons": b"5"}
    np.testing.assert_array_equal(activation_values(table), expected)
    np.testing.assert_array_equal(activation_values(table.slice(3, 6)), expected[3:9])  # an offset into the buffer


@pytest.mark.parametrize("captured", [torch.float32, torch.bfloat16])
def test_stored_fp16_activations_round_as_numpy_does_at_ties_overflow_and_subnormals(captured):
    # ties to even (1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9), past the largest fp16 (inf), fp16 subnormals, -0
    edge = [1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65520.0, -1e6, 2**-24, 2**-25, 3 * 2**-26, 1e-9, -0.0, 0.1]
    values = torch.tensor(edge + [0.0] * (12 - len(edge)), dtype=torch.float32).to(captured)
    prompt, avg, peak = values[:4].reshape(1, 1, 4), values[4:8].reshape(1, 4), values[8:].reshape(1, 4)
    table = layer_table(prompt, avg, peak, np.arange(1), np.float16)
    by_numpy = np.concatenate([prompt.float().reshape(-1, 4).numpy(), avg.float().numpy(), peak.float().numpy()])
    with np.errstate(over="ignore"):
        expected = by_numpy.astype(np.float16)
    np.testing.assert_array_equal(activation_values(table).view(np.uint16), expected.view(np.uint16))


def test_a_layer_written_as_a_list_column_by_earlier_runs_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = np.arange(6 * 3, dtype=np.float16).reshape(6, 3)  # two examples: a prompt position, Avg, Max
    table = pa.table(
        {
            "example": pa.array([0, 1, 0, 1, 0, 1], type=pa.int32()),
            "kind": pa.array(["prompt", "prompt", "input_avg", "input_avg", "input_max", "input_max"]),
            "position": pa.array([0, 0, -1, -1, -1, -1], type=pa.int16()),
            "activation": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 3),
        }
    )
    folder = tmp_path / "run" / "dev" / "layer=00"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    acts = read_layer(tmp_path / "run", "dev", 0)
    np.testing.assert_array_equal(acts.examples, [0, 1])
    np.testing.assert_array_equal(acts.prompt[:, 0], values[:2])
    np.testing.assert_array_equal(acts.input_avg, values[2:4])
    np.testing.assert_array_equal(acts.input_max, values[4:])
