"""The density table's report: the Markdown table, paired differences, figures, snapshots for the docs.

Reads what :mod:`experiments.density_train` wrote under ``OUT/models`` (each
finished row's ``result.json``, each unfinished row's ``status.json``,
``history.csv`` and ``interim.json``, the per-image ``*test_log_px.npy``) and
never trains.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path

import numpy as np

from experiments.density_config import ROWS
from experiments.density_train import write_json
from vae_jax import plotting

REFERENCES = {
    "fashion_mnist": {"VAE, Gaussian prior (published)": -228.70, "VampPrior (published)": -227.35,
                      "Exemplar VAE (published)": -226.75, "HVAE, Gaussian prior (published)": -227.37,
                      "HVAE, VampPrior (published)": -226.72, "ConvHVAE, Gaussian prior (published)": -225.38,
                      "ConvHVAE, VampPrior (published)": -224.67},
    "mnist": {"VAE k=1 (IWAE paper)": -86.76, "IWAE k=50 (IWAE paper)": -84.78},
}


def row_label(r: dict) -> str:
    if r.get("protocol"):
        return f"{r['label']}, ours (protocol)"
    return (f"{r['label']}, ours (NOT the protocol: {r['epochs']} epochs, {r['stop_reason'].split(':')[0]}, "
            f"{r['test_images']} test images, {r['num_samples']} samples)")


def markdown_table(rows: list[dict], references: dict) -> str:
    """Our finished rows (each once) beside the published references, as a Markdown table."""
    lines = ["| model | test log p(x) (nats) | test ELBO | active units | epochs (best) | training time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {row_label(r)} | {r['test_log_px_mean']:.2f} ± {r['test_log_px_stderr']:.2f} "
                     f"| {r['test_elbo']:.2f} | {r['active_units']}/{r['latent_dim']} | {r['epochs']} "
                     f"({r['best_epoch']}) | {r['train_seconds_total'] / 60:.1f} min |")
    for name, value in references.items():
        lines.append(f"| {name} | {value:.2f} | | | | |")
    return "\n".join(lines) + "\n"


def collect(out: Path) -> tuple[list[dict], list[dict]]:
    """``(finished results, statuses of unfinished models)`` found under ``out/models``, in row order."""
    finished, unfinished = [], []
    for name in ROWS:
        folder = out / "models" / name
        if (folder / "result.json").is_file():
            finished.append(json.loads((folder / "result.json").read_text()))
        elif (folder / "status.json").is_file():
            unfinished.append(json.loads((folder / "status.json").read_text()))
    return finished, unfinished


def write_table(out: Path, dataset: str) -> str:
    """Rewrites ``OUT/table.md``, ``OUT/results.json`` and ``OUT/validation.png`` from every finished row."""
    finished, unfinished = collect(out)
    table = markdown_table(finished, REFERENCES[dataset])
    (out / "table.md").write_text(table)
    summary = [{k: v for k, v in r.items() if k != "history"} for r in finished]
    write_json(out / "results.json", dict(models=summary, unfinished=unfinished, references=REFERENCES[dataset]))
    if finished:
        plotting.save_curves({r["label"]: [h["validation_objective"] for h in r["history"]] for r in finished},
                             out / "validation.png", ylabel="validation objective (nats)",
                             title=f"{dataset}: ELBO (VAE, VampPrior) / IWAE-k bound")
    return table


def paired_differences(out: Path) -> list[dict]:
    """Every pair of rows with per-image test log p(x), as ``mean(a - b)`` with its paired standard error.

    A row's values are its final evaluation's (``test_log_px.npy``), else its
    interim one's (``interim_test_log_px.npy``, labelled so with the epoch of
    that checkpoint). The rows share the test images and their binarisation,
    so the paired standard error ``std(a_i - b_i, ddof=1) / sqrt(N)`` is the one
    that says whether two rows differ; ``unpaired_stderr`` (the two rows'
    standard errors combined as if independent) is given beside it. Pairs
    evaluated on different numbers of test images are left out.
    """
    found = {}
    for name in ROWS:
        folder = out / "models" / name
        for source, values, meta in (("final", "test_log_px.npy", "result.json"),
                                     ("interim", "interim_test_log_px.npy", "interim.json")):
            if (folder / values).is_file() and (folder / meta).is_file():
                found[name] = (source, np.load(folder / values), json.loads((folder / meta).read_text())["best_epoch"])
                break
    pairs = []
    for (a, (source_a, va, epoch_a)), (b, (source_b, vb, epoch_b)) in itertools.combinations(found.items(), 2):
        if va.shape != vb.shape:
            continue
        n, d = len(va), va - vb
        pairs.append(dict(a=a, b=b, a_evaluation=source_a, a_best_epoch=epoch_a, b_evaluation=source_b,
                          b_best_epoch=epoch_b, test_images=n, mean_difference=float(d.mean()),
                          paired_stderr=float(d.std(ddof=1) / np.sqrt(n)),
                          unpaired_stderr=float(np.sqrt((va.var(ddof=1) + vb.var(ddof=1)) / n))))
    return pairs


def table_figure(records: list[dict], references: dict[str, float], path: Path) -> None:
    """Dot plot of test log p(x): our finished rows (filled, ± standard error), interim numbers of rows
    still training (hollow, with the checkpoint's epoch) and the published rows (grey diamonds)."""
    import matplotlib.pyplot as plt  # after vae_jax.plotting chose the backend

    points = []
    for r in records:
        if r["state"] == "finished":
            points.append((f"{r['label']}, ours", r["test_log_px_mean"], r["test_log_px_stderr"], "ours"))
        elif r.get("interim_evaluation"):
            e = r["interim_evaluation"]
            points.append((f"{r['label']}, ours: interim, epoch {e['best_epoch']}", e["test_log_px_mean"],
                           e["test_log_px_stderr"], "interim"))
    points += [(name, value, None, "published") for name, value in references.items()]
    points.sort(key=lambda point: point[1])
    style = {"ours": dict(fmt="o", color="C0"), "interim": dict(fmt="o", color="C0", mfc="white"),
             "published": dict(fmt="D", color="0.45")}
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(points) + 1.2))
    for i, (_, value, stderr, kind) in enumerate(points):
        ax.errorbar(value, i, xerr=stderr, capsize=3, **style[kind])
    ax.set_yticks(range(len(points)), [point[0] for point in points])
    ax.set_xlabel("test log p(x), nats (higher is better; bars: ± standard error over test images)")
    ax.grid(axis="x", alpha=0.3)
    plotting.save_figure(fig, path)


def snapshot(out: Path, dest: Path, page: Path | None = None) -> list[str]:
    """Copies the state of every model of ``out`` into ``dest`` (``NAME.json``), labelled
    ``"finished"`` or ``"partial"``; the partial ones carry the per-epoch history so far (from the
    CSV log) and the resume command. Draws every model's validation curve into
    ``DEST/validation.png``, the test log p(x) so far beside the published rows into
    ``DEST/table.png``, and writes :func:`paired_differences` (if any) to
    ``DEST/paired_differences.json``; with ``page``, rewrites its state table and paired
    differences (:func:`update_page`). Returns the names of the rows in the snapshot.

    Rows finished in another run folder stay: a finished record already in
    ``dest`` for a row that ``out`` does not hold is kept as it is (and so are
    its paired differences), so one ``dest`` gathers rows run in different
    folders or sessions. A partial record in ``dest`` of a row that ``out``
    does not hold is stale (its run is elsewhere or gone) and is removed.
    """
    if not (out / "models").is_dir():
        raise SystemExit(f"--out {out} holds no density-table run ({out / 'models'} is missing); nothing to snapshot.")
    dest.mkdir(parents=True, exist_ok=True)
    records, curves = [], {}
    for name in ROWS:
        folder = out / "models" / name
        earlier = dest / f"{name}.json"
        if not (folder / "result.json").is_file() and not (folder / "status.json").is_file() and earlier.is_file():
            record = json.loads(earlier.read_text())
            if record.get("state") == "finished":
                records.append(record)
                curves[f"{record['label']} (finished)"] = [h["validation_objective"] for h in record.get("history", [])]
            else:
                earlier.unlink()
            continue
        if (folder / "result.json").is_file():
            record = dict(json.loads((folder / "result.json").read_text()), state="finished")
        elif (folder / "status.json").is_file():
            status = json.loads((folder / "status.json").read_text())
            record = dict(status, state="partial", stage=status.get("state"),
                          note="NOT a result: training has not finished; resume with resume_command")
            if (folder / "interim.json").is_file():
                record["interim_evaluation"] = json.loads((folder / "interim.json").read_text())
            if (folder / "history.csv").is_file():
                with open(folder / "history.csv") as f:
                    # a column that later epochs no longer log (the opt-in gradient norm) is left empty
                    record["history"] = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                                         for row in csv.DictReader(f)]
        else:
            continue
        record["snapshot_time"] = time.ctime()
        write_json(dest / f"{name}.json", record)
        records.append(record)
        curves[f"{record['label']} ({record['state']})"] = [h["validation_objective"] for h in record.get("history", [])]
    if any(curves.values()):
        plotting.save_curves({k: v for k, v in curves.items() if v}, dest / "validation.png",
                             ylabel="validation objective (nats)", title="validation ELBO / IWAE bound per epoch")
    saved = out / "models" / "config.json"
    dataset = json.loads(saved.read_text())["dataset"] if saved.is_file() else "fashion_mnist"
    table_figure(records, REFERENCES[dataset], dest / "table.png")
    pairs = _merge_pairs(paired_differences(out), dest / "paired_differences.json", {r["name"] for r in records})
    if pairs:
        write_json(dest / "paired_differences.json",
                   dict(note="mean over test images of a's log p(x) minus b's (nats), with the paired standard error; "
                             "an 'interim' evaluation is a best checkpoint of a model still training",
                        pairs=pairs, snapshot_time=time.ctime()))
    if page is not None:
        taken = f"At the snapshot of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:\n\n"
        labels = {r["name"]: r["label"] for r in records}
        update_page(page, {"state": taken + state_table(records)} | ({"pairs": pairs_table(pairs, labels)} if pairs
                                                                      else {}))
    return [r["name"] for r in records]


def _merge_pairs(pairs: list[dict], earlier: Path, names: set[str]) -> list[dict]:
    """``pairs`` (just computed) plus the earlier snapshot's pairs of rows in ``names`` that were not
    recomputed (a row finished in another run folder keeps its paired differences)."""
    if not earlier.is_file():
        return pairs
    done = {(p["a"], p["b"]) for p in pairs} | {(p["b"], p["a"]) for p in pairs}
    kept = [p for p in json.loads(earlier.read_text())["pairs"]
            if (p["a"], p["b"]) not in done and {p["a"], p["b"]} <= names]
    order = {name: i for i, name in enumerate(ROWS)}
    return sorted(kept + pairs, key=lambda p: (order[p["a"]], order[p["b"]]))


def _bound_name(record: dict) -> str:
    k = ROWS[record["name"]].iwae_k
    return f" (the {k}-sample bound)" if k else ""


def state_table(records: list[dict]) -> str:
    """Markdown table of snapshot records (finished and partial rows), one line per model."""
    lines = ["| model | state | epochs so far | best validation objective (epoch) | last epoch (s) | "
             "test log p(x) (best checkpoint) | resume command |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        history = r.get("history") or [{}]
        best = max(history, key=lambda h: h.get("validation_objective", -np.inf))
        best_text = (f"{best['validation_objective']:.2f} ({int(best['epoch'])}){_bound_name(r)}"
                     if "validation_objective" in best else "none yet")
        seconds = f"{history[-1]['seconds']:.0f}" if "seconds" in history[-1] else ""
        if r["state"] == "finished":
            state, evaluation, resume = f"**finished** ({r['stop_reason'].split(':')[0]})", r, "none (finished)"
            test_text = "final: "
        else:
            state, evaluation = f"**partial** ({r.get('stage', 'training')})", r.get("interim_evaluation")
            resume, test_text = f"`{r['resume_command']}`", "interim: "
        if evaluation is None:
            test_text = "none yet"
        else:
            test_text += (f"{evaluation['test_log_px_mean']:.2f} ± {evaluation['test_log_px_stderr']:.2f}, test ELBO "
                          f"{evaluation['test_elbo']:.2f}, {evaluation['active_units']}/{evaluation['latent_dim']} "
                          f"active units (epoch {evaluation['best_epoch']})")
        lines.append(f"| {r['label']} | {state} | {r['epochs']} | {best_text} | {seconds} | {test_text} | {resume} |")
    return "\n".join(lines) + "\n"


def pairs_table(pairs: list[dict], labels: dict[str, str]) -> str:
    """Markdown table of :func:`paired_differences`."""
    lines = ["| a − b | mean difference (nats) | paired s.e. | unpaired s.e. | evaluations (best epoch) |",
             "| --- | --- | --- | --- | --- |"]
    for p in pairs:
        lines.append(f"| {labels[p['a']]} − {labels[p['b']]} | {p['mean_difference']:+.2f} | {p['paired_stderr']:.2f} "
                     f"| {p['unpaired_stderr']:.2f} | {p['a_evaluation']} ({p['a_best_epoch']}), "
                     f"{p['b_evaluation']} ({p['b_best_epoch']}) |")
    return "\n".join(lines) + "\n"


def update_page(page: Path, blocks: dict[str, str]) -> None:
    """Replaces the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in ``page`` with ``blocks[NAME]``."""
    if not page.is_file():
        raise SystemExit(f"--page {page}: no such file.")
    text = page.read_text()
    for name, block in blocks.items():
        start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise SystemExit(f"{page} needs one '{start.strip()}' ... '{end}' block to update.")
        head, rest = text.split(start)
        text = head + start + block + end + rest.split(end, 1)[1]
    page.write_text(text)
