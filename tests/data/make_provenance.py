"""Writes the provenance files and model cards of tests/data/ from real exports
(needs TensorFlow).

    .venv/bin/python tests/data/make_provenance.py

For each recipe of tests/test_contract.py's RECIPES: export.export of it
(weights=none, 32x32) to a temporary directory, then its
assets.extra/hubexport.json and assets.extra/model_card.md copied here byte
for byte (provenance_<name>.json, model_card_<name>.md). Run it again when the
exporter's provenance or card changes on purpose (test_contract's
test_fixture_is_what_the_exporter_writes_today and
test_the_card_of_a_fixture_is_the_one_its_export_wrote then say so).
"""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for test_contract.
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # The repository, for hubexport.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    from hubexport import contract, export
    from hubexport.publish import model_card
    import test_contract

    with tempfile.TemporaryDirectory() as scratch:
        for name, recipe in test_contract.RECIPES.items():
            plan = test_contract.plan_of(recipe, scratch)
            output = os.path.join(scratch, name.removesuffix(".json"))
            export.export(plan, output, log=print)
            card = test_contract.card_of(name)
            shutil.copyfile(os.path.join(output, contract.PROVENANCE_FILE),
                            os.path.join(HERE, name))
            shutil.copyfile(os.path.join(output, model_card.CARD_FILE), os.path.join(HERE, card))
            print(f"wrote tests/data/{name} and tests/data/{card}")


if __name__ == "__main__":
    main()
