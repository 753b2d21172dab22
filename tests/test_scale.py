"""vae_jax.scale: the placements of one training (truth: the plain in-memory epoch) and their refusals.

On the test process's single device; several devices and processes are tested
through the command line (tests/test_scale_cli.py) and the studies
(tests/test_scale_studies.py).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from vae_jax import models, scale, streaming, training

BATCH = 32


def _setup():
    images = np.random.default_rng(0).integers(0, 256, (128, 4, 4, 1)).astype(np.float32) / 255  # 8-bit levels
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(8,)), images.shape[1:])
    # One compiled init instead of Flax's op-by-op dispatch: seconds less.
    state = jax.jit(lambda key: training.create_train_state(model, key, images[0], optax.adam(1e-2), beta=1.0))(
        jax.random.key(0))
    return images, state, training.make_train_step(model.objective, dynamic_binarization=True)


@pytest.mark.slow  # 15-20 s of compiling here; the default suite runs this placement on 2 devices in
# tests/test_scale_studies.py (the density table's row, against one device in memory)
def test_every_device_streamed_from_disk_trains_the_in_memory_epoch(tmp_path):
    """``devices="all"`` with ``data_source="disk"`` (the mesh's rows read from the file, each batch placed
    on the mesh); the other placements are run by tests/test_scale_cli.py."""
    devices, source = "all", "disk"
    images, state, step = _setup()
    truth = training.fit(step, state, images, jax.random.key(1), epochs=1, batch_size=BATCH, progress=False)
    _, state, step = _setup()  # the fit above donated its state
    placed = scale.placement(state, step, images, batch_size=BATCH, devices=devices, data_source=source,
                             folder=tmp_path)
    result = training.fit(placed.step, placed.state, placed.data, jax.random.key(1), epochs=1, batch_size=BATCH,
                          epoch_fn=placed.epoch_fn, progress=False)
    np.testing.assert_allclose(result.history[0]["train_loss"], truth.history[0]["train_loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(truth.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert isinstance(placed.data, streaming.DiskImages) == (source == "disk")
    assert scale.on_one_device(result.state).params is not None


def test_the_image_file_is_written_once_and_refusals_are_one_line(tmp_path):
    images, state, step = _setup()
    scale.placement(state, step, images, batch_size=BATCH, data_source="disk", folder=tmp_path)
    path = tmp_path / scale.IMAGES_FILE
    written = path.stat().st_mtime_ns
    scale.placement(state, step, images, batch_size=BATCH, data_source="disk", folder=tmp_path)
    assert path.stat().st_mtime_ns == written  # a resumed run streams the file it wrote
    with pytest.raises(ValueError, match="not k/255 levels"):
        scale.placement(state, step, images / 3, batch_size=BATCH, data_source="disk", folder=tmp_path / "x")
    with pytest.raises(ValueError, match="devices must be one of"):
        scale.placement(state, step, images, batch_size=BATCH, devices="two")
    with pytest.raises(ValueError, match="track must be one of"):
        scale.trackers(tmp_path, track="wandb", model=None, examples=images, seed=0)
    assert scale.trackers(tmp_path / "tb", track="none", model=None, examples=images, seed=0) == []
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow  # 14 s: Fashion-MNIST and the benchmark's net
def test_the_cost_benchmark_times_a_setting(tmp_path, capsys):
    from benchmarks import scale_cost

    scale_cost.child("disk", examples=256, epochs=1, folder=str(tmp_path))
    timed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert timed["seconds_per_epoch"] > 0 and (timed["devices"], timed["processes"]) == (1, 1)
    assert (tmp_path / scale.IMAGES_FILE).is_file()
