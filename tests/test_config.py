import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from skill_neurons.config import ConfigError, validate_config
from skill_neurons.data import Subtask, Task

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def default() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config/quick.yaml", "config/paper.yaml"])
def test_shipped_configs_are_valid(name):
    config = validate_config(yaml.safe_load((ROOT / name).read_text()), SCHEMA)
    assert config["prompt"]["patience"] == 6


def test_defaults_are_filled_in_nested_sections():
    config = default()
    del config["plots"]
    config["tasks"]["sst2"].pop("test_split")
    validate_config(config, SCHEMA)
    assert config["plots"]["bins"] == 30
    assert config["tasks"]["sst2"]["test_split"] == "validation"
    assert config["tasks"]["sst2"]["subtasks"] == []


def test_wrong_type_is_reported_with_its_key_path():
    config = default()
    config["prompt"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"config key prompt.lr: 'fast' is not of type 'number'"):
        validate_config(config, SCHEMA)


def test_unknown_key_is_reported_with_its_key_path():
    config = default()
    config["tasks"]["sst2"]["labl_words"] = ["a", "b"]
    with pytest.raises(ConfigError, match=r"config key tasks.sst2: .*'labl_words' was unexpected"):
        validate_config(config, SCHEMA)


def test_mismatched_label_words_and_missing_subtasks():
    config = default()
    bad = copy.deepcopy(config)
    bad["tasks"]["sst2"]["label_words"] = [" a"]
    with pytest.raises(ConfigError, match="tasks.sst2"):
        validate_config(bad, SCHEMA)
    config["tasks"]["sst2"]["labels"] = [0, 1, 2]
    config["tasks"]["sst2"]["label_words"] = [" a", " b", " c"]
    with pytest.raises(ConfigError, match="tasks.sst2.subtasks: a task with 3 labels needs binary subtasks"):
        validate_config(config, SCHEMA)


def test_a_model_needs_exactly_one_source():
    config = default()
    config["models"]["smollm2"]["path"] = "roberta-base"
    with pytest.raises(ConfigError, match="config key models.smollm2"):
        validate_config(config, SCHEMA)


def test_conda_environment_pins_match_the_package():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "skill_neurons.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))

    def pins(requirements):
        return {r.split("#")[0].replace(" ", "") for r in requirements if not r.startswith((".", "torch"))}

    assert pins(declared) == pins(pip)


def test_every_rule_that_runs_code_has_the_conda_environment():
    rules = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":")[0]
            rules[name] = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
    assert len(rules) >= 13
    missing = [name for name, match in rules.items() if match is None]
    assert missing == []
    assert {m.group(1) for m in rules.values()} == {"../../envs/skill_neurons.yaml"}


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("pruning", {"seed": 9}, "config key pruning.seed: 9 is not one of the seeds [0, 1, 2, 3, 4]"),
        ("controls", {"seeds": [0, 7]}, "config key controls.seeds: [7] are not among the seeds"),
        ("perturbation", {"seeds": [8, 0]}, "config key perturbation.seeds: [8] are not among the seeds"),
        ("label_words", {"tasks": ["sst2", "mnli"]}, "config key label_words.tasks: ['mnli'] are not among the tasks"),
        ("pruning", {"tasks": ["agnews"]}, "config key pruning.tasks: ['agnews'] are not among the tasks"),
        ("tuning_methods", {"tasks": ["mrpc"]}, "config key tuning_methods.tasks: ['mrpc'] are not among the tasks"),
    ],
)
def test_a_seed_or_task_that_the_config_does_not_have_is_named(section, value, message):
    config = default()
    config[section] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config, SCHEMA)


def test_an_activation_dump_over_its_budget_is_refused_before_any_tuning(tmp_path):
    model = tmp_path / "prepared" / "smollm2" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 30, "intermediate_size": 1536}))
    config = default()
    config["results"] = str(tmp_path / "prepared")
    validate_config(copy.deepcopy(config), SCHEMA)  # 360 examples x 10 x 46,080 neurons x 2 bytes: 0.33 GB
    config["activations"]["max_gb"] = 0.3
    message = "config key activations.max_gb: one dump of model 'smollm2' (46,080 FFN neurons, 360 dev and test"
    with pytest.raises(ConfigError, match=re.escape(message) + r".* takes 0.33 GB, over the 0.3 GB allowed"):
        validate_config(copy.deepcopy(config), SCHEMA)
    config["results"] = str(tmp_path / "fresh")  # nothing prepared yet and a packaged model: the dump checks it
    validate_config(copy.deepcopy(config), SCHEMA)


def test_string_labels_and_subtasks_reach_the_task_and_two_types_are_refused_with_the_key():
    config = default()
    config["tasks"]["sst2"] |= {
        "labels": ["contradiction", "neutral", "entailment"],
        "label_words": [" no", " maybe", " yes"],
        "subtasks": [{"name": "polar", "positive": ["entailment"], "negative": ["contradiction"]}],
    }
    sst2 = Task.from_config(validate_config(copy.deepcopy(config), SCHEMA), "sst2")
    assert sst2.labels == ("contradiction", "neutral", "entailment")
    assert sst2.subtasks == (Subtask("polar", ("entailment",), ("contradiction",)),)
    config["tasks"]["sst2"]["labels"] = ["contradiction", 1, "entailment"]
    message = "config key tasks.sst2: task 'sst2': tasks.sst2.labels ['contradiction', 1, 'entailment'] must be all"
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config, SCHEMA)


def test_a_task_data_root_that_does_not_exist_is_named_with_its_key(tmp_path):
    config = default()
    config["tasks"]["imdb"]["data_root"] = str(tmp_path / "my_data")
    with pytest.raises(ConfigError, match=re.escape(f"config key tasks.imdb.data_root: no folder {tmp_path}/my_data")):
        validate_config(copy.deepcopy(config), SCHEMA)
    (tmp_path / "my_data").mkdir()
    validated = validate_config(config, SCHEMA)
    assert validated["tasks"]["imdb"]["data_root"] == str(tmp_path / "my_data")
    assert validated["tasks"]["sst2"]["data_root"] is None
