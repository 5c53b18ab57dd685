#!/usr/bin/env bash
# few_shot (development) with the search's choice confirmed on held-back validation prompts
cd /work/main
start=$(date +%s)
python train_ebm.py --config=configs/smollm2_135m_shared.py --config.collect.system=deployment:few_shot \
  --config.sweep.benign.or_bench_hard.limit=0 --config.sweep.confirm_fraction=0.5 \
  --workdir=runs/confirm_few_shot || exit 1
echo "train+search $(( $(date +%s) - start )) s"
start=$(date +%s)
python -m eds_jax.evaluate --ebms=runs/confirm_few_shot/ebms --methods=baseline,eds --max_new_tokens=40 \
  --batch_size=32 --output_dir=runs/confirm_few_shot/eval || exit 1
echo "evaluate $(( $(date +%s) - start )) s"
