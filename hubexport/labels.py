"""Class labels: read from --labels=FILE, stored in the export as assets/labels.txt.

One label per line; line i (from 0) names class index i. A final newline is
optional; blank lines and surrounding whitespace are refused, because they
shift or hide classes. Duplicates are allowed (ImageNet has two "crane"s).
"""

import os

from hubexport.contract import LABELS_FILE

ASSET_NAME = os.path.basename(LABELS_FILE)  # labels.txt; the export's is LABELS_FILE.


def read(path):
    """The labels in the file `path`, as a tuple; UserError if malformed."""
    from hubexport.errors import UserError

    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"--labels={path}: no such file; pass a text file with one label per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--labels={path} is not a readable UTF-8 text file: {e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UserError(f"--labels={path} is empty; it needs one label per line, one per class")
    for number, line in enumerate(lines, 1):
        if not line.strip() or line != line.strip():
            problem = "is blank" if not line.strip() else "has leading or trailing whitespace"
            raise UserError(
                f"--labels={path}: line {number} {problem}; each line must be the "
                "label of one class (line 1 is class 0)"
            )
    return tuple(lines)


def write(labels, directory):
    """Writes `labels` as directory/labels.txt; returns its path."""
    path = os.path.join(directory, ASSET_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in labels))
    return path


def check_count(labels, num_classes, source):
    """UserError unless there is one label per class."""
    from hubexport.errors import UserError

    if labels is not None and len(labels) != num_classes:
        raise UserError(
            f"--labels has {len(labels)} labels but {source} has {num_classes} "
            f"classes; pass a file with exactly {num_classes} lines (line 1 is class 0)"
        )
