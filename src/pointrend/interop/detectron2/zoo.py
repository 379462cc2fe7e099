"""The published detectron2 PointRend models: names, download URLs, the config values the importer
needs, the authors' published metrics and the class names of their datasets.

``--zoo NAME`` (:func:`zoo_config`, :func:`fetch_checkpoint`): the checkpoint is downloaded into
torch's hub cache (``<torch hub dir>/checkpoints/detectron2/<model id>/<file>``) when the machine
is online; offline, the error says which URL to download and where to put it.

Metrics are the authors' figures as published with the models (COCO mask AP; AP* is COCO mask
AP against the LVIS re-annotation of COCO; Cityscapes mIoU), not measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import D2Config, D2ImportError

__all__ = [
    "ZOO",
    "NOT_SUPPORTED",
    "ZooModel",
    "zoo_model",
    "zoo_config",
    "zoo_checkpoint_path",
    "fetch_checkpoint",
    "dataset_classes",
]

URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"

# Config values every model shares: ResNet-FPN backbone, detectron2's input convention.
_BACKBONE = {
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.PIXEL_MEAN": [103.53, 116.28, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "INPUT.FORMAT": "BGR",
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
}
# PointRend Mask R-CNN (projects/PointRend InstanceSegmentation configs).
_POINTREND_RCNN = {
    **_BACKBONE,
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.MASK_ON": True,
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_MASK_HEAD.NAME": "PointRendMaskHead",
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.ROI_MASK_HEAD.FC_DIM": 1024,
    "MODEL.ROI_MASK_HEAD.NUM_FC": 2,
    "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": 7,
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.NUM_CLASSES": 80,
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 5,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 784,
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": True,
}
# PointRend Semantic FPN (projects/PointRend SemanticSegmentation config).
_POINTREND_SEMANTIC = {
    **_BACKBONE,
    "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.RESNETS.DEPTH": 101,
    "INPUT.MIN_SIZE_TEST": 1024,
    "INPUT.MAX_SIZE_TEST": 2048,
    "MODEL.SEM_SEG_HEAD.NAME": "PointRendSemSegHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.NUM_CLASSES": 19,
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 2048,
    "MODEL.POINT_HEAD.OVERSAMPLE_RATIO": 3,
    "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 2,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 8192,
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": False,
    "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemSegFPNHead",
}


@dataclass(frozen=True)
class ZooModel:
    """A published checkpoint: ``name`` (its config's name), ``path`` below :data:`URL_ROOT`,
    ``task``, ``dataset`` (``"coco"``, ``"cityscapes"``), the published ``metrics`` and the
    ``config`` values the importer reads."""

    name: str
    path: str
    task: str
    dataset: str
    metrics: dict
    config: dict = field(repr=False)

    @property
    def url(self) -> str:
        return URL_ROOT + self.path


# The plain Mask R-CNN (COCO-InstanceSegmentation configs): 4 convs, deconv, 28x28 masks.
_MASK_RCNN = {
    **{k: v for k, v in _POINTREND_RCNN.items() if not k.startswith("MODEL.POINT_HEAD.")},
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
}


def _instance(
    name: str, model_id: str, file: str, metrics: dict, base: dict = _POINTREND_RCNN, **changes
) -> ZooModel:
    folder = (
        "PointRend/InstanceSegmentation" if base is _POINTREND_RCNN else "COCO-InstanceSegmentation"
    )
    path = f"{folder}/{name}/{model_id}/{file}"
    dataset = "cityscapes" if name.endswith("cityscapes") else "coco"
    config = {**base, **{k.replace("__", "."): v for k, v in changes.items()}}
    return ZooModel(name, path, "instance", dataset, metrics, config)


_R101 = {"MODEL__RESNETS__DEPTH": 101}
_X101 = {
    **_R101,
    "MODEL__RESNETS__STRIDE_IN_1X1": False,
    "MODEL__RESNETS__NUM_GROUPS": 32,
    "MODEL__RESNETS__WIDTH_PER_GROUP": 8,
    "MODEL__PIXEL_STD": [57.375, 57.12, 58.395],
}
_CITYSCAPES = {
    "INPUT__MIN_SIZE_TEST": 1024,
    "INPUT__MAX_SIZE_TEST": 2048,
    "MODEL__ROI_HEADS__NUM_CLASSES": 8,
    "MODEL__POINT_HEAD__NUM_CLASSES": 8,
}
ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        _instance(
            "pointrend_rcnn_R_50_FPN_1x_coco",
            "164254221",
            "model_final_736f5a.pkl",
            {"mask AP": 36.2, "mask AP*": 39.7},
        ),
        _instance(
            "pointrend_rcnn_R_50_FPN_3x_coco",
            "164955410",
            "model_final_edd263.pkl",
            {"mask AP": 38.3, "mask AP*": 41.6},
        ),
        _instance(
            "pointrend_rcnn_R_101_FPN_3x_coco",
            "28119983",
            "model_final_3f4d2a.pkl",
            {"mask AP": 40.1, "mask AP*": 43.8},
            **_R101,
        ),
        _instance(
            "pointrend_rcnn_X_101_32x8d_FPN_3x_coco",
            "28119989",
            "model_final_ba17b9.pkl",
            {"mask AP": 41.1, "mask AP*": 44.7},
            **_X101,
        ),
        _instance(
            "pointrend_rcnn_R_50_FPN_1x_cityscapes",
            "164255101",
            "model_final_115bfb.pkl",
            {"mask AP": 35.9},
            **_CITYSCAPES,
        ),
        _instance(
            "mask_rcnn_R_50_FPN_1x",
            "137260431",
            "model_final_a54504.pkl",
            {"box AP": 38.6, "mask AP": 35.2},
            _MASK_RCNN,
        ),
        ZooModel(
            "pointrend_semantic_R_101_FPN_1x_cityscapes",
            "PointRend/SemanticSegmentation/pointrend_semantic_R_101_FPN_1x_cityscapes/"
            "202576688/model_final_cf6ac1.pkl",
            "semantic",
            "cityscapes",
            {"mIoU": 78.9},
            _POINTREND_SEMANTIC,
        ),
    )
}
# detectron2 configs without an importer here, and why.
NOT_SUPPORTED = {
    "implicit_pointrend_R_50_FPN_1x_coco": "Implicit PointRend: configs exist, but no "
    "checkpoint is published",
    "implicit_pointrend_R_50_FPN_3x_coco": "Implicit PointRend: configs exist, but no "
    "checkpoint is published",
}


def zoo_model(name: str) -> ZooModel:
    """The published model ``name`` (an error lists the known names)."""
    if name in NOT_SUPPORTED:
        raise D2ImportError(f"--zoo {name}: not supported: {NOT_SUPPORTED[name]}")
    if name not in ZOO:
        raise D2ImportError(f"--zoo {name}: unknown model; known: {', '.join(sorted(ZOO))}")
    return ZOO[name]


def zoo_config(name: str) -> D2Config:
    """The detectron2 config values of the published model ``name``."""
    return D2Config(zoo_model(name).config, source=f"--zoo {name}")


def zoo_checkpoint_path(name: str) -> Path:
    """Where :func:`fetch_checkpoint` puts the checkpoint of ``name`` (torch's hub cache)."""
    import torch.hub

    model = zoo_model(name)
    model_id, file = model.path.split("/")[-2:]
    return Path(torch.hub.get_dir()) / "checkpoints" / "detectron2" / model_id / file


def fetch_checkpoint(name: str) -> Path:
    """The checkpoint of ``name``, downloaded into the hub cache unless it is there already."""
    import torch.hub

    path = zoo_checkpoint_path(name)
    if path.is_file():
        return path
    url = zoo_model(name).url
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as err:  # offline, proxy, HTTP error
        raise D2ImportError(
            f"cannot download {url} ({err}); download it yourself and put it at {path}, or "
            "pass the downloaded file as CHECKPOINT"
        ) from err
    return path


CITYSCAPES_INSTANCE = (
    ("person", 24),
    ("rider", 25),
    ("car", 26),
    ("truck", 27),
    ("bus", 28),
    ("train", 31),
    ("motorcycle", 32),
    ("bicycle", 33),
)


def _coco_categories() -> list[tuple[str, int]]:
    """COCO's 80 (name, category id) in detectron2's class order (ascending id), from
    torchvision's COCO metadata (index = category id, ``"N/A"`` for unused ids)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    names = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return [(n, i) for i, n in enumerate(names) if i > 0 and n != "N/A"]


def dataset_classes(dataset: str | None, num_classes: int) -> tuple[list[str], dict[int, int]]:
    """``(class names by label, label -> category id)`` for a model of ``num_classes``
    (background included): label 0 is ``"background"``, label ``c + 1`` is detectron2's class
    ``c``. Without a known dataset of that size: ``class_0``, ... and an empty map."""
    known = {"coco": _coco_categories, "cityscapes": lambda: list(CITYSCAPES_INSTANCE)}
    categories = known[dataset]() if dataset in known else []
    if len(categories) != num_classes - 1:
        return ["background", *(f"class_{c}" for c in range(num_classes - 1))], {}
    names = ["background", *(n for n, _ in categories)]
    return names, {label: cid for label, (_, cid) in enumerate(categories, start=1)}
