"""Prompt-grouped batches: shared texts run once, the loss and gradients equal pair-by-pair, every pair once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import TrainingArguments

from models.formatting import Formatter
from training.data import PreferencePair
from training.loss import bradley_terry_loss
from training.model import RewardModel, disable_dropout, load_backbone
from training.tokens import format_spec
from training.trainer import PairCollator, PairDataset, PromptBatches, RewardTrainer, pad_batch


def ranked_pairs() -> list[PreferencePair]:
    """One prompt with four ranked answers (6 pairs from 4 texts), plus two pairs with prompts of their own."""
    answers = ["a careful, correct answer", "a fine answer", "a vague answer", "a rude, wrong answer"]
    ranked = [
        PreferencePair("Explain tides.", better, worse, margin=0.5 * (j - i))
        for (i, better), (j, worse) in itertools.combinations(enumerate(answers), 2)
    ]
    return [
        PreferencePair("Name a river.", "The Nile.", "Bread."),
        *ranked,
        PreferencePair("What is 2+2?", "4", "5, probably"),
    ]


@pytest.fixture
def setup(tiny_bert: Path, tmp_path: Path) -> tuple[RewardModel, PairDataset, RewardTrainer]:
    torch.manual_seed(0)
    backbone, tokenizer, architecture = load_backbone(str(tiny_bert))
    disable_dropout(backbone)  # the fit's default; with dropout no two forward passes agree
    model = RewardModel(backbone, architecture, "completion-mean")
    spec = format_spec(tokenizer, architecture, 64)
    dataset = PairDataset(ranked_pairs(), Formatter(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), spec))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=8)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, data_collator=PairCollator(0))
    return model, dataset, trainer


def test_shared_texts_run_once_with_the_same_loss_and_gradients(
    setup: tuple[RewardModel, PairDataset, RewardTrainer],
) -> None:
    model, dataset, trainer = setup
    assert len(dataset) == 8 and dataset.distinct_texts == 4 + 2 + 2
    features = [dataset[i] for i in range(len(dataset))]
    batch = PairCollator(0)(features)
    assert batch["input_ids"].shape[0] == 8  # 16 texts in the pairs, 8 distinct

    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grouped = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    # Reference: every pair's two texts run separately, as a pair-at-a-time trainer would.
    pad = pad_batch([f["chosen"] for f in features] + [f["rejected"] for f in features], 0)
    rewards = model(pad["input_ids"], pad["attention_mask"], pad["token_type_ids"])
    margins = torch.tensor([f["margin"] for f in features])
    reference = bradley_terry_loss(rewards[:8], rewards[8:], margins)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    for name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(grouped[name], param.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_trainer_batches_whole_prompts(setup: tuple[RewardModel, PairDataset, RewardTrainer]) -> None:
    _, dataset, trainer = setup
    loader = trainer.get_train_dataloader()
    rows = [b["input_ids"].shape[0] for b in loader]
    assert sum(rows) == dataset.distinct_texts  # no text ran twice in the epoch


def _groups(sizes: list[int]) -> list[list[int]]:
    starts = list(itertools.accumulate([0, *sizes]))
    return [list(range(a, b)) for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_prompt_batches_cover_every_pair_once_per_epoch_in_whole_groups(batch_size: int) -> None:
    rng = torch.Generator().manual_seed(1)
    sizes = [*torch.randint(1, 7, (300,), generator=rng).tolist(), 10, 12]
    groups = _groups(sizes)
    widths = torch.randint(8, 256, (sum(sizes),), generator=rng).tolist()
    sampler = PromptBatches(groups, widths, batch_size, seed=3)
    owner = {i: g for g, members in enumerate(groups) for i in members}
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the Trainer plans its steps from len()
        assert sorted(i for b in batches for i in b) == list(range(sum(sizes)))
        # Several prompts share a batch only within the cap, and a prompt's pairs share one batch; the few
        # exceptions come from keeping the number of batches fixed (merging or splitting at the end).
        over_cap = sum(len(b) > batch_size and len({owner[i] for i in b}) > 1 for b in batches)
        split = sum(any(set(groups[owner[i]]) - set(b) for i in b) for b in batches)
        assert over_cap + split <= max(2, 0.05 * len(batches))
        epochs.append(batches)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # and reproducibly (resume replays the same order)
