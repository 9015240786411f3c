import numpy as np
import pytest
import torch

from skill_neurons.data import Task
from skill_neurons.models import load_model
from skill_neurons.prompting import LabelWordError, PromptedLM, load_prompted
from skill_neurons.settings import Prompting
from skill_neurons.tuning import evaluate, init_prompt, tune_prompt

from .conftest import save_tiny_model, tiny_model, toy_reviews

TEMPLATE = "Review : {sentence} \n Sentiment :"


def prompted(model_dir, n_prompt=4) -> PromptedLM:
    model, tokenizer = load_model(model_dir)
    return PromptedLM(model, tokenizer, TEMPLATE, [" negative", " positive"], n_prompt)


def frame(n, seed):
    data = toy_reviews(n, seed)
    data.insert(0, "example", np.arange(n))
    return data


def test_cached_prefix_gives_the_logits_of_one_full_forward(llama_dir):
    lm = prompted(llama_dir)
    prompt = init_prompt(lm, "normal", 0.5, seed=3)
    batch = lm.batches(frame(6, 0), ["sentence"], 6)[0]
    assert (batch.attention_mask == 0).any(), "the batch should contain left padding"
    with torch.no_grad():
        torch.testing.assert_close(lm.label_logits(prompt, batch), lm.full_causal_logits(prompt, batch))


def test_a_kept_text_cache_gives_the_same_logits_every_time(llama_dir):
    lm = prompted(llama_dir)
    batches = lm.batches(frame(10, 0), ["sentence"], 5)
    cached = lm.keep_text_cache(lm.batches(frame(10, 0), ["sentence"], 5))
    with torch.no_grad():
        for prompt_seed in (1, 2, 1):
            prompt = init_prompt(lm, "normal", 0.5, seed=prompt_seed)
            for plain, kept in zip(batches, cached):
                torch.testing.assert_close(lm.label_logits(prompt, kept), lm.label_logits(prompt, plain))


def tune(lm, seed, steps=12):
    return tune_prompt(
        lm,
        frame(48, 1),
        lm.batches(frame(16, 2), ["sentence"], 8),
        ["sentence"],
        seed=seed,
        lr=0.05,
        batch_size=8,
        max_steps=steps,
        eval_every=4,
        patience=100,
        init_std=0.03,
    )


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "bert", "roberta"])
def test_tuning_lowers_the_loss_and_leaves_every_weight_bit_identical(tmp_path, architecture):
    lm = prompted(save_tiny_model(tmp_path, architecture))
    before = {name: p.detach().clone() for name, p in lm.model.named_parameters()}
    # Random tiny models barely see their input, but a prompt can still learn the 3:1 label prior.
    data = frame(96, 1)
    data = data[(data["label"] == 1) | (data.index % 3 == 0)].reset_index(drop=True)
    assert data["label"].mean() > 0.7
    batches = lm.batches(data, ["sentence"], len(data))
    result = tune_prompt(
        lm,
        data,
        batches,
        ["sentence"],
        seed=0,
        lr=0.1,
        batch_size=8,
        max_steps=30,
        eval_every=3,
        patience=100,
        init_std=0.03,
    )

    def loss(prompt):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(lm.label_logits(prompt, batches[0]), batches[0].labels).item()

    assert loss(result.last_prompt) < loss(init_prompt(lm, "normal", 0.03, seed=0)) - 0.02
    for name, p in lm.model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert list(result.curve["step"])[:3] == [0, 3, 6]


def test_same_seed_same_prompt_other_seed_other_prompt(llama_dir):
    lm = prompted(llama_dir)
    first, again, other = tune(lm, 7), tune(lm, 7), tune(lm, 8)
    assert torch.equal(first.prompt, again.prompt)
    assert not torch.equal(first.prompt, other.prompt)


def test_early_stopping_keeps_the_best_dev_prompt(llama_dir):
    lm = prompted(llama_dir)
    dev = lm.batches(frame(16, 2), ["sentence"], 8)
    result = tune_prompt(
        lm,
        frame(48, 1),
        dev,
        ["sentence"],
        seed=0,
        lr=0.05,
        batch_size=8,
        max_steps=200,
        eval_every=2,
        patience=2,
        init_std=0.03,
    )
    assert result.steps < 200
    assert result.dev_accuracy == result.curve["dev_accuracy"].max()
    assert evaluate(lm, result.prompt, dev) == pytest.approx(result.dev_accuracy)


PLACEHOLDERS = ["[PAD]", "[UNK]", "<unused0>", "<unused1>", "<0x00>", "<0xAA>", "[BOS]", "[EOS]"]


def placeholder_first_tokenizer(words):
    """A word-level tokenizer whose lowest ids are special, unused and byte tokens, as in Gemma's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel(vocab={w: i for i, w in enumerate([*PLACEHOLDERS, *words])}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


def test_vocab_init_draws_the_frequent_text_tokens_of_the_training_text_through_the_embedding(tmp_path):
    from skill_neurons.vocabulary import frequent_tokens

    tokenizer = placeholder_first_tokenizer(["great", "film", "dull", "plot", "unseen"])
    model = tiny_model("llama", len(tokenizer))
    lm = PromptedLM(model, tokenizer, "{sentence}", [" great", " dull"], 6)
    text = [tokenizer(t, add_special_tokens=False).input_ids for t in ["great film <0xAA>", "dull plot film", "film"]]
    film, great, dull, plot = (tokenizer.convert_tokens_to_ids(w) for w in ("film", "great", "dull", "plot"))
    # film 3 times, then great, dull, plot once each (ties by id); the byte token <0xAA> is left out.
    assert frequent_tokens(tokenizer, text) == [film, great, dull, plot]
    assert frequent_tokens(tokenizer, text, limit=2) == [film, great]
    prompt = init_prompt(lm, "vocab", 0.03, seed=1, text_tokens=text)
    drawn = [torch.nonzero((lm.embed(range(len(tokenizer))) == row).all(1)).flatten().tolist() for row in prompt]
    assert all(len(ids) == 1 and ids[0] in {film, great, dull, plot} for ids in drawn)
    with pytest.raises(ValueError, match="draws from the task's training text"):
        init_prompt(lm, "vocab", 0.03, seed=1)
    with pytest.raises(ValueError, match="unknown prompt init 'zeros'"):
        init_prompt(lm, "zeros", 0.03, seed=1)


def test_a_bpe_tokenizer_draws_the_vocab_init_from_its_first_merges_not_its_lowest_ids():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from skill_neurons.vocabulary import common_tokens, merge_ranked_tokens

    # Low ids: placeholders and single characters; then what the merges make, in merge order.
    pieces = [*PLACEHOLDERS, "t", "h", "e", "a", "n", "d", "th", "the", "an", "and"]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    merges = [("t", "h"), ("th", "e"), ("a", "n"), ("an", "d")]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    assert merge_ranked_tokens(tokenizer) == [vocab["th"], vocab["the"], vocab["an"], vocab["and"]]
    assert merge_ranked_tokens(tokenizer, limit=2) == [vocab["th"], vocab["the"]]
    assert common_tokens(tokenizer, [[vocab["a"], vocab["a"]]], limit=2) == [vocab["th"], vocab["the"]]
    # Without merges (a word-level vocabulary) the training text's most frequent tokens are drawn.
    words = placeholder_first_tokenizer(["great", "film"])
    film = words.convert_tokens_to_ids("film")
    assert merge_ranked_tokens(words) is None and common_tokens(words, [[film, film]]) == [film]


def task_with_words(label_words, **leaves) -> Task:
    return Task("toy", "toy", ("sentence",), TEMPLATE, (0, 1), tuple(label_words), **leaves)


PROMPTING = Prompting(n_tokens=2, max_field_tokens=None, precision="fp32", eval_batch_size=4, device="cpu")


def test_label_words_sharing_a_token_are_refused_with_their_task(llama_dir):
    model, tokenizer = load_model(llama_dir)
    with pytest.raises(LabelWordError, match="share their first token"):
        PromptedLM(model, tokenizer, TEMPLATE, [" good", " good"], 2)
    with pytest.raises(
        LabelWordError, match=r"config key tasks.toy.label_words: label words \[' good', ' good'\] share"
    ):
        load_prompted(str(llama_dir), task_with_words([" good", " good"]), PROMPTING, threads=1)


def test_a_label_word_of_several_tokens_is_refused_unless_the_task_opts_in(llama_dir, caplog):
    words = [" bad", " very good"]  # the word-level tokenizer: ' very good' is two tokens
    with pytest.raises(LabelWordError, match=r"tasks.toy.label_words: label word ' very good' is 2 tokens .*first"):
        load_prompted(str(llama_dir), task_with_words(words), PROMPTING, threads=1)
    lm = load_prompted(str(llama_dir), task_with_words(words, label_word_tokens="first"), PROMPTING, threads=1)
    first = lm.tokenizer(" very", add_special_tokens=False).input_ids
    assert lm.label_ids.tolist()[1] == first[0] and "scoring its first" in caplog.text
    assert lm.with_prompt_length(3).label_word_tokens == "first"  # kept by the copies a stage makes


def test_mlm_scores_at_the_mask_after_the_prompt(tmp_path):
    lm = prompted(save_tiny_model(tmp_path, "bert"), n_prompt=3)
    batch = lm.batches(frame(4, 0), ["sentence"], 4)[0]
    tokenizer = lm.tokenizer
    assert (batch.input_ids[:, 0] == tokenizer.cls_token_id).all()
    assert (batch.input_ids[:, 4] == tokenizer.mask_token_id).all()
    assert not batch.text_mask[:, :5].any() and batch.text_mask[:, 5].all()


def test_an_interrupted_tuning_resumes_from_its_checkpoint_to_the_same_prompt(llama_dir, tmp_path, monkeypatch):
    lm = prompted(llama_dir)
    dev = lm.batches(frame(16, 2), ["sentence"], 8)
    args = dict(
        train=frame(48, 1),
        dev_batches=dev,
        text_fields=["sentence"],
        seed=4,
        lr=0.05,
        batch_size=8,
        max_steps=10,
        eval_every=2,
        patience=100,
        init_std=0.5,
    )
    uninterrupted = tune_prompt(lm, **args)

    import skill_neurons.tuning as tuning

    checkpoint, calls = tmp_path / "seed4.pt", []

    def evaluate_then_die(*a):
        calls.append(1)
        if len(calls) == 4:  # step 0, 2, 4, then killed during the evaluation of step 6
            raise KeyboardInterrupt
        return evaluate(*a)

    monkeypatch.setattr(tuning, "evaluate", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        tune_prompt(lm, **args, checkpoint=checkpoint)
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=True)["step"] == 4

    resumed = tune_prompt(lm, **args, checkpoint=checkpoint)
    assert resumed.resumed_from == 4 and resumed.steps == 10
    assert torch.equal(resumed.last_prompt, uninterrupted.last_prompt)
    assert torch.equal(resumed.prompt, uninterrupted.prompt)
    assert resumed.curve["dev_accuracy"].tolist() == uninterrupted.curve["dev_accuracy"].tolist()
    assert resumed.curve["train_loss"].iloc[1:].tolist() == uninterrupted.curve["train_loss"].iloc[1:].tolist()

    # A checkpoint made with other settings is not reused.
    other = tune_prompt(lm, **{**args, "lr": 0.01}, checkpoint=checkpoint)
    assert other.resumed_from == 0


def test_random_label_words_are_frequent_whole_words_of_the_text_fixed_by_the_seed():
    from skill_neurons.label_words import draw_label_words
    from skill_neurons.vocabulary import frequent_words

    tokenizer = placeholder_first_tokenizer(["great", "film", "dull", "plot", "act", "story", "fine", "offic"])
    texts = ["Great film, dull plot!", "film story fine", "the film officially fine", "story unknownword"]
    # Counted in lower case; 'the', 'officially' and 'unknownword' are not one token here, and the vocabulary's
    # 'offic' is never a whole word of the text. Written with the space a verbalizer scores them after.
    assert frequent_words(tokenizer, texts) == [" film", " fine", " story", " dull", " great", " plot"]
    words = draw_label_words(tokenizer, texts, 3, seed=0, original=[" great", " dull"])
    assert len(set(words)) == 3 and words == draw_label_words(tokenizer, texts, 3, seed=0, original=[" great", " dull"])
    assert set(words) <= {" film", " fine", " story", " plot"}  # the task's own label words are never drawn
    assert any(draw_label_words(tokenizer, texts, 3, seed=s, original=[" great", " dull"]) != words for s in (1, 2))
    with pytest.raises(ValueError, match="only 6 one-token whole words in the text to draw 100 label words"):
        draw_label_words(tokenizer, texts, 100, seed=0)


def test_a_text_longer_than_the_models_positions_is_named_before_any_forward(llama_dir, tmp_path, caplog):
    long = frame(3, 0).assign(example=[10, 11, 12])
    long.loc[1, "sentence"] = " ".join(["good"] * 140)  # the tiny llama has 128 positions
    lm = prompted(llama_dir)
    with pytest.raises(ValueError, match=r"1 of 3 examples do not fit .*example 11: .*data.max_field_tokens"):
        lm.batches(long, ["sentence"], 4)
    cut = PromptedLM(lm.model, lm.tokenizer, TEMPLATE, [" negative", " positive"], 4, max_field_tokens=100)
    assert max(len(ids) for ids in cut.tokenize(long, ["sentence"])) <= lm.text_budget()
    mlm = prompted(save_tiny_model(tmp_path, "bert"), n_prompt=3)  # a masked LM cuts the text to fit, logged
    batch = mlm.batches(long, ["sentence"], 4)[-1]
    assert batch.input_ids.shape[1] <= mlm.model.config.max_position_embeddings
    assert "1 of 3 examples do not fit" in caplog.text and "cut to fit" in caplog.text
