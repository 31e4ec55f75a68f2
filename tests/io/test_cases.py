"""Case files: every shipped case loads, and every fault has its own clear message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import hessverify
from hessverify.errors import CaseError
from hessverify.io.cases import ID_PATTERN, find_cases, load_case, parse_case, seeded_params
from hessverify.model.activations import ACTIVATIONS
from hessverify.model.losses import LOSSES
from tests.conftest import CASE_PATHS, CASES_DIR

GOOD = (CASES_DIR / "xor-2-2-1-sigmoid.toml").read_text()


def test_at_least_twelve_cases_covering_every_activation_and_loss() -> None:
    cases = [load_case(p) for p in CASE_PATHS]
    assert len(cases) >= 12
    assert {a for c in cases for a in c.activations} == set(ACTIVATIONS)
    assert {c.loss for c in cases} == set(LOSSES)
    assert {c.reduction for c in cases} == {"sum", "mean"}
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)
    for path, case in zip(CASE_PATHS, cases):
        assert ID_PATTERN.match(case.id)
        assert path.stem == case.id, "the file name is the case id, so reports and test ids agree"


def test_seeded_draw_is_the_documented_one() -> None:
    case = load_case(CASES_DIR / "tanh-6-12-8-2.toml")
    expected = 0.5 * np.random.default_rng(31).standard_normal(case.n_params)
    np.testing.assert_array_equal(case.params, expected)
    np.testing.assert_array_equal(seeded_params(case.architecture, 31, 0.5), expected)
    rng = np.random.default_rng(31)
    np.testing.assert_array_equal(case.inputs, rng.standard_normal((32, 6)))
    np.testing.assert_array_equal(case.targets, rng.standard_normal((32, 2)))


def _sub(old: str, new: str, text: str = GOOD) -> str:
    assert old in text
    return text.replace(old, new, 1)


BAD = [
    ("invalid TOML", "id = ", "invalid TOML"),
    ("unknown top key", _sub('description', 'colour = "red"\ndescription'), r"\[colour\] unknown key"),
    ("bad id", _sub('"xor-2-2-1-sigmoid"', '"XOR case"'), r"\[id\] 'XOR case' is not a valid id"),
    ("unknown activation", _sub('activation = "sigmoid" }, { units = 1', 'activation = "tahn" }, { units = 1'),
     r"\[network.layers\[0\].activation\] unknown activation 'tahn'; choose one of .*tanh"),
    ("unknown loss", _sub('loss = "sse"', 'loss = "l1"'), r"\[network.loss\] unknown loss 'l1'"),
    ("unknown reduction", _sub('reduction = "sum"', 'reduction = "avg"'), r"\[network.reduction\] unknown reduction"),
    ("unknown layer key", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", dropout = 0.5 }'),
     r"\[network.layers\[1\].dropout\] unknown key"),
    ("zero units", _sub("{ units = 2,", "{ units = 0,"), r"\[network.layers\[0\].units\] must be at least 1"),
    ("float units", _sub("{ units = 2,", "{ units = 2.5,"), r"\[network.layers\[0\].units\] must be a whole number"),
    ("bias not bool", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", bias = 1 }'),
     r"bias\] must be true or false"),
    ("layers empty", _sub('layers = [ { units = 2, activation = "sigmoid" }, { units = 1, activation = "sigmoid" } ]', "layers = []"),
     r"\[network.layers\] must be a non-empty array"),
    ("short input row", _sub("[[0, 0], [0, 1]", "[[0], [0, 1]"), r"\[data.inputs\] row 0 has 1 entries but network.inputs is 2"),
    ("wrong target width", _sub("targets = [[0], [1], [1], [0]]", "targets = [[0, 1], [1, 0], [1, 0], [0, 1]]"),
     r"\[data.targets\] row 0 has 2 entries but the last layer's units is 1"),
    ("rows disagree", _sub("targets = [[0], [1], [1], [0]]", "targets = [[0], [1], [1]]"), r"\[data.targets\] has 3 rows but data.inputs has 4"),
    ("nan input", _sub("[[0, 0], [0, 1]", "[[nan, 0], [0, 1]"), r"\[data.inputs\] entry 0 is nan"),
    ("string input", _sub("[[0, 0], [0, 1]", '[["a", 0], [0, 1]'), r"\[data.inputs\] entry 0 must be a number"),
    ("wrong param count", _sub("values = [1.5, -2.0,", "values = ["), r"\[params.values\] has 7 numbers but the network has 9 parameters"),
    ("inf param", _sub("values = [1.5,", "values = [inf,"), r"\[params.values\] entry 0 is inf"),
    ("mixed params", _sub("[params]\n", "[params]\nseed = 3\n"), r"\[params.seed\] unknown key; allowed here: values; give values, or seed and scale"),
    ("seeded params missing scale", _sub(GOOD[GOOD.index("[params]"):], "[params]\nseed = 3\n"), r"\[params.scale\] missing"),
    ("seeded data missing patterns", _sub(GOOD[GOOD.index("[data]"):GOOD.index("[params]")], "[data]\nseed = 1\n\n"), r"\[data.patterns\] missing"),
    ("network not a table", _sub("[network]\n", "network = 3\n[nothing]\n"), r"\[nothing\] unknown key"),
    ("from not earlier", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", from = [2] }'),
     r"\[network.layers\[1\].from\] layer 2 reads from 2, which is not an earlier layer"),
    ("from empty", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", from = [] }'),
     r"\[network.layers\[1\].from\] layer 2 reads from an empty list"),
    ("from repeated", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", from = [1, 0, 1] }'),
     r"\[network.layers\[1\].from\] layer 2 reads from 1 more than once"),
    ("from not a list", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", from = 1 }'),
     r"\[network.layers\[1\].from\] must be a list of earlier layers"),
    ("from of floats", _sub('{ units = 1, activation = "sigmoid" }', '{ units = 1, activation = "sigmoid", from = [1.0] }'),
     r"\[network.layers\[1\].from\] must be a list of earlier layers"),
    ("too many patterns", _sub(GOOD[GOOD.index("[data]"):GOOD.index("[params]")], "[data]\nseed = 1\npatterns = 1000000\n\n"),
     r"\[data.patterns\] must be at most 100000"),
]


@pytest.mark.parametrize("text, pattern", [(t, p) for _, t, p in BAD], ids=[n for n, _, _ in BAD])
def test_each_fault_has_a_one_line_message_naming_file_and_key(text: str, pattern: str) -> None:
    with pytest.raises(CaseError) as info:
        parse_case(text, source="cases/bad.toml")
    message = str(info.value)
    assert message.startswith("cases/bad.toml: ")
    assert "\n" not in message
    assert re.search(pattern, message), message
    assert info.value.exit_code == 2


def test_missing_file_and_directory_messages(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="no such file"):
        load_case(tmp_path / "nope.toml")
    with pytest.raises(CaseError, match="is a directory"):
        load_case(tmp_path)
    with pytest.raises(CaseError, match="holds no"):
        find_cases([tmp_path])
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CaseError, match="cannot be read"):
        load_case(tmp_path / "bin.toml")


def test_find_cases_expands_directories_sorted() -> None:
    assert find_cases([CASES_DIR]) == CASE_PATHS


def test_load_case_returns_a_problem() -> None:
    case = load_case(CASES_DIR / "xor-2-2-1-sigmoid.toml")
    assert isinstance(case, hessverify.Problem)
    assert case.params.dtype == np.float64


def test_a_case_without_id_takes_its_file_name(tmp_path):
    text = GOOD.replace('id = "xor-2-2-1-sigmoid"\n', "")
    path = tmp_path / "My_XOR case.toml"
    path.write_text(text)
    assert load_case(path).id == "my-xor-case"
    assert parse_case(text).id == "case"  # no file behind the text


def test_the_shipped_cases_are_package_data() -> None:
    from pathlib import Path

    from hessverify.io.cases import SHIPPED_CASES, shipped_cases

    root = Path(__file__).resolve().parents[2]
    assert SHIPPED_CASES.resolve() == (root / "cases").resolve()  # a link in the source tree, a copy in the wheel
    assert [p.name for p in shipped_cases()] == sorted(p.name for p in (root / "cases").glob("*.toml"))
    pyproject = (root / "pyproject.toml").read_text()
    assert '"cases_data/*.toml"' in pyproject


GRAPH = """
[network]
inputs = 2
layers = [{ units = 3, activation = "tanh" }, { units = 2, activation = "tanh" },
          { units = 1, activation = "identity", from = [2, 0, 1] }]
loss = "sse"
[data]
seed = 1
patterns = 3
[params]
seed = 1
scale = 0.5
"""


def test_from_reads_the_sources_in_the_listed_order_and_round_trips_through_to_toml() -> None:
    case = parse_case(GRAPH)
    arch = case.architecture
    assert arch.parents(3) == (2, 0, 1) and arch.parents(2) == (1,)
    assert arch.block(3).fan_in == 7 and case.n_params == 9 + 8 + 8
    text = case.to_toml()
    assert "from = [2, 0, 1]" in text and text.count("from") == 1  # the default is not written out
    again = parse_case(text)
    assert again.architecture == arch
    np.testing.assert_array_equal(again.params, case.params)


def test_every_curated_graph_case_has_skip_connections() -> None:
    graphs = [load_case(p) for p in CASE_PATHS if p.stem.startswith("graph-")]
    assert len(graphs) >= 4
    assert all(not g.architecture.is_chain for g in graphs)
