"""python -m collect.generate: sample N answers per prompt with a causal LM -> candidates JSONL (resumable, seeded)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .candidates import PROMPT_KEYS, CandidateError

log = logging.getLogger("collect.generate")


def read_prompts(path: Path) -> list[str]:
    """Prompts from .txt (one per line) or .json/.jsonl records with a "prompt" or "question" string; duplicates
    once. A bad line stops with `file:line: reason`."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CandidateError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        where = raw[: e.start].count(b"\n") + 1
        raise CandidateError(f"{path}:{where}: not valid UTF-8") from None
    found: dict[str, None] = {}
    if path.suffix == ".txt":
        for line in text.splitlines():
            if line.strip():
                found.setdefault(line.strip())
        return list(found)
    try:
        records = json.loads(text)
        numbered = list(enumerate(records if isinstance(records, list) else [records], 1))
        unit = "record"
    except json.JSONDecodeError:
        numbered = []
        unit = "line"
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise CandidateError(f"{path}:{number}: invalid JSON: {e.msg}") from None
    for number, record in numbered:
        key = next((k for k in PROMPT_KEYS if isinstance(record, dict) and k in record), None)
        if key is None or not isinstance(record[key], str) or not record[key].strip():
            raise CandidateError(f"{path}:{unit} {number}: needs a non-empty string 'prompt' (or 'question')")
        found.setdefault(record[key])
    if not found:
        raise CandidateError(f"{path}: no prompts")
    return list(found)


def prompt_seed(seed: int, prompt: str, attempt: int) -> int:
    """Each prompt's own seed: the output for a prompt is the same however the run was interrupted and resumed."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{attempt}\x00{prompt}".encode()).digest()[:4], "big")


def resume(out: Path) -> set[str]:
    """Prompts already in OUT; a last line cut short by a kill is cut off so appending continues cleanly."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        log.warning("%s: dropping an unfinished last line (%d bytes) before resuming", out, len(data) - keep)
        with open(out, "r+b") as f:
            f.truncate(keep)
    done = set()
    for number, line in enumerate(data[:keep].splitlines(), 1):
        try:
            done.add(json.loads(line)["prompt"])
        except (ValueError, KeyError, TypeError):
            raise CandidateError(f"{out}:{number}: not a candidates line; refusing to append to it") from None
    return done


class Sampler:
    """A causal LM and its tokenizer; `sample(prompt)` returns up to N distinct answers."""

    def __init__(self, model: str, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(model).is_dir():
            raise CandidateError(f"{model}: no such model folder (a local Hugging Face causal LM is needed)")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.args = args
        config = self.model.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)

    def _input_ids(self, prompt: str) -> Any:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(prompt)["input_ids"]
        room = max(1, self.max_positions - self.args.max_new_tokens)
        return self.torch.tensor([ids[-room:]])  # an over-long prompt keeps its end, nearest the answer

    def sample(self, prompt: str) -> list[str]:
        args, tok = self.args, self.tokenizer
        ids = self._input_ids(prompt)
        found: list[str] = []
        for attempt in range(3):  # low temperatures repeat themselves: draw again, a little, for distinct answers
            self.torch.manual_seed(prompt_seed(args.seed, prompt, attempt))
            with self.torch.no_grad():
                out = self.model.generate(
                    ids,
                    attention_mask=self.torch.ones_like(ids),
                    do_sample=True,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens,
                    num_return_sequences=args.n,
                    pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                )
            for row in out[:, ids.shape[1] :]:
                text = str(tok.decode(row, skip_special_tokens=True)).strip()
                if text and text not in found and len(found) < args.n:
                    found.append(text)
            if len(found) == args.n:
                break
        return found


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m collect.generate", description=__doc__)
    p.add_argument("--model", required=True, help="Local Hugging Face causal-LM folder (the fine-tuned model).")
    p.add_argument("--prompts", type=Path, required=True, help=".txt (one per line) or .json/.jsonl with 'prompt'.")
    p.add_argument("--out", type=Path, required=True, help="Candidates JSONL; an existing one is resumed.")
    p.add_argument("--n", type=int, default=4, help="Answers per prompt (at least 2).")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="Same seed, model and prompts: the same candidates.")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    if args.n < 2 or args.temperature <= 0 or not 0 < args.top_p <= 1 or args.max_new_tokens < 1:
        print("error: need --n >= 2, --temperature > 0, 0 < --top-p <= 1, --max-new-tokens >= 1", file=sys.stderr)
        return 2
    try:
        if not args.out.parent.is_dir():
            raise CandidateError(f"{args.out.parent}: no such folder for --out")
        prompts = read_prompts(args.prompts)
        done = resume(args.out)
        todo = [p for p in prompts if p not in done]
        log.info(
            "%d prompts, %d already in %s, %d to generate", len(prompts), len(prompts) - len(todo), args.out, len(todo)
        )
        if not todo:
            return 0
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        sampler = Sampler(args.model, args)
    except CandidateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    short = 0
    with open(args.out, "a", encoding="utf-8") as f:
        for prompt in tqdm(todo, desc="prompts", unit="prompt"):
            completions = sampler.sample(prompt)
            if len(completions) < 2:
                short += 1  # not written: a later run (other seed or temperature) can still fill it in
                continue
            f.write(json.dumps({"prompt": prompt, "completions": completions}, ensure_ascii=False) + "\n")
            f.flush()  # a kill loses at most the prompt being sampled
        os.fsync(f.fileno())
    if short:
        log.warning("%d prompts gave fewer than two distinct answers and were left out", short)
    return 0


if __name__ == "__main__":
    sys.exit(main())
