"""megatron-core's process groups in the interface DeepSpeed's engine expects (`mpu=`).

DeepSpeed asks an `mpu` object for the model-parallel group (to sum gradient norms and
overflow flags over tensor-parallel shards) and the data-parallel group (to average
gradients). megatron-core's `parallel_state` holds those groups under other names; this
adapter lends them to the engine for runs without pipeline parallelism. (With pipeline
parallelism the pipeline engine uses its own grid, built from the same topology.)
"""

from megatron.core import parallel_state as ps


class MegatronCoreMPU:
    """Model parallel = tensor parallel here (PP = 1)."""

    def get_model_parallel_group(self):
        return ps.get_tensor_model_parallel_group()

    def get_model_parallel_rank(self):
        return ps.get_tensor_model_parallel_rank()

    def get_model_parallel_world_size(self):
        return ps.get_tensor_model_parallel_world_size()

    def get_tensor_model_parallel_group(self):
        return ps.get_tensor_model_parallel_group()

    def get_tensor_model_parallel_rank(self):
        return ps.get_tensor_model_parallel_rank()

    def get_tensor_model_parallel_world_size(self):
        return ps.get_tensor_model_parallel_world_size()

    def get_tensor_model_parallel_src_rank(self):
        return ps.get_tensor_model_parallel_src_rank()

    def get_data_parallel_group(self):
        return ps.get_data_parallel_group()

    def get_data_parallel_rank(self):
        return ps.get_data_parallel_rank()

    def get_data_parallel_world_size(self):
        return ps.get_data_parallel_world_size()

    def get_pipeline_model_parallel_rank(self):
        return 0

    def get_pipeline_model_parallel_world_size(self):
        return 1
