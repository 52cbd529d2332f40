"""The metrics `DMPOTrainer` logs per step: TRL's DPO metrics on the DMPO quantities, plus DMPO's own."""

from __future__ import annotations

import torch

from .collator import DMPOBatch


__all__ = ["log_dmpo_metrics"]


def log_dmpo_metrics(trainer, metrics, mode: str, batch: DMPOBatch, outputs, out, policy_chosen, policy_rejected):
    """Append this batch's metrics to ``metrics`` (``trainer._metrics[mode]``), gathered over processes.

    ``outputs`` is the policy forward's output (entropy, mean logits, top-1 per token; ``None`` on steps whose
    metrics are not logged), ``out`` the objective's output
    (rewards per pair); token counts go to ``trainer._total_train_tokens``.
    """
    # Per-pair tensors go through gather_for_metrics, which drops the duplicates padding the last batch; it trims
    # along dim 0 by pairs, so [chosen; rejected] tensors are split into halves first. Token counts are (1,)-shaped
    # sums, gathered as they are (gather_for_metrics would trim them like samples).
    gather = trainer.accelerator.gather_for_metrics

    def gather_sum(value: torch.Tensor) -> torch.Tensor:
        return trainer.accelerator.gather(value.reshape(1)).sum()

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
        trainer._total_train_tokens += real_tokens.item() // trainer._tp_size
    metrics["num_tokens"] = [trainer._total_train_tokens]

    chosen_rewards, rejected_rewards = gather(out.chosen_rewards), gather(out.rejected_rewards)
    metrics["rewards/chosen"].append(chosen_rewards.mean().item())
    metrics["rewards/rejected"].append(rejected_rewards.mean().item())
    metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
    metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
    metrics["logps/chosen"].append(gather(policy_chosen.detach()).mean().item())
    metrics["logps/rejected"].append(gather(policy_rejected.detach()).mean().item())

    turns_w, turns_l = (gather(x) for x in batch.inputs["num_turns"].chunk(2, dim=0))
    kept_w, kept_l = (gather(x) for x in batch.inputs["kept_turns"].chunk(2, dim=0))
    metrics["turns/chosen"].append(turns_w.float().mean().item())
    metrics["turns/rejected"].append(turns_l.float().mean().item())
    metrics["action_token_share"].append((gather_sum(batch.action_tokens()) / real_tokens.clamp(min=1)).item())
    dropped_w, dropped_l = turns_w - kept_w, turns_l - kept_l
    metrics["truncation/actions_dropped"].append((dropped_w.sum() + dropped_l.sum()).item())
    metrics["truncation/pairs_truncated"].append(((dropped_w > 0) | (dropped_l > 0)).float().mean().item())
