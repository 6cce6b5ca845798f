import csv
import json

import pytest
import yaml
from sweep_fixtures import trial_record

from e2e_sae.run_dir import CHECKPOINT_FILE, RunDir
from sweeps.cli import main as sweeps_main
from sweeps.reporting.report import compute_pareto, render_markdown, write_report
from sweeps.reporting.results import load_trials
from sweeps.reporting.wandb_upload import _matched_rows, log_report_to_wandb

A, B = "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"
EVAL = {"ce_loss_original": 3.0, "eval_tokens": 2048, "n_ctx": 64, "n_dict_elements": 1024}

# (dir, hook, mode, sparsity coeff, state, final metrics {l0, alive_dict_elements, ce_loss_increase})
TRIALS = [
    ("train_00000", A, "local", 1.0, "finished", (100, 900, 0.10)),
    ("train_00001", A, "local", 4.0, "finished", (40, 600, 0.30)),
    ("train_00002", A, "local", 0.5, "finished", (120, 950, 0.15)),  # dominated on both fronts
    ("train_00003", A, "e2e", 1.0, "finished", (30, 800, 0.12)),
    ("train_00004", A, "e2e", 4.0, "finished", (10, 500, 0.25)),
    ("train_00005", A, "e2e+ds", 1.0, "finished", (50, 700, 0.08)),
    ("train_00006", A, "e2e+ds", 4.0, "finished", (20, 400, 0.20)),
    ("train_00007", B, "local", 1.0, "finished", (60, 300, 0.05)),
    ("train_00008", B, "e2e", 1.0, "finished", (20, 250, 0.07)),
    ("train_00009", B, "e2e+ds", 1.0, "errored", (15, 200, 0.06)),
    ("train_00010", B, "local", 9.0, "incomplete", (1, 10, 0.01)),  # would dominate, but is not final
]


def metric_row(l0, alive, ce_inc, n_samples, final, i):
    return {
        **EVAL,
        "l0": l0,
        "alive_dict_elements": alive,
        "ce_loss_increase": ce_inc,
        "ce_loss_spliced": 3.0 + ce_inc,
        "kl": ce_inc / 2,
        "explained_variance": 0.9,
        "step": i,
        "n_samples": n_samples,
        "final": final,
        "training_iteration": i + 1,
        "trial_id": "abc",
        "done": final,
        "config": {"mode": "ignored"},
    }


def build_experiment(root, trials=TRIALS, name="toy"):
    """A Tune-like experiment dir: sweep.yaml and one trial dir per trial."""
    exp = root / name
    exp.mkdir(parents=True)
    saved = {"name": name, "model": "toy-lm", "run": {}, "axes": {"mode": ["local"], "sparsity_coeff": [1.0]}}
    (exp / "sweep.yaml").write_text(yaml.safe_dump(saved))  # as `sweeps run` saves it (the parts the report reads)
    for trial_dir, hook, mode, coeff, state, (l0, alive, ce) in trials:
        d = exp / trial_dir
        d.mkdir()
        params = trial_record(mode, coeff, hook=hook, ratio=4.0, run={"model": {"name": "toy-lm"}}).tune_config()
        (d / "params.json").write_text(json.dumps(params))
        if state == "pending":
            continue
        rows = [metric_row(l0 * 2, alive, ce * 2, 100, False, 0)]
        if state == "finished":
            rows.append(metric_row(l0, alive, ce, 200, True, 1))
        else:
            rows.append(metric_row(l0, alive, ce, 150, False, 1))
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if state == "incomplete":
            text += '{"l0": 0.5, "ce_loss_incr'  # a sweep still writing this line
        (d / "result.json").write_text(text)
        if state == "errored":
            (d / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    return exp


def test_a_retried_trial_whose_result_json_lost_its_final_row_is_finished_from_its_last_checkpoint(tmp_path):
    """Ray copies a retried trial's result.json back from its last synced copy, which may miss rows;
    the final metrics the run wrote into its last checkpoint (persisted by Tune) then settle it."""
    exp = build_experiment(tmp_path, [t for t in TRIALS if t[0] in ("train_00009", "train_00010")])
    final = metric_row(7, 77, 0.07, 200, True, 1)
    for trial_dir in ("train_00009", "train_00010"):
        (exp / trial_dir / "checkpoint_000001").mkdir()
        (exp / trial_dir / "checkpoint_000001" / "metrics.json").write_text(json.dumps(final))
    (exp / "train_00010" / "checkpoint_000001" / "metrics.json").write_text(json.dumps({**final, "final": False}))
    trials = {t.trial_id: t for t in load_trials(exp)}
    assert trials["train_00009"].state == "finished" and trials["train_00009"].metrics["l0"] == 7
    assert trials["train_00010"].state == "incomplete"  # a metrics.json that is not final is no final row
    (exp / "train_00009" / "checkpoint_000002").mkdir()  # a newer checkpoint without final metrics
    assert {t.trial_id: t.state for t in load_trials(exp)}["train_00009"] == "errored"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    exp = build_experiment(tmp_path_factory.mktemp("sweeps"))
    path = write_report(exp)
    return exp, path.parent, json.loads((path.parent / "pareto.json").read_text())


def test_trial_states_and_final_metrics(tmp_path):
    trials = {t.trial_id: t for t in load_trials(build_experiment(tmp_path))}
    assert trials["train_00000"].state == "finished" and trials["train_00000"].metrics["l0"] == 100
    assert trials["train_00009"].state == "errored" and "CUDA out of memory" in trials["train_00009"].error
    inc = trials["train_00010"]
    assert inc.state == "incomplete" and inc.metrics["n_samples"] == 150 and inc.n_rows == 2


def test_report_writes_every_file(report):
    _, out, _ = report
    for name in ("report.md", "trials.csv", "pareto.json"):
        assert (out / name).stat().st_size > 0
    for hook in (A, B):
        for ext in ("png", "svg"):
            assert (out / f"frontier_{hook}.{ext}").stat().st_size > 1000
    assert (out / f"frontier_{A}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trials_csv_has_one_row_per_trial_with_params_and_metrics(report):
    _, out, _ = report
    with (out / "trials.csv").open() as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(TRIALS)
    r = rows["train_00001"]
    assert (r["state"], r["mode"], r["hook"], r["layer"]) == ("finished", "local", A, "1")
    assert float(r["sparsity_coeff"]) == 4.0 and float(r["dict_size_to_input_ratio"]) == 4.0
    assert (float(r["l0"]), float(r["ce_loss_increase"]), int(r["n_samples"])) == (40, 0.30, 200)
    assert r["n_dict_elements"] == "1024" and r["final"] == "True"
    assert "training_iteration" not in r and "config" not in r  # Tune bookkeeping left out
    assert rows["train_00010"]["state"] == "incomplete" and rows["train_00010"]["n_samples"] == "150"
    assert rows["train_00009"]["state"] == "errored" and "CUDA" in rows["train_00009"]["error"]


def front_ids(doc, hook, mode, x):
    return [p["trial_id"] for p in doc["hooks"][hook]["modes"][mode]["frontiers"][x]]


def test_pareto_json_frontiers(report):
    _, _, doc = report
    assert doc["schema_version"] == 2 and doc["sweep"] == "toy" and doc["model"] == "toy-lm"
    assert doc["eval_tokens"] == [2048] and doc["n_ctx"] == [64]
    assert doc["trial_counts"] == {"finished": 9, "incomplete": 1, "errored": 1, "pending": 0, "total": 11}
    assert list(doc["hooks"]) == [A, B]
    assert front_ids(doc, A, "local", "l0") == ["train_00001", "train_00000"]  # dominated 00002 left out
    assert front_ids(doc, A, "local", "alive_dict_elements") == ["train_00001", "train_00000"]
    assert front_ids(doc, B, "local", "l0") == ["train_00007"]  # the incomplete trial is not on it
    assert list(doc["hooks"][B]["modes"]) == ["local", "e2e"]
    point = doc["hooks"][A]["modes"]["e2e"]["frontiers"]["l0"][0]
    assert point["sparsity_coeff"] == 4.0 and point["metrics"]["l0"] == 10 and point["metrics"]["final"] is True
    assert doc["hooks"][A]["ce_loss_original"] == 3.0
    assert {t["trial_id"]: t["state"] for t in doc["missing_trials"]} == {
        "train_00009": "errored",
        "train_00010": "incomplete",
    }


def test_pareto_json_matched_comparison(report):
    _, _, doc = report
    m = doc["hooks"][A]["matched"]
    assert m["ce_loss_increase"] == pytest.approx(0.12)  # max of the modes' minimal CE increases
    local, e2e, ds = (m["modes"][k] for k in ("local", "e2e", "e2e+ds"))
    assert local["l0"]["value"] == pytest.approx(40 * 2.5**0.9)  # log-x interpolation, t = 0.9
    assert local["alive_dict_elements"]["value"] == pytest.approx(870)  # plain interpolation
    assert local["l0"]["lower_x_trial"]["trial_id"] == "train_00001"
    assert local["l0"]["higher_x_trial"]["trial_id"] == "train_00000"
    assert e2e["l0"]["value"] == 30 and e2e["l0"]["lower_x_trial"]["trial_id"] == "train_00003"
    assert ds["l0"]["value"] == pytest.approx(20 * 2.5 ** (2 / 3))
    assert ds["alive_dict_elements"]["value"] == pytest.approx(600)
    assert m["ratios"]["e2e/local"]["l0"] == pytest.approx(30 / (40 * 2.5**0.9))
    assert m["ratios"]["e2e+ds/local"]["alive_dict_elements"] == pytest.approx(600 / 870)
    mb = doc["hooks"][B]["matched"]
    assert mb["ce_loss_increase"] == pytest.approx(0.07)
    assert mb["modes"]["local"]["l0"] == {**mb["modes"]["local"]["l0"], "value": 60, "clipped": True}
    assert mb["ratios"]["e2e/local"]["l0"] == pytest.approx(20 / 60)
    # local's reading is clipped (an upper bound on its L0), so e2e/local is a lower bound
    assert mb["ratios"]["e2e/local"]["bounds"] == {"l0": "lower", "alive_dict_elements": "lower"}
    assert m["ratios"]["e2e/local"]["bounds"] == {"l0": None, "alive_dict_elements": None}
    wandb_rows = {(r[0], r[2]): r for r in _matched_rows(doc)}  # W&B's matched table: the same flags
    assert wandb_rows[(B, "e2e")][-2:] == ["lower", "lower"] and wandb_rows[(A, "e2e")][-2:] == [None, None]


def test_report_md_states_settings_counts_and_missing_trials(report):
    _, out, _ = report
    md = (out / "report.md").read_text()
    assert "toy-lm" in md and "2,048 eval tokens" in md and "(n_ctx) 64" in md
    assert "9 finished, 1 incomplete, 1 errored, 0 pending" in md
    assert f"![{A} frontiers](frontier_{A}.png)" in md
    assert "| train_00009 | errored | e2e+ds |" in md and "| train_00010 | incomplete |" in md
    assert "e2e/local: L0 ratio 0.329, alive" in md  # 30 / 91.24: both readings interpolated
    assert "e2e/local: L0 ratio ≥ 0.333 (a lower bound: local's reading is clipped)" in md  # hook B


def test_partially_failed_and_running_sweep_still_reports(tmp_path):
    trials = [t for t in TRIALS if t[1] == B] + [("train_00011", B, "e2e", 2.0, "pending", (0, 0, 0))]
    exp = build_experiment(tmp_path, trials, name="running")
    (exp / "sweep.yaml").unlink()  # name and model then come from the dir and the run configs
    # Tune knows one more trial that has no directory yet
    state = {
        "trial_id": "zz999",
        "relative_logdir": None,
        "status": "PENDING",
        "config": {"mode": "e2e+ds", "hook": B, "sparsity_coeff": 3.0},
    }
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(state), "{}"]], "runner_data": {}})
    )
    out = write_report(exp, tmp_path / "out").parent
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["sweep"] == "running" and doc["model"] == "toy-lm"
    assert doc["trial_counts"] == {"finished": 2, "incomplete": 1, "errored": 1, "pending": 2, "total": 6}
    assert {t["trial_id"] for t in doc["missing_trials"]} == {"train_00009", "train_00010", "train_00011", "zz999"}
    assert (out / f"frontier_{B}.png").exists()


def test_sweep_with_no_finished_trial_reports_all_missing(tmp_path):
    exp = build_experiment(tmp_path, [t for t in TRIALS if t[4] != "finished"])
    doc = json.loads((write_report(exp).parent / "pareto.json").read_text())
    assert doc["hooks"] == {} and len(doc["missing_trials"]) == 2


def test_nan_metric_is_left_off_the_frontier_with_a_warning(tmp_path):
    exp = build_experiment(tmp_path, TRIALS[:2])
    path = exp / "train_00000" / "result.json"
    path.write_text(path.read_text().replace('"ce_loss_increase": 0.1,', '"ce_loss_increase": NaN,'))
    with pytest.warns(UserWarning, match="train_00000"):
        out = write_report(exp).parent
    doc = json.loads((out / "pareto.json").read_text())  # still valid JSON: NaN written as null
    assert front_ids(doc, A, "local", "l0") == ["train_00001"]


def test_write_report_uses_trials_it_is_given(tmp_path):
    exp = build_experiment(tmp_path, TRIALS)
    trials = load_trials(exp)
    doc = json.loads((write_report(exp, trials=trials[:2]).parent / "pareto.json").read_text())
    assert doc["trial_counts"]["total"] == 2  # not read again from the directory


def _not_an_experiment(kind, root):
    """An empty directory, a single run's output directory, one trial's directory of an experiment."""
    if kind == "empty":
        root.mkdir()
        return root
    if kind == "run":
        run = RunDir(root)
        run.checkpoint(48).mkdir(parents=True)
        (run.checkpoint(48) / CHECKPOINT_FILE).write_bytes(b"")
        run.config.write_text("mode: local\n")
        run.metrics.write_text("{}")
        return root
    return build_experiment(root, TRIALS[:1]) / "train_00000"


@pytest.mark.parametrize("command", ["status", "report", "analyse", "export", "resume"])
@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("empty", "is not an experiment directory (no sweep.yaml, Tune experiment state or trial directory)"),
        ("run", "is a single run's output directory; sweeps commands take an experiment directory"),
        ("trial", "is one trial's directory; sweeps commands take an experiment directory"),
    ],
)
def test_a_directory_that_is_not_an_experiment_is_refused_in_one_line_writing_nothing(
    tmp_path, capsys, command, kind, says
):
    path = _not_an_experiment(kind, tmp_path / kind)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    extra = ["--out", str(tmp_path / "release")] if command == "export" else []
    assert sweeps_main([command, str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path} {says}"), err
    assert "the path `sweeps run` printed" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no report/, no release


def test_status_of_a_missing_path_names_what_it_takes(tmp_path, capsys):
    assert sweeps_main(["status", str(tmp_path / "nope")]) == 2
    assert "nope does not exist; sweeps commands take an experiment directory" in capsys.readouterr().err


def test_missing_experiment_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trials(tmp_path / "nope")


def test_wandb_disabled_is_a_no_op(report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    assert log_report_to_wandb(report[1], project="p", wandb_group="g", mode="disabled") is None
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_writes_a_run_dir(report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = log_report_to_wandb(report[1], project="p", wandb_group="g", mode="offline")
    assert run_dir.is_dir() and run_dir.name.startswith("offline-run-")
    assert tmp_path in run_dir.parents
    assert list(run_dir.glob("*.wandb"))
    media = list((run_dir / "files" / "media").rglob("*"))
    assert any(p.suffix == ".png" for p in media) and any(p.name.endswith(".table.json") for p in media)


def finished(tid, mode, l0, ce, hook=A, alive=100):
    metrics = {"l0": l0, "ce_loss_increase": ce, "alive_dict_elements": alive, "ce_loss_score": 0.9}
    return trial_record(mode, 1.0, hook=hook, trial_id=tid, state="finished", metrics=metrics)


META = {"sweep": "t", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [], "search_targets": {}}
LO, HI = 0.05380878321728433, 0.4616855296962341  # lo + (hi - lo) * 6 / 6 rounds one ulp above hi


@pytest.mark.parametrize("narrow_mode", ["e2e", "local"])
def test_l0_ratio_curve_reads_all_its_levels_where_the_overlap_ends_at_a_frontier_point(narrow_mode):
    """The curve's top level is the narrower frontier's top, read there exactly: no crash (e2e narrower:
    a None reading divided), no silently dropped top point (local narrower)."""
    wide_mode = "local" if narrow_mode == "e2e" else "e2e"
    trials = [
        finished("n_sparse", narrow_mode, 10, HI),
        finished("n_dense", narrow_mode, 50, LO),
        finished("w_sparse", wide_mode, 20, 0.9),
        finished("w_dense", wide_mode, 200, 0.01),
    ]
    curve = compute_pareto(trials, META)["hooks"][A]["l0_ratio_curve"]["e2e/local"]
    assert len(curve) == 7 and curve[0]["ce_loss_increase"] == LO and curve[-1]["ce_loss_increase"] == HI
    top = 10 / (20 * (200 / 20) ** ((0.9 - HI) / (0.9 - 0.01)))  # the narrow frontier's sparsest point
    assert curve[-1]["ratio"] == pytest.approx(top if narrow_mode == "e2e" else 1 / top)


def test_every_matched_ratio_from_a_clipped_reading_is_flagged_as_a_bound_in_pareto_json_and_report_md(tmp_path):
    trials = [
        finished("l_sparse", "local", 40, 0.30, alive=400),
        finished("l_dense", "local", 100, 0.10, alive=900),
        finished("e", "e2e", 30, 0.12, alive=500),  # its only point, below the matched level: clipped
        finished("d", "e2e+ds", 20, 0.20, alive=300),  # sets the matched level (its lowest CE)
    ]
    doc = compute_pareto(trials, META)
    ratios = doc["hooks"][A]["matched"]["ratios"]
    assert doc["hooks"][A]["matched"]["ce_loss_increase"] == 0.20
    assert ratios["e2e/local"]["bounds"] == {"l0": "upper", "alive_dict_elements": "upper"}
    assert ratios["e2e+ds/local"]["bounds"] == {"l0": None, "alive_dict_elements": None}
    md = render_markdown(doc, {A: tmp_path / "f.png"})
    assert f"e2e/local: L0 ratio ≤ {ratios['e2e/local']['l0']:.3g} (an upper bound: e2e's reading is clipped)" in md
    only_clipped = [finished("l", "local", 40, 0.05), finished("e", "e2e", 30, 0.04), trials[3]]
    doc = compute_pareto(only_clipped, META)
    assert doc["hooks"][A]["matched"]["ratios"]["e2e/local"]["bounds"]["l0"] == "neither"
    assert "(both readings clipped: bounds nothing)" in render_markdown(doc, {A: tmp_path / "f.png"})
