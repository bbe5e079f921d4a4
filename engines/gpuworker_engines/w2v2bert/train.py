"""The `train` command: full fine-tuning by the shared CTC trainer with this engine's recipe."""
from ..ctc import trainer
from .config import TrainConfig
from .model import Recipe


def train(config, stop) -> dict:
    return trainer.train(Recipe(), TrainConfig.of(config), stop)
