"""A search space from Hydra override syntax, the official hydra-optuna-sweeper's forms:

| written                          | Optuna distribution                                   |
| -------------------------------- | ----------------------------------------------------- |
| `a,b,c` or `choice(a,b,c)`       | CategoricalDistribution([a, b, c])                    |
| `shuffle(...)` of a choice/range | CategoricalDistribution (the values, order dropped)   |
| `range(start, stop[, step])`     | Int- or FloatDistribution over the values Hydra's range lists (stop excluded) |
| `interval(low, high)`            | FloatDistribution(low, high)                          |
| `int(interval(low, high))`       | IntDistribution(low, high)                            |
| `tag(log, interval(...))`        | the same with log=True                                |
| `glob(...)` of a config group    | CategoricalDistribution of the matching options       |

`range` follows Hydra (and rizzrun's grid sweeps): `range(1,5)` is 1, 2, 3, 4, where the official
plugin also allows 5. A value that is not a sweep is fixed for every trial. Each problem is one
line naming the entry, raised together as SearchSpaceError.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

FORMS = ("a,b,c | choice(a,b,c) | range(start,stop[,step]) | interval(low,high) | "
         "int(interval(low,high)) | tag(log, interval(low,high))")
_TAGS = {"log"}


class SearchSpaceError(ValueError):
    """Every problem of a search space, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Fixed:
    """An override every trial gets as written (`+recipe=tiny`, `trainer.max_steps=5`, `~key`)."""

    name: str  # the key or group it sets (a later entry with the same name replaces it)
    line: str

    def override(self, value: Any = None) -> str:
        return self.line


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: its Optuna name (the key), its distribution, how a value is written."""

    name: str
    key_element: str  # the key as the override writes it (`+x`, `db@pkg`)
    distribution: Any  # optuna.distributions.BaseDistribution
    spellings: tuple[str, ...] | None = None  # a categorical choice's override text, by index

    def override(self, value: Any) -> str:
        return f"{self.key_element}={self.spell(value)}"

    def spell(self, value: Any) -> str:
        if self.spellings is not None:
            return self.spellings[int(self.distribution.to_internal_repr(value))]
        return spell(value)

    def edges(self) -> list[Any]:
        """The values a check before the search composes: every choice, or both ends."""
        from optuna.distributions import CategoricalDistribution

        d = self.distribution
        return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]


Entry = Fixed | Dimension


def spell(value: Any) -> str:
    """`value` as a Hydra override writes it (quoted or escaped where the grammar needs it)."""
    from hydra.core.override_parser.types import Transformer

    if isinstance(value, bool):
        return "true" if value else "false"
    return Transformer.str(value)


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = (),
                 options_of: Callable[[str], list[str]] | None = None) -> list[Entry]:
    """The entries of `hydra.sweeper.params` then of the command line's `arguments` (Hydra's task
    overrides), in order; an entry whose name was seen replaces the earlier one in its place, so the
    command line wins. `options_of(group)` lists a group's options for `glob(...)`."""
    labelled = [(f"hydra.sweeper.params.{key}={value}", f"{key}={_yaml_value(value)}")
                for key, value in (params or {}).items()]
    labelled += [(line, line) for line in arguments]
    entries: dict[str, Entry] = {}
    problems = []
    for label, line in labelled:
        try:
            entry = parse_entry(line, options_of)
        except ValueError as e:
            problems.append(f"{label}: {e}")
            continue
        entries[entry.name] = entry
    if problems:
        raise SearchSpaceError(problems)
    return list(entries.values())


def _yaml_value(value: Any) -> str:
    """A params value from YAML as override text: strings as written (they hold the sweep syntax)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return spell(value)


def parse_entry(line: str, options_of: Callable[[str], list[str]] | None = None) -> Entry:
    """One override line as a Fixed entry or a Dimension; ValueError (one line) when it is not."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        [override] = OverridesParser.create().parse_overrides([line])
    except OverrideParseException as e:
        detail = [x for x in e.message.splitlines() if not x.startswith(("Error parsing override", "See https"))]
        raise ValueError(f"not valid override syntax ({detail[0] if detail else e.message}); "
                         f"the search forms are {FORMS}") from None
    name = override.key_or_group + (f"@{override.package}" if override.package else "")
    if override.is_delete() or not override.is_sweep_override():
        return Fixed(name, line)
    distribution, spellings = _distribution(override, options_of)
    return Dimension(name, override.get_key_element(), distribution, spellings)


def _distribution(override, options_of) -> tuple[Any, tuple[str, ...] | None]:
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = set(getattr(value, "tags", set()))
    if tags - _TAGS:
        raise ValueError(f"unknown tag {', '.join(sorted(tags - _TAGS))}; the one tag understood is log")
    if tags and not isinstance(value, IntervalSweep):
        raise ValueError("tag(log, ...) applies to interval(low,high) only")
    if isinstance(value, Glob):
        if options_of is None:
            raise ValueError("glob(...) needs the config group's options, which are not known here")
        return _categorical(value.filter(options_of(override.key_or_group)))
    if isinstance(value, ChoiceSweep):
        return _categorical(list(value.list))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError("the range holds no value (range(start,stop,step) stops before stop)")
        if value.shuffle:
            return _categorical(values)
        return _range_distribution(value, len(values)), None
    if isinstance(value, IntervalSweep):
        log = "log" in tags
        ints = isinstance(value.start, int) and isinstance(value.end, int)
        try:
            if ints:
                return IntDistribution(value.start, value.end, log=log), None
            return FloatDistribution(float(value.start), float(value.end), log=log), None
        except ValueError as e:  # low > high, or a log scale from <= 0
            raise ValueError(f"{e}") from None
    raise ValueError(f"{type(value).__name__} is not a search form; the forms are {FORMS}")


def _categorical(values: list[Any]) -> tuple[Any, tuple[str, ...]]:
    """Primitive choices as themselves; a list or mapping choice as its override text."""
    from optuna.distributions import CategoricalDistribution

    if not values:
        raise ValueError("no value to choose from")
    stored = [v if v is None or isinstance(v, (str, int, float, bool)) else spell(v) for v in values]
    if len(set(map(repr, stored))) != len(stored):
        raise ValueError(f"a value is listed twice in {values}")
    texts = tuple(spell(v) if v is None or isinstance(v, (str, int, float, bool)) else s
                  for v, s in zip(values, stored))
    return CategoricalDistribution(stored), texts


def _range_distribution(value, count: int):
    """range(start, stop, step) as the distribution of its `count` values: low and high are its
    smallest and largest, computed in decimal so that 0.1 steps stay exact."""
    from optuna.distributions import FloatDistribution, IntDistribution

    start, step = value.start, value.step
    if all(isinstance(v, int) for v in (start, value.stop, step)):
        last = start + (count - 1) * step
        return IntDistribution(min(start, last), max(start, last), step=abs(step))
    first, delta = Decimal(str(start)), Decimal(str(step))
    last = first + (count - 1) * delta
    return FloatDistribution(float(min(first, last)), float(max(first, last)), step=float(abs(delta)))
