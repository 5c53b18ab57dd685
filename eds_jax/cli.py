"""What the absl command lines (train_ebm.py, steer_decode.py, eds_jax.evaluate) share."""
from __future__ import annotations

from typing import Callable

from absl import app, flags, logging


def absl_main(run: Callable[[], object]) -> Callable[[list], None]:
    """An absl `main`: INFO logs quiet unless -v is given, stray arguments rejected, then `run()`."""
    def main(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax and jax log at INFO; -v 0 shows them
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        run()
    return main
