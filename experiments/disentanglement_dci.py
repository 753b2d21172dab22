"""DCI of a finished disentanglement run recomputed from its stored evaluation codes, at other boosting rounds.

    python -m experiments.disentanglement_dci --run runs/disentanglement_dci100 --trees 20

Reads the run's ``config.json``, ``results.json`` and ``models/seed{S}.npz``
(each model's posterior means of the evaluation images,
``{method}_{weight}_codes [eval_size, L]``), rebuilds the evaluation factors
from the run's ``data_seed`` and scores every model's codes by
``vae_jax.disentanglement.dci`` with ``--trees`` boosting rounds on the run's
own train / test split, so the models, codes and split are the run's and only
the rounds differ. Writes ``dci_{trees}_rounds.json`` into the run folder:
per model, DCI at ``--trees`` beside the run's stored values, and per setting
the means and the paired differences (``--trees`` minus the run's rounds).
Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments import _common
from experiments.disentanglement import evaluation_factors
from vae_jax import disentanglement as metrics
from vae_jax import dsprites
from vae_jax.runs import write_json

NAMES = {"dci_disentanglement": "disentanglement", "dci_completeness": "completeness",
         "dci_informativeness": "informativeness_test"}


def rescore(folder: Path, n_estimators: int) -> list[dict]:
    """Every model of the run in ``folder`` scored by DCI at ``n_estimators`` rounds from its stored codes.

    Returns one row per model: method, weight, seed, the three DCI values at
    ``n_estimators`` and, under ``"run"``, the values the run stored.
    """
    config = json.loads((folder / "config.json").read_text())
    sizes = config["sizes"]
    factors = evaluation_factors(dsprites.Sprites(), sizes["eval_size"], config["data_seed"])
    a, b = sizes["dci_train"], sizes["dci_train"] + sizes["dci_test"]
    out = []
    for row in json.loads((folder / "results.json").read_text())["rows"]:
        with np.load(folder / "models" / f"seed{row['seed']}.npz") as arrays:
            codes = arrays[f"{row['method']}_{row['weight']:g}_codes"]
        dci = metrics.dci(codes[:a], factors[:a], codes[a:b], factors[a:b], n_estimators=n_estimators)
        out.append({"method": row["method"], "weight": row["weight"], "seed": row["seed"],
                    **{name: float(dci[key]) for name, key in NAMES.items()},
                    "run": {name: row[name] for name in NAMES}})
    return out


def paired_summary(rows: list[dict]) -> list[dict]:
    """Per setting and DCI value: the mean at the new rounds, the run's mean, and the paired differences."""
    settings = list(dict.fromkeys((r["method"], r["weight"]) for r in rows))
    out = []
    for method, weight in settings:
        group = [r for r in rows if (r["method"], r["weight"]) == (method, weight)]
        entry = {"method": method, "weight": weight, "seeds": [r["seed"] for r in group]}
        for name in NAMES:
            new = np.array([r[name] for r in group])
            run = np.array([r["run"][name] for r in group])
            diff = new - run
            entry[name] = {"mean": new.mean(), "run_mean": run.mean(), "difference": {
                "mean": diff.mean(), "min": diff.min(), "max": diff.max(), "per_seed": diff.tolist()}}
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.disentanglement_dci", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished experiments.disentanglement run folder")
    p.add_argument("--trees", required=True, type=_common.positive_int, help="boosting rounds per factor")
    args = p.parse_args(argv)
    if not (args.run / "results.json").is_file():
        p.error(f"{args.run} has no results.json (not a finished run folder)")
    rows = rescore(args.run, args.trees)
    run_trees = json.loads((args.run / "config.json").read_text())["dci_trees"]
    result = {"run_dci_trees": run_trees, "dci_trees": args.trees,
              "difference": f"DCI at {args.trees} rounds minus the run's DCI at {run_trees}, same codes",
              "summary": paired_summary(rows), "rows": rows}
    write_json(args.run / f"dci_{args.trees}_rounds.json", _common._jsonable(result))
    return result


if __name__ == "__main__":
    main()
