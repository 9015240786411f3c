"""The text store's life: encoded with its ticket, read by every prompt job, released, encoded again on demand."""

import threading
import time

import pandas as pd
import pytest
import torch

from skill_neurons.stages.text import encode_text, release_text, stored_text
from skill_neurons.text_cache import TextTicket, ensure_store, read_text_cache

from .conftest import TOY_TASK_PARAMS, fake_job, save_tiny_model, toy_reviews

PROMPTING = {"n_tokens": 3, "max_field_tokens": None, "precision": "fp32", "eval_batch_size": 4, "device": "cpu"}


def encode_job(tmp_path, architecture="llama"):
    """An encode_text job on a tiny model of `architecture` and 3 toy splits, and the store's path."""
    splits = {}
    for index, (split, size) in enumerate((("train", 10), ("dev", 6), ("test", 5))):
        splits[split] = str(tmp_path / f"{split}.parquet")
        toy_reviews(size, index).assign(example=range(size)).to_parquet(splits[split])
    store = tmp_path / "text" / "toy.safetensors"
    job = fake_job(
        input={**splits, "model": str(save_tiny_model(tmp_path / "m", architecture))},
        output=[str(tmp_path / "text" / "toy.json")],
        params={**TOY_TASK_PARAMS, **PROMPTING, "store": str(store)},
    )
    return job, store


@pytest.fixture
def encoded(tmp_path):
    """encode_text run on a tiny LLaMA: (job, the store's path)."""
    job, store = encode_job(tmp_path)
    encode_text(job)
    return job, store


def test_the_ticket_names_the_store_and_what_it_was_encoded_from(encoded):
    job, store = encoded
    ticket = TextTicket.read(job.output[0])
    assert ticket.store == str(store) and ticket.model == job.input.model
    assert ticket.splits == {s: job.input[s] for s in ("train", "dev", "test")}
    assert "store" not in ticket.params and ticket.params["template"] == TOY_TASK_PARAMS["template"]
    assert set(ticket.fingerprint) == {"model", "task", "data", "params"}
    stored = read_text_cache(store, ["train", "dev", "test"])
    assert [len(stored[s].examples) for s in ("train", "dev", "test")] == [10, 6, 5]


def test_a_released_store_is_encoded_again_with_the_same_states(encoded, tmp_path):
    job, store = encoded
    before = stored_text(job.output[0], ["dev"])["dev"]
    released = str(tmp_path / "released.json")
    release_text(fake_job(input={"ticket": job.output[0]}, output=[released], wildcards={"task": "toy"}))
    assert not store.exists()
    assert pd.read_json(tmp_path / "released.json", typ="series")["bytes_freed"] > 0
    again = stored_text(job.output[0], ["dev"])["dev"]  # what a reader after the release gets
    assert store.is_file()
    assert all(torch.equal(a, b) for a, b in zip(before.keys + before.values, again.keys + again.values))
    assert (again.examples == before.examples).all()


def test_changed_inputs_are_refused_instead_of_encoded_silently(encoded):
    job, store = encoded
    store.unlink()
    toy_reviews(6, 9).assign(example=range(6)).to_parquet(job.input.dev)  # the dev split rewritten since
    with pytest.raises(RuntimeError, match="changed since its ticket was written: rerun encode_text"):
        stored_text(job.output[0], ["dev"])
    assert not store.exists()


def test_two_readers_that_find_the_store_gone_encode_it_once(encoded):
    job, store = encoded
    store.unlink()
    encodings = []

    def encode(ticket: TextTicket) -> None:
        encodings.append(ticket.store)
        time.sleep(0.3)  # the second reader arrives while the first encodes
        store.write_bytes(b"stored")

    readers = [threading.Thread(target=ensure_store, args=(job.output[0], encode)) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert encodings == [str(store)] and store.read_bytes() == b"stored"


def test_no_ticket_or_a_masked_lm_means_no_stored_text(tmp_path):
    assert stored_text(None, ["test"]) == {"test": None}
    job, store = encode_job(tmp_path, "roberta")
    encode_text(job)
    assert TextTicket.read(job.output[0]).store is None
    assert [path.name for path in store.parent.iterdir()] == ["toy.json"]  # the ticket alone
    assert stored_text(job.output[0], ["train", "test"]) == {"train": None, "test": None}
