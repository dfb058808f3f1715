"""`hubexport package DIR`: the archive tfhub.dev accepted, or (--kaggle) the
directory a Kaggle Models upload takes."""

from absl import flags

from hubexport.commands.shared import OUTPUT, OVERWRITE, OVERWRITE_ANY_SAVED_MODEL, say
from hubexport.errors import UserError

_KAGGLE = flags.DEFINE_string(
    "kaggle", None,
    "package: OWNER/MODEL/tensorFlow2/VARIATION: write the directory a Kaggle Models "
    "upload takes (to --output=DIR) instead of the archive; --overwrite replaces only "
    "a directory this wrote.")
_LICENSE = flags.DEFINE_string(
    "license", None,
    "package --kaggle: the license, a name of Kaggle's list (e.g. \"Apache 2.0\", "
    "\"MIT\", \"CC BY 4.0\"); required unless the model card states one.")

FLAG_NAMES = {"output", "overwrite", "overwrite_any_saved_model", "kaggle", "license"}


def run(paths):
    if len(paths) != 1:
        raise UserError(
            f"package takes one SavedModel directory; received {len(paths)} "
            "(e.g. hubexport package models/mobilenet_v2)")
    if _KAGGLE.value is not None:
        return _for_kaggle(paths[0])
    if _LICENSE.value is not None:
        raise UserError("--license is a flag of package --kaggle only (a tfhub.dev "
                        "archive's license is its card's license line); add "
                        "--kaggle=OWNER/MODEL/tensorFlow2/VARIATION or drop --license")
    from hubexport.publish import package

    print(package.package(paths[0], OUTPUT.value, overwrite=OVERWRITE.value,
                          overwrite_any_saved_model=OVERWRITE_ANY_SAVED_MODEL.value))
    return 0


def _for_kaggle(directory):
    if OVERWRITE_ANY_SAVED_MODEL.value:
        raise UserError("--overwrite_any_saved_model is not for package --kaggle: it "
                        "replaces only a directory it wrote (--overwrite)")
    from hubexport.publish import kaggle

    print(kaggle.package(directory, _KAGGLE.value, OUTPUT.value,
                         license_name=_LICENSE.value, overwrite=OVERWRITE.value, log=say))
    return 0
