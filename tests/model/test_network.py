"""The public parameter layout: order, names, packing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hessverify.model.network import Architecture, Layer, layer_input, parse_param_name


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


# -- topology: asked of the architecture, never computed as l +- 1 elsewhere -------------------


def test_parents_and_children_of_a_chain() -> None:
    arch = _arch()
    assert [arch.parents(l) for l in (1, 2, 3)] == [(0,), (1,), (2,)]
    assert [arch.children(l) for l in (0, 1, 2, 3)] == [(1,), (2,), (3,), ()]
    assert [arch.parent(l) for l in (1, 2, 3)] == [0, 1, 2]
    assert arch.output_layer == 3
    assert arch.bottom_up == (1, 2, 3) and arch.top_down == (3, 2, 1)
    assert arch.above(1) == (2, 3) and arch.above(3) == () and arch.above(0) == (1, 2, 3)
    # the same answers as the graph search that a chain skips: the chain written out as a graph
    graph = Architecture(arch.inputs, tuple(replace(layer, sources=(index - 1, 0) if index == 3 else None)
                                            for index, layer in enumerate(arch.layers, start=1)))
    assert not graph.is_chain and [graph.above(l) for l in (0, 1, 2, 3)] == [arch.above(l) for l in (0, 1, 2, 3)]


def test_every_child_lists_its_parent_and_the_orders_respect_the_edges() -> None:
    arch = _arch()
    for l in arch.bottom_up:
        assert all(l in arch.children(p) for p in arch.parents(l))
        assert all(arch.bottom_up.index(p) < arch.bottom_up.index(l) for p in arch.parents(l) if p)
        assert all(arch.top_down.index(c) < arch.top_down.index(l) for c in arch.children(l))


def test_fan_in_is_the_width_of_the_parents() -> None:
    arch = _arch()
    assert [arch.fan_in(l) for l in arch.bottom_up] == [2, 3, 1]
    zs = [np.zeros((4, 2)), np.zeros((4, 3)), np.zeros((4, 1)), np.zeros((4, 2))]
    assert [layer_input(zs, l, arch).shape for l in arch.bottom_up] == [(4, 2), (4, 3), (4, 1)]


def test_layer_and_block_are_one_based_and_name_the_range() -> None:
    arch = _arch()
    assert arch.layer(2) == Layer(1, "identity", bias=False) and arch.block(3).layer == 3
    with pytest.raises(IndexError, match="layers 1..3"):
        arch.layer(4)
    with pytest.raises(IndexError, match="layers 1..3"):
        arch.parents(0)


def test_no_layer_arithmetic_outside_the_network_module() -> None:
    """The passes ask the architecture: no ``l - 1`` / ``l + 1`` / ``reversed(blocks)`` in the code that runs them.

    Docstrings, comments and string literals (the lecture's notation, ``W(m+1)``) may say it; code may not.
    The independent references (autograd, curvature, torch) write the network again from the case schema
    on purpose, sharing nothing with the model, so they are not held to this.
    """
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "hessverify"
    arithmetic = re.compile(r"\b(l|m|mp|index|layer)\s*[-+]\s*[12]\b|reversed\(\w*\.?blocks\)|range\(depth|\b(zs?|layers|blocks)\[-1\]")
    strings = re.compile(r"\"[^\"]*\"|'[^']*'")
    paths = [p for part in ("methods", "references", "model", "symbolic") for p in sorted((root / part).glob("*.py"))]
    offenders = []
    for path in paths + [root / "engine" / "bounds.py"]:
        if path.name in ("network.py", "autograd_ref.py", "curvature_ref.py", "torch_ref.py", "kinds.py",
                         "kinds_lecture.py"):
            continue
        in_doc = False
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.count('"""') % 2:
                in_doc = not in_doc
                continue
            code = strings.sub('""', line.split("#")[0])
            if not in_doc and arithmetic.search(code):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# -- feed-forward graphs (from = [...]) ---------------------------------------------------------


def _graph() -> Architecture:
    return Architecture(2, (Layer(3, "tanh"), Layer(2, "tanh"), Layer(1, "identity", sources=(2, 0, 1))))


def test_a_graph_layer_reads_its_sources_side_by_side_in_the_listed_order() -> None:
    arch = _graph()
    assert arch.parents(3) == (2, 0, 1) and arch.children(0) == (1, 3) and arch.children(1) == (2, 3)
    assert arch.fan_in(3) == 2 + 2 + 3 and not arch.is_chain
    assert arch.source_slice(3, 2) == slice(0, 2) and arch.source_slice(3, 0) == slice(2, 4)
    assert arch.source_slice(3, 1) == slice(4, 7)
    assert arch.param_names[-8:] == ("W3[0,0]", "W3[0,1]", "W3[0,2]", "W3[0,3]", "W3[0,4]", "W3[0,5]", "W3[0,6]",
                                     "b3[0]")
    zs = [np.array([[1.0, 2.0]]), np.array([[3.0, 4.0, 5.0]]), np.array([[6.0, 7.0]])]
    assert layer_input(zs, 3, arch).tolist() == [[6.0, 7.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    with pytest.raises(ValueError, match="several parents"):
        arch.parent(3)


def test_the_default_source_written_out_is_the_same_network() -> None:
    chain = Architecture(2, (Layer(3, "tanh"), Layer(1, "identity")))
    assert Architecture(2, (Layer(3, "tanh", sources=(0,)), Layer(1, "identity", sources=[1]))) == chain
    assert chain.is_chain and "from" not in chain.describe()
    assert _graph().describe() == "2-3(tanh)-2(tanh)-1(identity,from=2+0+1)"


@pytest.mark.parametrize("sources, message", [
    ((3,), "reads from 3, which is not an earlier layer"),
    ((1, 2), "reads from 2, which is not an earlier layer"),
    ((), "empty list"),
    ((0, 1, 0), "reads from 0 more than once"),
    ((-1,), "not an earlier layer"),
])
def test_invalid_graphs_are_refused_in_one_line(sources: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Architecture(2, (Layer(3, "tanh"), Layer(1, "identity", sources=sources)))
    assert "\n" not in str(info.value)
