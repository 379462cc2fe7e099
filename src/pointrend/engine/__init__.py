"""Training, evaluation and checkpoints: from one CPU process to many GPUs (torchrun)."""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint, load_model_weights
from .config import ConfigError, TrainConfig, load_config
from .run_dir import NothingToResumeError, RunExistsError
from .train import NonFiniteLossError, TrainResult, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "NonFiniteLossError",
    "NothingToResumeError",
    "RunExistsError",
    "TrainConfig",
    "TrainResult",
    "atomic_save",
    "load_checkpoint",
    "load_config",
    "load_model_weights",
    "train",
]
