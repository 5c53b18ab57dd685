#!/usr/bin/env bash
# bank, held out from the decision on sweep.group_margin (its tables were not read when the option was written):
# collection and training reused, the search rerun with every near-best group refined
cd /work/main
start=$(date +%s)
python train_ebm.py --config=configs/smollm2_135m_shared.py --config.collect.system=deployment:bank \
  --config.sweep.group_margin=0.05 --workdir=runs/gm_bank || exit 1
echo "train+search $(( $(date +%s) - start )) s"
start=$(date +%s)
python -m eds_jax.evaluate --ebms=runs/gm_bank/ebms --methods=eds --max_new_tokens=40 \
  --batch_size=32 --output_dir=runs/gm_bank/eval || exit 1
echo "evaluate $(( $(date +%s) - start )) s"
