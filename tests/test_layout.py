"""The project's shape: one name from rule to script to stage function, no import cycles, docs that match."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

from skill_neurons.config_docs import config_reference

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skill_neurons"
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))


def rules() -> list[tuple[str, str, str]]:
    """(rules file, rule, its body) of every rule in workflow/rules."""
    return [
        (path.stem, match.group(1), match.group(2))
        for path in RULES
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text(), flags=re.M | re.S)
    ]


def rules_with_scripts() -> list[tuple[str, str, str]]:
    """(rules file, rule, script) of every rule that runs a script."""
    found = []
    for rules_file, rule, body in rules():
        script = re.search(r'script:\n\s+"\.\./scripts/(\w+)\.py"', body)
        if script:
            found.append((rules_file, rule, script.group(1)))
    return found


def test_every_rule_has_a_script_of_its_name_that_calls_the_stage_function_of_its_name():
    found = rules_with_scripts()
    assert len(found) >= 30
    scripts = {p.stem for p in (ROOT / "workflow" / "scripts").glob("*.py")}
    assert scripts == {rule for _, rule, _ in found}, "a script without a rule, or a rule without a script"
    for rules_file, rule, script in found:
        assert script == rule
        expected = f"from skill_neurons.stages.{rules_file} import {rule}\n\n{rule}(snakemake)  # noqa: F821\n"
        assert (ROOT / "workflow" / "scripts" / f"{script}.py").read_text() == expected, rule
        module = importlib.import_module(f"skill_neurons.stages.{rules_file}")
        assert callable(getattr(module, rule)), f"skill_neurons.stages.{rules_file}.{rule}"


def test_every_rules_file_has_its_stages_module_and_every_rule_a_log():
    stage_modules = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__", "common"}
    assert stage_modules == {p.stem for p in RULES} - {"common"}
    for _, rule, body in rules():
        if rule != "all":
            assert "    log:" in body, f"rule {rule} has no log"


def test_every_rules_benchmark_file_mirrors_its_log_where_job_minutes_reads_cpu_and_threads():
    checked = 0
    for _, rule, body in rules():
        log = re.search(r"    log:\n\s+(.*),\n", body)
        benchmark = re.search(r"    benchmark:\n\s+(.*)\n", body)
        if benchmark:
            mirrored = log.group(1).replace("logs/", "benchmarks/", 1).replace(".log", ".tsv")
            assert benchmark.group(1) == mirrored, rule
            checked += 1
    assert checked >= 50


def module_imports(path: Path) -> set[str]:
    """The package modules that a module imports at its top level (not inside functions or TYPE_CHECKING)."""
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("skill_neurons"):
                found.add(target)
                found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def test_no_import_cycles_among_the_library_modules():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in module_imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in graph[name]:
            assert state.get(other) != 1, "import cycle: " + " -> ".join([*trail, name, other])
            if other not in state:
                visit(other, [*trail, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
    )
    code = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_what_the_snakefile_imports_loads_no_torch():
    """Every snakemake call (a dry run, a run's scheduler, a cluster submission) imports these: torch and
    transformers would add about 3 s to each."""
    sources = [ROOT / "Snakefile", *RULES]
    imported = sorted(
        {m for p in sources for m in re.findall(r"^from (skill_neurons[\w.]*) import", p.read_text(), re.M)}
    )
    assert {"skill_neurons.config", "skill_neurons.plan"} <= set(imported)
    heavy = ("torch", "transformers", "safetensors.torch", "scipy")
    code = f"import importlib, sys\nfor name in {imported!r}:\n    importlib.import_module(name)\n"
    code += f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"the Snakefile's imports load {result.stdout.strip()}"


def test_the_config_reference_is_made_from_the_schema():
    assert (ROOT / "config" / "README.md").read_text() == config_reference(), "run `make config-docs`"
    assert "| `perturbation.sigma` | number | `0.1` | std of the Gaussian noise |" in config_reference()
