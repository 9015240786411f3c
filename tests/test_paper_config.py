"""config/paper.yaml holds Wang et al.'s tasks (App. A) and a human-written hard prompt for each."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
DATA = (ROOT / PAPER["data_root"]).resolve()


def test_the_paper_tasks_are_binary_or_decomposed_into_binary_subtasks():
    tasks = PAPER["tasks"]
    assert set(tasks) == {"sst2", "imdb", "tweet", "mnli", "qnli", "ag_news", "dbpedia"}
    assert tasks["ag_news"]["labels"] == [2, 1] and "subtasks" not in tasks["ag_news"]  # Business vs Sports
    assert tasks["dbpedia"]["labels"] == [0, 3] and "subtasks" not in tasks["dbpedia"]  # Company vs Athlete
    for name in ("tweet", "mnli"):
        assert [s["name"] for s in tasks[name]["subtasks"]][1] == "neutral_vs_rest"
    for name, task in tasks.items():
        assert len(task["labels"]) == len(task["label_words"]), name
        assert len(task["labels"]) == 2 or task.get("subtasks"), name
        assert task["hard_prompt"].strip(), name


def most_mentioning(frame: pd.DataFrame, column: str, words: str) -> int:
    """The label whose examples mention `words` most often."""
    return int(frame[column].str.contains(words, case=False).groupby(frame.label).mean().idxmax())


@pytest.mark.skipif(not (DATA / "ag_news").exists(), reason="no offline mirror")
def test_the_binary_topic_labels_are_the_classes_app_a_names():
    ag_news = pd.read_parquet(DATA / "ag_news" / "test.parquet")
    business, sports = PAPER["tasks"]["ag_news"]["labels"]
    assert most_mentioning(ag_news, "text", "stock|profit|shares|market") == business
    assert most_mentioning(ag_news, "text", "medal|game|coach|season") == sports
    dbpedia = pd.read_parquet(DATA / "dbpedia_14" / "test.parquet")
    company, athlete = PAPER["tasks"]["dbpedia"]["labels"]
    assert most_mentioning(dbpedia, "content", "company|headquartered") == company
    assert most_mentioning(dbpedia, "content", "player|athlete|footballer") == athlete
