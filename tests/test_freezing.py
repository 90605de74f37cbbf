import pytest

from uamix_fairseq.freezing import ScheduleError, parse_schedule, trainable_blocks_at


def test_parse_and_lookup():
    s = parse_schedule("[(0, 0), (2000, 6), (5000, 12)]", depth=12)
    assert s == [(0, 0), (2000, 6), (5000, 12)]
    assert [trainable_blocks_at(s, u) for u in (0, 1999, 2000, 4999, 5000, 10**6)] == \
        [0, 0, 6, 6, 12, 12]
    assert parse_schedule([(0, 3)], depth=4) == [(0, 3)]


@pytest.mark.parametrize("spec, message", [
    ("[(0, 0), (2000, 20)]", "asks for 20 trainable blocks at update 2000, but the encoder has 12"),
    ("[(5, 0)]", "must start at update 0"),
    ("[(0, 0), (10, 2), (10, 4)]", "strictly increase"),
    ("[]", "empty"),
    ("zero then six", "not a list"),
    ("[1, 2]", "pairs"),
    ("[(0, -1)]", "between 0 and 12"),
])
def test_bad_schedules_name_the_field(spec, message):
    with pytest.raises(ScheduleError, match="model.freeze_schedule") as e:
        parse_schedule(spec, depth=12, field="model.freeze_schedule")
    assert message in str(e.value)
