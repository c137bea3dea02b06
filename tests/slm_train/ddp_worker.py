"""Run under torchrun by test_ddp.py: trains each TrainConfig given (as JSON) in the argument file, in order."""
from __future__ import annotations

import json
import sys

from slm_train.config import train_config_from_dict
from slm_train.distributed import teardown
from slm_train.train import train

if __name__ == "__main__":
    for cfg in json.loads(open(sys.argv[1]).read()):
        train(train_config_from_dict(cfg))
    teardown()
