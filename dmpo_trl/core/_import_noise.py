"""Drop the lines bitsandbytes and DeepSpeed print merely because they are installed; nothing else.

peft imports bitsandbytes whenever it is installed (`peft/helpers.py`, reached by `transformers.TrainingArguments` and
so by `DPOConfig`), and bitsandbytes' CPU backend then tries to fetch an optional 4-bit matmul kernel from the Hub
(on CPUs with AVX512-BF16); offline, that prints "Skipping publisher trust check ..." and "Failed to load CPU
gemm_4bit_forward ...". accelerate imports DeepSpeed whenever it is installed (`extract_model_from_parallel`, called by
`DPOTrainer`, `Trainer.save_model` and `save_pretrained`), and DeepSpeed, finding no GPU, prints "Setting
accelerator to CPU ...". DPOTrainer prints all three in such an environment, though the user asked for neither
quantization nor DeepSpeed. Importing `dmpo_trl` adds one `logging.Filter` to each of the three loggers; each drops
exactly its line, and every other message of those libraries passes. (bitsandbytes falls back to its own CPU kernel
either way.) `tests/core/test_import_noise.py` fails when a library changes its logger or its wording.
"""

from __future__ import annotations

import logging


#: logger name -> start of the one message its filter drops
DROPPED = {
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    "kernels._internals.hf_hub": "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
    "DeepSpeed": "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.",
}


class DropMessage(logging.Filter):
    """Drops the records whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def install() -> None:
    """Add the filters (once; the loggers need not exist yet: `logging.getLogger` returns the one they will use)."""
    for name, prefix in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(DropMessage(prefix))


install()
