"""Computations behind the notebooks: a batch's adjacency matrices (:mod:`.adjacency`), how well intra-modal
similarity finds the same-class pairs (:mod:`.retrieval`), embeddings (:mod:`.embeddings`), the models and
localisations a notebook looks at (:mod:`.runs`), the report of a run against its NCE twin (:mod:`.report`), the
extended protocol's negatives beside the positives (:mod:`.extended`), and the tutorial's toy embeddings and
labelled tables (:mod:`.toy`) and its real false negative (:mod:`.real_pair`); the analysis notebooks' closing
sentences (:mod:`.conclusions`)."""

from ..data.sampling import expected_false_negative_ratio, false_negative_ratio, fn_ratio_table
from .conclusions import model_comparison, untrained_note
from .adjacency import (MATRICES, batch_adjacency, descend_logits, embed_batch, embedded_adjacency,
                        idealised_embeddings, same_class_mask)
from .embeddings import collect_embeddings, nearest_neighbour_accuracy, umap_projection
from .extended import (SETS, ExampleRows, confidence_table, extended_examples, extended_table, localise_with_negatives,
                       negatives_split, no_negatives_reason)
from .report import (SCORES, ap50_noise, compare_to_baseline, read_history, run_metrics, run_report, scores_table,
                     what_this_run_shows, write_report)
from .retrieval import (INTRA_MODAL, PairRetrieval, intramodal_retrieval, pair_precision_recall, pair_scores,
                        same_class_softmax_mass)
from .runs import (PEAK_OUTCOMES, REAL_PEAK_OUTCOMES, UNTRAINED, ModelPair, best_worst, class_count,
                   configured_run_folder, describe_data, evaluation_split, has_distractors, load_or_train_model_pair,
                   localise, nce_twin, notebook_config, peak_kinds, peak_on_ground_truth, peak_outcome, peak_outcomes,
                   run_folder, runs_root, sample_table, seed_list, shared_run_dir)
from .real_pair import RealStamps, real_false_negative, spectral_centroid
from .toy import labelled_table, toy_frame, unit_vector

__all__ = ["expected_false_negative_ratio", "false_negative_ratio", "fn_ratio_table", "MATRICES",
           "batch_adjacency", "descend_logits", "embed_batch", "embedded_adjacency", "idealised_embeddings",
           "same_class_mask", "labelled_table", "toy_frame", "unit_vector",
           "collect_embeddings", "nearest_neighbour_accuracy", "umap_projection", "SCORES", "ap50_noise",
           "compare_to_baseline", "read_history", "run_metrics", "run_report", "scores_table", "what_this_run_shows",
           "write_report", "INTRA_MODAL", "PairRetrieval", "intramodal_retrieval", "pair_precision_recall",
           "pair_scores", "same_class_softmax_mass", "PEAK_OUTCOMES", "ModelPair",
           "best_worst", "evaluation_split", "load_or_train_model_pair", "localise", "nce_twin", "notebook_config", "run_folder",
           "peak_outcome", "seed_list", "shared_run_dir", "runs_root", "REAL_PEAK_OUTCOMES", "UNTRAINED", "class_count", "configured_run_folder",
           "describe_data", "has_distractors", "peak_kinds", "peak_on_ground_truth", "peak_outcomes", "sample_table", "SETS", "ExampleRows", "confidence_table",
           "extended_examples", "extended_table", "localise_with_negatives", "negatives_split", "no_negatives_reason",
           "RealStamps", "real_false_negative", "spectral_centroid", "model_comparison", "untrained_note"]
