"""Connection plans: explicit lists, presets and their errors (solo_cli/topology.py)."""

import pytest

from solo_cli.engine.topology import format_connections, parse_connections, validate_connections
from solo_cli.errors import UsageError

# --- explicit lists -----------------------------------------------------------------------------


def test_explicit_list():
    assert parse_connections("3->9,5->11", 30) == [(3, 9), (5, 11)]


def test_explicit_list_is_sorted_by_destination_then_source():
    assert parse_connections("5->11,3->9,2->11,0->1", 30) == [(0, 1), (3, 9), (2, 11), (5, 11)]


def test_embedding_source():
    assert parse_connections("emb->5", 30) == [(-1, 5)]
    assert parse_connections("-1->5", 30) == [(-1, 5)]
    assert parse_connections("emb->0", 4) == [(-1, 0)]


def test_whitespace_is_ignored():
    assert parse_connections("  5 -> 11 ,3->9 , emb ->  2 ", 30) == [(-1, 2), (3, 9), (5, 11)]


def test_last_block_is_in_range():
    assert parse_connections("0->29", 30) == [(0, 29)]


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, blocks, expected",
    [
        ("top:2", 30, [(13, 28), (14, 29)]),
        ("top:1", 30, [(14, 29)]),
        ("top:2:5", 30, [(23, 28), (24, 29)]),
        ("top:3:1", 30, [(26, 27), (27, 28), (28, 29)]),
        ("top:2", 4, [(0, 2), (1, 3)]),
        ("top:3", 4, [(-1, 1), (0, 2), (1, 3)]),
        ("top:1:3", 4, [(0, 3)]),
        ("mirror", 4, [(1, 2), (0, 3)]),
        ("mirror", 5, [(1, 3), (0, 4)]),
        ("mirror", 30, [(14 - k, 15 + k) for k in range(15)]),
        ("mirror:2", 30, [(1, 28), (0, 29)]),
        ("mirror:1", 4, [(0, 3)]),
        ("mirror:9", 4, [(1, 2), (0, 3)]),
        ("chain:1", 4, [(-1, 0), (0, 1), (1, 2), (2, 3)]),
        ("chain", 30, [(j - 5, j) for j in range(4, 30)]),  # a sixth of the depth
        ("chain", 12, [(j - 2, j) for j in range(1, 12)]),
        ("chain", 4, [(-1, 0), (0, 1), (1, 2), (2, 3)]),
        ("chain:2", 4, [(-1, 1), (0, 2), (1, 3)]),
        ("chain:4", 4, [(-1, 3)]),
        ("chain:10", 30, [(j - 10, j) for j in range(9, 30)]),
        (" top:2 ", 30, [(13, 28), (14, 29)]),
    ],
)
def test_presets(spec, blocks, expected):
    assert parse_connections(spec, blocks) == expected


def test_preset_spans():
    assert all(j - i == 5 for i, j in parse_connections("chain:5", 30))
    assert all(i + j == 29 for i, j in parse_connections("mirror", 30))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, blocks, message",
    [
        ("1->40", 30, r"1->40 is out of range \(blocks are 0\.\.29, emb = -1\)"),
        ("1->30", 30, "1->30 is out of range"),
        ("-2->5", 30, "-2->5 is out of range"),
        ("9->3", 30, r"9->3 goes backwards"),
        ("5->5", 30, r"5->5 goes backwards"),
        ("3->9,3->9", 30, r"3->9 is listed twice"),
        ("top:2:30", 30, "-2->28 is out of range"),
        ("top:40", 30, "40 is more than the model.s 30 blocks; give a number from 1 to 30"),  # refused before the list is built
        ("chain:5", 4, "the plan has no connections"),
        ("chain:31", 30, "the plan has no connections"),
        ("mirror", 1, "the plan has no connections"),
    ],
)
def test_invalid_connections(spec, blocks, message):
    with pytest.raises(UsageError, match=rf"^connections '{spec}': .*{message}"):
        parse_connections(spec, blocks)


def test_every_problem_is_reported_at_once():
    with pytest.raises(UsageError) as info:
        parse_connections("1->40,9->3,2->4,2->4", 30)
    message = info.value.as_flags()  # the CLI's wording; str() names the parameter, connections
    assert message.startswith("--connections '1->40,9->3,2->4,2->4': ")
    assert "1->40 is out of range" in message
    assert "9->3 goes backwards" in message
    assert "2->4 is listed twice" in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("spec", ["3-9", "3->", "->9", "a->b", "3->9->12", "3=>9", "3->9,", "emb->emb", "1.5->3"])
def test_unparsable(spec):
    with pytest.raises(UsageError, match=r"^connections: cannot parse "):
        parse_connections(spec, 30)


def test_unparsable_parts_are_all_named():
    with pytest.raises(UsageError, match=r"cannot parse 'x', 'y->'"):
        parse_connections("x, 3->9 ,y->", 30)


def test_unknown_preset_is_unparsable():
    with pytest.raises(UsageError, match=r"connections: cannot parse 'ring:3'; use chain\[:K\], top:N\[:S\], mirror\[:N\]"):
        parse_connections("ring:3", 30)


@pytest.mark.parametrize("spec", ["", "   ", "\t\n"])
def test_empty(spec):
    with pytest.raises(UsageError, match=r"^connections is empty"):
        parse_connections(spec, 30)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("top", "write top:N or top:N:SPAN"),
        ("top:", "write top:N or top:N:SPAN"),
        ("top:1:2:3", "write top:N or top:N:SPAN"),
        ("top:0", "'0' must be an integer >= 1"),
        ("top:x", "'x' must be an integer >= 1"),
        ("top:-1", "'-1' must be an integer >= 1"),
        ("top:2:0", "'0' must be an integer >= 1"),
        ("top:2:1.5", "'1.5' must be an integer >= 1"),
        ("mirror:0", "'0' must be an integer >= 1"),
        ("mirror:two", "'two' must be an integer >= 1"),
        ("chain:1:2", r"write chain or chain:K"),
        ("chain:0", "'0' must be an integer >= 1"),
        ("chain: 2", "' 2' must be an integer >= 1"),
    ],
)
def test_bad_preset_arguments(spec, message):
    with pytest.raises(UsageError, match=rf"^connections '{spec}': {message}"):
        parse_connections(spec, 30)


def test_mirror_with_extra_argument_is_rejected():
    with pytest.raises(UsageError, match="connections 'mirror:2:3'"):
        parse_connections("mirror:2:3", 30)


def test_non_ascii_digit_argument_is_a_usage_error():
    with pytest.raises(Exception) as info:
        parse_connections("top:²", 30)
    assert isinstance(info.value, UsageError), f"got {type(info.value).__name__}: {info.value}"
    assert str(info.value).startswith("connections ") and info.value.as_flags().startswith("--connections ")


def test_validate_connections_without_spec():
    validate_connections([(0, 3), (-1, 2)], 4)
    with pytest.raises(UsageError, match=r"^connections: 3->1 goes backwards"):
        validate_connections([(3, 1)], 4)
    with pytest.raises(UsageError, match=r"^connections: the plan has no connections"):
        validate_connections([], 4)


# --- format_connections -------------------------------------------------------------------------


def test_format_connections():
    assert format_connections([(-1, 2), (3, 9), (5, 11)]) == "emb->2,3->9,5->11"
    assert format_connections([]) == ""


@pytest.mark.parametrize(
    "spec, blocks",
    [("top:2", 30), ("top:3", 4), ("mirror", 30), ("mirror:3", 12), ("chain:1", 4), ("chain:7", 30), ("emb->5,3->9", 30)],
)
def test_format_round_trips_through_parse(spec, blocks):
    edges = parse_connections(spec, blocks)
    text = format_connections(edges)
    assert parse_connections(text, blocks) == edges
    assert format_connections(parse_connections(text, blocks)) == text


def test_source_names_are_written_one_way():
    from solo_cli.engine.adapter import connection_key
    from solo_cli.engine.topology import source_name

    assert [source_name(i) for i in (-1, 0, 7)] == ["emb", "0", "7"]
    assert connection_key(-1, 5) == "emb_5" and connection_key(3, 9) == "3_9"
    assert format_connections([(-1, 2), (1, 3)]) == "emb->2,1->3"
    assert parse_connections(format_connections([(-1, 2), (1, 3)]), 4) == [(-1, 2), (1, 3)]
