"""The public parameter layout: order, names, packing."""

from __future__ import annotations

import numpy as np
import pytest

from hessverify.model.network import Architecture, Layer, parse_param_name


def _arch() -> Architecture:
    return Architecture(2, (Layer(3, "tanh"), Layer(1, "identity", bias=False), Layer(2, "sigmoid")))


def test_names_follow_the_public_order() -> None:
    names = _arch().param_names
    assert names[:7] == ("W1[0,0]", "W1[0,1]", "W1[1,0]", "W1[1,1]", "W1[2,0]", "W1[2,1]", "b1[0]")
    assert names[9:12] == ("W2[0,0]", "W2[0,1]", "W2[0,2]")
    assert names[12:] == ("W3[0,0]", "W3[1,0]", "b3[0]", "b3[1]")
    assert _arch().n_params == len(names) == 16


def test_unpack_is_row_major_and_pack_inverts_it() -> None:
    arch = _arch()
    theta = np.arange(arch.n_params, dtype=float)
    (w1, b1), (w2, b2), (w3, b3) = arch.unpack(theta)
    assert w1[1, 0] == theta[arch.param_index("W1[1,0]")] == 2.0
    assert b1.tolist() == [6.0, 7.0, 8.0]
    assert b2.tolist() == [0.0]  # a bias-free layer unpacks to a zero bias
    assert w3[1, 0] == theta[arch.param_index("W3[1,0]")]
    np.testing.assert_array_equal(arch.pack([(w1, b1), (w2, b2), (w3, b3)]), theta)


def test_param_index_round_trips_every_name() -> None:
    arch = _arch()
    for i, name in enumerate(arch.param_names):
        assert arch.param_index(name) == i
        assert arch.param_index(i) == i


@pytest.mark.parametrize("bad, message", [
    ("W4[0,0]", "has 3 layers"),
    ("W1[3,0]", r"shape \(3, 2\)"),
    ("b2[0]", "no bias"),
    ("b1[5]", "3 entries"),
    ("w1[0,0]", "not a parameter name"),
    ("W1[0]", "not a parameter name"),
])
def test_bad_names_say_what_is_wrong(bad: str, message: str) -> None:
    with pytest.raises(KeyError, match=message):
        _arch().param_index(bad)


def test_parse_param_name() -> None:
    assert parse_param_name("W2[0,1]") == (2, "W", 0, 1)
    assert parse_param_name("b1[3]") == (1, "b", 3, None)


def test_invalid_architectures_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one unit"):
        Layer(0, "tanh")
    with pytest.raises(KeyError, match="unknown activation"):
        Layer(2, "tahn")
    with pytest.raises(ValueError, match="at least one layer"):
        Architecture(2, ())
