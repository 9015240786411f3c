# Helpers shared by the rules: wildcards, per-task and per-model config leaves, target lists.
RESULTS = config["results"]
# Sorted, so that reordering the YAML changes no rule's inputs or params and reruns nothing.
MODELS = sorted(config["models"])
TASKS = sorted(config["tasks"])
SEEDS = sorted(config["seeds"])
SPLITS = ["train", "dev", "test"]


wildcard_constraints:
    model="|".join(MODELS),
    task="|".join(TASKS),
    seed=r"\d+",


def out(path):
    """A path under the results folder of this config."""
    return f"{RESULTS}/{path}"


def task_leaf(key):
    """A per-task config leaf for params: (wildcards) -> value."""
    return lambda wildcards: config["tasks"][wildcards.task][key]


def subtask_leaf(key):
    return lambda wildcards: [s[key] for s in config["tasks"][wildcards.task]["subtasks"]]


def model_leaf(key, default=None):
    return lambda wildcards: config["models"][wildcards.model].get(key, default)


def model_mem_mb(wildcards):
    return config["models"][wildcards.model]["mem_mb"]


def text_mem_mb(wildcards):
    """A model job that also holds a task's stored text (encode_text in prompt.smk)."""
    return config["models"][wildcards.model]["mem_mb"] + config["models"][wildcards.model]["text_mem_mb"]


def model_runtime(minutes):
    """Runtime (min) of a model job: its time for the default model, times the model's runtime_scale."""
    return lambda wildcards: int(minutes * config["models"][wildcards.model]["runtime_scale"])


TASK_PARAMS = dict(
    name=lambda wildcards: wildcards.task,
    dataset=task_leaf("dataset"),
    subset=task_leaf("subset"),
    train_split=task_leaf("train_split"),
    test_split=task_leaf("test_split"),
    fallback_train_split=task_leaf("fallback_train_split"),
    label_column=task_leaf("label_column"),
    text_fields=task_leaf("text_fields"),
    template=task_leaf("template"),
    labels=task_leaf("labels"),
    label_words=task_leaf("label_words"),
    subtask_names=subtask_leaf("name"),
    subtask_positive=subtask_leaf("positive"),
    subtask_negative=subtask_leaf("negative"),
)


def control_model_dir(wildcards):
    """The model a control reads: random weights for 'random_model', else the pre-trained one."""
    if wildcards.control == "random_model":
        return out(f"{wildcards.model}/controls/random_model/model")
    return out(f"{wildcards.model}/model")


# The config leaves of every prompt-tuning rule and of every activation-capture rule.
TUNING_PARAMS = dict(
    n_tokens=config["prompt"]["n_tokens"],
    init=config["prompt"]["init"],
    init_std=config["prompt"]["init_std"],
    lr=config["prompt"]["lr"],
    weight_decay=config["prompt"]["weight_decay"],
    batch_size=config["prompt"]["batch_size"],
    max_steps=config["prompt"]["max_steps"],
    eval_every=config["prompt"]["eval_every"],
    patience=config["prompt"]["patience"],
    eval_batch_size=config["prompt"]["eval_batch_size"],
    precision=config["prompt"]["precision"],
    max_field_tokens=config["data"]["max_field_tokens"],
    device=config["device"],
)
DUMP_PARAMS = dict(
    precision=config["prompt"]["precision"],
    batch_size=config["prompt"]["eval_batch_size"],
    max_field_tokens=config["data"]["max_field_tokens"],
    dtype=config["activations"]["dtype"],
    max_gb=config["activations"]["max_gb"],
    device=config["device"],
)


# A task's stored text (encode_text in prompt.smk), read by every job that runs a prompt on the pre-trained model.
TEXT_FILE = out("{model}/text/{task}.safetensors")


def control_text(wildcards):
    """The stored text a control runs its prompt on: none for random weights (the text is theirs alone)."""
    return [] if wildcards.control == "random_model" else TEXT_FILE.format(**wildcards)


def split_files(wildcards):
    return {s: out(f"data/{wildcards.task}/{s}.parquet") for s in SPLITS}


def all_outputs():
    words = expand(out("{model}/tables/label_words.md"), model=MODELS) if config["label_words"]["tasks"] else []
    pruning_tasks = sorted(config["pruning"]["tasks"]) if config["pruning"]["tasks"] is not None else TASKS
    pruning = expand([out("{model}/tables/pruning.md"), out("{model}/plots/{task}/pruning.png")], model=MODELS,
                     task=pruning_tasks)
    return words + pruning + expand(
        [
            out("{model}/tables/table1.md"),
            out("{model}/plots/{task}/predictivity.png"),
            out("{model}/plots/{task}/top_neuron.png"),
            out("{model}/plots/{task}/perturbation.png"),
            out("{model}/plots/importance.png"),
            out("{model}/plots/specificity.png"),
            out("{model}/tables/controls.md"),
            out("{model}/tables/perturbation.md"),
        ],
        model=MODELS,
        task=TASKS,
    )
