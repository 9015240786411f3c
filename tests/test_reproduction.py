from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skill_neurons.reproduction import (
    COLUMNS,
    NOT_RUN,
    ClaimsError,
    Measured,
    aux_settings_differences,
    aux_thresholds,
    controls_measured,
    label_words_measured,
    load_claims,
    measure_all,
    parse_mean_sd,
    parse_speedup,
    perturbation_measured,
    pruning_measured,
    reproduction_markdown,
    reproduction_table,
    settings_differences,
    specificity_measured,
    table1_measured,
    transferability_measured,
    unclaimed,
    validate_claims,
)

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "paper_claims.yaml"


def claim(id, value=None):
    return {"id": id, "claim": f"claim {id}", "paper": "Wang et al. 2022", "reference": "Table 1", "value": value}


def test_measured_formats_mean_sd_and_n():
    assert str(Measured(78.5, 2.2, 5, "%")) == "78.5 ± 2.2 (n=5)"
    assert str(Measured(1.634, None, 2, "x")) == "1.63x (n=2)"
    assert str(Measured(0.8712, None, 5, "", "sst2")) == "0.87 (n=5); sst2"
    assert str(Measured(12.0, None, 0, "points")) == "12.0"
    assert str(Measured(None, None, 0, "", "no same-type pair")) == "not measured: no same-type pair"


def test_table1_mean_and_sample_sd_over_seeds_in_percent():
    summary = {
        "task": "sst2",
        "seeds": [0, 1, 2],
        "per_seed_prompt_accuracy": [0.80, 0.82, 0.84],
        "per_seed_top1_accuracy": [0.70, 0.75, 0.80],
    }
    ours = table1_measured([summary])
    # 80, 82, 84: mean 82, sd sqrt((4 + 0 + 4) / 2) = 2; 70, 75, 80: mean 75, sd 5
    assert str(ours["table1.sst2.prompt_tuning"]) == "82.0 ± 2.0 (n=3)"
    assert str(ours["table1.sst2.top1_neuron"]) == "75.0 ± 5.0 (n=3)"


def test_controls_parse_single_trials_and_mean_sd():
    assert parse_mean_sd("76.0") == (76.0, None)
    assert parse_mean_sd("78.5 ± 2.2") == (78.5, 2.2)
    with pytest.raises(ValueError, match="not a 'mean'"):
        parse_mean_sd("n/a")
    table = pd.DataFrame(
        {
            "task": ["sst2"],
            "random guess (%)": ["50.0"],
            "majority class (%)": ["70.0"],
            "hard prompt (%)": ["76.0"],
            "random model (%)": ["55.1 ± 1.2"],
            "random prompt (%)": ["70.0 ± 3.0"],
            "tuned prompt (%)": ["80.0 ± 1.0"],
        }
    )
    ours = controls_measured(table, seeds=5)
    assert set(ours) == {"table3.sst2.hard_prompt", "table3.sst2.random_model", "table3.sst2.random_prompt"}
    assert str(ours["table3.sst2.hard_prompt"]) == "76.0 (n=1)"
    assert str(ours["table3.sst2.random_model"]) == "55.1 ± 1.2 (n=5)"


def sweep_table(mode="noise", rates=(0.1, 0.15)):
    rows = []
    for rate in rates:
        for order, drop in (("sst2", 20.0 + rate), ("imdb", 8.0), ("random", 3.0)):
            rows.append(
                {
                    "task": "sst2",
                    "mode": mode,
                    "rate": rate,
                    "order": order,
                    "seeds": 5,
                    "accuracy": 0.80 - drop / 100,
                    "accuracy_sd": 0.02,
                    "drop (points)": drop,
                    "random drop (points)": 3.0,
                }
            )
    return pd.DataFrame(rows)


def test_perturbation_own_and_random_drop_at_15_percent():
    table = pd.concat([sweep_table("noise"), sweep_table("zero")], ignore_index=True)
    ours = perturbation_measured(table)
    own, random = ours["fig4.sst2.own_drop"], ours["fig4.sst2.random_drop"]
    assert (own.mean, own.n, own.settings) == (20.15, 5, "")  # the paper's mode, rate exactly 15%
    assert str(own) == "20.1 (n=5); accuracy after it 59.9 ± 2.0"  # 20.15 rounds half to even
    assert random.mean == 3.0 and str(random).startswith("3.0 (n=5); accuracy after it 77.0")
    assert "fig4.sst2.imdb_drop" not in ours  # another task's order is not this claim


def test_perturbation_takes_the_nearest_rate_and_names_other_settings():
    table = sweep_table("position_baseline", rates=(0.14, 0.16)).assign(positions="prompt", scope="per_layer")
    own = perturbation_measured(table)["fig4.sst2.own_drop"]
    assert own.mean == pytest.approx(20.14)  # 0.14 and 0.16 tie: the lower one
    assert own.settings == "mode position_baseline; rate 14% (nearest to 15%); positions prompt"


def correlation_rows(pairs):
    return pd.DataFrame(
        [{"task_a": a, "task_b": b, "spearman_layer_mean": v, "spearman_pooled": 0.0} for a, b, v in pairs]
    )


def test_specificity_same_type_versus_cross_type_pairs():
    table = correlation_rows(
        [
            ("sst2", "sst2", 1.0),
            ("sst2", "imdb", 0.6),
            ("sst2", "qnli", 0.1),
            ("imdb", "imdb", 1.0),
            ("imdb", "qnli", 0.3),
            ("qnli", "qnli", 1.0),
        ]
    )
    types = {"sst2": "sentiment", "imdb": "sentiment", "qnli": "nli"}
    ours = specificity_measured(table, types)
    assert str(ours["fig5.same_type_spearman"]) == "0.60 (n=1); n = task pairs: sst2/imdb 0.60"
    cross = ours["fig5.cross_type_spearman"]  # 0.1 and 0.3: mean 0.2, sd sqrt(0.02) = 0.1414
    assert cross.mean == pytest.approx(0.2) and cross.sd == pytest.approx(0.1414, abs=1e-4) and cross.n == 2
    only_one_type = specificity_measured(table, {"sst2": "sentiment", "imdb": "sentiment"})
    assert only_one_type["fig5.cross_type_spearman"].mean is None
    # QNLI at chance: both cross-type pairs are its own, so none is left to claim, and the cell says why
    without_qnli = specificity_measured(table, types, at_chance=["qnli"])
    assert str(without_qnli["fig5.cross_type_spearman"]) == (
        "not measured: no cross-type pair of tasks; left out at chance: qnli"
    )
    assert without_qnli["fig5.same_type_spearman"].mean == pytest.approx(0.6)
    assert str(without_qnli["fig5.same_type_spearman"]).endswith("sst2/imdb 0.60; left out at chance: qnli")


def test_specificity_summarises_a_per_layer_table_first():
    per_layer = pd.DataFrame(
        {
            "task_a": ["sst2"] * 3,
            "task_b": ["imdb"] * 3,
            "layer": [-1, 0, 1],
            "spearman": [0.9, 0.4, 0.6],
        }
    )
    ours = specificity_measured(per_layer, {"sst2": "sentiment", "imdb": "sentiment"})
    assert ours["fig5.same_type_spearman"].mean == pytest.approx(0.5)  # layers 0 and 1, not the pooled 0.9


def test_label_words_one_task_and_several():
    one = pd.DataFrame(
        {
            "task": ["sst2"],
            "draws": [5],
            "spearman with original (mean)": [0.812],
            "spearman with original (min)": [0.75],
            "spearman between draws (mean)": [0.8],
        }
    )
    ours = label_words_measured(one)["sec4_4.label_words_spearman"]
    assert str(ours) == "0.81 (n=5); sst2 0.81 (min 0.75, 5 draws)"
    two = pd.concat([one, one.assign(task="imdb", **{"spearman with original (mean)": [0.612]})], ignore_index=True)
    ours = label_words_measured(two)["sec4_4.label_words_spearman"]
    assert ours.mean == pytest.approx(0.712) and ours.n == 2  # sd sqrt(0.02) over the two tasks
    assert ours.sd == pytest.approx(0.1414, abs=1e-4)


def test_transferability_spearman_over_pairs_and_why_it_is_missing_below_three():
    five = pd.DataFrame({"indicator": ["overlap_all", "overlap_skill"], "spearman": [0.5, 0.7], "pairs": [5, 5]})
    ours = transferability_measured(five)
    assert str(ours["sec6_2.transferability_all_neurons"]) == "0.50 (n=5); n = task pairs that share label words"
    assert ours["sec6_2.transferability_skill_neurons"].mean == pytest.approx(0.7)
    two = five.assign(spearman=[np.nan, np.nan], pairs=[2, 2])
    cell = str(transferability_measured(two)["sec6_2.transferability_skill_neurons"])
    assert cell == "not measured: 2 task pairs that share label words; a Spearman over pairs needs at least 3"
    claims = [claim("sec6_2.transferability_all_neurons", 0.53)]
    row = reproduction_table(claims, measure_all(transferability=two), "tiny", {}).iloc[0]
    assert row["ours"].startswith("not measured: 2 task pairs") and row["ours"] != NOT_RUN


def test_transferability_claims_read_the_pairs_above_chance_with_all_pairs_beside():
    table = pd.DataFrame(
        {
            "indicator": ["overlap_all", "overlap_skill", "overlap_all", "overlap_skill"],
            "tasks": ["all", "all", "above chance", "above chance"],
            "spearman": [-0.1, 0.2, 0.4, np.nan],
            "pairs": [12, 12, 4, 2],
        }
    )
    ours = transferability_measured(table)
    assert str(ours["sec6_2.transferability_all_neurons"]) == (
        "0.40 (n=4); n = task pairs that share label words, both tasks above chance; over all 12 pairs -0.10"
    )
    assert str(ours["sec6_2.transferability_skill_neurons"]) == (
        "not measured: 2 task pairs that share label words, both tasks above chance; a Spearman over pairs needs"
        " at least 3; over all 12 pairs 0.20"
    )


def pruning_frame():
    rows = []
    for task, skill_acc, change, skel_acc, skel_change, kept, fp32, bf16 in (
        ("sst2", 80.5, "-1.2", 81.0, "-0.7", 40.0, "1.63x (1.46-1.72)", "1.10x (1.05-1.12)"),
        ("imdb", 78.0, "+0.5", 77.0, "-0.5", 35.0, "1.47x (1.40-1.50)", "1.02x (1.00-1.05)"),
    ):
        base = {"task": task, "parameters (M)": 100.0}
        rows.append(
            base
            | {"method": "dense (prompt tuning)", "test acc (%)": 81.7, "change (points)": ""}
            | {"FFN neurons kept (%)": 100.0, "parameters kept (%)": 100.0}
            | {"speedup float32": "1.00x", "speedup bfloat16": "1.00x"}
        )
        rows.append(
            base
            | {"method": "skill_neurons", "test acc (%)": skill_acc, "change (points)": change}
            | {"FFN neurons kept (%)": 26.5, "parameters kept (%)": 70.0 if task == "sst2" else 72.0}
            | {"speedup float32": "1.20x (1.10-1.30)", "speedup bfloat16": "1.05x (1.00-1.10)"}
        )
        rows.append(
            base
            | {"method": "skeleton", "test acc (%)": skel_acc, "change (points)": skel_change}
            | {"FFN neurons kept (%)": kept, "parameters kept (%)": 60.0}
            | {"speedup float32": fp32, "speedup bfloat16": bf16}
        )
    return pd.DataFrame(rows)


def test_pruning_table4_and_skeleton():
    assert parse_speedup("1.63x (1.46-1.72)") == 1.63 and parse_speedup("") is None
    ours = pruning_measured(pruning_frame())
    assert str(ours["table4.sst2.accuracy"]) == "80.5 (n=1); -1.2 points vs dense prompt tuning"
    assert str(ours["table4.imdb.accuracy"]) == "78.0 (n=1); +0.5 points vs dense prompt tuning"
    kept = ours["table4.parameters_kept"]  # 70 and 72: mean 71, sd sqrt(2)
    assert kept.mean == 71.0 and kept.sd == pytest.approx(1.4142, abs=1e-4) and kept.n == 2
    assert ours["table4.speedup"].mean == pytest.approx(1.2) and ours["table4.speedup"].settings == "float32"
    # SKELETON: keep ratio from 'FFN neurons kept (%)' without metrics.json; the best speedup, as "at most"
    assert ours["skeleton.keep_ratio"].mean == pytest.approx(0.375)
    assert str(ours["skeleton.speedup"]) == "1.63x (n=2); best of 2 tasks (sst2): sst2 1.63x, imdb 1.47x"
    assert ours["skeleton.accuracy_change"].mean == pytest.approx(-0.6)
    with_metrics = pruning_measured(pruning_frame(), {"sst2": {"keep_ratio": 0.4}, "imdb": {"keep_ratio": 0.3}})
    assert with_metrics["skeleton.keep_ratio"].mean == pytest.approx(0.35)
    bf16 = pruning_measured(pruning_frame(), dtype="bfloat16")
    assert bf16["skeleton.speedup"].mean == 1.10 and bf16["skeleton.speedup"].settings == "bfloat16"


def test_aux_threshold_is_the_mean_over_seeds_of_each_seeds_kth_value():
    thresholds = pd.DataFrame(
        {
            "task": ["arith", "arith", "arith", "hans"],
            "metric": ["loss", "loss", "confidence", "heuristic == lexical_overlap"],
            "seed": [0, 1, 0, 0],
            "threshold": [0.90, 0.80, 0.5, 0.3],
        }
    )
    claims = {("arith", "loss"): "bigbench_arithmetic", ("hans", "heuristic == lexical_overlap"): "hans"}
    ours = aux_thresholds(thresholds, claims, 10)
    arithmetic = ours["aux.bigbench_arithmetic.top10_threshold"]
    assert arithmetic.mean == pytest.approx(0.85) and arithmetic.sd == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert arithmetic.n == 2 and ours["aux.hans.top10_threshold"].sd is None  # one seed: no sd
    assert aux_thresholds(thresholds, {("arith", "label"): "x"}, 10) == {}  # a metric not run: no row


def test_table_has_a_row_per_claim_and_says_not_run():
    claims = validate_claims(
        [
            {**claim("table1.sst2.top1_neuron", 91.8), "unit": "%", "model": "RoBERTa-base"},
            {**claim("table1.qnli.top1_neuron"), "unit": "%", "note": "not read from the paper here"},
            {**claim("fig4.sst2.own_drop"), "unit": "points", "model": "RoBERTa-base"},
        ]
    )
    ours = {
        "table1.sst2.top1_neuron": Measured(75.0, 5.0, 3, "%"),
        "fig4.sst2.own_drop": Measured(20.0, None, 5, "points", settings="mode zero"),
        "table1.tweet.top1_neuron": Measured(60.0, None, 1, "%"),
    }
    differences = {"": "8 prompt tokens (paper 127)", "fig4": "positions prompt", "fig4.sst2.own_drop": "mode zero"}
    table = reproduction_table(claims, ours, "smollm2", differences)
    assert list(table.columns) == COLUMNS
    assert table["paper value"].tolist() == ["91.8", "— (not read from the paper here)", "—"]
    assert table["ours"].tolist() == ["75.0 ± 5.0 (n=3)", NOT_RUN, "20.0 (n=5)"]
    assert table["model"].unique().tolist() == ["smollm2"]
    settings = table["settings that differ"].tolist()
    assert settings[0] == "the paper's model: RoBERTa-base; 8 prompt tokens (paper 127)"
    assert settings[1] == ""  # not run: nothing to compare
    assert settings[2] == "the paper's model: RoBERTa-base; 8 prompt tokens (paper 127); positions prompt; mode zero"
    assert unclaimed(claims, ours) == ["table1.tweet.top1_neuron"]
    assert len(reproduction_table(claims, ours, "smollm2", keep_empty=False)) == 2
    markdown = reproduction_markdown(table.assign(claim="a | b"), title="Reproduction")
    assert markdown.startswith("## Reproduction\n") and "a \\| b" in markdown


def test_measure_all_skips_what_did_not_run():
    summary = {"task": "sst2", "per_seed_prompt_accuracy": [0.8], "per_seed_top1_accuracy": [0.7]}
    ours = measure_all(table1=[summary], pruning=None, controls=None)
    assert set(ours) == {"table1.sst2.prompt_tuning", "table1.sst2.top1_neuron"}
    assert str(ours["table1.sst2.prompt_tuning"]) == "80.0 (n=1)"


def test_settings_differences_name_only_what_is_not_the_papers():
    differences = settings_differences(
        n_tokens=8,
        seeds=5,
        data_caps={"train": 240, "dev": None, "test": 150},
        perturbation_positions="prompt",
        perturbation_scope="per_layer",
        perturbation_examples=100,
        label_word_draws=5,
        keep_share=0.02,
        layer_share=0.75,
        speed_reference={"batch": 8, "length": 64},
        precision="fp32",
    )
    assert differences == {
        "": "8 prompt tokens (paper 127); examples capped: train ≤ 240, test ≤ 150",
        "fig4": "positions prompt; each sweep point on the first 100 test examples",
        "table4.speedup": "timed at batch 8 x length 64",
        "skeleton.speedup": "timed at batch 8 x length 64",
    }
    # a sweep over the whole capped test split says nothing more
    assert "fig4" not in settings_differences(data_caps={"test": 150}, perturbation_examples=150)
    assert settings_differences(precision="bf16") == {"": "bf16 autocast (papers fp32)"}
    assert "prompt.precision auto; papers fp32" in settings_differences(precision="auto")[""]


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"claim": "c", "paper": "p", "reference": "r", "value": 1.0}, "id"),
        ({"id": "x.y", "claim": "c", "paper": "p", "value": 1.0}, "reference"),
        ({"id": "x.y", "claim": "c", "paper": "p", "reference": "r"}, "value"),
        ({"id": "x.y", "claim": "c", "paper": "p", "reference": "r", "value": "91.6"}, "value"),
        ({"id": "x.y", "claim": "", "paper": "p", "reference": "r", "value": None}, "claim"),
        ({"id": "x.y", "claim": "c", "paper": "p", "reference": "r", "value": None, "unit": "percent"}, "unit"),
    ],
)
def test_a_malformed_entry_names_the_entry_and_the_field(entry, field):
    good = claim("table1.sst2.top1_neuron", 91.8)
    with pytest.raises(ClaimsError, match=rf"entry 2\b.*'{field}'"):
        validate_claims([good, entry])


def test_a_malformed_file_names_its_entry(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n  - id: a.b\n    claim: c\n    paper: p\n    value: 1.0\n")
    with pytest.raises(ClaimsError, match=r"claims.yaml: entry 1 \(a.b\): field 'reference' is missing"):
        load_claims(path)
    with pytest.raises(ClaimsError, match="unknown field"):
        validate_claims([{**claim("a.b"), "refrence": "Table 1"}])
    with pytest.raises(ClaimsError, match="repeats"):
        validate_claims([claim("a.b"), claim("a.b")])


def test_every_shipped_claim_has_the_fields_and_a_reference():
    claims = load_claims(CLAIMS_FILE)
    assert len(claims) > 20
    for c in claims:
        assert c["reference"].strip() and c["paper"].strip() and c["claim"].strip()
        assert c["value"] is not None or c["note"], f"{c['id']}: a null value says why in its note"
        assert c["unit"] is not None, f"{c['id']}: no unit"
    ids = {c["id"] for c in claims}
    known = {
        "table1.sst2.top1_neuron": 91.8,
        "table1.sst2.prompt_tuning": 91.6,
        "table1.imdb.top1_neuron": 91.6,
        "table1.imdb.prompt_tuning": 92.0,
        "table1.ag_news.top1_neuron": 98.8,
        "table1.ag_news.prompt_tuning": 98.9,
        "sec4_4.label_words_spearman": 0.87,
        "table4.parameters_kept": 66.6,
        "table4.speedup": 1.34,
        "skeleton.speedup": 1.73,
        "aux.hans.top10_threshold": 0.43,
        "aux.bigbench_arithmetic.top10_threshold": 0.93,
    }
    values = {c["id"]: c["value"] for c in claims}
    assert {k: values[k] for k in known} == known
    # every id an extractor writes for the default tasks has its claim
    for task in ("sst2", "imdb", "qnli"):
        assert {f"table1.{task}.top1_neuron", f"table3.{task}.random_model", f"fig4.{task}.own_drop"} <= ids
    assert {"fig5.same_type_spearman", "fig5.cross_type_spearman", "skeleton.keep_ratio"} <= ids


def test_controls_cells_with_their_trial_count_are_read_with_it():
    from skill_neurons.reproduction import controls_measured

    table = pd.DataFrame(
        [
            {
                "task": "sst2",
                "random guess (%)": "50.0",
                "hard prompt (%)": "76.0",
                "random prompt (%)": "70.2 ± 3.1 (n=5)",
                "tuned prompt (%)": "78.5 ± 2.2",
            }
        ]
    )
    ours = controls_measured(table)
    assert ours["table3.sst2.random_prompt"].mean == 70.2 and ours["table3.sst2.random_prompt"].sd == 3.1
    assert ours["table3.sst2.random_prompt"].n == 5 and ours["table3.sst2.hard_prompt"].n == 1


def test_aux_rows_say_what_differs_from_the_papers_setting():
    differences = aux_settings_differences(8, 2, {"train": 400, "validation": 200})
    assert differences == {
        "aux": "8 prompt tokens (paper 20); mean over 2 prompt seeds; examples capped: train ≤ 400, validation ≤ 200"
    }
    assert aux_settings_differences(20, 1, {"train": 10})["aux"] == "one prompt seed; examples capped: train ≤ 10"
    assert aux_settings_differences(20, 1, {"train": 10}, "bf16")["aux"].endswith("; bf16 autocast (papers fp32)")
