"""Names in messages: the closest to a wrong one, and families written once; no TensorFlow.

    names.did_you_mean("MobileNetV5", ARCHITECTURES)  # "did you mean MobileNetV2, ...? "
    names.compact(["ResNet50", "ResNet101"])          # "ResNet{50,101}"
"""

import difflib
import re


def closest(name, choices, n=3):
    """Up to `n` of `choices` that look like `name`, the closest first."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def did_you_mean(name, choices):
    """"did you mean A, B? " naming the closest of `choices` to `name`, or "" if none is
    close: the start of an error's hint, before its "allowed: ..."."""
    close = closest(name, choices)
    return f"did you mean {', '.join(close)}? " if close else ""


def compact(names):
    """Names that differ only in a final number, as one: ResNet{50,101,152}."""
    families = {}
    for name in names:
        stem, number = re.fullmatch(r"(.*?)(\d*)", name).groups()
        families.setdefault(stem if number else name, []).append(number)
    return ", ".join(stem + (f"{{{','.join(numbers)}}}" if len(numbers) > 1 else numbers[0])
                     for stem, numbers in families.items())
