"""Tiny randomly initialised reward models of every family the export supports, saved with real tokenizers and the
chat templates of their families (built locally: nothing from a hub), and each family's documented scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders import BAD, GOOD, TOPICS

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
)
# The templates of instruction-tuned models that refuse some conversations with raise_exception, as published in their
# tokenizer_config.json: Gemma-it (no system turn; roles must alternate), Mistral-7B-Instruct-v0.1 (user and assistant
# only, alternating), Llama-2-chat (a leading system turn is folded into the first user turn; roles must alternate).
GEMMA_IT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
MISTRAL_INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
# family: (special tokens, bos, eos, pad, chat template)
DECODERS: dict[str, tuple[list[str], str | None, str, str | None, str | None]] = {
    "llama": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[PAD]"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        "[PAD]",
        LLAMA3_TEMPLATE,
    ),
    "qwen2": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None, "<|im_end|>", "<|endoftext|>", CHATML_TEMPLATE),
    "qwen3": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None, "<|im_end|>", "<|endoftext|>", CHATML_TEMPLATE),
    "mistral": (["<s>", "</s>"], "<s>", "</s>", None, MISTRAL_TEMPLATE),  # no pad id: read at the last token
    "gemma": (
        ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        "<pad>",
        GEMMA_TEMPLATE,
    ),
    "gemma2": (
        ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        "<pad>",
        GEMMA_TEMPLATE,
    ),
    "gpt2": (["<|endoftext|>"], None, "<|endoftext|>", "<|endoftext|>", None),  # pad == eos, no template
}
ENCODERS = ("bert", "deberta-v2", "roberta")
FAMILIES = (*ENCODERS, *DECODERS)


def byte_bpe(specials: list[str]) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Specials first, so they get the lowest ids (RoBERTa's pad id must also index its position table).
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[AddedToken(t, special=True) for t in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(GOOD + BAD + TOPICS), "Question tell me something about is the a of and to user assistant"]
    tok.train_from_iterator(corpus * 20, trainer)
    return tok


def _roberta_tokenizer() -> Any:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = byte_bpe(["<s>", "</s>", "<pad>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        sep_token="</s>",
        cls_token="<s>",
    )


def make_reward_model(path: Path, family: str, minilm: str, template: str | None = None) -> Path:
    """A 2-layer, 32-wide `family` reward model (num_labels=1) with its tokenizer, saved to `path` (a decoder with its
    family's chat template, or `template`)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 1}
    if family in ENCODERS:
        tok = _roberta_tokenizer() if family == "roberta" else tf.AutoTokenizer.from_pretrained(minilm)
        kwargs = small | {
            "vocab_size": len(tok),
            "hidden_size": 32,
            "max_position_embeddings": 130,
            "pad_token_id": tok.pad_token_id,
        }
        if family == "bert":
            model: Any = tf.BertForSequenceClassification(tf.BertConfig(**kwargs))
        elif family == "roberta":
            kwargs |= {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "type_vocab_size": 1}
            model = tf.RobertaForSequenceClassification(tf.RobertaConfig(**kwargs))
        else:
            model = tf.DebertaV2ForSequenceClassification(
                tf.DebertaV2Config(
                    **kwargs,
                    pooler_hidden_size=32,
                    relative_attention=True,
                    position_buckets=16,
                    pos_att_type=["p2c", "c2p"],
                    max_relative_positions=64,
                )
            )
    else:
        specials, bos, eos, pad, chat_template = DECODERS[family]
        tok = tf.PreTrainedTokenizerFast(
            tokenizer_object=byte_bpe(specials), bos_token=bos, eos_token=eos, pad_token=pad
        )
        tok.chat_template = chat_template if template is None else template
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
        common = small | ids | {"vocab_size": len(tok), "hidden_size": 32, "max_position_embeddings": 256}
        if family == "gpt2":
            config: Any = tf.GPT2Config(
                vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256, num_labels=1, **ids
            )
        else:
            classes = {
                "llama": tf.LlamaConfig,
                "qwen2": tf.Qwen2Config,
                "qwen3": tf.Qwen3Config,
                "mistral": tf.MistralConfig,
                "gemma": tf.GemmaConfig,
                "gemma2": tf.Gemma2Config,
            }
            config = classes[family](**common, num_key_value_heads=2, head_dim=8)
        model = tf.AutoModelForSequenceClassification.from_config(config)
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def documented_score(model: Any, tokenizer: Any, family: str, prompt: str, completion: str, append_eos: bool) -> float:
    """The model card's usage: a text pair for encoders; the chat template, tokenised by apply_chat_template, for
    decoders that have one; prompt + completion (+ EOS for TRL-style plain text) otherwise."""
    import torch

    with torch.no_grad():
        if family in ENCODERS:
            inputs = tokenizer(prompt, completion, return_tensors="pt")
        elif tokenizer.chat_template:
            conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            inputs = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
        else:
            inputs = tokenizer(prompt + completion + (tokenizer.eos_token if append_eos else ""), return_tensors="pt")
        return float(model(**inputs).logits[0, 0])
