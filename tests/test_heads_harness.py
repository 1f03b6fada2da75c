"""``benchmarks/training/heads_camvid.py`` (issue 26): run states, the budget, seed statistics,
verdicts and the README table, all without training."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

from leanseg.config import apply_overrides
from leanseg.files.run_dir import RunDirectory

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """The harness modules as the scripts import them: their folder is on the path (and
    ``heads_camvid`` puts ``benchmarks/`` on it for ``common`` and ``tables``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS / "training"))
    return (
        importlib.import_module("heads_camvid"),
        importlib.import_module("heads_claims"),
        importlib.import_module("tables"),
    )


def fake_run(folder: Path, val_iterations: list[int], checkpoint: bool) -> None:
    """A run folder as ``leanseg train`` leaves it: marker, log lines, maybe ``last.pt``."""
    folder.mkdir(parents=True)
    (folder / ".leanseg-run").write_text("{}")
    run = RunDirectory(folder)
    for iteration in val_iterations:
        run.append_metrics({"split": "train", "iteration": iteration, "loss": 1.0})
        run.append_metrics(
            {"split": "val", "iteration": iteration, "miou": 0.5, "boundary_miou": 0.25}
        )
    if checkpoint:
        run.checkpoint_dir.mkdir()
        run.last_checkpoint.write_bytes(b"not read")


# --------------------------------------------------------------------------- run states


def test_run_states_finished_resume_start(bench, tmp_path):
    harness, _, _ = bench
    fake_run(tmp_path / "done", [600, 1200], checkpoint=True)
    fake_run(tmp_path / "midway", [600], checkpoint=True)
    fake_run(tmp_path / "no_checkpoint", [], checkpoint=False)
    fake_run(tmp_path / "longer_budget", [1200], checkpoint=True)  # a shorter run's last val
    assert harness.run_state(tmp_path / "done", 1200) == "finished"
    assert harness.run_state(tmp_path / "midway", 1200) == "resume"
    assert harness.run_state(tmp_path / "no_checkpoint", 1200) == "start"
    assert harness.run_state(tmp_path / "missing", 1200) == "start"
    assert harness.run_state(tmp_path / "longer_budget", 2400) == "resume"
    scores = harness.seed_scores(tmp_path / "done", 1200)
    assert scores == {"miou": 50.0, "boundary_miou": 25.0, "iteration": 1200}
    assert harness.seed_scores(tmp_path / "midway", 1200) is None


def test_plan_skips_finished_runs_and_resumes_started_ones(bench, tmp_path):
    harness, _, _ = bench
    budget = harness.Budget(("train.max_iters=1200",), "k", tmp_path, (0, 1, 2))
    run = harness.Run("ladder", Path("configs/lite0/heads/ladder_camvid.yaml"), ("x.y=1",))
    fake_run(budget.folder(run, 0), [1200], checkpoint=True)
    fake_run(budget.folder(run, 1), [600], checkpoint=True)
    rows = harness.plan([run], budget, threads=1, max_iters={"ladder": 1200})
    assert [(seed, state) for _, seed, state, _ in rows] == [
        (0, "finished"),
        (1, "resume"),
        (2, "start"),
    ]
    assert rows[0][3] is None
    resumed, started = rows[1][3], rows[2][3]
    assert "--resume" in resumed.command() and "--force" in started.command()
    assert resumed.work_dir == tmp_path / "ladder_s1"
    assert resumed.log == tmp_path / "ladder_s1.log"  # beside the run folder, not inside it
    # The recipe's overrides, then the row's, then the seed and the threads.
    assert list(started.overrides) == [
        "train.max_iters=1200",
        "x.y=1",
        "train.seed=2",
        "train.num_threads=1",
    ]


# --------------------------------------------------------------------------- the budget


def test_recipe_overrides_take_data_and_train_of_the_recipe_and_its_base(bench, tmp_path):
    harness, _, _ = bench
    (tmp_path / "base.yaml").write_text(
        "data: {root: ../data, crop_size: [288, 384], batch_size: 8}\n"
        "train: {lr: 6.0e-4, max_iters: 2600, num_threads: auto, min_lr: 1.0e-6}\n"
        "model: {head: {name: ladder}}\n"
    )
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(
        "base: base.yaml\n"
        "data:\n  crop_schedule:\n    - {crop_size: [192, 256], until: 1800}\n  cache: true\n"
        "train: {max_iters: 2400, freeze_backbone_until: 8}\n"
    )
    overrides = harness.recipe_overrides(recipe)
    keys = [item.split("=")[0] for item in overrides]
    assert "data.root" not in keys and "train.num_threads" not in keys  # not taken
    assert not any(key.startswith("model.") for key in keys)
    # Through leanseg's own --set parser the values come back as the files state them.
    raw = apply_overrides({}, overrides)
    assert raw["data"]["crop_schedule"] == [{"crop_size": [192, 256], "until": 1800}]
    assert raw["data"]["crop_size"] == [288, 384] and raw["data"]["cache"] is True
    assert raw["train"]["max_iters"] == 2400  # the recipe's, not its base's
    assert float(raw["train"]["lr"]) == 6.0e-4 and float(raw["train"]["min_lr"]) == 1.0e-6
    assert harness.budget_key(overrides) != harness.budget_key([*overrides, "train.lr=1"])


def test_every_head_config_is_a_row_and_trains_on_the_shipped_recipe(bench):
    harness, _, _ = bench
    runs = harness.head_runs()
    names = [run.name for run in runs]
    configs = sorted(p.name for p in harness.CONFIGS.glob("*_camvid.yaml"))
    assert len(runs) == len(configs) - 1 + len(harness.VARIANTS)  # all but the base
    assert {f"sandf_{row}" for row in "abcdefghi"} <= set(names)
    assert {"qgn", "qgn_all", "ladder_scratch"} <= set(names)
    budget = harness.Budget.from_recipe(harness.RECIPE, [], Path("/tmp/unused"), (0,))
    # The shipped recipe's own budget (not its base's, nor the head configs' 1800).
    recipe = yaml.safe_load(harness.RECIPE.read_text())
    stages = [tuple(stage["crop_size"]) for stage in recipe["data"]["crop_schedule"]]
    for run in runs:
        harness.check_same_data(harness.RECIPE, run)
        cfg = harness.run_config(run, budget)  # every override parses and validates
        assert cfg.train.max_iters == recipe["train"]["max_iters"], run.name
        assert [tuple(stage.crop_size) for stage in cfg.data.crop_schedule] == stages, run.name
    scratch = harness.run_config(runs[names.index("ladder_scratch")], budget)
    assert scratch.model.backbone["pretrained"] is None
    assert not scratch.train.freeze_backbone_bn and scratch.train.freeze_backbone_until is None


def test_nrd_and_deeplabv3plus_rows_share_their_encoder(bench):
    """NRD Table 1 compares the two decoders on one encoder, ASPP included: the rows may differ
    in the head only."""
    harness, _, _ = bench
    runs = {run.name: run for run in harness.head_runs()}
    budget = harness.Budget.from_recipe(harness.RECIPE, [], Path("/tmp/unused"), (0,))
    nrd, deeplab = (harness.run_config(runs[name], budget) for name in ("nrd", "deeplabv3plus"))
    assert nrd.model.context == deeplab.model.context
    assert nrd.model.context["name"] == "aspp"
    assert nrd.model.backbone == deeplab.model.backbone
    assert nrd.model.head["name"] == "nrd" and deeplab.model.head["name"] == "deeplabv3plus"


# --------------------------------------------------------------------------- statistics


def test_mean_std_and_spread_of_a_difference(bench):
    _, claims, _ = bench
    stats = claims.seed_statistics({0: 70.0, 1: 72.0, 2: 74.0})
    assert stats == {"n": 3, "mean": 72.0, "std": 2.0}
    assert claims.seed_statistics({0: 70.0})["std"] is None
    unpaired = claims.compare({0: 72.0, 1: 74.0, 2: 76.0}, {0: 70.0, 1: 70.0, 2: 70.0}, False)
    assert unpaired["delta"] == pytest.approx(4.0) and unpaired["n"] == 3
    assert unpaired["spread"] == pytest.approx((2.0**2 + 0.0**2) ** 0.5)
    paired = claims.compare({0: 72.0, 1: 75.0, 2: 78.0}, {0: 70.0, 1: 72.0, 2: 74.0}, True)
    assert paired["seed_deltas"] == {0: 2.0, 1: 3.0, 2: 4.0}
    assert paired["delta"] == pytest.approx(3.0) and paired["spread"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kind", "paper", "delta", "spread", "n", "expected"),
    [
        ("difference", 1.5, 2.0, 1.0, 3, "reproduced"),
        ("difference", 1.5, -2.0, 1.0, 3, "not reproduced"),
        ("difference", 1.5, 0.5, 1.0, 3, "tie within spread"),
        ("difference", -0.7, -2.0, 1.0, 3, "reproduced"),
        ("difference", 1.5, 2.0, 1.0, 2, "pending (2 of 3 seeds)"),
        ("difference", 1.5, None, None, 0, "pending (0 of 3 seeds)"),
        ("no difference", -0.01, 0.5, 1.0, 3, "reproduced"),
        ("no difference", -0.01, 1.5, 1.0, 3, "not reproduced"),
    ],
)
def test_verdicts(bench, kind, paper, delta, spread, n, expected):
    _, claims, _ = bench
    assert claims.verdict(kind, paper, delta, spread, n) == expected


def test_judge_reads_both_sides_and_a_cost_ratio(bench):
    _, claims, _ = bench
    values = {
        ("nrd", "miou"): {0: 71.0, 1: 72.0, 2: 73.0},
        ("deeplabv3plus", "miou"): {0: 69.0, 1: 70.0, 2: 71.0},
        ("nrd", "head_gmac"): 5.0,
        ("deeplabv3plus", "head_gmac"): 10.0,
    }
    by_claim = {c.claim: c for c in claims.CLAIMS}
    row = claims.judge(
        by_claim["NRD beats the DeepLabV3+ decoder"], lambda t: values[(t.row, t.metric)]
    )
    assert row["paper_delta"] == 0.9 and row["delta"] == pytest.approx(2.0)
    assert row["spread"] == pytest.approx(2**0.5) and row["verdict"] == "reproduced"
    assert row["same_sign_seeds"] == "3 of 3 seeds"
    cost = claims.judge(
        by_claim["NRD's decoder costs under 1/3 of DeepLabV3+'s"],
        lambda t: values[(t.row, t.metric)],
    )
    assert cost["delta"] == 0.5 and cost["verdict"] == "not reproduced"


# S&F Table 2a mIoU (%), rows A-I, and QGN Table 1's adaptive-loss mIoU (%) by (trained,
# evaluated) propagation scheme, as printed in the papers (../shared/papers). The harness's row
# ``qgn`` trains GTC, ``qgn_all`` trains All; a term's metric ``scheme:x`` evaluates with x.
SANDF_PAPER = {"A": 40.42, "B": 42.02, "C": 42.00, "D": 40.41, "E": 41.54, "F": 42.07,
               "G": 43.07, "H": 44.31, "I": 42.63}  # fmt: skip
QGN_PAPER = {
    ("qgn_all", "scheme:all"): 78.20,
    ("qgn_all", "scheme:gtc"): 72.89,
    ("qgn_all", "scheme:pc"): 71.33,
    ("qgn", "scheme:all"): 18.25,
    ("qgn", "scheme:gtc"): 81.50,
    ("qgn", "scheme:pc"): 73.00,
}


def test_paper_numbers_are_the_tables(bench):
    """Every S&F row claim's delta is the difference of the Table 2a values of the two rows it
    compares; every QGN Table 1 claim's of the Table 1 values of the two runs and schemes it
    compares (so a claim comparing the wrong runs fails too)."""
    _, claims, _ = bench
    assert claims.SANDF_TABLE_2A == SANDF_PAPER
    by_claim = {c.claim: c for c in claims.CLAIMS}
    sandf = [c for c in claims.CLAIMS if c.claim.startswith("S&F row ")]
    assert len(sandf) == 8 + 4  # B..I vs A, then F-E, G-B, H-C, H-I
    for claim in sandf:
        better, worse = (
            term.row.removeprefix("sandf_").upper() for term in (claim.better, claim.worse)
        )
        assert claim.claim == f"S&F row {better} vs row {worse}"
        expected = SANDF_PAPER[better] - SANDF_PAPER[worse]
        assert claim.paper_delta == pytest.approx(expected), claim.claim
    assert by_claim["S&F row H vs row C"].paper_delta == pytest.approx(2.31)  # S&F text
    assert by_claim["S&F row D vs row A"].kind == "no difference"
    qgn = [c for c in claims.CLAIMS if c.source.startswith("QGN Table 1")]
    assert len(qgn) == 5
    for claim in qgn:
        better, worse = ((term.row, term.metric) for term in (claim.better, claim.worse))
        expected = QGN_PAPER[better] - QGN_PAPER[worse]
        assert claim.paper_delta == pytest.approx(expected), claim.claim


# --------------------------------------------------------------------------- tables


def fake_record(done: bool) -> dict:
    seeds = [{"seed": s, "miou": 70.0 + s, "boundary_miou": 50.0} for s in range(3 if done else 1)]
    head = {
        "seeds": seeds,
        "status": "done" if done else "pending (1 of 3 seeds)",
        "miou_mean": 71.0 if done else 70.0,
        "miou_std": 1.0 if done else None,
        "boundary_miou_mean": 50.0,
        "boundary_miou_std": 0.0 if done else None,
        "command": "python benchmarks/training/heads_camvid.py --runs ladder --jobs 2",
    }
    return {
        "budget": {
            "recipe": "configs/lite0/ladder_camvid_fast.yaml",
            "max_iters": [2400],
            "seeds": [0, 1, 2],
            "required_seeds": 3,
            "runs_dir": "runs/x",
        },
        "spread": "as documented",
        "heads": {"ladder": head},
        "qgn_schemes": {},
        "costs": {
            "ladder": {
                "gmac_1024x2048": 15.04,
                "decoder_gmac_1024x2048": 6.8,
                "latency_ms_1024x2048": 1234.4,
                "train_activation_mb_768x768_b2": 900.2,
            }
        },
        "verdicts": [
            {
                "claim": "c",
                "source": "s",
                "paper_delta": 1.5,
                "kind": "difference",
                "delta": 2.0 if done else 3.0,
                "spread": 1.0 if done else None,
                "verdict": "reproduced" if done else "pending (1 of 3 seeds)",
                "note": "",
            }
        ],
        "command": "python benchmarks/training/heads_camvid.py --report-only",
    }


def test_table_shows_mean_std_and_costs_of_finished_rows(bench):
    _, _, tables = bench
    block = tables.readme_block(fake_record(done=True))
    assert "| ladder | 71.0 ± 1.0 | 50.0 ± 0.0 | 15.0 (6.80) | 1234 | 900 |" in block
    assert "| c | s | +1.50 | +2.0 ± 1.0 | reproduced |" in block
    assert block.startswith(tables.START) and block.endswith(tables.END + "\n")


def test_pending_rows_show_their_seeds_labelled_and_no_verdict(bench):
    _, _, tables = bench
    block = tables.readme_block(fake_record(done=False))
    row = "| ladder | 70.0, pending (1 of 3 seeds) | 50.0, pending (1 of 3 seeds) |"
    assert row in block
    assert "| c | s | +1.50 | +3.0 ± – | pending (1 of 3 seeds) |" in block
    assert "reproduced" not in block and "70.0 ±" not in block


def test_replace_block_keeps_the_rest_of_the_readme(bench, tmp_path):
    _, _, tables = bench
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n\n{tables.START}\nold\n{tables.END}\n\n## next\n")
    record = fake_record(done=True)
    assert tables.update_readme(record, readme)
    text = readme.read_text()
    assert text.startswith("# top\n\n" + tables.START) and text.endswith(
        tables.END + "\n\n## next\n"
    )
    assert "old" not in text and not tables.update_readme(record, readme)  # idempotent
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="marker"):
        tables.update_readme(record, readme)


def test_check_mode_fails_on_a_stale_readme(bench, tmp_path):
    _, _, tables = bench
    path = tmp_path / "r.json"
    path.write_text(json.dumps(fake_record(done=True)))
    readme = tmp_path / "README.md"
    readme.write_text(f"{tables.START}\n{tables.END}\n")
    with pytest.raises(SystemExit, match="stale"):
        tables.main(["--json", str(path), "--readme", str(readme), "--check"])
    tables.main(["--json", str(path), "--readme", str(readme)])
    tables.main(["--json", str(path), "--readme", str(readme), "--check"])  # passes now


def test_a_paired_claim_not_reproduced_says_what_was_checked(bench):
    _, claims, _ = bench
    by_claim = {c.claim: c for c in claims.CLAIMS}
    claim = by_claim["QGN trained GTC: GTC evaluation (oracle) beats PC"]
    values = {"scheme:gtc": {0: 50.0, 1: 51.0, 2: 52.5}, "scheme:pc": {0: 55.0, 1: 55.0, 2: 55.0}}
    row = claims.judge(claim, lambda t: values[t.metric])
    assert row["verdict"] == "not reproduced"
    assert "0 of 3 per-seed differences have the paper's sign" in row["checked"]


def test_mixed_batches_row_has_no_paper_number_and_waits_for_seeds(bench, tmp_path, monkeypatch):
    harness, _, _ = bench
    path = tmp_path / "multi_domain.json"
    assert harness.mixed_batches_row(path)["verdict"] == "pending (0 of 3 seeds)"
    mixed = {"mixed": {"camvid": 0.6}, "single": {"camvid": 0.5}}
    path.write_text(json.dumps({"d_mixed_vs_single_batches": mixed}))
    monkeypatch.setattr(harness, "REPO", tmp_path)  # the note names it relative to the repo
    row = harness.mixed_batches_row(path)
    assert row["paper_delta"] is None and row["delta"] == pytest.approx(10.0)
    assert row["verdict"] == "pending (1 of 3 seeds)"


def test_a_finished_run_is_kept_in_its_record_and_stays_finished_without_its_folder(
    bench, tmp_path, monkeypatch
):
    harness, _, _ = bench
    budget = harness.Budget(
        ("train.max_iters=1200",), "k", tmp_path / "runs", (0,), tmp_path / "rec"
    )
    run = harness.Run("ladder", harness.CONFIGS / "ladder_camvid.yaml")
    monkeypatch.setattr(harness, "is_qgn", lambda run, budget: False)
    fake_run(budget.folder(run, 0), [600], checkpoint=True)
    harness.write_record(run, 0, budget, 1200, 10.0)
    assert not budget.record(run, 0).exists()  # not finished: nothing kept
    (budget.folder(run, 0) / "metrics.jsonl").unlink()
    fake_run_lines = RunDirectory(budget.folder(run, 0))
    fake_run_lines.append_metrics(
        {"split": "val", "iteration": 1200, "miou": 0.5, "boundary_miou": None}
    )
    harness.write_record(run, 0, budget, 1200, 10.0)
    record = json.loads(budget.record(run, 0).read_text())
    assert record["scores"] == {"miou": 50.0, "boundary_miou": None, "iteration": 1200}
    assert record["train_seconds"] == 10.0
    assert record["machine"]["leanseg"]["commit"] and record["command"].startswith("python")
    import shutil

    shutil.rmtree(budget.runs_dir)  # the run folders are gone (a new session)
    assert harness.run_state(budget.folder(run, 0), 1200, budget.record(run, 0)) == "finished"
    assert harness.seed_scores(budget.folder(run, 0), 1200, budget.record(run, 0))["miou"] == 50.0
    # A record of another budget length does not count.
    assert harness.run_state(budget.folder(run, 0), 2400, budget.record(run, 0)) == "start"
    rows = harness.plan([run], budget, threads=1, max_iters={"ladder": 1200})
    assert [state for _, _, state, _ in rows] == ["finished"]


def test_runs_are_planned_seed_by_seed(bench, tmp_path):
    harness, _, _ = bench
    budget = harness.Budget((), "k", tmp_path, (0, 1))
    runs = [harness.Run(name, Path(f"{name}.yaml")) for name in ("a", "b")]
    rows = harness.plan(runs, budget, threads=1, max_iters={"a": 10, "b": 10})
    assert [(run.name, seed) for run, seed, _, _ in rows] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("b", 1),
    ]


def test_an_extra_override_concerns_only_the_rows_it_trains(bench, tmp_path, capsys):
    harness, _, _ = bench
    weights = "model.head.class_weights=[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"  # bilinear takes none
    folders = ["--runs-dir", str(tmp_path / "runs"), "--records-dir", str(tmp_path / "records")]
    harness.main(["--plan", "--runs", "ladder", "--seeds", "0", "--set", weights, *folders])
    assert "ladder seed 0: start" in capsys.readouterr().out


def test_short_answer_names_the_best_row_its_ties_and_the_fastest_tie(bench):
    _, _, tables = bench
    record = fake_record(done=True)
    ladder = record["heads"]["ladder"]
    record["heads"]["ldn"] = {**ladder, "miou_mean": 72.0, "miou_std": 0.5}
    record["heads"]["bilinear"] = {**ladder, "miou_mean": 60.0, "miou_std": 0.5}
    record["heads"]["nrd"] = {**ladder, "status": "pending (1 of 3 seeds)", "miou_mean": 80.0}
    record["costs"]["ldn"] = {**record["costs"]["ladder"], "latency_ms_1024x2048": 2000.0}
    answer = "\n".join(tables.short_answer(record))
    # 72.0 - 71.0 = 1.0 < sqrt(0.5^2 + 1.0^2): a tie; bilinear is 12 points below; the
    # pending nrd is left out however high it scores.
    assert "Most accurate: **ldn**, 72.0 ± 0.5 %" in answer
    assert "Tied with it within the seed spread: ladder (71.0 ± 1.0)." in answer
    assert "bilinear" not in answer and "nrd" not in answer
    assert "Fastest of these on the CPU at 1024x2048: **ladder** (1234 ms; ldn: 2000 ms)" in answer
    assert "Left out (not trained on every seed yet): 1 of 4 rows." in answer
    del record["costs"]["ldn"]
    assert "not measured yet" in "\n".join(tables.short_answer(record))
    record["heads"]["ldn"]["miou_mean"] = 75.0  # 4 points: outside the spread
    assert "No other finished row is within the seed spread" in "\n".join(
        tables.short_answer(record)
    )


def test_short_answer_without_a_finished_row(bench):
    _, _, tables = bench
    assert tables.short_answer(fake_record(done=False)) == [
        "- No row is trained on every seed yet (1 pending)."
    ]


def test_cost_image_is_a_real_scene_cropped_to_the_benchmark_size(bench, shared_data):
    """QGN's decoder spends by the scene, so costs are counted on a CamVid image, not noise."""
    harness, _, _ = bench
    budget = harness.Budget.from_recipe(harness.RECIPE, [], Path("/tmp/unused"), (0,))
    ladder = next(run for run in harness.head_runs() if run.name == "ladder")
    image = harness.camvid_image(ladder, budget, size=(256, 512))
    assert image.shape == (1, 3, 256, 512)
    # A photograph varies smoothly: neighbouring pixels agree far more than noise would.
    step = (image[..., 1:] - image[..., :-1]).abs().mean()
    assert step < 0.5 * image.std()


# --------------------------------------------------------------------------- stale runs


def saved_run_config(harness, run, budget, folder: Path, edit=None) -> None:
    """``folder/config.yaml`` as ``leanseg train`` writes it for the row, ``edit``ed first."""
    from leanseg.config import saved_config

    saved = saved_config(harness.run_config(run, budget), folder)
    if edit is not None:
        edit(saved)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))


def test_config_identity_names_what_trains_not_the_machine_nor_defaults(bench):
    harness, _, _ = bench
    from leanseg.config import load_config

    identity = harness.config_identity(load_config(None, []))
    machine_only = ["train.num_threads=7", "train.seed=3", "data.num_workers=2", "work_dir=x"]
    assert harness.config_identity(load_config(None, machine_only)) == identity
    wider = load_config(None, ["model.head={name: ladder, channels: 128}"])
    assert harness.config_identity(wider) != identity
    longer = load_config(None, ["train.max_iters=12345"])
    assert harness.config_identity(longer) != identity
    # Inside a crop stage too: a field at its default does not count, another value does.
    stage = "data.crop_schedule=[{crop_size: [64, 64], until: 10}]"
    same = "data.crop_schedule=[{crop_size: [64, 64], until: 10, scale: 1.0}]"
    other = "data.crop_schedule=[{crop_size: [64, 64], until: 10, scale: 0.5}]"
    staged = harness.config_identity(load_config(None, [stage]))
    assert staged != identity
    assert harness.config_identity(load_config(None, [same])) == staged
    assert harness.config_identity(load_config(None, [other])) != staged


def test_an_option_added_at_its_default_leaves_the_identity_as_it_was(bench):
    harness, _, _ = bench
    from dataclasses import dataclass, field

    @dataclass
    class Stage:
        size: int = 8
        until: int | None = None

    @dataclass
    class StageWithNewOption(Stage):
        scale: float = 1.0

    @dataclass
    class Section:
        stages: list = field(default_factory=list)
        lr: float = 0.1

    before = Section([Stage(16, 10)], lr=0.1)
    after = Section([StageWithNewOption(16, 10)], lr=0.1)
    assert (
        harness.non_default(before)
        == harness.non_default(after)
        == {"stages": [{"size": 16, "until": 10}]}
    )
    assert harness.non_default(Section([StageWithNewOption(16, 10, scale=0.5)])) == {
        "stages": [{"size": 16, "until": 10, "scale": 0.5}]
    }
    assert harness.non_default(Section(lr=(1, 2))) == {"lr": [1, 2]}  # as plain data


def stale_record_budget(harness, tmp_path):
    budget = harness.Budget(
        ("train.max_iters=1200",), "k", tmp_path / "runs", (0,), tmp_path / "rec"
    )
    return budget, harness.Run("ladder", harness.CONFIGS / "ladder_camvid.yaml")


def test_a_run_folder_of_an_older_leanseg_has_the_rows_identity(bench, tmp_path):
    harness, _, _ = bench
    budget, run = stale_record_budget(harness, tmp_path)
    identity = harness.row_identity(run, budget)
    written = budget.folder(run, 0)
    saved_run_config(harness, run, budget, written)
    assert harness.folder_identity(written) == identity

    def older(saved):  # options added since: the model's OHEM, a crop stage's scale
        del saved["model"]["hard_pixel_fraction"]
        for stage in saved["data"]["crop_schedule"]:
            del stage["scale"]

    old = budget.folder(run, 1)
    saved_run_config(harness, run, budget, old, older)
    assert harness.folder_identity(old) == identity
    assert harness.folder_identity(budget.folder(run, 2)) is None  # no folder
    (old / "config.yaml").write_text("model: {head: {name: no_such_head}}\n")
    assert harness.folder_identity(old) is None  # not a config any more: unknown


def test_a_record_of_another_config_of_the_row_is_stale_and_not_counted(
    bench, tmp_path, monkeypatch
):
    harness, _, _ = bench
    budget, run = stale_record_budget(harness, tmp_path)
    monkeypatch.setattr(harness, "is_qgn", lambda run, budget: False)
    fake_run(budget.folder(run, 0), [1200], checkpoint=True)
    harness.write_record(run, 0, budget, 1200, 10.0)
    identity = harness.row_identity(run, budget)
    record = json.loads(budget.record(run, 0).read_text())
    assert record["config_identity"] == identity
    folder, path = budget.folder(run, 0), budget.record(run, 0)
    assert harness.run_state(folder, 1200, path, identity) == "finished"
    # The head config changed after the run: its record no longer counts.
    record["config_identity"] = "0123456789"
    path.write_text(json.dumps(record))
    import shutil

    shutil.rmtree(budget.runs_dir)
    assert harness.run_state(folder, 1200, path, identity) == "stale"
    assert harness.seed_scores(folder, 1200, path, identity) is None
    assert harness.read_scheme_scores(path, 1200, identity) is None
    assert harness.summarise_row(run, budget, 1200)["seeds"] == []
    rows = harness.plan([run], budget, threads=1, max_iters={"ladder": 1200})
    (_, _, state, job) = rows[0]
    assert state == "stale" and job is not None and not job.resume


def test_a_run_folder_started_with_another_config_is_stale_and_set_aside(bench, tmp_path):
    harness, _, _ = bench
    budget, run = stale_record_budget(harness, tmp_path)
    folder = budget.folder(run, 0)
    fake_run(folder, [1200], checkpoint=True)  # finished, by its log
    saved_run_config(harness, run, budget, folder)
    identity = harness.row_identity(run, budget)
    assert harness.run_state(folder, 1200, None, identity) == "finished"

    def narrower(saved):
        saved["model"]["head"] = {**saved["model"]["head"], "channels": 32}

    saved_run_config(harness, run, budget, folder, narrower)
    assert harness.run_state(folder, 1200, None, identity) == "stale"
    assert harness.seed_scores(folder, 1200, None, identity) is None
    log = folder.parent / f"{folder.name}.log"
    log.write_text("training log")
    old = harness.folder_identity(folder)
    harness.set_aside(folder)
    assert not folder.exists() and not log.exists()
    assert (folder.parent / f"{folder.name}.stale-{old}" / "config.yaml").is_file()
    assert (folder.parent / f"{folder.name}.log.stale-{old}").read_text() == "training log"
    # The same stale config again (toggled back and forth): a numbered name, nothing replaced.
    fake_run(folder, [600], checkpoint=True)
    saved_run_config(harness, run, budget, folder, narrower)
    harness.set_aside(folder)
    assert (folder.parent / f"{folder.name}.stale-{old}-2" / "config.yaml").is_file()
    assert (folder.parent / f"{folder.name}.stale-{old}" / "checkpoints").is_dir()


def test_a_stale_run_folder_in_use_is_left_alone(bench, tmp_path):
    harness, _, _ = bench
    import subprocess
    import sys

    folder = tmp_path / "ladder_s0"
    fake_run(folder, [600], checkpoint=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from leanseg.files.folder_lock import FolderLock; "
            f"FolderLock({str(folder)!r}, 'test').acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match="in use"):
            harness.set_aside(folder)
        assert folder.is_dir() and (folder / "checkpoints").is_dir()
    finally:
        holder.kill()
        holder.wait()


def test_finished_runs_get_records_of_the_rows_config(bench, tmp_path, monkeypatch):
    harness, _, _ = bench
    budget, run = stale_record_budget(harness, tmp_path)
    monkeypatch.setattr(harness, "is_qgn", lambda run, budget: False)
    identity = harness.row_identity(run, budget)
    folder = budget.folder(run, 0)
    fake_run(folder, [1200], checkpoint=True)
    saved_run_config(harness, run, budget, folder)
    harness.write_record(run, 0, budget, 1200, 10.0)
    path = budget.record(run, 0)
    made = json.loads(path.read_text())
    # A record from before records kept the digest gains it, and keeps what it had.
    older = {key: value for key, value in made.items() if key != "config_identity"}
    path.write_text(json.dumps(older))
    todo = harness.plan([run], budget, threads=1, max_iters={"ladder": 1200})
    assert [state for _, _, state, _ in todo] == ["finished"]  # by its folder
    harness.keep_records(todo, budget, {"ladder": 1200})
    kept = json.loads(path.read_text())
    assert kept["config_identity"] == identity and kept["train_seconds"] == 10.0
    # A record of another config beside a finished folder of this one is made again.
    path.write_text(json.dumps({**made, "config_identity": "0123456789"}))
    harness.keep_records(todo, budget, {"ladder": 1200})
    remade = json.loads(path.read_text())
    assert remade["config_identity"] == identity and remade["train_seconds"] is None


def test_costs_of_another_config_of_the_row_are_dropped(bench, tmp_path, capsys):
    harness, _, _ = bench
    budget, run = stale_record_budget(harness, tmp_path)
    identity = harness.row_identity(run, budget)
    costs = {
        "ladder": {"config_identity": identity, "gmac_1024x2048": 1.0},
        "bilinear": {"config_identity": "0123456789", "gmac_1024x2048": 2.0},
        "gone": {"gmac_1024x2048": 3.0},
    }
    bilinear = harness.Run("bilinear", harness.CONFIGS / "bilinear_camvid.yaml")
    kept = harness.current_costs(costs, [run, bilinear], budget)
    assert kept == {"ladder": costs["ladder"]}
    out = capsys.readouterr().out
    assert "costs of bilinear" in out and "costs of gone" in out
