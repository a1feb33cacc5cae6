"""python -m collect serve | add-annotator | import | export: the annotation app and its operator commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .admin_token import TokenError, admin_token
from .agreement import Quorum
from .candidates import CandidateError, Candidates, load_candidates
from .db import Location, StoreError, add_annotator, connect, import_candidates, is_url, open_db, parse_location
from .export import FORMATS, ExportError, export, write_atomically
from .guard import MAX_BODY_BYTES
from .strategies import DEFAULT_STRATEGY, STRATEGIES

log = logging.getLogger("collect")


def _db_option() -> dict[str, Any]:
    """--db: a path or a URL, defaulting to $COLLECT_DATABASE_URL (required only when that is not set)."""
    env = os.environ.get("COLLECT_DATABASE_URL") or None
    return {
        "type": parse_location,
        "default": env,
        "required": env is None,
        "help": "The labels database: a SQLite file (created if missing) or a postgresql:// URL. "
        "Default: $COLLECT_DATABASE_URL.",
    }


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: the removed `--admin-token T` must not silently become `--admin-token-file T`.
    parser = argparse.ArgumentParser(prog="python -m collect", description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", allow_abbrev=False, help="Serve the annotation page (imports --candidates first)."
    )
    serve.add_argument("--db", **_db_option())
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
        "--majority",
        type=int,
        help="Votes a pair's leading answer needs (and strictly more than any other); a pair short of it after "
        "--annotations-per-item votes goes to one more annotator at a time. Default: a strict majority.",
    )
    serve.add_argument(
        "--most-annotations-per-item",
        type=int,
        help="The most annotators a disputed pair may get (default: --annotations-per-item + 2).",
    )
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        help="File holding the /admin token (mode 600). Default: $COLLECT_ADMIN_TOKEN, else DB.admin-token "
        "(./collect.admin-token for a database URL), generated there when missing. Never on the command line.",
    )
    serve.add_argument(
        "--rankings",
        action="store_true",
        help="Show a prompt with 3-4 answers as one ranking screen (stored as the pairs it implies); "
        "prompts with two answers stay pairwise.",
    )
    serve.add_argument("--guidelines", type=Path, help="Annotation guidelines (Markdown), shown on the page.")
    serve.add_argument("--guidelines-zh", type=Path, help="The guidelines in Chinese (Markdown).")
    serve.add_argument(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="Larger request bodies get 413 before auth."
    )
    serve.add_argument(
        "--lease-minutes",
        type=float,
        default=30.0,
        help="A pair shown but not answered is offered to someone else after this long.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)

    add = commands.add_parser(
        "add-annotator", allow_abbrev=False, help="Issue an annotator token (printed once; only a hash is kept)."
    )
    add.add_argument("name")
    add.add_argument("--db", **_db_option())
    add.add_argument("--rotate", action="store_true", help="Replace the token of an existing annotator.")

    imp = commands.add_parser("import", allow_abbrev=False, help="Add candidates to the database without serving.")
    imp.add_argument("--db", **_db_option())
    imp.add_argument("--candidates", type=Path, nargs="+", required=True)
    imp.add_argument("--skip-invalid", action="store_true")

    exp = commands.add_parser(
        "export", allow_abbrev=False, help="Majority vote per pair -> a training file, plus an agreement report."
    )
    exp.add_argument("--db", **_db_option())
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


def _import(db: Location, files: list[Path], skip_invalid: bool) -> None:
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


def _default_token_file(db: object) -> Path:
    return Path(f"{db}.admin-token") if isinstance(db, Path) else Path("collect.admin-token")


def _guidelines(english: Path | None, chinese: Path | None) -> dict[str, str]:
    """Language -> Markdown; one file given serves both languages (better than none)."""
    found = {}
    for lang, path in (("en", english), ("zh", chinese)):
        if path is not None:
            try:
                found[lang] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise StoreError(f"{path}: cannot read the guidelines: {e}") from None
            if len(found[lang]) > 200_000:
                raise StoreError(f"{path}: guidelines over 200,000 characters")
    return found


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
    try:
        quorum = Quorum.of(args.annotations_per_item, args.majority, args.most_annotations_per_item)
        token, where = admin_token(args.admin_token_file, _default_token_file(args.db))
    except (ValueError, TokenError) as e:
        raise StoreError(str(e)) from None
    print(f"admin token (for /admin): from {where}", file=sys.stderr, flush=True)
    config = AppConfig(
        args.db,
        quorum.per_item,
        token,
        picker,
        args.lease_minutes * 60,
        majority=quorum.majority,
        most_per_item=quorum.most,
        guidelines=_guidelines(args.guidelines, args.guidelines_zh),
        max_body_bytes=args.max_body_bytes,
        rankings=args.rankings,
    )
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
            if not is_url(args.db) and not args.db.is_file():
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
