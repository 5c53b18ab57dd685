"""What the absl command lines (train_ebm.py, steer_decode.py, python -m eds_jax.evaluate) share."""
from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags, logging

# errors a user can cause (bad values, files, checkpoints): one line, exit code 1; a traceback
# only when EDS_JAX_TRACEBACK=1
USER_ERRORS = (ValueError, OSError, KeyError, LookupError, FloatingPointError, app.UsageError)


def absl_main(run: Callable[[], object]) -> Callable[[list], None]:
    """An absl `main`: INFO logs quiet unless -v is given, stray arguments rejected, then `run()`;
    a user error ends the program with one line naming it."""
    def main(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax and jax log at INFO; -v 0 shows them
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            run()
        except USER_ERRORS as err:
            if os.environ.get("EDS_JAX_TRACEBACK") == "1":
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            sys.exit(f"error: {message} ({type(err).__name__}; EDS_JAX_TRACEBACK=1 shows where)")
    return main


def check_config_overrides(argv: list[str], default_config: str) -> None:
    """Exit with one line naming the field and the valid names when a `--config.a.b=...` override
    names no field of the config (ml_collections would raise a chained KeyError/AttributeError)."""
    import importlib.util
    path = default_config
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if not os.path.isfile(path):
        sys.exit(f"--config={path!r} is not a file; expected a config such as configs/smollm2_135m.py")
    spec = importlib.util.spec_from_file_location("_config_to_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        names = arg[len("--config."):].split("=", 1)[0].split(".")
        node, where = config, "config"
        for name in names:
            fields = sorted(node.keys()) if hasattr(node, "keys") else None
            if fields is None or name not in fields:
                valid = f"its fields are {fields}" if fields is not None else "it has no fields"
                sys.exit(f"{arg.split('=', 1)[0]}: {where} has no field {name!r}; {valid}")
            node, where = node[name], f"{where}.{name}"
