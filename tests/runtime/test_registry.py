"""The one registry type: registration order, lookup, and the one-line error for an unknown name."""

from dataclasses import dataclass

import pytest

from barlowtwins.errors import ConfigError, DataError
from barlowtwins.runtime.registry import Registry


@dataclass
class Entry:
    name: str
    value: int = 0


def test_entries_by_name_in_registration_order_and_replaced_by_name():
    reg = Registry("widget")
    a = reg.register(Entry("alpha", 1))
    reg.register(Entry("beta", 2))
    assert a.value == 1 and list(reg) == ["alpha", "beta"] and reg.lookup("beta").value == 2
    reg.register(Entry("alpha", 3))  # replaced, keeps its place
    assert list(reg) == ["alpha", "beta"] and reg.lookup("alpha").value == 3


def test_unknown_name_is_one_line_with_the_closest_and_every_choice():
    reg = Registry("widget", DataError)
    for n in ("safetensors", "onnx"):
        reg.register(Entry(n))
    with pytest.raises(DataError) as e:
        reg.lookup("safetensor")
    msg = str(e.value)
    assert msg == "unknown widget 'safetensor' (did you mean safetensors?); choose one of safetensors, onnx"
    with pytest.raises(ConfigError, match=r"^unknown gadget 'x'; choose one of $"):
        Registry("gadget").lookup("x")
