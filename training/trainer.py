"""RewardTrainer: transformers.Trainer with pair batches, the Bradley–Terry loss and reward metrics; nothing else.

The distinct texts of a batch run through the model in one forward pass: pairs that share a prompt are batched
together and a text they share is encoded once (ranked data makes 6 pairs from 4 answers: 4 texts instead of
12). Batches are grouped by length (padding is most of the cost on CPU), and TRL's reward metrics are logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import Trainer

from models.formatting import Formatter, dedupe
from models.messages import completion_text

from .data import PreferencePair
from .inputs import pad_batch
from .loss import bradley_terry_loss, length_penalty


class PairDataset(Dataset[dict[str, Any]]):
    """Pairs tokenised once, up front, through the same Formatter the service uses, grouped by prompt."""

    def __init__(self, pairs: Sequence[PreferencePair], formatter: Formatter, objectives: Sequence[str] = ()) -> None:
        chosen = formatter.encode_many([p.prompt for p in pairs], [p.chosen for p in pairs])
        rejected = formatter.encode_many([p.prompt for p in pairs], [p.rejected for p in pairs])
        head = {name: i for i, name in enumerate(objectives)}  # the head each pair's loss goes to (multi-objective)
        self.items = [
            {
                "chosen": c,
                "rejected": r,
                "margin": p.margin or 0.0,
                "objective": head.get(p.objective, 0),
                "lengths": (len(completion_text(p.chosen)), len(completion_text(p.rejected))),  # characters
            }
            for p, c, r in zip(pairs, chosen, rejected, strict=True)
        ]
        self.distinct_texts = len(dedupe(chosen + rejected)[0])
        self.widths = [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]
        self.truncated = sum(c.truncated or r.truncated for c, r in zip(chosen, rejected, strict=True))
        by_prompt: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_prompt.setdefault(p.prompt_key, []).append(i)
        self.groups = list(by_prompt.values())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class PromptBatches(Sampler[list[int]]):
    """Batches of whole prompts (their pairs share texts), at most `batch_size` pairs unless one prompt has more.

    Like transformers' LengthGroupedSampler, but over prompt groups: shuffle the groups, cut them into mega-batches
    of ~50 batches, sort each by padded width and pack it in order, so a batch's rows pad to similar widths; then
    shuffle the batches. Every epoch has the same number of batches (the Trainer plans its steps from epoch 0):
    a plan that comes out longer merges its smallest neighbours, one that comes out shorter splits its largest.

    Under data parallelism every rank builds the same plan (same seed and epoch), with a number of batches that is
    a multiple of `world_size`, and takes every `world_size`-th batch from its `rank`: in an epoch the ranks' pairs
    are disjoint and together cover every pair once. (accelerate's own sharding would assume equal-size batches
    and repeat early ones to even out the ranks, so the loader is not handed to it.) `assigned[epoch]` records the
    pairs this rank was given, for the fit's check that the ranks covered the data.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        widths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.groups = [list(g) for g in groups]
        self.group_widths = [max(widths[i] for i in g) for g in self.groups]
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.assigned: dict[int, list[int]] = {}
        planned = len(self._pack(0))
        pairs = sum(map(len, self.groups))
        if pairs < world_size:
            raise ValueError(f"{pairs} training pairs cannot be shared by {world_size} processes")
        # A multiple of the world size: fewer batches (merged) unless that would leave a rank without one.
        self.total = max(world_size, planned - planned % world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.plan(self.epoch)
        assigned = self.assigned.setdefault(self.epoch, [])
        for batch in batches[self.rank :: self.world_size]:
            assigned.extend(batch)
            yield batch

    def plan(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of `epoch`, in the order they are dealt out."""
        batches = self._pack(epoch)
        while len(batches) > self.total:
            i = min(range(len(batches) - 1), key=lambda k: len(batches[k]) + len(batches[k + 1]))
            batches[i : i + 2] = [batches[i] + batches[i + 1]]
        while len(batches) < self.total:
            i = max(range(len(batches)), key=lambda k: len(batches[k]))
            half = len(batches[i]) // 2
            batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
        generator = torch.Generator().manual_seed(self.seed + 7919 * epoch + 1)
        return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]

    def _pack(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + 7919 * epoch)
        order = torch.randperm(len(self.groups), generator=generator).tolist()
        batches: list[list[int]] = []
        mega: list[int] = []
        pairs = 0
        for position, g in enumerate(order):
            mega.append(g)
            pairs += len(self.groups[g])
            if pairs < 50 * self.batch_size and position < len(order) - 1:
                continue
            current: list[int] = []
            for k in sorted(mega, key=lambda k: -self.group_widths[k]):
                if current and len(current) + len(self.groups[k]) > self.batch_size:
                    batches.append(current)
                    current = []
                current += self.groups[k]
            batches.append(current)
            mega, pairs = [], 0
        return batches


class EpochLoader(DataLoader):
    """A DataLoader whose `set_epoch` reaches its PromptBatches (the Trainer calls it at each epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]


def representative_batches(dataset: PairDataset, batch_size: int, seed: int = 0) -> list[list[int]]:
    """The epoch-0 batches at the median and the 90th percentile of padded tokens: what a timing probe should run,
    since tiny batches time the kernels' overheads rather than the arithmetic that dominates an epoch."""
    batches = PromptBatches(dataset.groups, dataset.widths, batch_size, seed).plan(0)
    by_tokens = sorted(batches, key=lambda b: len(b) * max(dataset.widths[i] for i in b))
    picks = {len(by_tokens) // 2, (9 * len(by_tokens)) // 10}
    return [by_tokens[k] for k in sorted(picks)]


class PairCollator:
    """A batch of B pairs -> one padded tensor of its distinct texts, where each pair's two texts sit, B margins,
    each pair's objective, and each text's completion length (for the length head)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts, rows = dedupe([f["chosen"] for f in features] + [f["rejected"] for f in features])
        batch = pad_batch(texts, self.pad_id)
        batch["chosen_row"] = torch.tensor(rows[: len(features)])
        batch["rejected_row"] = torch.tensor(rows[len(features) :])
        batch["margin"] = torch.tensor([f["margin"] for f in features], dtype=torch.float32)
        batch["objective"] = torch.tensor([f.get("objective", 0) for f in features], dtype=torch.long)
        pair_lengths = [f.get("lengths", (0, 0)) for f in features]
        lengths = torch.zeros(len(texts))
        for row, length in zip(rows, [c for c, _ in pair_lengths] + [r for _, r in pair_lengths], strict=True):
            lengths[row] = float(length)
        batch["length"] = lengths
        return batch


METRICS = ("accuracy", "margin", "rewards/chosen", "rewards/rejected")  # logged as means over the logging window


def data_parallel_report(batches: PromptBatches, pairs: int, full_epochs: Sequence[int]) -> dict[str, Any]:
    """Gather every rank's dealt-out pairs: per-rank counts, and whether each epoch in `full_epochs` (run whole in
    this process) gave every pair to exactly one rank."""
    mine = {epoch: list(indices) for epoch, indices in batches.assigned.items()}
    ranks: list[Any] = [mine]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        ranks = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(ranks, mine)
    exact = all(sorted(i for rank in ranks for i in rank.get(epoch, [])) == list(range(pairs)) for epoch in full_epochs)
    return {
        "world_size": len(ranks),
        "batches_per_rank_per_epoch": len(batches),
        "pairs_per_rank": [{str(e): len(ix) for e, ix in sorted(rank.items())} for rank in ranks],
        "full_epochs_checked": list(full_epochs),
        "each_pair_once_per_epoch": exact,
    }


class RewardTrainer(Trainer):
    """Trainer whose loss is Bradley–Terry over (chosen, rejected) rows; logs accuracy and reward margins."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        *args: Any,
        center_rewards_coefficient: float | None = None,
        length_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.center_rewards_coefficient = center_rewards_coefficient
        # > 0: the model's training-only length head takes the length preference (ODIN-style); the served
        # heads pay this weight times their squared correlation with length.
        self.length_weight = length_weight
        self._sums: dict[str, float] = {}
        self._count = 0
        self.batches: PromptBatches | None = None  # the sampler of the last train loader (data_parallel_report)

    def get_train_dataloader(self) -> DataLoader:
        """Prompt-grouped batches (PromptBatches) for pair data; anything else gets the Trainer's own loader."""
        dataset = self.train_dataset
        if not isinstance(dataset, PairDataset):
            return super().get_train_dataloader()
        args = self.args
        batches = PromptBatches(
            dataset.groups,
            dataset.widths,
            args.per_device_train_batch_size,
            args.seed,
            rank=args.process_index,
            world_size=args.world_size,
        )
        self.batches = batches
        # Not accelerator.prepare(): the sampler shards by itself (see PromptBatches); the Trainer moves each
        # batch to the device.
        return EpochLoader(
            dataset, batch_sampler=batches, collate_fn=self.data_collator, num_workers=args.dataloader_num_workers
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        margin = inputs["margin"]
        rewards = model(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids")).float()
        chosen, rejected = rewards[inputs["chosen_row"]], rewards[inputs["rejected_row"]]
        if rewards.dim() == 2:  # one head per objective: each pair's loss reads its own objective's head only
            objective = inputs["objective"].unsqueeze(1)
            chosen, rejected = chosen.gather(1, objective)[:, 0], rejected.gather(1, objective)[:, 0]
        if self.length_weight:  # the pair is judged on reward + length head; the served heads stay off length
            length_reward = self.accelerator.unwrap_model(model).length_coef * torch.log1p(inputs["length"])
            loss = bradley_terry_loss(
                chosen + length_reward[inputs["chosen_row"]],
                rejected + length_reward[inputs["rejected_row"]],
                margin,
                self.center_rewards_coefficient,
            )
            loss = loss + self.length_weight * length_penalty(rewards, inputs["length"])
        else:
            loss = bradley_terry_loss(chosen, rejected, margin, self.center_rewards_coefficient)
        if model.training:
            self._accumulate(chosen.detach(), rejected.detach())
        if return_outputs:
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}
        return loss

    def _accumulate(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        values = (
            (chosen > rejected).float().mean().item(),
            (chosen - rejected).mean().item(),
            chosen.mean().item(),
            rejected.mean().item(),
        )
        for key, value in zip(METRICS, values, strict=True):
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # every rank logs at the same steps, so the sums can be reduced across ranks here
            local = [self._sums.get(k, 0.0) for k in METRICS] + [float(self._count)]
            # NCCL reduces only tensors on the GPU: the sums go to this rank's device first.
            local_tensor = torch.tensor(local, dtype=torch.float64, device=self.args.device)
            totals = self.accelerator.reduce(local_tensor, reduction="sum").tolist()
            if totals[-1]:
                logs.update({k: round(v / totals[-1], 4) for k, v in zip(METRICS, totals, strict=False)})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        logits = torch.stack([out["rewards_chosen"], out["rewards_rejected"]], dim=1)
        return loss.detach(), logits, torch.zeros(len(logits))
