"""Maps and images as people give them and see them, without Gradio: tc.to_image, and taming_core.condition_maps'
reading of uploaded label and depth maps (grey ids, colours, photos given by mistake), fitting to the output's
shape, and the labels found."""
import numpy as np
import pytest
import torch

import taming_core as tc


def test_to_image_inverts_the_pixel_convention():
    u8 = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W) in [-1, 1]
    images = tc.to_image(x)
    assert isinstance(images, list) and len(images) == 2
    assert all(im.dtype == np.uint8 and np.array_equal(im, u8[i]) for i, im in enumerate(images))
    assert np.array_equal(tc.to_image(x[1]), u8[1])  # one image (3, H, W) -> (H, W, 3)
    grey = tc.to_image(torch.tensor([[[-1.0, 0.0, 1.0, 3.0]]]))  # (1, 1, 4): repeated to RGB, clipped
    assert grey.shape == (1, 4, 3) and grey[0, :, 0].tolist() == [0, 128, 255, 255] and (grey == grey[..., :1]).all()
    with pytest.raises(ValueError, match=r"expected images \(C, H, W\) or \(B, C, H, W\)"):
        tc.to_image(torch.zeros(4, 4))
