"""Plans joined by '+': one plan, the union of the parts' connections (solo_cli/engine/topology.py)."""

import pytest

from solo_cli.engine.topology import format_connections, parse_connections
from solo_cli.errors import UsageError


def test_the_union_plan_is_the_union_of_its_parts():
    parts = ["chain:1", "chain:5", "chain:15", "chain:25"]
    union = parse_connections("+".join(parts), 30)
    expected = set().union(*(parse_connections(p, 30) for p in parts))
    assert set(union) == expected and len(union) == len(expected) == 30 + 26 + 16 + 6
    assert union == sorted(union, key=lambda e: (e[1], e[0]))  # plan order, as for every plan
    assert {j - i for i, j in union} == {1, 5, 15, 25}


def test_parts_may_be_explicit_lists_and_whitespace_is_ignored():
    assert parse_connections(" chain:4 + emb->1 , 0->2 ", 4) == [(-1, 1), (0, 2), (-1, 3)]


def test_a_connection_two_parts_give_is_kept_once():
    assert parse_connections("chain:2+0->2", 4) == parse_connections("chain:2", 4)
    assert parse_connections("chain+chain:5", 30) == parse_connections("chain:5", 30)


def test_the_union_at_one_rank_fits_the_default_budget_on_smollm2():
    """The mixed-span run of bench/e2e.py: 78 connections at rank 1 on d = 576 hold the default's 89,856."""
    default = len(parse_connections("chain", 30)) * 2 * 576 * 3
    mixed = len(parse_connections("chain:1+chain:5+chain:15+chain:25", 30)) * 2 * 576 * 1
    assert default == mixed == 89_856


def test_the_union_round_trips_through_its_explicit_form():
    edges = parse_connections("chain:1+chain:5+chain:15", 30)
    assert parse_connections(format_connections(edges), 30) == edges


@pytest.mark.parametrize("spec", ["chain:1+", "+chain:1", "chain:1++chain:5", " + "])
def test_an_empty_part_is_refused(spec):
    with pytest.raises(UsageError) as info:
        parse_connections(spec, 30)
    assert info.value.as_flags().startswith("--connections ") and "a '+' with no plan on one side" in info.value.as_flags()


def test_a_bad_part_is_named():
    with pytest.raises(UsageError, match=r"^connections 'chain:31': the plan has no connections"):
        parse_connections("chain:1+chain:31", 30)
    with pytest.raises(UsageError, match=r"^connections: cannot parse 'ring:3'"):
        parse_connections("chain:1+ring:3", 30)


def test_presets_listed_with_commas_point_to_plus():
    with pytest.raises(UsageError, match=r"cannot parse 'chain:1', 'chain:5'; .*join plans with \+ \(chain:1\+chain:5\)"):
        parse_connections("chain:1,chain:5", 30)
