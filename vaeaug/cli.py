"""The ``vaeaug`` command: ``fit``, ``info``, ``export``, ``generate``, ``verify``, ``evaluate``, ``score``,
``preview``.

Usage errors, missing files, unknown datasets and invalid input exit with code 2 and one
line on stderr, never a traceback. Anything else that escapes a subcommand is a bug: it is also
said in one line (exit code 1) with the way to see its traceback, ``vaeaug --debug ...`` or
``VAEAUG_DEBUG=1``. Ctrl-C exits with 130. Where a subcommand writes files, the places it writes
to are checked before any long work starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``vaeaug fit: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _widths(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 32,64; got {s!r}") from None


def _value_range(s: str) -> tuple[float, float]:
    """``LOW,HIGH`` (what :func:`_join_value_range` makes of ``--value-range LOW HIGH``) as two floats."""
    try:
        low, high = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW HIGH, e.g. --value-range -1e3 1e3 or "
                                         f"--value-range=-1e3,1e3; got {s!r}") from None
    return low, high


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _join_value_range(argv: list[str]) -> list[str]:
    """``--value-range LOW HIGH`` as one token ``--value-range=LOW,HIGH``: argparse would read a negative
    number in exponent form (``-1e3``) as an option, not as a value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--value-range" and i + 2 < len(argv) and _is_float(argv[i + 1]) and _is_float(argv[i + 2]):
            out.append(f"--value-range={argv[i + 1]},{argv[i + 2]}")
            i += 3
        else:
            out.append(argv[i])
            i += 1
    return out


_AUGMENTS = ["classic", "classic+flip"]


@functools.cache
def _shared_options() -> dict[str, dict[str, Any]]:
    """The flags several subcommands take, declared once: flag -> ``add_argument`` keywords."""
    from vaeaug.core.settings import MODES

    return {
        "--model": {"required": True, "help": "a .vae model file"},
        "--data": {"required": True,
                   "help": "'digits', 'fashion-mnist', a .npz file with arrays x (and y), or an image folder"},
        "--out": {"required": True},
        "--force": {"action": "store_true", "help": "overwrite --out if it exists"},
        "--split": {"default": "train", "help": "split of a built-in dataset (default: %(default)s)"},
        "--root": {"default": None, "help": "folder holding a built-in dataset's files"},
        "--mode": {"default": None, "choices": MODES},
        "--strength": {"type": float, "default": None, "help": "size of the latent move"},
        "--form": {"default": None, "choices": ["decode", "delta"],
                   "help": "decode: the decoded variant; delta: the input plus the decoded change"},
        "--seed": {"type": int, "default": 0},
        "--no-progress": {"action": "store_true", "help": "no progress bar"},
    }


def _shared(p: argparse.ArgumentParser, *flags: str, **helps: str) -> None:
    """Add the shared ``flags`` to ``p`` in this order; ``helps`` replaces a flag's help by its dest (``out=...``)."""
    specs, dests = _shared_options(), [flag.lstrip("-").replace("-", "_") for flag in flags]
    if set(helps) - set(dests):
        raise TypeError(f"help given for flags not added: {sorted(set(helps) - set(dests))}")
    for flag, dest in zip(flags, dests, strict=True):
        p.add_argument(flag, **{**specs[flag], **({"help": helps[dest]} if dest in helps else {})})


def _build_parser() -> _Parser:
    """The ``vaeaug`` parser: the global flags, then a subparser per subcommand."""
    from vaeaug._version import __version__

    parser = _Parser(prog="vaeaug", description="Fit and inspect VAEs used as data augmentation.")
    parser.add_argument("--version", action="version", version=f"vaeaug {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of any error (also: environment variable VAEAUG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_fit(sub)
    _add_evaluate(sub)
    _add_model_on_data(sub, "score")
    _add_model_on_data(sub, "preview")
    _add_export(sub)
    _add_generate(sub)
    _add_verify(sub)
    _add_info(sub)
    return parser


def _add_fit(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug fit``: the data, the model and its training, then what is done after (tuning, curves)."""
    p = sub.add_parser("fit", help="fit a VAE and save it to one model file",
                       description="Fit a VAE on a built-in dataset, a .npz file or an image folder.")
    _shared(p, "--data", "--out", "--force", "--split", "--root", out="model file to write, e.g. digits.vae")
    p.add_argument("--download", action="store_true", help="download a built-in dataset if missing")
    _add_fit_training(p)
    p.add_argument("--stream", action="store_true",
                   help="read --data (an image folder or a generated set) through DataLoader workers instead of "
                        "loading it into memory: for data that does not fit")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers with --stream (default 2)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 autocast where the hardware has native bf16, fp16 on older GPUs, else fp32")
    p.add_argument("--augment", default=None, choices=_AUGMENTS,
                   help="augment the training batches on the fly: classic = random affine (rotation, scale, shift), "
                        "no flips (right for digits and text); classic+flip adds horizontal flips (images only)")
    p.add_argument("--layout", choices=["NCHW", "NHWC", "NHW", "ND"], default=None)
    p.add_argument("--value-range", type=_value_range, metavar="LOW HIGH", default=None,
                   help="the data's value range: two numbers, negative ones too (--value-range -1e3 1e3, or "
                        "--value-range=-1e3,1e3)")
    _add_fit_after(p)


def _add_fit_training(p: argparse.ArgumentParser) -> None:
    """``vaeaug fit``'s model and optimisation flags."""
    p.add_argument("--epochs", type=_positive_int, default=50)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--latent-dim", type=_positive_int, default=16)
    p.add_argument("--widths", type=_widths, default=None, help="e.g. 32,64 (default: automatic)")
    p.add_argument("--conditional", action="store_true", help="fit a class-conditional VAE")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    p.add_argument("--gaussian-std", type=float, default=0.1)
    p.add_argument("--learn-std", action="store_true")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--kl-warmup", type=int, default=10, help="epochs of linear KL warm-up")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience; 0 disables it")
    _shared(p, "--seed", seed="seeds initialisation, split, shuffling and noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _add_fit_after(p: argparse.ArgumentParser) -> None:
    """``vaeaug fit``'s flags for what follows the fit: ``--tune`` and the training curves."""
    p.add_argument("--tune", action="store_true",
                   help="after fitting, choose the augmentation setting by cross-validation on the data "
                        "(vaeaug.tune: k folds, successive halving, a paired test) and store it in the model file")
    p.add_argument("--curves", default=None,
                   help="also write the training curves to this PNG file (axes, values and legend with matplotlib, "
                        "the 'plot' extra; a plain drawing without it)")
    p.add_argument("--curves-scale", choices=["auto", "log", "linear"], default="auto",
                   help="y scale of --curves: auto = log where a panel's values span more than a decade")
    p.add_argument("--tune-steps", type=_positive_int, default=2000,
                   help="at most this many classifier steps per tuning run (each stops at convergence)")
    p.add_argument("--tune-folds", type=_positive_int, default=3, help="cross-validation folds of --tune (>= 2)")
    p.add_argument("--tune-repeats", type=_positive_int, default=2, help="classifier seeds of tune's finalist")
    p.add_argument("--tune-alpha", type=float, default=0.1,
                   help="false-positive rate of tune's paired test (default 0.1)")
    p.add_argument("--tune-score", choices=["logloss", "brier"], default="logloss",
                   help="tune's per-image score: true-class log-loss or Brier score (default logloss)")
    p.add_argument("--tune-calibrate", action="store_true",
                   help="temperature-scale each of tune's runs before scoring, so that a candidate gains by "
                        "ranking the true class higher, not by being less confident (default: off)")
    p.add_argument("--tune-pipeline", action="store_true",
                   help="with --tune, choose the pipeline: the classic transforms (affine; the reference), none, "
                        "vaeaug, or vaeaug then classic (vaeaug.tune(..., transforms=...)); the model stores the "
                        "VAE part and vaeaug info prints the recommendation")
    _shared(p, "--no-progress", no_progress="no progress bar or summary line")


def _add_evaluate(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug evaluate``: the data, the training budget, then the arms and their setting."""
    p = sub.add_parser("evaluate", help="measure downstream accuracy with and without vaeaug",
                       description="The protocol: per seed, draw --per-class images per class, carve a "
                       "stratified validation split from them, fit a VAE on the rest only, train the same CNN under "
                       "each arm until its validation accuracy stops improving (or --steps), test the best "
                       "checkpoint on the full test split; report accuracy, steps used and paired gains over "
                       "'none' and 'classic'.")
    _shared(p, "--data", data="'digits', 'fashion-mnist' or a .npz with x and y")
    p.add_argument("--test", default=None, help="a .npz with x and y (default: the built-in's test split)")
    _shared(p, "--out", "--root", out="folder for report.json, report.md and gains.png (the paired gains per arm "
                                      "with error bars; needs matplotlib, the 'plot' extra)")
    p.add_argument("--per-class", type=_positive_int, default=50)
    p.add_argument("--seeds", type=_positive_int, default=3)
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="a fixed budget of optimizer steps per arm (default: each arm trains to convergence)")
    p.add_argument("--max-steps", type=_positive_int, default=4000, help="converged mode: the step cap")
    p.add_argument("--eval-every", type=_positive_int, default=100, help="converged mode: steps between checks")
    p.add_argument("--patience", type=_positive_int, default=6,
                   help="converged mode: checks without improvement before an arm stops")
    p.add_argument("--min-steps", type=int, default=1000, help="converged mode: no stop before this step")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out for stopping")
    _add_evaluate_arms(p)


def _add_evaluate_arms(p: argparse.ArgumentParser) -> None:
    """``vaeaug evaluate``'s flags for the arms: which ones, the classifier's batch, the VAE arms' setting."""
    p.add_argument("--imbalance", type=float, default=None, metavar="R",
                   help="half of the classes keep --per-class / R images; reports balanced accuracy and "
                        "per-class recall (default arms: none,oversample,oversample+classic,classic,balance,"
                        "balance+vae,vae)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--arms", default=None,
                   help="comma-separated, from none,classic,vae,vae+classic,classic+vae,tuned,tuned+classic,pipeline,"
                        "oversample,"
                        "oversample+classic,balance,balance+vae,balance+vae+classic "
                        "(default: none,classic,vae,vae+classic; 'tuned' and 'pipeline' run vaeaug.tune per seed: "
                        "minutes more)")
    p.add_argument("--vae-epochs", type=_positive_int, default=300)
    p.add_argument("--vae-augment", default=None, choices=_AUGMENTS,
                   help="fit each seed's VAE on classic-augmented batches (vaeaug.fit(augment=...))")
    _shared(p, "--mode", "--strength", "--form", mode="VAE arms' mode (default: vaeaug's)")
    p.add_argument("--p", type=float, default=None, help="share of each batch replaced by variants")
    p.add_argument("--flip", choices=["auto", "on", "off"], default="auto", help="horizontal flips in classic")
    _shared(p, "--no-progress")


# score and preview apply a model to data and write one file: name -> (summary, description, --out's help,
# the subcommand's own flag as (flag, default, help), --seed's help)
_MODEL_ON_DATA: dict[str, tuple[str, str, str, tuple[str, int, str], str]] = {
    "score": ("anomaly scores: per-sample negative ELBO under a model",
              "Write one anomaly score per sample (negative ELBO in nats; higher = less like the model's training "
              "data) to a CSV with columns index,label,score.",
              "CSV file to write", ("--k", 1, "importance samples (k > 1: tighter bound)"),
              "seed of the posterior samples"),
    "preview": ("a labelled PNG of what a model makes from data",
                "One row per real sample: original, reconstruction, variants at increasing strength; prior samples "
                "per class for conditional models; a latent interpolation strip.",
                "PNG file to write", ("--n", 6, "real samples (rows)"), "seed of the variants"),
}


def _add_model_on_data(sub: argparse._SubParsersAction[_Parser], name: str) -> None:
    """``vaeaug score`` or ``vaeaug preview`` (``name``), from ``_MODEL_ON_DATA``; they read the test split."""
    summary, description, out, (flag, default, flag_help), seed = _MODEL_ON_DATA[name]
    p = sub.add_parser(name, help=summary, description=description)
    _shared(p, "--model", "--data", "--out", "--force", "--split", "--root", out=out)
    p.set_defaults(split="test")
    p.add_argument(flag, type=_positive_int, default=default, help=flag_help)
    _shared(p, "--seed", seed=seed)


def _add_export(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug export``."""
    p = sub.add_parser("export", help="export a model to ONNX for torch-free CPU generation",
                       description="Export a .vae model to ONNX: OUT (the augmenter graph) plus OUT's stem "
                       ".encoder.onnx and .sampler.onnx beside it, verified against the torch backend.")
    p.add_argument("model", help="a .vae model file")
    _shared(p, "--out", "--force", out="the .onnx file to write, e.g. digits.onnx",
            force="overwrite the output files if they exist")
    p.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    p.add_argument("--speed", action="store_true",
                   help="also measure generation speed, onnxruntime vs torch, one thread, batch 1 and 64")


def _add_generate(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug generate``: the inputs and the variants, then how the work is stored and split."""
    p = sub.add_parser("generate", help="pre-generate an augmented dataset to disk (resumable, verifiable)",
                       description="Write real samples and VAE variants of each to DIR as .npy shards (or PNGs in "
                       "class folders, or WebDataset tar shards) with a manifest; resumable after any interruption, "
                       "identical however the work is split.")
    _shared(p, "--model", "--data", "--out", model="a .vae model file or an .onnx export", out="output folder")
    p.add_argument("--variants", type=int, default=4, help="variants per real sample (default 4)")
    _shared(p, "--mode", "--strength", "--form", "--seed", seed="root of every variant's noise",
            mode="latent move; interpolate and extrapolate use partners of the same class from the data "
                 "(default: the model's tuned setting, else isotropic)")
    p.add_argument("--no-real", action="store_true", help="store only the variants, not the real samples")
    p.add_argument("--format", default="shards", choices=["shards", "imagefolder", "webdataset"],
                   help=".npy shards (read with GeneratedDataset), PNGs in class folders (uint8 data), or WebDataset "
                        "tar shards shard-00000.tar (read with webdataset, datasets or GeneratedDataset)")
    p.add_argument("--payload", default=None, choices=["png", "npy"],
                   help="the image member of a webdataset sample (default: png for uint8 data of 1 or 3 channels, "
                        "else npy)")
    p.add_argument("--shard-size", type=_positive_int, default=None,
                   help="samples per shard (default 8192, fewer for images of more than 8192 values: one shard is "
                        "made in memory, at most 256 MiB of images in float32)")
    p.add_argument("--num-shards", type=_positive_int, default=1, help="jobs the shards are split between")
    p.add_argument("--shard-index", type=int, default=None, help="this job's index (0..num-shards-1)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes generating in parallel")
    p.add_argument("--no-resume", action="store_true", help="refuse a folder that already holds this run")
    _shared(p, "--split", "--root", "--no-progress", no_progress="no progress bar; one summary line instead")


def _add_verify(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug verify``."""
    p = sub.add_parser("verify", help="check a generated set: completeness, SHA-256 of every file, finite values",
                       description="Check a generated set; exit code 0 if complete and intact, 1 otherwise.")
    p.add_argument("dir", help="a folder written by vaeaug generate")


def _add_info(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``vaeaug info``."""
    p = sub.add_parser("info", help="describe a model file", description="Describe a vaeaug model file.")
    p.add_argument("model", help="a .vae model file or an .onnx export")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


_USER_ERRORS = (UsageError, ValueError, TypeError, OSError, ImportError, FloatingPointError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 done, 1 failed check or bug, 2 user error, 130 Ctrl-C).

    Example:
        >>> main(["info", "no-such-file.vae"])
        2
    """
    parser = _build_parser()
    args = parser.parse_args(_join_value_range(list(sys.argv[1:] if argv is None else argv)))
    debug = args.debug or os.environ.get("VAEAUG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    try:
        try:
            return _COMMANDS[args.command](args)
        finally:
            _close_bars()  # a bar left open by an error would swallow the message's line
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"vaeaug {args.command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"vaeaug {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print(f"vaeaug {args.command}: error: out of memory; use smaller inputs or batches "
              "(--batch-size where the subcommand has it)", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, and how to see the rest
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"vaeaug {args.command}: internal error: {type(e).__name__}{': ' + msg if msg else ''} "
              "(a bug in vaeaug or a library it uses: rerun with vaeaug --debug, or VAEAUG_DEBUG=1, "
              "for the traceback, and please report it)", file=sys.stderr)
        return 1


def _close_bars() -> None:
    """Close the progress bars still open (ends their line, so a message after them starts a new one)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()


def _check_model_file(path: str) -> None:
    """A one-line error now if ``path`` is missing or is not a regular file (a folder, a FIFO...)."""
    from vaeaug.files import size_of

    try:
        size_of(path, "model file")
    except FileNotFoundError:
        raise UsageError(f"model file not found: {path}") from None


def _check_writable(path: Path, flag: str, *, force: bool = False, folder: bool = False) -> None:
    """Fail now, not after the long work, if ``path`` cannot be written.

    Its names must fit the file system (:func:`vaeaug.files.check_name`; a folder's with a file in it). A
    file must not be a folder (nor exist, unless ``force``); a folder must not be a file. The
    closest existing ancestor must be a folder in which a file can really be created (checked
    by creating and removing one, so read-only mounts and ACLs are seen too).
    """
    from vaeaug.files import check_name

    check_name(path / "manifest.json" if folder else path, flag)  # Errno 36 after the work otherwise
    if folder:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{flag} {str(path)!r} is a file; give a folder")
    else:
        if path.is_dir():
            raise UsageError(f"{flag} {str(path)!r} is a folder; give a file name")
        if path.exists() and not force:
            raise UsageError(f"{str(path)!r} exists; pass --force to overwrite it or choose another {flag}")
    start = path if folder else path.parent
    existing = next((p for p in [start, *start.parents] if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"cannot write {flag} {str(path)!r}: {str(existing)!r} is a file, not a folder; "
                         f"choose another {flag}")
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".vaeaug-write-check-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write {flag} {str(path)!r}: the folder {str(existing)!r} is not writable "
                         f"({e.strerror or e}); choose another {flag}") from None


def _cmd_fit(args: argparse.Namespace) -> int:
    """``vaeaug fit``: check where it writes, read the data, fit; then tune, save and draw the curves."""
    from vaeaug.fitting.training import fit

    if args.tune_pipeline and not args.tune:
        raise UsageError("--tune-pipeline chooses among pipelines with --tune: add --tune")
    out = Path(args.out)
    _check_writable(out, "--out", force=args.force)
    if args.curves:
        if not str(args.curves).lower().endswith(".png"):
            raise UsageError(f"--curves must be a .png file; got {args.curves!r}")
        _check_writable(Path(args.curves), "--curves", force=True)
    from vaeaug.fitting.distributed import is_main_process

    is_main = is_main_process()  # under torchrun: only rank 0 prints and writes
    data = _fit_data(args, is_main)
    model = fit(data, **_fit_options(args))
    if not is_main:
        return 0
    if args.tune:
        _tune(args, model, data)
    _save_fit(args, model, out)
    return 0


def _fit_data(args: argparse.Namespace, is_main: bool) -> Any:
    """``--data`` as ``fit`` takes it: the folder's path with ``--stream``, else the data loaded into memory."""
    if args.stream:  # read batch by batch through DataLoader workers: nothing loaded up front
        if not Path(args.data).is_dir():
            raise UsageError(f"--stream reads an image folder or a generated set; {args.data!r} is not a folder")
        if args.tune:
            raise UsageError("--tune needs the data in memory; fit with --stream, then tune from Python")
        if not args.no_progress and is_main:
            print(f"{args.data}: streamed with {args.workers} DataLoader workers", flush=True)
        return args.data
    from vaeaug.data import as_tensor_data

    data = as_tensor_data(args.data, layout=args.layout, value_range=args.value_range,
                          root=args.root, split=args.split, download=args.download)
    if not args.no_progress and is_main:
        print(data.summary(), flush=True)
    return data


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of ``vaeaug.fit`` that ``vaeaug fit``'s flags give."""
    return dict(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
        conditional=args.conditional, widths=args.widths, likelihood=args.likelihood,
        gaussian_std=args.gaussian_std, learn_std=args.learn_std, beta=args.beta,
        kl_warmup=args.kl_warmup, val_fraction=args.val_fraction,
        patience=args.patience if args.patience > 0 else None, seed=args.seed, device=args.device,
        precision=args.precision, progress=not args.no_progress, distributed=None,
        stream=args.stream, num_workers=args.workers, augment=args.augment,
        **({"value_range": args.value_range} if args.stream and args.value_range else {}),
    )


def _tune(args: argparse.Namespace, model: Any, data: Any) -> None:
    """``vaeaug fit --tune``: choose the model's augmentation setting on the data (stored in the model)."""
    from vaeaug.protocol.tuning import tune

    if data.y is None:
        raise UsageError("--tune trains classifiers on the data's labels, and this data has none")
    if not data.is_image:
        raise UsageError("--tune trains a CNN and needs images; this data is vectors")
    if args.tune_folds < 2:
        raise UsageError(f"--tune-folds must be >= 2; got {args.tune_folds}")
    if not 0.0 < args.tune_alpha < 1.0:
        raise UsageError(f"--tune-alpha must be in (0, 1); got {args.tune_alpha}")
    from vaeaug.protocol.classifier import Budget
    from vaeaug.protocol.tuning import TUNE_BUDGET

    budget = Budget(max_steps=args.tune_steps, eval_every=TUNE_BUDGET.eval_every, patience=TUNE_BUDGET.patience,
                    min_steps=min(TUNE_BUDGET.min_steps, args.tune_steps))
    extra: dict[str, Any] = {}
    if args.tune_pipeline:
        from vaeaug.fitting.classic import ClassicTransform

        flip = isinstance(args.data, str) and args.data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")
        extra["transforms"] = {"classic": ClassicTransform(flip)}
    try:
        tune(model, data, budget=budget, folds=args.tune_folds, repeats=args.tune_repeats,
             alpha=float(args.tune_alpha), score=args.tune_score, calibrate=args.tune_calibrate, seed=args.seed,
             progress=not args.no_progress, **extra)
    except ValueError as e:
        raise UsageError(f"--tune: {e}") from None


def _save_fit(args: argparse.Namespace, model: Any, out: Path) -> None:
    """Write the fitted model to ``out`` and, with ``--curves``, its training curves."""
    model.save(out)
    if not args.no_progress:
        print(f"saved {out} ({_size(out.stat().st_size)})")
    if args.curves:
        from vaeaug.viz.plots import PLOT_EXTRA, curves, has_matplotlib

        log = {"auto": None, "log": True, "linear": False}[args.curves_scale]
        curves(model.history, log=log).save(args.curves)
        if not args.no_progress:
            plain = "" if has_matplotlib() else f" (a plain drawing: {PLOT_EXTRA} for axes with values)"
            print(f"wrote {args.curves}{plain}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """``vaeaug evaluate``: check the flags and ``--out``, run the protocol, write the report."""
    from vaeaug.protocol.classifier import Budget
    from vaeaug.protocol.evaluation import evaluate

    arms = _evaluate_arms(args)
    out = Path(args.out)
    _check_writable(out, "--out", folder=True)
    from vaeaug.core.settings import resolve_setting

    changes = {k: getattr(args, k) for k in ("mode", "strength", "form", "p")}
    setting = resolve_setting(None, **changes)
    flip = {"auto": None, "on": True, "off": False}[args.flip]
    budget = None if args.steps else Budget(max_steps=args.max_steps, eval_every=args.eval_every,
                                            patience=args.patience, min_steps=args.min_steps)
    report = evaluate(args.data, args.test, per_class=args.per_class, seeds=args.seeds, steps=args.steps,
                      budget=budget, val_fraction=float(args.val_fraction), imbalance=args.imbalance,
                      batch_size=args.batch_size, arms=arms, setting=setting, vae_epochs=args.vae_epochs,
                      vae_kwargs={"augment": args.vae_augment} if args.vae_augment else None,
                      flip=flip, root=args.root, progress=not args.no_progress)
    _write_report(report, out)
    return 0


def _evaluate_arms(args: argparse.Namespace) -> list[str] | None:
    """The arms of ``--arms`` (None: the default ones), once ``--arms``, ``--val-fraction`` and ``--imbalance``
    are checked."""
    from vaeaug.protocol.evaluation import ARMS

    arms = None if args.arms is None else [a.strip() for a in args.arms.split(",") if a.strip()]
    allowed = [a for a in ARMS if not a.startswith("base")]  # base arms take a Python transform
    bad = [a for a in arms or [] if a not in allowed]
    if bad:
        raise UsageError(f"unknown arms {bad}; choose from {', '.join(allowed)}")
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in (0, 1); got {args.val_fraction}")
    if args.imbalance is not None and not (math.isfinite(args.imbalance) and args.imbalance >= 1):
        raise UsageError(f"--imbalance must be a number >= 1; got {args.imbalance}")
    return arms


def _write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``report.json``, ``report.md`` and (with matplotlib) ``gains.png`` to ``out``; print the report."""
    from vaeaug.protocol.evaluation import reading, report_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    from vaeaug.viz.plots import PLOT_EXTRA, gains_chart, has_matplotlib

    md = report_markdown(report)
    (out / "report.md").write_text(md + "\n")  # on disk before the chart is drawn
    chart = None
    paired = any(report.get(k) for k in ("gains", "gains_over_classic", "gains_over_oversample"))
    if (out / "gains.png").is_file():
        (out / "gains.png").unlink()  # an earlier run's chart would contradict this report
    if paired and has_matplotlib():
        chart = out / "gains.png"
        gains_chart(report).save(chart)
        md += f"\n\n![Paired gains in test {report['config']['metric']} per arm, mean ± std over seeds]({chart.name})"
        (out / "report.md").write_text(md + "\n")
    print(md)
    print(reading(report))
    wrote = [out / "report.json", out / "report.md", *([chart] if chart else [])]
    print(f"wrote {', '.join(map(str, wrote[:-1]))} and {wrote[-1]}")
    if chart is None and paired:
        print(f"no gains.png: the chart draws with matplotlib ({PLOT_EXTRA})")


def _data_for(model: Any, args: argparse.Namespace) -> Any:
    """Load ``--data`` for a model: a built-in or image folder knows its range; arrays in a .npz are
    read in the model's recorded value range (so a model fit on 0..16 floats reads 0..16 floats)."""
    from vaeaug.data import as_tensor_data
    from vaeaug.data.builtin import is_builtin

    name = str(args.data)
    if is_builtin(name) or Path(name).is_dir():
        return as_tensor_data(name, root=args.root, split=args.split)
    vr = model.value_range
    return as_tensor_data(name, value_range=(vr.low, vr.high))


def _cmd_preview(args: argparse.Namespace) -> int:
    from vaeaug.model.vae import load
    from vaeaug.viz.previews import preview

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file; got {str(out)!r}")
    _check_writable(out, "--out", force=args.force)
    model = load(args.model)
    data = _data_for(model, args)
    img = preview(model, data, n=args.n, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    print(f"wrote {out} ({img.width}x{img.height})")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import torch

    from vaeaug.model.vae import load

    out = Path(args.out)
    _check_writable(out, "--out", force=args.force)
    model = load(args.model)
    data = _data_for(model, args)
    want = tuple(model.config.input_shape)
    if data.sample_shape != want:
        raise UsageError(f"the data's samples are {data.sample_shape} but the model takes {want}")
    y = data.y if model.conditional else None
    if model.conditional and y is None:
        raise UsageError("the model is class-conditional and the data has no labels")
    scores = model.score(data.x, y, k=args.k, generator=torch.Generator().manual_seed(args.seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = data.y.tolist() if data.y is not None else [""] * len(data)
    rows = ["index,label,score", *(f"{i},{lab},{v:.6f}" for i, (lab, v) in enumerate(zip(labels, scores.tolist(),
                                                                                          strict=True)))]
    out.write_text("\n".join(rows) + "\n")
    print(f"scored {len(data):,} samples (mean {float(scores.mean()):.2f}, max {float(scores.max()):.2f} nats); "
          f"wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """``vaeaug export``: check the output files and the model, export and verify, optionally time it."""
    _check_export_outputs(args)
    _check_model_file(args.model)
    import time

    from vaeaug.backends.onnx.export import VERIFY_ATOL, export_onnx
    from vaeaug.model.vae import load

    model = load(args.model)
    t = time.perf_counter()
    paths = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify, overwrite=args.force)
    took = time.perf_counter() - t
    for graph, p in paths.items():
        print(f"{graph:<10} {p} ({_size(p.stat().st_size)})")
    check = "not verified (--no-verify)" if args.no_verify else \
        f"verified: onnxruntime matches torch within {VERIFY_ATOL:g} on every mode"
    print(f"exported in {took:.1f} s; {check}")
    if args.speed:
        _print_speed(model, paths["augmenter"])
    return 0


def _check_export_outputs(args: argparse.Namespace) -> None:
    """Fail now if ``--out`` is no .onnx name or any of the export's files cannot be written."""
    from vaeaug.backends.onnx.metadata import onnx_paths

    if not str(args.out).endswith(".onnx"):
        raise UsageError(f"--out must end in .onnx; got {args.out!r}")
    from vaeaug.files import check_name

    targets = onnx_paths(args.out)
    for p in targets.values():  # before exists(): a name too long for the file system raises there
        check_name(p, "--out")
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{', '.join(existing)} exist(s); pass --force to overwrite or choose another --out")
    for p in targets.values():
        _check_writable(p, "--out", force=True)


def _print_speed(model: Any, augmenter: Path) -> None:
    """``vaeaug export --speed``: samples per second, onnxruntime vs torch, at batch 1 and 64."""
    from vaeaug.protocol.timing import generation_speed

    for batch in (1, 64):
        r = generation_speed(model, augmenter, batch=batch)
        print(f"speed, batch {batch:>2}, one thread, delta form: onnxruntime {r['onnx']:,.0f} samples/s, "
              f"torch {r['torch']:,.0f} samples/s ({r['onnx'] / r['torch']:.1f}x)")


def _cmd_generate(args: argparse.Namespace) -> int:
    _check_model_file(args.model)
    _check_writable(Path(args.out), "--out", folder=True)
    from vaeaug.generated.writer import pregenerate

    r = pregenerate(args.data, args.model, args.out, variants_per_sample=args.variants, mode=args.mode,
                    strength=args.strength, form=args.form, seed=args.seed, include_real=not args.no_real,
                    format=args.format, payload=args.payload, shard_size=args.shard_size, num_shards=args.num_shards,
                    shard_index=args.shard_index, workers=args.workers, resume=not args.no_resume,
                    progress=not args.no_progress, root=args.root, split=args.split)
    if args.no_progress:
        state = "complete" if r["complete"] else "incomplete (other shard jobs pending)"
        print(f"wrote {r['written']} shard(s), {r['samples']} samples; set {state}: {r['out_dir']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from vaeaug.generated.format import read_manifest
    from vaeaug.generated.reader import verify_generated

    d = Path(args.dir)
    if not d.exists():
        raise UsageError(f"no such folder: {args.dir!r}; give a folder written by vaeaug generate")
    if not d.is_dir():
        raise UsageError(f"{args.dir!r} is not a folder; give a folder written by vaeaug generate")
    if not any((d / n).exists() or (d / n).is_symlink() for n in ("manifest.json", "run.json")):
        raise UsageError(f"{args.dir!r} is not a generated set (no manifest.json or run.json in it); "
                         "give a folder written by vaeaug generate")
    problems = verify_generated(args.dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"FAILED {args.dir}: {problems[0]}{more}")
        return 1
    m = read_manifest(args.dir)
    c = m["counts"]
    print(f"OK {args.dir}: {c['total']} samples ({c['real']} real, {c['synthetic']} synthetic) in "
          f"{len(m['shards'])} shard(s); manifest, run identity and every file's SHA-256 match")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError


def _data_line(cfg: Any, vr: Any) -> str:
    """``info``'s line on the data a model takes: shape, kind, dtype and value range."""
    shape = "x".join(map(str, cfg.input_shape))
    return f"data        {shape} {'images' if cfg.is_image else 'vectors'}, {vr.dtype} in [{vr.low:g}, {vr.high:g}]"


def _augment_line(a: dict[str, Any]) -> str:
    """``info``'s line on a model's tuned augmentation setting."""
    return f"augment     {a['form']} {a['mode']} strength {a['strength']:g} p {a['p']:g} (tuned)"


def _cmd_onnx_info(args: argparse.Namespace) -> int:
    """``vaeaug info`` of an ONNX export: its graphs' files and the metadata stored in them."""
    from vaeaug.backends.onnx.metadata import onnx_paths, read_onnx_metadata

    meta = read_onnx_metadata(args.model)
    cfg, vr = meta["config"], meta["value_range"]
    files = {g: {"file": str(p), "size": p.stat().st_size if p.exists() else None}
             for g, p in onnx_paths(args.model).items()}
    info: dict[str, Any] = {"file": args.model, "graph": meta["graph"], "files": files, "config": cfg.to_dict(),
                            "value_range": vr.to_dict(), "class_names": meta["class_names"],
                            "augment": meta["augment"], "model_sha256": meta["model_sha256"],
                            "vaeaug_version": meta["vaeaug_version"], "format_version": meta["format_version"]}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cond = f"conditional on {cfg.num_classes} classes" if cfg.num_classes else "unconditional"
    lines = [f"file        {args.model} (ONNX export, {meta['graph']} graph, vaeaug {meta['vaeaug_version']})"]
    for g, f in files.items():
        size = f["size"]
        lines.append(f"  {g:<9} {f['file']} ({_size(int(size)) if size is not None else 'MISSING'})")
    lines += [
        _data_line(cfg, vr),
        f"model       latent {cfg.latent_dim}, widths {list(cfg.widths or ())}, {cond}; "
        f"from the .vae file with SHA-256 {meta['model_sha256'][:16]}...",
    ]
    if meta["augment"] is not None:
        lines.append(_augment_line(meta["augment"]))
    print("\n".join(lines))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """``vaeaug info``: describe a .vae model file (or an ONNX export), as text or ``--json``."""
    from vaeaug.model.vae import load

    if str(args.model).endswith(".onnx"):
        return _cmd_onnx_info(args)
    path = Path(args.model)
    model = load(path)  # validates everything, not only the header
    info = _model_info(path, model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("\n".join(_model_lines(info, model)))
    return 0


def _model_info(path: Path, model: Any) -> dict[str, Any]:
    """``vaeaug info --json`` of a loaded .vae model."""
    hist = model.history
    best = _best_epoch(hist)
    fit_augment = hist[-1].get("fit_augment") if hist else None  # absent from files written before it existed
    return {
        "file": str(path), "file_size": path.stat().st_size, "config": model.config.to_dict(),
        "value_range": model.value_range.to_dict(), "class_names": model.class_names,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": len(hist), "best_val_loss": best["val_loss"] if best else None,
        "best_epoch": best["epoch"] if best else None, "fit_augment": fit_augment,
        "augment": model.augment, "tuning": model.tuning,
    }


def _best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch of a model's history with the lowest validation loss (None: no epoch has one)."""
    return min((h for h in history if "val_loss" in h), key=lambda h: h["val_loss"], default=None)


def _model_lines(info: dict[str, Any], model: Any) -> list[str]:
    """``vaeaug info``'s text of a loaded .vae model, a line each."""
    cfg, names, epochs, best = model.config, model.class_names, info["epochs"], _best_epoch(model.history)
    kind = "conv" if cfg.is_image else "mlp"
    cond = f"conditional on {cfg.num_classes} classes" if cfg.num_classes else "unconditional"
    lines = [
        f"file        {info['file']} ({_size(info['file_size'])})",
        _data_line(cfg, model.value_range),
        f"model       {kind}, latent {cfg.latent_dim}, widths {list(cfg.widths or ())}, {cond}, "
        f"{cfg.likelihood} likelihood, beta {cfg.beta:g}, {info['parameters']:,} parameters",
        f"classes     {len(names)}: {', '.join(names)}" if names else "classes     none recorded",
        (f"fit         {epochs} epochs, best val loss {best['val_loss']:.2f} nats/sample at epoch {best['epoch']}"
         if best else f"fit         {epochs} epochs, no validation loss recorded"),
    ]
    if info["fit_augment"] is not None:
        lines.append(f"fit augment {info['fit_augment']} (training batches only)")
    if model.augment is not None:
        lines.append(_augment_line(model.augment))
    if model.tuning is not None:
        if model.tuning.get("recommendation"):
            lines.append(f"pipeline    {model.tuning['recommendation']}")
        lines.append(f"tuning      {model.tuning['reason']}")
        if model.tuning.get("base"):
            lines.append(f"            chosen on top of the base transform {model.tuning['base']}")
        for r in model.tuning["scores"]:
            runs = f" ({len(r['runs'])} runs)" if "runs" in r else ""  # files tuned by the earlier split rule lack runs
            lines.append(f"            {r['label']:<32} val acc {r['mean']:.2f}  gain {r['gain']:+.2f}{runs}")
    return lines


_COMMANDS = {"fit": _cmd_fit, "evaluate": _cmd_evaluate, "score": _cmd_score, "preview": _cmd_preview,
             "export": _cmd_export, "generate": _cmd_generate, "verify": _cmd_verify, "info": _cmd_info}
