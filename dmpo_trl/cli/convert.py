"""`dmpo-trl convert --from FORMAT IN OUT`: convert trajectories to the project's dataset format."""

from __future__ import annotations

import argparse
import json
import sys

from dmpo_trl.core.errors import DMPODataError


FORMATS = ("eto", "eto-rollouts", "sharegpt", "openai", "project")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert ETO / ShareGPT / OpenAI trajectories to the project's preference format",
        description="Convert IN (.json, .jsonl, .parquet; for eto-rollouts also a folder of ETO rollout .json "
        "files) to OUT (.json, .jsonl, .parquet) in the project format. Every output row passes the same checks "
        "as `dmpo-trl validate` (structure only). Exits 1 at the first bad row unless --skip-invalid.",
    )
    parser.add_argument("--from", dest="fmt", required=True, choices=FORMATS, help="input format")
    parser.add_argument("input", metavar="IN", help="input file (eto-rollouts: rollout file or folder)")
    parser.add_argument("output", metavar="OUT", help="output file")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out bad rows and list them (count and reasons) instead of stopping",
    )
    rollouts = parser.add_argument_group("eto-rollouts (pairing as ETO's construct_preference.py)")
    rollouts.add_argument(
        "--expert", metavar="FILE", help="expert (SFT) trajectories, e.g. ETO's data/webshop_sft.json"
    )
    rollouts.add_argument(
        "--task",
        choices=("webshop", "sciworld", "alfworld"),
        help="ETO task: sets the rollout offset, rejected cap and reward rules ETO uses",
    )
    rollouts.add_argument(
        "--rollout-offset",
        type=int,
        metavar="N",
        help="messages before the task description in a rollout (instruction, OK, example)",
    )
    rollouts.add_argument(
        "--max-extra-rejected-turns",
        metavar="N|none",
        help="cap a rejected rollout at the expert's actions + N (ETO: 5); 'none': no cap",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, rest: list[str]) -> int:
    from tqdm.auto import tqdm

    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.data.convert import convert, pair_eto_rollouts

    # lazy: loads pyarrow; keeps `dmpo-trl --help` fast
    from dmpo_trl.data.io import iter_records, read_records, write_records

    if args.fmt == "eto-rollouts":
        if not args.expert:
            print("dmpo-trl convert: --from eto-rollouts needs --expert FILE", file=sys.stderr)
            return 2
        if args.task is None and args.rollout_offset is None:
            print("dmpo-trl convert: --from eto-rollouts needs --task or --rollout-offset", file=sys.stderr)
            return 2
    try:
        if args.fmt == "eto-rollouts":
            kwargs = {}
            if args.rollout_offset is not None:
                kwargs["rollout_offset"] = args.rollout_offset
            if args.max_extra_rejected_turns is not None:
                cap = args.max_extra_rejected_turns
                kwargs["max_extra_rejected_turns"] = None if cap.lower() == "none" else int(cap)
            rows = pair_eto_rollouts(
                read_records(args.expert),
                read_records(args.input),
                task=args.task,
                skip_invalid=args.skip_invalid,
                **kwargs,
            )
            written = write_records(rows, args.output, keep_empty=False)
        else:  # streamed: read, converted, checked and written one row at a time (bounded memory)
            records = tqdm(iter_records(args.input), desc="convert", unit=" rows", disable=None, file=sys.stderr)
            rows = convert(records, args.fmt, skip_invalid=args.skip_invalid, stream=True)
            written = write_records(rows, args.output, keep_empty=False)
    except DMPODataError as err:
        if err.source is not None:
            raise
        source = args.expert if err.reason.startswith("expert record") else args.input
        raise DMPODataError(err.reason, err.row, err.side, source=source) from None
    for skipped in rows.skipped:
        print(f"skipped {args.input}: {skipped.reason}", file=sys.stderr)
    if not written:
        counts = ", ".join(f"{key} {value}" for key, value in rows.stats.items() if value)
        raise DMPODataError(
            f"no pair to write: {len(rows.skipped)} rows skipped"
            + (f" ({counts})" if counts else "")
            + "; nothing was written",
            source=args.input,
        )
    summary = {"written": written, "output": args.output, **rows.stats, "skipped": len(rows.skipped)}
    print(json.dumps(summary))
    return 0
