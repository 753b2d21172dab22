"""Encoder-gradient variance of the Gaussian estimators on a trained two-level HVAE (separate and ladder inference).

Reads the 10-epoch runs of ``ladder_compare.py`` (seed 0), takes their best checkpoints and the first
``BATCH`` binarised test images, and measures each estimator's gradient over ``DRAWS`` independent draws
(``vae_jax.estimators.gradient_statistics``): the total variance (trace of the covariance) and the
bias-corrected norm SNR of the encoder's and the decoder's parameter groups. Pathwise and STL estimate
the ELBO's gradient (k = 1), the score function (leave-one-out) the ELBO's with k = 8 draws, IWAE and
DReG the k = 8 bound's.

    PYTHONPATH=$PWD .venv/bin/python docs/results/hierarchical_flows/estimator_variance.py runs/ladder_compare
"""
import sys
import time
from pathlib import Path

import jax

from vae_jax import runner
from vae_jax.estimators import gradient_statistics, make_estimator
from vae_jax.runs import write_json

BATCH, DRAWS, K = 100, 200, 8
ESTIMATORS = {"pathwise": {}, "stl": {}, "score_function": {"num_samples": K, "baseline": "leave_one_out"},
              "iwae": {"num_samples": K}, "dreg": {"num_samples": K}}
out, results = Path(sys.argv[1]), {}
for inference in ("separate", "ladder"):
    run = out / f"{inference}_seed0"
    config, model, params, _, epoch, _ = runner.load_run(run, "best")
    x = runner.load_test_set(config, BATCH)  # binarised as the run evaluates it
    rows = {}
    for name, options in ESTIMATORS.items():
        start = time.perf_counter()
        stats = gradient_statistics(make_estimator(name, model, **options), params, jax.random.key(0), x,
                                    num_draws=DRAWS, chunk_size=10)
        rows[name] = {group: dict(total_variance=float(s.total_variance), norm_snr=float(s.norm_snr))
                      for group, s in stats.items()} | {"seconds": time.perf_counter() - start}
        print(inference, name, rows[name], flush=True)
    results[inference] = dict(epoch=epoch, estimators=rows)
write_json(Path(__file__).with_name("estimator_variance.json"), dict(
    command="PYTHONPATH=$PWD .venv/bin/python docs/results/hierarchical_flows/estimator_variance.py runs/ladder_compare",
    batch=BATCH, draws=DRAWS, k=K, options=ESTIMATORS, results=results,
    machine="2-core AMD EPYC (AVX2), CPU, one core (taskset), beside the density rows"))
