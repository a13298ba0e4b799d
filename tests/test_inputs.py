"""Bad input gets a clear error naming the problem, never an obscure crash."""
import pytest
import torch

import taming_core as tc
from conftest import tiny_net2net_config, tiny_vqgan_config


@pytest.fixture(scope="module")
def vqgan():
    return tc.build_model(tiny_vqgan_config()).eval()


@pytest.fixture(scope="module")
def seg_model():
    return tc.build_model(tiny_net2net_config("segmentation", n_labels=5)).eval()


def test_image_dtype_range_channels_and_size(vqgan):
    with pytest.raises(TypeError, match="uint8"):
        vqgan.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*255"):
        vqgan.encode(torch.full((1, 3, 16, 16), 255.0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 16, 16\)"):
        vqgan.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="multiples of the downsampling factor 2.*17x16"):
        vqgan.encode(torch.zeros(1, 3, 17, 16))
    with pytest.raises(ValueError, match="range"):
        vqgan.encode(torch.full((1, 3, 16, 16), float("nan")))


def test_indices_outside_codebook(vqgan):
    with pytest.raises(ValueError, match=r"\[0, 32\).*40"):
        vqgan.decode_indices(torch.full((1, 4, 4), 40))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        vqgan.decode_indices(torch.zeros(16, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        vqgan.decode_indices(torch.zeros(1, 4, 4))


def test_conditions(seg_model):
    with pytest.raises(ValueError, match=r"label ids \[7\] are unknown.*5 labels"):
        seg_model.encode_cond(torch.full((1, 16, 16), 7))
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        seg_model.encode_cond(torch.zeros(1, 6, 16, 16))
    with pytest.raises(ValueError, match="pass a condition"):
        seg_model.encode_cond(None)
    cls = tc.build_model(tiny_net2net_config("class")).eval()
    assert cls.encode_cond(torch.tensor([3, 4])).tolist() == [[3], [4]]
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cls.encode_cond(torch.tensor([10]))
    uncond = tc.build_model(tiny_net2net_config("none")).eval()
    assert uncond.encode_cond(None).tolist() == [[0]]
    assert uncond.encode_cond(3).shape == (3, 1)


def test_coco_stuff_unlabelled_255_maps_to_channel_zero():
    cfg = tiny_net2net_config("segmentation", n_labels=183)
    model = tc.build_model(cfg).eval()
    labels = torch.tensor([[[255, 0], [181, 5]]])
    onehot = model.conditioner.labels_to_onehot(labels)
    assert onehot.shape == (1, 183, 2, 2)
    assert onehot.argmax(1).tolist() == [[[0, 1], [182, 6]]]


def test_tokens_and_lengths(seg_model):
    c = torch.zeros(1, 64, dtype=torch.long)
    with pytest.raises(ValueError, match="block_size 128"):
        tc.sample(seg_model, c, 100)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 32\)"):
        seg_model(torch.full((1, 64), 99), c)
    with pytest.raises(ValueError, match="tokens \\(B, 64\\)"):
        seg_model.decode_indices(torch.zeros(1, 60, dtype=torch.long))
    with pytest.raises(ValueError, match="eval mode"):
        tc.sample(seg_model.train(), c, 4)
    seg_model.eval()


def test_maps_of_another_shape_are_cropped_padded_or_left_to_stretch():
    import numpy as np
    from taming_core.condition_maps import fit_aspect

    a = np.arange(4 * 8).reshape(4, 8)  # wide
    assert np.array_equal(fit_aspect(a, (16, 16), "crop"), a[:, 2:6])  # the centre square
    padded = fit_aspect(a, (16, 16), "pad", 255)
    assert padded.shape == (8, 8) and (padded[:2] == 255).all() and (padded[6:] == 255).all()
    assert np.array_equal(padded[2:6], a)
    assert fit_aspect(a, (16, 16), "stretch") is a and fit_aspect(a, (8, 16), "crop") is a  # same aspect: as is
    tall = np.zeros((9, 3, 3), np.uint8)
    tall[..., 0] = 7
    assert fit_aspect(tall, (10, 20), "crop").shape == (2, 3, 3)  # height = 3 / 2 rounded
    assert (fit_aspect(tall, (10, 10), "pad")[:, 0] == [7, 0, 0]).all()  # fill: the border's median tone
    with pytest.raises(ValueError, match="crop, pad, stretch"):
        fit_aspect(a, (4, 4), "squash")


def test_photos_of_any_mode_become_rgb_and_grey_alike():
    import numpy as np
    from taming_core.condition_maps import rgb_of, to_grey

    grey16 = np.full((2, 3), 0x8000, np.uint16)
    assert rgb_of(grey16).shape == (2, 3, 3) and (rgb_of(grey16) == 128).all() and (to_grey(grey16) == 128).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque; the other pixels fully transparent: white paper
    assert rgb_of(rgba)[0, 0].tolist() == [10, 20, 30] and (rgb_of(rgba)[1, 1] == 255).all()
    assert to_grey(rgba)[1, 1] == 255 and to_grey(rgba[..., :1])[0, 0] == 10
    with pytest.raises(ValueError, match="expected an image"):
        rgb_of(np.zeros((2, 2, 2), np.uint8))
