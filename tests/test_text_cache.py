import numpy as np
import pytest
import torch

from skill_neurons.activation_store import read_baseline, read_layer
from skill_neurons.activations import dump_activations
from skill_neurons.models import load_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.text_cache import encode_split, read_text_cache, write_text_cache
from skill_neurons.tuning import evaluate, init_prompt, tune_prompt

from .conftest import save_tiny_model, toy_reviews

TEMPLATE = "Review : {sentence} \n Sentiment :"


def frame(n, seed):
    data = toy_reviews(n, seed)
    data.insert(0, "example", np.arange(n))
    return data


def prompted(model_dir, label_words=(" negative", " positive"), n_prompt=3) -> PromptedLM:
    model, tokenizer = load_model(model_dir)
    return PromptedLM(model, tokenizer, TEMPLATE, label_words, n_prompt)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def stored(request, tmp_path_factory):
    """A causal tiny model's text of three splits, encoded in batches of 4 and read back from disk."""
    lm = prompted(save_tiny_model(tmp_path_factory.mktemp(request.param), request.param))
    frames = {"train": frame(20, 0), "dev": frame(9, 1), "test": frame(7, 2)}
    path = tmp_path_factory.mktemp("text") / "task.safetensors"
    write_text_cache({name: encode_split(lm, f, ["sentence"], 4) for name, f in frames.items()}, path)
    return lm, frames, read_text_cache(path, ["train", "dev", "test"])


def test_stored_text_gives_the_logits_of_one_full_forward_in_any_batching(stored):
    lm, frames, text = stored
    prompt = init_prompt(lm, "normal", 0.5, seed=1)
    # Other batch sizes and orders than the encoding's: every batch re-pads the stored examples.
    shuffled = frames["dev"].sample(frac=1.0, random_state=0)
    for batch_size in (1, 3, 9):
        batches = [
            lm.collate(
                lm.tokenize(shuffled.iloc[i : i + batch_size], ["sentence"]),
                shuffled["label"].to_numpy().copy()[i : i + batch_size],
                shuffled["example"].to_numpy().copy()[i : i + batch_size],
            )
            for i in range(0, len(shuffled), batch_size)
        ]
        with torch.no_grad():
            for batch in batches:
                expected = lm.full_causal_logits(prompt, batch)
                text["dev"].attach(batch)
                torch.testing.assert_close(lm.label_logits(prompt, batch), expected, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(lm.label_logits(prompt, batch), expected, rtol=1e-5, atol=1e-5)


def test_stored_text_gives_the_captured_activations_of_a_fresh_pass(stored):
    lm, frames, text = stored
    prompt = init_prompt(lm, "normal", 0.5, seed=2)
    for batch in lm.batches(frames["test"], ["sentence"], 5):
        fresh = lm.capture(prompt, batch)
        kept = lm.capture(prompt, text["test"].attach(batch))
        torch.testing.assert_close(kept.logits, fresh.logits, rtol=1e-5, atol=1e-5)
        for layer in range(len(lm.projections)):
            for part in ("prompt", "input_avg", "input_max"):
                torch.testing.assert_close(
                    getattr(kept, part)[layer], getattr(fresh, part)[layer], rtol=1e-5, atol=1e-5
                )


def test_tuning_and_dumping_on_stored_text_match_running_the_text(stored, tmp_path):
    lm, frames, text = stored
    runs = {}
    for name, train_text in (("plain", None), ("stored", text["train"])):
        dev = lm.batches(frames["dev"], ["sentence"], 4)
        dev = lm.keep_text_cache(dev) if train_text is None else [text["dev"].attach(b) for b in dev]
        result = tune_prompt(
            lm,
            frames["train"],
            dev,
            ["sentence"],
            seed=0,
            lr=0.05,
            batch_size=4,
            max_steps=6,
            eval_every=3,
            patience=10,
            init_std=0.3,
            train_text=train_text,
        )
        batches = {s: lm.batches(frames[s], ["sentence"], 4) for s in frames}
        if train_text is not None:
            batches = {s: text[s].attached(b) for s, b in batches.items()}
        dump_activations(
            lm,
            result.prompt,
            batches["train"],
            {"dev": batches["dev"], "test": batches["test"]},
            tmp_path / name,
            dtype="float32",
        )
        runs[name] = result
    torch.testing.assert_close(runs["stored"].prompt, runs["plain"].prompt, rtol=1e-4, atol=1e-5)
    for layer in range(len(lm.projections)):
        plain, kept = read_layer(tmp_path / "plain", "dev", layer), read_layer(tmp_path / "stored", "dev", layer)
        np.testing.assert_allclose(kept.prompt, plain.prompt, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(kept.input_max, plain.input_max, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.stack(read_baseline(tmp_path / "stored")["input_avg"]),
        np.stack(read_baseline(tmp_path / "plain")["input_avg"]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_stored_text_serves_other_label_words_and_prompt_lengths(stored):
    lm, frames, text = stored
    other = PromptedLM(lm.model, lm.tokenizer, TEMPLATE, [" good", " bad"], 5)  # a label-word draw, a hard prompt
    prompt = init_prompt(other, "normal", 0.5, seed=3)
    plain = evaluate(other, prompt, other.batches(frames["test"], ["sentence"], 4))
    assert evaluate(other, prompt, text["test"].attached(other.batches(frames["test"], ["sentence"], 4))) == plain


def test_a_stale_or_foreign_text_cache_is_refused_by_name(stored, tmp_path):
    lm, frames, text = stored
    longer = PromptedLM(lm.model, lm.tokenizer, "Long review text : {sentence} \n Sentiment :", lm.label_words, 3)
    with pytest.raises(ValueError, match="template, tokenizer or data.max_field_tokens"):
        text["dev"].attach(longer.batches(frames["dev"], ["sentence"], 4)[0])
    with pytest.raises(KeyError, match=r"no example (7|8|9|1[0-2]): it was encoded from other splits"):
        text["test"].attach(lm.batches(frame(13, 2), ["sentence"], 13)[0])
    path = tmp_path / "dev_only.safetensors"
    write_text_cache({"dev": text["dev"]}, path)
    with pytest.raises(KeyError, match="no split 'test'"):
        read_text_cache(path, ["test"])


def test_text_stored_in_float16_takes_half_the_bytes_and_is_read_back_rounded(stored, tmp_path):
    from safetensors import safe_open

    from skill_neurons.text_cache import kv_storage

    lm, frames, text = stored
    paths = {dtype: tmp_path / f"{dtype}.safetensors" for dtype in ("float32", "float16")}
    for dtype, path in paths.items():
        write_text_cache({"test": text["test"]}, path, dtype)
    with safe_open(str(paths["float16"]), framework="pt") as half:
        assert half.get_tensor("test.keys.0").dtype == torch.float16
        assert half.get_tensor("test.input_avg.0").dtype == torch.float32  # the Avg/Max baselines stay exact
    kv_bytes = sum(4 * t.numel() for t in text["test"].keys + text["test"].values)
    saved = paths["float32"].stat().st_size - paths["float16"].stat().st_size
    assert abs(saved - kv_bytes / 2) < 100  # every fp32 key/value 4 bytes -> 2 (the header's offsets differ a little)
    back = read_text_cache(paths["float16"], ["test"])["test"]
    exact = text["test"]
    assert back.keys[0].dtype == torch.float32
    assert torch.equal(back.keys[0], exact.keys[0].half().float())
    relative = max(float(((b - e).abs() / e.abs().clamp_min(1e-3)).max()) for b, e in zip(back.values, exact.values))
    assert 0 < relative <= 2**-11  # fp16 rounding: half a unit in the 11th bit
    prompt = init_prompt(lm, "normal", 0.5, seed=1)
    batches = lm.batches(frames["test"], ["sentence"], 4)
    logits = {
        name: torch.cat(
            [lm.label_logits(prompt, b) for b in split.attached(lm.batches(frames["test"], ["sentence"], 4))]
        )
        for name, split in (("float32", exact), ("float16", back))
    }
    assert len(batches) > 1 and torch.allclose(logits["float16"], logits["float32"], atol=1e-2)
    with pytest.raises(ValueError, match=r"activations.text_dtype: a text key/value of 7e\+04 exceeds float16"):
        kv_storage(torch.tensor([1.0, -7e4]), "float16")
    assert kv_storage(torch.tensor([1.0], dtype=torch.bfloat16), "float16").dtype == torch.bfloat16


def test_the_text_store_size_is_known_before_it_is_encoded(stored, tmp_path):
    from safetensors import safe_open

    from skill_neurons.text_cache import store_bytes

    lm, frames, text = stored
    for kv_dtype in ("float32", "float16"):
        path = tmp_path / f"{kv_dtype}.safetensors"
        write_text_cache(text, path, kv_dtype)
        with safe_open(str(path), framework="pt") as saved:
            parts = [k for k in saved.keys() if k.split(".")[1] in ("keys", "values", "input_avg", "input_max")]
            written = sum(saved.get_tensor(k).numel() * saved.get_tensor(k).element_size() for k in parts)
        assert store_bytes(lm, frames, ["sentence"], kv_dtype) == written
