"""score_run on a hand-made activation folder: the test accuracy is read with dev's position and direction."""

import numpy as np
import pytest

from skill_neurons.data import Task
from skill_neurons.scores import score_run

from .conftest import write_activation_run

TASK = Task(
    name="toy",
    dataset="toy",
    text_fields=("sentence",),
    template="{sentence}",
    labels=(0, 1),
    label_words=("negative", "positive"),
)
N_DEV, N_TEST, N_NOISE = 200, 200, 500
PLANTED, FLIPPED = 0, 1  # then N_NOISE neurons of pure noise


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """Two prompt positions, baseline 0 everywhere.

    Neuron 0 equals the label (+-1) at position 1 on dev and test. Neuron 1 is the opposite of the label at
    position 0 on dev and equals it on test: dev picks the reversed direction, which is wrong on test.
    The other 500 neurons are N(0, 1) noise at both positions, independent of the labels.
    """
    run = tmp_path_factory.mktemp("scores") / "run"
    rng = np.random.default_rng(20240514)
    width = 2 + N_NOISE
    splits = {}
    for split, n in (("dev", N_DEV), ("test", N_TEST)):
        labels = rng.integers(0, 2, n)
        sign = 2.0 * labels - 1
        prompt = rng.standard_normal((n, 2, width)).astype(np.float32)
        prompt[:, 1, PLANTED] = sign
        prompt[:, 0, FLIPPED] = -sign if split == "dev" else sign
        splits[split] = (prompt, labels, labels)
    return score_run(write_activation_run(run, splits), TASK).set_index("neuron")


def test_a_planted_neuron_scores_100_on_test_at_its_dev_position(scores):
    assert scores.loc[PLANTED, "position"] == 1
    assert scores.loc[PLANTED, "predictivity"] == 1.0
    assert scores.loc[PLANTED, "test_predictivity"] == 1.0


def test_a_neuron_reversed_between_dev_and_test_scores_below_half(scores):
    # dev: accuracy 0 at position 0, so predictivity 1 with the reversed direction; test read that way: 0
    assert scores.loc[FLIPPED, "position"] == 0 and scores.loc[FLIPPED, "predictivity"] == 1.0
    assert scores.loc[FLIPPED, "test_predictivity"] == 0.0


def test_noise_neurons_average_half_on_test_within_their_binomial_error(scores):
    noise = scores.loc[2:, "test_predictivity"].to_numpy()
    assert len(noise) == N_NOISE
    # each is an independent Binomial(200, 1/2) / 200 whatever dev chose: sd of the mean sqrt(0.25 / (200 * 500))
    standard_error = np.sqrt(0.25 / (N_TEST * N_NOISE))
    assert abs(noise.mean() - 0.5) < 3 * standard_error + 1e-3
    # max(acc, 1 - acc) on test would be 0.5 + E|Bin - 100| / 200, about 0.528: far outside that band
    assert np.maximum(noise, 1 - noise).mean() > 0.52
    assert (noise < 0.5).sum() > N_NOISE / 4  # below-chance test accuracies are kept, not folded up
