"""`DMPOTrainer`: TRL's `DPOTrainer` with the DMPO objective on whole agent trajectories."""

from __future__ import annotations

import copy
import os
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import is_peft_model
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import (
    AutoTokenizer,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
)
from transformers.trainer_utils import EvalPrediction

from . import _compat  # noqa: F401  (refuses an untested TRL before TRL itself is imported)


# isort: split
from trl import DPOTrainer
from trl.trainer.utils import get_config_model_id

from .attention import is_varlen_capable, use_varlen_sdpa
from .checkpoints import explain_save_errors, last_complete_checkpoint
from .checks import COLLATOR_COLUMNS
from .collator import DataCollatorForDMPO, DMPOBatch, collator_for_config
from .config import DMPOConfig
from .forward import DMPOForwardMixin
from .metrics import log_dmpo_metrics
from .model_card import card_rows, is_hub_id, write_card_section
from .objective import ObjectiveConfig, dmpo_objective
from .preparation import prepare_dataset, require_rows
from .ref_cache import resolve_precompute


if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from transformers import BitsAndBytesConfig

__all__ = ["DMPOTrainer"]

logger = get_logger(__name__)


class DMPOTrainer(DMPOForwardMixin, DPOTrainer):
    """Trainer for DMPO (Direct Multi-Turn Preference Optimization), a drop-in replacement for [`~trl.DPOTrainer`].

    Same constructor and same dataset format as `DPOTrainer` (conversational ``prompt`` / ``chosen`` / ``rejected``
    columns, where ``chosen`` and ``rejected`` are whole multi-turn continuations: assistant actions alternating with
    observations; standard plain-text rows are one action per side). Only assistant actions carry loss, each token of
    action ``t`` weighted by ``phi(t, T) = gamma^t (1 - gamma^(T-t)) / (1 - gamma^T)``; the default loss is
    ``-log sigmoid(beta * (S_w - S_l))`` with ``S = sum_t phi(t, T) * (log pi_theta(a_t|s_t) - log pi_ref(a_t|s_t))``,
    and every other `loss_type` of DPOConfig works on the same scores (`dmpo_trl.losses`). See `dmpo_trl.loss` for
    the math and `dmpo_trl.tokenization` for which tokens are actions.

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

    Attributes:
        card_base_model (`str`, *optional*): the base model to name in the model card, for a model loaded from a
            local copy of a Hub model (default: the model's `name_or_path`).
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
        # DPOTrainer 1.16 warns that padding_free is "disabled" and turns it off; DMPO implements it, so hide the flag
        # from DPOTrainer.__init__ (no misleading warning) and restore it afterwards.
        args.padding_free = False
        requested_precompute, args.precompute_ref_log_probs = args.precompute_ref_log_probs, precompute
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
            args.precompute_ref_log_probs = requested_precompute
        self.padding_free = padding_free
        if padding_free:  # models loaded by DPOTrainer.__init__ from a name (a no-op for those switched above)
            use_varlen_sdpa(self.model)
            use_varlen_sdpa(self.ref_model)
            if isinstance(self.data_collator, DataCollatorForDMPO):
                # One row has no padding and suits per-sequence attention; with a dense row-wide mask (eager, flex,
                # sdpa that cannot be switched) attention costs rows * L^2, so rows no longer than the longest
                # sequence win.
                self.data_collator.packing = "single_row" if is_varlen_capable(self.model) else "bins"
        if self._is_vision_dataset:
            raise ValueError("DMPOTrainer supports text conversations only; the dataset has image columns.")
        self._install_action_lm_heads()

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Tokenization, row checks, skip and truncation accounting: `dmpo_trl.preparation.prepare_dataset`
        dataset, stats = prepare_dataset(dataset, processing_class, args, dataset_name)
        if stats is not None:
            self.dmpo_data_stats[dataset_name] = stats
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(COLLATOR_COLUMNS)

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs, return_outputs):
        """Every `loss_type` of the config on the DMPO scores (`dmpo_trl.objective`), plus the MoE auxiliary loss."""
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
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        self._log_dmpo_metrics(mode, batch, outputs, out, out.chosen_logps, out.rejected_logps)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**self._model_inputs(model, batch), use_cache=False)
            return loss, outputs
        return loss

    def _log_dmpo_metrics(self, mode, batch: DMPOBatch, outputs, out, policy_chosen, policy_rejected):
        log_dmpo_metrics(self, self._metrics[mode], mode, batch, outputs, out, policy_chosen, policy_rejected)

    # ------------------------------------------------------------ checkpoints
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`; ``resume_from_checkpoint=True`` takes the last *complete* checkpoint (a partial one, cut
        by a crash or a full disk, is skipped with a warning: `dmpo_trl.checkpoints.last_complete_checkpoint`)."""
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
