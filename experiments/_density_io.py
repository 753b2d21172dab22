"""Data of the density table: the Fashion-MNIST split and binarisations, and the TFDS guard for MNIST.

``tfds.load`` of a dataset that is neither prepared nor cached hangs for minutes
offline; :func:`tfds_ready` tells beforehand, without calling it.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from vae_jax import data as vdata


def _reachable(host: str, timeout: float, port: int = 443) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    opened = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a hanging DNS lookup is abandoned
    thread.start()
    thread.join(timeout)
    return bool(opened)


def tfds_ready(name: str, data_dir: str | None = None, *, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``tfds.load(name)`` can finish here instead of hanging, without calling it.

    True if the dataset is prepared under ``data_dir`` (``NAME/VERSION/dataset_info.json``),
    if every file it downloads is in TFDS's download cache (``downloads/<get_dl_fname>``
    with its ``.INFO``, or ``downloads/manual/<filename>``), or if the download host
    answers within ``timeout`` seconds.

    Returns:
      ``(ready, message)``: what was found, or why it cannot run and how to fix it.
    """
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core.download import resource
    except ImportError:
        return False, "tensorflow-datasets is not installed (pip install -e '.[tfds]')."
    root = Path(data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()
    builder = tfds.builder_cls(name)
    prepared = root / name / str(builder.VERSION)
    if (prepared / "dataset_info.json").is_file():
        return True, f"prepared in {prepared}"
    urls = builder.url_infos or {}
    downloads = root / "downloads"

    def cached(url, info):
        fname = resource.get_dl_fname(url, info.checksum)
        in_cache = [(folder / fname).is_file() and (folder / f"{fname}.INFO").is_file()
                    for folder in (downloads, downloads / name)]
        return any(in_cache) or (downloads / "manual" / info.filename).is_file()

    if urls and all(cached(url, info) for url, info in urls.items()):
        return True, f"downloads cached in {downloads}"
    host = urlparse(next(iter(urls))).hostname if urls else "storage.googleapis.com"
    if _reachable(host, timeout):
        return True, f"{host} is reachable: TFDS will download {name}"
    return False, (f"{name} is not prepared in {prepared}, its downloads are not cached in {downloads}, and "
                   f"{host} did not answer within {timeout:g} s (no network). On a machine with network access run "
                   f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', data_dir='DIR')\"`, then "
                   f"copy DIR here and pass --tfds-data-dir DIR.")


def load(cfg, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train (grey levels), validation and test (binarised once) images, ``[N, 28, 28, 1]``, of the study
    configuration ``cfg`` (an ``experiments.density_config.StudyConfig``)."""
    if cfg.dataset == "mnist":
        ready, message = tfds_ready("mnist", args.tfds_data_dir)
        if not ready:
            raise SystemExit(f"--dataset mnist cannot run here: {message}")
        ds = vdata.load_dataset("mnist", validation_size=cfg.validation_size, seed=cfg.split_seed,
                                data_dir=args.tfds_data_dir)
    else:
        ds = vdata.load_dataset("fashion_mnist", validation_size=cfg.validation_size, seed=cfg.split_seed,
                                data_dir=args.data_dir)
    train = ds.train.images[: cfg.train_size]
    validation = vdata.binarize_static(ds.validation.images, cfg.validation_binarization_seed)
    test = vdata.binarize_static(ds.test.images, cfg.test_binarization_seed)[: cfg.test_size]
    return train, validation, test
