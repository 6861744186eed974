"""The per-part benchmarks (ledger, gRPC load) record their own run, and the systems page names it.

The systems page shows the ledger and upload figures from these files rather than
rerunning them, so each file must say when, at which commit and on which machine
its figures were measured; the commit that last touched the file is not that.
"""

from __future__ import annotations

import json

from benchmarks import common, ledger, systems


def test_ledger_result_records_its_run_and_the_proof_sizes_of_its_logs(tmp_path):
    result = ledger.main(
        ["--sizes", "50,200", "--durable-appends", "3", "--proofs", "20", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "ledger.json").read_text())
    assert saved == json.loads(json.dumps(result))
    meta = saved["meta"]
    assert meta["benchmark"] == "ledger"
    assert meta["settings"] == {"sizes": [50, 200], "durable_appends": 3, "proofs": 20}
    assert meta["git"]["commit"] == common.git_commit()["commit"]
    assert meta["machine"]["cpu_capability"] == common.cpu_capability()
    assert saved[
        "command"
    ] == "python -m benchmarks.ledger --sizes 50,200 --durable-appends 3 --proofs 20 --out " + str(
        tmp_path
    )
    rows = {r["entries"]: r for r in saved["results"]}
    assert sorted(rows) == [50, 200]
    # an inclusion proof in a tree of n leaves holds at most ceil(log2 n) hashes of 32 bytes
    assert (
        rows[50]["inclusion_proof_hashes_max"] <= 6 and rows[200]["inclusion_proof_hashes_max"] <= 8
    )
    assert rows[200]["inclusion_proof_hashes_max"] >= 7
    assert rows[200]["inclusion_proof_bytes_max"] == 32 * rows[200]["inclusion_proof_hashes_max"]
    page = (tmp_path / "ledger.md").read_text()
    assert common.meta_line(meta) in page and "| 200 |" in page


def test_ledger_refuses_sizes_it_cannot_read(tmp_path, capsys):
    for bad in ("ten", "0"):
        try:
            ledger.main(["--sizes", bad, "--out", str(tmp_path)])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"--sizes {bad} was accepted")
        assert "--sizes" in capsys.readouterr().err
    assert not (tmp_path / "ledger.json").exists()


def test_systems_page_names_the_run_of_a_part_file_not_the_commit_of_the_file(
    tmp_path, monkeypatch
):
    ledger.main(
        ["--sizes", "20", "--durable-appends", "2", "--proofs", "5", "--out", str(tmp_path)]
    )
    monkeypatch.setattr(systems, "PARTS_DIR", tmp_path)
    part = systems.part_result("ledger")
    meta = part["data"]["meta"]
    line = systems._source(
        {"source": part["file"], "commit": part["commit"], "date": part["date"], "meta": meta}
    )
    assert line.startswith("Figures from `benchmarks/results/ledger.json`, measured on their own.")
    assert meta["date"] in line and meta["git"]["commit"][:10] in line
    assert f"({meta['machine']['cpu_capability']} kernels)" in line
    # a file written before results carried a meta block is labelled by the commit that last changed
    # it
    old = systems._source(
        {
            "source": "benchmarks/results/ledger.json",
            "commit": "b81f120c4b" + "0" * 30,
            "date": "2026-11-22T22:22:44+00:00",
            "machine": "x86_64, 2 CPU cores",
        }
    )
    assert "committed 2026-11-22T22:22:44+00:00, commit `b81f120c4b`" in old
    assert systems._source({"source": None}).startswith("Figures not available")


def test_a_run_after_another_is_not_dirty_for_the_results_the_first_wrote(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "ledger.json").write_text("{}\n")
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("# Results\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    head = common.git_commit(tmp_path)
    assert head["dirty"] is False and len(head["commit"]) == 40
    (tmp_path / "benchmarks" / "results" / "ledger.json").write_text('{"rows": []}\n')
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("# Results, regenerated\n")
    assert common.git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert common.git_commit(tmp_path) == {"commit": head["commit"], "dirty": True}


def test_systems_page_quotes_the_servers_thread_peak_when_the_upload_part_has_it():
    meta = common.meta("systems", {"envelope": {"repeat": 1}})
    cc = {
        "completed": 200,
        "sites": 200,
        "module_bytes": 2_160_000,
        "uploads_per_s": 20.0,
        "mb_per_s": 43.2,
        "latency_p99_s": 9.5,
        "errors": 0,
    }
    large = {
        "bytes": 17_100_000,
        "mtls_upload_mb_per_s": 90.0,
        "mtls_transfer_only_mb_per_s": 280.0,
        "socket_file_mb_per_s": 950.0,
        "socket_memory_mb_per_s": 3600.0,
    }
    result = {
        "meta": meta,
        "envelope": [],
        "ledger": {"source": None},
        "upload": {
            "source": "benchmarks/results/grpc_load.json",
            "meta": meta,
            "concurrent": cc,
            "large": large,
        },
        "audit": {
            "entries": 10,
            "bundle_bytes": 100,
            "checkpoints": 1,
            "build_s": 0.1,
            "export_s": 0.1,
            "library_verify_s": 0.5,
            "verifier": "library",
        },
        "synthesis": [],
    }

    def concurrent_line():
        return next(
            ln for ln in systems.to_markdown(result).splitlines() if ln.startswith("Concurrent: ")
        )

    assert concurrent_line().endswith(
        "p99 latency 9.50 s, 0 errors."
    )  # a file from before threads were sampled
    cc.update(server_threads_peak=44, server_max_workers=32)
    assert concurrent_line().endswith("0 errors; the server peaked at 44 threads with 32 workers.")
