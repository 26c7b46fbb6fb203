"""``Record``: the base of every frozen fact and setting, a named tuple.

To mypy it *is* ``typing.NamedTuple`` (fields, defaults and ``_replace``
are checked as such).  At run time it is a lighter equivalent: creating a
``typing.NamedTuple`` class costs 60-110 us (``collections.namedtuple``
compiles a ``__new__`` from source for each class, typing checks each
annotation), and the plugin defines 54 of them.  That was 4-6 ms of every
start-up, the largest part of what a fail-fast run (nothing listening) paid
above ``import nagiosplugin`` (bench/results.md, row 4).  A class built here
costs about 10 us.

What the plugin relies on behaves as in ``typing.NamedTuple``: a tuple
subclass with ``__slots__ = ()``; positional and keyword construction with
defaults; TypeError for a missing, unknown, duplicate or surplus argument;
read-only fields; ``_fields``, ``_field_defaults``, ``_replace``,
``_asdict``; equality, hashing and ``repr`` of a named tuple; methods,
properties and docstrings of the class body; copy and pickle.
tests/test_record.py holds the two side by side.

Nothing in the package imports ``typing`` at run time: loading it costs
about 3 ms of every start-up, and only annotations need it.  Each module
that needs its names says ``TYPE_CHECKING = False`` and imports them under
``if TYPE_CHECKING:``, which mypy reads as true (it knows the name), with
``from __future__ import annotations`` keeping every annotation a string.
Only the DNS checks (spf.py, dnscheck.py), loaded with dnspython for
--dns-checks alone, still import it.  ruff's TC004 and
tests/test_startup_imports.py keep it so.
"""

from __future__ import annotations

from operator import itemgetter

__all__ = ["Record"]


class _RecordType(type):
    """Turns ``class Name(Record): field: type = default`` into a tuple subclass."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if namespace.get("__module__") == __name__:  # Record itself
            return super().__new__(mcls, name, (tuple,), namespace)
        fields = tuple(_annotations(namespace))
        defaults = {field: namespace[field] for field in fields if field in namespace}
        body = {key: value for key, value in namespace.items() if key not in defaults}
        for index, field in enumerate(fields):
            body[field] = property(itemgetter(index), doc=f"Alias for field number {index}")
        body.update(
            __slots__=(),
            _fields=fields,
            _field_defaults=defaults,
            __new__=_constructor(name, fields, defaults),
            __getnewargs__=_getnewargs,
            __repr__=_repr,
            _replace=_replace,
            _asdict=_asdict,
        )
        # a plain ``type``: subclasses of a record are ordinary tuple subclasses,
        # as they are of a typing.NamedTuple
        return type.__new__(type, name, (tuple,), body)


def _annotations(namespace: dict[str, Any]) -> dict[str, Any]:
    """The class body's annotations, in order: the dict itself before
    Python 3.14, its ``__annotate__`` function from 3.14 on (PEP 649)."""
    if "__annotations__" in namespace:
        return dict(namespace["__annotations__"])
    import annotationlib  # type: ignore[import-not-found,unused-ignore]  # Python 3.14+

    annotate = annotationlib.get_annotate_from_class_namespace(namespace)
    if annotate is None:
        return {}
    return dict(annotationlib.call_annotate_function(annotate, annotationlib.Format.FORWARDREF))


def _constructor(name: str, fields: tuple[str, ...], defaults: dict[str, Any]) -> Any:
    count = len(fields)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if len(args) == count and not kwargs:
            return tuple.__new__(cls, args)
        if len(args) > count:
            raise TypeError(f"{name}() takes {count} positional arguments but {len(args)} were given")
        values = list(args)
        for field in fields[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in defaults:
                values.append(defaults[field])
            else:
                raise TypeError(f"{name}() missing required argument: {field!r}")
        if kwargs:
            unknown = next(iter(kwargs))
            taken = "multiple values for argument" if unknown in fields else "an unexpected keyword argument"
            raise TypeError(f"{name}() got {taken} {unknown!r}")
        return tuple.__new__(cls, values)

    __new__.__qualname__ = f"{name}.__new__"
    return __new__


def _getnewargs(self: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(self)


def _repr(self: Any) -> str:
    pairs = ", ".join(f"{field}={value!r}" for field, value in zip(self._fields, self))
    return f"{type(self).__name__}({pairs})"


def _replace(self: Any, **changes: Any) -> Any:
    values = [changes.pop(field, value) for field, value in zip(self._fields, self)]
    if changes:
        raise TypeError(f"Got unexpected field names: {list(changes)!r}")  # as Python 3.13 does
    return type(self)(*values)


def _asdict(self: Any) -> dict[str, Any]:
    return dict(zip(self._fields, self))


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any
    from typing import NamedTuple as Record
else:

    class Record(metaclass=_RecordType):
        """Base of a named tuple: ``class Point(Record): x: int; y: int = 0``."""

        __slots__ = ()
