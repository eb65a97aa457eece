"""Adam's preconditioner, read from the optimizer's own state, for `--dga-alignment adam`.

Adam moves the parameters by -gamma * P m_hat with P = diag(1 / (sqrt(v_hat) + eps)), v_hat the
bias-corrected second moment. Adding a source's gradient g_i to the next training step (step
t + 1) therefore changes the specific loss, to first order in g_i, by
-gamma (1 - beta1) / (1 - beta1^(t+1)) <g_spe, P g_i>, with the P of that step:
v_hat = beta2 v_t / (1 - beta2^(t+1)) (the gradient's own share of v is second order). The
alignment DGA should use under Adam is <P g_spe, g_i>. `apply_(flat)` multiplies a gradient
buffer of this rank's parameters by P, element by element, in place.

The second moments live where the optimizer keeps them:
- a plain torch optimizer (ZeRO-0, fp32): `state[param]["exp_avg_sq"]`;
- ZeRO-1/2 and DeepSpeed's bf16 optimizer: fp32 partitions, one per data-parallel rank, with
  every parameter's fragment in this rank's partition described by `param._hp_mapping`
  (DeepSpeed's own mapping, used by its universal checkpoints). Each rank preconditions the
  fragments it holds, and one all-reduce over the data-parallel group assembles the whole
  buffer: P is sharded exactly as ZeRO shards it, never gathered;
- DeepSpeed's fp16 optimizers: fp32 master copies, flat (fused) or per parameter (unfused).
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from deepspeed.utils.tensor_fragment import fragment_address

from megatron_dga.mixing.gradients import FlatGradient, chunks

log = logging.getLogger(__name__)

# (parameter index in the layout, slice of the parameter, its exp_avg_sq, beta2, eps, step)
Fragment = Tuple[int, slice, torch.Tensor, float, float, float]


def next_step_preconditioner(v: torch.Tensor, beta2: float, eps: float, step: float, dtype) -> torch.Tensor:
    """1 / (sqrt(v_hat) + eps) of Adam's next step (step + 1), from the second moment v now."""
    v_hat = v.to(dtype) * (beta2 / (1.0 - beta2 ** (max(step, 0.0) + 1.0)))
    return 1.0 / (v_hat.sqrt() + eps)


class OptimizerStateMissing(ValueError):
    pass


def _step_count(state) -> float:
    """The optimizer's step count (a host read where it is a device tensor: once per group)."""
    step = state.get("step", 0)
    return float(step.item() if torch.is_tensor(step) else step)


def _group_hyper(optimizer, tensor) -> Tuple[float, float]:
    for group in optimizer.param_groups:
        if any(p is tensor for p in group["params"]):
            return float(group["betas"][1]), float(group["eps"])
    raise OptimizerStateMissing("a parameter is in none of the optimizer's parameter groups")


class AdamPreconditioner:
    def __init__(self, engine, layout: FlatGradient, dp_group, dp_size: int):
        self.engine, self.layout, self.dp_group, self.dp_size = engine, layout, dp_group, dp_size
        self.partitioned = any(hasattr(p, "_hp_mapping") for p in layout.params)
        self._warned = False
        self._step: Optional[float] = None

    # ---- where the second moments are --------------------------------------------------------
    def _partition_tensor(self, wrapper, group_index: int) -> torch.Tensor:
        for name in ("single_partition_of_fp32_groups", "fp32_groups_flat_partition"):
            if hasattr(wrapper, name):
                return getattr(wrapper, name)[group_index]
        raise OptimizerStateMissing(f"cannot find the fp32 partitions of {type(wrapper).__name__}")

    def _fragments(self) -> Iterator[Fragment]:
        wrapper = self.engine.optimizer
        inner = getattr(wrapper, "optimizer", wrapper)  # the torch optimizer DeepSpeed wraps
        if self.partitioned:
            for index, p in enumerate(self.layout.params):
                mapping = getattr(p, "_hp_mapping", None)
                if mapping is None:
                    continue  # no fragment of this parameter in this rank's partition
                flat = self._partition_tensor(wrapper, mapping.param_group_index)
                yield self._fragment(inner, index, flat, mapping.lp_fragment_address,
                                     mapping.hp_fragment_address)
            return
        if hasattr(wrapper, "fp32_groups_flat"):  # fp16, fused: contiguous fp32 copies of each group
            position = {id(p): i for i, p in enumerate(self.layout.params)}
            for flat, group in zip(wrapper.fp32_groups_flat, wrapper.fp16_groups):
                offset = 0
                for p in group:
                    if id(p) in position:
                        yield self._whole(inner, position[id(p)], flat, offset, p.numel())
                    offset += p.numel()
            return
        if hasattr(wrapper, "fp32_groups"):  # fp16, unfused: an fp32 copy of each parameter
            position = {id(p): i for i, p in enumerate(self.layout.params)}
            for copies, group in zip(wrapper.fp32_groups, wrapper.fp16_groups):
                for copy, p in zip(copies, group):
                    if id(p) in position:
                        yield self._whole(inner, position[id(p)], copy, 0, p.numel())
            return
        for index, p in enumerate(self.layout.params):  # a plain torch optimizer
            yield self._whole(inner, index, p, 0, p.numel())

    def _whole(self, optimizer, index: int, tensor, start: int, numel: int) -> Fragment:
        """A whole parameter, at `start` in the optimizer's fp32 tensor."""
        return self._fragment(optimizer, index, tensor, fragment_address(numel=numel, start=0),
                              fragment_address(numel=numel, start=start))

    def _fragment(self, optimizer, index, tensor, lp_address, hp_address) -> Fragment:
        state = optimizer.state.get(tensor)
        if not state:
            raise OptimizerStateMissing("the optimizer has no state yet (no step taken)")
        if "exp_avg_sq" not in state:
            raise ValueError(
                f"--dga-alignment adam needs an Adam-type optimizer (state 'exp_avg_sq'); "
                f"{type(optimizer).__name__} keeps {sorted(state)}"
            )
        beta2, eps = _group_hyper(optimizer, tensor)
        v = state["exp_avg_sq"].reshape(-1).narrow(0, hp_address.start, hp_address.numel)
        params_slice = slice(lp_address.start, lp_address.start + lp_address.numel)
        if self._step is None:  # every parameter has taken the same steps
            self._step = _step_count(state)
        return index, params_slice, v, beta2, eps, self._step

    # ---- P x ---------------------------------------------------------------------------------
    def apply_(self, flat: torch.Tensor) -> Optional[torch.Tensor]:
        """P * flat in place (and returned); None, flat unchanged, where the optimizer has no
        state yet (before its first step). Under ZeRO each rank multiplies the fragments it
        holds, zeroes the rest, and one all-reduce over the data-parallel group assembles the
        whole product: no second buffer."""
        self._step = None
        try:
            fragments = list(self._fragments())
        except OptimizerStateMissing as e:
            if not self._warned:
                log.warning("--dga-alignment adam: %s; this update uses the raw inner product", e)
                self._warned = True
            return None
        held = {}
        for index, params_slice, v, beta2, eps, step in fragments:
            for target, second_moment in chunks(self.layout.view(flat, index)[params_slice], v):
                target.mul_(next_step_preconditioner(second_moment, beta2, eps, step, flat.dtype))
            held.setdefault(index, []).append(params_slice)
        if self.partitioned:
            for index in range(len(self.layout.params)):
                view = self.layout.view(flat, index)
                end = 0
                for piece in sorted(held.get(index, []), key=lambda s: s.start):
                    view[end:piece.start].zero_()  # held by another data-parallel rank
                    end = piece.stop
                view[end:].zero_()
            if self.dp_size > 1:
                dist.all_reduce(flat, group=self.dp_group)  # every element comes from one rank
        return flat
