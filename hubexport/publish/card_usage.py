"""The model card's code sections: how to load, call and fine-tune the export.

Each takes a contract.Provenance and returns its Markdown; the examples use
the export's own size, task and batch norm momentum.
"""

from hubexport.contract import FEATURE_VECTOR, Input
from hubexport.publish.card_sections import _multi_label, _number

def _hw(p):
    """Height and width for the code examples."""
    shape = (p.input or Input()).shape
    if shape and len(shape) == 4 and shape[1] and shape[2]:
        return shape[1], shape[2]
    size = p.image_size or 224
    return size, size


def _usage(p):
    height, width = _hw(p)
    feature_vector = p.task == FEATURE_VECTOR
    head = "\n    tf_keras.layers.Dense(NUM_CLASSES)," if feature_vector else ""
    keras3_out = "keras.layers.Dense(NUM_CLASSES)(backbone(inputs))" if feature_vector \
        else "backbone(inputs)"
    loss = ("BinaryCrossentropy" if not feature_vector and _multi_label(p)
            else "SparseCategoricalCrossentropy")
    return "\n".join([
        "## Usage",
        "",
        "Load it with `hub.load` or `tf.saved_model.load`:",
        "",
        "```python",
        "import tensorflow_hub as hub",
        "",
        "obj = hub.load(PATH)",
        "outputs = obj(images)  # images: float32 [batch, height, width, 3] in [0, 1]",
        "```",
        "",
        "In a tf_keras model (`hub.KerasLayer` is a tf_keras layer):",
        "",
        "```python",
        "import tensorflow_hub as hub",
        "import tf_keras",
        "",
        "model = tf_keras.Sequential([",
        f"    tf_keras.Input(({height}, {width}, 3)),",
        f"    hub.KerasLayer(PATH, trainable=False),  # True to fine-tune{head}",
        "])",
        "```",
        "",
        "In a Keras 3 model (`hub.KerasLayer` cannot go there), with hubexport's "
        "layer, which fine-tunes with any Keras optimizer:",
        "",
        "```python",
        "import keras",
        "from hubexport.keras import ReusableLayer",
        "",
        "backbone = ReusableLayer(PATH, trainable=False)  # True to fine-tune",
        f"inputs = keras.Input(({height}, {width}, 3))",
        f"model = keras.Model(inputs, {keras3_out})",
        f"model.compile(keras.optimizers.Adam(1e-4), keras.losses.{loss}(from_logits=True))",
        "```",
        "",
        "`keras.layers.TFSMLayer(PATH, call_endpoint=\"serve\", "
        "call_training_endpoint=\"serve_training\")` loads it too, without "
        "hubexport, and predicts; but in a default `fit` it trains only with "
        "optimizers that keep no slot variables (plain SGD): with Adam, RMSprop "
        "or SGD with momentum, Keras fails with \"... is not a valid scope name\" "
        "(Keras names the slots after the restored variables, whose names end "
        "in `:0`), unless the optimizer is built first: "
        "`model.optimizer.build(model.trainable_variables)`. It adds no "
        "regularization losses and takes no hyperparameters.",
    ])


def _fine_tuning(p):
    lines = [
        "## Fine-tuning",
        "",
        "The model is fine-tunable: `hub.KerasLayer(PATH, trainable=True)` in "
        "tf_keras, or `hubexport.keras.ReusableLayer(PATH, trainable=True)` in "
        "Keras 3, trains its weights with the rest of the model (and adds the "
        "model's regularization losses to the loss).",
        "",
        "- Use a low learning rate (e.g. 1e-5 to 1e-4 with Adam, or first train "
        "the new layers with the model frozen): large updates destroy what the "
        "pretrained weights know.",
        "- Batch norm: in training, its layers normalize with the statistics of "
        "each batch and update their moving averages in place. Use batches that "
        "are not too small, or keep the model frozen (`trainable=False`), which "
        "keeps the moving averages as they are.",
    ]
    momentum = p.batch_norm_momentum
    if momentum is not None:
        lines += [
            f"- The momentum of batch norm's moving averages defaults to "
            f"{_number(momentum)}; set another value with",
            "",
            "  ```python",
            "  hub.KerasLayer(PATH, trainable=True,",
            "                 arguments=dict(batch_norm_momentum=0.997))",
            "  ReusableLayer(PATH, trainable=True,",
            "                arguments=dict(batch_norm_momentum=0.997))  # Keras 3",
            "  ```",
        ]
    return "\n".join(lines)
