"""Read a GGUF file (llama.cpp format) without torch: config, dequantised tensors, tokenizer.

Tensors are renamed to Hugging Face names so `models.checkpoint.fill_params` places them. llama.cpp
permutes the q/k rows of Llama-architecture checkpoints for its interleaved RoPE; we undo it.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from models.checkpoint import CheckpointError
from models.config import ModelConfig, UnsupportedConfigError, from_hf_config

_ARCH_FAMILY = {"llama": "llama", "qwen3": "qwen3"}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
              "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
# llama.cpp pre-tokenizer names -> split regexes (tokenizers syntax); None = GPT-2's ByteLevel regex.
_GPT2_SPLIT = None
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_TOKENIZERS = {"gpt2": ("gpt2", False), "default": ("gpt2", False),
                   "smollm": ("gpt2", True),  # llama.cpp: each digit alone, then GPT-2's regex
                   "llama3": ("llama3", False), "llama-bpe": ("llama3", False),
                   "llama-v3": ("llama3", False), "qwen2": ("qwen2", False)}


class GGUFFile:
    def __init__(self, path: str):
        import gguf
        if not os.path.isfile(path):
            raise CheckpointError(f"GGUF file {path!r} does not exist")
        try:
            self.reader = gguf.GGUFReader(path)
        except Exception as err:  # the reader raises assorted errors on a corrupt file
            # a tensor cut short by the end of the file shows as a failed reshape
            what = ("the file is truncated (a tensor runs past its end)"
                    if isinstance(err, ValueError) and "reshape" in str(err) else str(err).splitlines()[0])
            raise CheckpointError(f"cannot read GGUF file {path!r}: {what}") from None
        self.path = path
        self.arch = self.field("general.architecture")
        if self.arch not in _ARCH_FAMILY:
            raise UnsupportedConfigError(
                f"{path}: GGUF architecture {self.arch!r} is not supported; expected one of "
                f"{sorted(_ARCH_FAMILY)}")
        self.tensors = {t.name: t for t in self.reader.tensors}
        size = os.path.getsize(path)
        for t in self.reader.tensors:
            if t.data_offset + t.n_bytes > size or t.data.size * t.data.itemsize < t.n_bytes:
                raise CheckpointError(f"GGUF file {path!r} is truncated: tensor {t.name} needs bytes up "
                                      f"to {t.data_offset + t.n_bytes:,}, the file has {size:,}")

    def field(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def config(self) -> ModelConfig:
        a = self.arch
        rope_type = self.field(f"{a}.rope.scaling.type", "none")
        if rope_type not in ("none", None) or "rope_freqs.weight" in self.tensors:
            raise UnsupportedConfigError(
                f"{self.path}: GGUF rope scaling ({rope_type!r}, rope_freqs tensor present: "
                f"{'rope_freqs.weight' in self.tensors}) is not supported; load the HF checkpoint")
        heads = int(self.field(f"{a}.attention.head_count"))
        hidden = int(self.field(f"{a}.embedding_length"))
        vocab = self.field(f"{a}.vocab_size") or len(self.field("tokenizer.ggml.tokens"))
        hf = {
            "model_type": _ARCH_FAMILY[a],
            "vocab_size": int(vocab),
            "hidden_size": hidden,
            "intermediate_size": int(self.field(f"{a}.feed_forward_length")),
            "num_hidden_layers": int(self.field(f"{a}.block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self.field(f"{a}.attention.head_count_kv", heads)),
            "head_dim": int(self.field(f"{a}.attention.key_length", hidden // heads)),
            "rms_norm_eps": float(self.field(f"{a}.attention.layer_norm_rms_epsilon")),
            "rope_parameters": {"rope_type": "default",
                                "rope_theta": float(self.field(f"{a}.rope.freq_base", 10000.0))},
            "max_position_embeddings": int(self.field(f"{a}.context_length")),
            "attention_bias": "blk.0.attn_q.bias" in self.tensors,
            "mlp_bias": "blk.0.ffn_up.bias" in self.tensors,
            "tie_word_embeddings": "output.weight" not in self.tensors,
            "bos_token_id": self.field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self.field("tokenizer.ggml.eos_token_id"),
            "pad_token_id": self.field("tokenizer.ggml.padding_token_id"),
        }
        return from_hf_config(hf)

    def hf_tensors(self, config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
        """Dequantised tensors, one at a time, under Hugging Face names and layout."""
        from gguf.quants import dequantize
        for name, tensor in self.tensors.items():
            try:
                array = dequantize(tensor.data, tensor.tensor_type)
            except NotImplementedError as err:
                raise CheckpointError(f"{self.path}: tensor {name} has quantisation "
                                      f"{tensor.tensor_type.name}, which gguf cannot dequantise") from err
            array = np.asarray(array, np.float32).reshape(tuple(reversed(tensor.shape.tolist())))
            hf_name = self._hf_name(name)
            if self.arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight",
                                                          "q_proj.bias", "k_proj.bias")):
                heads = config.num_heads if ".q_proj." in hf_name else config.num_kv_heads
                array = _unpermute_rows(array, heads)
            yield hf_name, array

    def _hf_name(self, name: str) -> str:
        if name in _TOP_NAMES:
            return _TOP_NAMES[name]
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
            return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
        raise CheckpointError(f"{self.path}: GGUF tensor {name!r} is not understood")

    def tokenizer(self):
        """A `PreTrainedTokenizerFast` rebuilt from the file's own tokenizer metadata."""
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
        from tokenizers.models import BPE
        from transformers import PreTrainedTokenizerFast

        kind = self.field("tokenizer.ggml.model")
        if kind != "gpt2":
            raise UnsupportedConfigError(
                f"{self.path}: GGUF tokenizer model {kind!r} is not supported; expected 'gpt2' (BPE)")
        pre = self.field("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise UnsupportedConfigError(f"{self.path}: GGUF pre-tokenizer {pre!r} is not supported; "
                                         f"expected one of {sorted(_PRE_TOKENIZERS)}")
        tokens = list(self.field("tokenizer.ggml.tokens"))
        token_types = list(self.field("tokenizer.ggml.token_type") or [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in self.field("tokenizer.ggml.merges")]
        backend = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                fuse_unk=False, byte_fallback=False))
        regex_name, split_digits = _PRE_TOKENIZERS[pre]
        steps = [pre_tokenizers.Digits(individual_digits=True)] if split_digits else []
        if regex_name == "gpt2":
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        else:
            regex = _LLAMA3_SPLIT if regex_name == "llama3" else _QWEN2_SPLIT
            steps += [pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
        backend.decoder = decoders.ByteLevel()
        control = [AddedToken(t, special=True, normalized=False)
                   for t, kind_id in zip(tokens, token_types) if kind_id == 3]  # 3 = CONTROL
        backend.add_special_tokens(control)
        user = [AddedToken(t, special=False, normalized=False)
                for t, kind_id in zip(tokens, token_types) if kind_id == 4]  # 4 = USER_DEFINED
        backend.add_tokens(user)

        bos_id = self.field("tokenizer.ggml.bos_token_id")
        if self.field("tokenizer.ggml.add_bos_token", False) and bos_id is not None:
            backend.post_processor = processors.TemplateProcessing(
                single=f"{tokens[bos_id]} $A", pair=f"{tokens[bos_id]} $A $B",
                special_tokens=[(tokens[bos_id], bos_id)])

        def token(key):
            index = self.field(key)
            return tokens[index] if index is not None else None

        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token=token("tokenizer.ggml.bos_token_id"),
            eos_token=token("tokenizer.ggml.eos_token_id"),
            unk_token=token("tokenizer.ggml.unknown_token_id"),
            pad_token=token("tokenizer.ggml.padding_token_id"),
            chat_template=self.field("tokenizer.chat_template"), padding_side="left",
            clean_up_tokenization_spaces=False)
        return tokenizer


def _unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
    half = weight.shape[0] // heads // 2
    return (weight.reshape(heads, half, 2, *weight.shape[1:]).swapaxes(1, 2)
            .reshape(weight.shape))
