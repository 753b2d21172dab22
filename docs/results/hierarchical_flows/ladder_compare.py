"""Ladder (top-down, precision-weighted) against separate inference for the two-level HVAE, short runs.

Not the density protocol: ``vae-jax train`` defaults (Fashion-MNIST, dynamic binarisation, Adam 1e-3,
batch 128) with the HVAE's net (gated 300, 40 + 40 latents), ``EPOCHS`` epochs, both inferences
at each seed, then log p(x) by importance sampling (``SAMPLES`` samples) on the first ``IMAGES`` test
images, with the same key for both models so that their differences are paired per image.
Runs that finished are kept (the script resumes by skipping them).

    PYTHONPATH=$PWD .venv/bin/python docs/results/hierarchical_flows/ladder_compare.py runs/ladder_compare
"""
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from vae_jax import evaluation, runner
from vae_jax.cli import main
from vae_jax.runs import write_json

EPOCHS, SEEDS, SAMPLES, IMAGES = 10, (0, 1), 1000, 2000
out = Path(sys.argv[1])
values, rows = {}, []
for seed in SEEDS:
    for inference in ("separate", "ladder"):
        run = out / f"{inference}_seed{seed}"
        if not (run / "checkpoints").exists() or not (run / "log_px.npy").exists():
            start = time.perf_counter()
            argv = ["train", "--architecture", "gated_mlp", "--hidden-sizes", "300", "--latent-dim", "40",
                    "--num-layers", "2", "--inference", inference, "--epochs", str(EPOCHS), "--seed", str(seed),
                    "--track", "none", "--no-progress", "--out", str(run)]
            if main(argv + (["--resume"] if (run / "config.json").exists() else [])) != 0:
                raise SystemExit(f"training {run} failed")
            config, model, params, eval_objective, epoch, _ = runner.load_run(run, "best")
            x = runner.load_test_set(config, IMAGES)  # binarised as the run evaluates it
            estimate = evaluation.log_marginal(model, params, x, jax.random.key(100), num_samples=SAMPLES,
                                               progress=False)
            elbo = evaluation.evaluate(eval_objective, params, x, jax.random.key(101))["elbo"]
            np.save(run / "log_px.npy", np.asarray(estimate.values))
            write_json(run / "summary.json", dict(epoch=epoch, test_elbo=float(elbo),
                                                  seconds=time.perf_counter() - start))
        values[inference, seed] = np.load(run / "log_px.npy")
        rows.append(dict(inference=inference, seed=seed, **json.loads((run / "summary.json").read_text()),
                         test_log_px=float(values[inference, seed].mean()),
                         test_log_px_stderr=float(values[inference, seed].std(ddof=1) / np.sqrt(IMAGES))))
diffs = {seed: values["ladder", seed] - values["separate", seed] for seed in SEEDS}
result = dict(
    command="PYTHONPATH=$PWD .venv/bin/python docs/results/hierarchical_flows/ladder_compare.py runs/ladder_compare",
    epochs=EPOCHS, seeds=list(SEEDS), num_samples=SAMPLES, test_images=IMAGES, rows=rows,
    ladder_minus_separate={str(s): dict(mean=float(d.mean()), stderr=float(d.std(ddof=1) / np.sqrt(d.size)))
                           for s, d in diffs.items()},
    machine="2-core AMD EPYC (AVX2), CPU, beside the density rows at nice 19")
write_json(Path(__file__).with_name("ladder_compare.json"), result)
print(json.dumps(result, indent=1))
