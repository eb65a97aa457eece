"""bf16 runs accumulate gradients over micro batches in fp32, as Megatron does
(--accumulate-allreduce-grads-in-fp32, on by default with --bf16): with 16 micro batches per
step the accumulated gradient is far closer to the exact sum of the micro batches' gradients
than bf16 accumulation gets."""

import json

import pytest

from pretrain_helpers import SMALL_MODEL, driver_command, make_domains, run
import os

DRIVER = os.path.join(os.path.dirname(__file__), "drivers", "accumulation_driver.py")


def accumulate(root, name, flags):
    manifest = make_domains(str(root / "data"))
    out = str(root / f"{name}.json")
    run(driver_command(DRIVER, 1, [out], [
        "--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "1", "--global-batch-size", "16",
        "--train-iters", "1", "--hidden-dropout", "0", "--attention-dropout", "0", "--split", "100,0,0", "--bf16",
        *flags]))
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def bf16_accumulation(tmp_path_factory):
    """The baseline: ZeRO-0 with bf16 accumulation in `param.grad` (DeepSpeed's bf16 wrapper)."""
    result = accumulate(tmp_path_factory.mktemp("bf16"), "bf16", ["--no-accumulate-allreduce-grads-in-fp32"])
    assert result["accumulation_dtype"] == "torch.bfloat16" and result["micro_batches"] == 16, result
    assert result["relative_error"] > 1e-4, result  # 16 roundings of a running bf16 sum
    return result


@pytest.mark.parametrize("zero_stage", ["0", "1", "2"])
def test_bf16_accumulates_in_fp32(tmp_path, bf16_accumulation, zero_stage):
    fp32 = accumulate(tmp_path, f"fp32-zero{zero_stage}", ["--zero-stage", zero_stage])
    assert fp32["micro_batches"] == 16 and fp32["accumulation_dtype"] == "torch.float32", fp32
    assert fp32["relative_error"] < bf16_accumulation["relative_error"] / 20, (fp32, bf16_accumulation)
    if zero_stage == "0":  # DeepSpeed accumulates bf16 in fp32 only in its BF16_Optimizer (ZeRO-1)
        assert fp32["optimizer"] == "BF16_Optimizer", fp32
