"""Training profiles: ``quick`` (all six models and the Cobb model on a 2-core CPU in about nine minutes) and
``paper`` (the paper's protocol: 50 epochs for the classifiers, 4000 steps for the detectors; meant for a GPU).

``quick`` is a smoke-scale benchmark, not a result to cite: small inputs, few epochs, capped steps. Its numbers
show that the pipeline works end to end and rank models only roughly; say so wherever they are shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from spinebench.engine.train import TrainSettings
from spinebench.errors import SpinebenchError


@dataclass
class Profile:
    name: str
    cache_side: int                    # longest side of the decoded-image cache shared by all models
    classifier: TrainSettings
    detector: TrainSettings
    detector_kwargs: dict = field(default_factory=dict)   # create_model kwargs (min_size/max_size)
    detector_steps: int | None = None  # the paper trained the detectors for a fixed number of steps
    n_boot: int = 1000
    classifier_sizes: dict = field(default_factory=dict)  # per-model input size overrides
    cobb: TrainSettings = field(default_factory=TrainSettings)  # the landmark model; image_size = its input (H, W)
    #: the registered ``cobb`` model run-all trains by default (the others only when named)
    cobb_model: str = "cobb_vertebra_resnet34"
    #: models that start from an in-domain backbone (``spinebench.models.transfer.IN_DOMAIN``: a classifier trained
    #: earlier in the same run on the same training split, or the model's own body pre-trained as a classifier)
    transfer: tuple[str, ...] = ()
    #: per-model TrainSettings fields set on top of the task's (a model's own time budget, ...)
    model_settings: dict = field(default_factory=dict)
    #: seconds one ``run_all`` process may take, data loading included: before each model the time budgets of the
    #: models still to train are scaled down together where the clock says the run would end later
    #: (:func:`budget_scale`); None = no limit. A budget given by the user (``--time-budget``) turns it off.
    wall_budget_s: float | None = None
    #: whether the budgets may also grow to fill ``wall_budget_s`` (``run-all --wall-budget``), not only shrink
    scale_up: bool = False

    def settings_for(self, name: str, n_train: int, image_size: int | None = None) -> TrainSettings:
        """Model ``name``'s TrainSettings in this profile, as its task reads them (``spinebench.tasks``)."""
        from spinebench.tasks import get_task

        s = get_task(name).settings(self, name, n_train, image_size)
        return replace(s, **self.model_settings[name]) if name in self.model_settings else s


PROFILES = {
    # quick: a checkpoint at most once a minute (and after a model's last epoch), not after every 10-12 steps
    "quick": Profile(
        name="quick", cache_side=320,
        # Each model trains until its time budget (the cosine decay follows the clock, so it ends annealed) or
        # 30 epochs of 12 steps, whichever comes first: the run's wall time no longer depends on which model is
        # slow on which CPU, and a small model (SqueezeNet: ~2 s an epoch) gets more epochs than a large one.
        # 192 x 80 keeps a film's ~2.4:1 aspect (128 x 128 squashed it): ResNet-50, 8 x 12 steps, validation
        # loss 0.475 vs 0.517, scoliosis AUROC 0.77 vs 0.63, implant 0.92 vs 0.94, 6% fewer pixels (one seed).
        # 128 x 56, the same aspect, buys more steps in the same 40 s (a step 0.57 -> ~0.4 s; validation, 2-core
        # CPU): ResNet-50 loss 0.465 -> 0.367 (3 seeds), scoliosis 0.77 -> 0.81, implant 0.94 -> 0.98;
        # DenseNet-121 0.400 -> 0.268 (2 seeds), scoliosis 0.78 -> 0.87; SqueezeNet, capped at 30 epochs either
        # way, 0.45 -> 0.38 in 24 s instead of 35. Inception-v3 keeps 192 x 80 (classifier_sizes: 75 px minimum).
        # The ~16 s SqueezeNet no longer needs, and the rest of the ten minutes, go to the other classifiers: 52 s.
        # Validation only after the last epoch (val_every=0), as for the detectors: validating the 98 images after
        # every 12-step epoch took 8 of ResNet-50's 42 s (cProfile, 2-core CPU), a fifth of its training, to pick
        # among 3-4 epochs whose last (annealed) one had the lowest validation loss, or within 0.003 of it, in the
        # last quick run's logs. SqueezeNet keeps it (model_settings): ~19 cheap epochs, best 0.40 at 14 vs 0.49 last.
        classifier=TrainSettings(epochs=30, batch_size=16, lr=1e-3, patience=5, warmup_epochs=0.3,
                                 image_size=(128, 56), max_steps_per_epoch=12, val_every=0, checkpoint_every_s=60,
                                 time_budget_s=52),
        # detectors: up to 10 x 12 steps at lr 1e-3 with fewer sampled anchors / RoIs and proposals (the 1024-wide RoI
        # head costs more than the body at 320 px: 0.9 s/step instead of 1.4-1.8). On validation
        # (bench_detector_recipe, one seed, 2-core CPU) Inception-v2 from random init: Lum AP@0.5 0.03, implant AUROC
        # 0.69 (0.00 / 0.54 with the old 3 x 10 steps at 2e-4); started from cls_inception_v3 (Profile.transfer,
        # models.transfer.IN_DOMAIN): 0.25-0.33 / 0.87-0.93 (3 runs). Inception-ResNet-v2 from random init costs
        # ~2.2 s/step; as IN_DOMAIN plans it (own body pre-trained as a classifier, then frozen) ~1 s/step: 0.18 / 0.94.
        # 32 sampled RoIs an image instead of 64: torchvision's CPU roi_align backward was 16% of an Inception-v2
        # step (torch.profiler); 0.55 -> 0.42 s a step, and on validation (2 seeds, 120 steps) Lum AP@0.5 0.24 / 0.14
        # against 0.08 / 0.14, implant AUROC 0.91 / 0.94 against 0.89 / 0.88. The 10 x 12 steps then ended 25 s
        # inside the 75 s budget: 15 epochs let the clock end it (180 steps: implant AUROC 0.96 / 0.96, Lum AP
        # 0.17 / 0.10, within the spread).
        # Films at most 192 px tall in the detectors (160 / 192 instead of 256 / 320): the in-domain body comes from
        # classifiers trained at 128-192 px, whose features then see hardware at the scale they learnt it. Scored on
        # validation and on 600 unseen films of another synthetic seed (bench_detector_recipe --holdout, 75 s each):
        # Inception-ResNet-v2 (one seed at 320, two at 192) implant AUROC 0.94 -> 0.98 / 0.98 (validation) and
        # 0.84 -> 0.94 / 0.93 (holdout), Lum AP@0.5 0.27 -> 0.52 / 0.30 and 0.14 -> 0.37 / 0.15, a step 0.41 ->
        # 0.27 s; Inception-v2 (2 seeds each) implant AUROC 0.95 / 0.92 -> 0.98 / 0.95 and 0.83 / 0.82 -> 0.92 /
        # 0.87, Lum AP 0.18 / 0.13 -> 0.17 / 0.17 and 0.16 / 0.13 -> 0.15 / 0.10. Implant detection gains in every
        # pair; Lum AP stays within its run-to-run spread. 25 epochs: the clock ends both (~230 / ~185 steps).
        detector=TrainSettings(epochs=25, batch_size=2, lr=1e-3, patience=3, warmup_epochs=0.5,
                               max_steps_per_epoch=12, val_every=0, checkpoint_every_s=60, time_budget_s=75),
        # Lum boxes overlapping a better one by IoU > 0.3 are dropped (class_nms_thresh; models.detectors.class_nms):
        # most false positives above the true boxes were boxes over part of a construct (IoU 0.1-0.5 with it).
        # Inference only, chosen on validation with the detectors of the last fresh clone (02ccf35): Lum AP@0.5
        # 0.441 -> 0.587 (Inception-v2) and 0.307 -> 0.385 (Inception-ResNet-v2); on the 600 unseen films 0.331 ->
        # 0.356 and 0.233 -> 0.269. 0.2: 0.629 / 0.296 on validation. Scoliosis boxes keep 0.5 (a global 0.3 cost
        # their AP 0.141 -> 0.106); image-level implant AUROC is the top box's score, the same either way.
        # Since session 30 the Lum boxes are fused instead (class_box_fusion; models.detectors.fuse_boxes): boxes
        # overlapping a better one by IoU >= 0.2 become their score-weighted mean, after an NMS at 0.7 (sco boxes keep
        # 0.5: class_nms_thresh). The quick detectors' boxes are loose and their errors partly cancel. Inference only,
        # chosen on the validation films of four fresh clones' detectors (fc33-fc36, 8 detectors): Lum AP@0.5 mean
        # 0.352 -> 0.618, higher in all 8 (NMS 0.5 + fusion 0.2: 0.519; NMS 0.7 + fusion 0.1 / 0.15: 0.587 / 0.610).
        # Boxes down to a score of 0.001 (torchvision's floor is 0.05; the TF Object Detection API's configs of the
        # paper's two detectors keep every box, score_threshold 0.0): a film's implant score is its best Lum box's,
        # 0 with none, and at 0.05 a quick detector kept no Lum box on 290-451 of 600-626 films, so the implant films
        # it was unsure of tied with most films without one. Inference only, the same weights (two runs' Inception-v2
        # detectors, 2-core EPYC, benchmarks/bench_score_floor.py): implant AUROC on validation 0.991 / 0.963 ->
        # 0.991 / 0.968, on 600 unseen films 0.873 / 0.884 -> 0.883 / 0.891, on the 626 real hybrid films 0.896 /
        # 0.801 -> 0.906 / 0.813 (0.01: within 0.003 of it); Lum AP@0.5 within 0.002; Inception-ResNet-v2 within 0.001.
        detector_kwargs={"min_size": 160, "max_size": 192, "box_score_thresh": 0.001, "rpn_batch_size_per_image": 64,
                         "box_batch_size_per_image": 32, "rpn_pre_nms_top_n_train": 600,
                         "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
                         "rpn_post_nms_top_n_test": 100, "box_nms_thresh": 0.7,
                         "class_nms_thresh": {"sco": 0.5}, "class_box_fusion": {"Lum": 0.2}},
        transfer=("det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2"),
        # per-model settings on top of the task's: Inception-ResNet-v2 also pre-trains its body (pretrain_s), from
        # the run's cls_inception_v3 stem (models.transfer.IN_DOMAIN). With that start, 2-core EPYC fp32, 2 paired
        # seeds, 600 unseen films (implant AUROC / Lum AP@0.5): 35 + 50 s 0.863 / 0.268 and 0.863 / 0.216; 20 + 65 s
        # 0.843 / 0.194 and 0.783 / 0.404; 50 + 35 s 0.870 / 0.154 and 0.813 / 0.098: the split stays.
        # Inception-v2 also adds a generalised-IoU term to its RoI box loss (box_giou_weight; models.detectors.
        # FindingRoIHeads). Each arm from the same cached cls_inception_v3 of its seed, through run_all, 6 paired
        # seeds, 2-core EPYC fp32: Lum AP@0.5 on 600 unseen films 0.293 against 0.258 (higher in 4 of 6), on the 626
        # real hybrid films 0.236 against 0.210 (4 of 6); implant AUROC 0.870 against 0.835 (5 of 6) and 0.849
        # against 0.853. Not Inception-ResNet-v2 (4 seeds): unseen Lum 0.112 against 0.151, real 0.091 against 0.088.
        # And its box head is 256 wide, not torchvision's 1024 (representation_size): the head's 12,544 x 1,024 layer
        # and its AdamW state were ~16% of a step (0.38 -> 0.32 s); 65 s bought 28 epochs against 20-21. The same
        # way, 5 paired seeds (3 at 75 s, where both reach the 25-epoch cap, 2 at 65 s): unseen Lum 0.508 against
        # 0.473 (0.48-0.53 against 0.28-0.58), implant 0.937 against 0.926 (higher in 4 of 5); real hybrid Lum 0.363
        # against 0.367, implant 0.919 against 0.917; 28.2 M parameters against 38.9 M. Inception-ResNet-v2 too: its
        # body is frozen, so the head was ~22% of its step (0.34 -> 0.27 s); 50 s bought 19-22 epochs against 15-17.
        # 4 paired seeds (unseen / real hybrid): Lum AP 0.459 against 0.368 / 0.315 against 0.230 (4 of 4 higher),
        # implant AUROC 0.941 against 0.933 / 0.915 against 0.892 (3 of 4).
        # Inception-v2 also trains with 8 hard negatives on every film without scoliosis (sco_hard_negatives;
        # tasks.detection.hard_negative_boxes, models.detectors.FindingRoIHeads): boxes over its straight column,
        # labelled background and kept in every RoI sample. Without them its sco scores were the training prior
        # and ranked films below chance. 3 paired seeds (bf16 Zen 4 EPYC, 200 unseen films): scoliosis AUROC
        # 0.596 / 0.467 / 0.397 against 0.393 / 0.329 / 0.222, Lum AP@0.5 0.640 / 0.557 / 0.470 against 0.616 /
        # 0.521 / 0.400, implant AUROC 0.981 / 0.973 / 0.934 against 0.965 / 0.977 / 0.943 (docs/results.md,
        # session 43); on the 626 real hybrid films: scoliosis 0.434 / 0.515 / 0.429 against 0.285 / 0.440 / 0.459,
        # Lum 0.339 / 0.372 / 0.341 against 0.404 / 0.389 / 0.283, implant within 0.02. Not Inception-ResNet-v2
        # (its body frozen; 2 seeds): scoliosis 0.380 / 0.599 against 0.314 / 0.447, but Lum 0.490 / 0.435 against
        # 0.491 / 0.570.
        # Inception-v2 also trains on films stretched sideways by a log-uniform 0.85-1.3 (stretch; data.transforms.
        # DetectorTransform). Through run-all --models cls_inception_v3 det_faster_rcnn_inception_v2, seeds 1-4
        # paired (bf16 Zen 4 EPYC): Lum AP@0.5 on 600 unseen films 0.598 / 0.578 / 0.569 / 0.570 against 0.476 /
        # 0.458 / 0.431 / 0.553 (4 of 4 higher, +0.10), on the 626 real hybrid films 0.431 / 0.461 / 0.412 / 0.314
        # against 0.332 / 0.405 / 0.357 / 0.476 (3 of 4, +0.01); implant AUROC unseen 0.926 against 0.923, real
        # 0.920 against 0.912. A wider 0.75-1.5 (2 seeds): unseen 0.489 / 0.651 against 0.598 / 0.578, real 0.376 /
        # 0.455 against 0.431 / 0.461. Not Inception-ResNet-v2 (its body frozen; seeds 1-4 paired, each arm run then):
        # unseen Lum 0.458 / 0.430 / 0.460 / 0.536 against 0.392 / 0.557 / 0.460 / 0.512 (0.471 against 0.480), real
        # 0.333 / 0.388 / 0.323 / 0.430 against 0.369 / 0.323 / 0.401 / 0.397 (0.369 against 0.373), 1-4 fewer epochs.
        model_settings={"det_faster_rcnn_inception_v2": {"extra": {"detector_kwargs": {"box_giou_weight": 1.0,
                                                                                       "representation_size": 256},
                                                                   "sco_hard_negatives": 8,
                                                                   "stretch": (0.85, 1.3)}},
                        "det_faster_rcnn_inception_resnet_v2": {"time_budget_s": 50, "extra": {
                            "pretrain_s": 35, "detector_kwargs": {"representation_size": 256}}},
                        # SqueezeNet validates every epoch (below) and keeps its best, with no early stop: its
                        # validation loss is noisy over the first epochs (patience 5 stopped it after 7 of ~20
                        # epochs, 10 s into its 40, best at epoch 2: implant AUROC 0.56 on test; one seed)
                        # SqueezeNet also regresses the spine's shape from its map before pooling (aux_shape_head
                        # "spatial"; the pooled head taught it nothing), for 60 epochs (~720 steps, ~40 s): validation
                        # scoliosis AUROC 0.998 / 0.990 against 0.59 / 0.61 without (bench_aux_target, 2 seeds).
                        # SqueezeNet and DenseNet-121 also learn where the implant boxes are (aux_implant_weight,
                        # tasks.classification.ImplantMapHead; on 600 unseen films, 2 seeds each, this CPU):
                        # implant AUROC 0.928 / 0.956 against 0.908 / 0.913 and 0.941 / 0.941 against 0.930 / 0.914,
                        # scoliosis 0.987 / 0.967 against 0.971 / 0.980 and 0.964 / 0.938 against 0.984 / 0.952.
                        # Not ResNet-50 (0.935 against 0.952, one seed; 0.926 / 0.934 on its layer3) nor
                        # Inception-v3 (0.922 against 0.920; 0.917 / 0.897 on Mixed_6e against 0.920 / 0.886).
                        # Weight 3 (SqueezeNet): implant 0.939 / 0.947 but scoliosis 0.926 / 0.889.
                        # It also shrinks films by each cell's brightest pixel (downsample "max", below): implant
                        # AUROC on the 626 real hybrid films 0.945 / 0.957 against 0.927 / 0.930, on the 600 unseen
                        # synthetic films 0.937 / 0.934 against 0.945 / 0.948 (2 seeds, this CPU, nothing else
                        # running; chosen for the real films, #16's goal).
                        "cls_squeezenet1_1": {"val_every": 1, "patience": None, "epochs": 60, "aux_shape_weight": 1.0,
                                              "aux_shape_head": "spatial", "aux_implant_weight": 1.0,
                                              "extra": {"downsample": "max"}},
                        # The spine-shape loss (TrainSettings.aux_shape_weight) where the budget's steps reach it.
                        # Validation scoliosis AUROC at the quick run's step counts (bench_aux_target, 2 seeds, this
                        # CPU, 2026-12-05): DenseNet-121 (200 steps) 0.987 / 0.995 against 0.867 / 0.874;
                        # Inception-v3 (140) 0.910 / 0.920 against 0.853 / 0.840; implant 0.98-1.00 either way.
                        # Through run-all, on 600 unseen films (seed 7): DenseNet-121 sensitivity / specificity
                        # 0.92 / 0.95 and scoliosis 0.98 (0.75-0.77 / 0.91-0.93 and 0.87-0.89 without, two runs);
                        # Inception-v3 0.87 / 0.82, 0.89 (0.60-0.65 / 0.91-0.96, 0.81). Not ResNet-50: at its
                        # ~160 steps 0.846 / 0.871 against 0.815 / 0.901, and trained for 75 s (~230 steps) three
                        # runs with it gave unseen scoliosis 0.85 / 0.91 / 0.90, two without 0.89 / 0.91. It gets
                        # the 75 s (unseen sensitivity / specificity 0.79 / 0.92 and 0.84 / 0.86; 52 s: 0.78 / 0.88
                        # and 0.79 / 0.84 in the two fresh clones before).
                        # ResNet-50 and DenseNet-121 (and SqueezeNet, above) shrink films to 128 x 56 by each cell's
                        # brightest pixel (downsample "max", data.transforms.resize: thin metal keeps its contrast).
                        # Max against bilinear, implant AUROC (this CPU, 2 seeds each; test / 600 unseen films / 626
                        # real hybrid films): ResNet-50 0.870 / 0.902 / 0.863 and 0.857 / 0.929 / 0.870 against
                        # 0.857 / 0.865 / 0.790 and 0.828 / 0.879 / 0.774; DenseNet-121 0.933 / 0.933 / 0.894 and
                        # 0.907 / 0.921 / 0.907 against 0.922 / 0.938 / 0.868 and 0.890 / 0.932 / 0.895. Not
                        # Inception-v3 (192 x 80, a milder shrink: 0.856 / 0.858 / 0.796 against 0.869 / 0.867 /
                        # 0.794, one seed; it is also the in-domain start of the Inception-v2 detector, whose films
                        # torchvision resizes).
                        # The Inception-v2 detector shrinking by max too (prototype, 2 seeds): Lum AP on the unseen
                        # films 0.33 / 0.42 against 0.34 / 0.40, on the real ones 0.36 / 0.29 against 0.27 / 0.34;
                        # implant AUROC 0.91 / 0.94 against 0.92 / 0.93 and 0.90 / 0.92 against 0.92 / 0.91: not
                        # adopted. The choices here rest on the unseen and real films, not on the run's test split.
                        "cls_resnet50": {"time_budget_s": 75, "extra": {"downsample": "max"}},
                        # DenseNet-121 pools its implant class map by log-sum-exp (implant_pool "lse",
                        # models.classifiers.pool_class_maps), its scoliosis class by the mean as before. Quick
                        # recipe, 4 seeds paired, 2-core EPYC fp32: implant AUROC on the 626 real hybrid films
                        # 0.866 / 0.923 / 0.872 / 0.831 against 0.855 / 0.836 / 0.831 / 0.806, on 600 unseen films
                        # 0.897 / 0.912 / 0.908 / 0.874 against 0.901 / 0.892 / 0.890 / 0.865; scoliosis the same
                        # (unseen 0.847 against 0.844). Not SqueezeNet (4 seeds: unseen 0.935 against 0.935, real
                        # 0.943 against 0.939; sharpness 5 lower) nor ResNet-50 (2 seeds: unseen implant 0.820 /
                        # 0.860 against 0.882 / 0.887, scoliosis 0.66 / 0.68 against 0.80 / 0.85) nor Inception-v3
                        # (2 seeds, mixed: unseen implant 0.886 / 0.858 against 0.904 / 0.858, real 0.833 / 0.803
                        # against 0.831 / 0.768).
                        "cls_densenet121": {"aux_shape_weight": 1.0, "aux_implant_weight": 1.0,
                                            "extra": {"downsample": "max", "implant_pool": "lse"}},
                        # Inception-v3 (192 x 80, ~0.39 s a step) reached only ~130 steps in 52 s; 75 s, like
                        # ResNet-50, on the unseen films (2 seeds, `train --time-budget 75`, this CPU): sensitivity /
                        # specificity 0.87 / 0.89 and 0.82 / 0.83 against 0.72 / 0.91 and 0.76 / 0.85, implant AUROC
                        # 0.938 / 0.926 against 0.920 / 0.886, scoliosis 0.929 / 0.927 against 0.915 / 0.890.
                        "cls_inception_v3": {"aux_shape_weight": 1.0, "time_budget_s": 75}},
        classifier_sizes={"cls_inception_v3": (192, 80)},
        # The landmark model. The heatmap network (cobb_vertebra_resnet34) learns nothing usable in any budget a
        # ten-minute run has: validation SMAPE 53-58% after 60 s (384 x 192 or 256 x 128) and 53.5% after 150 s,
        # where predicting the training split's mean angles scores 39%. Direct corner regression on ResNet-10-T
        # (models.cobb_regress) at 192 x 96 does in 60 s (~360 steps of 16): validation SMAPE 23.1 / 21.7% (2
        # seeds); 75 s: 23.1%; ResNet-18 37.3% at 256 x 128, 26.4 / 28.3% at 192 x 96, 25.3% at 160 x 64, 23.1%
        # after 120 s (one seed each, 2-core CPU, benchmarks/bench_cobb_quick.py). Validation once, at the end.
        # Its films are locally contrast-normalised and equalised (input_norm "local", transforms.local_contrast:
        # synthetic and real films come closer in look). Trained 60 s on synth, three seeds each, this CPU:
        # validation SMAPE 22.3 -> 19.8%, test 24.7 -> 20.4%, the 481 real AASCE films 31.1 -> 27.0%.
        # After training, its offsets from the mean spine are scaled by the gain (0.8-2.0) with the lowest validation
        # SMAPE (tasks.cobb.CobbTask.calibrate; the model reads curves flatter than they are). The saved models of
        # eight fresh clones and one --wall-budget 1500 run, gains chosen 1.15-1.50 (benchmarks/bench_cobb_gain.py,
        # 2-core CPU): test 20.4 -> 19.4% on average (7 of 9 lower), the 481 real AASCE films 27.4 -> 24.8% (8 of 9
        # lower; the 22-epoch model 21.7 -> 22.9%).
        # Its training films are drawn in proportion to their largest Cobb angle + 10 degrees (curve_floor_deg;
        # tasks.cobb.curve_weights): the embedded set's curves are milder than a scoliosis clinic's (largest angle
        # 18.7 degrees at the median against 36.9 on the AASCE films) and the model read real curves flat. Through
        # run-all --models cobb_regress_resnet10t, seeds 1-4 paired (bf16 Zen 4 EPYC): SMAPE on the 626 real hybrid
        # films 22.2 / 22.9 / 21.8 / 22.6% against 23.2 / 23.3 / 23.3 / 23.6% (22.4 against 23.4), on the test
        # split 16.4 against 15.7%; the gains chosen on validation 1.05-1.2 against 1.2-1.35, and the best gain on the
        # 481 AASCE films is 1.00 (f2c0f35's fresh clone; 1.45-1.95 before, session 38). Not adopted, the same
        # way: films widened or narrowed in training by a log-uniform 0.85-1.4 (the AASCE films are cropped tighter,
        # height / width 2.69 at the median against 2.28, so the squeeze to 192 x 96 widens them more): real 22.5%,
        # test 16.2%; both together: real 22.6%; the film's aspect kept (centred, padded): real 23.9%, test 16.4%;
        # weights by the inverse density of the largest angle (10-degree bins; 2 seeds): real 24.0 / 24.0%.
        # (A floor of 20 on session 27's code, 3 seeds: real 23.0 / 23.7 / 23.1% against 22.5 / 22.0 / 21.5%.)
        cobb=TrainSettings(image_size=(192, 96), epochs=100, batch_size=16, lr=2e-3, warmup_epochs=0.5,
                           patience=None, val_every=0, checkpoint_every_s=60, time_budget_s=60,
                           extra={"input_norm": "local", "curve_floor_deg": 10.0}),
        cobb_model="cobb_regress_resnet10t",
        n_boot=300,
        # The ten minutes for `run-all`, data generation included, less 30 s for what the estimate misses
        # (imports before the clock starts, a slow last scoring). The budgets above sum to 474 s; a 2-core EPYC ran
        # the whole in 496-518 s (unscaled), a 2-core AMX Xeon in 565-592 s. On a 2-core fp32 EPYC (Zen 3) the data
        # take 38-46 s and the seven models ~120 s beyond their budgets (engine.runner._WallBudget), so every model
        # gets ~0.85 of its budget there.
        wall_budget_s=570,
    ),
    "paper": Profile(
        name="paper", cache_side=1024,
        # checkpoints by time, as in quick: a paper detector epoch is ~200 steps and its checkpoint 0.4-1.1 GB
        classifier=TrainSettings(epochs=50, batch_size=32, lr=3e-4, patience=10, warmup_epochs=1.0,
                                 num_workers=4, checkpoint_every_s=120),
        # validation every other epoch: here it only picks the best epoch (4000 steps is ~38 epochs, inside the
        # patience), and at batch 1 it is ~2 s against ~7 s of training per epoch (H200 benchmark, 600 images)
        detector=TrainSettings(epochs=50, batch_size=4, lr=1e-4, patience=50, warmup_epochs=1.0, num_workers=4,
                               val_every=2, checkpoint_every_s=120),
        detector_kwargs={"min_size": 800, "max_size": 1024, "box_score_thresh": 0.001},   # as quick (above)
        detector_steps=4000,
        # the train-time spine-shape loss (TrainSettings.aux_shape_weight) for the three large classifiers. One
        # H200, synth hybrid:aasce, same split (benchmarks/gpu_paper.py): ResNet-50 test sensitivity/specificity
        # 0.96 / 0.95 and scoliosis AUROC 0.96 with it (160 s) against 0.95 / 0.90 and 0.93 without (130 s);
        # best validation loss Inception-v3 0.062 vs 0.093, DenseNet-121 0.059 vs 0.056 (170 vs 200 s). Five seeds
        # of ResNet-50 at fixed steps (bench_aux_target): scoliosis 0.960 vs 0.884 after 360 steps. Not SqueezeNet:
        # it lost scoliosis AUROC with it there.
        model_settings={m: {"aux_shape_weight": 1.0} for m in ("cls_resnet50", "cls_densenet121", "cls_inception_v3")},
        # the schedule that reached SMAPE ~10% on held-out AASCE patients (one H200, about 4 minutes)
        cobb=TrainSettings(image_size=(1024, 512), epochs=300, batch_size=16, lr=1e-3, warmup_epochs=3.0,
                           patience=None, checkpoint_every_s=30),
        n_boot=1000,
    ),
}


def budget_scale(wall_budget_s: float, elapsed_s: float, budgets_s: list[float], overheads_s: list[float],
                 tail_s: float = 10.0, floor: float = 0.3, ceiling: float = 1.0) -> float:
    """The factor (``floor`` to ``ceiling``) on the time budgets ``budgets_s`` of the models still to train that ends
    a run by ``wall_budget_s``, ``elapsed_s`` into it, when each model also costs its ``overheads_s`` beyond its
    budget (set-up, scoring, saving) and the run ``tail_s`` after the last (leaderboards, report). The profile's own
    wall budget only cuts (``ceiling`` 1); one the user gives (``run-all --wall-budget``) may also stretch them.

    Why: the budgets end each model by the clock, so the run's length is their sum plus what data generation,
    scoring and the CPU's speed add. On a slower CPU that passed the quick profile's ten minutes (a 2-core Xeon:
    565-592 s against 496-518 s on a 2-core EPYC). Scaled, every model keeps its share and its clock-annealed
    schedule; a slower machine buys fewer steps, and the rows say how many (``epochs``, ``train_seconds``). The floor
    keeps a model from being starved when the machine is far slower than the budget assumes (the run then ends late).
    """
    total = float(sum(budgets_s))
    if total <= 0:
        return 1.0
    left = wall_budget_s - elapsed_s - tail_s - float(sum(overheads_s))
    return float(min(ceiling, max(floor, left / total)))


def scaled_settings(s: TrainSettings, scale: float) -> TrainSettings:
    """``s`` with its time budget, and a pre-training budget in ``extra["pretrain_s"]``, times ``scale``.

    A stretched model (``scale`` > 1) also gets its epoch cap and its checkpoint interval times ``scale``: the cap is
    set for the profile's own budget (30 classifier epochs, SqueezeNet's 60, ...), and the clock, not the cap, should
    still end it; and a checkpoint a minute over a 2.9x longer run wrote 5.07 GB instead of 1.80 (``run-all
    --wall-budget 1500``, 2-core EPYC); as many checkpoints a model as in the ten-minute run write about its bytes.
    """
    if scale == 1 or not s.time_budget_s:
        return s
    extra = dict(s.extra)
    if extra.get("pretrain_s"):
        extra["pretrain_s"] = round(extra["pretrain_s"] * scale, 1)
    grow = max(scale, 1.0)
    return replace(s, time_budget_s=round(s.time_budget_s * scale, 1), extra=extra, epochs=math.ceil(s.epochs * grow),
                   checkpoint_every_s=s.checkpoint_every_s * grow)


def with_wall_budget(prof: Profile, wall_budget_s: float) -> Profile:
    """``prof`` ending its runs by ``wall_budget_s`` seconds, its models' budgets scaled up or down together.

    Why: the quick profile's budgets are seconds, tuned so that `run-all` fits ten minutes on a 2-core CPU with bf16
    units; a CPU without them (fp32) fits a fifth to half of the steps in them. A user who can wait longer buys
    those steps back, each model keeping its share (DenseNet-121 given 130 s instead of 50 on a 2-core AVX2 EPYC:
    24 epochs instead of 9, the AMX Xeon's figures; README, 'On a CPU without bf16').
    """
    if prof.wall_budget_s is None:
        raise SpinebenchError(f"--wall-budget: the {prof.name} profile trains by epochs and steps, not by the clock "
                              "(use --profile quick)")
    if not (isinstance(wall_budget_s, (int, float)) and math.isfinite(wall_budget_s) and wall_budget_s > 0):
        raise SpinebenchError(f"--wall-budget must be a positive number of seconds (got {wall_budget_s})")
    return replace(prof, wall_budget_s=float(wall_budget_s), scale_up=True)


def budget_seconds(s: TrainSettings) -> float:
    """A model's clock budget in seconds: its training budget plus any pre-training budget (0 when unbounded)."""
    return float(s.time_budget_s) + float(s.extra.get("pretrain_s") or 0) if s.time_budget_s else 0.0


def profile_cache_side(entry: dict) -> int:
    """The longest side the model's training run downscaled images to (``Profile.cache_side``).

    Read from the manifest entry: ``cache_side`` when recorded, else the profile named at the end of the run id
    (``20250101-120000-quick``), else the quick profile's.
    """
    if entry.get("cache_side") or entry.get("max_side"):  # max_side: the name the former Cobb trainer wrote
        return int(entry.get("cache_side") or entry["max_side"])
    prof = entry.get("profile") or str(entry.get("run_id", "")).rsplit("-", 1)[-1]
    return PROFILES[prof].cache_side if prof in PROFILES else PROFILES["quick"].cache_side


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise SpinebenchError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]
