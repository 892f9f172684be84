#!/usr/bin/env python3
"""Cases for the `to_yaml` emitter check, written by libyaml's emitter.

go-yaml v2's emitter (what Helm's toYaml ends in) is a port of libyaml's, so
libyaml (through PyYAML's CEmitter) is an independent judge of how a value is
laid out, quoted and folded. Prints a JSON list of {"value", "expected"} to
stdout: `libyaml_cases.py SEED COUNT`.

Every string is one go-yaml reads back as a string (it never starts like a
number, a boolean or null), so the style asked for is plain, or a literal
block when it holds a newline, as go-yaml's encoder asks. U+2028 is left out:
libyaml 0.2 writes an indent before the closing quote of a single-quoted
string that ends in one, go-yaml v2 does not.
"""
import json
import random
import sys

import yaml
from yaml.events import (DocumentEndEvent, DocumentStartEvent, MappingEndEvent,
                         MappingStartEvent, ScalarEvent, SequenceEndEvent,
                         SequenceStartEvent, StreamEndEvent, StreamStartEvent)

PIECES = ["a", "b", "c", "ab", "word", "longerword", " ", "  ", ":", "#", "-",
          "'", '"', "\n", "\t", "\u00e9", "\U0001F600", "*", "&", "@", "%",
          "[", "]", "{", "}", "|", ">", ",", "?", "!", "`", "\\", "x" * 30]
WORDS = ["word", " ", "ab", " ", "c"]


def random_string(rng):
    count = rng.choice([1, 3, 8, 20, 40, 60, 90, 140])
    s = "".join(rng.choice(PIECES if rng.random() < 0.5 else WORDS) for _ in range(count))
    if s[0] in "yYnNtTfFoO~.+-0123456789":
        s = "q" + s
    return s


def scalar(s):
    return ScalarEvent(None, None, (True, True), s, style="|" if "\n" in s else None)


def key(name):
    return ScalarEvent(None, None, (True, True), name)


def mapping(*pairs):
    events = [MappingStartEvent(None, None, True, flow_style=False)]
    for k, v in pairs:
        events += [key(k)] if isinstance(k, str) else k
        events += v
    return events + [MappingEndEvent()]


def sequence(*items):
    events = [SequenceStartEvent(None, None, True, flow_style=False)]
    for item in items:
        events += item
    return events + [SequenceEndEvent()]


def shapes(s):
    """(value, events) for `s` in each position a value can take."""
    v = [scalar(s)]
    return [
        (s, v),
        ({"key": s}, mapping(("key", v))),
        ({"key": {"inner": s, "z": s}}, mapping(("key", mapping(("inner", v), ("z", v))))),
        ([s, s], sequence(v, v)),
        ({"key": [s, {"k3": s}, [s]], "last": s},
         mapping(("key", sequence(v, mapping(("k3", v)), sequence(v))), ("last", v))),
        ({s: "v"}, mapping(([scalar(s)], [key("v")]))),
    ]


def emit(events):
    stream = [StreamStartEvent(), DocumentStartEvent(explicit=False)] + events
    stream += [DocumentEndEvent(explicit=False), StreamEndEvent()]
    out = yaml.emit(stream, Dumper=yaml.CDumper, width=80, indent=2, allow_unicode=True)
    # go-yaml ends the stream without libyaml's `...` after a bare scalar,
    # and Helm trims the last newline.
    out = out.removesuffix("...\n")
    return out.removesuffix("\n")


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        value, events = rng.choice(shapes(random_string(rng)))
        cases.append({"value": value, "expected": emit(events)})
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
