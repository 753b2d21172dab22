"""The streamed epoch equals the in-memory epoch; the on-disk file is checked and written atomically."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax import streaming, training


def _images(n=96, seed=0):
    return (np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1)) / 255).astype(np.float32)


def _write(tmp_path, x, chunk=40):
    return streaming.write_images(tmp_path / "x.npy", (x[i:i + chunk] for i in range(0, len(x), chunk)),
                                  num=len(x))


def test_written_images_read_back_exactly_in_any_order(tmp_path):
    x = _images()
    source = streaming.DiskImages(_write(tmp_path, x))
    index = np.array([5, 0, 95, 5, 17])
    assert len(source) == 96 and source.shape == (96, 4, 4, 1)
    np.testing.assert_array_equal(source.read(index), x[index])   # uint8 / 255 is the same float32


@pytest.mark.parametrize("steps_per_call", [1, 4, 8])  # 6 steps: one a call, chunks of 4 + a tail of 2, one short chunk
def test_a_streamed_epoch_trains_as_the_in_memory_scan(tmp_path, steps_per_call):
    x = _images()
    source = streaming.DiskImages(_write(tmp_path, x))
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), x.shape[1:])
    step = vj.make_train_step(model.objective)
    make = lambda: vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-2), beta=1.0)  # noqa: E731
    key = jax.random.key(3)
    memory, m_memory = training.train_epoch(step, make(), jax.numpy.asarray(x), key, batch_size=16)
    streamed, m_streamed = streaming.train_epoch_streaming(step, make(), source, key, batch_size=16, threads=2,
                                                                 steps_per_call=steps_per_call)
    for a, b in zip(jax.tree.leaves(memory.params), jax.tree.leaves(streamed.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_memory["loss"], m_streamed["loss"], rtol=1e-5)
    assert int(streamed.step) == 96 // 16


def test_the_epoch_order_is_train_epochs(tmp_path):
    order, keys = streaming.epoch_order(jax.random.key(1), 10, 3)
    key_perm, _ = jax.random.split(jax.random.key(1))
    np.testing.assert_array_equal(order.ravel(), np.asarray(jax.random.permutation(key_perm, 10))[:9])
    assert order.shape == (3, 3) and keys.shape == (3,)


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="write it once"):
        streaming.DiskImages(tmp_path / "missing.npy")
    np.save(tmp_path / "f.npy", np.zeros((3, 2, 2, 1), np.float32))
    with pytest.raises(ValueError, match="uint8 images"):
        streaming.DiskImages(tmp_path / "f.npy")
    path = _write(tmp_path, _images())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        streaming.DiskImages(path)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ValueError, match="not a .npy file"):
        streaming.DiskImages(tmp_path / "text.npy")


def test_an_interrupted_write_leaves_no_file(tmp_path):
    def chunks():
        yield _images(8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        streaming.write_images(tmp_path / "x.npy", chunks(), num=16)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        streaming.write_images(tmp_path / "x.npy", [2 * _images(8)], num=8)
    with pytest.raises(ValueError, match="expected 16 images"):
        streaming.write_images(tmp_path / "x.npy", [_images(8)], num=16)
