import pytest
import torch
import torch.nn.functional as F
from tiny import ARCHS, make_model
from torch.testing import assert_close

from solo_cli.loss import causal_lm_loss


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_on_trained_positions_equals_the_full_logits_loss(arch):
    model = make_model(arch)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100  # a masked prompt
    labels[1, 7:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    loss, count = causal_lm_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, label_smoothing=0.1)
    logits = model(ids, attention_mask=mask).logits[:, :-1]
    expected = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    assert count == int((labels[:, 1:] != -100).sum())
    assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_vocabulary_projection_runs_only_on_trained_positions():
    model = make_model("llama")
    rows = []
    model.lm_head.register_forward_hook(lambda m, a, o: rows.append(a[0].shape))
    ids = torch.randint(3, 300, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 8:] = ids[:, 8:]
    causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    assert rows == [torch.Size([4, 32])]  # 2 rows x 2 trained targets, not 2 x 9 positions
