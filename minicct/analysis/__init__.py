"""The single-nodal-performance (SNP) analysis of Koresh et al. (2025), as functions on plain arrays.

activations A [N, T, D] -> readout (W) -> snp (fields V [D, K, K], thresholded B) -> clusters (clusters, noise,
signal, SNR) -> andc (pruning masks) / heads (head label sets, specialisation); report runs it all for a
trained CCT; interventions prunes and ablates inside the model by editing its parameters. Each function says
whether it follows the authors' code [CODE] or is this project's operationalisation [INF]. Input checks live
in _validate.py.
"""
from .andc import andc_mask, expand_mask, ff_mask, masked_retrain, prune_readout, pruned_fraction, random_mask_like
from .clusters import (NodeStats, greedy_clusters, layer_summary, node_labels, node_noise, node_signal, node_stats,
                       snr)
from .heads import (designated_labels, head_fields, head_label_counts, head_matrix, head_metrics, shuffled_control,
                    specialisation_index)
from .readout import MODES, READOUT_EPOCHS, Readout, pooled_features, readout_accuracy, readout_logits, train_readout
from .snp import (AFCC_THRESHOLD, class_means, node_fields, normalise_fields, normalise_threshold, per_image_fields,
                  pooled_node_fields, single_node_predictions, single_node_summary)

__all__ = ["AFCC_THRESHOLD", "MODES", "NodeStats", "READOUT_EPOCHS", "Readout", "andc_mask", "class_means",
           "designated_labels", "expand_mask", "ff_mask", "greedy_clusters", "head_fields", "head_label_counts",
           "head_matrix", "head_metrics", "layer_summary", "masked_retrain", "node_fields", "node_labels",
           "node_noise", "node_signal", "node_stats", "normalise_fields", "normalise_threshold", "per_image_fields",
           "pooled_features", "pooled_node_fields", "prune_readout", "pruned_fraction", "random_mask_like",
           "readout_accuracy", "readout_logits", "shuffled_control", "single_node_predictions",
           "single_node_summary", "snr", "specialisation_index", "train_readout"]
