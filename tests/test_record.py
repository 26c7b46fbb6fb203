"""record.Record side by side with typing.NamedTuple: every fact and setting
is one, so what the plugin relies on must behave the same in both."""

import copy
import pickle
from typing import NamedTuple, Optional

import pytest

from check_email_roundtrip.record import Record


class PointNT(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: Optional[str] = None

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> "PointNT":
        return self._replace(x=self.x + dx)


class PointRecord(Record):
    """A point."""

    x: int
    y: int = 0
    label: Optional[str] = None

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> "PointRecord":
        return self._replace(x=self.x + dx)


BOTH = pytest.mark.parametrize("cls", [PointNT, PointRecord], ids=["NamedTuple", "Record"])


@BOTH
def test_construction_positional_keyword_and_defaults(cls: type) -> None:
    assert tuple(cls(1)) == (1, 0, None)
    assert tuple(cls(1, 2, "a")) == (1, 2, "a")
    assert tuple(cls(x=1, label="b")) == (1, 0, "b")
    assert tuple(cls(1, label="c")) == (1, 0, "c")
    assert cls(3, 4).x == 3 and cls(3, 4).y == 4 and cls(3, 4)[1] == 4


@BOTH
@pytest.mark.parametrize(
    "args, kwargs",
    [((), {}), ((1, 2, "a", 4), {}), ((1,), {"x": 2}), ((1,), {"z": 2})],
    ids=["missing", "surplus", "duplicate", "unknown"],
)
def test_bad_arguments_are_type_errors(
    cls: type, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        cls(*args, **kwargs)


@BOTH
def test_frozen(cls: type) -> None:
    point = cls(1, 2)
    with pytest.raises(AttributeError):
        point.x = 5
    with pytest.raises(AttributeError):
        point.other = 5  # no __dict__: __slots__ = ()
    assert not hasattr(point, "__dict__")


@BOTH
def test_tuple_behaviour(cls: type) -> None:
    a, b, c = cls(1, 2)
    assert (a, b, c) == (1, 2, None)
    assert cls(1, 2) == cls(1, 2) == (1, 2, None)
    assert cls(1, 2) != cls(1, 3)
    assert hash(cls(1, 2)) == hash((1, 2, None))
    assert isinstance(cls(1), tuple) and len(cls(1)) == 3


@BOTH
def test_helpers(cls: type) -> None:
    point = cls(1, 2)
    assert cls._fields == ("x", "y", "label")
    assert cls._field_defaults == {"y": 0, "label": None}
    assert point._replace(y=5) == cls(1, 5) and type(point._replace()) is cls
    assert point._asdict() == {"x": 1, "y": 2, "label": None}
    with pytest.raises((ValueError, TypeError)):  # ValueError before Python 3.13
        point._replace(z=1)


@BOTH
def test_body_members_and_repr(cls: type) -> None:
    point = cls(-1, 2)
    assert point.norm1 == 3
    assert point.moved(4) == cls(3, 2) and type(point.moved(4)) is cls
    assert cls.__doc__ == "A point."
    assert repr(cls(1, label="a")) == f"{cls.__name__}(x=1, y=0, label='a')"


@BOTH
def test_copy_and_pickle(cls: type) -> None:
    point = cls(1, 2, "p")
    assert copy.copy(point) == point and type(copy.copy(point)) is cls
    assert copy.deepcopy(point) == point
    restored = pickle.loads(pickle.dumps(point))
    assert restored == point and type(restored) is cls


def test_subclass_of_a_record_is_a_plain_tuple_subclass() -> None:
    class Labelled(PointRecord):
        def text(self) -> str:
            return f"{self.label}: {self.x},{self.y}"

    assert Labelled(1, 2, "a").text() == "a: 1,2"
    assert Labelled._fields == PointRecord._fields
