"""`snn predict IMAGE... [--model RUN_FOLDER_OR_model.npz] [--json]`: cat or non-cat, per picture.

Every picture that can be read is classified; each one that cannot gets one line on stderr, and
the exit code is then 1. No model at all is a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

MODEL_HELP = (
    "a run folder, or a model.npz (its activations come from a metrics.json beside it, else "
    "relu hidden layers and a sigmoid output are assumed); default: the newest folder in runs/ "
    "that has a model.npz"
)
DATA_HELP = (
    "the data the model was trained on: a folder with the two h5 files of the cat/non-cat set, "
    "an .npz, or a folder of pictures (default: $SNN_DATA_DIR, else the downloaded cache)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify pictures as cat or non-cat with a trained model",
        description="Classify pictures (PNG, JPEG, GIF, BMP, WebP, TIFF, ...) as cat or non-cat. "
        "Each one is converted to RGB and resized to the model's input size (64 x 64 for the "
        "real data set) with a Lanczos filter, then fed to the network as the training images "
        "were.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="picture files")
    parser.add_argument("--model", metavar="RUN_FOLDER_OR_model.npz", help=MODEL_HELP)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list of {"file", "label", "probability"} (P(cat)) instead of lines',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from snn.cli import err, out
    from snn.predict import ImageError, classify, load_image, load_model

    model = load_model(args.model)
    if args.model is None:  # say which one: the newest run's, maybe not the one meant
        err.print(
            f"model: {model.path} (the newest run in runs/ with a model; --model chooses)",
            markup=False,
        )
    files: list[str] = []
    pictures = []
    failed = 0
    for name in args.images:
        try:
            pictures.append(load_image(name, model.image_size))
            files.append(name)
        except ImageError as exc:
            err.print(f"snn: error: {exc}", markup=False)
            failed += 1
    results: list[dict[str, Any]] = [
        {"file": f, **r} for f, r in zip(files, classify(model, pictures), strict=True)
    ]
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        width = max((len(f) for f in files), default=0)
        for r in results:
            out.print(
                f"{r['file']:<{width}}  {r['label']:<7}  P(cat) = {r['probability']:.4f}",
                markup=False,
            )
    return 1 if failed else 0
