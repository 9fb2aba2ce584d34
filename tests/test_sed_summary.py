"""The SED sweep summary: trials as the sweep logs their params (flattened resolved config and sampled variants),
grouped by every variant but the method; each group's table and its verdict on the issue's three checks."""

from orchestrator.families.sed.summary import sed_table
from orchestrator.tracking import TrialHistory, flatten
from workloads.ensembles.config import SEDConfig


def trial(i: int, method: str, start: str, dataset: str, pds: float, accuracy: float, lowest: float) -> TrialHistory:
    config = SEDConfig(dataset={"Digits": "digits", "ColorDSprites": "colordsprites"}[dataset])
    point = {"variants.method": method, "variants.start": start, "variants.dataset": dataset}
    params = {k: str(v) for k, v in flatten({"config": config.model_dump(mode="json"), "sampled": point}).items()}
    metrics = {"eval/ood_auroc_pds": pds, "eval/id_accuracy": accuracy, "eval/id_accuracy_min_member": lowest}
    # an early evaluation that the summary must not take for the final one
    return TrialHistory(f"sed_{i:05d}", f"run{i}", params, {m: [(500, 0.0), (1000, v)] for m, v in metrics.items()})


def test_groups_settings_and_judges_sed_against_the_deep_ensemble():
    trials = [
        trial(0, "SED", "pretrained head", "Digits", 0.94, 0.975, 0.59),
        trial(1, "SED", "pretrained head", "Digits", 0.92, 0.971, 0.64),
        trial(2, "deep ensemble", "pretrained head", "Digits", 0.50, 0.985, 0.985),
        trial(3, "deep ensemble", "pretrained head", "Digits", 0.50, 0.985, 0.985),
        # independent heads: SED detects worse, loses 4 points and one member sits at chance (1/8) + 0.05
        trial(4, "SED", "independent", "Digits", 0.90, 0.945, 0.175),
        trial(5, "deep ensemble", "independent", "Digits", 0.96, 0.985, 0.98),
        trial(6, "all pairs", "independent", "Digits", 0.85, 0.96, 0.90),
    ]
    table = sed_table(trials)
    pretrained, independent = table.split("## dataset = Digits, start = independent")
    assert "## dataset = Digits, start = pretrained head" in pretrained
    assert "| SED | 2 | 0.930 ± 0.014 | 0.973 ± 0.003 | 0.615 ± 0.035 |" in pretrained
    assert "| deep ensemble | 2 | 0.500 ± 0.000 |" in pretrained
    assert (
        "SED vs deep ensemble: PDS AUROC +0.430 (better); ID accuracy -1.2 points (within 2); "
        "lowest member 0.590 (above chance + 10 points = 0.225)"
    ) in pretrained
    assert "| all pairs | 1 | 0.850 |" in independent
    assert (
        "PDS AUROC -0.060 (not better); ID accuracy -4.0 points (beyond 2); "
        "lowest member 0.175 (below chance + 10 points = 0.225)"
    ) in independent


def test_chance_follows_the_dataset_and_its_held_out_labels():
    table = sed_table(
        [
            trial(0, "SED", "independent", "ColorDSprites", 0.6, 0.99, 0.62),
            trial(1, "deep ensemble", "independent", "ColorDSprites", 0.55, 0.99, 0.98),
        ]
    )
    assert "lowest member 0.620 (above chance + 10 points = 0.600)" in table  # 2 shapes trained: chance 1/2
