"""The config reference as Markdown, made from the schema's descriptions so that the two cannot drift.

python -m skill_neurons.config_docs > config/README.md
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

HEADER = """# Config reference

Made from `workflow/schemas/config.schema.yaml` by `make config-docs`; a test fails when the two differ.
`config.yaml` is the embedded default (runs offline on a 2-core CPU); `config/quick.yaml` is a shorter run;
`config/paper.yaml` is the papers' setting. Pass another with `snakemake --configfile FILE`, or change
single keys with `--config key=value`. `<name>` stands for a key of your choosing.

| key | type | default | meaning |
|---|---|---|---|
"""


def type_of(node: dict[str, Any]) -> str:
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(k for k in kinds if k)
    if "enum" in node:
        text = " / ".join(f"`{v}`" for v in node["enum"])
    return text


def rows(node: dict[str, Any], path: str) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) of every documented leaf and section under `node`."""
    for name, child in node.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        yield key, type_of(child), default, child.get("description", "")
        yield from rows(child, key)
        if isinstance(child.get("additionalProperties"), dict):
            yield from rows(child["additionalProperties"], f"{key}.<name>")
        if isinstance(child.get("items"), dict) and "properties" in child["items"]:
            yield from rows(child["items"], f"{key}[]")


def config_reference(schema_path: Path = SCHEMA) -> str:
    schema = yaml.safe_load(schema_path.read_text())
    lines = [f"| `{key}` | {kind} | {default} | {text} |" for key, kind, default, text in rows(schema, "")]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
