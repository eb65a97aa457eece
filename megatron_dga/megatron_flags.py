"""Megatron-LM and Megatron-DeepSpeed flags that this stack spells or treats differently.

A Megatron user's launch script should run unchanged. Every flag of theirs is one of:
- one of ours, spelt the same (most: the config dataclasses generate them);
- RENAMED: another spelling of one of ours (`--norm-epsilon` is `--layernorm-epsilon`);
- MAPPED: a setting of ours under Megatron's name (`--use-distributed-optimizer` is ZeRO-1,
  `--recompute-activations` is selective recompute, `--attention-backend flash` is SDPA);
- NO_EFFECT: what Megatron does with it has nothing to act on here; it is accepted and the
  start-up log says so, once (`--num-workers`: batches are read on a prefetch thread);
- REFUSED: this stack has no counterpart; refused with the reason and the closest flag of ours
  (MoE, fp8, context parallelism, `--ckpt-format torch_dist`).
`translate(argv)` rewrites the first three into our flags before parsing, in this one place,
and returns the notes to print; a refused flag raises `MegatronFlagError`. Only exact flag names
are matched (the parser refuses abbreviations, as Megatron's does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple


class MegatronFlagError(ValueError):
    """A Megatron flag with no counterpart here."""


@dataclass(frozen=True)
class Rule:
    """`values`: how many values the flag takes (0, 1, or -1 for all up to the next flag)."""

    values: int
    to: Optional[Callable[[List[str]], List[str]]] = None  # our flags; None: dropped
    note: str = ""  # printed once at start-up, after the flag's name
    refused: str = ""  # the reason, when the flag is refused


def _renamed(ours: str) -> Rule:
    return Rule(1, lambda v: [ours, *v])


def _attention_backend(values: List[str]) -> List[str]:
    """Megatron's attention backends: flash and fused are fused kernels (torch's SDPA here);
    unfused and local are megatron-core's DotProductAttention."""
    backend = {"flash": "sdpa", "fused": "sdpa", "unfused": "unfused", "local": "unfused", "auto": "auto",
               "sdpa": "sdpa"}.get(values[0])
    if backend is None:
        raise MegatronFlagError(f"--attention-backend {values[0]}: expected flash, fused, unfused, local or auto")
    return ["--attention-backend", backend]


def _normalization(values: List[str]) -> List[str]:
    name = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}.get(values[0].lower())
    if name is None:
        raise MegatronFlagError(f"--normalization {values[0]}: expected LayerNorm or RMSNorm")
    return ["--normalization", name]


def _context_parallel(values: List[str]) -> List[str]:
    if values[0] != "1":
        raise MegatronFlagError(f"--context-parallel-size {values[0]}: no context parallelism here; long sequences "
                                f"split their activations with --sequence-parallel (with TP > 1) and recompute "
                                f"(--recompute-granularity)")
    return []


def _ckpt_format(values: List[str]) -> List[str]:
    if values[0] != "torch":
        raise MegatronFlagError(f"--ckpt-format {values[0]}: checkpoints here are per-rank files in Megatron's folder "
                                f"layout (--ckpt-format torch); another layout is read with --reshard")
    return []


def _data_impl(values: List[str]) -> List[str]:
    if values[0] != "mmap":
        raise MegatronFlagError(f"--data-impl {values[0]}: only megatron-core's mmap indexed datasets are read here "
                                f"(tools/preprocess_data.py writes them)")
    return []


def _no_pipeline_parallel(values: List[str]) -> List[str]:
    return ["--pipeline-model-parallel-size", "1"]


MOE = ("this stack trains dense models only (no mixture of experts); the closest is a dense model of the same "
       "active size")
FP8 = "fp8 needs Transformer Engine's fp8 layers, which are not wired here; use --bf16"

RULES: Dict[str, Rule] = {
    # ---- renamed -------------------------------------------------------------------------
    "--norm-epsilon": _renamed("--layernorm-epsilon"),
    "--override-opt_param-scheduler": Rule(0, lambda v: ["--override-opt-param-scheduler"]),
    "--num-key-value-heads": Rule(1, lambda v: ["--group-query-attention", "--num-query-groups", v[0]]),
    # ---- mapped onto our settings ----------------------------------------------------------
    "--use-distributed-optimizer": Rule(0, lambda v: ["--zero-stage", "1"],
                                        note="ZeRO-1 (DeepSpeed's optimizer state sharded over data-parallel ranks)"),
    "--recompute-activations": Rule(0, lambda v: ["--recompute-granularity", "selective"]),
    "--checkpoint-activations": Rule(0, lambda v: ["--recompute-granularity", "full"]),
    "--use-rotary-position-embeddings": Rule(0, lambda v: ["--position-embedding-type", "rope"]),
    "--use-flash-attn": Rule(0, lambda v: ["--attention-backend", "sdpa"],
                             note="torch's SDPA, whose flash kernel serves on GPUs"),
    "--attention-backend": Rule(1, _attention_backend),
    "--normalization": Rule(1, _normalization),
    "--context-parallel-size": Rule(1, _context_parallel),
    "--ckpt-format": Rule(1, _ckpt_format),
    "--data-impl": Rule(1, _data_impl),
    "--no-pipeline-parallel": Rule(0, _no_pipeline_parallel),
    "--no-position-embedding": Rule(0, lambda v: ["--no-add-position-embedding"]),
    # ---- accepted, with nothing to act on here ---------------------------------------------
    "--use-mcore-models": Rule(0, note="the model is always megatron-core's layers"),
    "--no-query-key-layer-scaling": Rule(0, note="megatron-core does not scale query-key layers unless asked"),
    "--no-masked-softmax-fusion": Rule(0, note="the masked-softmax fusion (an apex kernel) is never used here"),
    "--attention-softmax-in-fp32": Rule(0, note="the attention softmax is computed in fp32 here (SDPA accumulates "
                                                 "in fp32; megatron-core's unfused attention upcasts)"),
    "--no-async-tensor-model-parallel-allreduce": Rule(0, note="megatron-core's TP all-reduce overlap is its own"),
    "--no-create-attention-mask-in-dataloader": Rule(0, note="batches carry no attention mask here (it is built "
                                                              "causal in the layer)"),
    "--num-workers": Rule(1, note="batches are read on a prefetch thread, not in worker processes"),
    "--data-cache-path": Rule(1, note="the sample indices are built in memory at start-up, nothing is cached"),
    "--deepspeed-activation-checkpointing": Rule(0, note="recompute is torch's checkpoint with megatron-core's "
                                                         "RNG tracker (--recompute-granularity)"),
    "--overlap-grad-reduce": Rule(0, note="DeepSpeed's overlap_comm, on for ZeRO 1 and 2 on GPUs"),
    "--overlap-param-gather": Rule(0, note="DeepSpeed gathers ZeRO-1/2's updated parameters after the step; there "
                                           "is no separate overlap to set"),
    # ---- refused ---------------------------------------------------------------------------
    "--num-experts": Rule(1, refused=MOE),
    "--expert-model-parallel-size": Rule(1, refused=MOE),
    "--moe-router-topk": Rule(1, refused=MOE),
    "--moe-router-load-balancing-type": Rule(1, refused=MOE),
    "--moe-aux-loss-coeff": Rule(1, refused=MOE),
    "--moe-grouped-gemm": Rule(0, refused=MOE),
    "--moe-token-dispatcher-type": Rule(1, refused=MOE),
    "--fp8-format": Rule(1, refused=FP8),
    "--fp8-amax-history-len": Rule(1, refused=FP8),
    "--fp8-amax-compute-algo": Rule(1, refused=FP8),
    "--fp8-param-gather": Rule(0, refused=FP8),
    "--async-save": Rule(0, refused="checkpoints are saved synchronously here (every rank writes, then one rename "
                                    "makes the checkpoint current); drop the flag"),
    "--no-save-optim": Rule(0, refused="DeepSpeed writes the optimizer state with every checkpoint; "
                                       "tools/merge_checkpoint.py writes the model's weights alone (and "
                                       "tools/convert_checkpoint.py a Hugging Face folder)"),
    "--calculate-per-token-loss": Rule(0, refused="the loss here is each micro batch's mean over its tokens, "
                                                  "averaged over micro batches and ranks (Megatron's default); "
                                                  "per-token weighting across them is not implemented: drop the flag"),
    "--rampup-batch-size": Rule(-1, refused="the global batch is fixed for a run here (DeepSpeed's engine and the "
                                            "dynamic blend plan by it); give the final --global-batch-size"),
}


def translate(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Our flags for `argv`, and the start-up notes of the Megatron flags in it."""
    out, notes = [], []
    i = 0
    while i < len(argv):
        flag = argv[i]
        name, eq, inline = flag.partition("=")
        rule = RULES.get(name) if name.startswith("--") else None
        if rule is None:
            out.append(flag)
            i += 1
            continue
        if rule.values == 0:
            values, i = [], i + 1
        elif eq:
            values, i = [inline], i + 1
        elif rule.values > 0:
            values = list(argv[i + 1: i + 1 + rule.values])
            if len(values) < rule.values:
                raise MegatronFlagError(f"{name} expects {rule.values} value(s)")
            i += 1 + rule.values
        else:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values, i = list(argv[i + 1: j]), j
        if rule.refused:
            raise MegatronFlagError(f"{name}: {rule.refused}")
        if rule.to is not None:
            out.extend(rule.to(values))
        note = f"{name}: {rule.note}" if rule.note else ""
        if note and note not in notes:
            notes.append(note)
    return out, notes
