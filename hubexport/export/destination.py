"""Where an export may be written: the output's safety rules.

Checked before the model is built (the CLI checks before it imports
TensorFlow) and again just before the move into place (write._install): an
existing output is replaced only if hubexport wrote it (or, when asked, if it
is any SavedModel), never if it is or holds one of the export's inputs.
"""

import os
import tempfile

from hubexport import contract
from hubexport.errors import UserError
from hubexport.contract import PROVENANCE_FILE, read_provenance


def check_destination(plan, output, overwrite=False, overwrite_any_saved_model=False,
                      inputs=()):
    """`output` made absolute, once `plan`'s export may write it there.

    check_output (with plan_inputs(plan) among the inputs), then
    check_writable_parent: what export() does first, and what the CLI calls
    before it imports TensorFlow.
    """
    output = os.path.abspath(os.path.expanduser(output))
    check_output(output, overwrite, overwrite_any_saved_model, (*inputs, *plan_inputs(plan)))
    check_writable_parent(output)
    return output


def plan_inputs(plan):
    """The files an export of `plan` reads: its own model file and weights file."""
    paths = [plan.weights.path if plan.weights.source == "file" else None]
    if plan.keras_model is not None:
        paths.append(plan.keras_model.path)
    return tuple(path for path in paths if path)


def check_output(output, overwrite=False, overwrite_any_saved_model=False, inputs=(),
                 flag="--output"):
    """Refuses an output whose replacement could lose what hubexport did not write.

    An existing output may be replaced (with overwrite) only if it is an empty
    directory or a SavedModel carrying hubexport's provenance, or (with
    overwrite_any_saved_model) any SavedModel directory. An output that is,
    or contains, one of `inputs` (model, weights, labels or config files) is
    refused in any case. Checked before the model is built and again just
    before the move into place (_install): a long export gives a directory
    time to change.
    """
    shown = f"{flag}={output}" if flag else output
    problem = (inputs_refusal(output, inputs, shown)
               or replace_refusal(output, overwrite, overwrite_any_saved_model, shown))
    if problem:
        raise UserError(problem)


def inputs_refusal(output, inputs, shown):
    """Why `output` may not be written because it is or holds an input, or None."""
    target = os.path.realpath(output)
    for path in inputs:
        if not path:
            continue
        real = os.path.realpath(os.path.expanduser(path))
        if real == target or os.path.commonpath([real, target]) == target:
            where = "is" if real == target else "contains"
            return (f"{shown} {where} the input {path}; replacing it would destroy "
                    "what the export is made from: choose another output directory")
    return None


def replace_refusal(output, overwrite, overwrite_any_saved_model, shown):
    """Why the existing `output` may not be replaced, or None (see check_output)."""
    if os.path.islink(output):
        return f"{shown} is a symlink; pass the directory it points to, or another path"
    if not os.path.exists(output):
        return None
    if not os.path.isdir(output):
        return f"{shown} is a file; pass a directory path"
    entries = sorted(os.listdir(output))
    if not entries or written_by_hubexport(output):
        if overwrite or overwrite_any_saved_model:
            return None
        return (f"{shown} already exists; pass --overwrite to replace it, "
                "or choose another directory")
    if is_saved_model(output):
        if overwrite_any_saved_model:
            return None
        return (f"{shown} is a SavedModel that hubexport did not write (no {PROVENANCE_FILE} "
                "of hubexport's); --overwrite replaces only hubexport's exports: pass "
                "--overwrite_any_saved_model to replace it, or choose another directory")
    return (f"{shown} {describe_contents(output, entries)}; hubexport replaces only a "
            "SavedModel directory, never other files: choose another directory")


def written_by_hubexport(directory):
    """A SavedModel directory with hubexport's provenance file (a JSON object)."""
    info = read_provenance(directory)
    return (os.path.isfile(os.path.join(directory, "saved_model.pb"))
            and isinstance(info, dict)
            and contract.Provenance.from_json(info).is_hubexport)


def is_saved_model(directory):
    """saved_model.pb and variables/: what tf.saved_model.save writes."""
    return (os.path.isfile(os.path.join(directory, "saved_model.pb"))
            and os.path.isdir(os.path.join(directory, "variables")))


_LISTED = 5  # Entries a refusal names; the rest are counted.


def describe_contents(directory, entries):
    """"holds 3 entries and no saved_model.pb: README.md, src/, x.py"."""
    names = [f"{e}/" if os.path.isdir(os.path.join(directory, e)) else e for e in entries]
    missing = ("no saved_model.pb" if "saved_model.pb" not in entries
               else "saved_model.pb but no variables/")
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    count = f"{len(names)} {'entry' if len(names) == 1 else 'entries'}"
    return f"holds {count} and {missing}: {', '.join(names[:_LISTED])}{more}"


def check_writable_parent(output, flag="--output"):
    """Refuses an output whose nearest existing ancestor cannot be written.

    Tried for real (a directory made and removed there): permissions, a
    read-only mount and ACLs all answer. Done before the model is built, so the
    error names the user's path, not the staging directory beside it.
    """
    ancestor = os.path.dirname(output)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UserError(f"{flag}={output} cannot be written: {ancestor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hubexport-probe-", dir=ancestor))
    except OSError as e:
        raise UserError(
            f"{flag}={output} cannot be written: {ancestor} is not writable "
            f"({e.strerror}); choose a directory you can write to") from None
