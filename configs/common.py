"""Defaults shared by every model config; each file in configs/ starts from `base_config()`."""
import ml_collections

from eds_jax.training.search import FLOOR_QUANTILES, LOG_FRACTIONS as LOG_ETA_FRACTIONS  # noqa: F401
# the public splits the package ships (eds_jax/datasets/README.md); `data:` paths resolve relative
# to the installed package, wherever the command runs
PUBLIC = "data:public"


def source(path, field="instruction", limit=0):
    """One prompt source: a JSON/JSONL/CSV/txt file, the field holding the prompt, how many (0 = all)."""
    return ml_collections.ConfigDict({"path": path, "field": field, "limit": limit})


def base_config():
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict({"source": "", "dtype": "bfloat16"})
    c.data = ml_collections.ConfigDict({
        # benign prompts, including seemingly toxic ones (OR-Bench-Hard, XSTest-safe); harmless_train
        # is the 1,000-prompt sample (seed 0) of the 18,793 Alpaca-style instructions
        # named sources, so each is overridable: --config.data.benign.or_bench_hard.limit=200;
        # a source with an empty path is skipped
        "benign": {"harmless": source(f"{PUBLIC}/harmless_train.json"),
                   "or_bench_hard": source(f"{PUBLIC}/or_bench_hard_train.json"),
                   "xstest_safe": source(f"{PUBLIC}/xstest_safe_train.json")},
        "harmful": {"harmful": source(f"{PUBLIC}/harmful_train.json"),
                    "xstest_unsafe": source(f"{PUBLIC}/xstest_unsafe_train.json")},
        "seed": 0,
    })
    c.collect = ml_collections.ConfigDict({
        "max_new_tokens": 64,  # long enough for the judge to see a refusal phrase
        "batch_size": 16,
        "system": ml_collections.FieldReference(None, field_type=str),
        "judge": "substring",  # eds_jax.judge.JUDGES
        # the EBMs also learn from the states of each response's first K tokens (each with its
        # response's label), where steering acts; 0: the last prompt token only (upstream)
        "generated_states": 0,
    })
    c.ebm = ml_collections.ConfigDict({
        "architecture": "complex",
        "hidden_dim": 512,  # simple
        "hidden_dims": (2048, 1024, 1024, 512),  # complex
        "dropout_rate": 0.15,
        "use_layernorm": True,
    })
    c.train = ml_collections.ConfigDict({
        "epochs": 20,
        "batch_size": 64,
        "learning_rate": 5e-5,
        "temperature": 0.1,
        "seed": 0,
        "val_fraction": 0.2,
        "select_by": "auc",  # or "sign_accuracy" (upstream)
        # a resumable checkpoint after an epoch once this many seconds passed since the last one
        # (0: every epoch), and after the last epoch
        "checkpoint_every_s": 30.0,
    })
    c.steer = ml_collections.ConfigDict({
        "top_n_layers": 15, "eta": 0.1, "num_steps": 3,
        # how steer.eta and sweep.etas are read: "absolute" (a step length, upstream) or
        # "hidden_norm" (a fraction of each layer's median hidden-state norm at the last prompt
        # token over the training collection, so deep layers with large norms take longer steps)
        "eta_scale": "absolute"})
    # the prompt gate (eds_jax.core.gate): a linear read-out of the prompt's kind from the training
    # activations at the last prompt token; steering acts only on the prompts it opens. Off by
    # default (upstream steers every prompt).
    c.gate = ml_collections.ConfigDict({
        "enabled": False,
        "harmful_quantile": 0.99,  # threshold: this quantile of held-out harmful prompts' scores
        "folds": 5,  # cross-fitting: every prompt gets a held-out score
        "l2": 1e-2,
        "steps": 300,
        "layers": (),  # candidate blocks; empty: every block but the first
    })
    # steering settings chosen on validation prompts after training (eds_jax/sweep.py); the chosen
    # setting and the whole table go into the EBM metadata. Empty etas: keep c.steer as it is.
    c.sweep = ml_collections.ConfigDict({
        "benign": {"or_bench_hard": source(f"{PUBLIC}/or_bench_hard_val.json", limit=64)},
        "harmful": {"harmful": source(f"{PUBLIC}/harmful_val.json")},
        # the coarse candidates (read as steer.eta_scale says; rows of one batch, one compile),
        # then an adaptive search around the best (eds_jax.training.search.AdaptiveSearch):
        # midpoints with its neighbours, a step past the grid's edge when it sits there, every new
        # setting screened on a share of the validation prompts first
        "etas": (),
        "refine_rounds": 3,  # 0: the grid only
        "max_extensions": 2,
        "min_ratio": 1.2,
        "screen_fraction": 0.5,  # 0: every setting on every validation prompt
        "screen_margin": 0.05,
        # also refine the best of every group (floor, layers, steps) whose benign helpfulness is
        # within this of the best setting's, not only the best's own group; None: the best's only.
        # On since 2026-12-05 (docs/experiments.md): tutor -29% -> -37%; airline and bank, held out
        # from the decision, chose as before, with 44 settings searched instead of 26
        "group_margin": ml_collections.FieldReference(0.05, field_type=float),
        # a seeded share of the validation prompts (each kind) held back from the search: its best
        # `confirm_candidates` settings are decoded there too, and the first that passes the rule
        # again is kept (search.confirm_choice); 0: the search's best is kept as it is
        "confirm_fraction": 0.0,
        "confirm_candidates": 3,
        "num_steps": (),  # empty: (c.steer.num_steps,)
        "top_n_layers": (),  # empty: (c.steer.top_n_layers,)
        # each q adds the same etas with an energy floor (Steering(energy_floor=...)): a row steps
        # only while its energy is above the q-quantile of the training good states' energies
        "energy_floor_quantiles": (),
        "max_new_tokens": 40,
        "batch_size": 32,
        "max_refusal_drop": 0.05,  # harmful refusal may fall by at most this
        "max_incoherence_rise": 0.05,  # incoherence may rise by at most this
        # check both on the worst rates of a setting's group at steps no longer than its own
        # (search.monotone_envelope): a longer step is never read as more coherent or safer
        "monotone": True,
        # "worst" (each the worst rate at gentler steps) or "isotonic" (the least-squares
        # monotone fit: one noisy gentle step does not sink every longer one)
        "monotone_fit": "worst",
        # the benign answers' mean NLL under the plain model (nats/token, paired with the unsteered
        # answers over those not refused either way) may rise by at most this; None: unconstrained
        "max_nll_rise": ml_collections.FieldReference(None, field_type=float),
        # fluency threshold: this quantile of the unsteered answers' NLL + margin (nats/token)
        "fluency_quantile": 0.95,
        "fluency_margin": 0.5,
    })
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})  # -1: all remaining devices
    c.distributed = ml_collections.ConfigDict({
        "initialize": False,  # call jax.distributed.initialize (TPU pods: arguments from the environment)
        "coordinator_address": "", "num_processes": 0, "process_id": -1,
    })
    return c


def hub_model_config(source, eta, num_steps, top_n_layers, dtype="bfloat16"):
    """A released model (read from the local HF cache) with upstream's steering defaults."""
    c = base_config()
    c.model.source = source
    c.model.dtype = dtype
    c.steer.eta = eta
    c.steer.num_steps = num_steps
    c.steer.top_n_layers = top_n_layers
    c.sweep.etas = tuple(round(eta * f, 4) for f in (0.5, 1.0, 2.0))
    return c
