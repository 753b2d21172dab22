"""``python -m vae_jax``: the ``vae-jax`` command."""

import sys

from vae_jax.cli import main

sys.exit(main())
