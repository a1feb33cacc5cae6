"""--freeze-layers / --freeze-embeddings: frozen weights stay put through a real optimizer step, the rest move."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.model import freeze_lower, layers_to_freeze, load_backbone, transformer_layers


def _step(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One AdamW step on a reward-like loss; returns the weights from before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(5, 300, (2, 12))
    mask = torch.ones_like(ids)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    (-torch.nn.functional.logsigmoid(logits[0] - logits[1])).backward()
    optimizer.step()
    return before


@pytest.mark.parametrize("family", ["tiny_bert", "tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize(("layers", "embeddings"), [(1, False), (0, True)])
def test_frozen_weights_do_not_move(family: str, layers: int, embeddings: bool, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(family)
    model, _, _ = load_backbone(str(path))
    total = sum(p.numel() for p in model.parameters())
    trainable = freeze_lower(model, layers, embeddings)
    assert 0 < trainable < total
    before = _step(model)
    frozen = {id(p) for block in transformer_layers(model)[:layers] for p in block.parameters()}
    frozen |= {id(p) for p in model.get_input_embeddings().parameters()}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for name, param in model.named_parameters():
        if id(param) in frozen:
            assert name not in moved, name
    top = transformer_layers(model)[-1]
    assert any(n in moved for n, p in model.named_parameters() if any(p is q for q in top.parameters()))


def test_freezing_more_layers_than_the_backbone_has_is_refused(tiny_bert: Path) -> None:
    model, _, _ = load_backbone(str(tiny_bert))
    with pytest.raises(ValueError, match="only 2 layers"):
        freeze_lower(model, 3, False)
    with pytest.raises(ValueError, match="0 or more"):
        freeze_lower(model, -1, False)


@pytest.mark.parametrize("family", ["tiny_bert", "tiny_llama", "tiny_gpt2"])
def test_half_means_the_lower_half(family: str, request: pytest.FixtureRequest) -> None:
    model, _, _ = load_backbone(str(request.getfixturevalue(family)))
    assert layers_to_freeze(model, "half") == len(transformer_layers(model)) // 2 == 1
    assert layers_to_freeze(model, "0") == 0
    assert layers_to_freeze(model, "1/2") == 1 and layers_to_freeze(model, "2/3") == 1
    assert layers_to_freeze(model, "1/1") == 2 and layers_to_freeze(model, "0/3") == 0
    for bad in ("most", "3/2", "1/0", "-1/2", "a/b", "1/2/3"):
        with pytest.raises(ValueError, match="a number of layers, a share such as '2/3', or 'half'"):
            layers_to_freeze(model, bad)
