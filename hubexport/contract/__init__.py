"""The contract of docs/HUB_CONTRACT.md as data, shared by the exporter and the checker.

  clauses         CLAUSES, SECTIONS: the document's clause IDs, one line each, by section;
                  TASKS (FEATURE_VECTOR, CLASSIFICATION), OUTPUT_KEYS: the two tasks
                  and the output key of each
  tolerances      *_TOLERANCE: how close two computations must be, named for what they
                  compare; CHECK_BATCH, ...: how many images a verification or a check
                  calls a model with
  endpoint_table  ENDPOINTS: one row per endpoint an export has (see Endpoint)
  provenance      Provenance: assets.extra/hubexport.json as typed records

Every name is imported here, so `contract.X` and `from hubexport.contract
import X` are all a user needs; the submodules are where each is written
(tests/test_contract.py fails when a module outside this package writes a
contract value again).

It imports only the standard library (no TensorFlow, numpy or Keras; numpy only
inside relative_difference), so the
CLI, the catalog and the tests can use it without starting TensorFlow. It
imports no hubexport module outside this package: every layer may import it.
"""

from hubexport.contract.clauses import (CLASSIFICATION, CLAUSES, FEATURE_VECTOR, OUTPUT_KEYS,
                                        SECTIONS, TASKS, Section, section_of)
from hubexport.contract.endpoint_table import (ALWAYS, ASSET, ATTRIBUTE, BYTES_SIGNATURE, CALL,
                                               CALL_ON_RESIZED, COMPARISONS, ENDPOINTS, FUNCTION,
                                               IMAGES, KERAS_REFERENCE, LABELS_ATTRIBUTE,
                                               LABELS_FILE, MOMENTUM_KEYWORD,
                                               REGULARIZATION_LOSSES, SERVE,
                                               SERVE_TRAINING, SERVING_DEFAULT, SIGNATURE,
                                               SIGNATURE_CARD, TOP_K_CONFIDENCES, TOP_K_LABELS,
                                               TOP_K_OF_CALL, TOP_K_SIGNATURE,
                                               TRAINABLE_VARIABLES, UINT8_SIGNATURE, VARIABLES,
                                               WITH_LABELS, WITH_RAW_IMAGES, Endpoint, endpoints,
                                               signature_names)
from hubexport.contract.provenance import (PROVENANCE_FILE, PROVENANCE_FORMAT,
                                           PROVENANCE_FORMAT_PREFIX, PROVENANCE_VERSION, Input,
                                           Labels, Output, Provenance, Source, Verification,
                                           Weights, _Record, load_provenance, read_provenance)
from hubexport.contract.tolerances import (ALONE_VS_BATCH_TOLERANCE, CHECK_BATCH,
                                           GRADIENT_PIXELS, MOMENTUM_RATIO_TOLERANCE,
                                           PROBABILITY_SUM_TOLERANCE, REPEAT_CALL_TOLERANCE,
                                           SECOND_SIZE_BATCH, SERVE_VS_CALL_TOLERANCE,
                                           SERVING_VS_CALL_TOLERANCE, TOP_K_ATOL, TOP_K_RTOL,
                                           VERIFICATION_TOLERANCE, VERIFY_BATCH, gradient_batch,
                                           relative_difference)
