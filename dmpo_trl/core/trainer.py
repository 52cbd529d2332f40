"""`DMPOTrainer`: TRL's `DPOTrainer` with the DMPO objective on whole agent trajectories, every override in one class.

The overrides, in the order a step runs:

- data: `_prepare_dataset` (tokenization, row checks, truncation: `dmpo_trl.core.rows.preparation`) and the
  collator's columns;
- the policy pass (`_per_token_logps`) and the reference pass (`compute_ref_log_probs`) call the model with TRL's
  ``fused_lm_head=True`` convention, served by `dmpo_trl.core.lm_head.add_action_lm_head`: the LM head runs on the
  positions whose next token is an action token only, padded or packed; the result is the per-token tensor (aligned
  with ``input_ids[:, 1:]``, zeros elsewhere) that every loss consumes. The head's metric outputs (entropy, mean
  logit, top-1 accuracy) are computed only on steps whose metrics are logged, and always in evaluation; packed
  batches are checked once per model for cross-sequence attention (`dmpo_trl.core.attention`);
- precomputed reference scores (`_precompute_ref_logps`) go through a keyed store reused across epochs and runs
  (`dmpo_trl.core.ref_cache`): only pairs the store does not hold are scored;
- the loss (`_compute_loss`): every `loss_type` on the DMPO scores (`dmpo_trl.core.objective`), and the metrics
  TRL's DPOTrainer logs on the DMPO quantities plus DMPO's own (`_log_dmpo_metrics`);
- the model card (`create_model_card`).

The private TRL / transformers state this relies on is reached through `dmpo_trl.core._compat` only.
"""

from __future__ import annotations

import contextlib
import copy
import os
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value
from transformers import (
    AutoTokenizer,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
)
from transformers.trainer_utils import EvalPrediction

from . import _compat  # refuses an untested TRL before TRL itself is imported


# isort: split
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, use_adapter

from .attention import check_packed_attention, is_varlen_capable, use_varlen_sdpa, varlen_kwargs
from .checkpoints import explain_save_errors, last_complete_checkpoint
from .collator import DataCollatorForDMPO, DMPOBatch, collator_for_config
from .config import DMPOConfig
from .lm_head import LM_HEAD_METRICS, add_action_lm_head
from .model_card import card_rows, is_hub_id, write_card_section
from .objective import ObjectiveConfig, dmpo_objective, sequence_scores
from .ref_cache import (
    KEY_COLUMNS,
    ReferenceScoreStore,
    context_name,
    default_cache_dir,
    reference_context,
    resolve_precompute,
    row_key,
)
from .rows.columns import COLLATOR_COLUMNS
from .rows.preparation import prepare_dataset, require_rows
from .trackers import check_report_to


if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from transformers import BitsAndBytesConfig

__all__ = ["MASKING_VERSION", "DMPOTrainer"]

logger = get_logger(__name__)

# Bump when the tokenization or masking rules change, so cached reference scores are not reused across versions
# (2: the generation-marker path, template-given action ends, plain-text rows).
MASKING_VERSION = 2


class DMPOTrainer(DPOTrainer):
    """Trainer for DMPO (Direct Multi-Turn Preference Optimization), a drop-in replacement for [`~trl.DPOTrainer`].

    Same constructor and same dataset format as `DPOTrainer` (conversational ``prompt`` / ``chosen`` / ``rejected``
    columns, where ``chosen`` and ``rejected`` are whole multi-turn continuations: assistant actions alternating with
    observations; standard plain-text rows are one action per side). Only assistant actions carry loss, each token of
    action ``t`` weighted by ``phi(t, T) = gamma^t (1 - gamma^(T-t)) / (1 - gamma^T)``; the default loss is
    ``-log sigmoid(beta * (S_w - S_l))`` with ``S = sum_t phi(t, T) * (log pi_theta(a_t|s_t) - log pi_ref(a_t|s_t))``,
    and every other `loss_type` of DPOConfig works on the same scores (`dmpo_trl.core.objective`). See
    `dmpo_trl.core.weights` for the weights and `dmpo_trl.core.rows.tokenization` for which tokens are actions.

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

    `args.padding_free=True` packs each batch into rows (`dmpo_trl.core.packing`) for the policy and the reference pass
    alike; models using ``sdpa`` (with full causal attention only) are switched to the per-sequence
    ``dmpo_varlen_sdpa`` attention (`dmpo_trl.core.attention`, identical to ``sdpa`` outside packed batches), and the
    trainer checks once per model that packed sequences cannot attend to each other.

    Attributes:
        card_base_model (`str`, *optional*): the base model to name in the model card, for a model loaded from a
            local copy of a Hub model (default: the model's `name_or_path`; a local path by its folder's name only).
        card_dataset (`str`, *optional*): the training data to name in the model card when it is not a Hub dataset
            passed as `dataset_name` (e.g. local file names).
        dmpo_data_stats (`dict`): per prepared dataset, pairs, skipped pairs and what truncation drops.
    """

    _tag_names = ["trl", "dpo", "dmpo"]
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
        model: str | PreTrainedModel | PeftModel,
        ref_model: PreTrainedModel | None = None,
        args: DMPOConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset
        | IterableDataset
        | DatasetDict
        | IterableDatasetDict
        | dict[str, Dataset | IterableDataset]
        | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config: PeftConfig | None = None,
    ):
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = DMPOConfig(f"{name.split('/')[-1]}-DMPO")
        elif not isinstance(args, DMPOConfig):
            raise TypeError(
                f"DMPOTrainer needs a DMPOConfig, got {type(args).__name__}: replace `DPOConfig(...)` with "
                "`DMPOConfig(...)` (it takes the same arguments, plus `gamma`)."
            )
        check_report_to(args.report_to)  # before the model loads; names the `tracking` extra
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
        if padding_free:
            use_varlen_sdpa(model)
            use_varlen_sdpa(ref_model)
        data_collator = collator_for_config(args, processing_class.pad_token_id, data_collator)
        require_rows(train_dataset, "train")  # before the model loads; TRL would stop with a bare StopIteration
        require_rows(eval_dataset, "eval")
        precompute = resolve_precompute(args, train_dataset, eval_dataset, model)  # None: where exact and no dearer
        if (
            ref_model is None
            and not isinstance(model, str)
            and peft_config is None
            and not is_peft_model(model)
            and not precompute
        ):
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.dmpo_objective = ObjectiveConfig.from_args(args)
        self.dmpo_data_stats: dict[str, dict[str, Any]] = {}
        self.card_base_model: str | None = None
        self.card_dataset: str | None = None
        self._packed_attention_checked: set[int] = set()  # models whose packed attention was checked
        with _compat.dpo_init_args(args, precompute):  # padding_free hidden from DPOTrainer, which would disable it
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
        self.padding_free = padding_free
        if padding_free:  # models loaded by DPOTrainer.__init__ from a name (a no-op for those switched above)
            use_varlen_sdpa(self.model)
            use_varlen_sdpa(self.ref_model)
            if isinstance(self.data_collator, DataCollatorForDMPO):
                # One row has no padding and suits per-sequence attention; with a dense row-wide mask (eager, flex,
                # sdpa that cannot be switched) attention costs rows * L^2, so rows no longer than the longest
                # sequence win.
                self.data_collator.packing = "single_row" if is_varlen_capable(self.model) else "bins"
        if _compat.is_vision_dataset(self):
            raise ValueError("DMPOTrainer supports text conversations only; the dataset has image columns.")
        self._install_action_lm_heads()

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Tokenization, row checks, skip and truncation accounting: `dmpo_trl.core.rows.preparation.prepare_dataset`
        dataset, stats = prepare_dataset(dataset, processing_class, args, dataset_name)
        if stats is not None:
            self.dmpo_data_stats[dataset_name] = stats
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(COLLATOR_COLUMNS)

    # ---------------------------------------------------------------- forward
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
        if id(model) not in self._packed_attention_checked:
            check_packed_attention(unwrapped, batch.inputs["input_ids"], num_rows=2, extra_kwargs=extra)
            self._packed_attention_checked.add(id(model))
        return batch.model_inputs(extra)

    def _head_metrics_due(self) -> bool:
        """Whether this step's head metrics will be logged: always in evaluation, in training on the steps that log."""
        return not self.model.training or _compat.logs_this_step(self.args, self.state)

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
        """Everything a pair's reference score depends on besides the pair (`ref_cache.reference_context`)."""
        reference = self._causal_lm(self.ref_model if self.ref_model is not None else self.model)
        mixed = self.accelerator.mixed_precision
        return reference_context(
            reference, self.processing_class, self.args, mixed, _compat.precompute_model_hash(self), MASKING_VERSION
        )

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """Reference scores of every pair of ``dataset`` as two columns: from the store where it holds them, else
        computed by TRL's precompute pass (its dataloader, DeepSpeed engine and gathering) and stored.

        A streamed dataset (`IterableDataset`) cannot carry precomputed scores: DPOTrainer's `ValueError`, or, when
        ``precompute_ref_log_probs=None`` chose to precompute at construction, one that says so (a dataset that
        `evaluate()` receives later)."""
        if isinstance(dataset, IterableDataset):
            if self.args.precompute_ref_log_probs is None:  # the user's value; `__init__` resolved it to True
                raise ValueError(
                    "`precompute_ref_log_probs=None` precomputes the reference scores in this run (the datasets given "
                    f"to the trainer were map-style), which is not supported with IterableDataset (the {name} "
                    "dataset). Please use a map-style Dataset or set `precompute_ref_log_probs=False`."
                )
            return super()._precompute_ref_logps(dataset, name, batch_size)  # raises TRL's error
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
            with _compat.precompute_cache_key(self, context):
                scored = super()._precompute_ref_logps(dataset.select(missing), name, batch_size)
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

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        """Every `loss_type` of the config on the DMPO scores (`dmpo_trl.core.objective`), plus the MoE auxiliary loss."""
        batch = DMPOBatch(inputs)
        mode = "train" if self.model.training else "eval"
        extra = {"output_router_logits": True} if self.aux_loss_enabled else {}
        per_token_logps, outputs = self._per_token_logps(model, inputs, **extra)
        if self.precompute_ref_logps:
            ref = {"ref_scores": (inputs["ref_chosen_logps"], inputs["ref_rejected_logps"])}
        else:
            ref = {"ref_per_token_logps": self._ref_per_token_logps(self.ref_model or self.model, inputs)}
        sq = getattr(outputs, "log_sum_sq_probs", None)  # WPO: requested by `_per_token_logps` under use_weighting
        sq = None if sq is None else sq[:, -per_token_logps.size(1) :]
        out = dmpo_objective(batch, self.dmpo_objective, per_token_logps, log_sum_sq_probs=sq, **ref)
        loss = out.loss
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            _compat.step_metrics(self, mode)["aux_loss"].append(
                self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item()
            )

        self._log_dmpo_metrics(mode, batch, outputs, out)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**self._model_inputs(model, batch), use_cache=False)
            return loss, outputs
        return loss

    def _log_dmpo_metrics(self, mode: str, batch: DMPOBatch, outputs, out) -> None:
        """Append this batch's metrics to TRL's metric lists (`_compat.step_metrics`), gathered over processes: TRL's
        DPO metrics on the DMPO quantities, plus turns, action-token share and truncation.

        ``outputs`` is the policy forward's output (entropy, mean logits, top-1 per token; ``None`` on steps whose
        metrics are not logged), ``out`` the objective's output (rewards and scores per pair).
        """
        metrics = _compat.step_metrics(self, mode)
        # Per-pair tensors go through gather_for_metrics, which drops the duplicates padding the last batch; it trims
        # along dim 0 by pairs, so [chosen; rejected] tensors are split into halves first. Token counts are (1,)-shaped
        # sums, gathered as they are (gather_for_metrics would trim them like samples).
        gather = self.accelerator.gather_for_metrics

        def gather_sum(value: torch.Tensor) -> torch.Tensor:
            return self.accelerator.gather(value.reshape(1)).sum()

        def masked_mean(values, m):
            total, count = gather_sum(values[m].float().sum()), gather_sum(m.sum())
            return (total / count).item() if count > 0 else 0.0

        if outputs.entropy is not None:  # the action head computes them on logged steps only (`_head_metrics_due`)
            seq_len = batch.action_mask.size(1)
            chosen_mask, rejected_mask = batch.side_masks()
            mean_logits = outputs.mean_logits[:, -seq_len:].detach()
            metrics["entropy"].append(masked_mean(outputs.entropy[:, -seq_len:].detach(), batch.action_mask))
            metrics["logits/chosen"].append(masked_mean(mean_logits, chosen_mask))
            metrics["logits/rejected"].append(masked_mean(mean_logits, rejected_mask))
            metrics["mean_token_accuracy"].append(masked_mean(outputs.is_top1[:, -seq_len:], chosen_mask))
        real_tokens = gather_sum(batch.real_tokens())
        if mode == "train":
            _compat.add_train_tokens(self, real_tokens.item())
        metrics["num_tokens"] = [_compat.train_tokens(self)]

        chosen_rewards, rejected_rewards = gather(out.chosen_rewards), gather(out.rejected_rewards)
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(out.chosen_logps).mean().item())
        metrics["logps/rejected"].append(gather(out.rejected_logps).mean().item())

        turns_w, turns_l = (gather(x) for x in batch.inputs["num_turns"].chunk(2, dim=0))
        kept_w, kept_l = (gather(x) for x in batch.inputs["kept_turns"].chunk(2, dim=0))
        metrics["turns/chosen"].append(turns_w.float().mean().item())
        metrics["turns/rejected"].append(turns_l.float().mean().item())
        metrics["action_token_share"].append((gather_sum(batch.action_tokens()) / real_tokens.clamp(min=1)).item())
        dropped_w, dropped_l = turns_w - kept_w, turns_l - kept_l
        metrics["truncation/actions_dropped"].append((dropped_w.sum() + dropped_l.sum()).item())
        metrics["truncation/pairs_truncated"].append(((dropped_w > 0) | (dropped_l > 0)).float().mean().item())

    # ------------------------------------------------------------ checkpoints
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`; ``resume_from_checkpoint=True`` takes the last *complete* checkpoint (a partial one, cut
        by a crash or a full disk, is skipped with a warning: `dmpo_trl.core.checkpoints.last_complete_checkpoint`)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir) or True
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")  # Trainer's name for it
        with explain_save_errors(folder):  # a full disk: say so, naming the folder
            super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------ model card
    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's card (TRL links `dataset_name` as a Hub dataset, so only Hub ids go there) plus one "Run
        configuration" section with the DMPO settings, written again every time the card is (re)generated."""
        super().create_model_card(
            model_name=model_name, dataset_name=dataset_name if is_hub_id(dataset_name) else None, tags=tags
        )
        readme = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not os.path.isfile(readme):
            return
        base_model = self.card_base_model or get_config_model_id(self.model.config) or "unknown"
        write_card_section(
            readme,
            card_rows(self, base_model, self.card_dataset or dataset_name),
            base_model,
            dataset_name or self.card_dataset,
        )
