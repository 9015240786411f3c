"""One function per workflow stage: plain arguments in, files out. The Snakemake scripts only call these."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import activations as act
from .data import SPLITS, Subtask, Task, make_splits
from .io import atomic_path, read_json, read_tensors, write_json, write_parquet, write_tensors
from .ranking import merge_seeds
from .scores import METRICS, score_run, top_neuron_accuracy

if TYPE_CHECKING:
    from .prompting import PromptedLM

log = logging.getLogger("skill_neurons")

# The model stages import transformers inside their functions: it costs ~7 s a job, which the
# scoring, ranking and plotting jobs need not pay.


def setup_logging(path: str | Path | None) -> None:
    """Log to the rule's log file (and stderr), so a failed job explains itself."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


TASK_FIELDS = ("name", "dataset", "subset", "train_split", "test_split", "fallback_train_split", "label_column",
               "text_fields", "template", "labels", "label_words")


def task_from_params(params) -> Task:
    """The Task of a rule whose params hold the per-task config leaves (TASK_PARAMS in common.smk)."""
    fields = {key: params[key] for key in TASK_FIELDS}
    for key in ("text_fields", "labels", "label_words"):
        fields[key] = tuple(fields[key])
    subtasks = zip(params["subtask_names"], params["subtask_positive"], params["subtask_negative"])
    return Task(**fields, subtasks=tuple(Subtask(name, tuple(pos), tuple(neg)) for name, pos, neg in subtasks))


def split_data(task: Task, data_root: str | None, outputs: dict[str, str], dev_fraction: float, seed: int,
               max_train: int | None, max_dev: int | None, max_test: int | None) -> None:
    splits = make_splits(task, data_root, dev_fraction, seed, max_train, max_dev, max_test)
    for name in SPLITS:
        log.info("task %s: %s has %d examples, labels %s", task.name, name, len(splits[name]),
                 splits[name]["label"].value_counts().sort_index().to_dict())
        write_parquet(splits[name], outputs[name])


def read_splits(splits: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The train, dev and test frames of a task from their Parquet files."""
    return {name: pd.read_parquet(splits[name]) for name in SPLITS}


def convert_model(out_dir: str, path: str | None, gguf_package: str | None) -> None:
    from .models import prepare_model

    started = time.perf_counter()
    prepare_model(out_dir, path=path, gguf_package=gguf_package)
    log.info("model saved to %s in %.1f s", out_dir, time.perf_counter() - started)


def prompted_lm(model_dir: str, task: Task, n_prompt: int, max_field_tokens: int | None, precision: str,
              device: str, threads: int) -> PromptedLM:
    from .devices import pick_device
    from .models import load_model, set_threads
    from .prompting import PromptedLM

    set_threads(threads)
    model, tokenizer = load_model(model_dir, pick_device(device))
    lm = PromptedLM(model, tokenizer, task.template, task.label_words, n_prompt, max_field_tokens, precision)
    log.info("model %s (%s) on %s, autocast %s", model_dir, lm.kind, lm.device, lm.autocast)
    return lm


def encode(model_dir: str, task: Task, splits: dict[str, str], output: str, n_prompt: int,
           max_field_tokens: int | None, precision: str, device: str, threads: int, batch_size: int) -> None:
    """Every split's text states under the frozen model, for all the prompts of the task (text_cache.py)."""
    from .text_cache import encode_split, write_text_cache

    frames = read_splits(splits)
    lm = prompted_lm(model_dir, task, n_prompt, max_field_tokens, precision, device, threads)
    if lm.kind != "causal":
        log.info("a %s model reads the prompt inside the text: no text states to share", lm.kind)
        write_text_cache(None, output)
        return
    started = time.perf_counter()
    write_text_cache({name: encode_split(lm, frames[name], task.text_fields, batch_size) for name in SPLITS},
                     output)
    log.info("text of %d examples encoded in %.0f s, %.2f GB", sum(len(f) for f in frames.values()),
             time.perf_counter() - started, Path(output).stat().st_size / 1e9)


def text_states(text_file: str | None, splits: Sequence[str]) -> dict:
    """The stored text of `splits`, or a dict of None where there is none: the stages then run the text."""
    from .text_cache import read_text_cache

    stored = read_text_cache(text_file, splits) if text_file else None
    return stored if stored is not None else dict.fromkeys(splits)


def with_text(batches: list, stored) -> Iterable:
    """The batches with their stored text attached one at a time, or as they are without a store."""
    return batches if stored is None else stored.attached(batches)


def tune(model_dir: str, task: Task, splits: dict[str, str], outputs: dict[str, str], seed: int,
         n_prompt: int, init: str, init_std: float, lr: float, weight_decay: float, batch_size: int,
         max_steps: int, eval_every: int, patience: int, eval_batch_size: int, max_field_tokens: int | None,
         precision: str, device: str, threads: int, checkpoint: str | None = None,
         text_file: str | None = None) -> None:
    from .prompting import evaluate, tune_prompt

    frames = read_splits(splits)
    lm = prompted_lm(model_dir, task, n_prompt, max_field_tokens, precision, device, threads)
    text = text_states(text_file, SPLITS)
    dev = lm.batches(frames["dev"], task.text_fields, eval_batch_size)
    dev = lm.keep_text_cache(dev) if text["dev"] is None else [text["dev"].attach(b) for b in dev]
    started = time.perf_counter()
    result = tune_prompt(lm, frames["train"], dev, task.text_fields, seed=seed, lr=lr, batch_size=batch_size,
                         max_steps=max_steps, eval_every=eval_every, patience=patience, init=init,
                         init_std=init_std, weight_decay=weight_decay, checkpoint=checkpoint,
                         train_text=text["train"])
    seconds = time.perf_counter() - started
    test = with_text(lm.batches(frames["test"], task.text_fields, eval_batch_size), text["test"])
    test_accuracy = evaluate(lm, result.prompt.to(lm.device), test)
    log.info("seed %d: dev %.4f (step %d), test %.4f, %.0f s", seed, result.dev_accuracy, result.best_step,
             test_accuracy, seconds)
    write_tensors({"prompt": result.prompt}, outputs["prompt"])
    write_parquet(result.curve, outputs["curve"])
    write_json({"seed": seed, "dev_accuracy": result.dev_accuracy, "test_accuracy": test_accuracy,
                "best_step": result.best_step, "steps": result.steps, "train_seconds": seconds,
                "autocast": str(lm.autocast), "resumed_from_step": result.resumed_from}, outputs["metrics"])
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)  # the outputs now hold everything it had


def dump(model_dir: str, task: Task, splits: dict[str, str], prompt_file: str, out_dir: str, n_prompt: int | None,
         max_field_tokens: int | None, precision: str, device: str, threads: int, batch_size: int,
         dtype: str, max_gb: float, text_file: str | None = None) -> None:
    """Activations through the prompt of `prompt_file`; n_prompt None: its length (a hard prompt's tokens)."""
    from .models import ffn_width

    frames = read_splits(splits)
    prompt = read_tensors(prompt_file)["prompt"]
    n_prompt = len(prompt) if n_prompt is None else n_prompt
    lm = prompted_lm(model_dir, task, n_prompt, max_field_tokens, precision, device, threads)
    widths = [ffn_width(p) for p in lm.projections]
    expected = act.check_budget(len(frames["dev"]) + len(frames["test"]), n_prompt, widths, dtype, max_gb)
    started = time.perf_counter()
    text = text_states(text_file, SPLITS)
    batches = {s: with_text(lm.batches(frames[s], task.text_fields, batch_size), text[s]) for s in SPLITS}
    meta = act.dump_activations(lm, prompt, batches["train"], {s: batches[s] for s in ("dev", "test")}, out_dir,
                                dtype)
    log.info("activations: expected %.3f GB uncompressed, %.3f GB on disk, %.0f s", expected / 1e9,
             meta["bytes_on_disk"] / 1e9, time.perf_counter() - started)


def score(run_dir: str, task: Task, output: str) -> None:
    scores = score_run(run_dir, task)
    write_parquet(scores, output)
    best = scores.sort_values("predictivity", ascending=False).iloc[0]
    log.info("top neuron layer %d #%d: dev %.4f, test %.4f", best["layer"], best["neuron"], best["predictivity"],
             best["test_predictivity"])


def rank(task: Task, seeds: Sequence[int], score_files: Sequence[str], run_dirs: Sequence[str],
         metric_files: Sequence[str], outputs: dict[str, str]) -> None:
    """Merge seeds into the predictivity, correlation and selectivity rankings and a Table-1 row."""
    per_seed = [pd.read_parquet(f).assign(seed=s) for s, f in zip(seeds, score_files)]
    scores = pd.concat(per_seed, ignore_index=True)
    names = [s.name for s in task.binary_subtasks()]
    ranking = merge_seeds(scores, "predictivity", names)
    keys = ["subtask", "layer", "neuron"]
    test = scores.groupby(keys)["test_predictivity"].mean()
    ranking["test_predictivity_mean"] = test.loc[pd.MultiIndex.from_frame(ranking[keys])].to_numpy()
    write_parquet(ranking, outputs["ranking"])
    correlation = []
    for metric in METRICS:
        table = merge_seeds(scores, f"corr_{metric}", names).assign(metric=metric)
        correlation.append(table)
    write_parquet(pd.concat(correlation, ignore_index=True), outputs["correlation"])
    write_parquet(merge_seeds(scores, "selectivity", names), outputs["selectivity"])
    prompt_accuracy = pd.Series([read_json(f)["test_accuracy"] for f in metric_files])
    neuron_accuracy = pd.Series([top_neuron_accuracy(d, task, ranking, s) for d, s in zip(run_dirs, per_seed)])
    top = ranking.iloc[0]
    summary = {
        "task": task.name,
        "seeds": list(seeds),
        "prompt_test_accuracy_mean": float(prompt_accuracy.mean()),
        "prompt_test_accuracy_std": float(prompt_accuracy.std(ddof=1)) if len(seeds) > 1 else 0.0,
        "top1_neuron_test_accuracy_mean": float(neuron_accuracy.mean()),
        "top1_neuron_test_accuracy_std": float(neuron_accuracy.std(ddof=1)) if len(seeds) > 1 else 0.0,
        "top1_layer": int(top["layer"]),
        "top1_neuron": int(top["neuron"]),
        "top1_dev_predictivity": float(top["mean"]),
        "n_neurons": int(len(ranking)),
        "per_seed_prompt_accuracy": prompt_accuracy.tolist(),
        "per_seed_top1_accuracy": neuron_accuracy.tolist(),
    }
    log.info("%s", summary)
    write_json(summary, outputs["summary"])


def perturbation_sweep(model_dir: str, task: Task, test_split: str, prompt_file: str, run_dir: str,
                       ranking_files: dict[str, str], output: str, seed: int, n_prompt: int,
                       max_field_tokens: int | None, precision: str, device: str, threads: int, batch_size: int,
                       rates: Sequence[float], modes: Sequence[str], sigma: float, max_examples: int | None,
                       positions: str = "prompt", selectivity_file: str | None = None,
                       text_file: str | None = None) -> None:
    """One (evaluation task, seed): accuracy with the top-r% neurons of each source order perturbed.

    positions 'prompt' perturbs the soft-prompt positions only, 'all' every token. `selectivity_file`
    adds the evaluation task's selectivity-index order (Wang et al. Fig. 15)."""
    from .models import ffn_width
    from .perturbation import RANDOM_ORDER, SELECTIVITY_ORDER, neuron_baseline, position_baseline, random_order, sweep
    from .prompting import evaluate

    lm = prompted_lm(model_dir, task, n_prompt, max_field_tokens, precision, device, threads)
    test = pd.read_parquet(test_split)
    test = test.iloc[:max_examples] if max_examples else test
    batches = lm.batches(test, task.text_fields, batch_size)  # tokenised once for every point of the sweep
    if positions == "prompt":  # the text is never perturbed: its keys/values serve every point
        stored = text_states(text_file, ["test"])["test"]
        batches = lm.keep_text_cache(batches) if stored is None else [stored.attach(b) for b in batches]
    prompt = read_tensors(prompt_file)["prompt"].to(lm.device)
    orders = {source: pd.read_parquet(path, columns=["layer", "neuron", "rank"])
              for source, path in ranking_files.items()}
    if selectivity_file is not None:
        orders[SELECTIVITY_ORDER] = pd.read_parquet(selectivity_file, columns=["layer", "neuron", "rank"])
    orders[RANDOM_ORDER] = random_order([ffn_width(p) for p in lm.projections], seed)
    readers = {mode: read for mode, read in (("baseline", neuron_baseline), ("position_baseline", position_baseline))
               if mode in modes}
    baseline_table = pd.read_parquet(Path(run_dir) / "baseline.parquet") if readers else None
    baselines = {mode: read(baseline_table) for mode, read in readers.items()}
    started = time.perf_counter()
    result = sweep(lambda: evaluate(lm, prompt, batches), lm.projections, lm.device, orders, rates, modes, sigma,
                   baselines, seed, lm.prompt_positions if positions == "prompt" else None)
    log.info("%d sweep points on %d test examples in %.0f s", len(result), len(test), time.perf_counter() - started)
    result.insert(0, "seed", seed)
    result.insert(0, "task", task.name)
    write_parquet(result, output)


def importance(sweep_files: Sequence[str], outputs: dict[str, str]) -> None:
    """Neuronal importance per (evaluation, source, seed, mode), its matrix per mode, and the sweeps' summary."""
    from .perturbation import importance_matrix, neuronal_importance, sweep_summary

    sweeps = pd.concat([pd.read_parquet(f) for f in sweep_files], ignore_index=True)
    table = neuronal_importance(sweeps)
    write_parquet(table, outputs["table"])
    write_table(sweep_summary(sweeps).round(4), {key: outputs[key] for key in ("parquet", "markdown", "html")})
    for mode in table["mode"].unique():
        log.info("neuronal importance (%s), z-scored per evaluation task:\n%s", mode,
                 importance_matrix(table, mode).round(2))


def specificity(tasks: Sequence[str], ranking_files: Sequence[str], output: str) -> None:
    """Spearman correlation of the predictivity orders of every pair of tasks (Wang et al. Fig. 5 and 14)."""
    from .ranking import order_correlation

    rankings = {task: pd.read_parquet(f, columns=["layer", "neuron", "rank"]) for task, f in zip(tasks, ranking_files)}
    table = order_correlation(rankings)
    log.info("Spearman correlation of predictivity orders, all layers:\n%s",
             table[table["layer"] == -1].pivot(index="task_a", columns="task_b", values="spearman").round(3))
    write_parquet(table, output)


def table1(summary_files: Sequence[str], outputs: dict[str, str]) -> None:
    rows = [read_json(f) for f in summary_files]
    table = pd.DataFrame([{
        "task": r["task"],
        "prompt tuning (test acc, %)": _percent(r, "prompt_test_accuracy"),
        "top-1 skill neuron (test acc, %)": _percent(r, "top1_neuron_test_accuracy"),
        "top-1 neuron (layer, index)": f"({r['top1_layer']}, {r['top1_neuron']})",
        "neurons ranked": r["n_neurons"],
    } for r in rows])
    write_table(table, outputs)


def _percent(summary: dict, key: str) -> str:
    return f"{100 * summary[key + '_mean']:.1f} ± {100 * summary[key + '_std']:.1f}"


def write_table(table: pd.DataFrame, outputs: dict[str, str]) -> None:
    """A results table as Parquet, Markdown and HTML (outputs keyed parquet, markdown, html)."""
    write_parquet(table, outputs["parquet"])
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(markdown_table(table))
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(table.to_html(index=False, border=0))


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def control_model(model_dir: str, out_dir: str, seed: int) -> None:
    from .controls import save_random_model

    save_random_model(model_dir, out_dir, seed)
    log.info("%s: the architecture of %s with random weights (seed %d)", out_dir, model_dir, seed)


def control_prompt(control: str, model_dir: str, task: Task, output: str, seed: int, n_prompt: int, init: str,
                   init_std: float, hard_prompt: str) -> None:
    """The prompt of a control: the tuning seed's untuned initial prompt, or a hard prompt's embeddings."""
    from .controls import hard_prompt_embeddings
    from .prompting import init_prompt

    lm = prompted_lm(model_dir, task, n_prompt, None, "fp32", "cpu", 1)
    if control == "hard_prompt":
        prompt = hard_prompt_embeddings(lm, hard_prompt)
        log.info("hard prompt %r: %d tokens", hard_prompt, len(prompt))
    else:
        prompt = init_prompt(lm, init, init_std, seed)
    write_tensors({"prompt": prompt}, output)


def control_score(run_dir: str, task: Task, seed: int, outputs: dict[str, str]) -> None:
    """Scores of a control's activations and the test accuracy of its top-1 neuron(s), as for Table 1."""
    scores = score_run(run_dir, task)
    ranking = merge_seeds(scores.assign(seed=seed), "predictivity", [s.name for s in task.binary_subtasks()])
    top = ranking.iloc[0]
    summary = {"task": task.name, "seed": seed, "top1_test_accuracy": top_neuron_accuracy(run_dir, task, ranking,
                                                                                          scores),
               "top1_dev_predictivity": float(top["mean"]), "top1_layer": int(top["layer"]),
               "top1_neuron": int(top["neuron"]), "random_guess": 1 / len(task.labels)}
    log.info("%s", summary)
    write_parquet(scores, outputs["scores"])
    write_json(summary, outputs["summary"])


def controls_table(task_names: Sequence[str], control_summaries: dict[str, Sequence[str]],
                   task_summaries: Sequence[str], outputs: dict[str, str]) -> None:
    """Top-1 neuron test accuracy per task: random guess, each control, the tuned prompt (Wang et al. Table 3)."""
    rows = []
    for index, task in enumerate(task_names):
        tuned = read_json(task_summaries[index])
        controls = {name: read_json(files[index]) for name, files in control_summaries.items()}
        row = {"task": task, "random guess (%)": f"{100 * next(iter(controls.values()))['random_guess']:.1f}"}
        for name, summary in controls.items():
            row[f"{name.replace('_', ' ')} (%)"] = f"{100 * summary['top1_test_accuracy']:.1f}"
        row["tuned prompt (%)"] = _percent(tuned, "top1_neuron_test_accuracy")
        rows.append(row)
    table = pd.DataFrame(rows)
    write_table(table, outputs)


def with_label_words(task: Task, words_file: str) -> Task:
    """The task read through the label words a random-label-word job drew."""
    import dataclasses

    return dataclasses.replace(task, label_words=tuple(read_json(words_file)["label_words"]))


def draw_words(model_dir: str, task: Task, draw: int, output: str) -> None:
    """Random label words for draw `draw` (Wang et al.'s label-word independence)."""
    from transformers import AutoTokenizer

    from .prompting import draw_label_words

    words = draw_label_words(AutoTokenizer.from_pretrained(model_dir), len(task.labels), draw)
    log.info("draw %d: label words %s in place of %s", draw, list(words), list(task.label_words))
    write_json({"draw": draw, "label_words": list(words), "original": list(task.label_words)}, output)


def label_word_independence(tasks: Sequence[str], seed: int, original_files: Sequence[str],
                            draw_files: Sequence[Sequence[str]], word_files: Sequence[Sequence[str]],
                            outputs: dict[str, str]) -> None:
    """Spearman correlation of the predictivity orders found with random label words and the original's."""
    from .ranking import order_correlation

    rows = []
    for task, original, draws, words in zip(tasks, original_files, draw_files, word_files):
        drawn = [read_json(w) for w in words]
        scores = {"original": pd.read_parquet(original)}
        scores |= {f"draw{d['draw']}": pd.read_parquet(f) for f, d in zip(draws, drawn)}
        subtasks = list(scores["original"]["subtask"].unique())
        rankings = {name: merge_seeds(frame.assign(seed=seed), "predictivity", subtasks)
                    for name, frame in scores.items()}
        table = order_correlation(rankings)
        overall = table[(table["layer"] == -1) & (table["task_a"] != table["task_b"])]
        with_original = overall[overall["task_a"] == "original"]["spearman"]
        between = overall[overall["task_a"] != "original"]["spearman"]
        rows.append({"task": task, "draws": len(draws),
                     "label words": "; ".join("/".join(d["label_words"]) for d in drawn),
                     "spearman with original (mean)": round(float(with_original.mean()), 3),
                     "spearman with original (min)": round(float(with_original.min()), 3),
                     "spearman between draws (mean)": round(float(between.mean()), 3)})
        log.info("%s: %s", task, rows[-1])
    write_table(pd.DataFrame(rows), outputs)
