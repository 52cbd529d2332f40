"""Model / tokenizer loading options for a recipe: dtype, attention, LoRA and 4-bit / 8-bit quantization."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from trl import ModelConfig

    from dmpo_trl import DMPOConfig


def kbit_device_map() -> dict[str, int | str] | None:
    """Device map for a bitsandbytes-quantized model: the whole model on this process's GPU (`{"": local_rank}`),
    or None on CPU (TRL 1.16 dropped its own `get_kbit_device_map`)."""
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available():
        return {"": PartialState().local_process_index}
    return None


def build_model_init_kwargs(model_args: ModelConfig, training_args: DMPOConfig) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for policy and reference model (DPOTrainer loads both from these).

    Recipe-level `model_init_kwargs` win over the `ModelConfig` fields. Quantized runs get a per-process device map.
    """
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    if model_args.load_in_4bit or model_args.load_in_8bit:
        if not model_args.use_peft:
            raise ValueError("load_in_4bit / load_in_8bit train only adapters: set `use_peft: true` (QLoRA).")
        device_map = kbit_device_map()
        if device_map is not None:
            kwargs["device_map"] = device_map
    if training_args.model_init_kwargs:
        extra = training_args.model_init_kwargs
        if isinstance(extra, str):  # a JSON string from the command line
            import json

            extra = json.loads(extra)
        kwargs.update(extra)
    return {k: v for k, v in kwargs.items() if v is not None}


def load_tokenizer(model_args: ModelConfig, training_args: DMPOConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (EOS when the tokenizer has none) and a chat template checked.

    Raises:
        ValueError: the tokenizer has no chat template (the conversational format needs one).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {model_args.model_name_or_path!r} has no chat template; DMPO data is conversational. "
            "Use an instruct/chat checkpoint or add a template to its tokenizer_config.json."
        )
    return tokenizer
