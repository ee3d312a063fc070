"""corrective: remove the effect of manipulated training data (poisons, swapped or random labels) from a trained
classifier when only some of it was identified, and measure how well that worked."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

from . import __version__

EPILOG = "Any trailing key=value arguments override the config, e.g. recipe.steps=1000 dataset.val_size=0."


def _train_config(args):
    from .config import TrainConfig, apply_overrides, from_dict, read_yaml  # lazy: each command loads only what it runs

    data = read_yaml(args.config) if args.config else {}
    flags = {
        "dataset.name": args.dataset, "dataset.data_dir": args.data_dir, "dataset.path": args.data_path,
        "model": args.model, "manipulation.name": args.manipulation, "manipulation.n": args.n,
        "seed": args.seed, "device": args.device, "out": args.out, "recipe.steps": args.steps,
    }
    # json.dumps quotes strings, so a flag value is taken literally, never re-read as YAML ("runs #2", "2024")
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if args.download:
        overrides.append("dataset.download=true")
    if args.no_cache:
        overrides.append("cache=false")
    if args.compile:
        overrides.append(f"compile={args.compile}")
    return from_dict(TrainConfig, apply_overrides(data, overrides + args.overrides))


def cmd_train(args) -> int:
    from .config import to_dict, write_yaml  # lazy: each command loads only what it runs
    from .data import load_dataset  # lazy: each command loads only what it runs
    from .experiment import build_setting, evaluate, train_original  # lazy: each command loads only what it runs
    from .runner import deletion_set  # lazy: each command loads only what it runs
    from .records import environment, write_json_atomic  # lazy: each command loads only what it runs
    from .report.tables import format_metrics  # lazy: each command loads only what it runs
    from .runtime import Runtime, Stopwatch  # lazy: each command loads only what it runs
    from .cache import check_cache_writable  # lazy: each command loads only what it runs
    from .fix.output import check_train_folder, clear_train  # lazy: each command loads only what it runs

    if not 0 < args.flag <= 1:  # also refuses NaN
        raise ValueError(f"--flag: expected a discovery rate in (0, 1], got {args.flag:g}")
    config = _train_config(args)
    recipe = config.resolved_recipe()
    if config.cache:  # a cache that cannot be written would lose the trained model at the end
        try:
            check_cache_writable()
        except ValueError as error:
            raise ValueError(f"{error}, or pass --no-cache") from None
    runtime = Runtime.create(config.device, config.compile, progress=not args.quiet)
    started = time.time()
    dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    m = config.manipulation
    out = Path(config.out) / f"train-{dataset.name}-{config.model_name}-{m.name}-n{m.n}-seed{config.seed}"
    resolved = {**to_dict(config), "model": config.model_name, "recipe": recipe.to_dict()}
    check_train_folder(out, resolved, args.flag, args.force)  # before any training: nothing overwritten
    val_size = config.dataset.resolved_val_size(len(dataset.train_labels))
    setting = build_setting(dataset, m.name, m.n, config.seed, runtime, val_size, recipe, **m.params)
    model, info = train_original(setting, config.model_name, recipe, runtime, use_cache=config.cache)
    with Stopwatch(runtime) as clock:
        metrics = evaluate(model, setting, runtime)
    provenance = "cached" if info["cache"] == "hit" else f"trained in {info['train_seconds']:.1f} s"
    title = (f"original model: {dataset.name} / {config.model_name} / {m.name} n={m.n} / seed {config.seed} "
             f"({provenance})")
    print(format_metrics(metrics, setting, title))

    if check_train_folder(out, resolved, args.flag, args.force):  # again: the folder may have changed meanwhile
        clear_train(out)  # a different run's own files, replaced whole (--force)
    write_yaml(out / "config.yaml", resolved)
    write_json_atomic(out / "record.json", {
        "kind": "original", "config": resolved, "flag_rate": args.flag, "setting": setting.describe(),
        "index_hashes": setting.index_hashes(), "training": info, "metrics": metrics,
        "timings": {"train_seconds": info["train_seconds"], "eval_seconds": clock.seconds,
                    "total_seconds": time.time() - started},
        "environment": {**environment(), **runtime.describe()},
    })
    _write_model(model, out / "model.safetensors", {
        "arch": config.model_name, "num_classes": dataset.num_classes, "in_channels": dataset.in_channels,
        "cache_key": info["cache_key"]})
    flagged = deletion_set(setting, args.flag)
    (out / "flagged.txt").write_text(
        f"# {len(flagged)} of the {len(setting.manipulated.manipulated)} manipulated samples ({args.flag:.0%} "
        f"discovery, seeded), one training index per line\n" + "".join(f"{i}\n" for i in flagged.tolist()))
    print(f"record: {out / 'record.json'}; model: {out / 'model.safetensors'}; flagged: {out / 'flagged.txt'}")
    return 0


def _write_model(model, path: Path, meta: dict) -> None:
    from .records import (  # lazy: each command loads only what it runs
        model_weights, write_json_atomic, write_safetensors_atomic)

    write_safetensors_atomic(path, model_weights(model))
    write_json_atomic(path.with_suffix(".json"), meta)


def _expand_arg(value, flag: str = "--expand") -> int | str:
    """``--expand``/``--k``: a number of suspects >= 0, or ``auto`` (``--k`` also takes ``all``)."""
    if str(value) == "auto" or (flag == "--k" and str(value) == "all"):
        return str(value)
    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"{flag}: expected a number of suspects >= 0 or auto, got {value!r}") from None
    if k < 0:
        raise ValueError(f"{flag}: expected a number of suspects >= 0 or auto, got {value}")
    return k


def cmd_fix(args) -> int:
    from .progress import progress_bar  # lazy: each command loads only what it runs

    from . import fix  # lazy: each command loads only what it runs
    from .fix.core import check_hparams, check_max_val_drop  # lazy: each command loads only what it runs
    from .inputs import check_model_file, rebuild_note, write_file_list  # lazy: each command loads only what it runs
    from .fix.output import check_fix_out  # lazy: each command loads only what it runs
    from .fix.report import before_after  # lazy: each command loads only what it runs
    from .runtime import Runtime  # lazy: each command loads only what it runs

    # Everything that can be checked without the data is checked first, before any work.
    check_max_val_drop(args.max_val_drop, "--max-val-drop")
    args.expand = _expand_arg(args.expand)
    hparams = _hparams(args.hparams)
    check_hparams(args.method, hparams)
    inputs = {"--data": args.data if Path(args.data).exists() else None, "--model": args.model,
              "--flagged": args.flagged, "--validation": args.validation}
    check_fix_out(args.out, inputs, args.force)
    check_model_file(args.model, "--model")
    arch, arch_kwargs = _arch(args)
    if not _flagged_form(args.flagged):  # its form; the range once the data says how many samples there are
        raise ValueError(f"--flagged {args.flagged} holds no index; expected at least one training index of a "
                         f"sample found to be bad")

    runtime = Runtime.create(args.device or "auto", progress=not args.quiet)
    stages = progress_bar(4, "read the data", enabled=not args.quiet, leave=False)
    data = fix.training_data(args.data, data_dir=args.data_dir, download=args.download, runtime=runtime,
                             image_size=args.image_size)
    _check_image_size(args.image_size, data)
    flagged = _flagged(args.flagged, data)
    validation = fix.training_data(args.validation, like=data) if args.validation else None
    _advance(stages, "load the model")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        model = fix.load_model(args.model, arch, data.num_classes, data.images.shape[1], arch_kwargs,
                               image_size=data.images.shape[-1])
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    _advance(stages, "correct")
    result = fix.correct(model, data, flagged, method=args.method, validation=validation,
                         hparams=hparams, expand=args.expand, ranking=args.ranking, device=args.device or "auto",
                         seed=args.seed, max_val_drop=args.max_val_drop, progress=not args.quiet,
                         clean_reserve=args.clean_reserve)
    _advance(stages, "write the report")
    card = rebuild_note(arch, arch_kwargs, data.num_classes, int(data.images.shape[1]))
    report = fix.write_report(result, args.out, {**card, "num_classes": data.num_classes,
                                                 "in_channels": int(data.images.shape[1]),
                                                 "source_model": str(args.model)}
                              | ({"classes": list(data.classes), "image_size": list(data.images.shape[2:]),
                                  "files": "files.csv"} if data.files is not None else {}),
                              force=args.force, inputs=inputs)
    if data.files is not None:  # an image folder: the list the indices refer to, beside the report
        write_file_list(Path(args.out) / "files.csv", data.files, data.labels.tolist(), data.classes)
    stages.update(1)
    stages.close()
    print(before_after(result.report))
    print(f"corrected model: {Path(args.out) / 'model.safetensors'}; report: {report}")
    return 0


def cmd_suspects(args) -> int:
    """Rank the unflagged training samples by resemblance to the flagged ones (corrective_unlearning.suspects)."""
    import torch  # lazy: each command loads only what it runs

    from .inputs import (check_model_file, load_model, training_data,  # lazy: each command loads only what it runs
                         write_file_list)
    from .runtime import Runtime  # lazy: each command loads only what it runs
    from .suspects import rank_suspects, ranking_names  # lazy: each command loads only what it runs
    from .suspects.command import check_out, write  # lazy: each command loads only what it runs

    k = _expand_arg(args.k, "--k")
    if k == 0:
        raise ValueError("--k: expected a number of suspects >= 1, auto, or all")
    if args.ranking not in ranking_names():
        raise ValueError(f"--ranking: expected one of {ranking_names()}, got {args.ranking!r}")
    params = _hparams(args.params)
    out = check_out(args.out, args.force, {"--data": args.data if Path(args.data).exists() else None,
                                           "--model": args.model})
    check_model_file(args.model, "--model")
    arch, arch_kwargs = _arch(args)
    flagged_ = _flagged_form(args.flagged)
    if not flagged_:
        raise ValueError(f"--flagged {args.flagged} holds no index")
    runtime = dataclasses.replace(Runtime.create(args.device or "auto", compile=False, progress=False),
                                  channels_last=False)
    data = training_data(args.data, data_dir=args.data_dir, download=args.download, runtime=runtime,
                         image_size=args.image_size)
    _check_image_size(args.image_size, data)
    flagged = _flagged(args.flagged, data)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        model = load_model(args.model, arch, data.num_classes, data.images.shape[1], arch_kwargs,
                           image_size=data.images.shape[-1])
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    model = runtime.prepare(model).eval()
    flagged = torch.as_tensor(flagged, dtype=torch.long)
    found = rank_suspects(model, data.bank(runtime), data.labels, flagged, data.train_idx, runtime,
                          ranking=args.ranking, params=params, stamp=data.triggered, seed=args.seed)
    auto = found.auto_k() if k == "auto" else None
    manipulated = None
    if data.setting is not None:  # a benchmark run folder: the truth is known
        manipulated = data.setting.manipulated.manipulated.cpu()
    elif data.true_labels is not None:
        manipulated = (data.true_labels != data.labels).nonzero().flatten()
    report = write(found, out, None if k == "all" else k, auto,
                   {"model": str(args.model), "arch": arch, "data": data.description}, manipulated)
    if data.files is not None:  # an image folder: the list the indices refer to
        write_file_list(out / "files.csv", data.files, data.labels.tolist(), data.classes)
    chosen = auto["k"] if auto is not None else (found.candidates if k == "all" else min(k, found.candidates))
    print(f"{chosen} suspects selected of {found.candidates} candidates ({args.ranking}); "
          + (f"k auto: {auto['reason']}; " if auto is not None else "") + f"report: {report}")
    return 0


def _hparams(text: str | None) -> dict | None:
    """--hparams parsed as a YAML mapping; a one-line error naming the option otherwise."""
    import yaml  # lazy: read only for --hparams text

    if not text:
        return None
    try:
        hparams = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"--hparams: not valid YAML ({problem}{where}) in {text!r}; expected a mapping such as "
                         f"'{{alpha: 10}}' or, for auto, '{{rem: {{steps: 300}}}}'") from None
    if hparams is not None and not isinstance(hparams, dict):
        raise ValueError(f"--hparams: expected a YAML mapping such as '{{alpha: 10}}' or, for auto, "
                         f"'{{rem: {{steps: 300}}}}', got {text!r}")
    return hparams


def _advance(bar, next_stage: str) -> None:
    bar.update(1)
    bar.set_description(next_stage)


def _check_image_size(size, data) -> None:
    if size is not None and data.files is None:
        raise ValueError(f"--image-size {size}: expected --data to be an image folder (class subfolders); it is "
                         f"{data.description}, whose images keep their size")


def _flagged_form(path: str) -> list | bool:
    """What can be checked of ``--flagged`` before the data is read: indices in a readable form, or a list of image
    paths (checked against the image folder later)."""
    from .inputs import is_path_list, read_flagged  # lazy: each command loads only what it runs

    return True if is_path_list(path) else read_flagged(path)


def _flagged(path: str, data) -> list[int]:
    """``--flagged`` as training indices: read as indices, or, for a list of image paths, the indices of those
    files in the image folder's sorted file list."""
    from .inputs import flagged_from_paths, is_path_list, read_flagged  # lazy: each command loads only what it runs

    if not is_path_list(path):
        return read_flagged(path, n=len(data.labels))
    if data.files is None:
        raise ValueError(f"--flagged {path} lists image paths, but --data is not an image folder; expected "
                         f"training indices (one per line) for this data")
    return flagged_from_paths(path, data.root, data.files)


def _arch(args) -> tuple[str, dict]:
    """``--arch`` and ``--arch-kwargs``, else what the model's JSON sidecar records (``arch``, ``arch_kwargs``). A
    ``module.path:callable`` is imported as ``python -m`` would: the current folder is searched first."""
    from .inputs import is_user_arch, parse_arch_kwargs  # lazy: each command loads only what it runs
    from .inputs.arch import resolve_callable  # lazy: each command loads only what it runs

    sidecar = _sidecar(args.model) if not args.arch else {}
    arch = args.arch or sidecar.get("arch")
    if not arch:
        raise ValueError(f"--arch is needed: {args.model} has no sidecar naming its architecture; expected a "
                         f"registry name or module.path:callable")
    if args.arch_kwargs is not None:
        kwargs = parse_arch_kwargs(args.arch_kwargs)
    else:
        kwargs = parse_arch_kwargs(sidecar.get("arch_kwargs") if isinstance(sidecar.get("arch_kwargs"), dict)
                                   else None)
    if is_user_arch(arch):
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        resolve_callable(arch)  # an unknown module or callable fails here, before the data is read
    return arch, kwargs


def _sidecar(model_path: str) -> dict:
    sidecar = Path(model_path).with_suffix(".json")
    try:
        return json.loads(sidecar.read_text()) if sidecar.exists() else {}
    except json.JSONDecodeError:
        return {}




def cmd_methods(_args) -> int:
    from .methods import METHODS, expand_grid  # lazy: each command loads only what it runs

    width = max(len(name) for name, _ in METHODS.items())
    for name, spec in METHODS.items():
        print(f"{name:{width}s} {spec.summary}")
        print(f"{'':{width}s}   defaults: {spec.defaults}")
        print(f"{'':{width}s}   paper grid: {len(expand_grid(spec.grid))} setting(s) {spec.grid}")
    return 0


def cmd_run(args) -> int:
    from .runner import load_grid_config, projection, run_grid  # lazy: each command loads only what it runs

    config = load_grid_config(args.config, args.overrides)
    written = run_grid(config, args.out, progress=not args.quiet, executor=args.executor, workers=args.workers,
                       retries=args.retries)
    failed = [r for r in written if r["status"] != "ok"]
    for record in failed:
        print(f"FAILED {record['cell']}: {record['error']}", file=sys.stderr)
    if written:
        print(projection(config, written))
    print(f"records in {Path(args.out) / 'records'}; next: corrective report {args.out}")
    return 1 if failed else 0


def cmd_status(args) -> int:
    from .runner import format_status, grid_status  # lazy: each command loads only what it runs

    print(format_status(grid_status(args.results)))
    return 0


def cmd_report(args) -> int:
    from .report.build import build_report, print_summary  # lazy: each command loads only what it runs

    print_summary(build_report(args.results, args.out, max_val_drop=args.max_val_drop))
    return 0


def cmd_datasets(_args) -> int:
    from .data import SOURCES  # lazy: each command loads only what it runs

    for name, loader in SOURCES.items():
        print(f"{name:15s} {((loader.__doc__ or '').strip().splitlines() or [''])[0]}")  # a source may lack a docstring
    return 0


ARCH_HELP = ("the architecture: a registry name (resnet9 | wrn28x10 | small_cnn | ...) or your own "
             "module.path:callable (a class or factory, e.g. mypkg.nets:Net or timm:create_model; the current folder "
             "is searched first), called with num_classes/in_channels from the data only where its signature names "
             "them; default: the model's JSON sidecar")
IMAGE_SIZE_HELP = ("an image folder's images are resized to SIZE (32, or HxW such as 32x48); default: the first "
                   "image's size")
ARCH_KWARGS_HELP = ("keyword arguments of --arch as a YAML mapping, e.g. '{width: 64}' or "
                    "'{model_name: resnet18, num_classes: 10}'; they override num_classes/in_channels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corrective", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="typical flow: corrective train ... (one original model), corrective run RECIPE --out DIR "
               "(a grid), corrective report DIR (tables and figures)")
    parser.add_argument("--version", action="version", version=f"corrective-unlearning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="build the manipulated training set, train (or load) the original model, "
                                         "evaluate it", epilog=EPILOG)
    train.add_argument("--config", help="YAML config file")
    train.add_argument("--dataset", help="cifar10 | cifar100 | fashion-mnist | svhn | synthetic | tensors")
    train.add_argument("--data-dir", help="directory holding the dataset files")
    train.add_argument("--data-path", help="explicit path of the dataset file or folder")
    train.add_argument("--download", action="store_true", help="download missing dataset files into the data dir")
    train.add_argument("--model", help="resnet9 | wrn28x10 | small_cnn (default: the dataset's)")
    train.add_argument("--manipulation", help="poison | interclass | random_labels")
    train.add_argument("--n", type=int, help="number of manipulated training samples")
    train.add_argument("--seed", type=int)
    train.add_argument("--steps", type=int, help="training steps (default: the dataset's recipe)")
    train.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    train.add_argument("--compile", help="auto (default: CUDA graphs on CUDA, nothing on CPU) | false | true | a "
                                         "torch.compile mode such as reduce-overhead")
    train.add_argument("--no-cache", action="store_true", help="retrain even if a cached original model exists")
    train.add_argument("--out", help="output folder (default: runs)")
    train.add_argument("--flag", type=float, default=0.1, metavar="RATE",
                       help="discovery rate of the flagged.txt written beside the model: that share of the "
                            "manipulated samples, drawn as the benchmark draws S_f (default: 0.1)")
    train.add_argument("--force", action="store_true",
                       help="replace a different run's files in the run folder (a folder holding anything else is "
                            "never replaced)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(handler=cmd_train)

    fix = sub.add_parser(
        "fix", help="correct your own model: unlearn the flagged samples, write the corrected model and a report",
        description="Correct a trained classifier given the training samples found to be bad. Writes "
                    "OUT/model.safetensors (+ model.json), OUT/report.md with figures, OUT/record.json and "
                    "OUT/flipped.csv.",
        epilog="example: corrective fix --model runs/train-.../model.safetensors --data runs/train-.../ "
               "--flagged runs/train-.../flagged.txt --out fixed/")
    fix.add_argument("--model", required=True, help="the trained weights: .safetensors, or a PyTorch checkpoint "
                                                    "(read with weights_only=True; pickled code is refused)")
    fix.add_argument("--arch", help=ARCH_HELP)
    fix.add_argument("--arch-kwargs", help=ARCH_KWARGS_HELP)
    fix.add_argument("--data", required=True,
                     help="training data as trained on: a registered dataset (cifar10, fashion-mnist, ...), a "
                          "'corrective train' run folder, an .npz file with images [N, C, H, W] and labels, or an "
                          "image folder of class subfolders (classes sorted; index i = the i-th file of the sorted "
                          "list, written to OUT/files.csv)")
    fix.add_argument("--image-size", metavar="SIZE", help=IMAGE_SIZE_HELP)
    fix.add_argument("--flagged", required=True, help="the flagged training indices: .txt (one per line), .csv "
                                                      "(column index, or the first) or .json (a list); for an image "
                                                      "folder also a .txt of image paths (relative to it or "
                                                      "absolute)")
    fix.add_argument("--method", default="auto", help="a method of 'corrective methods', or auto (default): the "
                                                      "strongest candidates, chosen on validation data")
    fix.add_argument("--hparams", help="YAML mapping of hyperparameters, e.g. '{alpha: 10}'; for auto, per "
                                       "candidate: '{rem: {steps: 300}}'")
    fix.add_argument("--validation", help="held-out data (.npz with images and labels, or an image folder with the "
                                          "training folder's classes); default: 5%% of the unflagged training "
                                          "samples, or a run folder's validation split")
    fix.add_argument("--clean-reserve", type=float, default=None, metavar="FRACTION",
                     help="the share of the validation data a clean-data defence (ft_clean, nad, anp, i-bau, "
                          "ft_after) trains on; the rest scores it (default: half for those methods, else none)")
    fix.add_argument("--expand", default="0", metavar="K",
                     help="add the K unflagged samples most like the flagged ones before unlearning (default: 0); "
                          "auto: as many as the scores suggest (none when the ranking cannot tell)")
    fix.add_argument("--ranking", default="combined", help="the suspect ranking --expand uses (default: combined)")
    fix.add_argument("--max-val-drop", type=float, default=2.0, metavar="POINTS",
                     help="auto: candidates may lose at most POINTS of validation accuracy (default: 2)")
    fix.add_argument("--data-dir", help="directory holding the dataset files")
    fix.add_argument("--download", action="store_true", help="download missing dataset files into the data dir")
    fix.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    fix.add_argument("--seed", type=int, default=0)
    fix.add_argument("--out", default="fixed", help="output folder (default: fixed): new, empty, or an earlier "
                                                    "fix's (replaced whole with --force); never an input's folder "
                                                    "or one holding other files")
    fix.add_argument("--force", action="store_true", help="replace an earlier fix in --out whole")
    fix.add_argument("--quiet", action="store_true", help="no progress bars")
    fix.set_defaults(handler=cmd_fix)

    sus = sub.add_parser(
        "suspects", help="rank the unflagged training samples by resemblance to the flagged ones (finding the rest)",
        description="Rank every unflagged training sample by how much the model sees it like the flagged ones "
                    "(or by a poison detector). Writes OUT/suspects.csv, OUT/report.md (self-checks, the K chosen "
                    "and why) and OUT/figures/suspects-histogram.png.",
        epilog="example: corrective suspects --model m.safetensors --arch resnet9 --data run/ --flagged flagged.txt "
               "--k auto --out s/")
    sus.add_argument("--model", required=True, help="the trained weights (.safetensors or a PyTorch checkpoint)")
    sus.add_argument("--arch", help=ARCH_HELP)
    sus.add_argument("--arch-kwargs", help=ARCH_KWARGS_HELP)
    sus.add_argument("--data", required=True, help="training data as trained on (the forms 'corrective fix' takes)")
    sus.add_argument("--image-size", metavar="SIZE", help=IMAGE_SIZE_HELP)
    sus.add_argument("--flagged", required=True, help="the flagged training indices: .txt, .csv or .json (or, for "
                                                      "an image folder, a .txt of image paths)")
    sus.add_argument("--ranking", default="combined", help="a suspects ranking (default: combined); e.g. embedding, "
                                                          "spectral, activation_clustering, scan, strip, outlier")
    sus.add_argument("--params", help="YAML mapping ranking -> parameters, e.g. '{combined: {rankings: [embedding, "
                                      "spectral_flagged]}}'")
    sus.add_argument("--k", default="auto", help="how many to select: a number, auto (default: from the scores) "
                                                 "or all")
    sus.add_argument("--data-dir", help="directory holding the dataset files")
    sus.add_argument("--download", action="store_true", help="download missing dataset files into the data dir")
    sus.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    sus.add_argument("--seed", type=int, default=0)
    sus.add_argument("--out", default="suspects", help="output folder (default: suspects): new, empty, or an "
                                                       "earlier suspects output (replaced with --force)")
    sus.add_argument("--force", action="store_true", help="replace an earlier suspects output in --out")
    sus.set_defaults(handler=cmd_suspects)

    methods = sub.add_parser("methods", help="list every registered unlearning method with its hyperparameters")
    methods.set_defaults(handler=cmd_methods)

    run = sub.add_parser("run", help="run a grid recipe (resumes: finished cells are skipped)", epilog=EPILOG)
    run.add_argument("config", help="grid recipe YAML, e.g. configs/paper1/fashion-mnist-poison.yaml")
    run.add_argument("--out", required=True, help="results folder (records/ and config.yaml go there)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default: in this process, or one worker process per visible GPU) | ray (a local "
                          "Ray instance, or the cluster at $RAY_ADDRESS; pip install corrective-unlearning[ray])")
    run.add_argument("--workers", type=int, help="worker processes / Ray actors (default: one per GPU; on CPU, one "
                                                 "in-process worker for local, one per CPU for ray)")
    run.add_argument("--retries", type=int, default=2, help="times the cells of a worker that died are resubmitted "
                                                            "before they are recorded as failed (default: 2)")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.set_defaults(handler=cmd_run)

    status = sub.add_parser("status", help="done / running / failed / left per method of a results folder, with an "
                                           "ETA from the measured per-cell times")
    status.add_argument("results", help="results folder written by 'corrective run' (it may be running)")
    status.set_defaults(handler=cmd_status)

    report = sub.add_parser("report", help="tables (CSV, Parquet, Markdown) and figures from a results folder")
    report.add_argument("results", help="results folder written by 'corrective run'")
    report.add_argument("--out", help="report folder (default: <results>/report)")
    report.add_argument("--max-val-drop", type=float, default=2.0, metavar="POINTS",
                        help="guarded selection rule: the best paper score among settings whose validation accuracy "
                             "is at most POINTS below the original model's (default: 2); the summary shows it beside "
                             "the paper's rule")
    report.set_defaults(handler=cmd_report)

    datasets = sub.add_parser("datasets", help="list the registered data sources")
    datasets.set_defaults(handler=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come anywhere, also after options (argparse alone would reject them there).
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if "=" not in item or item.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.handler(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
