"""Validate a workflow config against its JSON schema, filling defaults, with errors that name the key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .data import DataError, Task
from .plan import expected_bytes


class ConfigError(ValueError):
    """A config that does not match the schema."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.name}: key {key!r} appears twice in one mapping, on lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}; YAML would keep the second silently"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def check_config_files(paths: list[str | Path]) -> None:
    """Refuse a config file with a repeated key, naming the file, the key and both lines."""
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            yaml.load(stream, Loader=_UniqueKeyLoader)


# YAML 1.1 reads 1e-3 (no dot) as a string: say how to write it when a number was expected.
SCIENTIFIC_WITHOUT_DOT = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")


def error_line(error: jsonschema.ValidationError) -> str:
    line = f"config key {key_path(error)}: {error.message}"
    if isinstance(error.instance, str) and SCIENTIFIC_WITHOUT_DOT.match(error.instance):
        mantissa, exponent = re.split("[eE]", error.instance)
        line += f" (YAML reads {error.instance} as text: write {mantissa}.0e{exponent})"
    return line


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Fill defaults into `config` in place and raise ConfigError naming every bad key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [error_line(e) for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    for name, task in config.get("tasks", {}).items():
        if len(task["labels"]) != len(task["label_words"]):
            raise ConfigError(
                f"config key tasks.{name}: {len(task['labels'])} labels but {len(task['label_words'])} label_words"
            )
        if len(task["labels"]) > 2 and not task.get("subtasks"):
            raise ConfigError(
                f"config key tasks.{name}.subtasks: a task with {len(task['labels'])} labels needs binary subtasks"
            )
    for section in SEED_SUBSET_SECTIONS:
        if unknown := sorted(set(config.get(section, {}).get("seeds") or []) - set(config.get("seeds", []))):
            raise ConfigError(f"config key {section}.seeds: {unknown} are not among the seeds {config['seeds']}")
    for section in ("pruning", "label_words"):
        seed = config.get(section, {}).get("seed")
        if seed is not None and seed not in config.get("seeds", []):
            raise ConfigError(f"config key {section}.seed: {seed} is not one of the seeds {config['seeds']}")
    for section in ("label_words", "pruning", "tuning_methods"):
        if unknown := sorted(set(config.get(section, {}).get("tasks") or []) - set(config.get("tasks", {}))):
            raise ConfigError(f"config key {section}.tasks: {unknown} are not among the tasks")
    results = str(config.get("results", "results")).strip()
    if not results or Path(results).resolve() == Path(Path(results).resolve().anchor):
        raise ConfigError(
            f"config key results: {config.get('results')!r} would put every output at the filesystem root"
        )
    check_tasks(config)
    check_aux_tasks(config)
    check_task_data_roots(config)
    check_model_paths(config)
    resolve_defaults(config)
    check_activation_budget(config)
    return config


def check_tasks(config: dict[str, Any]) -> None:
    """Build every task as its stages will (template fields, labels, label words, subtasks), before any job."""
    for name in config.get("tasks", {}):
        try:
            Task.from_config(config, name)
        except DataError as error:
            raise ConfigError(f"config key tasks.{name}: {error}") from error


def check_aux_tasks(config: dict[str, Any]) -> None:
    """Build every generation task (metrics, templates, choices) before any job; a config needs some task."""
    from .generation import GenerationTask, check_data_metrics

    aux_tasks = config.get("aux_metrics", {}).get("tasks", {})
    if not config.get("tasks") and not aux_tasks:
        raise ConfigError("config key tasks: no task, and no aux_metrics.tasks either: nothing to run")
    for name, entry in aux_tasks.items():
        try:
            task = GenerationTask.from_config(config, name)
            if config.get("data_root") and Path(config["data_root"]).is_dir():
                check_data_metrics(task, config["data_root"])
        except DataError as error:
            raise ConfigError(f"config key {error}") from error
        if entry["causal_metric"] >= len(entry["metrics"]):
            raise ConfigError(
                f"config key aux_metrics.tasks.{name}.causal_metric: {entry['causal_metric']} is not an index of"
                f" its {len(entry['metrics'])} metrics"
            )


def check_task_data_roots(config: dict[str, Any]) -> None:
    """A task's own data_root must exist: a typo would otherwise send the task to the hub (or fail offline)."""
    for name, task in config.get("tasks", {}).items():
        root = task.get("data_root")
        if root is not None and not Path(root).is_dir():
            raise ConfigError(f"config key tasks.{name}.data_root: no folder {root} (a task's own data must exist)")


def check_model_paths(config: dict[str, Any]) -> None:
    """A model `path` written as a local folder must exist (a hub id has no leading '/', './' or '../')."""
    for name, model in config.get("models", {}).items():
        path = model.get("path")
        if path and path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
            raise ConfigError(f"config key models.{name}.path: no folder {path} (a local model must exist)")


# Sections that run on a subset of the seeds (null: every seed).
SEED_SUBSET_SECTIONS = ("controls", "perturbation")


def ffn_neurons(model_config: dict[str, Any]) -> int | None:
    """A model's FFN neurons from its config.json: layers x FFN width (None for a layout not named here)."""
    layers = model_config.get("num_hidden_layers") or model_config.get("n_layer")
    width = model_config.get("intermediate_size") or model_config.get("ffn_dim") or model_config.get("n_inner")
    if width is None and model_config.get("n_embd"):
        width = 4 * model_config["n_embd"]  # GPT-2's default FFN width
    return layers * width if layers and width else None


def check_activation_budget(config: dict[str, Any]) -> None:
    """Each dump's size against activations.max_gb before any tuning, where the model's config.json is at hand
    (its prepared copy in the results, or a local `path`); with neither (a first run from a GGUF package or the
    hub) the dump checks it itself, after tuning."""
    data, dump = config.get("data", {}), config.get("activations", {})
    if not data.get("max_dev") or not data.get("max_test") or "max_gb" not in dump:
        return  # the split sizes are known only once the data is split
    for name, model in config.get("models", {}).items():
        candidates = [Path(config["results"]) / name / "model" / "config.json"]
        if model.get("path"):
            candidates.append(Path(model["path"]).expanduser() / "config.json")
        found = next((path for path in candidates if path.is_file()), None)
        neurons = ffn_neurons(yaml.safe_load(found.read_text())) if found else None
        if not neurons:
            continue
        n_examples = data["max_dev"] + data["max_test"]
        size = expected_bytes(n_examples, config["prompt"]["n_tokens"], [neurons], dump.get("dtype", "float16"))
        if size > dump["max_gb"] * 1e9:
            raise ConfigError(
                f"config key activations.max_gb: one dump of model {name!r} ({neurons:,} FFN neurons, {n_examples}"
                f" dev and test examples, {config['prompt']['n_tokens']} prompt tokens) takes {size / 1e9:.2f} GB,"
                f" over the {dump['max_gb']} GB allowed; raise it, or lower data.max_dev/max_test or prompt.n_tokens"
            )


def resolve_defaults(config: dict[str, Any]) -> None:
    """Defaults that depend on other keys, filled once: a section's seed is the first seed, its tasks all tasks."""
    for section in ("pruning", "label_words"):
        if section in config and config[section].get("seed") is None and config.get("seeds"):
            config[section]["seed"] = min(config["seeds"])
    for section in SEED_SUBSET_SECTIONS:
        if section in config and config[section].get("seeds") is None:
            config[section]["seeds"] = sorted(config.get("seeds", []))
    if "pruning" in config and config["pruning"].get("tasks") is None:
        config["pruning"]["tasks"] = sorted(config.get("tasks", {}))
