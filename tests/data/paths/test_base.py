"""`DataPath`, the contract every pretraining data path keeps: steps per epoch, the global positions of a rank's
samples, the view sizes of progressive resolution, the views per sample with multi-crop, and unreadable files
noted once (a warning line, or the command's list)."""

import pytest
import torch

from barlowtwins.data.bad_files import collect_bad_files
from barlowtwins.data.paths.base import DataPath
from barlowtwins.transforms.multicrop import MultiCrop
from barlowtwins.transforms.progressive import ViewSizes
from barlowtwins.transforms.spec import augment_config

CPU = torch.device("cpu")


def path(n=50, batch_size=4, rank=0, world=1, workers=0, aug=None) -> DataPath:
    return DataPath(list(range(n)), aug or augment_config(24), batch_size=batch_size, seed=0, rank=rank, world=world,
                    device=CPU, workers=workers, strict=False)


def test_an_epoch_has_the_complete_global_batches_only():
    assert len(path(50, batch_size=4)) == 12  # 50 // 4: the last 2 samples are dropped
    assert len(path(50, batch_size=4, world=3)) == 4  # 50 // 12
    assert len(path(7, batch_size=4, world=2)) == 0


def test_rank_r_holds_slice_r_of_the_global_batch():
    assert path(rank=0, world=3).positions(4).tolist() == [0, 1, 2, 3]
    assert path(rank=2, world=3).positions(4).tolist() == [8, 9, 10, 11]


def test_the_view_size_follows_progressive_resolution():
    aug = augment_config(32)
    p = path(aug=aug)
    assert p.aug_at(0) is aug and p.image_size(1000) == 32  # off: the configured views at every step
    p.sizes = ViewSizes(aug, 16, 2, len(p))
    assert [p.image_size(e * len(p)) for e in range(3)] == [16, 24, 32]
    assert p.aug_at(2 * len(p)).image_size == 32


def test_views_per_sample_count_the_small_crops_of_multi_crop():
    p = path()
    assert p.num_views == 2
    p.multicrop = MultiCrop(count=4, size=12, scale=(0.1, 0.4))
    assert p.num_views == 6


def test_workers_default_to_the_per_process_choice_and_nothing_is_skipped_at_first():
    p = path(workers=None)
    assert isinstance(p.workers, int) and p.workers >= 0
    assert p.metrics() == {"skipped_files": 0} and p.batch_bytes() is None


def test_an_unreadable_file_is_warned_about_once(capsys):
    p = path()
    p._note_skips(["a.jpg\tcannot be decoded (truncated)", "a.jpg\tcannot be decoded (truncated)", ""])
    p._note_skips(["b.png\tnot an image"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "skipping unreadable image a.jpg (cannot be decoded (truncated))" in err[0]
    assert "--strict-data" in err[0] and "b.png" in err[1]
    assert p.skipped == {"a.jpg": "cannot be decoded (truncated)", "b.png": "not an image"}
    assert p.metrics() == {"skipped_files": 2}


def test_under_a_command_the_files_go_to_its_list_not_to_warnings(capsys):
    p = path()
    with collect_bad_files() as bad:
        p._note_skips(["a.jpg\tfile is truncated"])
    assert capsys.readouterr().err == ""
    assert bad.as_list() == [{"file": "a.jpg", "reason": "truncated"}]


def test_the_base_class_leaves_batches_and_views_to_each_path():
    p = path()
    with pytest.raises(NotImplementedError):
        next(iter(p.epoch(0)))
    with pytest.raises(NotImplementedError):
        p.views(None, 0)
    p.close()  # nothing to release
