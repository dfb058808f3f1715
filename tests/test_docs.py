"""The README names every check (the list a user reads to know what is verified)."""

import os

from hubexport import check

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_the_readme_names_every_check_with_its_clause():
    with open(README) as f:
        text = f.read()
    listing = text[text.index("Checks, by clause:"):]
    listing = listing[:listing.index("The Python API")]
    missing = [c.name for c in check.CHECKS if f"`{c.name}`" not in listing]
    assert not missing, f"README.md's 'Checks, by clause' does not name {missing}"
    for c in check.CHECKS:  # Under its own clause: the clause comes before it.
        assert c.clause in listing[:listing.index(f"`{c.name}`")]
