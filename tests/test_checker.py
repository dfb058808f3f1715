"""Tests of `hubexport check`: one good SavedModel, one mutant per check.

Each SavedModel is built once per session and checked once (report_of caches
the reports), which keeps the file within a few minutes on two cores.
"""

import functools
import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hubexport import check
from hubexport import checker
from hubexport import export
from hubexport import reports
from hubexport import serving
from hubexport.check import call as call_checks
from hubexport.check import graph_scan, hyperparameters
from hubexport.check import serving as serving_checks
from hubexport.errors import UserError

import mutants

CHECK_NAMES = [c.name for c in check.CHECKS]
CLAUSES = {c.name: c.clause for c in check.CHECKS}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """models(name, builder) -> the directory of a SavedModel built once."""
    root = tmp_path_factory.mktemp("models")
    built = {}

    def build(name, builder):
        if name not in built:
            builder(str(root / name))
            built[name] = str(root / name)
        return built[name]

    return build


@pytest.fixture(scope="session")
def targets(tmp_path_factory):
    """Where the file-writing mutants would write."""
    return tmp_path_factory.mktemp("targets")


@pytest.fixture(scope="session")
def report_of(models):
    """report_of(name, builder, **check_kwargs) -> a cached ModelReport."""
    cache = {}

    def report(name, builder, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = checker.check(models(name, builder), **kwargs)
        return cache[key]

    return report


def levels(report, level):
    return {f.check for f in report.findings if f.level == level}


def messages(report, check_name):
    return " | ".join(f.message for f in report.findings if f.check == check_name)


# The conforming models.


def test_checks_have_unique_names_and_contract_clauses():
    assert len(set(CHECK_NAMES)) == len(CHECK_NAMES)
    clauses = {"F1", "F2", "R1", "R2", "R3", "R4", "C1", "C2", "C3", "C4", "C5",
               "K1", "K2", "K3"}
    assert set(CLAUSES.values()) == clauses


def test_checks_run_in_the_order_they_ran_in_before_the_package():
    """hubexport/checks.py's order of definition, kept: the fine-tuning checks share
    traces and gradients, so which runs first matters (see hubexport.check.ORDER)."""
    assert CHECK_NAMES == [
        "saved_model_files", "tf2_saved_model", "no_unsafe_ops", "loads", "restored_call",
        "variables", "trainable_variables", "regularization_losses", "input_signature",
        "free_size", "training_argument", "training_call", "deterministic",
        "batch_independent", "output_tensor", "documented_output_size", "output_finite",
        "feature_size_constant", "logits_not_probabilities", "top_k_labels",
        "hyperparameters", "hyperparameter_effects", "training_gradients",
        "hub_fine_tuning", "hub_frozen", "tfsm_layer", "serve_endpoint",
        "serve_training_mode", "serving_signature", "serving_output", "litert_conversion"]


def test_the_fine_tuning_checks_are_tagged():
    """The checks that run the training=True trace carry fine_tuning=True (the catalog
    tier runs them on one architecture per Keras module, tests/test_catalog.py)."""
    tagged = {c.name for c in check.CHECKS if c.fine_tuning}
    assert tagged == {"training_call", "training_gradients", "hub_fine_tuning", "tfsm_layer",
                      "serve_training_mode", "hyperparameter_effects"}


def test_a_check_that_the_order_leaves_out_is_refused():
    unlisted = check.Check("unlisted", "C1", None)
    with pytest.raises(RuntimeError, match=r"it leaves out \['unlisted'\] and names \[\]"):
        check.ordered([*check.CHECKS, unlisted])
    with pytest.raises(RuntimeError, match=r"it leaves out \[\] and names \['loads'\]"):
        check.ordered([c for c in check.CHECKS if c.name != "loads"])


def test_good_model_conforms(report_of):
    report = report_of("good", mutants.good)
    assert not report.fails(strict=True), reports.text([report])
    assert levels(report, "skipped") == {"logits_not_probabilities", "top_k_labels"}
    assert [r.check for r in report.results] == CHECK_NAMES
    assert report.task == "feature_vector"
    assert "serving_default output key 'feature_vector'" in report.task_source
    assert "height and width are free" in messages(report, "input_signature")


def test_good_classifier_conforms(report_of):
    report = report_of("good_classification", mutants.good_classification)
    assert not report.fails(strict=True), reports.text([report])
    assert report.task == "classification"
    assert levels(report, "skipped") == {"feature_size_constant"}
    assert "top_k: 3 of 5 labels by softmax" in messages(report, "top_k_labels")
    assert "batch_norm_momentum=0.99" in messages(report, "hyperparameters")


def test_fixed_size_model_conforms(report_of):
    report = report_of("good_fixed_size", mutants.good_fixed_size)
    assert not report.fails(strict=True), reports.text([report])
    assert "fixed at 40x40" in messages(report, "input_signature")
    assert "fixed" in messages(report, "feature_size_constant")


# One mutant per check.


def test_every_check_has_a_mutant():
    assert set(mutants.MUTANTS) == set(CHECK_NAMES)


def _mutant_builder(check_name, targets):
    builder = mutants.MUTANTS[check_name]
    if builder is mutants.writes_file:
        return functools.partial(builder, target=str(targets / "blocked.txt"))
    return builder


@pytest.mark.parametrize("check_name", CHECK_NAMES)
def test_mutant_fails_exactly_its_check(check_name, report_of, targets):
    report = report_of(check_name, _mutant_builder(check_name, targets),
                       **mutants.CHECK_OPTIONS.get(check_name, {}))
    failed = {(f.check, f.clause) for f in report.findings if f.level == "error"}
    assert failed == {(check_name, CLAUSES[check_name])}, reports.text([report])
    assert report.fails()


# Checks that still run on a mutant that loads: most of them.
_LOAD_BLOCKERS = {"saved_model_files", "tf2_saved_model", "no_unsafe_ops", "loads",
                  "restored_call"}


@pytest.mark.parametrize("check_name", sorted(set(CHECK_NAMES) - _LOAD_BLOCKERS))
def test_mutants_are_minimal(check_name, report_of, targets):
    report = report_of(check_name, _mutant_builder(check_name, targets))
    # top_k_labels checks an optional signature that only good_classification
    # has; the checks that need what the mutant breaks skip, citing it.
    skipped = {f.check for f in report.findings
               if f.level == "skipped" and f"(see {check_name})" not in f.message}
    assert len(skipped - {"top_k_labels"}) <= 2, reports.text([report])


@pytest.mark.parametrize("check_name, expected", [
    ("saved_model_files", "tfhub_module.pb marks the obsolete TF1 Hub format"),
    ("tf2_saved_model", "TF1 SavedModel: it has no object graph"),
    ("no_unsafe_ops", "op WriteFile"),
    ("loads", "tf.saved_model.load failed"),
    ("restored_call", "obj.__call__ is missing"),
    ("variables", "obj.__call__ uses 1 variable missing from obj.variables: "
                  "bn/moving_mean"),
    ("trainable_variables", "1 variable in obj.trainable_variables with "
                            "trainable=False: bn/moving_mean"),
    ("regularization_losses", "returns float32 (8,); expected a float scalar"),
    ("input_signature", "the last dimension is None; expected 3"),
    ("training_argument", "training defaults to True; expected False"),
    ("training_call", "obj(images, training=True) fails: InvalidArgumentError"),
    ("deterministic", "two identical calls with training=False differ"),
    ("batch_independent", "when the other 2 examples of its batch change"),
    ("output_tensor", "the output is float64; expected float32"),
    ("output_finite", "not finite (NaN or inf) for images of all zeros"),
    ("feature_size_constant", "8 features at 224x224 but 6 at 168x176"),
    ("logits_not_probabilities", "(a softmax); expected logits"),
    ("top_k_labels", "assets/labels.txt has 4 labels but the model has 5 classes"),
    ("hyperparameters", "scale is not traced as a tensor with training=True"),
    ("training_gradients", "no gradient reaches 4 of 6 trainable variables"),
    ("hub_fine_tuning", "did not update any of the 2 batch-norm statistics"),
    ("hub_frozen", "with trainable=False, one fit step changed 1 backbone variable: "
                   "calls"),
    ("tfsm_layer", "obj.serve_training is missing"),
    ("serve_endpoint", "obj.serve(images) differs from obj(images, training=False) by"),
    ("serve_training_mode", "updated none of the 2 batch-norm statistics it uses"),
    ("serving_signature", "returns the keys ['output_0']"),
    ("free_size", "5 logits at 224x224 but 4 at 168x176"),
    ("documented_output_size", "__call__ returns 8 features but "
                               "assets.extra/hubexport.json documents 16 (output.size)"),
    ("hyperparameter_effects", "batch_norm_momentum=0.5 moved the batch-norm moving means "
                               "1.00 times as far as batch_norm_momentum=0.0 (the median of "
                               "1 moving mean); expected 0.50"),
    ("serving_output", "serving_default's feature_vector differs from "
                       "obj(images, training=False) on the same images by"),
])
def test_mutant_message_says_what_is_wrong(check_name, expected, report_of, targets):
    report = report_of(check_name, _mutant_builder(check_name, targets))
    assert expected in messages(report, check_name)
    assert all(f.hint for f in report.findings if f.level == "error")


def test_a_hyperparameter_other_than_the_momentum_must_change_something(report_of):
    report = report_of("hyperparameter_effects", mutants.ignored_hyperparameters)
    assert "scale=0.5 instead of 1.0 changes neither the output nor any variable" in (
        messages(report, "hyperparameter_effects"))


def test_top_k_naming_the_wrong_class_fails_top_k_labels(report_of):
    report = report_of("wrong_class_labels", mutants.wrong_class_labels)
    assert levels(report, "error") == {"top_k_labels"}, reports.text([report])
    assert "labels are not assets/labels.txt's names of the top classes" in messages(
        report, "top_k_labels")


@pytest.mark.parametrize("output, problem", [
    (np.ones((3, 8), np.float32), None),
    (np.ones((3, 8), np.float32) * (1 + 5e-5), None),  # Within the tolerance.
    (np.ones((3, 8), np.float32) * (1 + 2e-4), "differs from obj(images, training=False)"),
    (np.full((3, 8), np.nan, np.float32), "differs from obj(images, training=False)"),
    (np.ones((3, 8), np.float64), "is float64; expected float32"),
    (np.ones((3, 8, 1), np.float32), "(rank 3); expected rank 2"),
    (np.ones((3, 7), np.float32), "has shape [3, 7]; expected [3, 8]"),
    (np.ones((1, 8), np.float32), "has shape [1, 8]; expected [3, 8]"),
])
def test_serving_output_problems(output, problem):
    problems = serving_checks.serving_output_problems(output, np.ones((3, 8), np.float32))
    assert (problem in problems[0]) if problem else problems == []


@pytest.mark.parametrize("outputs, level", [
    ([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], "error"),  # Softmax.
    ([[0.9, 0.7, 0.1, 0.4]] * 4, "error"),  # Sigmoid, 16 values.
    ([[0.9, 0.7], [0.1, 0.4]], "warning"),  # Few values in [0, 1]: maybe chance.
    ([[2.5, -1.0, 0.3], [0.1, 0.2, 0.3]], None),  # Logits.
    ([[0.0, 3.0, 0.5]] * 6, None),  # Logits after a ReLU: unbounded above.
])
def test_probability_heuristic(outputs, level):
    finding = call_checks.probability_finding(np.array(outputs))
    assert (finding and finding.level) == level


# top_k against constructed logits: labels of the right classes, ties included.

ANIMALS = ("cat", "dog", "fox", "owl", "eel")


def _top_k_outputs(logits, classes, labels=ANIMALS, activation="softmax"):
    """top_k's outputs for `logits` naming `classes`, with the right confidences.

    Strings come back from TensorFlow as bytes, as top_k's do.
    """
    probabilities = serving.ACTIVATIONS[activation](np.array(logits, np.float32)).numpy()
    confidences = -np.sort(-probabilities, axis=1)[:, :len(classes[0])]
    names = np.array([[labels[c].encode() for c in row] for row in classes], dtype=object)
    return confidences, names


@pytest.mark.parametrize("logits, classes, expected", [
    ([[3, 1, 2, 0, -1]], [[0, 2, 1]], None),
    ([[3, 1, 2, 0, -1]], [[0, 3, 1]], "labels"),  # Place 1 names a class outside the top 3.
    ([[3, 1, 2, 0, -1]], [[0, 1, 2]], "labels"),  # Places 1 and 2 swapped.
    ([[3, 1, 2, 0, -1]], [[1, 3, 2]], "labels"),  # The label of the next class, every place.
    ([[3, 1, 2, 0, -1], [0, 1, 2, 3, 4]], [[0, 2, 1], [4, 3, 1]], "labels"),  # Row 2 only.
    ([[2, 2, 0, 1, -1]], [[1, 0, 3]], None),  # Classes 0 and 1 tie: either order.
    ([[2, 2, 0, 1, -1]], [[0, 1, 3]], None),
    ([[2, 2, 0, 1, -1]], [[0, 0, 3]], "labels"),  # One of the tied classes twice.
    ([[2, 2, 0, 1, -1]], [[0, 2, 3]], "labels"),  # At a tied place, a class not tied.
    ([[3, 2, 1, 1, 0]], [[0, 1, 3]], None),  # Class 3 ties with class 2, the 3rd.
    ([[3, 2, 1, 1, 0]], [[0, 1, 4]], "labels"),
    ([[5, 5, 5, 5, 5]], [[4, 2, 0]], None),  # All tied: any three distinct classes.
    ([[5, 5, 5, 5, 5]], [[4, 2, 4]], "labels"),
])
def test_top_k_mismatch_names_the_classes_of_the_top_logits(logits, classes, expected):
    confidences, names = _top_k_outputs(logits, classes)
    assert serving.top_k_mismatch(np.array(logits, np.float32), ANIMALS, "softmax",
                                  confidences, names) == expected


def test_top_k_mismatch_allows_duplicate_labels_but_not_misplaced_ones():
    labels = ("crane", "crane", "fox", "owl", "eel")  # ImageNet has two cranes.
    logits = np.array([[3, 2, 1, 0, -1]], np.float32)
    for classes, expected in (([[0, 1, 2]], None), ([[1, 0, 2]], None),
                              ([[0, 2, 1]], "labels")):
        confidences, names = _top_k_outputs(logits, classes, labels)
        assert serving.top_k_mismatch(logits, labels, "softmax", confidences, names) == (
            expected)


def test_top_k_mismatch_checks_the_confidences_and_their_activation():
    logits = np.array([[3, 1, 2, 0, -1]], np.float32)
    sigmoid = _top_k_outputs(logits, [[0, 2, 1]], activation="sigmoid")
    assert serving.top_k_mismatch(logits, ANIMALS, "sigmoid", *sigmoid) is None
    assert serving.top_k_mismatch(logits, ANIMALS, "softmax", *sigmoid) == "confidences"
    confidences, names = _top_k_outputs(logits, [[0, 2, 1]])
    assert serving.top_k_mismatch(logits, ANIMALS, "softmax", confidences[:, ::-1],
                                  names) == "confidences"
    assert serving.top_k_mismatch(logits, ANIMALS, "softmax", confidences * 1.01,
                                  names) == "confidences"


# F2: the model is judged before it runs.


def test_unsafe_model_is_rejected_without_running(report_of, targets):
    target = targets / "blocked.txt"
    report = report_of("no_unsafe_ops", _mutant_builder("no_unsafe_ops", targets))
    assert "reached from obj.__call__" in messages(report, "no_unsafe_ops")
    assert "not loaded" in messages(report, "loads")
    assert levels(report, "skipped") >= {"loads", "hub_fine_tuning", "tfsm_layer"}
    assert not target.exists()


def test_unsafe_model_run_exits_1_and_writes_nothing(models, targets):
    target = targets / "blocked_run.txt"
    path = models("writes_file_run", functools.partial(
        mutants.writes_file, target=str(target)))
    out = io.StringIO()
    assert checker.run([path], out=out) == 1
    assert "error F2 no_unsafe_ops: op WriteFile" in out.getvalue()
    assert not target.exists()


def test_allow_unsafe_ops_downgrades_to_a_warning(report_of, targets):
    target = targets / "allowed.txt"
    report = report_of(
        "writes_file_allowed",
        functools.partial(mutants.writes_file, target=str(target)),
        allow_unsafe_ops=True,
    )
    assert levels(report, "error") == set()
    assert levels(report, "warning") == {"no_unsafe_ops"}
    assert target.exists()  # The scan, not chance, kept the other one unwritten.
    assert report.fails(strict=True)


def test_scan_ignores_the_savers_but_sees_their_ops(models):
    proto = graph_scan.read(models("good", mutants.good))
    ops = {n.op for f in proto.meta_graphs[0].graph_def.library.function
           for n in f.node_def}
    assert {"SaveV2", "RestoreV2"} <= ops
    assert graph_scan.scan(proto).hits == ()


def test_scan_finds_print_to_file_but_not_to_stderr(tmp_path):
    import tensorflow as tf

    root = tf.__internal__.tracking.AutoTrackable()
    scalar = tf.TensorSpec([], tf.float32)

    @tf.function(input_signature=[scalar])
    def loud(x):
        tf.print(x, output_stream="file:///tmp/x")
        return x

    @tf.function(input_signature=[scalar])
    def quiet(x):
        tf.print(x)
        return x

    root.loud, root.quiet = loud, quiet
    tf.saved_model.save(root, str(tmp_path))
    hits = graph_scan.scan(graph_scan.read(str(tmp_path))).hits
    assert [(h.op, h.entry) for h in hits] == [("PrintV2", "obj.loud")]
    assert "prints to the file /tmp/x" in hits[0].describe()


def test_scan_finds_file_reads_in_resource_initializers(tmp_path):
    import tensorflow as tf

    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("a\nb\n")
    root = tf.__internal__.tracking.AutoTrackable()
    root.table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(vocabulary), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
        default_value=-1)
    tf.saved_model.save(root, str(tmp_path / "model"))
    hits = graph_scan.scan(graph_scan.read(str(tmp_path / "model"))).hits
    assert any(h.op.startswith("InitializeTableFromTextFile")
               and h.entry.startswith("obj.table") for h in hits)


def test_skipped_checks_are_reported_and_the_others_still_run(report_of, targets):
    builder = _mutant_builder("training_gradients", targets)
    report = report_of("training_gradients", builder, skip=("training_call", "tfsm_layer"))
    # training_gradients makes the training call that training_call would have.
    assert levels(report, "error") == {"training_gradients"}, reports.text([report])
    not_run = {f.check for f in report.findings if f.message == "not run: --skip_checks"}
    assert not_run == {"training_call", "tfsm_layer"}
    assert "skipped C2 training_call, K2 tfsm_layer: not run: --skip_checks" in reports.text(
        [report])
    assert not report_of("training_gradients", builder, skip=("training_gradients",)).fails()
    with pytest.raises(UserError, match="'trainig_call', which is not a check; allowed: "):
        checker.check("unused", skip=("trainig_call",))


# Any directory gets a verdict, never a traceback.


@pytest.mark.parametrize("name, builder, failing", [
    ("nonexistent", lambda path: None, "saved_model_files"),
    ("empty", mutants.empty_directory, "saved_model_files"),
    ("garbage", mutants.garbage_saved_model, "tf2_saved_model"),
    ("no_variables", mutants.missing_variables, "saved_model_files"),
    ("tf1_hub_module", mutants.tf1_hub_module, "tf2_saved_model"),
    ("keras_signature_only", mutants.keras_signature_only, "restored_call"),
    ("rank3", mutants.rank3_input, "input_signature"),
])
def test_any_directory_gets_a_verdict(name, builder, failing, report_of):
    report = report_of(name, builder)
    assert report.fails()
    assert failing in levels(report, "error"), reports.text([report])
    assert len(report.results) == len(CHECK_NAMES)
    assert not any("failed unexpectedly" in f.message for f in report.findings), (
        reports.text([report]))


def test_free_size_model_that_fails_at_another_size(report_of):
    report = report_of("fails_at_other_sizes", mutants.fails_at_other_sizes)
    assert levels(report, "error") == {"free_size"}
    assert "height and width are free, but __call__ fails at 168x176" in messages(
        report, "free_size")
    assert "(see free_size)" in messages(report, "feature_size_constant")


def test_free_size_model_that_takes_only_squares(report_of):
    """The second size is not square: height and width are each free."""
    report = report_of("square_only", mutants.square_only)
    assert levels(report, "error") == {"free_size"}
    assert "height and width are free, but __call__ fails at 168x176" in messages(
        report, "free_size")


def test_tf1_hub_module_is_named(report_of):
    report = report_of("tf1_hub_module", mutants.tf1_hub_module)
    assert "obsolete TF1 Hub format" in messages(report, "saved_model_files")


def test_rank3_input_skips_the_calls(report_of):
    report = report_of("rank3", mutants.rank3_input)
    assert "rank 3" in messages(report, "input_signature")
    assert levels(report, "error") == {"input_signature"}
    assert "see input_signature" in messages(report, "deterministic")


def test_a_crashing_check_becomes_an_error():
    def broken(context):
        yield check.info("before the crash")
        raise RuntimeError("boom")

    result = checker._run_check(check.Check("broken", "C3", broken), context=None)
    assert [f.level for f in result.findings] == ["info", "error"]
    assert "failed unexpectedly: RuntimeError: boom" in result.findings[1].message
    assert result.status == "error"


# The task.


def test_task_comes_from_the_provenance_file(tmp_path, models):
    path = tmp_path / "model"
    (path / "assets.extra").mkdir(parents=True)
    (path / export.PROVENANCE_FILE).write_text(json.dumps(
        {"task": "classification", "image_size": 64, "input": {"min_size": 48}}))
    context = check.Context(str(path), "auto", allow_unsafe_ops=False)
    assert (context.task, context.task_source) == (
        "classification", "from assets.extra/hubexport.json")
    good = check.Context(models("good", mutants.good), "classification", False)
    assert (good.task, good.task_source) == ("classification", "as requested")


def test_requested_task_is_checked_against_the_serving_key(report_of):
    report = report_of("good", mutants.good, task="classification")
    assert levels(report, "error") == {"serving_signature"}
    assert "expected exactly one: logits" in messages(report, "serving_signature")


@pytest.mark.parametrize("call", [
    lambda: checker.check("/nonexistent", task="regression"),
    lambda: checker.run(["/nonexistent"], task="logit"),
    lambda: checker.run([]),
    lambda: checker.run(["/nonexistent"], junit_xml="/nonexistent/dir/checks.xml"),
])
def test_invalid_arguments_raise_user_error(call):
    with pytest.raises(UserError, match="allowed: auto|one or more|cannot be written"):
        call()


# run(): exit codes and the three reports.


def test_run_exits_0_for_a_conforming_model(models, tmp_path):
    out = io.StringIO()
    code = checker.run([models("good", mutants.good)], out=out,
                       json_report=str(tmp_path / "r.json"))
    assert code == 0
    assert "CONFORMS" in out.getvalue()
    assert json.load(open(tmp_path / "r.json"))["conforms"] is True


def test_run_writes_json_and_junit_for_every_check_of_every_model(
        models, targets, tmp_path):
    paths = [models("good", mutants.good), models("deterministic", mutants.noisy)]
    json_path, xml_path, out = tmp_path / "r.json", tmp_path / "r.xml", io.StringIO()
    code = checker.run(paths, json_report=str(json_path), junit_xml=str(xml_path),
                       out=out)
    assert code == 1
    text = out.getvalue()
    assert f"{paths[1]}: error C3 deterministic: two identical calls" in text
    # Skipped: logits_not_probabilities, top_k_labels, and (see deterministic)
    # batch_independent, serve_endpoint and serving_output.
    assert f"{paths[1]}: FAILS (1 error, 0 warnings, 5 skipped; task feature_vector" in text

    document = json.load(open(json_path))
    assert document["conforms"] is False
    assert [m["verdict"] for m in document["models"]] == ["conforms", "fails"]
    assert [len(m["checks"]) for m in document["models"]] == [len(CHECK_NAMES)] * 2

    suites = ET.parse(xml_path).getroot()
    cases = suites.findall("testsuite/testcase")
    assert len(cases) == 2 * len(CHECK_NAMES)
    assert suites.get("tests") == str(2 * len(CHECK_NAMES))
    assert suites.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [
        (paths[1], "C3 deterministic")]
    assert len([c for c in cases if c.find("skipped") is not None]) == 7


def test_strict_fails_on_warnings(models, targets):
    path = models("writes_file_allowed", functools.partial(
        mutants.writes_file, target=str(targets / "allowed.txt")))
    quiet = io.StringIO()
    assert checker.run([path], allow_unsafe_ops=True, out=quiet) == 0
    assert checker.run([path], allow_unsafe_ops=True, strict=True, out=quiet) == 1


# A real export.


def test_mobilenet_v2_export_conforms_checked_as_loaded_or_from_disk(tmp_path, monkeypatch):
    import tensorflow as tf

    plan = export.plan("MobileNetV2", "feature_vector", image_size=96, weights="none")
    path = str(tmp_path / "mobilenet_v2")
    result = export.export(plan, path, keep_loaded=True)  # (Without: conftest's mobilenet_fv.)
    report = checker.check(path)
    assert not report.fails(strict=True), reports.text([report])
    assert report.task_source == "from assets.extra/hubexport.json"

    # The check after an export in one process uses the export's own load.
    loads = []
    load = tf.saved_model.load
    monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    before = [v.numpy().copy() for v in result.loaded.variables]
    shared = checker.check(path, loaded=result.loaded)
    assert loads == []
    # Fit steps and training calls moved weights and statistics; all are undone.
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(result.loaded.variables, before))
    assert not shared.fails(strict=True), reports.text([shared])
    assert [(f.check, f.level, f.message) for f in shared.findings] == [
        (f.check, f.level, f.message) for f in report.findings]


def test_a_loaded_object_is_not_used_when_the_files_have_unsafe_ops(models, targets):
    path = models("no_unsafe_ops", _mutant_builder("no_unsafe_ops", targets))
    context = check.Context(path, "auto", False, loaded=object())
    with pytest.raises(check.Skip, match="not loaded: it has ops not known to be safe"):
        context.load()


@pytest.mark.parametrize("size,batch", [(32, 3), (224, 3), (260, 2), (300, 1), (600, 1)])
def test_gradient_steps_take_fewer_images_as_they_grow(size, batch):
    context = check.Context("/nonexistent", "feature_vector", False)
    assert context.gradient_images(hw=(size, size)).shape == (batch, size, size, 3)


def test_the_momentum_is_judged_on_the_median_move():
    """Deep random networks drift: a few means off by 4% (ResNetRS420) pass; a
    keyword that is ignored (every mean moves as far) does not."""
    full = [np.full(4, 2.0 + i) for i in range(10)]
    drifted = [0.5 * f for f in full[:7]] + [0.48 * f for f in full[7:]]
    assert hyperparameters.median_ratio(drifted, full) == (0.5, 10)
    assert hyperparameters.median_ratio(full, full) == (1.0, 10)
    assert hyperparameters.median_ratio(full, [np.zeros(4)] * 10)[1] == 0
