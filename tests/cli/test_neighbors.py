"""`barlowtwins neighbors`: the images of an embeddings file nearest (cosine) to query images, embedded with the
backbone and preprocessing the file records; a contact sheet; one-line errors."""

import pytest
from PIL import Image

from barlowtwins.cli import main


@pytest.fixture
def embeddings(run_dir, image_tree, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--output", str(out), "--workers", "0", "--device", "cpu", "--index-format", "csv"]) == 0
    capsys.readouterr()
    return out


def _neighbours(printed: str) -> dict[str, list[tuple[float, str]]]:
    found, query = {}, None
    for line in printed.splitlines():
        if not line.startswith("  ") and line.endswith(":"):
            query = line[:-1]
            found[query] = []
        elif query is not None and line.startswith("  "):
            _, score, entry = line.split(maxsplit=2)
            found[query].append((float(score), entry))
    return found


def test_an_image_of_the_file_finds_itself_first(embeddings, image_tree, capsys):
    queries = [str(image_tree / "train" / "cat" / "cat_0.jpg"), str(image_tree / "train" / "dog" / "dog_3.png")]
    assert main(["neighbors", "--embeddings", str(embeddings), "--query", *queries, "--k", "3", "--device",
                 "cpu"]) == 0
    found = _neighbours(capsys.readouterr().out)
    assert list(found) == queries
    for q, hits in found.items():
        assert len(hits) == 3 and hits[0][1] == q and hits[0][0] == pytest.approx(1.0, abs=1e-4)
        assert [s for s, _ in hits] == sorted((s for s, _ in hits), reverse=True)


def test_a_contact_sheet_has_a_row_per_query(embeddings, image_tree, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    queries = [str(image_tree / "val" / "cat" / "cat_1.png"), str(image_tree / "val" / "dog" / "dog_2.jpg")]
    assert main(["neighbors", "--embeddings", str(embeddings), "--query", *queries, "--k", "2", "--sheet",
                 str(sheet), "--device", "cpu"]) == 0
    assert f"contact sheet: {sheet}" in capsys.readouterr().out
    with Image.open(sheet) as img:
        assert img.width > img.height > 0  # 2 rows of 3 tiles (query + 2 neighbours)


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be at least 1, got 0"),
    (["--query", "{tmp}/nope.jpg"], "query image {tmp}/nope.jpg does not exist"),
    (["--embeddings", "{tmp}/none.npy"], "embeddings file {tmp}/none.npy does not exist"),
    (["--sheet", "{tmp}/junk/s.png"], "{tmp}/junk is a file, not a folder"),
])
def test_bad_input_is_one_line_exit_2(embeddings, image_tree, tmp_path, capsys, args, message):
    (tmp_path / "junk").write_text("a file")
    base = {"--embeddings": str(embeddings), "--query": str(image_tree / "val" / "cat" / "cat_0.jpg")}
    given = [a.format(tmp=tmp_path) for a in args]
    for flag, value in base.items():
        if flag not in given:
            given += [flag, value]
    assert main(["neighbors", *given, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins neighbors: error: ") and message.format(tmp=tmp_path) in err, err
    assert len(err.splitlines()) == 1
