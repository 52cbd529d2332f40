"""`DMPOTrainer`: TRL's `DPOTrainer` with the DMPO objective on whole agent trajectories."""

from __future__ import annotations

import contextlib
import copy
import os
import textwrap
from collections import Counter
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ._compat import check_trl_version
from .attention import VARLEN_SDPA, use_varlen_sdpa, varlen_kwargs
from .collator import DataCollatorForDMPO
from .config import DMPOConfig
from .errors import DMPODataError
from .loss import dmpo_loss_from_scores, weighted_sequence_logps
from .packing import check_packed_attention, is_flash_attention, packed_sequence_scores, segment_sum
from .validation import prepare_pair

check_trl_version()

from trl import DPOTrainer  # noqa: E402
from trl.models.utils import disable_gradient_checkpointing  # noqa: E402
from trl.trainer.utils import get_config_model_id, use_adapter  # noqa: E402

__all__ = ["DMPOTrainer"]

logger = get_logger(__name__)

# Columns the collator reads; everything else is removed by `remove_unused_columns`.
DMPO_COLUMNS = [
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "chosen_turn_ids",
    "rejected_turn_ids",
    "chosen_num_turns",
    "rejected_num_turns",
    "ref_chosen_logps",
    "ref_rejected_logps",
]
# Bump when the tokenization or masking rules change, so cached reference scores are not reused across versions.
MASKING_VERSION = 1


def _tokenize_row(example, idx, tokenizer, max_length, skip_invalid):
    """`datasets.map` function: check and tokenize one pair (`prepare_pair`), or record why it cannot be used."""
    try:
        out = prepare_pair(tokenizer, example, row=idx, max_length=max_length)
        out["dmpo_error"] = ""
    except DMPODataError as err:
        if not skip_invalid:
            raise
        out = {key: [] for key in ("prompt_ids", "chosen_ids", "rejected_ids", "chosen_turn_ids", "rejected_turn_ids")}
        out.update(chosen_num_turns=0, rejected_num_turns=0, chosen_kept_turns=0, rejected_kept_turns=0)
        out["dmpo_error"] = str(err)
    return out


class DMPOTrainer(DPOTrainer):
    """Trainer for DMPO (Direct Multi-Turn Preference Optimization), a drop-in replacement for [`~trl.DPOTrainer`].

    Same constructor and same dataset format as `DPOTrainer` (conversational ``prompt`` / ``chosen`` / ``rejected``
    columns, where ``chosen`` and ``rejected`` are whole multi-turn continuations: assistant actions alternating with
    observations). Only assistant actions carry loss, each token of action ``t`` weighted by
    ``phi(t, T) = gamma^t (1 - gamma^(T-t)) / (1 - gamma^T)``; the loss is
    ``-log sigmoid(beta * (S_w - S_l))`` with ``S = sum_t phi(t, T) * (log pi_theta(a_t|s_t) - log pi_ref(a_t|s_t))``.
    See `dmpo_trl.loss` for the math and `dmpo_trl.tokenization` for which tokens are actions.

    Example:

    ```python
    from dmpo_trl import DMPOConfig, DMPOTrainer

    trainer = DMPOTrainer(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        args=DMPOConfig(output_dir="qwen-dmpo", gamma=0.7, beta=0.1),
        train_dataset=dataset,  # prompt / chosen / rejected conversations
    )
    trainer.train()
    ```

    Args: as [`~trl.DPOTrainer`]; `args` must be a [`DMPOConfig`]. The collator defaults to `DataCollatorForDMPO`.
    When `model` is a model object and neither `ref_model`, PEFT nor precomputed reference log-probs are used, the
    reference is a frozen copy of that object (DPOTrainer would reload it from `model.config.name_or_path`, which
    may be another model or unreachable).

    `args.padding_free=True` packs each batch into rows (`dmpo_trl.packing`) for the policy and the reference pass
    alike; models using ``sdpa`` (with full causal attention only) are switched to the per-sequence
    ``dmpo_varlen_sdpa`` attention (`dmpo_trl.attention`, identical to ``sdpa`` outside packed batches), and the
    trainer checks once per model that packed sequences cannot attend to each other.
    """

    _tag_names = ["trl", "dmpo"]
    _name = "DMPO"
    _paper = {
        "title": "Direct Multi-Turn Preference Optimization for Language Agents",
        "id": "2406.14868",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{shi2024direct,
                title        = {{Direct Multi-Turn Preference Optimization for Language Agents}},
                author       = {Wentao Shi and Mengqi Yuan and Junkang Wu and Qifan Wang and Fuli Feng},
                year         = 2024,
                booktitle    = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing, EMNLP 2024},
                pages        = {2312--2324},
                url          = {https://arxiv.org/abs/2406.14868},
            }"""),
    }

    def __init__(
        self,
        model,
        ref_model=None,
        args: DMPOConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        check_trl_version()
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = DMPOConfig(f"{name.split('/')[-1]}-DMPO")
        elif not isinstance(args, DMPOConfig):
            raise TypeError(
                f"DMPOTrainer needs a DMPOConfig, got {type(args).__name__}: replace `DPOConfig(...)` with "
                "`DMPOConfig(...)` (it takes the same arguments, plus `gamma`)."
            )
        if processing_class is None:
            revision = (args.model_init_kwargs or {}).get("revision")
            source = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = AutoTokenizer.from_pretrained(
                source, revision=revision, trust_remote_code=args.trust_remote_code
            )
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError(
                f"DMPOTrainer trains on text conversations and needs a tokenizer, got {type(processing_class).__name__}."
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if args.pad_token is not None:
            processing_class.pad_token = args.pad_token
        padding_free = args.padding_free
        if padding_free and not isinstance(model, str):
            self._enable_varlen(model, ref_model)
        if data_collator is None:
            data_collator = DataCollatorForDMPO(
                pad_token_id=processing_class.pad_token_id,
                gamma=args.gamma,
                max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
                padding_free=padding_free,
                packing=self._packing_for(model) if padding_free else "bins",
            )
        elif getattr(data_collator, "gamma", args.gamma) != args.gamma:
            raise ValueError(f"data_collator.gamma={data_collator.gamma} differs from args.gamma={args.gamma}.")
        if (
            ref_model is None
            and not isinstance(model, str)
            and peft_config is None
            and not is_peft_model(model)
            and not args.precompute_ref_log_probs
        ):
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.dmpo_data_stats: dict[str, dict[str, Any]] = {}
        self._packed_attention_checked: set[int] = set()
        # DPOTrainer 1.16 warns that padding_free is "disabled" and turns it off; DMPO implements it, so hide the flag
        # from DPOTrainer.__init__ (no misleading warning) and restore it afterwards.
        args.padding_free = False
        try:
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                quantization_config=quantization_config,
                peft_config=peft_config,
            )
        finally:
            args.padding_free = padding_free
        self.padding_free = padding_free
        if padding_free:  # models loaded by DPOTrainer.__init__ from a name (a no-op for those switched above)
            self._enable_varlen(self.model, self.ref_model)
            if isinstance(self.data_collator, DataCollatorForDMPO):
                self.data_collator.packing = self._packing_for(self.model)
        if self._is_vision_dataset:
            raise ValueError("DMPOTrainer supports text conversations only; the dataset has image columns.")

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        first = next(iter(dataset))
        if "chosen_turn_ids" in first:  # already prepared (e.g. `evaluate` on a prepared split)
            return dataset
        map_kwargs: dict[str, Any] = {"with_indices": True}
        if isinstance(dataset, Dataset):
            map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Tokenizing {dataset_name} dataset with turn masks")
        fn_kwargs = {
            "tokenizer": processing_class,
            "max_length": args.max_length,
            "skip_invalid": args.skip_invalid_pairs,
        }
        dataset = dataset.map(_tokenize_row, fn_kwargs=fn_kwargs, **map_kwargs)
        if not isinstance(dataset, Dataset):  # streaming: no up-front statistics
            return dataset.filter(lambda ex: ex["dmpo_error"] == "")
        errors = [e for e in dataset["dmpo_error"] if e]
        if errors:
            reasons = Counter(e.split(": ", 2)[-1] for e in errors)
            logger.warning(
                f"Skipped {len(errors)}/{len(dataset)} rows of the {dataset_name} dataset that DMPO cannot train on "
                f"(skip_invalid_pairs=True). Reasons: " + "; ".join(f"{n}x {r}" for r, n in reasons.most_common(5)),
                main_process_only=True,
            )
            dataset = dataset.filter(lambda e: e == "", input_columns="dmpo_error", desc="Dropping invalid rows")
        self.dmpo_data_stats[dataset_name] = stats = self._truncation_stats(dataset, args.max_length, len(errors))
        if stats["pairs_truncated"]:
            logger.warning(
                f"{dataset_name}: at max_length={args.max_length}, {stats['pairs_truncated']}/{stats['pairs']} pairs "
                f"lose trailing actions ({stats['actions_dropped']}/{stats['actions']} actions dropped; kept actions keep "
                "their DMPO weights).",
                main_process_only=True,
            )
        return dataset

    @staticmethod
    def _truncation_stats(dataset: Dataset, max_length, skipped: int) -> dict[str, Any]:
        total = kept = truncated = 0
        for tw, tl, kw, kl in zip(
            dataset["chosen_num_turns"],
            dataset["rejected_num_turns"],
            dataset["chosen_kept_turns"],
            dataset["rejected_kept_turns"],
            strict=True,
        ):
            total += tw + tl
            kept += kw + kl
            truncated += (kw < tw) or (kl < tl)
        return {
            "pairs": len(dataset),
            "pairs_skipped": skipped,
            "pairs_truncated": truncated,
            "actions": total,
            "actions_dropped": total - kept,
            "max_length": max_length,
        }

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(DMPO_COLUMNS)

    # ------------------------------------------------------------- reference
    def _precompute_ref_logps(self, dataset, name, batch_size):
        # TRL keys the cache on the dataset and the reference weights only; DMPO scores also depend on gamma and on
        # the truncation, so fold those into the key for the duration of the call.
        base_hash = self._precompute_model_hash
        self._precompute_model_hash = Hasher.hash(
            (base_hash, "dmpo", MASKING_VERSION, self.args.gamma, self.args.max_length)
        )
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = base_hash

    # --------------------------------------------------------------- packing
    @staticmethod
    def _enable_varlen(model, ref_model) -> None:
        """padding_free: switch sdpa models to per-sequence (varlen) attention where safe (`dmpo_trl.attention`)."""
        for m in (model, ref_model):
            if m is not None and not isinstance(m, str):
                use_varlen_sdpa(m)

    @staticmethod
    def _varlen_capable(model) -> bool:
        """Whether the model's attention computes each packed sequence on its own (no dense row-wide mask)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
        return impl == VARLEN_SDPA or is_flash_attention(base)

    @classmethod
    def _packing_for(cls, model) -> str:
        # One row has no padding at all and suits per-sequence attention; with a dense row-wide mask (eager, flex,
        # sdpa that cannot be switched) attention costs rows * L^2, so rows no longer than the longest sequence win.
        return "single_row" if cls._varlen_capable(model) else "bins"

    @staticmethod
    def _is_packed(inputs) -> bool:
        return "sequence_ids" in inputs

    def _model_inputs(self, model, inputs) -> dict[str, Any]:
        """``input_ids`` plus ``attention_mask`` (padded) or ``position_ids`` (packed: no mask; per-sequence
        attention reads the boundaries from ``cu_seq_lens_*``, other implementations get transformers'
        block-diagonal mask derived from the positions; isolation is checked once per model)."""
        if not self._is_packed(inputs):
            return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        unwrapped = self.accelerator.unwrap_model(model)
        extra = varlen_kwargs if self._varlen_capable(unwrapped) else None
        if id(model) not in self._packed_attention_checked:
            check_packed_attention(unwrapped, inputs["input_ids"], num_rows=2, extra_kwargs=extra)
            self._packed_attention_checked.add(id(model))
        model_inputs = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"]}
        if extra is not None:  # FlashAttention and dmpo_varlen_sdpa read the sequence boundaries from these
            model_inputs.update(extra(inputs["position_ids"]))
        return model_inputs

    def _per_token_logps(self, model, inputs, **extra):
        """One fused-LM-head forward: log-probs of the action tokens (others 0), aligned with ``input_ids[:, 1:]``."""
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        if self._is_packed(inputs):  # the fused head shifts inside a row: never score a sequence's first token
            labels = labels.masked_fill(inputs["position_ids"] == 0, -100)
        outputs = model(**self._model_inputs(model, inputs), labels=labels, use_cache=False, fused_lm_head=True, **extra)
        return outputs.log_probs[:, -(inputs["input_ids"].size(1) - 1) :], outputs

    def _sequence_scores(self, per_token_logps, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """DMPO-weighted scores ``S`` of the chosen and of the rejected sequences, `(B,)` each."""
        weights = inputs["dmpo_weights"][:, 1:]
        if not self._is_packed(inputs):
            return weighted_sequence_logps(per_token_logps, weights).chunk(2, dim=0)
        num_sequences = inputs["num_turns"].size(0)
        scores = packed_sequence_scores(per_token_logps, weights, inputs["sequence_ids"][:, 1:], num_sequences)
        return scores.chunk(2, dim=0)

    @staticmethod
    def _side_token_masks(inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Action-token masks of the chosen and of the rejected sequences, aligned with ``input_ids[:, 1:]``.

        Padded: `(B, L-1)` each (the two halves of the batch). Packed: `(rows, L-1)` each."""
        mask = inputs["completion_mask"][:, 1:].bool()
        if "sequence_ids" not in inputs:
            return mask.chunk(2, dim=0)
        seq = inputs["sequence_ids"][:, 1:]
        num_pairs = inputs["num_turns"].size(0) // 2
        return mask & (seq >= 0) & (seq < num_pairs), mask & (seq >= num_pairs)

    def compute_ref_log_probs(self, model, inputs):
        """DMPO-weighted reference scores ``(S_ref_chosen, S_ref_rejected)`` of one collated batch."""
        adapter_context = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter_context,
            self.accelerator.autocast(),
        ):
            per_token_logps, _ = self._per_token_logps(model, inputs)
        return self._sequence_scores(per_token_logps, inputs)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "dmpo_weights" not in inputs:
            raise ValueError(
                "The batch has no `dmpo_weights`: DMPOTrainer needs `DataCollatorForDMPO` (or a collator that emits "
                "the same keys)."
            )
        mode = "train" if self.model.training else "eval"
        extra = {"output_router_logits": True} if self.aux_loss_enabled else {}
        per_token_logps, outputs = self._per_token_logps(model, inputs, **extra)
        policy_chosen, policy_rejected = self._sequence_scores(per_token_logps, inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
        out = dmpo_loss_from_scores(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta, self.label_smoothing
        )

        loss = 0.0
        for loss_type, loss_weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":
                loss = loss + out.losses.mean() * loss_weight
            elif not self._is_packed(inputs):  # "sft": mean NLL of each chosen trajectory's action tokens, per pair
                chosen_mask = inputs["completion_mask"][:, 1:].chunk(2, dim=0)[0].to(per_token_logps.dtype)
                chosen_logps = per_token_logps.chunk(2, dim=0)[0]
                nll = -(chosen_logps * chosen_mask).sum(1) / chosen_mask.sum(1).clamp(min=1)
                loss = loss + nll.mean() * loss_weight
            else:  # "sft", packed: the same per-sequence sums via the sequence ids
                seq, num_sequences = inputs["sequence_ids"][:, 1:], inputs["num_turns"].size(0)
                mask = inputs["completion_mask"][:, 1:].to(per_token_logps.dtype)
                sums = segment_sum(per_token_logps * mask, seq, num_sequences).chunk(2, dim=0)[0]
                counts = segment_sum(mask, seq, num_sequences).chunk(2, dim=0)[0]
                loss = loss + (-sums / counts.clamp(min=1)).mean() * loss_weight
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        self._log_dmpo_metrics(mode, inputs, outputs, out, policy_chosen, policy_rejected)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**self._model_inputs(model, inputs), use_cache=False)
            return loss, outputs
        return loss

    def _log_dmpo_metrics(self, mode, inputs, outputs, out, policy_chosen, policy_rejected):
        # Per-pair tensors go through gather_for_metrics, which drops the duplicates padding the last batch; it trims
        # along dim 0 by pairs, so [chosen; rejected] tensors are split into halves first. Token counts are (1,)-shaped
        # sums, gathered as they are (gather_for_metrics would trim them like samples).
        gather = self.accelerator.gather_for_metrics
        gather_sum = self.accelerator.gather
        metrics = self._metrics[mode]
        mask = inputs["completion_mask"][:, 1:].bool()
        chosen_mask, rejected_mask = self._side_token_masks(inputs)
        seq_len = mask.size(1)
        packed = self._is_packed(inputs)
        real = (inputs["sequence_ids"] >= 0) if packed else inputs["attention_mask"]

        def masked_mean(values, m):
            total = gather_sum(values[m].float().sum().reshape(1)).sum()
            count = gather_sum(m.sum().reshape(1)).sum()
            return (total / count).item() if count > 0 else 0.0

        metrics["entropy"].append(masked_mean(outputs.entropy[:, -seq_len:].detach(), mask))
        mean_logits, is_top1 = outputs.mean_logits[:, -seq_len:].detach(), outputs.is_top1[:, -seq_len:]
        if packed:  # side masks already span all rows
            chosen_logits = rejected_logits = mean_logits
            chosen_top1 = is_top1
        else:
            chosen_logits, rejected_logits = mean_logits.chunk(2, dim=0)
            chosen_top1 = is_top1.chunk(2, dim=0)[0]
        metrics["logits/chosen"].append(masked_mean(chosen_logits, chosen_mask))
        metrics["logits/rejected"].append(masked_mean(rejected_logits, rejected_mask))
        metrics["mean_token_accuracy"].append(masked_mean(chosen_top1, chosen_mask))
        if mode == "train":
            self._total_train_tokens += gather_sum(real.sum().reshape(1)).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        chosen_rewards, rejected_rewards = gather(out.chosen_rewards), gather(out.rejected_rewards)
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(policy_chosen.detach()).mean().item())
        metrics["logps/rejected"].append(gather(policy_rejected.detach()).mean().item())

        turns_w, turns_l = (gather(x) for x in inputs["num_turns"].chunk(2, dim=0))
        kept_w, kept_l = (gather(x) for x in inputs["kept_turns"].chunk(2, dim=0))
        metrics["turns/chosen"].append(turns_w.float().mean().item())
        metrics["turns/rejected"].append(turns_l.float().mean().item())
        action_tokens = gather_sum(inputs["completion_mask"].sum().reshape(1)).sum()
        real_tokens = gather_sum(real.sum().reshape(1)).sum()
        metrics["action_token_share"].append((action_tokens / real_tokens.clamp(min=1)).item())
        dropped_w, dropped_l = turns_w - kept_w, turns_l - kept_l
        metrics["truncation/actions_dropped"].append((dropped_w.sum() + dropped_l.sum()).item())
        metrics["truncation/pairs_truncated"].append(((dropped_w > 0) | (dropped_l > 0)).float().mean().item())

    # ------------------------------------------------------------ model card
    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        path = os.path.join(self.args.output_dir, "README.md")
        base_model = get_config_model_id(self.model.config) or "unknown"
        details = textwrap.dedent(f"""

            ## DMPO training details

            | setting | value |
            | --- | --- |
            | method | DMPO (Direct Multi-Turn Preference Optimization, arXiv 2406.14868) |
            | base model | {base_model} |
            | dataset | {dataset_name or "not recorded"} |
            | gamma | {self.args.gamma} |
            | beta | {self.args.beta} |
            | loss_type | {", ".join(self.args.loss_type)} |
            | max_length | {self.args.max_length} |
            | learning_rate | {self.args.learning_rate} |
            | PEFT adapter | {"yes" if is_peft_model(self.model) else "no"} |
            """)
        with open(path, "a", encoding="utf-8") as f:
            f.write(details)
