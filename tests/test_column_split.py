"""fedlora.data.column_split: clients made from the groups of a column."""
import numpy as np
import pytest

from fedlora.data.partitions.column import clients_per_group, partition_by_column


def domains(sizes, seed=0):
  """A shuffled column holding group 'g<i>' sizes[i] times."""
  col = np.repeat(np.array([f"g{i}" for i in range(len(sizes))]), sizes)
  return col[np.random.default_rng(seed).permutation(col.size)]


@pytest.mark.parametrize("sizes,num_clients,seed", [
    ([24850, 22653, 7425, 2530], 10, 0),   # MultiEmo's English sentence domains
    ([7, 3, 10], 5, 1),
    ([5, 995], 10, 2),
    ([4, 4, 4], 3, 3),
    ([50], 7, 4),
])
def test_cover_disjoint_pure_near_equal(sizes, num_clients, seed):
  groups = domains(sizes, seed)
  parts, client_groups = partition_by_column(groups, num_clients, seed=seed)
  assert len(parts) == num_clients and client_groups.shape == (num_clients,)
  allidx = np.concatenate(parts)
  np.testing.assert_array_equal(np.sort(allidx), np.arange(groups.size))  # cover, and disjoint
  for p, g in zip(parts, client_groups):
    assert p.dtype == np.int64 and np.all(np.diff(p) > 0)                 # sorted, no repeats
    assert set(groups[p].tolist()) == {g}                                   # one group per client
  counts = clients_per_group(sizes, num_clients)
  names = [f"g{i}" for i in range(len(sizes))]
  assert client_groups.tolist() == [n for n, c in zip(names, counts) for _ in range(c)]
  for n in names:  # the clients of a group hold near-equal shares of it
    lens = [p.size for p, g in zip(parts, client_groups) if g == n]
    assert max(lens) - min(lens) <= 1


@pytest.mark.parametrize("sizes,num_clients,want", [
    ([100, 100, 800], 10, [1, 1, 8]),         # exactly proportional
    ([24850, 22653, 7425, 2530], 10, [4, 4, 1, 1]),
    ([24850, 22653, 7425, 2530], 20, [9, 8, 2, 1]),
    ([5, 995], 10, [1, 9]),                   # quota 0.05 -> floor of one
    ([1, 1, 1, 997], 4, [1, 1, 1, 1]),
    ([10, 10, 10], 4, [2, 1, 1]),             # equal remainders: the earlier group
    ([3, 3], 2, [1, 1]),
])
def test_clients_per_group(sizes, num_clients, want):
  got = clients_per_group(sizes, num_clients)
  assert got.tolist() == want and got.sum() == num_clients


def test_clients_per_group_is_proportional_over_random_sizes():
  rng = np.random.default_rng(0)
  for _ in range(200):
    sizes = rng.integers(1, 1000, size=rng.integers(1, 8))
    k = int(rng.integers(sizes.size, 60))
    c = clients_per_group(sizes, k)
    assert c.sum() == k and (c >= 1).all()
    quota = k * sizes / sizes.sum()
    big = quota >= 1
    # a group with a quota >= 1 is never more than one client off its quota... unless groups with a
    # smaller quota took a floor client from the pool (at most one per such group, shared by the rest)
    slack = 1 + (~big).sum()
    assert (np.abs(c[big] - quota[big]) < slack).all()
    assert (c[~big] == 1).all()


def test_same_seed_same_split_other_seed_other():
  groups = domains([40, 60])
  a, _ = partition_by_column(groups, 5, seed=3)
  b, _ = partition_by_column(groups, 5, seed=3)
  c, _ = partition_by_column(groups, 5, seed=4)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_integer_groups():
  parts, cg = partition_by_column([2, 0, 2, 2, 0, 1], 4)
  assert cg.tolist() == [0, 1, 2, 2]
  assert [p.tolist() for p in parts[:2]] == [[1, 4], [5]]
  assert sorted(np.concatenate(parts[2:]).tolist()) == [0, 2, 3]


def test_errors_name_the_numbers():
  with pytest.raises(ValueError, match=r"num_clients=2 is fewer than the 3 groups \['a', 'b', 'c'\]"):
    partition_by_column(["a", "b", "c"], 2)
  # 'b' (3 of 11 examples) gets 1 of the 3 clients, 'a' 2: 'b' is short for min_per_client=4
  with pytest.raises(ValueError, match=r"group 'b' has 3 examples, fewer than its 1 clients x min_per_client=4 = 4; "
                                       r".*\{'a': 2, 'b': 1\}"):
    partition_by_column(["a"] * 8 + ["b"] * 3, 3, min_per_client=4)
  with pytest.raises(ValueError, match=r"num_clients must be an integer >= 1, got 0"):
    partition_by_column(["a"], 0)
  with pytest.raises(ValueError, match=r"min_per_client must be an integer >= 1, got 0"):
    partition_by_column(["a"], 1, min_per_client=0)
  with pytest.raises(ValueError, match=r"1 missing value\(s\) \(None/NaN\) at index\(es\) \[1\]"):
    partition_by_column(np.array(["a", None, "b"], dtype=object), 2)
  with pytest.raises(ValueError, match=r"non-empty 1-D"):
    partition_by_column([], 1)


def test_min_per_client_is_met():
  groups = domains([30, 12])
  parts, cg = partition_by_column(groups, 6, min_per_client=3)
  assert min(p.size for p in parts) >= 3 and cg.tolist() == ["g0"] * 4 + ["g1"] * 2
