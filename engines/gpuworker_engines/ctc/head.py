"""The CTC output head, grown when a vocabulary gains letters."""
import torch


def grow_head(model, vocab_size: int) -> None:
    """New output rows for new letters; the old rows (and their ids) stay as trained."""
    old = model.lm_head
    if old.out_features >= vocab_size:
        return
    new = torch.nn.Linear(old.in_features, vocab_size)
    with torch.no_grad():
        new.weight[:old.out_features] = old.weight
        new.bias[:old.out_features] = old.bias
    model.lm_head = new
    model.config.vocab_size = vocab_size
