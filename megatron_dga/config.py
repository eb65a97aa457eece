"""Configuration of a pretraining run, as dataclasses.

Each dataclass groups one concern. Every field maps to one Megatron-style command-line flag
(`--tensor-model-parallel-size` for `tensor_model_parallel_size`); `arguments.py` generates
the parser from these fields, so a flag's default and help text live only here.
Field metadata: `help` (required), and optionally `flag` (a non-derived flag name),
`choices`, `nargs`, `required` (a flag the command line must give, as Megatron requires it: the
field's default serves only code that builds a config itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


def arg(default, help: str, **extra):
    """A config field with its command-line help text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ModelConfig:
    num_layers: int = arg(2, "Number of transformer layers.", required=True)
    hidden_size: int = arg(128, "Transformer hidden size.", required=True)
    num_attention_heads: int = arg(4, "Number of attention heads.", required=True)
    ffn_hidden_size: Optional[int] = arg(None, "MLP hidden size (default: 4 x hidden size).")
    seq_length: int = arg(128, "Tokens per training sequence.", required=True)
    max_position_embeddings: Optional[int] = arg(
        None, "Size of the learned position table (default: --seq-length)."
    )
    position_embedding_type: str = arg(
        "learned_absolute", "Position embedding ('none': no positions but the causal mask's; Megatron's "
        "--no-position-embedding).", choices=["learned_absolute", "rope", "none"]
    )
    add_position_embedding: bool = arg(
        True, "--no-add-position-embedding (Megatron's --no-position-embedding): no learned position table; "
        "with --position-embedding-type rope nothing changes.",
    )
    rotary_base: int = arg(10000, "Base of the rotary position embedding (with rope).")
    rotary_percent: float = arg(1.0, "Share of each head's dimensions that RoPE rotates (with rope).")
    kv_channels: Optional[int] = arg(
        None, "Dimension of each attention head: must be --hidden-size / --num-attention-heads here (Megatron's "
        "default), which is what the layers, the memory estimate and the Hugging Face mapping assume.",
    )
    apply_layernorm_1p: bool = arg(
        False, "Norm weights stored centred on zero and applied as 1 + weight (Megatron's LayerNorm1P).",
    )
    qk_layernorm: bool = arg(False, "Normalize queries and keys in each head before attention.")
    cross_entropy_loss_fusion: bool = arg(
        False, "megatron-core's fused vocabulary-parallel cross entropy (one kernel for the softmax and its "
        "gradient).",
    )
    normalization: str = arg("LayerNorm", "Normalization layer.", choices=["LayerNorm", "RMSNorm"])
    layernorm_epsilon: float = arg(1e-5, "Epsilon of the normalization layers.")
    swiglu: bool = arg(False, "Use a SwiGLU MLP instead of GELU.")
    openai_gelu: bool = arg(
        False, "GELU by its tanh approximation (GPT-2's 'gelu_new') instead of the exact erf form."
    )
    group_query_attention: bool = arg(False, "Grouped-query attention (with --num-query-groups).")
    num_query_groups: Optional[int] = arg(
        None, "Key/value heads shared by groups of query heads, with --group-query-attention."
    )
    disable_bias_linear: bool = arg(False, "No biases in the linear layers.")
    untie_embeddings_and_output_weights: bool = arg(
        False, "A separate output layer (vocabulary-parallel, no bias) instead of the word embedding as LM head."
    )
    hidden_dropout: float = arg(0.1, "Dropout after attention and MLP.")
    attention_dropout: float = arg(0.1, "Dropout on attention probabilities.")
    init_method_std: float = arg(0.02, "Standard deviation of the weight initialisation.")
    vocab_size: Optional[int] = arg(
        None, "Model vocabulary before padding (default: the tokenizer's vocabulary)."
    )
    make_vocab_size_divisible_by: int = arg(
        128, "Pad the vocabulary to a multiple of this times the tensor-parallel size."
    )
    transformer_impl: str = arg(
        "local",
        "Layer implementation: megatron-core's local spec (the default), Transformer Engine (opt-in: its "
        "parameter names differ, so its checkpoints resume only with it and have no Hugging Face mapping), or "
        "auto (Transformer Engine when it is installed and CUDA is present).",
        choices=["auto", "local", "transformer_engine"],
    )
    attention_backend: str = arg(
        "auto", "Core attention: 'sdpa' (torch's scaled_dot_product_attention: flash or memory-efficient "
        "kernels on GPU), 'unfused' (megatron-core's DotProductAttention), or 'auto' (Transformer Engine's "
        "attention when its layers are used, else sdpa).", choices=["auto", "sdpa", "unfused"],
    )
    bias_dropout_fusion: bool = arg(
        True, "On GPUs, megatron-core's jit-fused bias + dropout + residual add (compiled on the first iteration).",
    )
    bias_gelu_fusion: bool = arg(
        True, "On GPUs, megatron-core's jit-fused bias + GELU, where it computes the activation asked for "
        "(--openai-gelu with biases).",
    )
    bias_swiglu_fusion: bool = arg(True, "On GPUs, megatron-core's jit-fused SwiGLU (--swiglu).")
    recompute_granularity: Optional[str] = arg(
        None, "Activation recompute: 'full' recomputes whole transformer layers in the backward pass, "
        "'selective' only their core attention.", choices=["full", "selective"],
    )
    recompute_method: str = arg(
        "uniform", "With --recompute-granularity full: 'uniform' checkpoints groups of --recompute-num-layers "
        "layers; 'block' checkpoints the first --recompute-num-layers layers of each pipeline stage.",
        choices=["uniform", "block"],
    )
    recompute_num_layers: int = arg(1, "Layers per checkpointed group (uniform) or checkpointed layers (block).")
    use_cpu_initialization: Optional[bool] = arg(
        None,
        "Initialise weights on the CPU from one full-size master tensor per weight, sliced for each rank, so "
        "that every tensor- and pipeline-parallel layout starts from identical weights. Default: on without "
        "CUDA; on GPUs each rank initialises its own shards on the device (megatron-core's GPU path), so no "
        "host builds full-size fp32 weights. --no-use-cpu-initialization forces the device path.",
    )


@dataclass
class ParallelConfig:
    tensor_model_parallel_size: int = arg(1, "Tensor-parallel degree (TP).")
    pipeline_model_parallel_size: int = arg(1, "Pipeline-parallel degree (PP).")
    sequence_parallel: bool = arg(
        False, "Sequence parallelism (megatron-core's, with TP > 1): norms, dropouts and residual adds work on 1/TP "
        "of the sequence on each tensor-parallel rank, and all-gathers and reduce-scatters replace the TP "
        "all-reduces, so activations outside the TP region take 1/TP of the memory. Ignored, with a notice, at TP=1.",
    )
    zero_stage: int = arg(0, "DeepSpeed ZeRO stage (0, 1 or 2; at most 1 with PP > 1).",
                          choices=[0, 1, 2])
    distributed_backend: Optional[str] = arg(
        None, "torch.distributed backend (default: nccl with CUDA, gloo without).",
        choices=["nccl", "gloo"],
    )
    distributed_timeout_minutes: float = arg(
        10, "Timeout of collective operations, for every process group (fractions allowed: 0.5 is 30 s). A rank "
        "that makes no progress for this long plus 30 s is ended by a watchdog.",
    )
    checkpoint_load_timeout_minutes: float = arg(
        60, "How long loading a checkpoint (--load, --load-hf, --reshard) may take before the watchdog ends "
        "the rank. The collectives around it still wait --distributed-timeout-minutes for the slowest rank.",
    )
    checkpoint_save_timeout_minutes: float = arg(
        60, "How long saving a checkpoint may take before the watchdog ends the rank (the collectives that "
        "gather every rank's result still wait --distributed-timeout-minutes for the slowest).",
    )
    local_rank: Optional[int] = arg(
        None, "Set by the deepspeed launcher; the LOCAL_RANK environment variable is used.",
        flag="--local_rank",
    )


@dataclass
class TrainingConfig:
    micro_batch_size: int = arg(4, "Sequences per micro batch on one data-parallel rank.")
    global_batch_size: Optional[int] = arg(
        None,
        "Sequences per iteration over all data-parallel ranks (default: micro batch x DP); "
        "gradient accumulation steps = global / (micro x DP).",
    )
    train_iters: Optional[int] = arg(
        None, "Number of training iterations (or --train-samples, or --train-tokens; one of them is required)."
    )
    train_samples: Optional[int] = arg(
        None, "Length of training in samples (sequences): --train-iters = samples / --global-batch-size."
    )
    train_tokens: Optional[int] = arg(
        None, "Length of training in tokens (Megatron-DeepSpeed): samples x --seq-length."
    )
    exit_interval: Optional[int] = arg(
        None, "Stop when the iteration is a multiple of this (after saving, with --save)."
    )
    exit_duration_in_mins: Optional[float] = arg(
        None, "Save a checkpoint and exit after this many minutes of training (before a wall-time limit)."
    )
    exit_signal_handler: bool = arg(
        False, "On SIGTERM (Slurm preemption, scancel): finish the current iteration, save a checkpoint and "
        "exit with status 0.",
    )
    check_for_nan_in_loss_and_grad: bool = arg(
        True, "Stop, without saving, at the first iteration whose loss or gradient norm is not finite (fp16 "
        "overflow steps, which DeepSpeed skips, excepted), naming the iteration and the domains of its batch.",
    )
    seed: int = arg(1234, "Random seed of initialisation, data order and dropout.")
    bf16: bool = arg(False, "bf16 mixed precision (GPU).")
    fp16: bool = arg(False, "fp16 mixed precision with dynamic loss scaling (GPU).")
    hysteresis: int = arg(2, "fp16: overflow steps tolerated before the dynamic loss scale is lowered.")
    accumulate_allreduce_grads_in_fp32: Optional[bool] = arg(
        None, "Accumulate gradients over micro batches, and all-reduce them, in fp32 (on by default with --bf16, "
        "as in Megatron). DeepSpeed does this in its BF16_Optimizer, a ZeRO-1 optimizer, so --zero-stage 0 then "
        "runs as ZeRO-1; --no-accumulate-allreduce-grads-in-fp32 keeps bf16 accumulation.",
    )
    grad_reduce_in_bf16: bool = arg(
        False, "With fp32 accumulation, all-reduce the accumulated gradients in bf16 (half the traffic).",
    )
    eod_mask_loss: bool = arg(False, "Exclude end-of-document tokens from the loss.")
    manual_gc: bool = arg(
        False, "Disable Python's automatic garbage collection (its pauses differ between ranks and stall "
        "collectives) and collect every --manual-gc-interval iterations instead.",
    )
    manual_gc_interval: int = arg(0, "With --manual-gc: iterations between collections (0: only around evaluation).")
    manual_gc_eval: bool = arg(True, "With --manual-gc: collect before and after each evaluation.")
    empty_unused_memory_level: int = arg(
        0, "Release the allocator's cached GPU memory: 1 after each optimizer step, 2 also after each evaluation "
        "(costs speed; for fragmentation).", choices=[0, 1, 2],
    )
    profile: bool = arg(
        False, "Profile iterations --profile-step-start to --profile-step-end: CUDA's profiler range (for nsys "
        "--capture-range=cudaProfilerApi), or with --use-pytorch-profiler a torch.profiler trace in the TensorBoard "
        "folder.",
    )
    profile_step_start: int = arg(10, "First profiled iteration.")
    profile_step_end: int = arg(12, "Iteration at which profiling stops.")
    use_pytorch_profiler: bool = arg(False, "Profile with torch.profiler (a trace TensorBoard shows).")
    profile_ranks: List[int] = arg([0], "Ranks that profile.", nargs="+")
    deepspeed: bool = arg(
        False, "Accepted for Megatron-DeepSpeed compatibility; DeepSpeed is always used."
    )
    deepspeed_config: Optional[str] = arg(
        None,
        "A DeepSpeed config JSON. Its settings win; unset ones are derived from the flags.",
        flag="--deepspeed_config",
    )


@dataclass
class OptimizerConfig:
    lr: float = arg(6e-4, "Peak learning rate.")
    min_lr: float = arg(0.0, "Learning rate at the end of the decay.")
    lr_warmup_iters: int = arg(0, "Iterations of linear warmup.")
    lr_warmup_samples: Optional[int] = arg(None, "Warmup in samples (instead of --lr-warmup-iters).")
    lr_warmup_tokens: Optional[int] = arg(None, "Warmup in tokens (Megatron-DeepSpeed; instead of --lr-warmup-iters).")
    lr_warmup_fraction: Optional[float] = arg(None, "Warmup as a fraction of the decay length.")
    lr_decay_iters: Optional[int] = arg(None, "Iterations of decay (default: --train-iters).")
    lr_decay_samples: Optional[int] = arg(None, "Decay in samples (instead of --lr-decay-iters).")
    lr_decay_tokens: Optional[int] = arg(None, "Decay in tokens (Megatron-DeepSpeed; instead of --lr-decay-iters).")
    lr_decay_style: str = arg(
        "linear", "Decay after warmup (WSD: warmup, stable, then --lr-wsd-decay-style over the last "
        "--lr-wsd-decay-iters).", choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"]
    )
    lr_wsd_decay_style: str = arg(
        "exponential", "WSD: the decay of its last phase.", choices=["exponential", "linear", "cosine", "minus_sqrt"]
    )
    lr_wsd_decay_iters: Optional[int] = arg(None, "WSD: iterations of the last, decaying phase.")
    lr_wsd_decay_samples: Optional[int] = arg(None, "WSD: the last phase in samples.")
    override_opt_param_scheduler: bool = arg(
        False, "On resume, take the learning-rate schedule from the flags, not from the checkpoint."
    )
    optimizer: str = arg("adam", "adam (AdamW: Adam with decoupled weight decay, as Megatron's adam) or sgd.",
                         choices=["adam", "sgd"])
    sgd_momentum: float = arg(0.9, "Momentum of --optimizer sgd.")
    decoupled_lr: Optional[float] = arg(
        None, "A learning rate of its own for the input embedding and the output layer (Megatron's decoupled LR)."
    )
    decoupled_min_lr: Optional[float] = arg(None, "The minimum of --decoupled-lr's schedule.")
    weight_decay: float = arg(0.01, "AdamW weight decay (not applied to biases and norms).")
    adam_beta1: float = arg(0.9, "AdamW beta1.")
    adam_beta2: float = arg(0.999, "AdamW beta2.")
    adam_eps: float = arg(1e-8, "AdamW epsilon.")
    clip_grad: float = arg(1.0, "Gradient clipping by global norm (0 disables).")


@dataclass
class DataConfig:
    domains_manifest: Optional[str] = arg(
        None, "domains.json written by tools/build_domains.py: one indexed dataset per domain."
    )
    data_path: List[str] = arg(
        [], "Megatron blend 'w1 prefix1 w2 prefix2 ...' (or a single prefix); each prefix is a "
        "domain named after its file. The weights become --mixing static.", nargs="*",
    )
    tokenizer_type: Optional[str] = arg(
        None, "Tokenizer of --data-path data (the manifest records its own).",
        choices=["GPT2BPETokenizer", "HuggingFaceTokenizer", "TikTokenizer", "SentencePieceTokenizer",
                 "GPTSentencePieceTokenizer", "Llama2Tokenizer", "NullTokenizer"],
    )
    tokenizer_model: Optional[str] = arg(None, "Tokenizer file for --tokenizer-type.")
    vocab_file: Optional[str] = arg(None, "GPT2BPETokenizer: GPT-2's vocab.json (with --merge-file).")
    merge_file: Optional[str] = arg(None, "GPT2BPETokenizer: GPT-2's merges.txt (with --vocab-file).")
    tiktoken_pattern: Optional[str] = arg(None, "TikTokenizer: Megatron's pre-tokenization pattern.",
                                          choices=["v1", "v2"])
    mock_data: bool = arg(
        False, "Train on random tokens (a domain 'mock' of --vocab-size ids), as Megatron's mock dataset: no "
        "--data-path needed.",
    )
    mmap_bin_files: bool = arg(
        True, "Memory-map the .bin files (--no-mmap-bin-files reads documents with file reads instead).",
    )
    split: str = arg(
        "969,30,1", "Train/validation/test split of each domain's documents, Megatron style."
    )
    domain_max_tokens: Optional[int] = arg(
        None, "Cap on each domain's training tokens (a seeded subset of its documents), to "
        "train in the token-limited regime where domains repeat.",
    )
    specific_data_path: Optional[str] = arg(
        None, "Indexed dataset prefix of the specific set (the target task): DGA's probes "
        "measure the alignment of each domain's gradient with its gradient.",
    )
    specific_train_samples: Optional[int] = arg(
        None, "Use only this many sequences of the specific set (the few-examples regime)."
    )
    specific_valid_data_path: Optional[str] = arg(
        None, "Indexed dataset prefix of held-out specific data, evaluated as "
        "'lm loss validation/specific' at every evaluation.",
    )


@dataclass
class MixingConfig:
    mixing: str = arg(
        "natural", "How domain weights are chosen: fixed (uniform, natural = proportional to "
        "training tokens, static = --mixture-weights), importance sampling from the specific "
        "set's histogram over domains, or learned online by Dynamic Gradient Alignment.",
        choices=["uniform", "natural", "static", "importance", "dga"],
    )
    mixture_weights: Optional[str] = arg(
        None, "Weights for --mixing static, as 'domain=weight,...' (normalised)."
    )
    importance_histogram: Optional[str] = arg(
        None, "--mixing importance: the specific set's histogram over the domains, as written by "
        "tools/cluster_domains.py --assign (clusters matched to domains by name).",
    )
    importance_clusters: Optional[str] = arg(
        None, "--mixing importance: a tools/cluster_domains.py output folder; the specific set's "
        "documents are assigned to its centroids at start-up.",
    )
    importance_smoothing: float = arg(
        0.0, "--mixing importance: weight of the natural distribution mixed into the histogram."
    )
    dga_update_interval: Optional[int] = arg(
        None, "DGA: iterations between weight updates (T_r). Default: the smallest multiple of 10 at which the "
        "probes cost at most --dga-probe-budget of training's forward-backward passes, with --dga-lr and "
        "--dga-step-clip multiplied by sqrt(T_r / 10).",
    )
    dga_probe_budget: Optional[float] = arg(
        None, "DGA: without --dga-update-interval, the most the probes may add to training's forward-backward "
        "passes: (sources + 1) x probe micro batches per rank, per update, over the interval's micro batches "
        "per rank (default 0.1).",
    )
    dga_early_fraction: Optional[float] = arg(
        None, "DGA: where the update interval derived from --dga-probe-budget exceeds 10 iterations, the first "
        "fraction of the run updates every 10 iterations instead, on probe micro batches cut to the same cost "
        "(10 / T_r of training's sequences), with the step as at 10 (default 1/3; 0 turns it off). Below one "
        "sequence, the sources' cut probes hold one sequence's tokens (--dga-probe-prefixes), the specific set's "
        "a whole micro batch, and they come as often as the same cost allows (every 20 iterations at "
        "T_r = 90 and 8 sequences), and run to the end where whole probes would leave fewer than 3 updates after "
        "this fraction. Not under pipeline parallelism, nor with --dga-update-interval, "
        "--dga-probe-batch-size or --dga-probe-microbatches.",
    )
    dga_probe_prefixes: Optional[bool] = arg(
        None, "DGA: where the early phase's probes hold one sequence's tokens for each source (--dga-early-fraction), "
        "read them as the first seq-length / micro-batch-size tokens of a micro batch of sequences: 8 prefixes "
        "of 16 tokens at 128 and 8, as many documents as whole probes read for the cost of one sequence "
        "(default on; --no-dga-probe-prefixes probes one whole sequence).",
    )
    dga_max_epochs: float = arg(
        16.0, "DGA: no domain is sampled at a weight that would read its training split more than this many "
        "times over the run (weight <= E x its sequences / the run's sequences). Where the weights align, "
        "DGA's one-step score does not see that the next epoch of the same text is worth less than the "
        "last: Muennighoff et al. (2023) find repeated tokens losing most of their value by about 16 epochs. "
        "A run longer than E epochs of all the data is bounded by the natural mixture's repetition. 0: no bound.",
    )
    dga_lr: float = arg(
        0.5, "DGA: step size eta of the exponentiated-gradient update "
        "alpha <- softmax(log alpha + eta * alignment); at an update interval derived from --dga-probe-budget, "
        "the step at 10 iterations (times sqrt(T_r / 10)).",
    )
    dga_ema: float = arg(
        0.5, "DGA: EMA weight beta on the previous weights, alpha <- beta * alpha + (1 - beta) * "
        "alpha_hat; 0 turns the EMA off.",
    )
    dga_ema_mode: str = arg(
        "state", "DGA: 'state' feeds the smoothed weights back into the next step; 'sampling' "
        "smooths only the weights that are sampled from.", choices=["state", "sampling"],
    )
    dga_warmup_iters: int = arg(0, "DGA: no weight update before this iteration.")
    dga_min_weight: float = arg(0.0, "DGA: floor on every weight (must be below 1/number of sources).")
    dga_min_domain_weight: float = arg(
        0.0, "DGA: floor on every domain's sampling weight, applied after mixing the base distributions "
        "(must be below 1/number of domains): the domains below it are lifted to it, the others give up "
        "that mass in proportion. With --dga-base-distributions, the floor that makes every domain "
        "sampled: 2 / (train iterations x global batch) gives each an integral of 2 samples.",
    )
    dga_probe_microbatches: Optional[int] = arg(
        None, "DGA: probe micro batches per source and for the specific set, per data-parallel rank. Default: 1, "
        "which the start of a run may cut to fewer sequences (--dga-early-fraction)."
    )
    dga_probe_batch_size: Optional[int] = arg(
        None, "DGA: probe sequences per source, and for the specific set, at each update, over all data-parallel "
        "ranks (as --global-batch-size is for training): the same probes, hence the same weights, in every "
        "layout. It must be a multiple of --micro-batch-size x DP, or, below one micro batch per rank (not under "
        "pipeline parallelism), a multiple of DP: each rank then probes one micro batch of B / DP sequences. "
        "Default: --dga-probe-microbatches per "
        "data-parallel rank, which grows the probe with DP."
    )
    dga_initial_weights: str = arg(
        "uniform", "DGA: starting weights.", choices=["uniform", "natural"]
    )
    dga_alignment: str = arg(
        "adam", "DGA: the alignment score of a source with the specific set: 'raw' <g_spe, g_i> (the "
        "SGD step's first-order effect), 'adam' <g_spe, P g_i> with P = 1 / (sqrt(v_hat) + eps) from "
        "the optimizer's second moments (Adam's step), 'cosine' both gradients normalised.",
        choices=["raw", "adam", "cosine"],
    )
    dga_step_scale: str = arg(
        "spread", "DGA: 'spread' divides the centred score by the running scale of the scores (the median of "
        "the robust spreads of the last --dga-scale-window updates), so --dga-lr is a step in log-weight units "
        "whatever the gradient scale; 'none' uses the score as it is.", choices=["none", "spread"],
    )
    dga_scale_window: int = arg(
        9, "DGA: updates whose spreads make the running scale of --dga-step-scale spread (their median): it "
        "ignores up to (W - 1) / 2 outlying updates and follows a lasting change of scale within (W + 1) / 2.",
    )
    dga_step_clip: float = arg(
        1.0, "DGA: clip every source's step eta x score to [-C, C] (log-weight units), scaled as --dga-lr is; "
        "0: no clip."
    )
    dga_scale_by_lr: bool = arg(
        True, "DGA: multiply the step by the learning-rate ratio lr_t / lr_max (the Taylor argument's "
        "learning rate, which a fixed eta otherwise absorbs)."
    )
    dga_score_ema: float = arg(
        0.5, "DGA: EMA weight on past scores: the step follows a bias-corrected moving average of the "
        "centred scores across updates instead of the last one alone; 0: off."
    )
    dga_noise_shrink: bool = arg(
        False, "DGA: shrink each source's centred score by tau^2 / (tau^2 + se^2), se its standard error over "
        "the probe micro batches and tau^2 the spread of the scores less the noise: steps follow the part of "
        "the differences the probes resolve (needs 2 or more probe micro batches per source over all data-parallel ranks).",
    )
    dga_base_distributions: Optional[str] = arg(
        None, "DGA distribution reweighting: an N x k matrix of distributions over the k domains "
        "(.npy, or JSON list of rows); DGA learns weights over these N bases, one probe per base.",
    )


@dataclass
class CheckpointConfig:
    save: Optional[str] = arg(None, "Folder to save checkpoints to.")
    load: Optional[str] = arg(None, "Folder to resume from (its latest checkpoint).")
    save_interval: Optional[int] = arg(None, "Iterations between checkpoints.")
    no_load_optim: bool = arg(False, "Do not load the optimizer state when resuming.")
    no_load_rng: bool = arg(False, "Do not load the RNG states when resuming.")
    reshard: bool = arg(
        False, "Resume a checkpoint saved under another TP/PP/DP layout (or ZeRO stage): model, Adam's moments, "
        "schedule, data position and mixing state are converted to this run's layout. RNG states are seeded "
        "from --seed and the iteration. Without it a changed layout is refused.",
    )
    finetune: bool = arg(
        False, "Start training from the model weights of --load's newest checkpoint, at iteration 0: the "
        "optimizer, RNG states, data position and mixing state are not loaded (Megatron's --finetune).",
    )
    use_checkpoint_args: bool = arg(
        False, "Take the model's flags (layers, sizes, heads, sequence length, position embeddings, "
        "normalization, vocabulary, ...) from --load's newest checkpoint, in place of the command line's "
        "(Megatron's --use-checkpoint-args).",
    )
    no_save_rng: bool = arg(
        False, "Do not save RNG states; a run resumed from such a checkpoint seeds its generators from --seed "
        "and the iteration.",
    )
    load_hf: Optional[str] = arg(
        None, "Initialise the model from a Hugging Face transformers folder (GPT-2 or Llama shaped, the same "
        "shape as the flags give), split into this run's layout; fresh optimizer, iteration 0. Ignored when "
        "--load holds a checkpoint.",
    )


@dataclass
class LoggingConfig:
    log_interval: int = arg(10, "Iterations between log lines.")
    tensorboard_dir: Optional[str] = arg(None, "Where to write TensorBoard event files.")
    metrics_file: Optional[str] = arg(
        None, "JSON-lines file with one object per logged iteration and per evaluation."
    )
    eval_interval: int = arg(1000, "Iterations between evaluations.")
    eval_iters: int = arg(
        10, "Global batches evaluated at each evaluation, shared by the domains (at least one each); the "
        "--specific-valid-data-path set gets as many of its own.",
    )
    log_throughput: bool = arg(
        False, "Log the model FLOPs per second per GPU (Megatron's formula: 'throughput per GPU (TFLOP/s/GPU)').",
    )
    log_params_norm: bool = arg(False, "Log the norm of the parameters ('params norm', 'params-norm').")
    tensorboard_log_interval: Optional[int] = arg(
        None, "Iterations between TensorBoard (and W&B) scalars (default: --log-interval).",
    )
    tensorboard_queue_size: int = arg(100, "Events TensorBoard's writer queues before it writes them.")
    log_validation_ppl_to_tensorboard: bool = arg(False, "Also write the validation perplexity ('... ppl').")
    log_memory_to_tensorboard: bool = arg(
        False, "Also write the memory in use and its peak ('mem-allocated-bytes', 'mem-max-allocated-bytes').",
    )
    log_world_size_to_tensorboard: bool = arg(False, "Also write the number of ranks ('world-size').")
    log_loss_scale_to_tensorboard: bool = arg(True, "Write the fp16 loss scale ('loss-scale').")
    log_batch_size_to_tensorboard: bool = arg(
        True, "Write the global batch size ('batch-size'); always on here, the flag is accepted.",
    )
    log_timers_to_tensorboard: bool = arg(
        True, "Write the timers ('iteration-time', DGA's 'mixing-time/...'); always on here, the flag is accepted.",
    )
    log_optimizer_states_to_tensorboard: bool = arg(
        False, "Write the norms of Adam's moments ('optimizer/exp_avg-norm', 'optimizer/exp_avg_sq-norm').",
    )
    wandb_project: Optional[str] = arg(None, "Weights & Biases project: log the TensorBoard scalars there too.")
    wandb_exp_name: Optional[str] = arg(None, "Weights & Biases run name.")
    wandb_save_dir: Optional[str] = arg(
        None, "Where Weights & Biases writes its run (default: the --tensorboard-dir's parent, or the current "
        "folder). It runs offline unless WANDB_MODE says otherwise.",
    )


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
