"""Smoke tests of the benchmark harness at its --quick settings: JSON shape and RESULTS.md rows.

The quick settings train tiny models for one epoch: the numbers mean nothing,
the tests check the machinery (real simulate runs, real store export, real
`ffsecure audit verify`, the page assembled from the JSON).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from benchmarks import run_all, utility


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench")
    assert run_all.main(["--quick", "--only", "utility,systems", "--out", str(out)]) == 0
    return out


def _load(out, name):
    return json.loads((out / "results" / f"{name}.json").read_text())


def test_meta_names_machine_date_commit_settings(quick_out):
    for name in ("utility", "systems"):
        meta = _load(quick_out, name)["meta"]
        assert meta["benchmark"] == name and meta["quick"] is True
        m = meta["machine"]
        assert (
            m["cores"] >= 1
            and m["cpu_model"]
            and m["torch"] == torch.__version__
            and m["device"] == "cpu"
        )
        assert len(meta["git"]["commit"]) == 40
        assert meta["date"].endswith("Z") and meta["settings"]


def test_utility_rows_are_real_runs(quick_out):
    u = _load(quick_out, "utility")
    rows = [r for r in u["rows"] if r["status"] == "measured"]
    assert [(r["dataset"], r["split"], r["generator"]) for r in rows] == [
        ("digits", "pathological", "cvae"),
        ("digits", "pathological", "ddpm"),
    ]
    for r in rows:
        assert r["sites"] == 10 and r["settings"]["epochs"] == 1
        for method in ("centralized", "fedavg", "federatedfactory"):
            assert 0.0 <= r[method]["accuracy"] <= 1.0
            assert len(r[method]["per_class_recall"]) == 10
        assert r["ratio_vs_centralized"] == pytest.approx(
            r["federatedfactory"]["accuracy"] / r["centralized"]["accuracy"], abs=1e-4
        )
    # the ddpm row shares the cvae row's baselines (same data, split and seed)
    assert (
        rows[1]["centralized"] == rows[0]["centralized"] and rows[1]["baselines_from"] != "this run"
    )
    assert u["paper"]["medmnist_v2_resnet18_28"]["breastmnist"] == {
        "accuracy": 0.863,
        "auroc": 0.901,
    }


def test_systems_figures(quick_out):
    s = _load(quick_out, "systems")
    env = s["envelope"][0]
    assert env["hpke_mb_s"] > 0 and env["aesgcm_mb_s"] > 0 and env["overhead_bytes"] > 0
    a = s["audit"]
    assert a["entries"] == 1000 and a["library_verify_s"] > 0
    assert (
        a["cli_rc"] == 0
        and a["cli_result"]["verdict"] == "VERIFIED"
        and a["cli_result"]["errors"] == 0
    )
    fams = {(r["family"], r["size"]) for r in s["synthesis"]}
    assert fams == {("cvae", "tiny"), ("ddpm", "tiny")}
    assert all(r["images_per_s"] > 0 for r in s["synthesis"])
    assert s["ledger"]["source"] == "this run" and s["ledger"]["rows"][0]["entries"] == 1000


def test_results_md_has_the_rows(quick_out):
    text = (quick_out / "RESULTS.md").read_text()
    u = _load(quick_out, "utility")
    cvae = u["rows"][0]
    # the paper-shaped row, with our figures read back from the JSON
    row = next(
        line for line in text.splitlines() if line.startswith("| digits | pathological | 10 |")
    )
    assert f"{cvae['centralized']['accuracy']:.3f} / {cvae['centralized']['auroc']:.3f}" in row
    assert f"{cvae['federatedfactory']['accuracy']:.3f}" in row
    for paper in ("88.9%", "90.1%", "11.36%", "0.863", "0.854", "0.524"):
        assert paper in text
    assert "Not measured yet: run `python -m benchmarks.run_all --only dp`" in text
    assert "Not measured yet: run `python -m benchmarks.run_all --only scaling`" in text
    assert "## Systems" in text and "`ffsecure audit verify BUNDLE` (whole process) |" in text
    assert "`--quick` settings" in text and "## Closing note" in text


def test_render_includes_part_results_and_is_regenerated(quick_out, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(quick_out / "results", out / "results")
    (out / "results" / "unlearning.md").write_text(
        "# Unlearning\n\n| modules | retrain s |\n| ---: | ---: |\n| 3 | 1.5 |\n"
    )
    for ds in ("retinamnist", "breastmnist"):
        (out / "results" / f"temperature-{ds}.md").write_text(
            f"# Temperature\n\n| t |\n| ---: |\n| {ds} |\n"
        )
    run_all.render(out)
    text = (out / "RESULTS.md").read_text()
    assert (
        "## Exact unlearning" in text and "| 3 | 1.5 |" in text and "## Privacy attacks" not in text
    )
    # one section per data set of the temperature study, in name order, each naming its file and
    # command
    b, r = (
        text.index("## cvae sampling temperature (breastmnist)"),
        text.index("## cvae sampling temperature (retinamnist)"),
    )
    assert b < r and "| breastmnist |" in text[b:r] and "| retinamnist |" in text[r:]
    assert (
        "`benchmarks/results/temperature-retinamnist.md`" in text
        and "`python -m benchmarks.temperature`" in text
    )
    # RESULTS.md follows the JSON: drop the utility result and the section says so
    (out / "results" / "utility.json").unlink()
    run_all.render(out)
    text = (out / "RESULTS.md").read_text()
    assert "Not measured yet: run `python -m benchmarks.run_all --only utility`" in text
    assert "| digits | pathological | 10 |" not in text


def test_unknown_benchmark_is_refused(tmp_path, capsys):
    assert run_all.main(["--only", "utility,bogus", "--out", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "RESULTS.md").exists()


def test_cpu_plan_lists_what_it_does_not_run():
    sets = ["digits", "breastmnist", "pneumoniamnist", "retinamnist"]
    run, skipped = utility.plan_cells("cpu", sets)
    ran = {(c.dataset, c.split, c.generator, c.generator_size) for c in run}
    # the whole grid at CPU sizes, the headline (pathological) rows first
    assert ran == {
        (d, s, g, z)
        for d in sets
        for s in ("pathological", "dirichlet 0.1", "dirichlet 0.5")
        for g, z in (("cvae", "default"), ("ddpm", "tiny"))
    }
    assert {c.split for c in run[:8]} == {"pathological"}
    # ddpm at its default (GPU) size is listed with a reason, never silently dropped
    assert {(c.dataset, c.split) for c, _ in skipped} == {(d, s) for d, s, _, _ in ran}
    assert all(
        c.generator == "ddpm" and c.generator_size == "default" and "GPU" in r for c, r in skipped
    )


def test_shards_keep_a_group_in_one_process():
    sets = ["digits", "breastmnist", "pneumoniamnist"]
    run, _ = utility.plan_cells("cpu", sets)
    parts = [utility.shard_cells(run, (i, 2)) for i in (0, 1)]
    assert sorted(parts[0] + parts[1], key=run.index) == run
    assert not {c.group for c in parts[0]} & {c.group for c in parts[1]}
    assert len(parts[0]) == 10 and len(parts[1]) == 8  # 9 groups of 2 cells


def test_main_table_prefers_the_measured_size():
    run, skipped = utility.plan_cells("cpu", ["digits"])
    metrics = {"accuracy": 0.5, "auroc": 0.6, "per_class_recall": None, "train_s": 1.0}
    rows = [
        {
            "dataset": c.dataset,
            "partition": c.partition,
            "alpha": c.alpha,
            "split": c.split,
            "generator": c.generator,
            "generator_size": c.generator_size,
            "status": "measured",
            "sites": 10,
            "centralized": metrics,
            "fedavg": metrics,
            "federatedfactory": metrics,
            "ratio_vs_centralized": 1.0,
            "git": {"commit": "abc"},
            "date": "2026-01-01T00:00:00Z",
        }
        for c in run[:2]
    ]
    rows += [
        {
            "dataset": c.dataset,
            "partition": c.partition,
            "alpha": c.alpha,
            "split": c.split,
            "generator": c.generator,
            "generator_size": c.generator_size,
            "status": "not run",
            "reason": r,
        }
        for c, r in skipped[:1]
    ]
    table = utility.main_table({"rows": rows})
    line = next(ln for ln in table.splitlines() if "| digits | pathological |" in ln)
    assert "0.500 / 0.600 (tiny)" in line and "not run" not in line


def test_merge_keeps_each_generator_size_its_own_reason(tmp_path):
    # ddpm tiny (run on CPU, stopped by the budget) and ddpm default (needs a GPU)
    # share data set, split and family: their reasons must not overwrite each other
    run, skipped = utility.plan_cells("cpu", ["digits"])
    budget = "time budget of 5 min spent before this cell started"
    rows = [
        {
            "dataset": c.dataset,
            "partition": c.partition,
            "alpha": c.alpha,
            "split": c.split,
            "generator": c.generator,
            "generator_size": c.generator_size,
            "status": "not run",
            "reason": r,
        }
        for c, r in [(c, budget) for c in run] + skipped
    ]
    md = utility.common.meta(
        "utility",
        {
            "plan": "cpu",
            "datasets": ["digits"],
            "shard": [0, 1],
            "seed": 0,
            "overrides": "none (ffsecure.simulate defaults)",
        },
    )
    utility.common.write_result(
        tmp_path / "s0", "utility", {"meta": md, "rows": rows, "paper": utility.PAPER}, ""
    )
    merged = utility.merge([tmp_path / "s0"], tmp_path / "m")
    reason = {
        (r["generator"], r["generator_size"], r["split"]): r["reason"] for r in merged["rows"]
    }
    assert reason[("ddpm", "tiny", "pathological")] == budget
    assert "needs a GPU" in reason[("ddpm", "default", "pathological")]
    page = (tmp_path / "m" / "results" / "utility.md").read_text()
    assert f"- digits, pathological, ddpm (tiny): {budget}" in page
    assert "- digits, pathological, ddpm (default): ddpm at its default size needs a GPU" in page


@pytest.mark.slow
def test_shards_merge_in_plan_order(tmp_path):
    torch.set_num_threads(1)
    for i in (1, 0):
        utility.run("quick", out=tmp_path / f"s{i}", shard=(i, 2), progress=lambda *_: None)
    # the quick plan is one group: shard 0 runs both cells, shard 1 none
    assert utility.common.read_result(tmp_path / "s1", "utility")["rows"] == []
    merged = utility.merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
    rows = merged["rows"]
    assert [(r["generator"], r["status"]) for r in rows] == [
        ("cvae", "measured"),
        ("ddpm", "measured"),
    ]
    # the group's baselines ran once, in the first family's run
    assert rows[0]["baselines_from"] == "this run" and rows[1]["baselines_from"].startswith(
        "cvae run"
    )
    assert rows[0]["centralized"] == rows[1]["centralized"]
    assert len(merged["meta"]["shards"]) == 2
    assert "Measured in 2 processes" in (tmp_path / "m" / "results" / "utility.md").read_text()
    with pytest.raises(FileNotFoundError):
        utility.merge([tmp_path / "s0", tmp_path / "nowhere"], tmp_path / "m2")


def test_closing_note_quotes_the_seed_study_at_the_default_temperature():
    study = {
        "meta": {"settings": {"dataset": "retinamnist", "default_temperature": 1.0}},
        "summary": [
            {
                "temperature": 0.8,
                "seeds": 5,
                "ratio": 0.876,
                "accuracy_mean": 0.456,
                "accuracy_sd": 0.023,
                "centralized_mean": 0.521,
            },
            {
                "temperature": 1.0,
                "seeds": 5,
                "ratio": 0.903,
                "accuracy_mean": 0.471,
                "accuracy_sd": 0.026,
                "centralized_mean": 0.521,
            },
        ],
    }
    text = "\n".join(run_all.headline({"utility": None, "temperature": [study]}))
    assert (
        "retinamnist 0.903 (FederatedFactory 0.471 ± 0.026 vs centralized 0.521, 5 seeds)" in text
    )
    assert "0.876" not in text
    assert "Over several seeds" not in "\n".join(run_all.headline({"utility": None}))


def test_families_keeps_only_those_cells_and_lists_the_rest(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match="unknown generator family gan"):
        utility.run(
            "quick", out=tmp_path / "bad", families=["cvae", "gan"], progress=lambda *_: None
        )
    assert not (tmp_path / "bad").exists()  # refused before anything ran or was written
    res = utility.run("quick", out=tmp_path / "c", families=["cvae"], progress=lambda *_: None)
    by = {r["generator"]: r for r in res["rows"]}
    assert by["cvae"]["status"] == "measured" and by["cvae"]["baselines_from"] == "this run"
    assert (
        by["ddpm"]["status"] == "not run"
        and by["ddpm"]["reason"] == "not in this run's families (cvae)"
    )
    assert res["meta"]["settings"]["families"] == ["cvae"]


def test_dagger_marks_each_cell_run_at_other_simulation_code(monkeypatch):
    # cvae (and the line's baselines) at the newest code, ddpm at code whose simulation differs
    monkeypatch.setattr(utility, "pipeline_changed", lambda a, b, figure=None: a != b)
    run, _ = utility.plan_cells("cpu", ["digits"])

    def row(c, commit, date):
        m = {"accuracy": 0.5, "auroc": 0.6, "per_class_recall": None, "train_s": 1.0}
        return {
            "dataset": c.dataset,
            "partition": c.partition,
            "alpha": c.alpha,
            "split": c.split,
            "generator": c.generator,
            "generator_size": c.generator_size,
            "status": "measured",
            "sites": 10,
            "centralized": m,
            "fedavg": m,
            "federatedfactory": m,
            "ratio_vs_centralized": 1.0,
            "git": {"commit": commit},
            "date": date,
        }

    cvae, ddpm = run[:2]
    table = utility.main_table(
        {
            "rows": [
                row(cvae, "new", "2026-02-01T00:00:00Z"),
                row(ddpm, "old", "2026-01-01T00:00:00Z"),
            ]
        }
    )
    cells = [
        c.strip()
        for c in next(ln for ln in table.splitlines() if "pathological" in ln).split("|")[1:-1]
    ]
    assert cells[0] == "digits"  # the baselines shown came from the current cvae run
    assert cells[5] == "0.500 / 0.600" and cells[7] == "0.500 / 0.600 (tiny) †"
    # the other way round, the data set (its centralized and FedAvg cells) is marked too
    table = utility.main_table(
        {
            "rows": [
                row(cvae, "old", "2026-01-01T00:00:00Z"),
                row(ddpm, "new", "2026-02-01T00:00:00Z"),
            ]
        }
    )
    cells = [
        c.strip()
        for c in next(ln for ln in table.splitlines() if "pathological" in ln).split("|")[1:-1]
    ]
    assert (
        cells[0] == "digits †"
        and cells[5] == "0.500 / 0.600 †"
        and cells[7] == "0.500 / 0.600 (tiny)"
    )
    # the closing note says it of the row it quotes
    note = run_all.headline(
        {
            "utility": {
                "meta": {},
                "rows": [
                    row(cvae, "old", "2026-01-01T00:00:00Z"),
                    row(ddpm, "new", "2026-02-01T00:00:00Z"),
                ],
            }
        }
    )
    [old] = [ln for ln in note if "cvae (default): FederatedFactory" in ln]
    [new] = [ln for ln in note if "ddpm (tiny): FederatedFactory" in ln]
    assert old.endswith("† (earlier simulation code, not comparable)") and "†" not in new


def test_code_of_ignores_docstrings_comments_and_layout_only():
    src = 'def f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n'
    assert utility.code_of(src) == utility.code_of(
        'def f(x):\n    """Two times x (reworded)."""\n\n    return 2*x\n'
    )
    assert utility.code_of(src) == utility.code_of("def f(x):\n    return 2 * x\n")
    assert utility.code_of(src) != utility.code_of(
        'def f(x):\n    """Twice x."""\n    return 3 * x\n'
    )
    assert utility.code_of("TEMPERATURE = 0.8\n") != utility.code_of("TEMPERATURE = 1.0\n")
    assert utility.code_of("def f(:\n") is None


def test_pipeline_changed_skips_only_comment_edits_and_shown_refactors(monkeypatch):
    refactor = next(iter(utility.REFACTORS))
    history = {
        "docs1": False,
        "code1": True,
        refactor: True,
    }  # commit -> changes code (docstrings aside)

    def run(between):
        monkeypatch.setattr(utility, "_git", lambda *args: "\n".join(between) + "\n")
        monkeypatch.setattr(utility, "_changes_code", lambda c, ignore=(): history[c])
        return utility.pipeline_changed("aaaaaaaaaa", "bbbbbbbbbb")

    assert run(["docs1", refactor]) is False
    assert run(["docs1", "code1", refactor]) is True
    assert run([]) is False
    # a commit that changed only the cvae module leaves ddpm cells and the baselines comparable
    seen = []
    monkeypatch.setattr(utility, "_git", lambda *args: "cvae1\n")
    monkeypatch.setattr(
        utility,
        "_changes_code",
        lambda c, ignore=(): (
            seen.append(ignore)
            or not any("ffsecure/generators/cvae.py".startswith(p) for p in ignore)
        ),
    )
    assert [
        utility.pipeline_changed("a" * 10, "b" * 10, f) for f in ("cvae", "ddpm", "baselines", None)
    ] == [True, False, False, True]
    assert seen[1] == ("ffsecure/generators/cvae.py",)
    monkeypatch.setattr(
        utility, "_git", lambda *args: None
    )  # unknown commit, shallow clone: assume changed
    assert utility.pipeline_changed("aaaaaaaaaa", "bbbbbbbbbb") is True
    assert (
        utility.pipeline_changed("same", "same") is False
        and utility.pipeline_changed(None, "x") is True
    )


def test_a_merge_of_a_merge_counts_the_processes_it_came_from(tmp_path):
    run, _ = utility.plan_cells("cpu", ["digits"])

    def part(name, shard, date):
        md = utility.common.meta(
            "utility",
            {
                "plan": "cpu",
                "datasets": ["digits"],
                "shard": shard,
                "seed": 0,
                "overrides": "none (ffsecure.simulate defaults)",
            },
        )
        md["date"] = date
        rows = [
            {
                "dataset": c.dataset,
                "partition": c.partition,
                "alpha": c.alpha,
                "split": c.split,
                "generator": c.generator,
                "generator_size": c.generator_size,
                "status": "not run",
                "reason": "x",
            }
            for c in run
        ]
        utility.common.write_result(
            tmp_path / name, "utility", {"meta": md, "rows": rows, "paper": utility.PAPER}, ""
        )
        return tmp_path / name

    first = utility.merge(
        [part("a", [0, 2], "2026-01-01T00:00:00Z"), part("b", [1, 2], "2026-01-01T00:00:01Z")],
        tmp_path / "m1",
    )
    assert len(first["meta"]["shards"]) == 2
    again = utility.merge(
        [tmp_path / "m1", part("c", [0, 3], "2026-02-01T00:00:00Z")], tmp_path / "m2"
    )
    assert [sh["date"] for sh in again["meta"]["shards"]] == [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:01Z",
        "2026-02-01T00:00:00Z",
    ]
    assert "Measured in 3 processes" in (tmp_path / "m2" / "results" / "utility.md").read_text()
    # the committed merge held a data set its newest part did not name: it stays on the page
    again["meta"]["settings"]["datasets"] = ["digits"]
    again["rows"].append({**again["rows"][0], "dataset": "breastmnist"})
    utility.common.write_result(tmp_path / "m2", "utility", again, "")
    third = utility.merge(
        [tmp_path / "m2", part("d", [0, 3], "2026-03-01T00:00:00Z")], tmp_path / "m3"
    )
    assert third["meta"]["settings"]["datasets"] == ["digits", "breastmnist"]


def test_changes_code_reads_each_commit_of_a_real_history(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def commit(path, text):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        git("add", "-A")
        git("commit", "-qm", path)
        return git("rev-parse", "HEAD")

    git("init", "-q")
    base = commit("ffsecure/generators/cvae.py", "T = 0.8\n")
    added = commit("ffsecure/data.py", "def load():\n    return 1\n")
    doc = commit("ffsecure/data.py", 'def load():\n    """Load it."""\n    return 1  # one\n')
    code = commit("ffsecure/generators/cvae.py", "T = 1.0\n")
    other = commit("README.md", "not simulation code\n")
    monkeypatch.setattr(utility.common, "REPO", tmp_path)
    assert utility._changes_code(doc) is False
    assert utility._changes_code(code) is True
    assert utility._changes_code(code, utility.NOT_RUN_BY["ddpm"]) is False
    assert utility.pipeline_changed(base, doc) is True  # a module added: new code
    assert utility.pipeline_changed(added, doc) is False  # then only its docstring and a comment
    assert (
        utility.pipeline_changed(doc, other) is True
        and utility.pipeline_changed(doc, other, "ddpm") is False
    )
    assert utility.pipeline_changed(code, other) is False


def _dp_curve(generator, size, epochs, ratios):
    points = [
        {"epsilon": e, "ratio_vs_centralized": r}
        for e, r in zip(("inf", "1", "8"), ratios, strict=True)
    ]
    return {
        "dataset": "digits",
        "generator": generator,
        "generator_size": size,
        "epochs": epochs,
        "points": points,
    }


def _utility_row(generator, size, ratio):
    return {
        "dataset": "digits",
        "partition": "pathological",
        "split": "pathological",
        "generator": generator,
        "generator_size": size,
        "status": "measured",
        "ratio_vs_centralized": ratio,
        "federatedfactory": {"accuracy": ratio},
        "centralized": {"accuracy": 1.0},
        "fedavg": {"accuracy": 0.1},
        "meta": {},
    }


def test_closing_note_compares_each_dp_family_with_its_utility_row_once(monkeypatch):
    monkeypatch.setattr(utility, "pipeline_changed", lambda *a, **k: False)
    dp_result = {
        "meta": {"settings": {"epochs": 10}},
        "curves": [
            _dp_curve("cvae", "default", 10, (0.79, 0.28, 0.86)),
            _dp_curve("cvae", "default", 50, (0.85, 0.63, 0.93)),
            _dp_curve("ddpm", "tiny", 50, (0.93, 0.06, 0.27)),
        ],
    }
    u = {
        "meta": {},
        "rows": [_utility_row("cvae", "default", 0.995), _utility_row("ddpm", "tiny", 0.60)],
    }
    lines = run_all.headline({"utility": u, "dp": dp_result})
    comparisons = [line for line in lines if line.startswith("Without DP")]
    assert len(comparisons) == 2
    cvae_at = max(
        i for i, line in enumerate(lines) if line.startswith("Privacy-utility, digits cvae")
    )
    assert lines[cvae_at + 1].startswith("Without DP") and "0.995" in lines[cvae_at + 1]
    # the shorter fit explains the drop only where the full budget beats every no-DP point
    assert "shorter fit" in lines[cvae_at + 1]
    ddpm_at = max(
        i for i, line in enumerate(lines) if line.startswith("Privacy-utility, digits ddpm tiny")
    )
    assert "0.600" in lines[ddpm_at + 1] and "shorter fit" not in lines[ddpm_at + 1]


def test_machine_names_the_cpu_kernel_path_the_figures_ran_on():
    from benchmarks import common

    m = common.machine()
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "AMD EPYC (AVX2 kernels), 2 cores" in common.machine_line(
        {**m, "cpu_model": "AMD EPYC", "cores": 2, "cpu_capability": "AVX2"}
    )
    # results written before the field existed still render, without a claim about their kernels
    assert common.machine_line({"cpu_model": "AMD EPYC", "cores": 2}).startswith(
        "AMD EPYC, 2 cores"
    )


def test_a_merge_drops_the_processes_whose_every_cell_was_measured_again(tmp_path):
    run, _ = utility.plan_cells("cpu", ["digits"])
    first_cell = run[0]

    def part(name, date, measured):
        md = utility.common.meta(
            "utility",
            {
                "plan": "cpu",
                "datasets": ["digits"],
                "shard": [0, 3],
                "seed": 0,
                "overrides": "none (ffsecure.simulate defaults)",
            },
        )
        md["date"] = date
        rows = [
            {
                "dataset": c.dataset,
                "partition": c.partition,
                "alpha": c.alpha,
                "split": c.split,
                "generator": c.generator,
                "generator_size": c.generator_size,
                "status": "not run",
                "reason": "x",
            }
            for c in run
        ]
        if measured:
            m = {"accuracy": 0.9, "auroc": 0.99, "per_class_recall": None, "train_s": 1.0}
            rows[0] = {
                **rows[0],
                "status": "measured",
                "date": date,
                "git": md["git"],
                "sites": 10,
                "federatedfactory": m,
                "centralized": m,
                "fedavg": m,
                "ratio_vs_centralized": 1.0,
                "timings": {},
                "wall_s": 1.0,
                "site_generator_s": [],
                "settings": {},
                "baselines_from": "this run",
                "device": "cpu",
            }
            assert (rows[0]["generator"], rows[0]["partition"]) == (
                first_cell.generator,
                first_cell.partition,
            )
        utility.common.write_result(
            tmp_path / name, "utility", {"meta": md, "rows": rows, "paper": utility.PAPER}, ""
        )
        return tmp_path / name

    old = part("old", "2026-01-01T00:00:00Z", measured=True)
    idle = part(
        "idle", "2026-01-02T00:00:00Z", measured=False
    )  # measured nothing: nothing of it was replaced
    new = part(
        "new", "2026-02-01T00:00:00Z", measured=True
    )  # measures the old part's only cell again
    merged = utility.merge([old, idle, new], tmp_path / "m")
    assert [sh["date"] for sh in merged["meta"]["shards"]] == [
        "2026-01-02T00:00:00Z",
        "2026-02-01T00:00:00Z",
    ]
    assert (
        next(r for r in merged["rows"] if r.get("status") == "measured")["date"]
        == "2026-02-01T00:00:00Z"
    )
    # without the newer measurement the old process stays on the page
    kept = utility.merge([old, idle], tmp_path / "m2")
    assert [sh["date"] for sh in kept["meta"]["shards"]] == [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
    ]


def test_closing_note_quotes_the_systems_figures_beside_what_they_are_compared_with(quick_out):
    s = _load(quick_out, "systems")
    text = (quick_out / "RESULTS.md").read_text()
    note = text[text.index("## Closing note") :]
    line = next(ln for ln in note.splitlines() if ln.startswith("Systems: "))
    env = s["envelope"][0]
    assert f"{env['ratio']:.2f}-{env['ratio']:.2f} of plain AES-256-GCM" in line
    assert f"{env['overhead_bytes']}-{env['overhead_bytes']} bytes" in line
    led = s["ledger"]["rows"][-1]
    assert (
        f"a ledger of {led['entries']:,} entries takes {led['sqlite_durable_appends_per_s']:,} "
        "durable" in line
    )
    a = s["audit"]
    assert f"checks a {a['entries']:,}-entry bundle in {a['cli_verify_s']:.1f} s" in line
    # an upload part read from the per-part file is quoted with its ratio; without one nothing is
    # made up
    up = s["upload"].get("large")
    assert (
        (f"(ratio {up['ratio_upload_vs_socket_file']:.3f})" in line) if up else ("mTLS" not in line)
    )
    assert run_all.systems_headline(None) == []
    assert run_all.systems_headline({"envelope": [], "upload": {}, "ledger": {"rows": []}}) == []
