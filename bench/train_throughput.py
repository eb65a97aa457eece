"""Tokens per second of `megatron_dga.pretrain` against a plain training loop, in one run.

The plain loop is the least a training step can be: megatron-core's own `GPTModel` (same
layers, same size, same tied embedding), torch AdamW, gradient clipping, random batches
already in memory. The framework adds DeepSpeed's engine, the dynamic blend and the data
reads, the learning-rate schedule and logging. The ratio of their tokens per second is the
framework's cost. With CUDA the runs use bf16 and the script also prints model FLOPs
utilisation (MFU) against --peak-tflops.

Cases (--cases), each on its number of ranks, which share --threads:
- `single`: one rank, one micro batch per iteration;
- `recompute`: one rank, every layer recomputed in the backward pass (megatron-core's full
  recompute in the plain loop);
- `tp2`: two ranks of megatron-core tensor parallelism in both;
- `pp2`: two pipeline stages and 4 micro batches per iteration. megatron-core's own pipeline
  schedules allocate on CUDA, so the plain loop is the least a pipeline step can be: the
  stages of megatron-core's GPTModel, activations and their gradients sent point to point,
  every forward of the first stage before its backwards (GPipe), and the tied embedding's
  gradient all-reduced between the stages. The framework runs DeepSpeed's 1F1B schedule.

    python bench/train_throughput.py                    # CPU default: 4 layers x 256, seq 256
    python bench/train_throughput.py --layers 12 --hidden 768 --heads 12 --seq-length 1024 \
        --micro-batch-size 8 --iters 40 --bf16         # GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from pretrain_helpers import driver_command, free_port, torchrun_command  # noqa: E402

VOCAB = 8192


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=25, help="timed iterations after warmup")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="bf16 (GPU)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak for MFU (H100 SXM bf16 dense: 989)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both runs")
    p.add_argument("--cases", default="single,recompute,tp2,pp2", help="comma-separated: " + ",".join(CASES))
    p.add_argument("--plain-worker", metavar="OUT", help=argparse.SUPPRESS)  # one rank of a plain loop
    p.add_argument("--case", default="single", help=argparse.SUPPRESS)
    return p.parse_args()


# case: (TP, PP, micro batches per iteration, framework flags)
CASES = {
    "single": (1, 1, 1, []),
    "recompute": (1, 1, 1, ["--recompute-granularity", "full"]),
    "tp2": (2, 1, 1, ["--tensor-model-parallel-size", "2"]),
    "pp2": (1, 2, 4, ["--pipeline-model-parallel-size", "2"]),
}


def ranks(case: str) -> int:
    tp, pp, _, _ = CASES[case]
    return tp * pp


def flops_per_iteration(a, batch: int) -> float:
    """Megatron's model FLOPs of one training iteration (forward + backward, no recompute)."""
    s, h, L = a.seq_length, a.hidden, a.layers
    return 72 * batch * s * L * h * h * (1 + s / (6 * h) + VOCAB / (12 * h * L))


def write_data(directory: str, tokens: int) -> str:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

    from megatron_dga.data.manifest import DomainEntry, DomainsManifest, TokenizerInfo

    rng = np.random.default_rng(0)
    entries = []
    for name in ("a", "b"):
        prefix = os.path.join(directory, name)
        builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=np.uint16)
        for _ in range(tokens // 1000):
            builder.add_document(rng.integers(0, VOCAB - 1, 1000).astype(np.uint16), [1000])
        builder.finalize(get_idx_path(prefix))
        entries.append(DomainEntry(name, name, tokens // 1000, tokens))
    path = os.path.join(directory, "domains.json")
    DomainsManifest(TokenizerInfo("synthetic", None, VOCAB, VOCAB - 1), entries).save(path)
    return path


def framework_iteration_times(a, directory: str, case: str) -> list:
    _, _, micro_batches, layout_flags = CASES[case]
    nproc = ranks(case)
    batch = micro_batches * a.micro_batch_size
    manifest = write_data(directory, tokens=(a.iters + a.warmup + 2) * batch * (a.seq_length + 1) * 2)
    metrics = os.path.join(directory, f"metrics-{case}.jsonl")
    args = torchrun_command(nproc, [
        "--domains-manifest", manifest, *layout_flags, "--global-batch-size", str(batch),
        "--mixing", "static", "--mixture-weights", "a=0.5,b=0.5", "--split", "100,0,0",
        "--num-layers", str(a.layers), "--hidden-size", str(a.hidden), "--num-attention-heads", str(a.heads),
        "--seq-length", str(a.seq_length), "--micro-batch-size", str(a.micro_batch_size),
        "--train-iters", str(a.warmup + a.iters), "--log-interval", "1", "--eval-interval", "1000000",
        "--metrics-file", metrics, "--lr", "1e-4", *(["--bf16"] if a.bf16 else []),
    ])
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, a.threads // nproc)))
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(metrics) as f:
        records = [json.loads(line) for line in f if '"train"' in line]
    return [r["iteration_time"] for r in records[a.warmup:]]


def plain_iteration_times(a, directory: str, case: str) -> list:
    """The plain loop of `case`, on its number of ranks; rank 0's times."""
    nproc = ranks(case)
    out = os.path.join(directory, f"plain-{case}.json")
    passed = ["--layers", str(a.layers), "--hidden", str(a.hidden), "--heads", str(a.heads), "--seq-length",
              str(a.seq_length), "--micro-batch-size", str(a.micro_batch_size), "--iters", str(a.iters),
              "--warmup", str(a.warmup), "--threads", str(max(1, a.threads // nproc)), "--case", case,
              "--plain-worker", out, *(["--bf16"] if a.bf16 else [])]
    subprocess.run(driver_command(os.path.abspath(__file__), nproc, passed, []), check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def plain_loop_iteration_times(a) -> list:
    """megatron-core GPTModel + torch AdamW on this torchrun rank, batches already in memory."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_dga.config import ModelConfig
    from megatron_dga.model.layers import causal_mask
    from megatron_dga.model.transformer_config import build_transformer_config
    from megatron_dga.parallel.cpu_shims import apply_cpu_shims, model_parallel_manual_seed

    torch.set_num_threads(a.threads)
    tp, pp, micro_batches, _ = CASES[a.case]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                          ("MASTER_PORT", str(free_port()))):
        os.environ.setdefault(name, default)  # one rank runs without torchrun
    dist.init_process_group("nccl" if cuda else "gloo")
    apply_cpu_shims()
    parallel_state.initialize_model_parallel(tp, pp)
    model_parallel_manual_seed(1234, parallel_state.get_tensor_model_parallel_rank())
    model_cfg = ModelConfig(num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads,
                            seq_length=a.seq_length)
    config = build_transformer_config(model_cfg, tp, a.bf16, False)
    if a.case == "recompute":
        config = dataclasses.replace(config, recompute_granularity="full", recompute_method="uniform",
                                     recompute_num_layers=1)
    stage = parallel_state.get_pipeline_model_parallel_rank()
    if pp > 1:
        config = dataclasses.replace(config, pipeline_model_parallel_size=pp)
    # Across stages the tie is emulated (gradients all-reduced below): megatron-core's own tie
    # copies the weight with a CUDA-only call at construction.
    model = GPTModel(config, get_gpt_layer_local_spec(), vocab_size=VOCAB, max_sequence_length=a.seq_length,
                     share_embeddings_and_output_weights=pp == 1, pre_process=stage == 0,
                     post_process=stage == pp - 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")
    rng = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (a.micro_batch_size, a.seq_length + 1), generator=rng).to(device)
               for _ in range(micro_batches)]
    position_ids = torch.arange(a.seq_length, device=device).unsqueeze(0).expand(a.micro_batch_size, -1)
    mask = causal_mask(a.seq_length, device)
    times = []
    for step in range(a.warmup + a.iters):
        start = time.perf_counter()
        if pp == 1:
            loss = model(batches[0][:, :-1], position_ids, mask, labels=batches[0][:, 1:]).float().mean()
            loss.backward()
        else:
            two_stage_gpipe_step(model, stage, batches, position_ids, mask, config.params_dtype)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    rank = dist.get_rank()
    dist.destroy_process_group()
    return times[a.warmup:] if rank == 0 else None


def two_stage_gpipe_step(model, stage: int, batches, position_ids, mask, dtype) -> None:
    """Forward and backward of the micro batches over two stages (ranks 0 and 1)."""
    import torch.distributed as dist

    sends = []
    if stage == 0:
        outputs = []
        for tokens in batches:
            outputs.append(model(tokens[:, :-1], position_ids, mask))
            sends.append(dist.isend(outputs[-1].detach().contiguous(), 1))
        for output in outputs:
            grad = torch.empty_like(output)
            dist.recv(grad, 1)
            output.backward(grad)
        tied = model.embedding.word_embeddings.weight
    else:
        shape = (position_ids.shape[1], position_ids.shape[0], model.config.hidden_size)
        for tokens in batches:
            received = torch.empty(shape, dtype=dtype, device=position_ids.device)
            dist.recv(received, 0)
            received.requires_grad_()
            model.set_input_tensor(received)
            loss = model(None, position_ids, mask, labels=tokens[:, 1:]).float().mean() / len(batches)
            loss.backward()
            sends.append(dist.isend(received.grad.contiguous(), 0))
        tied = model.output_layer.weight
    for send in sends:
        send.wait()
    dist.all_reduce(tied.grad)


def main():
    a = parse()
    if a.plain_worker:
        times = plain_loop_iteration_times(a)
        if times is not None:
            with open(a.plain_worker, "w") as f:
                json.dump(times, f)
        return
    print(f"model: {a.layers} layers x {a.hidden} hidden, {a.heads} heads, seq {a.seq_length}, "
          f"micro batch {a.micro_batch_size}, vocab {VOCAB}, {'bf16' if a.bf16 else 'fp32'}, "
          f"{'cuda' if torch.cuda.is_available() else f'cpu x {a.threads} threads in all'}")
    for case in a.cases.split(","):
        tokens_per_iteration = CASES[case][2] * a.micro_batch_size * a.seq_length
        with tempfile.TemporaryDirectory() as directory:
            framework = statistics.median(framework_iteration_times(a, directory, case))
            plain = statistics.median(plain_iteration_times(a, directory, case))
        print(f"[{case}] plain loop (megatron-core GPTModel + AdamW): {plain * 1000:8.1f} ms/iter  "
              f"{tokens_per_iteration / plain:10.0f} tokens/s")
        print(f"[{case}] megatron_dga.pretrain (static mixture)     : {framework * 1000:8.1f} ms/iter  "
              f"{tokens_per_iteration / framework:10.0f} tokens/s")
        print(f"[{case}] framework / plain time ratio: {framework / plain:.3f}  "
              f"(overhead {100 * (framework / plain - 1):+.1f}%)")
        if torch.cuda.is_available():
            flops = flops_per_iteration(a, CASES[case][2] * a.micro_batch_size)
            for name, t in (("plain", plain), ("framework", framework)):
                print(f"[{case}] MFU {name}: {100 * flops / t / (a.peak_tflops * 1e12):.1f}% of "
                      f"{a.peak_tflops:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
