"""`make_jpeg_folder`: synthetic photo-like JPEGs of sizes drawn from a range, the same for a seed, and the files
already there kept (a second run reuses them)."""

from PIL import Image

from barlowtwins.bench import make_jpeg_folder


def test_the_files_are_jpegs_of_sizes_in_the_range(tmp_path):
    folder = make_jpeg_folder(tmp_path / "j", 6, (30, 50))
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"img_{i:06d}.jpg" for i in range(6)]
    sizes = set()
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 30 <= img.width <= 50 and 30 <= img.height <= 50
            sizes.add(img.size)
    assert len(sizes) > 1  # mixed sizes, as a real folder


def test_a_seed_gives_the_same_images_and_another_other_ones(tmp_path):
    a = make_jpeg_folder(tmp_path / "a", 3, (20, 40), seed=1)
    b = make_jpeg_folder(tmp_path / "b", 3, (20, 40), seed=1)
    c = make_jpeg_folder(tmp_path / "c", 3, (20, 40), seed=2)
    for name in ("img_000000.jpg", "img_000002.jpg"):
        assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()


def test_files_already_there_are_kept_and_the_rest_written(tmp_path):
    folder = make_jpeg_folder(tmp_path / "j", 2, (20, 30))
    (folder / "img_000000.jpg").write_bytes(b"kept as it is")
    make_jpeg_folder(folder, 4, (20, 30))
    assert (folder / "img_000000.jpg").read_bytes() == b"kept as it is"
    assert len(list(folder.glob("img_*.jpg"))) == 4 and not list(folder.glob(".*"))  # no temporary left
