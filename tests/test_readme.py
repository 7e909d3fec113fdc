"""README.md: what it says that would go stale."""

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_timings_are_only_in_the_benchmarks_section():
    # a duration measured on one machine ("about 0.1 s each") is stale on the next; the
    # steps' sections say what the cost depends on and point to bench/ and the Benchmarks
    # section, whose figures come with their baseline from the same run
    text = README.read_text()
    steps, sep, _ = text.partition("\n## Benchmarks")
    assert sep, "README.md has no Benchmarks section"
    measured = [f"line {steps.count(chr(10), 0, m.start()) + 1}: {m.group()}"
                for m in re.finditer(r"about [\d.,]+ ?(?:ms|s)\b", steps)]
    assert measured == []
