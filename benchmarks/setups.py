"""The model, EBM and length setups that steering_overhead.py and peak_memory.py measure."""

SETUPS = {
    # real model, real EBM shapes (simple + complex mixed), on a CPU
    "smollm2_cpu": dict(model="smollm2", dtype="float32", batch_sizes=(1, 6, 8), prompt_len=None,
                        short=8, long=24, layers=(6, 14, 22), steps=3, eta=0.5,
                        ebm="mixed", device="cpu"),
    # Llama-3.1-8B-shaped random model in bfloat16, 15 complex EBMs x 3 steps
    "llama31_8b_gpu": dict(model="llama31_8b", dtype="bfloat16", batch_sizes=(1, 16), prompt_len=128,
                           short=16, long=80, layers=tuple(range(8, 23)), steps=3, eta=0.1,
                           ebm="complex", device="gpu"),
    "qwen3_8b_gpu": dict(model="qwen3_8b", dtype="bfloat16", batch_sizes=(1, 16), prompt_len=128,
                         short=16, long=80, layers=tuple(range(8, 23)), steps=3, eta=0.1,
                         ebm="complex", device="gpu"),
}
