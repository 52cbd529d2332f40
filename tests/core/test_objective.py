"""Every DPO loss type on DMPO scores: hand computation on a 2-pair multi-turn batch (T_w != T_l), padded == packed.

The expected values are computed here in plain Python floats from the formulas of `dmpo_trl.core.objective`
(per token, per action, per pair), never with the package's tensor code. The batch has a
truncated trajectory (rejected of pair 0 keeps 2 of its 3 actions), so the f-divergence's last-kept-action rule and
the real ``T`` of the weights are exercised. T = 1 against DPOTrainer itself: tests/compat/test_dpo_compat.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dmpo_trl.core.collator import DataCollatorForDMPO, DMPOBatch
from dmpo_trl.core.objective import (
    LOSS_TYPES,
    ObjectiveConfig,
    dmpo_loss,
    dmpo_objective,
    f_divergence_step_weights,
    sequence_scores,
    weighted_score,
)
from dmpo_trl.core.weights import dmpo_turn_weights


GAMMA, BETA, EPS, TAU, ALPHA = 0.6, 0.4, 0.1, 0.05, 0.5
# Two pairs: pair 0 chosen T=2 / rejected T=3 (its third action is cut by max_length), pair 1 chosen T=1 / rejected T=2.
EXAMPLES = [
    {
        "prompt_ids": [1, 2, 3],
        "chosen_ids": [10, 11, 12, 13, 14, 15],
        "chosen_turn_ids": [0, 0, -1, 1, 1, 1],
        "chosen_num_turns": 2,
        "rejected_ids": [20, 21, 22, 23, 24, 25, 26, 27, 28],
        "rejected_turn_ids": [0, -1, 1, 1, 1, -1, -1, 2, 2],
        "rejected_num_turns": 3,
    },
    {
        "prompt_ids": [4, 5],
        "chosen_ids": [30, 31, 32],
        "chosen_turn_ids": [0, 0, 0],
        "chosen_num_turns": 1,
        "rejected_ids": [40, 41, 42, 43, 44],
        "rejected_turn_ids": [0, -1, 1, 1, 1],
        "rejected_num_turns": 2,
    },
]
MAX_LENGTH = 10  # rejected of pair 0 (3 + 9 tokens) keeps actions 0 and 1 (ends at token 8)


def phi(t, T):
    """phi(t, T), rounded to float32 as the collator stores the weights."""
    return float(torch.tensor(GAMMA**t * (1 - GAMMA ** (T - t)) / (1 - GAMMA**T), dtype=torch.float32))


def policy_lp(seq, pos):
    return -0.05 * (1 + (7 * seq + 3 * pos) % 11)


def ref_lp(seq, pos):
    return -0.05 * (1 + (5 * seq + 2 * pos) % 13)


def sq_lp(seq, pos):  # stands in for log sum_v pi(v)^2
    return -0.02 * (1 + (3 * seq + pos) % 5)


def sequences():
    """The 4 sequences in [chosen; rejected] order: (token turn ids incl. the prompt, T), after truncation."""
    out = []
    for side in ("chosen", "rejected"):
        for ex in EXAMPLES:
            turns = [-1] * len(ex["prompt_ids"]) + ex[f"{side}_turn_ids"]
            if len(turns) > MAX_LENGTH:
                last_kept = max(
                    t
                    for t in range(ex[f"{side}_num_turns"])
                    if max(k for k, x in enumerate(turns) if x == t) < MAX_LENGTH
                )
                turns = turns[: max(k for k, x in enumerate(turns) if x == last_kept) + 1]
            out.append((turns, ex[f"{side}_num_turns"]))
    return out


def hand_terms(ld_alpha=None):
    """Per sequence: S, S_ref, N, per-action log-ratios r_t, phi_t, WPO mean; in plain floats."""
    seqs = sequences()
    counts = [sum(x >= 0 for x in turns) for turns, _ in seqs]
    terms = []
    for i, (turns, T) in enumerate(seqs):
        shared = min(counts[i % 2], counts[i % 2 + 2])
        S = S_ref = N = wpo_num = 0.0
        r = {}
        rank = 0
        for pos, t in enumerate(turns):
            if t < 0:
                continue
            rank += 1
            c = 1.0 if ld_alpha is None or rank <= shared else ld_alpha
            w = phi(t, T)
            S += w * c * policy_lp(i, pos)
            S_ref += w * c * ref_lp(i, pos)
            N += w
            wpo_num += w * (policy_lp(i, pos) - sq_lp(i, pos))
            r[t] = r.get(t, 0.0) + c * (policy_lp(i, pos) - ref_lp(i, pos))
        terms.append({"S": S, "S_ref": S_ref, "N": N, "r": [r[t] for t in sorted(r)], "T": T, "wpo": wpo_num / N})
    return terms


def ls(x):  # log sigmoid
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def f_prime(R, kind):
    if kind == "reverse_kl":
        return R
    if kind == "forward_kl":
        return 1 - math.exp(-R)
    if kind == "js_divergence":
        return math.log(2) + ls(R)
    return (math.exp((ALPHA - 1) * R) - 1) / (ALPHA - 1)


def z_score(term, kind):
    """sum_t psi_t f'(exp R_t), psi_t = phi_t - phi_{t+1} (the last kept action: phi_{K-1})."""
    K, T = len(term["r"]), term["T"]
    total, R = 0.0, 0.0
    for t in range(K):
        R += term["r"][t]
        psi = phi(t, T) - (phi(t + 1, T) if t + 1 < K else 0.0)
        total += psi * f_prime(R, kind)
    return total


def pair_value(loss_type, q, avg):
    d, dw, dl = q["d"], q["dw"], q["dl"]
    if loss_type == "sigmoid":
        return -ls(BETA * d)
    if loss_type == "hinge":
        return max(0.0, 1 - BETA * d)
    if loss_type == "ipo":
        return (avg - 1 / (2 * BETA)) ** 2
    if loss_type == "exo_pair":
        return sig(BETA * d) * (ls(BETA * d) - math.log(1 - EPS)) + sig(-BETA * d) * (ls(-BETA * d) - math.log(EPS))
    if loss_type == "nca_pair":
        return -ls(BETA * dw) - 0.5 * ls(-BETA * dw) - 0.5 * ls(-BETA * dl)
    if loss_type == "robust":
        return (-(1 - EPS) * ls(BETA * d) + EPS * ls(-BETA * d)) / (1 - 2 * EPS)
    if loss_type == "bco_pair":
        return -ls(BETA * dw) - ls(-BETA * dl)
    if loss_type == "sppo_hard":
        return (dw - 0.5 / BETA) ** 2 + (dl + 0.5 / BETA) ** 2
    if loss_type == "apo_zero":
        return 1 - sig(BETA * dw) + sig(BETA * dl)
    if loss_type == "apo_down":
        return sig(BETA * dw) + 1 - sig(BETA * (dw - dl))
    if loss_type == "discopop":
        m = sig(BETA * d / TAU)
        return -ls(BETA * d) * (1 - m) + math.exp(-BETA * d) * m
    assert loss_type == "sigmoid_norm"
    return -ls(BETA * avg)


def hand_loss(loss_type, kind="reverse_kl", ld_alpha=None, wpo=False):
    terms = hand_terms(ld_alpha)
    pairs = []
    for p in range(2):
        win, lose = terms[p], terms[p + 2]
        dw, dl = win["S"] - win["S_ref"], lose["S"] - lose["S_ref"]
        zw, zl = z_score(win, kind), z_score(lose, kind)
        pairs.append(dict(w=win, l=lose, dw=dw, dl=dl, zw=zw, zl=zl, d=zw - zl))
    if loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            a = sorted(q["w"]["S"] - q["l"]["S"] for q in pairs)
            b = sorted(q["w"]["S_ref"] - q["l"]["S_ref"] for q in pairs)
        else:
            a, b = sorted(q["dw"] for q in pairs), sorted(q["dl"] for q in pairs)
        values = [-(1 - EPS) * ls(BETA * (x - y)) - EPS * ls(-BETA * (x - y)) for x, y in zip(a, b, strict=True)]
    elif loss_type == "sft":
        chosen = [(i, pos) for i, (turns, _) in enumerate(sequences()[:2]) for pos, t in enumerate(turns) if t >= 0]
        nll = -sum(policy_lp(i, pos) for i, pos in chosen) / len(chosen)
        values = [nll, nll]
    else:
        values = [pair_value(loss_type, q, q["zw"] / q["w"]["N"] - q["zl"] / q["l"]["N"]) for q in pairs]
    if wpo:
        values = [v * math.exp(pairs[p]["w"]["wpo"]) * math.exp(pairs[p]["l"]["wpo"]) for p, v in enumerate(values)]
    return sum(values) / len(values), pairs


def collate(padding_free):
    collator = DataCollatorForDMPO(pad_token_id=0, gamma=GAMMA, max_length=MAX_LENGTH, padding_free=padding_free)
    batch = collator(EXAMPLES)
    if padding_free:
        seq, pos = batch["sequence_ids"][:, 1:], batch["position_ids"][:, 1:]
    else:
        rows, length = batch["input_ids"].shape
        seq = torch.arange(rows).unsqueeze(1).expand(rows, length - 1)
        pos = torch.arange(1, length).unsqueeze(0).expand(rows, length - 1)
    action = batch["completion_mask"][:, 1:].bool()

    def table(fn):
        values = torch.tensor(
            [[fn(int(s), int(p)) for s, p in zip(rs, rp, strict=True)] for rs, rp in zip(seq, pos, strict=True)],
            dtype=torch.float64,
        )
        return torch.where(action, values, torch.zeros_like(values))  # like the LM head: 0 off the labels

    return DMPOBatch(batch), table(policy_lp), table(ref_lp), table(sq_lp)


def run(loss_type, padding_free=False, precomputed=False, **options):
    batch, lp, ref, sq = collate(padding_free)
    config = ObjectiveConfig(
        loss_types=(loss_type,),
        loss_weights=(1.0,),
        beta=BETA,
        label_smoothing=EPS,
        discopop_tau=TAU,
        f_alpha_divergence_coef=ALPHA,
        **options,
    )
    if precomputed:
        ref_kw = {"ref_scores": sequence_scores(batch, ref, options.get("ld_alpha"))}
    else:
        ref_kw = {"ref_per_token_logps": ref}
    return dmpo_objective(batch, config, lp.requires_grad_(), log_sum_sq_probs=sq, **ref_kw)


def test_the_batch_is_multi_turn_with_unequal_lengths_and_a_truncated_side():
    batch, *_ = collate(False)
    assert batch.inputs["num_turns"].tolist() == [2, 1, 3, 2]
    assert batch.inputs["kept_turns"].tolist() == [2, 1, 2, 2]


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_type_equals_the_hand_computation(loss_type, padding_free):
    expected, pairs = hand_loss(loss_type)
    out = run(loss_type, padding_free=padding_free)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    for p, q in enumerate(pairs):
        assert out.chosen_rewards[p].item() == pytest.approx(BETA * q["dw"], abs=1e-12)
        assert out.rejected_rewards[p].item() == pytest.approx(BETA * q["dl"], abs=1e-12)
        assert out.chosen_logps[p].item() == pytest.approx(q["w"]["S"], abs=1e-12)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "bco_pair", "sft", "aot"])
def test_precomputed_reference_scores_give_the_same_loss(loss_type):
    assert run(loss_type, precomputed=True).loss.item() == pytest.approx(run(loss_type).loss.item(), abs=1e-12)


def test_loss_weights_combine_the_types_like_mpo():
    batch, lp, ref, sq = collate(False)
    config = ObjectiveConfig(loss_types=("sigmoid", "bco_pair", "sft"), loss_weights=(0.8, 0.2, 1.0), beta=BETA)
    out = dmpo_objective(batch, config, lp, ref_per_token_logps=ref)
    expected = sum(w * hand_loss(t)[0] for t, w in (("sigmoid", 0.8), ("bco_pair", 0.2), ("sft", 1.0)))
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("kind", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_f_divergence_on_cumulative_action_log_ratios(loss_type, kind, padding_free):
    expected, _ = hand_loss(loss_type, kind=kind)
    out = run(loss_type, padding_free=padding_free, f_divergence_type=kind)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(hand_loss(loss_type)[0], abs=1e-6)  # the f-divergence changes the loss


def test_f_divergence_reverse_kl_is_the_dmpo_score_and_step_weights_sum_to_one():
    for term in hand_terms():
        assert z_score(term, "reverse_kl") == pytest.approx(term["S"] - term["S_ref"], abs=1e-12)
    phi_t = torch.tensor([[phi(t, 4) for t in range(4)]], dtype=torch.float64)
    psi = f_divergence_step_weights(phi_t, torch.ones(1, 4, dtype=torch.bool))
    expected = [GAMMA**t * (1 - GAMMA) / (1 - GAMMA**4) for t in range(4)]
    assert psi[0].tolist() == pytest.approx(expected, abs=1e-7) and psi.sum().item() == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "sppo_hard"])
def test_ld_dpo_scales_action_tokens_beyond_the_shared_count(loss_type, padding_free):
    expected, pairs = hand_loss(loss_type, ld_alpha=0.3)
    out = run(loss_type, padding_free=padding_free, ld_alpha=0.3)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_logps[0].item() == pytest.approx(pairs[0]["w"]["S"], abs=1e-12)
    assert expected != pytest.approx(hand_loss(loss_type)[0], abs=1e-6)


@pytest.mark.parametrize("padding_free", [False, True])
@pytest.mark.parametrize("loss_type", ["sigmoid", "sft", "discopop"])
def test_wpo_weights_pairs_by_their_weighted_aligned_probability(loss_type, padding_free):
    expected, _ = hand_loss(loss_type, wpo=True)
    out = run(loss_type, padding_free=padding_free, use_weighting=True)
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)


def test_wpo_weights_carry_no_gradient():
    batch, lp, ref, sq = collate(False)
    lp.requires_grad_()
    plain = ObjectiveConfig(beta=BETA)
    weighted = ObjectiveConfig(beta=BETA, use_weighting=True)
    g_plain = torch.autograd.grad(dmpo_objective(batch, plain, lp, ref_per_token_logps=ref).loss, lp)[0]
    out = dmpo_objective(batch, weighted, lp, ref_per_token_logps=ref, log_sum_sq_probs=sq)
    g_weighted = torch.autograd.grad(out.loss, lp)[0]
    _, pairs = hand_loss("sigmoid", wpo=True)
    omega = [math.exp(q["w"]["wpo"] + q["l"]["wpo"]) for q in pairs]
    for row in range(4):  # the gradient is the plain one scaled by the pair's (constant) weight
        assert torch.allclose(g_weighted[row], g_plain[row] * omega[row % 2], atol=1e-14)


def test_f_divergence_needs_the_reference_of_every_action():
    with pytest.raises(ValueError, match="reference log-prob of every action"):
        run("sigmoid", precomputed=True, f_divergence_type="forward_kl")


# ------------------------------------------------- the public loss helper, by hand
def phi_by_hand(t, T, gamma):
    if gamma == 1.0:
        return (T - t) / T
    return gamma**t * (1 - gamma ** (T - t)) / (1 - gamma**T)


def test_loss_hand_computed_two_pairs():
    # pair 0: chosen T=2, rejected T=1; pair 1: chosen T=1, rejected T=3; gamma=0.7, beta=0.5
    gamma, beta = 0.7, 0.5
    turn_ids = torch.tensor([[-1, 0, 0, -1, 1], [-1, 0, -1, -1, -1], [-1, 0, -1, -1, -1], [-1, 0, -1, 1, 2]])
    num_turns = torch.tensor([2, 1, 1, 3])
    gen = torch.Generator().manual_seed(0)
    pol = -torch.rand(4, 5, generator=gen) * 3
    ref = -torch.rand(4, 5, generator=gen) * 3
    w = dmpo_turn_weights(turn_ids, num_turns, gamma)
    out = dmpo_loss(pol, ref, w, beta=beta)

    def score(row):
        T = int(num_turns[row])
        s = 0.0
        for t in range(T):
            r_t = sum(float(pol[row, k] - ref[row, k]) for k in range(5) if turn_ids[row, k] == t)
            s += phi_by_hand(t, T, gamma) * r_t
        return s

    for pair in range(2):
        margin = score(pair) - score(pair + 2)
        expected = -math.log(1 / (1 + math.exp(-beta * margin)))
        assert out.losses[pair].item() == pytest.approx(expected, rel=1e-6)
        assert out.chosen_rewards[pair].item() == pytest.approx(beta * score(pair), rel=1e-6)
        assert out.rejected_rewards[pair].item() == pytest.approx(beta * score(pair + 2), rel=1e-6)


def test_single_action_each_side_equals_dpo_on_action_tokens():
    gen = torch.Generator().manual_seed(1)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0]])  # one action per side
    pol, ref = -torch.rand(2, 5, generator=gen), -torch.rand(2, 5, generator=gen)
    out = dmpo_loss(pol, ref, dmpo_turn_weights(torch.where(mask.bool(), 0, -1), torch.tensor([1, 1]), 0.7), beta=0.1)
    dpo_logit = 0.1 * (((pol - ref) * mask)[0].sum() - ((pol - ref) * mask)[1].sum())
    assert out.losses.item() == pytest.approx(-F.logsigmoid(dpo_logit).item(), rel=1e-6)


def test_public_dmpo_loss_is_the_trainers_loss_and_takes_no_label_smoothing():
    """`dmpo_loss` equals `dmpo_objective` (what DMPOTrainer trains) for the default sigmoid loss, whatever
    `label_smoothing` the trainer gets (TRL 1.16's sigmoid ignores it); the helper does not accept it at all."""
    batch, lp, ref, _ = collate(False)
    helper = dmpo_loss(lp, ref, batch.weights, beta=BETA)
    for eps in (0.0, 0.2):
        config = ObjectiveConfig(beta=BETA, label_smoothing=eps)
        out = dmpo_objective(batch, config, lp, ref_per_token_logps=ref)
        assert out.loss.item() == pytest.approx(helper.losses.mean().item(), abs=1e-12)
        assert torch.allclose(out.chosen_rewards, helper.chosen_rewards, atol=1e-12, rtol=0)
        assert torch.allclose(out.rejected_rewards, helper.rejected_rewards, atol=1e-12, rtol=0)
    with pytest.raises(TypeError, match="label_smoothing"):
        dmpo_loss(lp, ref, batch.weights, beta=BETA, label_smoothing=0.2)


def test_one_score_for_padded_rows_and_packed_batches():
    for padding_free in (False, True):
        batch, lp, _, _ = collate(padding_free)
        chosen, rejected = sequence_scores(batch, lp)
        expected = [q["w"]["S"] for q in hand_loss("sigmoid")[1]], [q["l"]["S"] for q in hand_loss("sigmoid")[1]]
        assert chosen.tolist() == pytest.approx(expected[0], abs=1e-12)
        assert rejected.tolist() == pytest.approx(expected[1], abs=1e-12)


def test_gradient_is_exactly_zero_off_actions_and_rewards_detached():
    turn_ids = torch.tensor([[-1, 0, 0, -1, 1], [-1, -1, 0, -1, -1]])
    w = dmpo_turn_weights(turn_ids, torch.tensor([2, 1]), 0.7)
    pol = (-torch.rand(2, 5)).requires_grad_()
    pol_inf = pol.detach().clone()
    pol_inf[turn_ids < 0] = -float("inf")  # a non-finite log-prob off the actions must not leak into the loss
    out = dmpo_loss(pol, -torch.rand(2, 5), w)
    out.losses.sum().backward()
    assert (pol.grad[turn_ids < 0] == 0).all()
    assert (pol.grad[turn_ids >= 0] != 0).all()
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert torch.isfinite(weighted_score(pol_inf, w)).all()
