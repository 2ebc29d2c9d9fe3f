"""A shard folder's manifest.json is checked before it is trusted: types, bounds, overlaps, keys and the digest
of its sample list, each a one-line `DataError`."""

import copy
import json

import pytest

from barlowtwins.data.manifest import check_manifest, index_digest, read_manifest, write_manifest
from barlowtwins.errors import DataError

SHA = "ab" * 32


def manifest():
    samples = [["000000000", "000000000.jpg", 512, 100, 0], ["000000001", "000000001.jpg", 2048, 50, 1]]
    return {"version": 2, "classes": ["cat", "dog"], "plan": {"seed": 0},
            "shards": [{"name": "train-000000.tar", "bytes": 4096, "sha256": SHA, "samples": samples,
                        "index_sha256": index_digest(samples)}]}


def test_a_valid_manifest_is_read_with_its_plan_and_classes(tmp_path):
    write_manifest(tmp_path, {k: v for k, v in manifest().items() if k != "shards"},
                   {"train-000000.tar": manifest()["shards"][0]})
    m = read_manifest(tmp_path)
    assert m.classes == ["cat", "dog"] and m.plan == {"seed": 0} and list(m.entries) == ["train-000000.tar"]
    assert read_manifest(tmp_path / "nothing-here") is None


def _broken(change):
    data = copy.deepcopy(manifest())
    change(data, data["shards"][0], data["shards"][0]["samples"])
    return data


@pytest.mark.parametrize("change, match", [
    (lambda d, e, s: s[0].__setitem__(3, 10 ** 12), "outside the 4096-byte file"),
    (lambda d, e, s: s[0].__setitem__(2, "abc"), "has offset 'abc'"),
    (lambda d, e, s: e.__setitem__("samples", [["a"]]), r"sample 0 is \['a'\], not \[key, member, offset"),
    (lambda d, e, s: (s[0].__setitem__(2, 2048), s[1].__setitem__(2, 512)), "overlapping the sample before"),
    (lambda d, e, s: s[1].__setitem__(2, 600), "overlapping the sample before"),
    (lambda d, e, s: s[1].__setitem__(0, "000000000"), "the member must be the key's"),
    (lambda d, e, s: (s[1].__setitem__(0, "000000000"), s[1].__setitem__(1, "000000000.png")), "listed twice"),
    (lambda d, e, s: s.pop(), "does not match its index_sha256"),
    (lambda d, e, s: e.__setitem__("sha256", "0"), "not a SHA-256"),
    (lambda d, e, s: e.__setitem__("bytes", -1), "not a byte count"),
    (lambda d, e, s: e.__setitem__("name", "../x.tar"), "a file name in the folder"),
    (lambda d, e, s: d.__setitem__("version", 9), "manifest version 9"),
    (lambda d, e, s: d.__setitem__("classes", [1, 2]), "'classes' is not a list of names"),
    (lambda d, e, s: d["shards"].append(copy.deepcopy(e)), "listed twice"),
    (lambda d, e, s: s[0].__setitem__(4, 0.5), "has the label 0.5"),
])
def test_a_broken_manifest_is_one_line(tmp_path, change, match):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(_broken(change)))
    with pytest.raises(DataError, match=match) as e:
        read_manifest(tmp_path)
    assert "\n" not in str(e.value) and "barlowtwins shard" in str(e.value)


def test_a_manifest_that_is_not_json_or_not_an_object(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="a JSON object is needed"):
        check_manifest([1, 2], tmp_path / "manifest.json")


def test_a_version_1_manifest_without_digests_is_still_read(tmp_path):
    data = manifest()
    data["version"] = 1
    del data["shards"][0]["index_sha256"], data["plan"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(tmp_path).plan == {}
