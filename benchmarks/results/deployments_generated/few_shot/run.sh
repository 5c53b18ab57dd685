#!/usr/bin/env bash
# few_shot (development) with the monotone rule (config.sweep.monotone); collection and training reused
cd /work/main
start=$(date +%s)
python train_ebm.py --config=configs/smollm2_135m_shared.py --config.collect.system=deployment:few_shot \
  --config.sweep.monotone=True --workdir=runs/monotone_few_shot || exit 1
echo "train+search $(( $(date +%s) - start )) s"
start=$(date +%s)
python -m eds_jax.evaluate --ebms=runs/monotone_few_shot/ebms --methods=baseline,eds --max_new_tokens=40 \
  --batch_size=32 --output_dir=runs/monotone_few_shot/eval || exit 1
echo "evaluate $(( $(date +%s) - start )) s"
