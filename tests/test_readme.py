"""Every Python block of the README runs, as written, next to the EBMs Quick start command 1 makes
(`python train_ebm.py --workdir=workdir`, shortened), so the examples cannot rot."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


@pytest.fixture(scope="module")
def quick_start_dir(tmp_path_factory):
    """A working directory holding workdir/ebms from train_ebm.py on the embedded default (few
    prompts and tokens, one epoch, no settings search), as Quick start command 1 leaves it."""
    directory = tmp_path_factory.mktemp("quick_start")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_ebm.py"), f"--workdir={directory / 'workdir'}",
         *(f"--config.data.benign.{name}.limit=3" for name in ("harmless", "or_bench_hard", "xstest_safe", "oktest")),
         "--config.data.harmful.harmful.limit=6", "--config.data.harmful.xstest_unsafe.limit=6",
         "--config.collect.max_new_tokens=12", "--config.train.epochs=1", "--config.sweep.etas=()"],
        capture_output=True, text=True, cwd=directory)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return directory


def test_the_readme_has_python_blocks_that_load_saved_steering():
    blocks = python_blocks()
    assert len(blocks) >= 2 and any("eds_jax.load_steering(\"workdir/ebms\")" in b for b in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, quick_start_dir):
    block = python_blocks()[index]
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                          cwd=quick_start_dir, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, f"README block {index}:\n{block}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), "each block prints what it shows"
