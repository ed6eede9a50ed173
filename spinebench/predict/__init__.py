"""Prediction with every trained model on one radiograph, by concern:

- :mod:`~spinebench.predict.predictor`: :class:`Predictor` (all models on one image, loaded once), the agreement;
- :mod:`~spinebench.predict.drawing`: pictures and short texts of a result (boxes, Grad-CAM, Cobb overlay);
- :mod:`~spinebench.predict.batch`: several files (folders expanded) into results and CSV rows;
- :mod:`~spinebench.predict.cli`: ``python -m spinebench predict``;
- :mod:`~spinebench.predict.sources`: where weights come from (folder or Hugging Face Hub; never training);
- :mod:`~spinebench.predict.cards`: model cards and the leaderboard view.

::

    from spinebench.predict import Predictor
    pred = Predictor("weights")                 # or "hf://user/spinebench-weights@main"
    analysis = pred.analyze("spine.dcm")        # any file spinebench.io.load_image reads
    analysis.result                             # JSON-serialisable: one entry per model, agreement, timings
    analysis.images["cls_densenet121"]          # uint8 RGB: Grad-CAM of both findings over the model's view

Research software, not a medical device: every result carries :data:`DISCLAIMER`.
"""

from spinebench import DISCLAIMER
from spinebench.engine.device import available_cores
from spinebench.predict.batch import (BATCH_COLUMNS, PROVENANCE_COLUMNS, batch_rows, entries_rows, expand_inputs,
                                     predict_files, user_message, write_batch_csv)
from spinebench.predict.cards import TASKS, data_label, leaderboard_view, model_card, model_cards, panel_models, \
    results_file
from spinebench.predict.drawing import (FINDING_COLOURS, SUMMARY_HEADERS, agreement_text, cam_panel, draw_boxes,
                                        gray_rgb, image_facts, overlay_heatmap, render_model, summary_rows, to_uint8)
from spinebench.predict.predictor import (DEMO_MAX_PIXELS, SAFE_META, Analysis, LoadedModel, Predictor, _Frozen,
                                          agreement, get_predictor, optimize_detector, provenance, set_cpu_threads)
from spinebench.predict.sources import (WEIGHTS_DIR_ENV, WEIGHTS_REPO_ENV, WEIGHTS_REVISION_ENV,
                                        default_weights_dir, find_weights)

__all__ = ["DISCLAIMER", "available_cores", "BATCH_COLUMNS", "PROVENANCE_COLUMNS", "batch_rows", "entries_rows",
           "expand_inputs", "predict_files", "user_message", "write_batch_csv",
           "TASKS", "data_label", "leaderboard_view", "model_card", "model_cards", "panel_models", "results_file",
           "FINDING_COLOURS", "SUMMARY_HEADERS", "agreement_text", "cam_panel", "draw_boxes", "gray_rgb",
           "image_facts", "overlay_heatmap", "render_model", "summary_rows", "to_uint8", "DEMO_MAX_PIXELS",
           "SAFE_META", "Analysis", "LoadedModel", "Predictor", "_Frozen", "agreement", "get_predictor", "provenance",
           "optimize_detector", "set_cpu_threads", "WEIGHTS_DIR_ENV", "WEIGHTS_REPO_ENV", "WEIGHTS_REVISION_ENV",
           "default_weights_dir", "find_weights"]
