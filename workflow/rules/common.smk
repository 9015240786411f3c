# Helpers shared by the rules: wildcards, the config sections as params, resources, target lists.
from skill_neurons.aux_metrics import MetricSpec
from skill_neurons.data import SPLITS, Task, mirror_file, mirror_sources, task_data_root
from skill_neurons.generation import DATA_KEYS, PROBE_KEYS, RENDER_KEYS, leaves
from skill_neurons.plan import CONTROLS, transfer_pairs
from skill_neurons.settings import (
    Dump,
    GenerationTuning,
    KeepRatioSearch,
    MethodTuning,
    PlotStyle,
    Prompting,
    Retuning,
    SkillPruning,
    SpeedBenchmark,
    Splitting,
    Sweep,
    Tuning,
    WordSelectivity,
    bundle,
)

RESULTS = config["results"]
# Sorted, so that reordering the YAML changes no rule's inputs or params and reruns nothing.
MODELS = sorted(config["models"])
TASKS = sorted(config["tasks"])
SEEDS = sorted(config["seeds"])
# Wang et al. §6.2: ordered task pairs that share label words, and the targets that have a source.
TRANSFER_PAIRS = transfer_pairs({task: config["tasks"][task]["label_words"] for task in TASKS})
TRANSFER_TARGETS = sorted({target for _, target in TRANSFER_PAIRS})
# Wang et al. §5: tuning methods other than the prompt, on these tasks (none: the stage does not run).
METHODS = sorted(config["tuning_methods"]["methods"])
METHOD_TASKS = sorted(config["tuning_methods"]["tasks"])
AUX = config["aux_metrics"]
AUX_TASKS = sorted(AUX["tasks"])
AUX_SEEDS = sorted(AUX["seeds"])
AUX_RUN = "{model}/aux/{aux}/seed{seed}"
AUX_DATA = "data/aux/{aux}"


wildcard_constraints:
    model="|".join(MODELS),
    task="|".join(TASKS) or "no_task",  # an empty pattern would match any path
    method="|".join(METHODS) or "no_method",
    aux="|".join(AUX_TASKS) or "no_aux_task",
    seed=r"\d+",


# The longest path of a run first: every seed's tuning, dump and score, the rankings, then the sweeps (10-20 min a
# job); then the other long jobs (SKELETON's search, ~18 min a task), so that the many short jobs fill both cores
# at the end instead of one long job running alone there. (With SKELETON first, the default run's sweeps waited.)
# Above them, what keeps the disk's peak low (<= 10 GB in the default run): a score that frees a temporary dump
# runs as soon as its dump is done (without it, a dozen 0.3-GB control dumps stood at once: peak 16 GB); the
# random-weight models (0.5 GB, temporary) and their dumps are made at the start, before the text stores and the
# activations fill the disk; every short job that reads a text store runs as soon as it can, and the store's
# release before anything, so that each store (0.8-1.7 GB) goes once its sweep and SKELETON are done (default run
# at 6c2874a: the stores waited for the transfer and pruning jobs until 91-106 min, peak 11.5 GB; at 9fd4666,
# with these: 9.57 GB). Wang et al.'s pruned model (0.3 GB, temporary) is made with the other long jobs and timed
# at once, which removes it.
PRIORITY = {"LONG_JOB": 5, "LONGEST_PATH": 10, "FREES_DISK": 20, "RELEASES_DISK": 30}


def out(path):
    """A path under the results folder of this config."""
    return f"{RESULTS}/{path}"


# Each config section a rule reads, as per-leaf params (skill_neurons.settings).
TASK = Task.params(config)
SPLITTING = Splitting.params(config)
PROMPTING = Prompting.params(config)
TUNING = bundle(config, Prompting, Tuning)
DUMP = bundle(config, Prompting, Dump)
RETUNING = bundle(config, Prompting, Retuning)
SWEEP = bundle(config, Prompting, Sweep)
KEEP_RATIO_SEARCH = KeepRatioSearch.params(config)
SKILL_PRUNING = SkillPruning.params(config)
SPEED = SpeedBenchmark.params(config)
PLOT_STYLE = PlotStyle.params(config)
WORD_SELECTIVITY = bundle(config, Prompting, WordSelectivity)
METHOD_TUNING = {
    **MethodTuning.params(config),
    **{key: config["tuning_methods"][key] for key in ("lora_rank", "lora_alpha", "seed")},
}


def kept_if(keep, path):
    """`path`, or temporary (removed once its last reader is done) where the config does not `keep` it."""
    return path if keep else temp(path)


def scored_only(path):
    """Activations that only a score job reads: removed once scored, unless activations.keep_controls_and_draws."""
    return kept_if(config["activations"]["keep_controls_and_draws"], path)


def task_leaf(key):
    """A per-task config leaf for params: (wildcards) -> value."""
    return lambda wildcards: config["tasks"][wildcards.task][key]


def model_leaf(key, default=None):
    return lambda wildcards: config["models"][wildcards.model].get(key, default)


# Minutes to encode a task's text (encode_text): a reader that runs after the release encodes it again.
TEXT_ENCODE_MINUTES = 30


def model_resources(minutes, copies=1, text=False, gpu=True):
    """Resources of a job that holds `copies` of the model (and reads the task's text store if `text`).

    Runtime (min) is the job's time for the default model, plus an encode of the text if `text`, times the
    model's runtime_scale. A reader that encodes the text again holds one more model while it does.
    """

    def mem_mb(wildcards):
        model = config["models"][wildcards.model]
        return copies * model["mem_mb"] + (model["text_mem_mb"] if text else 0)

    def runtime(wildcards):
        total = minutes + (TEXT_ENCODE_MINUTES if text else 0)
        return int(total * config["models"][wildcards.model]["runtime_scale"])

    resources = {"mem_mb": mem_mb, "runtime": runtime}
    return {"gpu": config["gpus_per_job"], **resources} if gpu else resources


# The controls run one trial per seed; the hard prompt is the same text every time: one trial.
CONTROL_SEEDS = sorted(config["controls"]["seeds"])
SWEEP_SEEDS = sorted(config["perturbation"]["seeds"])


def control_seeds(control):
    return CONTROL_SEEDS[:1] if control == "hard_prompt" else CONTROL_SEEDS


def control_model_dir(wildcards):
    """The model a control reads: random weights for 'random_model', else the pre-trained one."""
    if wildcards.control == "random_model":
        return out(f"{wildcards.model}/controls/random_model/seed{wildcards.seed}/model")
    return out(f"{wildcards.model}/model")


# A task's stored text (encode_text in prompt.smk), read by every job that runs a prompt on the pre-trained model.
# Its jobs depend on the ticket; the store itself is no workflow file (skill_neurons/text_cache.py says why).
TEXT_TICKET = out("{model}/text/{task}.json")
TEXT_STORE = out("{model}/text/{task}.safetensors")
KEEP_TEXT = config["activations"]["keep_text_states"]
TEXT_DTYPE = config["activations"]["text_dtype"]


def text_readers(wildcards):
    """An output of every job that reads the task's text store (a score for the dumps that are removed)."""
    task = wildcards.task
    files = expand(
        [out("{model}/prompts/{task}/seed{seed}/metrics.json"), out("{model}/activations/{task}/seed{seed}")],
        seed=SEEDS,
        **wildcards,
    )
    files += expand(out("{model}/perturbation/{task}/seed{seed}.parquet"), seed=SWEEP_SEEDS, **wildcards)
    for control in CONTROLS:
        if control != "random_model":
            pattern = out(f"{{model}}/controls/{control}/seed{{seed}}/scores/{{task}}.json")
            files += expand(pattern, seed=control_seeds(control), **wildcards)
    if task in WORD_TASKS:
        pattern = [out("{model}/label_words/{task}/draw{draw}/") + name for name in ("metrics.json", "scores.parquet")]
        files += expand(pattern, draw=WORD_DRAWS, **wildcards)
    if task in PRUNING_TASKS:
        pruned = ["skeleton/metrics.json", "selection.parquet"]
        pruned += [f"skill_neurons/{constant}/metrics.json" for constant in FROZEN_CONSTANTS]
        files += expand([out("{model}/pruning/{task}/") + name for name in pruned], **wildcards)
    if task in TRANSFER_TARGETS:
        files += expand(out("{model}/transfer/{task}/seed{seed}.parquet"), seed=SEEDS, **wildcards)
    return files


def control_text(wildcards):
    """The stored text a control runs its prompt on: none for random weights (the text is theirs alone)."""
    return [] if wildcards.control == "random_model" else TEXT_TICKET.format(**wildcards)


def mirror_inputs(wildcards):
    """The task's source files in the data mirror (none for hub data): editing one reruns its split."""
    task = Task.from_config(config, wildcards.task)
    return [str(path) for path in mirror_sources(task, task_data_root(config, wildcards.task))]


def split_files(wildcards):
    return {s: out(f"data/{wildcards.task}/{s}.parquet") for s in SPLITS}


def results_table(name, caption, category, figure, per_task=False):
    """A model's results table as Parquet, Markdown and HTML (in the report): outputs parquet, markdown, html.

    `per_task`: one table per task, tables/<name>_{task}, filed under its task in the report.
    """
    tables = f"{{model}}/tables/{name}" + ("_{task}" if per_task else "")
    labels = {"task": "{task}" if per_task else "all", "figure": figure}
    html = report(
        out(f"{tables}.html"),
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory="{task}" if per_task else "all tasks",
        labels=labels,
    )
    return {"parquet": out(f"{tables}.parquet"), "markdown": out(f"{tables}.md"), "html": html}


def report_figure(name, caption, category, figure, per_task=False):
    """A figure of the report: plots/{task}/<name>.png per task, or plots/<name>.png over all tasks."""
    task = "{task}" if per_task else "all"
    folder = "{model}/plots/{task}" if per_task else "{model}/plots"
    return report(
        out(f"{folder}/{name}.png"),
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory="{task}" if per_task else "all tasks",
        labels={"task": task, "figure": figure},
    )


def all_outputs():
    """Every table and figure of this config: Wang et al.'s and SKELETON's for `tasks`, Zhao et al.'s for aux_metrics."""
    return wang_outputs() + aux_outputs()


def aux_outputs():
    if not AUX_TASKS:
        return []
    per_run = expand(
        out("{model}/aux/{aux}/seed{seed}/plots/{plot}.png"),
        model=MODELS,
        aux=AUX_TASKS,
        seed=AUX_SEEDS,
        plot=["correlations", "top_neurons"],
    )
    tables = expand([out("{model}/tables/aux_metrics.md"), out("{model}/tables/aux_reproduction.md")], model=MODELS)
    return per_run + tables


def wang_outputs():
    if not TASKS:
        return []
    words = expand(out("{model}/tables/label_words.md"), model=MODELS) if config["label_words"]["tasks"] else []
    pruning = (
        expand(
            [out("{model}/tables/pruning.md"), out("{model}/plots/{task}/pruning.png")],
            model=MODELS,
            task=PRUNING_TASKS,
        )
        if PRUNING_TASKS
        else []
    )
    released = [] if KEEP_TEXT else expand(out("{model}/text/{task}.released.json"), model=MODELS, task=TASKS)
    return (
        words
        + pruning
        + released
        + expand(
            [
                out("{model}/tables/table1.md"),
                out("{model}/tables/chance.md"),
                out("{model}/tables/word_selectivity_{task}.md"),
                out("{model}/plots/{task}/predictivity.png"),
                out("{model}/plots/{task}/top_neuron.png"),
                out("{model}/plots/{task}/perturbation.png"),
                out("{model}/plots/importance.png"),
                out("{model}/plots/specificity.png"),
                out("{model}/tables/specificity_summary.md"),
                out("{model}/tables/controls.md"),
                out("{model}/tables/perturbation.md"),
                out("{model}/tables/reproduction.md"),
            ]
            + ([out("{model}/tables/transferability.md")] if TRANSFER_PAIRS else [])
            + ([out("{model}/tables/tuning_methods.md")] if METHOD_TASKS and METHODS else []),
            model=MODELS,
            task=TASKS,
        )
    )


# Auxiliary metrics (aux_metrics.smk): what a rule reads of a generation task's entry, and its files.


def transfer_sources(target):
    return [source for source, other in TRANSFER_PAIRS if other == target]


def aux_task(keys):
    """The part of the task's entry under `keys` (generation.leaves), so that editing another key reruns nothing."""
    return lambda wildcards: leaves(AUX["tasks"][wildcards.aux], keys)


def aux_leaf(key):
    return lambda wildcards: AUX["tasks"][wildcards.aux][key]


def aux_sources(wildcards):
    """The task's files in the data mirror: editing one reruns its split."""
    entry = AUX["tasks"][wildcards.aux]
    splits = {entry.get("train_split", "train"), entry.get("validation_split", "validation")}
    return [str(mirror_file(config["data_root"], entry["dataset"], entry.get("subset"), s)) for s in sorted(splits)]


AUX_RUNTIME = {"device": config["device"], "precision": config["prompt"]["precision"]}
AUX_PROMPT = {**GenerationTuning.params(config), **AUX_RUNTIME}


def density_groups(wildcards):
    """The grouping column and the flag of a task: each gets a row of densities."""
    entry = AUX["tasks"][wildcards.aux]
    groups = [entry["group_by"]] if entry.get("group_by") else []
    if entry.get("flag") is not None:
        groups.append(MetricSpec.parse(entry["flag"]).label)
    return groups


def aux_files(path):
    return expand(out(f"{{{{model}}}}/aux/{{aux}}/seed{{seed}}/{path}"), aux=AUX_TASKS, seed=AUX_SEEDS)
