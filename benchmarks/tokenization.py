"""Tokenization cost per pair: the linear-time action locator vs rendering every prefix, at T actions per side.

    python benchmarks/tokenization.py [--turns 20,200] [--pairs 3] [--repeats 3] [--tokenizer smollm2]
                                      [--chat-template qwen2_5_training.jinja]

Data: `benchmarks.agent_data.agent_pairs` with exactly T actions on each side (observations of 8-80 words, the
suite's), tokenized by `dmpo_trl.core.rows.tokenization.tokenize_pair` as the trainer does. Printed per T: tokens per pair,
CPU seconds per pair (best of `--repeats`, process time), of which chat-template rendering and of which the one
BPE pass, and the same pair with every action located by prefix renders (the method before; the windows,
`tokenization.window_span` and `templates._window_prompt`, disabled), with the speed-up. Both give identical token and
turn ids (checked here, and in `tests/core/rows/test_tokenization_locator.py` and `tests/core/rows/test_marker_locator.py`).

`--chat-template` replaces the tokenizer's template with one of TRL's `trl/chat_templates/*.jinja` (by file name) or
a template file: a template with ``{% generation %}`` markers takes the marker path (`dmpo_trl.core.rows.templates`); its
"prefix renders" column renders the two prefixes of every action there (with the one BPE pass of the new path; the
method before also tokenized the conversation twice).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import load_average, load_tokenizer  # noqa: E402


def timed_pairs(tok, rows, prefix_only: bool) -> tuple[float, float, float, list]:
    """CPU seconds per pair: total, rendering, BPE; and the outputs."""
    import dmpo_trl.core.rows.templates as templates
    import dmpo_trl.core.rows.tokenization as tokenization

    spent = {"render": 0.0, "bpe": 0.0}
    render, window, marker_window = tokenization._render, tokenization.window_span, templates._window_prompt
    call = type(tok).__call__

    def timed_render(*a, **k):
        t = time.process_time()
        try:
            return render(*a, **k)
        finally:
            spent["render"] += time.process_time() - t

    def timed_call(self, *a, **k):
        t = time.process_time()
        try:
            return call(self, *a, **k)
        finally:
            spent["bpe"] += time.process_time() - t

    tokenization._render = timed_render
    type(tok).__call__ = timed_call
    if prefix_only:
        tokenization.window_span = templates._window_prompt = lambda *a, **k: None
    try:
        start = time.process_time()
        outs = [tokenization.tokenize_pair(tok, row, i) for i, row in enumerate(rows)]
        total = time.process_time() - start
    finally:
        tokenization._render, tokenization.window_span, templates._window_prompt = render, window, marker_window
        type(tok).__call__ = call
    n = len(rows)
    return total / n, spent["render"] / n, spent["bpe"] / n, outs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", default="20,200")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokenizer", choices=["smollm2", "tiny"], default="smollm2")
    p.add_argument("--chat-template", help="a trl/chat_templates file name, or a path to a template file")
    args = p.parse_args()
    from benchmarks.agent_data import agent_pairs

    tok = load_tokenizer(args.tokenizer)
    if args.chat_template:
        from pathlib import Path

        from dmpo_trl.testing import TEMPLATE_DIR

        path = Path(args.chat_template)
        tok.chat_template = (path if path.is_file() else TEMPLATE_DIR / args.chat_template).read_text(encoding="utf-8")
    print(f"load average before: {load_average()}")
    lines = []
    for t in [int(x) for x in args.turns.split(",")]:
        rows = agent_pairs(args.pairs, seed=0, chosen=(t, t), rejected=(t, t), obs_words=(8, 80))
        new = min((timed_pairs(tok, rows, False) for _ in range(args.repeats)), key=lambda r: r[0])
        old = min((timed_pairs(tok, rows, True) for _ in range(args.repeats)), key=lambda r: r[0])
        if new[3] != old[3]:
            sys.exit(f"T={t}: the two methods disagree")
        tokens = sum(len(o["prompt_ids"]) * 2 + len(o["chosen_ids"]) + len(o["rejected_ids"]) for o in new[3])
        lines.append(
            f"| {t} | {tokens / len(rows):.0f} | {new[0]:.3f} | {new[1]:.3f} | {new[2]:.3f} | {old[0]:.3f} | "
            f"{old[1]:.3f} | {old[0] / new[0]:.1f}x |"
        )
    print(f"load average after: {load_average()}")
    template = args.chat_template or "its own chat template"
    print(
        f"tokenizer: {args.tokenizer} ({len(tok)} entries), {template}; {args.pairs} pairs per T, best of {args.repeats}"
    )
    print(
        "| T per side | tokens/pair | CPU s/pair | of which rendering | of which BPE | prefix renders: CPU s/pair | "
        "of which rendering | speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
