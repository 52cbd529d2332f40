"""The action-position LM head: exact log-probs, gradients and metrics against full logits; the trainer's loss and
gradients unchanged (float64) for every loss type, padded and packed; metrics only on logged steps."""

import copy
import types

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core import lm_head
from dmpo_trl.core.collator import DMPOBatch
from dmpo_trl.core.objective import F_DIVERGENCE_TYPES, LABEL_SMOOTHING_LOSS_TYPES, LOSS_TYPES
from dmpo_trl.testing import dataset_rows, tiny_model
from tests.core.helpers import make_args


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles smaller than the test problems, so every path crosses token and vocabulary tile boundaries."""
    monkeypatch.setattr(lm_head, "TOKEN_TILE", 7)
    monkeypatch.setattr(lm_head, "VOCAB_TILE", 64)


@pytest.mark.parametrize("with_bias,scale", [(False, 1.0), (True, 0.37)])
def test_tiled_log_probs_and_gradients_equal_full_log_softmax(small_tiles, with_bias, scale):
    torch.manual_seed(0)
    n, h, v = 40, 12, 300
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    z = scale * (hidden @ weight.t() + (bias if with_bias else 0))
    targets[::3] = z.argmax(-1)[::3]  # some targets are the top-1 token
    upstream = torch.randn(n, dtype=torch.float64)

    out = lm_head.action_log_probs(hidden, weight, bias, targets, ("log_probs", *lm_head.LM_HEAD_METRICS), scale)
    grads = torch.autograd.grad((out["log_probs"] * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))

    log_p = F.log_softmax(z, dim=-1)
    expected = log_p.gather(1, targets[:, None])[:, 0]
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    assert torch.allclose(out["log_probs"], expected, atol=1e-12, rtol=0)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-11, rtol=0)
    assert torch.allclose(out["entropy"], -(log_p.exp() * log_p).sum(-1), atol=1e-11, rtol=0)
    assert torch.allclose(out["mean_logits"], z.mean(-1), atol=1e-12, rtol=0)
    assert torch.equal(out["is_top1"], z.argmax(-1) == targets) and out["is_top1"].sum() >= n // 3
    assert not out["entropy"].requires_grad  # metric outputs carry no gradient


def test_bf16_autocast_head_stays_close_to_float32():
    torch.manual_seed(1)
    hidden, weight = torch.randn(50, 16), torch.randn(700, 16) * 0.2
    targets = torch.randint(0, 700, (50,))
    exact = F.log_softmax(hidden @ weight.t(), -1).gather(1, targets[:, None])[:, 0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lm_head.action_log_probs(hidden, weight, None, targets)["log_probs"]
    assert got.dtype == torch.float32 and (got - exact).abs().max() < 0.05


def test_patched_model_plain_forward_unchanged_and_deep_copies_use_their_own_weights(tok):
    model = tiny_model(tok, seed=3)
    ids = torch.tensor([tok.encode("Thought: look around the room")])
    before = model(ids).logits
    assert lm_head.add_action_lm_head(model) and not lm_head.add_action_lm_head(model)  # idempotent
    assert torch.equal(model(ids).logits, before)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.5)
    assert not torch.allclose(twin(ids).logits, before)  # the copy's forward runs the copy's weights
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels=labels, fused_lm_head=True)
    full = F.log_softmax(before[0, :-1].double(), -1).gather(1, ids[0, 1:, None])[:, 0]
    mask = labels[0, 1:] != -100
    assert torch.allclose(out.log_probs[0][mask].double(), full[mask], atol=1e-5)
    assert (out.log_probs[0][~mask] == 0).all() and out.entropy is None


def full_logits_logps(trainer, model, inputs, outputs=("log_probs",), **extra):
    """Today's per-token log-probs by an independent route: the model's full logits, log-softmax, gather (and WPO's
    ``log sum_v p_v^2`` from the same full log-softmax when asked for)."""
    batch = DMPOBatch(inputs)
    logits = model(**trainer._model_inputs(model, batch), use_cache=False).logits[:, :-1]
    log_p = F.log_softmax(logits.double(), dim=-1)
    labels = batch.labels()[:, 1:]
    mask = labels != -100
    per_token = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token)).to(logits.dtype)
    sq = None
    if "log_sum_sq_probs" in outputs:
        sq = torch.where(mask, torch.logsumexp(2 * log_p, dim=-1), torch.zeros_like(per_token)).to(logits.dtype)
    return per_token, types.SimpleNamespace(entropy=None, aux_loss=None, log_probs=per_token, log_sum_sq_probs=sq)


def _valid(loss_type, **options):
    try:
        DMPOConfig(output_dir="/tmp/unused", report_to=[], use_cpu=True, loss_type=loss_type, **options)
    except ValueError:
        return False
    return True


# Every loss type the config accepts, alone and after "sigmoid" (types added later are covered automatically), then
# the options that change what the loss reads: each f-divergence (per-action reference log-ratios), LD-DPO's token
# factors and WPO's weights (the head's `log_sum_sq_probs`)
CASES = [
    (lt, {}) for lt in [[t] for t in LOSS_TYPES] + [["sigmoid", t] for t in LOSS_TYPES if t != "sigmoid"] if _valid(lt)
]
CASES += [
    (lt, opts)
    for lt, opts in [
        *[(["sigmoid"], {"f_divergence_type": f}) for f in F_DIVERGENCE_TYPES if f != "reverse_kl"],
        (["ipo"], {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}),
        (["sigmoid"], {"ld_alpha": 0.5}),
        (["sigmoid"], {"use_weighting": True}),
        (["sigmoid", "sft"], {"use_weighting": True, "ld_alpha": 0.5}),
    ]
    if _valid(lt, **opts)
]


def _case_id(case):
    loss_type, opts = case
    return "+".join(loss_type) + "".join(f"-{k}={v}" for k, v in opts.items())


def test_exactness_cases_cover_every_loss_type_and_option():
    covered = {t for lt, _ in CASES for t in lt}
    assert covered == set(LOSS_TYPES)
    options = {k for _, opts in CASES for k in opts}
    assert {"f_divergence_type", "ld_alpha", "use_weighting"} <= options
    assert {opts.get("f_divergence_type") for _, opts in CASES} >= set(F_DIVERGENCE_TYPES) - {"reverse_kl"}


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_loss_gradients_and_log_probs_equal_full_logits_in_float64(
    tmp_path, tok, small_tiles, monkeypatch, padding_free, case
):
    loss_type, options = case
    rows = dataset_rows(6, seed=5)
    weights = {"loss_weights": [1.0] + [0.5] * (len(loss_type) - 1)} if len(loss_type) > 1 else {}
    smoothing = {"label_smoothing": 0.1} if set(loss_type) & set(LABEL_SMOOTHING_LOSS_TYPES) else {}
    trainer = DMPOTrainer(
        model=tiny_model(tok, seed=0).double(),
        ref_model=tiny_model(tok, seed=4).double(),
        args=make_args(
            tmp_path,
            padding_free=padding_free,
            loss_type=loss_type,
            precompute_ref_log_probs=False,
            **smoothing,
            **weights,
            **options,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    trainer.model.eval()  # no dropout; metrics computed (evaluation) on the head's path
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    assert batch["input_ids"].size(0) == (1 if padding_free else 12)

    def loss_and_grads():
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}

    per_token, out = trainer._per_token_logps(trainer.model, batch)
    loss, grads = loss_and_grads()
    with monkeypatch.context() as m:
        m.setattr(DMPOTrainer, "_action_logps", full_logits_logps)
        expected_per_token, expected_out = trainer._per_token_logps(trainer.model, batch)
        expected_loss, expected_grads = loss_and_grads()
        expected_ref = trainer.compute_ref_log_probs(trainer.ref_model, batch)

    assert per_token.dtype == torch.float64 and per_token.shape == batch["input_ids"][:, 1:].shape
    assert torch.allclose(per_token, expected_per_token, atol=1e-10, rtol=0)
    assert (per_token[batch["completion_mask"][:, 1:] == 0] == 0).all()
    if options.get("use_weighting"):
        mask = batch["completion_mask"][:, 1:].bool()
        assert torch.allclose(out.log_sum_sq_probs[mask], expected_out.log_sum_sq_probs[mask], atol=1e-10, rtol=0)
    else:
        assert out.log_sum_sq_probs is None  # WPO's output only when WPO reads it
    for got, want in zip(
        trainer._sequence_scores(per_token, batch), trainer._sequence_scores(expected_per_token, batch), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-10, rtol=0)
    for got, want in zip(trainer.compute_ref_log_probs(trainer.ref_model, batch), expected_ref, strict=True):
        assert torch.allclose(got, want, atol=1e-10, rtol=0)
    assert loss.item() != 0 and abs(loss.item() - expected_loss.item()) < 1e-10
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], atol=1e-10, rtol=1e-8), name
    assert any(g.abs().max() > 1e-6 for g in grads.values())  # a real gradient was compared
    # the head's metric outputs match the full logits on the action positions
    batch_view = DMPOBatch(batch)
    logits = trainer.model(**trainer._model_inputs(trainer.model, batch_view), use_cache=False).logits[:, :-1]
    mask = batch_view.labels()[:, 1:] != -100
    log_p = F.log_softmax(logits.double(), -1)
    assert torch.allclose(out.entropy[mask], -(log_p.exp() * log_p).sum(-1)[mask], atol=1e-10)
    assert torch.allclose(out.mean_logits[mask], logits.mean(-1)[mask], atol=1e-10)
    assert torch.equal(out.is_top1[mask], (logits.argmax(-1) == batch["input_ids"][:, 1:])[mask])


def test_today_fused_head_agrees_to_float32_rounding(tmp_path, tok):
    """TRL's fused head (the path before this one: every position, float32 statistics) vs the action head."""
    from trl.trainer.utils import add_fused_lm_head

    trainer = DMPOTrainer(
        model=tiny_model(tok).double(),
        args=make_args(tmp_path, precompute_ref_log_probs=False),
        train_dataset=Dataset.from_list(dataset_rows(4)),
        processing_class=tok,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    view = DMPOBatch(batch)
    # the trainer's policy, called through TRL's fused-head protocol (served by the action head it installed)
    ours = trainer.model(**view.model_inputs(), labels=view.labels(), fused_lm_head=True).log_probs
    trl_model = tiny_model(tok).double()
    add_fused_lm_head(trl_model)
    theirs = trl_model(**view.model_inputs(), labels=view.labels(), fused_lm_head=True)
    assert torch.allclose(ours, theirs.log_probs.to(ours.dtype), atol=1e-6, rtol=0)


def test_head_scores_only_action_positions_and_metrics_only_on_logged_steps(tmp_path, tok, monkeypatch):
    calls = []
    original = lm_head.action_log_probs

    def spy(hidden, weight, bias, targets, outputs=("log_probs",), *a, **k):
        calls.append((hidden.shape[0], tuple(outputs), torch.is_grad_enabled()))
        return original(hidden, weight, bias, targets, outputs, *a, **k)

    monkeypatch.setattr(lm_head, "action_log_probs", spy)
    trainer = DMPOTrainer(
        model=tiny_model(tok),
        ref_model=tiny_model(tok, seed=1),
        args=make_args(
            tmp_path, max_steps=5, logging_steps=2, per_device_train_batch_size=2, precompute_ref_log_probs=False
        ),
        train_dataset=Dataset.from_list(dataset_rows(10)),
        processing_class=tok,
    )
    actions = []
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        actions.append(int((DMPOBatch(batch).labels()[:, 1:] != -100).sum()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    policy = [c for c in calls if c[2]]
    reference = [c for c in calls if not c[2]]
    assert [c[0] for c in policy] == actions == [c[0] for c in reference]  # only the labelled positions
    with_metrics = [i + 1 for i, c in enumerate(policy) if "entropy" in c[1]]
    assert with_metrics == [2, 4, 5]  # logging_steps=2, and the last step (the final log)
    assert all(c[1] == ("log_probs",) for c in reference)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [("entropy" in h) for h in logged] == [True, True]
    assert all(0 <= h["mean_token_accuracy"] <= 1 for h in logged)


def test_wpo_log_sum_sq_probs_on_gathered_positions(small_tiles):
    """WPO's `log_sum_sq_probs` from the tiles (float64, across tile boundaries) and from TRL's kernel (the soft-capped
    path) against full logits."""
    torch.manual_seed(2)
    hidden, weight = torch.randn(30, 8, dtype=torch.float64), torch.randn(500, 8, dtype=torch.float64) * 3
    targets = torch.randint(0, 500, (30,))
    log_p = F.log_softmax(hidden @ weight.t(), -1)
    out = lm_head.action_log_probs(hidden, weight, None, targets, ("log_probs", "log_sum_sq_probs"))
    assert not out["log_sum_sq_probs"].requires_grad
    assert torch.allclose(out["log_sum_sq_probs"], torch.logsumexp(2 * log_p, -1), atol=1e-12, rtol=0)
    assert torch.allclose(out["log_probs"], log_p.gather(1, targets[:, None])[:, 0], atol=1e-12, rtol=0)
    cap = 30.0
    capped = F.log_softmax(cap * torch.tanh(hidden @ weight.t() / cap), -1)
    trl = lm_head.action_log_probs(hidden, weight, None, targets, ("log_probs", "log_sum_sq_probs"), 1.0, cap)
    assert torch.allclose(trl["log_sum_sq_probs"].double(), torch.logsumexp(2 * capped, -1), atol=1e-5)
    assert torch.allclose(trl["log_probs"].double(), capped.gather(1, targets[:, None])[:, 0], atol=1e-5)
