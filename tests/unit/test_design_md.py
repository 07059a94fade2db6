"""docs/design.md and the code agree: every citation of a section names one."""
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[2]


def sections():
    text = (ROOT / "docs" / "design.md").read_text()
    return {m.group(1).split(" (")[0].strip() for m in re.finditer(r"^## (.+)$", text, re.M)}


def citations():
    """(file, section) of every citation of design.md's sections (its name, a comma,
    the section's title in double quotes) in lrmpi/, ext/ and tests/."""
    for folder in ("lrmpi", "ext", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".pyx", ".pxd", ".c", ".h") or \
                    path.name == "kernels.c":  # Cython's output
                continue
            text = re.sub(r"\s+", " ", path.read_text())
            for m in re.finditer(r'design\.md, "([^"]+)"', text):
                yield path.relative_to(ROOT), m.group(1)


def test_every_citation_names_a_section():
    found = list(citations())
    assert len(found) >= 10  # the code does cite the invariants it relies on
    names = sections()
    assert [(str(p), s) for p, s in found if s not in names] == []
