"""torch_utils.misc: the image-range conversions shared by the loop, the metrics and the tools."""

import torch

from torch_utils.misc import uint8_to_unit, unit_to_uint8


def test_uint8_to_unit_maps_0_255_to_minus_one_one_in_float32():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = uint8_to_unit(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert y.min().item() == -1 and y.max().item() == 1
    assert torch.equal(y, x.to(torch.float32) / 127.5 - 1)


def test_unit_to_uint8_inverts_it_and_clamps():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_to_uint8(uint8_to_unit(x)), x)
    assert unit_to_uint8(torch.tensor([-3.0, -1.0, 0.0, 0.999, 3.0])).tolist() == [0, 0, 128, 255, 255]
