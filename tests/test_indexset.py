import pytest

from annoy_datasync.indexset import IndexSet


def test_an_index_set_is_a_set_of_indices():
    s = IndexSet()
    for i in (0, 7, 8, 1_000_003):
        assert s.add(i)
    assert not s.add(7) and s.count == 4
    assert 1_000_003 in s and 1_000_002 not in s and 5 not in s and 10**9 not in s
    assert len(s.bits) < 1_000_003 // 8 * 2 + 16      # a bit each, not an entry each


def test_an_index_set_agrees_with_a_set():
    s, ref = IndexSet(), set()
    for i in [3, 3, 0, 64, 63, 65, 1, 200, 199, 64, 4096, 0, 17, 9999]:
        assert s.add(i) == (i not in ref)
        ref.add(i)
    assert s.count == len(ref)
    assert [i for i in range(10_001) if i in s] == sorted(ref)
    assert -1 not in s and -8 not in s


def test_a_negative_index_is_refused():
    with pytest.raises(ValueError):
        IndexSet().add(-1)
