"""Progressive resolution: the view size as a pure function of the step, and its augmentation configs."""

import pickle

import pytest
from conftest import says_both

from barlowtwins import PretrainConfig, pretrain
from barlowtwins.errors import ConfigError
from barlowtwins.transforms.progressive import (
    ViewSizes,
    check_progressive_epochs,
    check_progressive_start,
    size_multiple,
)
from barlowtwins.transforms.spec import augment_config, blur_kernel_for


def test_sizes_grow_by_epoch_in_multiples_and_end_at_the_image_size():
    sizes = ViewSizes(augment_config(224), start=128, ramp_epochs=4, steps_per_epoch=10)
    assert [sizes.size(e * 10) for e in range(6)] == [128, 152, 176, 200, 224, 224]
    assert sizes.size(9) == 128 and sizes.size(10) == 152  # changes only at an epoch boundary
    assert all(sizes.size(s) % size_multiple(224) == 0 for s in range(60))
    assert sizes.sizes() == [128, 152, 176, 200, 224]


def test_small_images_step_by_four_and_never_go_below_the_start():
    sizes = ViewSizes(augment_config(28), start=18, ramp_epochs=3, steps_per_epoch=5)
    assert sizes.sizes() == [18, 20, 24, 28]  # 18 + 10/3 rounded down to a multiple of 4 would be 20
    assert ViewSizes(augment_config(28), start=28, ramp_epochs=3, steps_per_epoch=5).sizes() == [28]
    assert ViewSizes(augment_config(28), start=16, ramp_epochs=0, steps_per_epoch=5).size(0) == 28


def test_configs_change_only_the_size_and_the_derived_blur_kernel():
    full = augment_config(224)
    sizes = ViewSizes(full, start=96, ramp_epochs=2, steps_per_epoch=3)
    small = sizes.at(0)
    assert small.image_size == 96 and small.blur_kernel == blur_kernel_for(96)
    assert small.crop_scale == full.crop_scale and small.jitter_p == full.jitter_p
    assert sizes.at(0) is small and sizes.at(100) is full  # cached; the full config from the end of the ramp
    fixed = augment_config(224, blur_kernel=9)
    assert ViewSizes(fixed, start=96, ramp_epochs=2, steps_per_epoch=3).at(0).blur_kernel == 9  # set by the user


def test_picklable_for_loader_workers():
    sizes = ViewSizes(augment_config(64), start=32, ramp_epochs=2, steps_per_epoch=4)
    again = pickle.loads(pickle.dumps(sizes))
    assert [again.size(s) for s in range(12)] == [sizes.size(s) for s in range(12)]


def test_a_start_above_the_image_size_is_refused():
    with pytest.raises(ValueError, match="start size"):
        ViewSizes(augment_config(28), start=32, ramp_epochs=2, steps_per_epoch=4)


def test_a_start_off_the_step_of_the_sizes_is_refused_naming_the_nearest_valid_starts():
    for start, image_size, message in [
        (3, 32, "--progressive-start 3 is not a multiple of 4: the view sizes grow in steps of 4 px at --image-size 32 "
                "(8 px above 64); use 4"),
        (13, 32, "use 12 or 16"),
        (100, 224, "--progressive-start 100 is not a multiple of 8: the view sizes grow in steps of 8 px at "
                   "--image-size 224 (4 px at 64 and below); use 96 or 104"),
        (70, 72, "use 64"),  # 72 would be the image size itself: no growth
    ]:
        with pytest.raises(ConfigError) as e:
            check_progressive_start(start, image_size)
        says_both(e.value, message)
    for start, image_size in [(0, 32), (4, 32), (16, 28), (96, 224), (64, 72), (28, 28), (30, 30)]:
        check_progressive_start(start, image_size)  # 0: off; the image size itself: no growth, as before


@pytest.mark.parametrize("start,epochs,message", [
    (16, 0, "--progressive-start 16 needs --progressive-epochs"),
    (0, 3, "--progressive-epochs 3 needs --progressive-start"),
    (0, 0.5, "--progressive-epochs 0.5 needs --progressive-start"),
])
def test_a_start_without_epochs_or_epochs_without_a_start_is_refused(start, epochs, message):
    with pytest.raises(ConfigError) as e:
        check_progressive_epochs(start, epochs)
    says_both(e.value, message)
    check_progressive_epochs(0, 0)
    check_progressive_epochs(16, 2)


def test_pretrain_refuses_a_start_off_the_step_before_the_run_folder(tmp_path):
    cfg = PretrainConfig(dataset="images", data_dir=str(tmp_path / "no-data"), out=str(tmp_path / "run"),
                         image_size=32, progressive_start=3, progressive_epochs=2, device="cpu")
    with pytest.raises(ConfigError, match="progressive_start 3 is not a multiple of 4"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()
