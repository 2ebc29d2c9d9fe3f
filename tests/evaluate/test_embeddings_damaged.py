"""`barlowtwins neighbors` on a damaged embeddings file (.npy, .meta.json, index): one line and exit 2, never a
traceback, and nothing allocated from an unchecked number (a meta.json claiming width 20000 builds nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image_folder

import barlowtwins.evaluate.backbone as backbone_module
from barlowtwins.cli import main
from barlowtwins.evaluate.embeddings import sidecar_paths


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """An embeddings file of 4 images by the width-8 ResNet-18 of `run_dir` (64-dimensional), csv index."""
    from conftest import trained_backbone

    from barlowtwins.weights.save import write_run_backbone

    root = tmp_path_factory.mktemp("emb")
    cfg = {"backbone": "resnet18", "stem": "small", "width": 8, "image_size": 16}
    write_run_backbone(trained_backbone("resnet18", stem="small", width=8), root / "run", cfg)
    (root / "run" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    tree = make_image_folder(root / "imgs", per_class=2, splits=("train",), size=16)
    out = root / "emb.npy"
    assert main(["embed", "--checkpoint", str(root / "run"), "--data-dir", str(tree), "--output", str(out),
                 "--index-format", "csv", "--device", "cpu", "--workers", "0"]) == 0
    paths = sidecar_paths(out)
    query = str(next((tree / "train" / "cat").iterdir()))
    return {k: paths[k].read_bytes() for k in ("npy", "csv", "meta")}, query


@pytest.fixture
def emb(written, tmp_path):
    """A fresh copy of the embeddings file for one test to damage."""
    files, query = written
    out = tmp_path / "emb.npy"
    paths = sidecar_paths(out)
    for k, data in files.items():
        paths[k].write_bytes(data)
    return out, paths, query


@pytest.fixture
def no_huge_models(monkeypatch):
    real = backbone_module.create_backbone

    def guarded(name, **kw):
        assert (kw.get("width") or 0) <= 1024, f"a width-{kw.get('width')} network was built from meta.json"
        return real(name, **kw)

    monkeypatch.setattr(backbone_module, "create_backbone", guarded)


def _meta(paths, **changes):
    meta = json.loads(paths["meta"].read_text())
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            meta[k] = {**meta[k], **v}
        elif v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    paths["meta"].write_text(json.dumps(meta))


def _npy(shape, dtype="<f4", data=b""):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


DAMAGE = {
    "meta binary": lambda p: p["meta"].write_bytes(b"\xff\xfe\x00garbage\x80"),
    "meta cut short": lambda p: p["meta"].write_text(p["meta"].read_text()[:40]),
    "meta a list": lambda p: p["meta"].write_text("[1, 2, 3]"),
    "meta width 20000": lambda p: _meta(p, arch={"width": 20000}),
    "meta width a string": lambda p: _meta(p, arch={"width": "wide"}),
    "meta another width": lambda p: _meta(p, arch={"width": 16}),  # in bounds, but not what made the array
    "meta unknown stem": lambda p: _meta(p, arch={"stem": "huge"}),
    "meta image size 1e6": lambda p: _meta(p, image_size=1_000_000),
    "meta image size 0": lambda p: _meta(p, image_size=0),
    "meta mean text": lambda p: _meta(p, mean="abc"),
    "meta std zero": lambda p: _meta(p, std=[0, 0, 0]),
    "meta count wrong": lambda p: _meta(p, count=99),
    "meta dim wrong": lambda p: _meta(p, dim=2048),
    "meta no checkpoint": lambda p: _meta(p, checkpoint=None),
    "meta index escapes": lambda p: _meta(p, index="../../etc/passwd"),
    "meta index not text": lambda p: _meta(p, index=7),
    "npy binary": lambda p: p["npy"].write_bytes(b"\x00\x01garbage" * 10),
    "npy cut short": lambda p: p["npy"].write_bytes(p["npy"].read_bytes()[:200]),
    "npy claims a huge shape": lambda p: p["npy"].write_bytes(_npy((10**9, 10**6), data=b"\x00" * 64)),
    "npy one-dimensional": lambda p: p["npy"].write_bytes(_npy((256,), data=b"\x00" * 1024)),
    "npy integers": lambda p: p["npy"].write_bytes(_npy((4, 64), "<i4", b"\x00" * 1024)),
    "npy objects": lambda p: p["npy"].write_bytes(_npy((4, 64), "|O", b"\x00" * 64)),
    "npy not finite": lambda p: np.save(p["npy"], np.full((4, 64), np.nan, dtype=np.float32)),
    "index binary": lambda p: p["csv"].write_bytes(b"\xff\xfe\x00\x80garbage\n\x81\x82"),
    "index no path column": lambda p: p["csv"].write_text("row,file,label\n0,a,0\n1,b,0\n2,c,1\n3,d,1\n"),
    "index huge field": lambda p: p["csv"].write_text("row,path,label\n0," + "x" * 200_000 + ",0\n"),
    "index too few rows": lambda p: p["csv"].write_text("row,path,label\n0,a,0\n"),
    "index missing": lambda p: p["csv"].unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_embeddings_are_one_line_and_exit_2(damage, emb, capsys, no_huge_models):
    out, paths, query = emb
    DAMAGE[damage](paths)
    code = main(["neighbors", "--embeddings", str(out), "--query", query, "--device", "cpu", "--k", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(out.name).removesuffix(".npy") in err or "meta" in err, err  # names the file at fault


def test_the_undamaged_copy_works(emb, capsys):
    out, _, query = emb
    assert main(["neighbors", "--embeddings", str(out), "--query", query, "--device", "cpu", "--k", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].lstrip().startswith("2.")


def test_a_sheet_of_an_image_that_moved_is_one_line(emb, tmp_path, capsys):
    out, paths, query = emb
    rows = paths["csv"].read_text().splitlines()
    paths["csv"].write_text("\n".join([rows[0]] + [f"{i},/nowhere/moved_{i}.jpg,0" for i in range(4)]) + "\n")
    code = main(["neighbors", "--embeddings", str(out), "--query", query, "--device", "cpu", "--k", "2",
                 "--sheet", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "moved_" in err and "no longer exists" in err, err
    assert not (tmp_path / "s.png").exists()
