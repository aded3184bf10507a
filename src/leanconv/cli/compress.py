"""``leanconv compress MODEL --data SPEC --speedup 3 --out DIR``: the main job."""

from __future__ import annotations

from pathlib import Path

import typer

from ..compress.algorithms import ALGORITHMS
from ..compress.deploy import Deployment
from ..compress.finetune import FinetuneConfig
from ..compress.pipeline import CompressConfig, compress
from ..data import load_data
from ..loading import load_trainable
from .common import console, handle_errors
from .tables import before_after_table


def register(app: typer.Typer) -> None:
    @app.command("compress")
    @handle_errors
    def compress_cmd(
        model: str = typer.Argument(..., help="zoo name or file.py:factory (with --weights)"),
        data: str = typer.Option("digits", "--data", help="digits, folder:PATH, cifar10:PATH"),
        out: Path = typer.Option(..., "--out", help="output directory (must not exist)"),
        weights: str = typer.Option(None, "--weights", help="trained weights, .safetensors"),
        width: float = typer.Option(None, "--width", help="width of a zoo model"),
        speedup: float = typer.Option(None, "--speedup", help="target measured speedup"),
        macs_ratio: float = typer.Option(None, "--macs-ratio", help="target MACs ratio"),
        max_drop: float = typer.Option(
            None, "--max-drop", help="accuracy points allowed; alone: the fastest plan within it"
        ),
        search_epochs: int = typer.Option(
            1, "--search-epochs", help="fine-tuning epochs per trial of the --max-drop search"
        ),
        algorithms: str = typer.Option(
            "winograd2,winograd4,winograd6",
            "--algorithms",
            help="fast algorithms the planner may choose per layer, or 'none'",
        ),
        methods: str = typer.Option("tucker2,svd", "--methods", help="tucker2,svd,cp,depthwise,tt"),
        epochs: int = typer.Option(5, "--epochs", help="fine-tuning epochs"),
        lr: float = typer.Option(0.01, "--lr", help="fine-tuning learning rate"),
        validation: float = typer.Option(
            0.0, "--validation", help="training images held out to pick the best epoch (0-1)"
        ),
        patience: int = typer.Option(
            None, "--patience", help="stop after N epochs without a better validation accuracy"
        ),
        batch: int = typer.Option(64, "--batch", help="deployment batch for planning"),
        calibration: int = typer.Option(
            128, "--calibration", help="training images the sensitivities are measured on"
        ),
        most_accurate: bool = typer.Option(
            False,
            "--most-accurate",
            help="keep the most accurate plan, not the one with the most MACs within one "
            "standard error of it",
        ),
        fuse: bool = typer.Option(
            True, "--fuse/--no-fuse", help="fuse ReLUs into convolutions, pack them for oneDNN"
        ),
        force: bool = typer.Option(False, "--force", help="replace an existing --out"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted run"),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow a pickled model"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Plan, decompose, verify, fine-tune, measure and report; writes report.md,
        report.json, plots, the compressed model (safetensors + JSON) and model.onnx.

        Target: --speedup (measured latency), --macs-ratio, or --max-drop alone (the fastest plan
        whose trial stays within that many accuracy points); none given: --speedup 2."""
        if speedup is not None and macs_ratio is not None:
            raise ValueError("give --speedup or --macs-ratio, not both")
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        fast = tuple(a.strip() for a in algorithms.split(",") if a.strip() not in ("", "none"))
        unknown = [a for a in fast if a not in ALGORITHMS]
        if unknown:
            raise ValueError(
                f"--algorithms: unknown {unknown}; choose from {', '.join(ALGORITHMS)}"
            )
        if search_epochs < 1:
            raise ValueError(f"--search-epochs {search_epochs} must be at least 1")
        if calibration < 2:
            raise ValueError(f"--calibration {calibration}: at least 2 images (the sensitivities "
                             "carry a standard error)")  # fmt: skip
        bundle = load_data(data, seed=seed)
        net, base = load_trainable(model, bundle.num_classes, weights, trust_pickle, width)
        targeted = speedup is not None or macs_ratio is not None or max_drop is not None
        config = CompressConfig(
            speedup=speedup if targeted else 2.0,
            macs_ratio=macs_ratio,
            max_drop=max_drop,
            search_epochs=search_epochs,
            algorithms=fast,
            methods=chosen,
            plan_batch=batch,
            calibration=calibration,
            prefer_capacity=not most_accurate,
            deployment=Deployment(fuse=fuse),
            finetune=FinetuneConfig(
                epochs=epochs, lr=lr, seed=seed, validation=validation, patience=patience
            ),
            seed=seed,
        )
        if macs_ratio is not None:
            config.speedup = None
        try:
            result = compress(net, bundle, config, out, base, force=force, resume=resume,
                              log=console.print)  # fmt: skip
        except KeyboardInterrupt:
            console.print(f"interrupted: the last checkpoint stays valid; rerun with --resume "
                          f"to continue ({out}.partial)")  # fmt: skip
            raise typer.Exit(130) from None
        console.print(before_after_table(result))
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
