"""Unlearning benchmark: deleting a site's module and retraining, versus the sites' own training.

Demo settings (docs/simulate.md): scikit-learn digits at 1x16x16, 10 sites,
one class each (pathological partition), the default cvae with the
per-site epoch budget of ``ffsecure simulate``, 1,000 synthetic images per
class, the small CNN (width 16, 10 epochs, batch 128). Everything runs in
this process on the real components: a federation CA, signed and
HPKE-sealed packages registered by the aggregator's Registrar into a SQLite
store, the operator's ``Operations`` (synthesize, train, publish, delete +
retire + retrain) and the digits test set for accuracy.

It reports each site's generator fit time (the federation round: sites work
in parallel, so the round takes the slowest site; the sum is the total
compute), the time to delete one module (crypto-shred + ledger + retire)
and to retrain (re-synthesize + train + publish), and the accuracy before and
after. Deleting costs no site anything: no site retrains.

Writes ``<out>/results/unlearning.json`` and ``.md``.

    python -m benchmarks.unlearning [--threads 1] [--quick] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from aggregator.evaluation import EvalSet
from aggregator.operations import Operations
from aggregator.store import open_home_store
from benchmarks.common import DEFAULT_OUT, meta, meta_line, table, write_result
from ffsecure import envelope, generators
from ffsecure.classifier import TrainConfig
from ffsecure.data import load_digits
from ffsecure.package import build_manifest, sign_package
from ffsecure.simulate import generator_epochs
from tests.federation_fixture import build_federation
from tests.ops_fixture import peer, registrar


def run(*, threads: int, quick: bool, delete_site: int = 3) -> dict:
    torch.set_num_threads(threads)
    size = "tiny" if quick else "default"
    per_class, clf_epochs, width = (100, 2, 16) if quick else (1000, 10, 16)
    ds = load_digits(seed=0)
    labels = [str(i) for i in range(10)]
    sites = [f"site-{i}" for i in range(10)]
    settings = {
        "dataset": "digits",
        "image_shape": [1, 16, 16],
        "sites": 10,
        "partition": "pathological (1 class/site)",
        "generator": f"cvae/{size}",
        "per_class": per_class,
        "classifier": "cnn",
        "classifier_width": width,
        "classifier_epochs": clf_epochs,
        "threads": threads,
        "deleted_site": sites[delete_site],
    }
    run_meta = meta("unlearning", settings, quick=quick)  # machine load at the start
    with tempfile.TemporaryDirectory() as tmp:
        fed = build_federation(Path(tmp), sites=sites, labels=labels, generator_size=size)
        config = fed.manifest.generator["config"]
        site_rows, ids = [], {}
        with open_home_store(fed.home) as store:
            reg = registrar(fed, store)
            for i, site in enumerate(sites):
                idx = torch.nonzero(ds.train_y == i).flatten()
                gen = generators.build("cvae", config)
                ts = generators.default_train_settings("cvae", size, seed=1000 + i)
                ts.epochs = 2 if quick else generator_epochs(len(idx))
                t0 = time.perf_counter()
                gen.fit(ds.train_x[idx], ds.train_y[idx], ts)
                fit_s = time.perf_counter() - t0
                weights = generators.to_safetensors(gen)
                manifest = build_manifest(
                    federation=fed.manifest, site_id=site, weights=weights, classes=[i], seed=i
                )
                creds = fed.sites[site]
                pkg = sign_package(manifest, weights, creds.key, creds.cert)
                sealed = envelope.seal(
                    pkg.to_bytes(),
                    fed.manifest.hpke_public_key,
                    federation_id=fed.federation_id,
                    key_id=fed.manifest.hpke_key_id,
                    suite=fed.manifest.hpke_suite,
                )
                t0 = time.perf_counter()
                ids[site] = reg.register(sealed, peer(fed, site)).module_id
                reg_s = time.perf_counter() - t0
                site_rows.append(
                    {
                        "site": site,
                        "images": int(len(idx)),
                        "epochs": ts.epochs,
                        "fit_s": round(fit_s, 3),
                        "register_s": round(reg_s, 3),
                    }
                )
                print(
                    f"{site}: {len(idx)} images, {ts.epochs} epochs, fit {fit_s:.1f} s", flush=True
                )
            ev = EvalSet("digits", ds.test_x, ds.test_y, labels)
            ops = Operations(store, fed.manifest, actor="operator:bench", evaluation=ev)
            train_cfg = TrainConfig(epochs=clf_epochs, batch_size=128, seed=0)
            t0 = time.perf_counter()
            first_ds = ops.synthesize(per_class=per_class, seed=0, grid=False)
            syn_s = time.perf_counter() - t0
            first = ops.train(
                first_ds.dataset_id,
                settings=train_cfg,
                width=width,
                threads=threads,
                data=(first_ds.images, first_ds.labels),
            )
            ops.publish(first.classifier_id)
            print(
                f"first classifier: synthesis {syn_s:.1f} s, training {first.seconds:.1f} s, "
                f"accuracy {first.metrics['accuracy']:.4f}",
                flush=True,
            )
            t0 = time.perf_counter()
            deletion = ops.delete(ids[sites[delete_site]], "benchmark: consent withdrawn")
            delete_s = time.perf_counter() - t0
            again = ops.retrain()
            new = again.classifiers[0]
            print(
                f"delete {delete_s:.3f} s, retrain {again.seconds:.1f} s, accuracy "
                f"{new.metrics['accuracy']:.4f}",
                flush=True,
            )
            store.verify_integrity()
    fits = [r["fit_s"] for r in site_rows]
    unlearn_s = delete_s + again.seconds
    return {
        "meta": run_meta,
        "sites": site_rows,
        "federation_round": {
            "site_fit_sum_s": round(sum(fits), 3),
            "site_fit_max_s": round(max(fits), 3),
        },
        "first": {
            "synthesis_s": round(syn_s, 3),
            "train_s": round(first.seconds, 3),
            "accuracy": first.metrics["accuracy"],
            "modules": len(first.modules),
        },
        "unlearning": {
            "delete_s": round(delete_s, 4),
            "entries_appended_by_delete": len(deletion.appended),
            "retrain_s": round(again.seconds, 3),
            "resynthesis_s": round(again.datasets[0].seconds, 3),
            "retrain_classifier_s": round(new.seconds, 3),
            "total_s": round(unlearn_s, 3),
            "accuracy_after": new.metrics["accuracy"],
            "modules_after": len(new.modules),
            "site_retraining_s": 0.0,
            "ratio_to_site_fit_sum": round(unlearn_s / sum(fits), 3),
            "ratio_to_site_fit_max": round(unlearn_s / max(fits), 3),
        },
    }


def markdown(r: dict) -> str:
    u, f, fr = r["unlearning"], r["first"], r["federation_round"]
    rows = [(s["site"], s["images"], s["epochs"], f"{s['fit_s']:.1f}") for s in r["sites"]]
    return (
        "\n\n".join(
            [
                "# Unlearning: delete + retrain vs the sites' training",
                meta_line(r["meta"]),
                f"Command: `{r['meta']['command']}`. Settings: {r['meta']['settings']}.",
                "## Sites (the one federation round)",
                table(["site", "images", "generator epochs", "fit (s)"], rows, "lrrr"),
                f"Sum of site fits {fr['site_fit_sum_s']:.1f} s (compute); slowest site "
                f"{fr['site_fit_max_s']:.1f} s (wall time of the round, sites in parallel).",
                "## Aggregator",
                table(
                    ["step", "seconds", "accuracy (digits test)"],
                    [
                        ("first synthesis (10 modules)", f"{f['synthesis_s']:.1f}", ""),
                        ("first classifier", f"{f['train_s']:.1f}", f"{f['accuracy']:.4f}"),
                        ("delete one module (shred + ledger + retire)", f"{u['delete_s']:.3f}", ""),
                        (
                            "retrain (re-synthesize + train + publish)",
                            f"{u['retrain_s']:.1f}",
                            f"{u['accuracy_after']:.4f}",
                        ),
                        ("sites' retraining", "0", ""),
                    ],
                    "lrr",
                ),
                f"Delete + retrain took {u['total_s']:.1f} s = {u['ratio_to_site_fit_sum']:.2f} x "
                f"the sum of the sites' fits and {u['ratio_to_site_fit_max']:.2f} x the slowest "
                "site, on the aggregator alone. The accuracy after deletion is over all 10 test "
                "classes, one of which no remaining module covers.",
            ]
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--quick", action="store_true", help="tiny generators and 100 images per class (smoke test)"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    result = run(threads=args.threads, quick=args.quick)
    paths = write_result(args.out, "unlearning", result, markdown(result))
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
