"""Training sparse encoders, above `aftershock.lsr` (inference) and `aftershock.seismic` (hard negatives).

* `aftershock.train.config`: `TrainConfig` (TOML ``[model] [data] [loss] [optim] [run]``).
* `aftershock.train.records`: training records (JSONL), train/dev split, batches.
* `aftershock.train.trainer`: `train(config)`, `Trainer`, `build_model`.
* `aftershock.train.losses`: FLOPS / L1 regularisers, InfoNCE, MarginMSE, KL distillation (torch).
* `aftershock.train.data`: offline distillation data, step 1 (`prepare`: sources, BM25-mined negatives).
* `aftershock.train.teachers`: step 2 (`score`: sparse and dense teachers, the ensemble), `DenseEncoder`.

Importing this package does not import torch (the trainer and teachers import it when they run).
"""

from aftershock.train.config import DataConfig, LossConfig, OptimConfig, RunConfig, TrainConfig
from aftershock.train.data import SOURCES, default_data_dir, prepare
from aftershock.train.teachers import score
from aftershock.train.trainer import Trainer, build_model, train

__all__ = ["TrainConfig", "DataConfig", "LossConfig", "OptimConfig", "RunConfig", "train", "Trainer", "build_model",
           "prepare", "score", "SOURCES", "default_data_dir"]
