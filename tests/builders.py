"""Tiny real backbones and synthetic preference data for tests (built locally, nothing from a hub)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

GOOD = ["glad", "helpful", "clear", "kind", "correct", "thanks", "sure", "great", "careful", "precise"]
BAD = ["awful", "wrong", "rude", "useless", "lazy", "nonsense", "broken", "hate", "junk", "garbage"]
BOOM = "[BOOM]"  # a token the faulty test bundle's tokenizer knows and its model does not
TOPICS = ["bread", "rivers", "python", "taxes", "stars", "gardens", "trains", "music", "chess", "tea", "maps", "sleep"]


def synthetic_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Trivially separable pairs: the chosen answer uses friendly words, the rejected one hostile words.

    Lengths vary independently of the label, so a length heuristic cannot solve them.
    """
    rng = random.Random(seed)
    records = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        prompt = f"Question {i}: tell me something about {topic}."
        good = " ".join(rng.choice(GOOD) for _ in range(rng.randint(2, 9)))
        bad = " ".join(rng.choice(BAD) for _ in range(rng.randint(2, 9)))
        records.append({"prompt": prompt, "chosen": f"{topic} is {good}.", "rejected": f"{topic} is {bad}."})
    return records


def pick_batch(
    lengths: list[int], anchor: int, max_batch_tokens: int, max_batch_size: int, max_padding: float
) -> list[int]:
    """The batch around `lengths[anchor]` re-planned from scratch (sort everything, grow the window): the reference
    the batch queue's incremental bookkeeping must reproduce."""
    from models.batching import grow_window

    keys = sorted((n, i) for i, n in enumerate(lengths))
    lo, hi = grow_window(keys, keys.index((lengths[anchor], anchor)), max_batch_tokens, max_batch_size, max_padding)
    return [i for _, i in keys[lo : hi + 1]]


def tiny_fit_argv(base: Path, data: Path, out: Path, **flags: object) -> list[str]:
    """`training.fit` flags for a fast fit of a tiny backbone; `flags` override (True = bare flag, False = no-)."""
    options: dict[str, object] = {
        "epochs": 6,
        "lr": 3e-3,
        "batch_size": 16,
        "max_length": 64,
        "eval_fraction": 0.25,
        "save_steps": 1000,
        "logging_steps": 5,
        "bf16": "off",
        "plot": False,
        "calibration_pairs": 32,
    } | flags
    argv = ["--base", str(base), "--data", str(data), "--out", str(out)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + name.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def rewrite_bundle(src: Path, out: Path, files: dict[str, Path] | None = None, **meta: Any) -> Path:
    """A copy of the bundle at `src` with some `files` replaced (bundle name -> path) and metadata fields changed,
    written (and hashed) by the real writer: the one way tests make altered bundles."""
    import dataclasses

    from models.bundle import MODEL_FILES, TOKENIZER_FILE, read_bundle, write_bundle

    bundle = read_bundle(src)
    new_meta = dataclasses.replace(bundle.meta, **meta)
    names = [TOKENIZER_FILE, *(MODEL_FILES[p] for p in new_meta.precisions)]
    sources = {name: bundle.path / name for name in names} | (files or {})
    return write_bundle(out, new_meta, sources).path


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_tiny_bert(path: Path, tokenizer_source: str) -> Path:
    """A 2-layer, 32-wide BERT with a real WordPiece tokenizer (all-MiniLM-L6-v2's)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def bpe_tokenizer(add_bos: bool) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [" ".join(GOOD + BAD + TOPICS), "Question tell me something about is the a of and to Human Assistant"]
    tok.train_from_iterator(corpus * 20, trainer)
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    return tok


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_chatml_tokenizer(path: Path) -> Any:
    """A byte-level BPE tokenizer with ChatML specials and template, as Qwen-style policies have: decoding its ids
    with the specials kept gives back the text exactly."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(GOOD + BAD + TOPICS), "Question tell me something about is the a of and to user assistant"]
    tok.train_from_iterator(corpus * 20, trainer)
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(path)
    return fast


def make_tiny_decoder(path: Path, family: str) -> Path:
    """A 2-layer decoder: `llama` (chat template, no pad token) or `gpt2` (no template, plain concatenation)."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe_tokenizer(add_bos=family == "gpt2"), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    if family == "llama":
        tok.chat_template = CHAT_TEMPLATE
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            num_labels=1,
        )
        model: Any = LlamaForSequenceClassification(config)
    elif family == "gpt2":
        config = GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=256,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            num_labels=1,
        )
        model = GPT2ForSequenceClassification(config)
    else:
        raise ValueError(family)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_lm(path: Path, family: str, chat: bool | None = None) -> Path:
    """A randomly initialised 2-layer causal LM (a policy) with a real BPE tokenizer: `gpt2` or `llama`; with a chat
    template when `chat` (default: llama only)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe_tokenizer(add_bos=family == "gpt2"), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat if chat is not None else family == "llama":
        tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model: Any
    if family == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tok),
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=128,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tok),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=128,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
            )
        )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
