"""File-path launch target, the same as `python -m dmpo_trl.train`.

For launchers that take a script file rather than a module (`accelerate launch dmpo_trl/scripts/train.py ...`,
`torchrun dmpo_trl/scripts/train.py ...`, SageMaker):

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 4 \
        dmpo_trl/scripts/train.py --config recipes/qwen2.5-7b-instruct/dmpo/lora.yaml --gradient_accumulation_steps 4
"""

import sys
from pathlib import Path

if not __package__:  # run as a file from a source checkout: make `dmpo_trl` importable without an install
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from dmpo_trl.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
