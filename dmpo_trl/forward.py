"""The forward passes of `DMPOTrainer`: per-token log-probs of the policy and of the reference, on action tokens only.

`DMPOForwardMixin` sits between `DMPOTrainer` and TRL's `DPOTrainer` and owns every model call of a training step:

- the policy pass (`_per_token_logps`) and the reference pass (`compute_ref_log_probs`) call the model with TRL's
  ``fused_lm_head=True`` convention, served by `dmpo_trl.lm_head.add_action_lm_head`: the LM head runs on the
  positions whose next token is an action token only, padded or packed; the result is the same per-token tensor
  (aligned with ``input_ids[:, 1:]``, zeros elsewhere) that every loss consumes;
- the head's metric outputs (entropy, mean logit, top-1 accuracy) are computed only on steps whose metrics are
  logged (`_head_metrics_due`), and always in evaluation;
- packed batches are checked once per model for cross-sequence attention (`dmpo_trl.packing.check_packed_attention`);
- precomputed reference scores (`_precompute_ref_logps`) go through a keyed store reused across epochs and runs
  (`dmpo_trl.ref_cache`): only pairs the store does not hold are scored.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Value
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from .attention import is_varlen_capable, varlen_kwargs
from .collator import DMPOBatch
from .lm_head import LM_HEAD_METRICS, add_action_lm_head
from .objective import sequence_scores
from .packing import check_packed_attention
from .ref_cache import (
    KEY_COLUMNS,
    ReferenceScoreStore,
    context_name,
    default_cache_dir,
    reference_context,
    row_key,
)


__all__ = ["MASKING_VERSION", "DMPOForwardMixin"]

logger = get_logger(__name__)

# Bump when the tokenization or masking rules change, so cached reference scores are not reused across versions
# (2: the generation-marker path, template-given action ends, plain-text rows).
MASKING_VERSION = 2


class DMPOForwardMixin:
    """Policy and reference log-prob passes of `DMPOTrainer` (see the module docstring)."""

    def _install_action_lm_heads(self) -> None:
        """Patch the policy and the reference before `Trainer.train` wraps them (accelerate's autocast then wraps the
        patched forward); models seen only later (e.g. a DeepSpeed engine for the precompute) are patched on use."""
        for model in (self.model, self.ref_model):
            if model is not None:
                add_action_lm_head(self._causal_lm(model))

    def _causal_lm(self, model):
        """The transformers model inside accelerate / PEFT wrappers (whose forward serves the LM head)."""
        model = self.accelerator.unwrap_model(model)
        return model.get_base_model() if is_peft_model(model) else model

    def _model_inputs(self, model, batch: DMPOBatch) -> dict[str, Any]:
        """The batch's model inputs; for a packed batch, checks once per model that sequences stay isolated."""
        if not batch.packed:
            return batch.model_inputs()
        unwrapped = self.accelerator.unwrap_model(model)
        extra = varlen_kwargs if is_varlen_capable(unwrapped) else None
        checked = self.__dict__.setdefault("_packed_attention_checked", set())
        if id(model) not in checked:
            check_packed_attention(unwrapped, batch.inputs["input_ids"], num_rows=2, extra_kwargs=extra)
            checked.add(id(model))
        return batch.model_inputs(extra)

    def _head_metrics_due(self) -> bool:
        """Whether this step's head metrics will be logged: always in evaluation; in training on the steps that
        `logging_strategy` / `logging_steps` / `logging_first_step` log and on the last step (the final log)."""
        if not self.model.training:
            return True
        args, state = self.args, self.state
        strategy = str(getattr(args.logging_strategy, "value", args.logging_strategy))
        step = state.global_step + 1
        last = state.max_steps > 0 and step >= state.max_steps
        if strategy == "epoch":
            return True
        if strategy != "steps":
            return last
        return last or step % max(int(state.logging_steps), 1) == 0 or (args.logging_first_step and step == 1)

    def _action_logps(self, model, inputs, outputs: tuple[str, ...] = ("log_probs",), **extra):
        """One forward with the action-position LM head: per-token log-probs of the action tokens (others 0), aligned
        with ``input_ids[:, 1:]``, and the model output (with the requested metric fields)."""
        batch = DMPOBatch(inputs)
        model_inputs = self._model_inputs(model, batch)
        add_action_lm_head(self._causal_lm(model))  # a no-op once patched
        out = model(
            **model_inputs,
            labels=batch.labels(),
            use_cache=False,
            fused_lm_head=True,
            lm_head_outputs=outputs,
            **extra,
        )
        return out.log_probs[:, -(inputs["input_ids"].size(1) - 1) :], out

    def _per_token_logps(self, model, inputs, **extra):
        """The policy pass: `_action_logps` with the head metrics on steps whose metrics are logged (and WPO's
        ``log_sum_sq_probs`` whenever `use_weighting` is on)."""
        outputs = ("log_probs", *LM_HEAD_METRICS) if self._head_metrics_due() else ("log_probs",)
        if getattr(self, "use_weighting", False):
            outputs += ("log_sum_sq_probs",)
        return self._action_logps(model, inputs, outputs, **extra)

    def _sequence_scores(self, per_token_logps, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """DMPO-weighted scores ``S`` of the chosen and of the rejected sequences, `(B,)` each (LD-DPO applied)."""
        return sequence_scores(DMPOBatch(inputs), per_token_logps, self.dmpo_objective.ld_alpha)

    def compute_ref_log_probs(self, model, inputs):
        """DMPO-weighted reference scores ``(S_ref_chosen, S_ref_rejected)`` of one collated batch."""
        return self._sequence_scores(self._ref_per_token_logps(model, inputs), inputs)

    def _ref_per_token_logps(self, model, inputs):
        """The reference pass (a frozen model, or the policy with its adapter disabled): per-token log-probs of the
        action tokens, no gradient, no head metrics."""
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
            per_token_logps, _ = self._action_logps(model, inputs)
        return per_token_logps

    def _reference_context(self) -> dict:
        """Everything a pair's reference score depends on besides the pair (`dmpo_trl.ref_cache.reference_context`)."""
        reference = self._causal_lm(self.ref_model if self.ref_model is not None else self.model)
        mixed = self.accelerator.mixed_precision
        return reference_context(
            reference, self.processing_class, self.args, mixed, self._precompute_model_hash, MASKING_VERSION
        )

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """Reference scores of every pair of ``dataset`` as two columns: from the store where it holds them, else
        computed by TRL's precompute pass (its dataloader, DeepSpeed engine and gathering) and stored."""
        description = self._reference_context()
        context = context_name(description)
        directory = self.args.ref_cache_dir
        store = ReferenceScoreStore(default_cache_dir() if directory is None else directory, context)
        store = store if directory != "" else None
        keys = [row_key(ex) for ex in dataset.select_columns(list(KEY_COLUMNS))]
        scores = store.get(keys) if store is not None else {}
        missing = sorted({k: i for i, k in enumerate(keys) if k not in scores}.values())
        if missing:
            # TRL keys its own cache file on the dataset and the model hash only: hand it the full context
            base_hash, self._precompute_model_hash = self._precompute_model_hash, context
            try:
                scored = super()._precompute_ref_logps(dataset.select(missing), name, batch_size)
            finally:
                self._precompute_model_hash = base_hash
            computed = (scored["ref_chosen_logps"], scored["ref_rejected_logps"])
            new = list(zip([keys[i] for i in missing], *computed, strict=True))
            if store is not None and self.accelerator.is_main_process:
                store.put(new)
                store.describe(description)
            self.accelerator.wait_for_everyone()
            scores.update((k, (c, r)) for k, c, r in new)
        where = f' (store: {store.path}; ref_cache_dir="" turns it off)' if store is not None else ""
        logger.info(
            f"Reference scores of the {name} dataset: {len(missing)} distinct pairs scored by the reference, "
            f"{len(keys) - len(missing)}/{len(keys)} reused{where}",
            main_process_only=True,
        )
        for column, side in (("ref_chosen_logps", 0), ("ref_rejected_logps", 1)):
            if column in dataset.column_names:
                dataset = dataset.remove_columns(column)
            dataset = dataset.add_column(column, [scores[k][side] for k in keys], feature=Value("float32"))
        return dataset
