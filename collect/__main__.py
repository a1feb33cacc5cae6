"""python -m collect serve | add-annotator | import | export: the annotation app and its operator commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from .candidates import CandidateError, Candidates, load_candidates
from .db import StoreError, add_annotator, connect, import_candidates, open_db
from .export import FORMATS, ExportError, export, write_atomically
from .strategies import DEFAULT_STRATEGY, STRATEGIES

log = logging.getLogger("collect")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collect", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Serve the annotation page (imports --candidates first).")
    serve.add_argument("--db", type=Path, required=True, help="SQLite labels database (created if missing).")
    serve.add_argument("--candidates", type=Path, nargs="*", default=[], help='{"prompt", "completions"} JSONL.')
    serve.add_argument("--skip-invalid", action="store_true", help="Skip and count bad candidate records.")
    serve.add_argument("--annotations-per-item", type=int, default=3, help="Different annotators per pair.")
    serve.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=DEFAULT_STRATEGY,
        help="Which pair next: random, uncertain (model P(A>B) nearest 0.5) or max-gap (largest "
        "|reward difference|); the last two need --reward-url. Default: the simulation's winner.",
    )
    serve.add_argument("--reward-url", default=os.environ.get("COLLECT_REWARD_URL"), help="Live reward service.")
    serve.add_argument("--reward-api-key", default=os.environ.get("COLLECT_REWARD_API_KEY"))
    serve.add_argument(
        "--admin-token",
        default=os.environ.get("COLLECT_ADMIN_TOKEN"),
        help="Token for /admin (env COLLECT_ADMIN_TOKEN); generated and printed when not given.",
    )
    serve.add_argument(
        "--lease-minutes",
        type=float,
        default=30.0,
        help="A pair shown but not answered is offered to someone else after this long.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)

    add = commands.add_parser("add-annotator", help="Issue an annotator token (printed once; only a hash is kept).")
    add.add_argument("name")
    add.add_argument("--db", type=Path, required=True)
    add.add_argument("--rotate", action="store_true", help="Replace the token of an existing annotator.")

    imp = commands.add_parser("import", help="Add candidates to the database without serving.")
    imp.add_argument("--db", type=Path, required=True)
    imp.add_argument("--candidates", type=Path, nargs="+", required=True)
    imp.add_argument("--skip-invalid", action="store_true")

    exp = commands.add_parser("export", help="Majority vote per pair -> a training file, plus an agreement report.")
    exp.add_argument("--db", type=Path, required=True)
    exp.add_argument(
        "--format",
        choices=FORMATS,
        default="tutorial",
        help="tutorial: JSON array of {question, chosen, rejected}; trl: JSONL {prompt, chosen, "
        "rejected}; ranked: JSONL {prompt, completions, ranks} (majorities merged by ranked pairs).",
    )
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--keep-ties", action="store_true", help="Keep tied pairs as equal ranks (ranked only).")
    exp.add_argument("--min-votes", type=int, default=1, help="Leave out pairs with fewer live votes.")
    exp.add_argument("--report", type=Path, help="Also write the full report (disagreements listed) as JSON.")
    return parser


def _import(db: Path, files: list[Path], skip_invalid: bool) -> None:
    candidates: Candidates = load_candidates(files, skip_invalid)
    conn = open_db(db)
    try:
        prompts, items = import_candidates(conn, candidates)
    finally:
        conn.close()
    skipped = sum(candidates.skipped.values())
    print(
        f"{len(candidates.completions)} prompts ({prompts} new), {candidates.pairs} pairs ({items} new); "
        f"{candidates.merged_prompts} duplicate prompts merged; {skipped} records skipped"
        + (f": {dict(candidates.skipped)}" if skipped else ""),
        file=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import AppConfig, create_app
    from .strategies import ModelScores, Picker

    if args.annotations_per_item < 1:
        raise StoreError("--annotations-per-item must be at least 1")
    if args.candidates:
        _import(args.db, args.candidates, args.skip_invalid)
    open_db(args.db).close()
    scores = ModelScores(args.reward_url, lambda: connect(args.db), args.reward_api_key) if args.reward_url else None
    try:
        picker = Picker(args.strategy, scores)
    except ValueError as e:
        raise StoreError(str(e)) from None
    admin_token = args.admin_token
    if not admin_token:
        admin_token = secrets.token_urlsafe(24)
        print(f"admin token (for /admin): {admin_token}", file=sys.stderr, flush=True)
    config = AppConfig(args.db, args.annotations_per_item, admin_token, picker, args.lease_minutes * 60)
    print(f"annotation page: http://{args.host}:{args.port}/  admin: /admin", file=sys.stderr, flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "import":
            _import(args.db, args.candidates, args.skip_invalid)
        elif args.command == "add-annotator":
            conn = open_db(args.db)
            try:
                print(add_annotator(conn, args.name, args.rotate))
            finally:
                conn.close()
        elif args.command == "export":
            for out in (args.out, args.report):
                if out is not None and not out.parent.is_dir():
                    raise ExportError(f"{out.parent}: no such folder")
            if not args.db.is_file():
                raise StoreError(f"{args.db}: no such database")
            conn = open_db(args.db)
            try:
                text, report = export(conn, args.format, args.keep_ties, args.min_votes)
            finally:
                conn.close()
            write_atomically(args.out, text)
            if args.report:
                write_atomically(args.report, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
            brief = {k: v for k, v in report.items() if k != "disagreements"}
            brief["disagreements"] = len(report["disagreements"])
            print(json.dumps(brief, ensure_ascii=False, indent=2))
    except (CandidateError, StoreError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output folder that does not exist, a read-only disk
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
