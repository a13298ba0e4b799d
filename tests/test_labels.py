"""Label spaces: the ids, names and colours of COCO-Stuff (with and without unlabelled), ADE20K and others."""
import numpy as np
import pytest

import taming_core as tc

L = tc.labels


@pytest.mark.parametrize("n, offset, space", [(183, 1, L.COCO_STUFF_UNLABELLED), (182, 0, L.COCO_STUFF_182),
                                              (151, 0, L.ADE20K_151)])
def test_known_label_counts_get_their_space(n, offset, space):
    assert L.label_space(n, offset) is space
    # every raw id the space names is one the model's conditioner reads (channel (id + offset) % 256 < n)
    assert sorted((i + offset) % 256 for i in space.ids) == list(range(n))


def test_every_label_of_a_space_has_its_own_colour_and_snaps_back():
    for space in (L.COCO_STUFF_UNLABELLED, L.COCO_STUFF_182, L.ADE20K_151, L.label_space(40), L.label_space(250)):
        colours = space.colours[space.ids]
        assert len({tuple(c) for c in colours.tolist()}) == len(space.ids), space.name
        ids = np.array(space.ids)[None]  # (1, n): every label once
        assert np.array_equal(space.snap(space.colourise(ids)), ids), space.name


def test_ade20k_names_and_the_painter():
    ade = L.ADE20K_151
    assert ade.names[0] == "other" and ade.names[3] == "sky" and ade.names[150] == "flag"
    assert ade.unlabelled == 0 and ade.painter[-1] == "other" and "sky" in ade.painter
    # labels that mean the same are painted alike in both spaces
    assert tuple(ade.colours[ade.id("sky")]) == tuple(L.coco_stuff_colours()[L.label_id("sky-other")])
    assert tuple(ade.colours[0]) == L.UNLABELLED_COLOUR
    with pytest.raises(ValueError, match="unknown ADE20K label"):
        ade.id("sky-other")


def test_coco_without_unlabelled_has_no_unlabelled_and_keeps_the_colours():
    coco = L.COCO_STUFF_182
    assert coco.unlabelled is None and "unlabelled" not in coco.painter and L.UNLABELLED not in coco.names
    assert np.array_equal(coco.colours[:182], L.coco_stuff_colours()[:182])


def test_generic_spaces_name_their_ids():
    plain = L.label_space(5)
    assert plain.names == {i: f"label {i}" for i in range(5)} and plain.unlabelled is None
    shifted = L.label_space(5, 1)  # channel 0 = raw 255, as COCO-Stuff's unlabelled
    assert shifted.unlabelled == 255 and sorted(shifted.names) == [0, 1, 2, 3, 255]
    assert "0..3, 255 = unlabelled" in shifted.grey
    with pytest.raises(ValueError, match="8-bit"):
        L.label_space(300)


def test_coco_maps_become_ade20k_maps_of_the_same_things():
    coco = np.array([[L.label_id("sky-other"), L.label_id("clouds"), L.label_id("tree"), L.UNLABELLED,
                      L.label_id("snow"), L.label_id("sea")]])
    ade = L.from_coco_stuff(coco, L.ADE20K_151)
    assert [L.ADE20K[i] for i in ade[0]] == ["sky", "sky", "tree", "other", "other", "sea"]
    assert np.array_equal(L.from_coco_stuff(coco, L.COCO_STUFF_182), coco)
    with pytest.raises(ValueError, match="no counterparts"):
        L.from_coco_stuff(coco, L.label_space(5))


def test_imagenet_class_names():
    names = L.imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[980] == "volcano" and names[999] == "toilet tissue"
