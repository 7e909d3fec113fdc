import json
import math

import pytest

from annoy_datasync.compare import canonical, exec_key, json_equal, json_problem

EQUAL = [
    (1, 1),
    (3, 3.0),                        # int truth, integral float answer
    (10**20, 1e20),                  # exact value comparison, no float rounding of the int
    (2**70, 2**70),
    (1.0, 1.0005),                   # within relative 1e-3
    (1000.0, 1000.9),
    (-2.5, -2.5024),
    (3.0, 3),                        # float truth, int answer within tolerance
    (0.0, 1.2e-16),                  # noise around zero
    (1.2e-16, 0.0),
    (0.0, -0.0),
    (math.inf, math.inf),
    (math.nan, math.nan),
    ("abc", "abc"),
    ("", ""),
    (True, True),
    (None, None),
    ([], []),
    ([1, [2.0, "x"]], [1, [2.0005, "x"]]),
    ([1, 2], (1, 2)),                # tuples arrive as lists
    ({"a": 1, "b": [0.5]}, {"b": [0.50001], "a": 1}),
    ({}, {}),
]

NOT_EQUAL = [
    (1, 2),
    (3, 3.0001),                     # integer answers are exact
    (38, 38.01),
    (2**70, 2**70 + 1),
    (1.0, 1.002),                    # outside relative 1e-3
    (1000.0, 1001.5),
    (1e-6, 2e-6),                    # the absolute tolerance is tiny
    (0.0, 1e-7),
    (math.inf, -math.inf),
    (math.inf, 1e308),
    (math.nan, 0.0),
    (1.0, math.nan),
    (1e300, 10**400),                # int too large for a float
    (1, True),                       # bools are never numbers
    (True, 1),
    (0, False),
    (False, 0.0),
    (1.0, True),
    ("1", 1),
    (1, "1"),
    ("abc", "abd"),
    ("a", "a "),
    (None, 0),
    (None, ""),
    (None, []),
    (0, None),
    ([], None),
    ([1, 2], [1, 2, 3]),
    ([1, 2], [2, 1]),
    ([1, [2, 3]], [1, [2, 4]]),
    ({"a": 1}, {"a": 1, "b": 2}),
    ({"a": 1}, {"b": 1}),
    ({"a": 1}, [["a", 1]]),
    ([1], {"0": 1}),
    ({1, 2}, {1, 2}),                # a set is not JSON: never equal
]


@pytest.mark.parametrize("expected,actual", EQUAL)
def test_equal(expected, actual):
    assert json_equal(expected, actual)


@pytest.mark.parametrize("expected,actual", NOT_EQUAL)
def test_not_equal(expected, actual):
    assert not json_equal(expected, actual)


def test_custom_eq_cannot_force_a_pass():
    class Liar:
        def __eq__(self, other):
            return True

    assert not json_equal(1, Liar())
    assert not json_equal([1], [Liar()])
    assert not json_equal({"a": "x"}, {"a": Liar()})


def test_deep_nesting_does_not_recurse():
    deep_a, deep_b = 1.0, 1.0
    for _ in range(50_000):
        deep_a, deep_b = [deep_a], [deep_b]
    assert json_equal(deep_a, deep_b)


def test_canonical_is_order_free_and_type_exact():
    assert canonical({"b": 1, "a": [1, 2]}) == canonical({"a": [1, 2], "b": 1}) == '{"a":[1,2],"b":1}'
    assert canonical({"x": 3}) != canonical({"x": 3.0})
    assert canonical({"x": True}) != canonical({"x": 1})
    assert canonical("é") == '"é"'
    assert json.loads(canonical({"k": [None, 1.5]})) == {"k": [None, 1.5]}


def test_exec_key_separates_code_and_input():
    k = exec_key("def main_solution(x): return x", {"x": 1})
    assert k == exec_key("def main_solution(x): return x", {"x": 1})
    assert k != exec_key("def main_solution(x): return x ", {"x": 1})
    assert k != exec_key("def main_solution(x): return x", {"x": 1.0})


def _nested(levels):
    v = 0
    for _ in range(levels):
        v = [v]
    return v


@pytest.mark.parametrize("value, says", [
    (1, None), (-(10 ** 100) + 1, None), ({"a": [{"b": None, "c": True, "d": "é"}]}, None),
    (_nested(100), None),                           # what the child's check lets through
    (10 ** 100, "int"), (float("nan"), "float"), ([1.5, float("-inf")], "float"),
    ("a\ud800", "surrogate"), ({"\udc00": 1}, "key"), ({1: 2}, "key"),
    ((1,), "type"), ([set()], "type"), (_nested(101), "nesting"), ({"a": _nested(100)}, "nesting"),
])
def test_json_problem_is_the_childs_rule_checked_again(value, says):
    got = json_problem(value)
    assert got is None if says is None else says in got
