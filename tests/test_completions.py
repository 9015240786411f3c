import numpy as np
import pytest
import torch

from skill_neurons import completions
from skill_neurons.completions import (
    capture_completions,
    choice_scores,
    collate_completions,
    completion_batches,
    completion_loss,
    completion_probability,
    multiple_choice_accuracy,
    predicted_choices,
    tokenize_completions,
    tokenize_instructions,
)
from skill_neurons.models import load_model
from skill_neurons.neurons import on_neurons
from skill_neurons.prompting import PromptedLM
from skill_neurons.tuning import init_prompt

from .conftest import save_tiny_model

# Two examples of different instruction and completion lengths: one batch has padding on both sides.
INSTRUCTIONS = ["Review : the film was good Sentiment :", "Review : dull"]
COMPLETIONS = ["positive", "the plot was boring and bad"]
N_PROMPT = 3


def completion_lm(model, tokenizer, n_prompt=N_PROMPT) -> PromptedLM:
    """A generation task's LM: no template fields and no label words."""
    return PromptedLM(model, tokenizer, "{instruction}", (), n_prompt)


@pytest.fixture(scope="module")
def lm(llama_dir) -> PromptedLM:
    return completion_lm(*load_model(llama_dir))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def any_lm(request, tmp_path_factory) -> PromptedLM:
    """RoPE (llama) and learned absolute positions (gpt2): only the latter sees a shift of every position."""
    return completion_lm(*load_model(save_tiny_model(tmp_path_factory.mktemp(request.param), request.param)))


def prompt_for(lm: PromptedLM, seed: int = 3) -> torch.Tensor:
    return init_prompt(lm, "normal", 0.5, seed=seed)


def batch_of(lm, instructions, completions_, examples=None):
    return collate_completions(
        lm, tokenize_instructions(lm, instructions), tokenize_completions(lm, completions_), examples
    )


def hand_log_probs(lm, prompt, instruction, completion) -> torch.Tensor:
    """(n,) log p of each completion token: one unpadded forward on [instruction, prompt, completion] vectors."""
    before = torch.tensor(lm.tokenizer(instruction).input_ids)
    after = torch.tensor(lm.tokenizer(completion, add_special_tokens=False).input_ids)
    embed = lm.model.get_input_embeddings()
    vectors = torch.cat([embed(before), prompt, embed(after)])
    log_probs = torch.log_softmax(lm.model(inputs_embeds=vectors[None]).logits[0].float(), -1)
    # The column before completion token j predicts it.
    predicting = len(before) + lm.n_prompt - 1 + torch.arange(len(after))
    return log_probs[predicting, after]


def test_the_batch_puts_the_prompt_in_the_same_columns_with_padding_on_both_sides(lm):
    batch = batch_of(lm, INSTRUCTIONS, COMPLETIONS)
    n_before = [len(ids) for ids in tokenize_instructions(lm, INSTRUCTIONS)]
    assert n_before == [8, 3] and batch.prompt_start == 8
    assert batch.input_ids.shape == (2, 8 + N_PROMPT + 6)
    # Row 1 is padded on the left (5 columns), row 0 on the right (5 columns after its one-token completion).
    assert batch.attention_mask.tolist() == [[1] * 12 + [0] * 5, [0] * 5 + [1] * 12]
    assert batch.position_ids[0, :12].tolist() == list(range(12))
    assert batch.position_ids[1, 5:].tolist() == list(range(12))
    assert (batch.input_ids[:, 8:11] == lm.pad_id).all()
    assert batch.n_completion_tokens.tolist() == [1, 6]
    assert batch.instruction_mask.sum(1).tolist() == [8, 3]


def test_completion_loss_is_the_mean_nll_of_the_completion_tokens_and_padding_changes_nothing(any_lm):
    lm = any_lm
    prompt = prompt_for(lm)
    with torch.no_grad():
        by_hand = torch.stack([-hand_log_probs(lm, prompt, i, c).mean() for i, c in zip(INSTRUCTIONS, COMPLETIONS)])
        batched = completion_loss(lm, prompt, batch_of(lm, INSTRUCTIONS, COMPLETIONS))
        alone = torch.cat(
            [completion_loss(lm, prompt, batch_of(lm, [i], [c])) for i, c in zip(INSTRUCTIONS, COMPLETIONS)]
        )
    assert batched.shape == (2,)
    torch.testing.assert_close(batched, by_hand)
    torch.testing.assert_close(batched, alone)
    # Another prompt gives another loss: the prompt is in the forward.
    with torch.no_grad():
        assert not torch.allclose(
            completion_loss(lm, prompt_for(lm, 4), batch_of(lm, INSTRUCTIONS, COMPLETIONS)), batched
        )


def test_the_gradient_reaches_every_prompt_vector_and_no_model_weight(lm):
    assert not any(p.requires_grad for p in lm.model.parameters())
    prompt = prompt_for(lm).requires_grad_(True)
    completion_loss(lm, prompt, batch_of(lm, INSTRUCTIONS, COMPLETIONS)).mean().backward()
    reference = prompt.detach().clone().requires_grad_(True)
    torch.stack(
        [-hand_log_probs(lm, reference, i, c).mean() for i, c in zip(INSTRUCTIONS, COMPLETIONS)]
    ).mean().backward()
    assert (prompt.grad.abs().sum(1) > 0).all()
    torch.testing.assert_close(prompt.grad, reference.grad)
    assert all(p.grad is None for p in lm.model.parameters())


def test_confidence_is_the_probability_of_the_whole_gold_completion(lm):
    prompt = prompt_for(lm)
    batch = batch_of(lm, INSTRUCTIONS, COMPLETIONS)
    with torch.no_grad():
        captured = capture_completions(lm, prompt, batch)
        product = torch.stack(
            [hand_log_probs(lm, prompt, i, c).double().sum().exp() for i, c in zip(INSTRUCTIONS, COMPLETIONS)]
        )
    torch.testing.assert_close(captured.confidence, product)
    torch.testing.assert_close(captured.confidence, torch.exp(-batch.n_completion_tokens * captured.loss.double()))
    # With six tokens, exp(-loss) alone (the mean per token) is not the completion's probability.
    assert not torch.isclose(torch.exp(-captured.loss[1].double()), product[1])
    torch.testing.assert_close(
        completion_probability(torch.tensor([0.5]), torch.tensor([4])),
        torch.exp(torch.tensor([-2.0], dtype=torch.float64)),
    )


def hand_prompt_activations(lm, prompt, instruction, completion) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer (l, D) at the prompt positions and (D,) mean over the instruction, from one unpadded forward."""
    before = torch.tensor(lm.tokenizer(instruction).input_ids)
    after = torch.tensor(lm.tokenizer(completion, add_special_tokens=False).input_ids)
    embed = lm.model.get_input_embeddings()
    seen = {}
    with on_neurons(lm.projections, lambda layer, a: seen.__setitem__(layer, a[0])):
        lm.model(inputs_embeds=torch.cat([embed(before), prompt, embed(after)])[None])
    n = len(before)
    return [seen[k][n : n + lm.n_prompt] for k in sorted(seen)], [seen[k][:n].mean(0) for k in sorted(seen)]


def test_captured_prompt_activations_are_those_of_an_unbatched_run(lm):
    prompt = prompt_for(lm)
    batch = batch_of(lm, INSTRUCTIONS, COMPLETIONS)
    with torch.no_grad():
        captured = capture_completions(lm, prompt, batch)
        loss = completion_loss(lm, prompt, batch)
        alone = [hand_prompt_activations(lm, prompt, i, c) for i, c in zip(INSTRUCTIONS, COMPLETIONS)]
    assert len(captured.prompt) == 3
    torch.testing.assert_close(captured.loss, loss)
    for layer, activations in enumerate(captured.prompt):
        assert activations.shape == (2, N_PROMPT, 48)
        for row, (at_prompt, instruction_mean) in enumerate(alone):
            torch.testing.assert_close(activations[row], at_prompt[layer])
            torch.testing.assert_close(captured.input_avg[layer][row], instruction_mean[layer])


def test_choice_scores_are_length_normalised_and_decide_the_prediction(lm, monkeypatch):
    """The per-token NLLs are set by hand: one NLL per token id."""
    nll = {"good": 1.0, "bad": 0.5, "awful": 0.5, "poor": 0.5, "fine": 2.0, "dull": 0.1, "boring": 3.0}
    nll |= {"lovely": 0.2, "superb": 0.3}
    table = torch.full((len(lm.tokenizer),), 9.0)
    for word, value in nll.items():
        table[lm.tokenizer.convert_tokens_to_ids(word)] = value

    def fixed_nll(_lm, _prompt, batch):
        return table[batch.completion_ids.cpu()].masked_fill(~batch.completion_mask.cpu(), 0.0)

    monkeypatch.setattr(completions, "completion_token_nll", fixed_nll)
    choices = [["good", "bad awful poor"], ["fine", "dull", "boring"], ["lovely", "superb"]]
    gold = [[0, 1], [0, 1, 0], [0, 1]]
    scores = choice_scores(lm, prompt_for(lm), ["Review : a", "Review : the film", "it"], choices, batch_size=2)
    # Summed, 'good' (1.0) beats 'bad awful poor' (1.5); per token, 0.5 beats 1.0.
    np.testing.assert_allclose(scores[0], [-1.0, -0.5])
    np.testing.assert_allclose(scores[1], [-2.0, -0.1, -3.0])
    np.testing.assert_allclose(scores[2], [-0.2, -0.3])
    assert predicted_choices(scores).tolist() == [1, 1, 0]
    assert multiple_choice_accuracy(scores, gold) == pytest.approx(2 / 3)


def test_choice_scores_of_a_batch_are_each_choice_scored_alone(lm):
    prompt = prompt_for(lm)
    instructions = ["Review : the film was good", "Review : dull", "it was"]
    choices = [["good", "bad awful poor"], ["fine", "the plot was boring", "dull"], ["a"]]
    scores = choice_scores(lm, prompt, instructions, choices, batch_size=2)
    with torch.no_grad():
        for instruction, options, got in zip(instructions, choices, scores):
            alone = [-completion_loss(lm, prompt, batch_of(lm, [instruction], [c])).item() for c in options]
            np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-6)


def test_split_batches_cover_every_example_once_with_its_own_loss(lm):
    prompt = prompt_for(lm)
    instructions = [*INSTRUCTIONS, "it was", "Review : the scene"]
    completions_ = [*COMPLETIONS, "fine", "a lovely film"]
    batches = completion_batches(lm, instructions, completions_, [10, 11, 12, 13], batch_size=3)
    assert [len(b.examples) for b in batches] == [2, 2]
    with torch.no_grad():
        losses = {int(e): float(v) for b in batches for e, v in zip(b.examples, completion_loss(lm, prompt, b))}
        for example, instruction, completion in zip([10, 11, 12, 13], instructions, completions_):
            alone = completion_loss(lm, prompt, batch_of(lm, [instruction], [completion]))
            assert losses[example] == pytest.approx(alone.item(), rel=1e-5)


def test_gemma_text_goes_through_its_scaled_embedding(tmp_path):
    """Tokens fed as ids and the same tokens fed as prompt vectors give one loss: text and prompt share a scale."""
    model, tokenizer = load_model(save_tiny_model(tmp_path, "gemma3"))
    lm = completion_lm(model, tokenizer, n_prompt=4)
    prompt_tokens = tokenizer("the plot was dull", add_special_tokens=False).input_ids
    prompt = lm.embed(prompt_tokens)
    weight_rows = model.get_input_embeddings().weight[prompt_tokens]
    assert not torch.allclose(prompt, weight_rows)  # the scale is there to be respected
    with torch.no_grad():
        loss = completion_loss(lm, prompt, batch_of(lm, INSTRUCTIONS, COMPLETIONS))
        from_ids = []
        for instruction, completion in zip(INSTRUCTIONS, COMPLETIONS):
            before = tokenizer(instruction).input_ids
            after = tokenizer(completion, add_special_tokens=False).input_ids
            logits = model(input_ids=torch.tensor([before + prompt_tokens + after])).logits[0].float()
            predicting = len(before) + len(prompt_tokens) - 1 + torch.arange(len(after))
            from_ids.append(-torch.log_softmax(logits, -1)[predicting, after].mean())
    torch.testing.assert_close(loss, torch.stack(from_ids))


def test_an_empty_completion_an_mlm_and_an_input_too_long_are_refused(lm, tmp_path):
    with pytest.raises(ValueError, match="completion '' has no tokens"):
        tokenize_completions(lm, ["good", ""])
    bert = completion_lm(*load_model(save_tiny_model(tmp_path, "bert")))
    with pytest.raises(ValueError, match="need a causal LM"):
        collate_completions(bert, [[5, 7]], [[8]])
    too_long = [[7] * 120]
    with pytest.raises(ValueError, match=r"1 of 2 examples do not fit .* 126 tokens, at most 125"):
        collate_completions(lm, [[7], too_long[0]], [[8], [8] * 6])


def test_bf16_autocast_gives_an_fp32_loss_near_the_fp32_one(lm):
    bf16 = PromptedLM(lm.model, lm.tokenizer, "{instruction}", (), N_PROMPT, precision="bf16")
    prompt = prompt_for(lm)
    batch = batch_of(lm, INSTRUCTIONS, COMPLETIONS)
    with torch.no_grad():
        low, full = completion_loss(bf16, prompt, batch), completion_loss(lm, prompt, batch)
    assert low.dtype == torch.float32 and not torch.equal(low, full)  # autocast did run
    torch.testing.assert_close(low, full, rtol=0.05, atol=0.05)
