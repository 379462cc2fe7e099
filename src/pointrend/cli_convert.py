"""The ``pointrend export`` and ``pointrend import-detectron2`` commands (model conversion)."""

from __future__ import annotations

from .cli_options import add_overwrite_option, add_set_option


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export trained weights to ONNX (onnxruntime) or TorchScript")
    p.add_argument("config", help="YAML config the weights were trained with")
    p.add_argument("--weights", required=True, help="checkpoint written by 'pointrend train'")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    add_set_option(p, "model.options.box_score_thresh=0.3")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="traced image size")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16; default 17)")
    add_overwrite_option(p, "an existing --out file")
    p.add_argument(
        "--device",
        default="cpu",
        help="device the model is traced on: cpu (default; the file then runs anywhere), cuda "
        "or cuda:N",
    )
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from .engine.outputs import check_outputs, hold_file
    from .export import export_from_config

    check_outputs([args.out], [args.config, args.weights], args.overwrite)
    with hold_file(args.out):
        result = export_from_config(
            args.config,
            args.weights,
            args.format,
            args.out,
            args.set,
            args.size,
            args.opset,
            device=args.device,
        )
    diff = result["max_abs_diff"]
    check = "not checked" if diff is None else f"max |difference| {diff:.2g}"
    print(
        f"exported the {result['task']} model ({result['num_classes']} classes) to "
        f"{result['path']} ({result['format']}); vs PyTorch on a random image: {check}"
    )
    return 0


def add_import_detectron2_parser(sub) -> None:
    p = sub.add_parser(
        "import-detectron2",
        help="convert a detectron2 PointRend checkpoint (.pkl / .pth) into a pointrend checkpoint",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="detectron2 model-zoo .pkl or trainer .pth (with --zoo and no file: downloaded "
        "into torch's hub cache)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--d2-config", help="the config.yaml detectron2 wrote next to the weights")
    source.add_argument("--zoo", help="a published model, e.g. pointrend_rcnn_R_50_FPN_3x_coco")
    p.add_argument("--out", required=True, help="pointrend checkpoint to write, e.g. model.pt")
    add_overwrite_option(p, "an existing OUT and OUT.yaml")
    p.set_defaults(func=_run_import_detectron2)


def _run_import_detectron2(args) -> int:
    from .engine.imported import write_imported_checkpoint
    from .engine.outputs import check_import_outputs, hold_file
    from .interop.detectron2 import import_detectron2

    inputs = [args.checkpoint, args.d2_config]
    check_import_outputs(args.out, inputs, args.overwrite)
    with hold_file(args.out):
        imported = import_detectron2(args.checkpoint, args.d2_config, args.zoo)
        check_import_outputs(args.out, inputs, args.overwrite)  # nothing appeared meanwhile
        path = write_imported_checkpoint(imported, args.out)
    spec = imported.model_config
    print(
        f"imported a {spec['task']} {spec['name']} {spec['backbone']} model "
        f"({len(imported.class_names)} classes) to {path}; its config: {path.with_suffix('.yaml')}"
    )
    return 0
