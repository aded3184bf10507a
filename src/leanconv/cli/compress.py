"""``leanconv compress MODEL --data SPEC --speedup 3 --out DIR``: the main job."""

from __future__ import annotations

from pathlib import Path

import typer

from ..compress.deploy import Deployment
from ..compress.finetune import FinetuneConfig, finetune
from ..compress.grad_spikes import FACTOR as SPIKE_FACTOR
from ..compress.grad_spikes import WINDOW as SPIKE_WINDOW
from ..compress.pipeline import CompressConfig, compress, staging_of
from ..compress.planning import DEFAULT_METHODS, target_from
from ..compress.precise_bn import SAMPLES as BN_SAMPLES
from ..compress.run_lock import RunLock
from ..data import load_data
from ..decompose import METHODS
from ..errors import OutputExistsError
from ..loading import load_trainable
from .arguments import key_values
from .common import command, console
from .tables import before_after_table

MODEL_FILES = (".pt", ".pth", ".pt2", ".ts", ".jit")


def _numbers(text: str | None, flag: str, count: tuple[int, ...], kind=float) -> tuple | None:
    """``"0.5,0.4,0.3"`` -> a tuple of ``count`` numbers (one of the allowed counts)."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give numbers separated by commas") from None
    if len(values) not in count:
        raise ValueError(f"{flag} {text!r}: give {' or '.join(map(str, count))} number(s)")
    return values


def _names(text: str) -> tuple[str, ...]:
    """``"tucker2, spatial_svd"`` -> ``("tucker2", "spatial_svd")``; ``"none"`` -> ``()``."""
    return tuple(n.strip() for n in text.split(",") if n.strip() not in ("", "none"))


def register(app: typer.Typer) -> None:
    @command(app, "compress")
    def compress_cmd(
        model: str = typer.Argument(
            ..., help="zoo name, file.py:factory or package.module:factory (with --weights)"
        ),
        data: str = typer.Option("digits", "--data", help="digits, folder:PATH, cifar10:PATH"),
        out: Path = typer.Option(..., "--out", help="output directory (must not exist)"),
        weights: str = typer.Option(
            None,
            "--weights",
            help="trained weights: .safetensors, or .pt/.pth/.bin/.ckpt state "
            "dict or checkpoint (read with torch.load(weights_only=True))",
        ),  # fmt: skip
        model_arg: list[str] = typer.Option(
            None, "--model-arg", help="KEY=VALUE argument of the factory (repeatable)"
        ),
        width: float = typer.Option(None, "--width", help="width of a zoo model"),
        input_size: str = typer.Option(
            None, "--input-size", help="H[,W] the images are resized to (default: their own)"
        ),
        resize: int = typer.Option(None, "--resize", help="resize the shorter side to N"),
        crop: int = typer.Option(None, "--crop", help="then take the centre N x N crop"),
        normalize: str = typer.Option(
            None, "--normalize", help="imagenet, dataset or none (default: none, pixels 0..1)"
        ),
        classes: str = typer.Option(
            None,
            "--classes",
            help="the class folders in the order of the model's outputs "
            "(A,B,C; default: sorted, as torchvision's ImageFolder)",
        ),  # fmt: skip
        mean: str = typer.Option(
            None, "--mean", help="R,G,B mean subtracted from pixels 0..1 (one with --grayscale)"
        ),
        std: str = typer.Option(None, "--std", help="R,G,B standard deviation divided by"),
        grayscale: bool = typer.Option(
            False, "--grayscale", help="read the images as one channel (for a 1-channel model)"
        ),
        min_metric: float = typer.Option(
            None,
            "--min-metric",
            help="the original's accuracy must reach this (default: "
            "clearly above chance; 0 skips the check)",
        ),  # fmt: skip
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
        methods: str = typer.Option(
            ",".join(DEFAULT_METHODS),
            "--methods",
            help=f"decompositions to plan with ({', '.join(METHODS)}), 'prune' (prune the "
            "channels between two convolutions), or 'none'",
        ),  # fmt: skip
        epochs: int = typer.Option(5, "--epochs", help="fine-tuning epochs"),
        lr: float = typer.Option(0.01, "--lr", help="fine-tuning learning rate"),
        validation: float = typer.Option(
            0.0, "--validation", help="training images held out to pick the best epoch (0-1)"
        ),
        patience: int = typer.Option(
            None, "--patience", help="stop after N epochs without a better validation accuracy"
        ),
        bn_samples: int = typer.Option(
            BN_SAMPLES,
            "--bn-samples",
            help="training images the BatchNorm statistics are recomputed from before each "
            "evaluation (0: keep the running averages)",
        ),
        spike_clip: float = typer.Option(
            SPIKE_FACTOR,
            "--spike-clip",
            help="fine-tuning cuts a step's gradient norm to this many times the median of the "
            f"last {SPIKE_WINDOW} steps (0: off)",
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
            True,
            "--fuse/--no-fuse",
            help="fuse ReLUs and residual sums into convolutions, pack them for oneDNN",
        ),
        workers: int = typer.Option(None, "--workers", help="processes reading images"),
        force: bool = typer.Option(False, "--force", help="replace an existing --out"),
        resume: bool = typer.Option(False, "--resume", help="continue an interrupted run"),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow a pickled model"),
        train_first: bool = typer.Option(
            False, "--train-first", help="no --weights: train the model on --data first"
        ),
        train_epochs: int = typer.Option(5, "--train-epochs", help="epochs of --train-first"),
        train_lr: float = typer.Option(0.05, "--train-lr", help="learning rate of --train-first"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Plan, decompose, verify, fine-tune, measure and report; writes report.md,
        report.json, plots, the compressed model (safetensors + JSON) and model.onnx.

        Target: --speedup (measured latency), --macs-ratio, or --max-drop alone (the fastest plan
        whose trial stays within that many accuracy points); none given: --speedup 2."""
        target, allowed_drop = target_from(speedup, macs_ratio, max_drop)
        # every setting is checked here, before the data or the model is read
        config = CompressConfig(
            target=target,
            max_drop=allowed_drop,
            search_epochs=search_epochs,
            algorithms=_names(algorithms),
            methods=_names(methods),
            plan_batch=batch,
            calibration=calibration,
            prefer_capacity=not most_accurate,
            deployment=Deployment(fuse=fuse),
            finetune=FinetuneConfig(
                epochs=epochs,
                lr=lr,
                seed=seed,
                validation=validation,
                patience=patience,
                bn_samples=bn_samples,
                spike_clip=spike_clip,
            ),
            seed=seed,
            min_metric=min_metric,
        )
        given = _preprocessing(data, input_size, resize, crop, normalize, mean, std, workers,
                               classes, grayscale)  # fmt: skip
        args = key_values(model_arg, "--model-arg")
        _check_weights(model, weights, trust_pickle, train_first, train_epochs, train_lr)
        if out.exists() and not force:
            raise OutputExistsError(f"output directory {str(out)!r} exists; pass --force")
        RunLock.probe(out)  # another run on --out: say so now, not after loading
        bundle = load_data(data, seed=seed, **given)
        console.print(f"data: {bundle.describe()}" + _preprocessing_line(bundle.preprocessing),
                      soft_wrap=True)  # fmt: skip
        bundle.check_counts()
        net, base = load_trainable(model, bundle.num_classes, weights, trust_pickle, width,
                                   model_args=args, log=console.print)  # fmt: skip
        notes = [_train_reference(net, bundle, train_epochs, train_lr, seed)] if train_first else []
        try:
            result = compress(net, bundle, config, out, base, force=force, resume=resume,
                              log=console.print, notes=notes)  # fmt: skip
        except KeyboardInterrupt:
            _say_interrupted(out)
            raise typer.Exit(130) from None
        console.print(before_after_table(result))
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


def _preprocessing(data: str, input_size, resize, crop, normalize, mean, std, workers,
                   classes=None, grayscale=False) -> dict:  # fmt: skip
    """The image-folder settings given on the command line (refused for other data)."""
    channels = (1,) if grayscale else (3,)
    prep = {
        "input_size": _numbers(input_size, "--input-size", (1, 2), int),
        "resize": resize, "crop": crop, "normalize": normalize,
        "mean": _numbers(mean, "--mean", channels), "std": _numbers(std, "--std", channels),
        "classes": [c.strip() for c in classes.split(",")] if classes is not None else None,
        "grayscale": True if grayscale else None,
    }  # fmt: skip
    if prep["input_size"] and len(prep["input_size"]) == 1:
        prep["input_size"] = prep["input_size"] * 2
    given = {k: v for k, v in prep.items() if v is not None}
    if given and not data.startswith("folder:"):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"{flags}: preprocessing applies to --data folder:PATH only")
    if data.startswith("folder:"):
        given.setdefault("normalize", "none")
        if workers is not None:
            given["workers"] = workers
    return given


def _check_weights(model: str, weights, trust_pickle, train_first, epochs, lr) -> None:
    """Trained weights, or ``--train-first``: one of the two (a model file carries its own)."""
    trained = weights is not None or trust_pickle or Path(model).suffix in MODEL_FILES
    if trained and train_first:
        raise ValueError("--train-first trains a model that has no weights: drop --weights")
    if not trained and not train_first:
        raise ValueError(
            f"no --weights for {model!r}: compressing an untrained model measures nothing. "
            "Give the trained weights (--weights FILE), or --train-first to train it on "
            "--data first"
        )
    if train_first and (epochs < 1 or not lr > 0):
        raise ValueError("--train-epochs must be at least 1 and --train-lr positive")


def _say_interrupted(out: Path) -> None:
    if (staging_of(out) / "run.json").exists():
        console.print(f"interrupted: what was done is kept; rerun with --resume to continue "
                      f"({staging_of(out)})")  # fmt: skip
    else:
        console.print("interrupted before anything was saved: nothing to resume")


def _train_reference(net, bundle, epochs: int, lr: float, seed: int) -> str:
    """``--train-first``: train the model on the data (cross-entropy, no teacher), in view;
    returns the report's line about it."""
    console.print(f"[0/6] training the model first (--train-first): {epochs} epochs, lr {lr:g}")
    config = FinetuneConfig(epochs=epochs, lr=lr, warmup_epochs=min(1.0, epochs / 5), seed=seed)
    result = finetune(net, bundle, None, config, log=lambda m: console.print("      " + m))
    console.print(f"      trained: test accuracy {result.best_metric:.2f}%")
    return (
        f"the original was trained by leanconv first (--train-first: {epochs} epochs, lr "
        f"{lr:g}, test accuracy {result.best_metric:.2f}%), not given trained weights"
    )


def _preprocessing_line(prep: dict) -> str:
    if not prep:
        return ""
    parts = [f"{k} {v}" for k, v in prep.items() if k not in ("data", "classes") and v]
    return "; inputs: " + (", ".join(parts) if parts else "as stored")
