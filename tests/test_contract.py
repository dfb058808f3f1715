"""hubexport.contract against the document it restates and the code it describes.

The tests down to "Against the exporter" import no TensorFlow (the repository
has no marker for that yet); the ones after it do, to tie the contract's
tables and the provenance files of tests/data/ to what the code writes today.

tests/data/provenance_*.json are the assets.extra/hubexport.json of real
exports of RECIPES, and model_card_*.md their assets.extra/model_card.md,
written by `.venv/bin/python tests/data/make_provenance.py`;
test_fixture_is_what_the_exporter_writes_today fails when they drift.
"""

import ast
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from hubexport import contract

HERE = os.path.dirname(os.path.abspath(__file__))
DOCUMENT = os.path.join(HERE, "..", "docs", "HUB_CONTRACT.md")
DATA = os.path.join(HERE, "data")
PACKAGE = os.path.join(HERE, "..", "hubexport")
CONTRACT_PACKAGE = os.path.join(PACKAGE, "contract")  # Where every contract value is written.

# File in tests/data/ -> the export it is the provenance of (labels: how many).
RECIPES = {
    "provenance_mobilenet_v2_feature_vector.json": dict(
        architecture="MobileNetV2", task="feature_vector", image_size=32, weights="none"),
    "provenance_mobilenet_v2_top_k.json": dict(
        architecture="MobileNetV2", task="classification", image_size=32, weights="none",
        labels=1000, top_k=3),
}


def plan_of(recipe, directory):
    """export.plan of `recipe`, its labels (if any) written to `directory`."""
    from hubexport import export

    recipe = dict(recipe)
    if "labels" in recipe:
        path = os.path.join(directory, "labels.txt")
        with open(path, "w") as f:
            f.write("".join(f"class {i}\n" for i in range(recipe["labels"])))
        recipe["labels"] = path
    return export.plan(**recipe)


def card_of(name):
    """The model card fixture of the provenance fixture `name`."""
    return name.replace("provenance_", "model_card_").replace(".json", ".md")


def _read(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


def _document():
    with open(DOCUMENT, encoding="utf-8") as f:
        return f.read()


# --- Clauses ------------------------------------------------------------------


@pytest.mark.notf
def test_clause_ids_are_the_documents_in_order():
    ids = re.findall(r"^- \*\*([A-Z]\d+)\*\*", _document(), re.MULTILINE)
    assert ids == list(contract.CLAUSES)
    assert all(text and "\n" not in text for text in contract.CLAUSES.values())


@pytest.mark.notf
def test_sections_are_the_documents_headings_with_their_clauses():
    found = []
    for block in _document().split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        ids = tuple(re.findall(r"^- \*\*([A-Z]\d+)\*\*", body, re.MULTILINE))
        if ids:
            found.append((heading, ids))
    assert found == [(s.heading, s.clauses) for s in contract.SECTIONS]
    assert contract.section_of("C3").name == "Call"
    with pytest.raises(KeyError, match="unknown clause 'Z9'; allowed: F1, F2, R1"):
        contract.section_of("Z9")


@pytest.mark.notf
def test_importing_the_contract_starts_no_tensorflow_and_no_other_module():
    """Only hubexport, the contract package and its own submodules (all of them) load."""
    code = ("import sys, hubexport.contract; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'numpy', 'keras', 'tf_keras', 'hubexport')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=os.path.join(HERE, ".."))
    submodules = sorted(f"hubexport.contract.{os.path.basename(path)[:-3]}"
                        for path in glob.glob(os.path.join(CONTRACT_PACKAGE, "*.py"))
                        if not path.endswith("__init__.py"))
    assert submodules  # The contract is a package of submodules.
    assert result.stdout.strip() == repr(["hubexport", "hubexport.contract", *submodules])


@pytest.mark.notf
def test_gradient_batch_shrinks_past_224_pixels_square():
    assert contract.gradient_batch(224, 224) == contract.CHECK_BATCH == 3
    assert contract.gradient_batch(250, 250) == 2
    assert contract.gradient_batch(600, 600) == 1


# --- Endpoints ------------------------------------------------------------------


@pytest.mark.notf
def test_every_endpoint_row_names_known_values():
    kinds = {contract.FUNCTION, contract.SIGNATURE, contract.ATTRIBUTE, contract.ASSET}
    presence = {contract.ALWAYS, contract.WITH_LABELS, contract.WITH_RAW_IMAGES}
    for row in contract.ENDPOINTS:
        assert row.clause in contract.CLAUSES, row
        assert row.kind in kinds and row.present in presence, row
        assert row.compared_with is None or row.compared_with in contract.COMPARISONS, row
        callable_ = row.kind in (contract.FUNCTION, contract.SIGNATURE)
        assert (row.input_name is not None) == callable_, row
    keys = [(row.kind, row.name) for row in contract.ENDPOINTS]
    assert len(keys) == len(set(keys))


@pytest.mark.notf
def test_endpoints_by_presence():
    names = [row.name for row in contract.endpoints(labels=False, raw_images=False)]
    assert names == ["__call__", "serve", "serve_training", "variables",
                     "trainable_variables", "regularization_losses", "serving_default"]
    assert contract.signature_names(labels=True) == [
        "serving_default", "top_k", "serving_image_bytes", "serving_uint8"]
    assert contract.signature_names(labels=False, raw_images=False) == ["serving_default"]


@pytest.mark.notf
@pytest.mark.parametrize("name", RECIPES)
def test_the_provenances_signatures_are_the_tables(name):
    info = json.loads(_read(name))
    assert info["signatures"] == contract.signature_names(labels=info["labels"] is not None)


@pytest.mark.notf
@pytest.mark.parametrize("name", RECIPES)
def test_the_card_of_a_fixture_is_the_one_its_export_wrote(name):
    """model_card.render of the provenance, byte for byte (the card's endpoint lines
    are the table's `card` column, the network-architecture the table's tfhub)."""
    from hubexport.publish import model_card

    assert model_card.render(json.loads(_read(name))) == _read(card_of(name))


def _named_in(card, row):
    """Whether the model card names the endpoint `row`, as a user calls it."""
    if row.kind == contract.SIGNATURE or any(
            other.kind == contract.SIGNATURE and other.name == row.name
            for other in contract.ENDPOINTS):  # obj.top_k is the top_k signature's.
        return f"signature `{row.name}`" in card
    if row.name == contract.CALL:
        return "`obj(images, training=False)`" in card
    return f"`obj.{row.name}(images)`" in card


@pytest.mark.notf
@pytest.mark.parametrize("labels", [False, True])
def test_the_card_names_every_endpoint_an_export_has(labels):
    from hubexport.publish import model_card

    (name,) = [name for name, recipe in RECIPES.items() if ("labels" in recipe) == labels]
    card = model_card.render(json.loads(_read(name)))
    rows = [row for row in contract.endpoints(labels=labels)
            if row.kind in (contract.FUNCTION, contract.SIGNATURE)]
    assert [row.name for row in rows if not _named_in(card, row)] == []
    assert all(_named_in(card, row) == (row in rows) for row in contract.ENDPOINTS
               if row.kind == contract.SIGNATURE)  # And no other signature.


def _literal(node):
    """The value of a literal (os.path.join of literals too), or a KeyError."""
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
        return os.path.join(*map(_literal, node.args))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise KeyError(ast.unparse(node)) from None


def _module_constants(path):
    """(line, name, value) of each module-level NAME = literal of the file `path`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = node.value.elts if isinstance(target, ast.Tuple) else [node.value]
            for name, value in zip(names, values):
                try:
                    yield node.lineno, ast.unparse(name), _literal(value)
                except KeyError:
                    pass


def _contract_value(name, value):
    """The contract's constants that `value` equals (ints only for a batch budget)."""
    if isinstance(value, bool) or (isinstance(value, int) and not re.search(
            "BATCH|PIXELS", name)):
        return []
    return [key for key, known in vars(contract).items()
            if key.isupper() and type(known) is type(value) and known == value]


def _redefinitions(package):
    """"path:line NAME = value (contract.X)" of each contract value written again in a
    module of `package` outside its contract/ (the contract's home: every submodule)."""
    home = os.path.join(os.path.abspath(package), "contract") + os.sep
    return [f"{os.path.relpath(path, package)}:{line} {name} = {value!r} "
            f"(contract.{'/'.join(_contract_value(name, value))})"
            for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True))
            if not os.path.abspath(path).startswith(home)
            for line, name, value in _module_constants(path) if _contract_value(name, value)]


@pytest.mark.notf
def test_no_module_redefines_a_contract_value():
    """Every tolerance, batch budget, endpoint name, file and task is imported from
    hubexport.contract, never written again (a module-level constant of equal value)."""
    assert _redefinitions(PACKAGE) == []


@pytest.mark.notf
def test_a_redefinition_outside_the_contract_package_is_found(tmp_path):
    """The scan reads every submodule of the contract as home, and nothing else: a
    contract value written again in another module (even one named like a submodule
    of the contract) is reported."""
    package = tmp_path / "hubexport"
    (package / "contract").mkdir(parents=True)
    (package / "contract" / "tolerances.py").write_text("CHECK_BATCH = 3\n")
    (package / "check").mkdir()
    (package / "check" / "tolerances.py").write_text("CHECK_BATCH = 3\nOTHER = 3\n")
    (package / "labels.py").write_text("import os\nFILE = os.path.join('assets', 'labels.txt')\n")
    assert _redefinitions(str(package)) == [
        "check/tolerances.py:1 CHECK_BATCH = 3 (contract.CHECK_BATCH)",
        "labels.py:2 FILE = 'assets/labels.txt' (contract.LABELS_FILE)"]


# --- Layers -----------------------------------------------------------------------

# hubexport's parts, lowest first. A module imports (at its top or inside a
# function) only from its own part or from a lower layer: the contract from
# nothing, the exporter and the checker from neither, nothing below the
# command line from it. The entry points, the CLI and the batch worker's
# process (python -m hubexport.batch.worker), sit on top.
LAYERS = (
    ("contract", "errors", "names", "startup", "grappler", "preprocessing"),
    ("config", "weights", "atomic", "architectures", "serving"),
    ("reports", "labels", "own_model", "reusable", "publish", "keras"),
    ("export", "check"),
    ("batch",),
    ("checker",),
    ("catalog",),
    ("commands",),
    ("cli", "batch.worker"),
)


def _imports(package):
    """{module: the hubexport modules it imports anywhere in its code}."""
    modules = {}
    for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True):
        name = ".".join(["hubexport", *os.path.relpath(path, package)[:-3].split(os.sep)])
        modules[name.removesuffix(".__init__")] = path
    imports = {}
    for name, path in modules.items():
        found = set()
        with open(path) as f:
            for node in ast.walk(ast.parse(f.read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hubexport"):
                    found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                              else node.module for a in node.names}
                elif isinstance(node, ast.Import):
                    found |= {a.name for a in node.names if a.name.startswith("hubexport.")}
        imports[name] = found - {name}
    return imports


def _part(module):
    parts = module.split(".")[1:]
    return "batch.worker" if parts[:2] == ["batch", "worker"] else (parts or ["hubexport"])[0]


def _layer_breaches(imports):
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    return sorted(f"{module} imports {target}" for module, targets in imports.items()
                  for target in targets
                  if _part(target) not in (_part(module), "hubexport")
                  and not layer[_part(target)] < layer[_part(module)])


def _cycle(imports):
    """One import cycle among the modules (a list ending where it starts), or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(imports.get(module, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    return next(filter(None, map(visit, sorted(imports))), None)


@pytest.mark.notf
def test_every_part_imports_only_below_it_and_no_module_imports_itself_back():
    imports = _imports(PACKAGE)
    assert {_part(m) for m in imports} - {"hubexport"} == {p for ps in LAYERS for p in ps}
    assert _layer_breaches(imports) == []
    assert _cycle(imports) is None


@pytest.mark.notf
def test_an_upward_import_and_a_cycle_are_found():
    imports = {"hubexport.check.call": {"hubexport.contract", "hubexport.catalog"},
               "hubexport.catalog": {"hubexport.checker"},
               "hubexport.checker": {"hubexport.check.call"}}
    assert _layer_breaches(imports) == ["hubexport.check.call imports hubexport.catalog"]
    assert _cycle(imports) == ["hubexport.catalog", "hubexport.checker",
                               "hubexport.check.call", "hubexport.catalog"]


# --- Provenance -------------------------------------------------------------------


def _unknown_keys(record, path=""):
    """The keys of `record` and its nested records that landed in `extra`."""
    found = [f"{path}{key}" for key in record.extra]
    for field in record.json_fields():
        value = getattr(record, field.name)
        if isinstance(value, contract._Record):
            found += _unknown_keys(value, f"{path}{field.name}.")
    return found


def _as_built(record):
    """`record` as the exporter would build it: fields only, no read_keys."""
    values = {}
    for field in record.json_fields():
        value = getattr(record, field.name)
        values[field.name] = _as_built(value) if isinstance(value, contract._Record) else value
    return type(record)(**values)


@pytest.mark.notf
@pytest.mark.parametrize("name", RECIPES)
def test_provenance_reads_a_real_file_and_gives_it_back_unchanged(name):
    text = _read(name)
    provenance = contract.Provenance.from_json(json.loads(text))
    assert json.dumps(provenance.to_json(), indent=2) + "\n" == text
    assert _unknown_keys(provenance) == []  # Every key has its typed field.
    recipe = RECIPES[name]
    assert (provenance.version, provenance.is_hubexport) == (1, True)
    assert (provenance.architecture, provenance.task) == (recipe["architecture"], recipe["task"])
    assert provenance.image_size == 32 and provenance.serving_size == [32, 32]
    assert provenance.output.key == contract.OUTPUT_KEYS[recipe["task"]]
    assert provenance.input.min_size == 32 and provenance.weights.source == "none"
    assert provenance.top_k == recipe.get("top_k")
    if "labels" in recipe:
        assert provenance.labels == contract.Labels(count=1000, file=contract.LABELS_FILE)
        assert provenance.input.shape == [None, 32, 32, 3]
    else:
        assert provenance.labels is None and provenance.output.activation is None
        assert provenance.input.shape == [None, None, None, 3]


@pytest.mark.notf
@pytest.mark.parametrize("name", RECIPES)
def test_a_provenance_built_in_python_writes_todays_json(name):
    """What export.provenance will build (no read_keys) writes the same file."""
    text = _read(name)
    built = _as_built(contract.Provenance.from_json(json.loads(text)))
    assert built.read_keys is None
    assert json.dumps(built.to_json(), indent=2) + "\n" == text


OTHER_TOOL = {
    "written_by": "another tool",
    "task": "classification",
    "output": {"size": 10, "units": "logits", "activation": None},
    "image_size": "large",
    "input": {"min_size": True, "shape": [None, 64, 64, 3]},
    "labels": 12,
    "versions": {"tensorflow": "2.21.0", "build": 7},
    "format": "other-provenance/3",
}


@pytest.mark.notf
def test_from_json_takes_another_tools_file_and_keeps_what_it_does_not_know():
    provenance = contract.Provenance.from_json(OTHER_TOOL)
    assert provenance.task == "classification"
    assert (provenance.architecture, provenance.source, provenance.verification) == (
        None, None, None)
    assert (provenance.output.size, provenance.output.key, provenance.output.activation) == (
        10, None, None)
    assert provenance.input.shape == [None, 64, 64, 3]
    # Values of an unexpected type: the field is None, the value kept as read.
    assert (provenance.image_size, provenance.labels, provenance.input.min_size) == (
        None, None, None)
    assert provenance.versions is None
    assert _unknown_keys(provenance) == [
        "written_by", "image_size", "labels", "versions", "input.min_size", "output.units"]
    assert (provenance.version, provenance.is_hubexport) == (None, False)
    assert json.dumps(provenance.to_json()) == json.dumps(OTHER_TOOL)


@pytest.mark.notf
def test_a_changed_field_is_written_where_it_was_read_and_a_new_one_last():
    read = contract.Provenance.from_json(OTHER_TOOL)
    changed = dataclasses.replace(read, task="feature_vector", image_size=64,
                                  architecture="MobileNetV2")
    written = changed.to_json()
    assert list(written) == [*OTHER_TOOL, "architecture"]
    assert (written["task"], written["image_size"], written["architecture"]) == (
        "feature_vector", 64, "MobileNetV2")


@pytest.mark.notf
def test_from_json_refuses_what_is_not_a_json_object():
    with pytest.raises(TypeError, match="Provenance.from_json takes a dict .* received list"):
        contract.Provenance.from_json([1, 2])


@pytest.mark.notf
def test_an_empty_record_reads_as_all_none_and_writes_nothing():
    provenance = contract.Provenance.from_json({})
    assert all(getattr(provenance, f.name) is None for f in provenance.json_fields())
    assert provenance.to_json() == {}


# --- Against the exporter (these import TensorFlow) ---------------------------------

VOLATILE = ("request_key", "versions.")  # Depend on the installed versions.


def _flatten(value, path=""):
    """[(dotted key, leaf value)] of a JSON object, in order."""
    if not isinstance(value, dict):
        return [(path, value)]
    return [pair for key, item in value.items() for pair in _flatten(item, f"{path}{key}.")]


@pytest.mark.parametrize("name", RECIPES)
def test_fixture_is_what_the_exporter_writes_today(name, tmp_path):
    """export.provenance of the recipe's plan and build, key by key, against the file
    (the verification's difference is the file's: it is a measurement)."""
    from hubexport import export

    fixture = json.loads(_read(name))
    plan = plan_of(RECIPES[name], str(tmp_path))
    difference = fixture["verification"]["max_relative_difference"]
    today = export.provenance(plan, export.build_model(plan), difference)
    wanted, got = _flatten(fixture), _flatten(today)
    assert [key for key, _ in got] == [key for key, _ in wanted]
    for (key, value), (_, expected) in zip(got, wanted):
        if key.startswith(VOLATILE):
            assert type(value) is type(expected), key
        else:
            assert value == expected, key
    assert contract.Provenance.from_json(today).to_json() == today


def test_the_names_modules_still_export_are_the_contracts():
    """The old names that other modules and tests read are the contract's objects."""
    from hubexport import architectures, checker, export, reusable, serving
    from hubexport.export import verification

    assert architectures.TASKS is contract.TASKS and checker.TASKS is contract.TASKS
    assert export.PROVENANCE_FILE is contract.PROVENANCE_FILE
    assert export.TOLERANCE is verification.TOLERANCE is contract.VERIFICATION_TOLERANCE
    assert (serving.TOP_K_RTOL, serving.TOP_K_ATOL) == (contract.TOP_K_RTOL, contract.TOP_K_ATOL)
    assert not hasattr(reusable, "OUTPUT_KEYS")  # Read from the contract.


def test_check_refuses_an_unknown_clause():
    from hubexport.check import context

    before = list(context.REGISTERED)
    with pytest.raises(ValueError, match=r"@check\('Z9'\): not a clause of HUB_CONTRACT.md; "
                                         r"allowed: F1, F2, R1, R2"):
        context.check("Z9")
    assert context.REGISTERED == before


def test_each_check_module_holds_one_section_of_the_contract():
    from hubexport import check, checker

    sections = {}
    for entry in checker.all_checks():
        module = entry.function.__module__.rsplit(".", 1)[-1]
        sections.setdefault(module, set()).add(contract.section_of(entry.clause).name)
    assert set(sections) == set(check.GROUPS)
    assert {module: len(names) for module, names in sections.items()} == dict.fromkeys(
        check.GROUPS, 1), sections


def test_every_check_an_endpoint_names_exists():
    from hubexport import checker

    known = {entry.name for entry in checker.all_checks()}
    named = {name for row in contract.ENDPOINTS for name in row.checks}
    assert named <= known, named - known


# tf.saved_model.save's own entries: the signature map, and the op that
# initializes assets and tables.
SAVED_MODEL_OWN = {"signatures", "__saved_model_init_op"}


@pytest.mark.parametrize("labels", [False, True])
def test_endpoints_are_what_a_saved_root_has(labels, keras, tmp_path):
    """make_root on a tiny model, saved: the root's children and the signature keys."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from hubexport import reusable

    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    labels_path = tmp_path / "labels.txt"
    labels_path.write_text("a\nb\nc\n")
    extras = reusable.Extras(serving_size=(8, 8), labels=("a", "b", "c") if labels else None,
                             top_k=2, labels_path=str(labels_path) if labels else None)
    root, signatures, _ = reusable.make_root(model, "tf", "classification", 8, 8, extras)
    tf.saved_model.save(root, str(tmp_path / "model"), signatures=signatures)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "model" / "saved_model.pb").read_bytes())
    meta_graph = saved.meta_graphs[0]
    children = {c.local_name for c in meta_graph.object_graph_def.nodes[0].children}
    rows = contract.endpoints(labels=labels)
    assert children - SAVED_MODEL_OWN == {r.name for r in rows if r.kind != contract.SIGNATURE}
    assert set(meta_graph.signature_def) - SAVED_MODEL_OWN == set(
        contract.signature_names(labels=labels))


def test_every_row_has_a_builder_and_every_builder_a_row():
    from hubexport import reusable

    rows = [(row.kind, row.name) for row in contract.ENDPOINTS]
    assert sorted(reusable.BUILDERS) == sorted(rows)
    reusable.check_builders()


def test_make_root_refuses_a_row_without_a_builder(monkeypatch):
    """Adding an endpoint is a row and a builder: the row alone is refused."""
    from hubexport import reusable

    row = dataclasses.replace(contract.ENDPOINTS[-1], name="serving_new")
    monkeypatch.setattr(contract, "ENDPOINTS", contract.ENDPOINTS + (row,))
    with pytest.raises(RuntimeError, match=r"rows without a builder: \[\('signature', "
                                           r"'serving_new'\)\], builders without a row: \[\]"):
        reusable.make_root(None, "tf", "feature_vector")


def test_make_root_refuses_a_builder_without_a_row(monkeypatch):
    from hubexport import reusable

    monkeypatch.setitem(reusable.BUILDERS, (contract.FUNCTION, "extra"), lambda parts: None)
    with pytest.raises(RuntimeError, match=r"rows without a builder: \[\], builders without a "
                                           r"row: \[\('attribute function', 'extra'\)\]"):
        reusable.make_root(None, "tf", "feature_vector")
