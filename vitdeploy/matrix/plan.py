"""The matrix file and what it expands to: device types, prepares and cells (nothing runs here).

    [defaults]            keys every suite inherits (batches, warmup_ms, duration_s, ...)
    [prepare]             where prepare tasks run on a cluster: num_cpus, resources, labels
    [devices.NAME]        a device type: accelerator_type, num_gpus, num_cpus, resources, labels
    [[suite]]             name, backend, models, precisions, prepare, device, devices, ...

Everything a run would trip over later (a typo in a key, a model, a device type, a batch outside
the exported range) is refused here, in one line, before anything is built.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vitdeploy.errors import VitdeployError

SUITE_KEYS = {"name", "backend", "device", "devices", "prepare", "models", "precisions", "batches", "warmup_ms",
              "duration_s", "min_iters", "mode", "dynamic_batch", "calib_data", "img_size", "exporter", "opset"}
DEFAULT_KEYS = SUITE_KEYS - {"name"}
DEVICE_KEYS = {"accelerator_type", "num_gpus", "num_cpus", "resources", "labels"}
PREPARE_KEYS = {"num_cpus", "resources", "labels"}
TOP_KEYS = {"defaults", "prepare", "devices", "suite"}
PREPARE_KINDS = ("build", "export", "none")
MODES = ("compute", "end-to-end")
EXPORTERS = ("auto", "dynamo", "torchscript")
# What each way of making the artifact can produce.
PRECISIONS = {"build": ("fp32", "fp16", "int8"), "export": ("fp32",), "none": ("fp32", "fp16", "bf16")}
SETTINGS_DEFAULTS = {"batches": [1], "warmup_ms": 200, "duration_s": 3.0, "min_iters": 10, "mode": "compute"}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DeviceType:
    """A kind of node a cell must run on, as Ray resources: `accelerator_type` is Ray's GPU label
    (H100, A100, L4, ...; implies one GPU), `resources` custom ones declared with
    `ray start --resources` (e.g. jetson_orin), `labels` node labels (`ray start --labels`)."""

    name: str
    num_cpus: float = 1
    num_gpus: float = 0
    accelerator_type: str | None = None
    resources: tuple[tuple[str, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def ray_options(self) -> dict:
        opts: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.accelerator_type:
            opts["accelerator_type"] = self.accelerator_type
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.labels:
            opts["label_selector"] = dict(self.labels)
        return opts

    def describe(self) -> str:
        parts = [f"{self.num_gpus:g} GPU" if self.num_gpus else f"{self.num_cpus:g} CPU"]
        if self.accelerator_type:
            parts.append(f"accelerator_type {self.accelerator_type}")
        parts += [f"{k}={v:g}" for k, v in self.resources]
        parts += [f"label {k}={v}" for k, v in self.labels]
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"name": self.name, **self.ray_options()}


BUILTIN_DEVICES = {
    "cpu": DeviceType("cpu", num_cpus=1),
    "gpu": DeviceType("gpu", num_cpus=1, num_gpus=1),
}
LOCAL = DeviceType("local")  # without Ray every cell runs here, once, whatever device types it lists


@dataclass
class Prepare:
    """One device-independent artifact: a `vitdeploy build --no-engine` or `export` command."""

    id: str
    kind: str  # build | export
    model: str
    precision: str
    args: list[str]  # the vitdeploy command line, without -o
    ray: dict = field(default_factory=dict)  # Ray resource options of the task


@dataclass
class Cell:
    """One measurement: a suite's model at one precision on one device type."""

    suite: str
    model: str
    precision: str
    backend: str
    device: str  # cpu | cuda: what `vitdeploy bench --device` gets
    device_type: DeviceType
    prepare: str | None  # Prepare.id, or None for the PyTorch backends
    engine_args: list[str] | None  # `vitdeploy build` to run on the node (engine step), without -o
    bench_args: list[str]  # `vitdeploy bench` after ARTIFACT, without --json
    problem: str | None = None  # why this cell cannot run (reported, never attempted)
    spec: str = ""  # hash of everything above: --resume reruns a cell whose spec changed

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.model}/{self.precision}@{self.device_type.name}"

    @property
    def dirname(self) -> str:
        from vitdeploy.sources import short_name

        return f"{self.suite}/{self.device_type.name}/{short_name(self.model)}_{self.precision}"


@dataclass
class Plan:
    source: Path
    prepares: dict[str, Prepare]
    cells: list[Cell]
    devices: dict[str, DeviceType]
    warnings: list[str] = field(default_factory=list)

    def cells_of(self, prepare_id: str) -> list[Cell]:
        return [c for c in self.cells if c.prepare == prepare_id]


# ----------------------------------------------------------------------------- reading


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(sorted(choices)) or 'none'}"


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str, fix: str) -> None:
        raise VitdeployError(f"{self.path.name}: {where}: {what}", fix)

    def keys(self, table, allowed: set, where: str) -> None:
        if not isinstance(table, dict):
            self.fail(where, "is not a table", "see benchmarks/matrix.toml for the layout")
        for k in table:
            if k not in allowed:
                self.fail(where, f"unknown key '{k}'", _suggest(k, allowed))

    def number(self, value, where: str, *, integer: bool = False, minimum: float = 0) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < minimum:
            kind = "an integer" if integer else "a number"
            self.fail(where, f"must be {kind} >= {minimum:g}, got {value!r}", f"e.g. {where.rsplit('.', 1)[-1]} = {max(minimum, 1):g}")
        return value

    def strings(self, value, where: str) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.fail(where, "must be a non-empty list of names", f'e.g. {where.rsplit(".", 1)[-1]} = ["..."]')
        return value

    def resources(self, value, where: str) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, dict):
            self.fail(where, "must be a table of resource = amount", f"e.g. {where.rsplit('.', 1)[-1]} = {{ jetson_orin = 1 }}")
        for k, v in value.items():
            if k in ("CPU", "GPU", "memory", "object_store_memory"):
                self.fail(f"{where}.{k}", "is a built-in resource", "use num_cpus / num_gpus")
            self.number(v, f"{where}.{k}")
        return tuple(sorted((k, float(v)) for k, v in value.items()))

    def labels(self, value, where: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.fail(where, "must be a table of label = \"value\"", f'e.g. {where.rsplit(".", 1)[-1]} = {{ gpu_type = "A100" }}')
        return tuple(sorted(value.items()))


def load(path: str | Path) -> tuple[dict, dict[str, DeviceType], dict, list[dict]]:
    """(defaults, device types, prepare options, suites) of a matrix file, every key checked."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise VitdeployError(f"matrix file {p} does not exist", "e.g. vitdeploy matrix benchmarks/matrix.toml") from None
    except (IsADirectoryError, UnicodeDecodeError):
        raise VitdeployError(f"{p} is not a TOML text file", "pass a matrix file such as benchmarks/matrix.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise VitdeployError(f"{p.name} is not valid TOML ({e})", "fix the file; benchmarks/matrix.toml shows the layout") from None
    ck = _Checker(p)
    ck.keys(data, TOP_KEYS, "top level")
    defaults = data.get("defaults", {})
    ck.keys(defaults, DEFAULT_KEYS, "[defaults]")
    devices = dict(BUILTIN_DEVICES)
    raw_devices = data.get("devices", {})
    if not isinstance(raw_devices, dict):
        ck.fail("[devices]", "is not a table", "declare each device type as [devices.NAME]")
    for name, d in raw_devices.items():
        where = f"[devices.{name}]"
        ck.keys(d, DEVICE_KEYS, where)
        acc = d.get("accelerator_type")
        if acc is not None and not (isinstance(acc, str) and acc):
            ck.fail(f"{where}.accelerator_type", "must be a name", 'e.g. accelerator_type = "H100" (Ray\'s GPU label)')
        devices[name] = DeviceType(
            name,
            num_cpus=float(ck.number(d.get("num_cpus", 1), f"{where}.num_cpus")),
            num_gpus=float(ck.number(d.get("num_gpus", 1 if acc else 0), f"{where}.num_gpus")),
            accelerator_type=acc,
            resources=ck.resources(d.get("resources", {}), f"{where}.resources"),
            labels=ck.labels(d.get("labels", {}), f"{where}.labels"),
        )
    prepare = data.get("prepare", {})
    ck.keys(prepare, PREPARE_KEYS, "[prepare]")
    prepare_opts: dict = {"num_cpus": float(ck.number(prepare.get("num_cpus", 1), "[prepare].num_cpus")), "num_gpus": 0}
    if prepare.get("resources"):
        prepare_opts["resources"] = dict(ck.resources(prepare["resources"], "[prepare].resources"))
    if prepare.get("labels"):
        prepare_opts["label_selector"] = dict(ck.labels(prepare["labels"], "[prepare].labels"))
    suites = data.get("suite", [])
    if not isinstance(suites, list) or not suites:
        ck.fail("top level", "no [[suite]] tables", "add at least one [[suite]] (see benchmarks/matrix.toml)")
    seen = set()
    for i, s in enumerate(suites):
        name = s.get("name") if isinstance(s, dict) else None
        where = f"suite '{name}'" if isinstance(name, str) else f"[[suite]] #{i + 1}"
        ck.keys(s, SUITE_KEYS, where)
        for key in ("name", "backend", "models", "precisions"):
            if key not in s:
                ck.fail(where, f"lacks '{key}'", f"add {key} = ... to the suite")
        if name in seen:
            ck.fail(where, "appears twice", "give every suite its own name")
        seen.add(name)
        _check_suite({**defaults, **s}, devices, ck, where)
    return defaults, devices, prepare_opts, suites


def _check_suite(cfg: dict, devices: dict[str, DeviceType], ck: _Checker, where: str) -> None:
    from vitdeploy.bench.backends import BACKENDS
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.models import REGISTRY

    names = list(BACKENDS)

    backends = [b.strip() for b in str(cfg["backend"]).split(",") if b.strip()]
    for b in backends or [""]:
        if b not in names:
            ck.fail(f"{where}.backend", f"unknown backend '{b}'", _suggest(b, names))
    kind = cfg.get("prepare", "none")
    if kind not in PREPARE_KINDS:
        ck.fail(f"{where}.prepare", f"must be one of {', '.join(PREPARE_KINDS)}, got {kind!r}", 'e.g. prepare = "build"')
    if kind == "none" and set(backends) & {"trt", "ort"}:
        ck.fail(where, f"backend {cfg['backend']} runs an artifact, and prepare = \"none\" makes none",
                'set prepare = "build" (or "export" for FP32 ONNX Runtime)')
    if kind != "build" and "trt" in backends:
        ck.fail(where, "the trt backend needs an engine", 'set prepare = "build"')
    if kind != "none" and set(backends) & {"torch", "torch-compile"} and len(backends) > 1:
        ck.fail(f"{where}.backend", "mixes PyTorch and artifact backends", "split it into two suites")
    for m in ck.strings(cfg["models"], f"{where}.models"):
        if m not in REGISTRY:  # a timm name, a Hugging Face directory or FILE.py:FACTORY (vitdeploy.sources)
            from vitdeploy.sources import resolve

            try:
                resolve(m)
            except VitdeployError as e:
                ck.fail(f"{where}.models", f"unknown model '{m}'" if e.message.startswith("unknown model") else e.message,
                        _suggest(m, REGISTRY) if e.message.startswith("unknown model") else (e.hint or ""))
    for p in ck.strings(cfg["precisions"], f"{where}.precisions"):
        if p not in PRECISIONS[kind]:
            ck.fail(f"{where}.precisions", f"prepare = \"{kind}\" cannot make {p}",
                    f"use {', '.join(PRECISIONS[kind])}" + ("" if kind == "build" else ' or prepare = "build"'))
    batches = cfg.get("batches", SETTINGS_DEFAULTS["batches"])
    if not isinstance(batches, list) or not batches:
        ck.fail(f"{where}.batches", "must be a list of batch sizes", "e.g. batches = [1, 8]")
    for b in batches:
        ck.number(b, f"{where}.batches", integer=True, minimum=1)
    for key, integer, minimum in (("warmup_ms", False, 0), ("duration_s", False, 0), ("min_iters", True, 1),
                                  ("opset", True, 1)):
        if key in cfg:
            ck.number(cfg[key], f"{where}.{key}", integer=integer, minimum=minimum)
    if "img_size" in cfg:  # as --img-size everywhere: one number (square) or [H, W]
        size = cfg["img_size"]
        if isinstance(size, list):
            if len(size) != 2:
                ck.fail(f"{where}.img_size", "must be one number or [height, width]", "e.g. img_size = [240, 320]")
            for v in size:
                ck.number(v, f"{where}.img_size", integer=True, minimum=1)
        else:
            ck.number(size, f"{where}.img_size", integer=True, minimum=1)
    if cfg.get("mode", "compute") not in MODES:
        ck.fail(f"{where}.mode", f"must be one of {', '.join(MODES)}", 'e.g. mode = "compute"')
    if cfg.get("exporter", "auto") not in EXPORTERS:
        ck.fail(f"{where}.exporter", f"must be one of {', '.join(EXPORTERS)}", 'e.g. exporter = "torchscript"')
    if cfg.get("device") not in (None, "cpu", "cuda"):
        ck.fail(f"{where}.device", f"must be cpu or cuda, got {cfg['device']!r}", 'e.g. device = "cuda"')
    if kind != "none":
        if "dynamic_batch" not in cfg:
            ck.fail(where, "lacks dynamic_batch (the batch range the artifact is exported with)", 'e.g. dynamic_batch = "1:8:64"')
        try:
            spec = BatchSpec.parse(str(cfg["dynamic_batch"]))
        except VitdeployError as e:
            ck.fail(f"{where}.dynamic_batch", e.message, e.hint or "")
        outside = [b for b in batches if not spec.min <= b <= spec.max]
        if outside:
            ck.fail(f"{where}.batches", f"{', '.join(map(str, outside))} outside dynamic_batch {cfg['dynamic_batch']}",
                    "widen dynamic_batch or drop those batch sizes")
    if "devices" in cfg:
        for d in ck.strings(cfg["devices"], f"{where}.devices"):
            if d not in devices:
                ck.fail(f"{where}.devices", f"unknown device type '{d}'",
                        _suggest(d, devices) + " (or declare it as [devices.NAME])")
        if len(set(cfg["devices"])) != len(cfg["devices"]):
            ck.fail(f"{where}.devices", "lists a device type twice", "list each once")


# ----------------------------------------------------------------------------- expanding


def _bench_settings(cfg: dict) -> list[str]:
    c = {**SETTINGS_DEFAULTS, **cfg}
    return ["--batch-sizes", ",".join(str(b) for b in c["batches"]), "--warmup-ms", f"{c['warmup_ms']:g}",
            "--duration-s", f"{c['duration_s']:g}", "--min-iters", str(c["min_iters"]), "--mode", c["mode"], "--quiet"]


def _model_args(cfg: dict) -> list[str]:
    out = []
    if "img_size" in cfg:
        out += ["--img-size", img_size_arg(cfg["img_size"])]
    if "exporter" in cfg:
        out += ["--exporter", cfg["exporter"]]
    if "opset" in cfg:
        out += ["--opset", str(cfg["opset"])]
    return out


def expand(path: str | Path, *, suites: list[str] | None = None, models: list[str] | None = None,
           calib_data: str | None = None, local: bool = False) -> Plan:
    """The plan of a matrix file, restricted to `suites` / `models` (names checked, with suggestions).
    `local`: one cell per suite, model and precision, on this machine (device type "local")."""
    defaults, devices, prepare_opts, all_suites = load(path)
    names = [s["name"] for s in all_suites]
    for s in suites or []:
        if s not in names:
            raise VitdeployError(f"no suite '{s}' in {Path(path).name}", _suggest(s, names))
    plan = Plan(Path(path), {}, [], devices)
    by_args: dict[tuple, Prepare] = {}
    for s in all_suites:
        if suites and s["name"] not in suites:
            continue
        cfg = {**defaults, **s}
        kind = cfg.get("prepare", "none")
        backend = ",".join(b.strip() for b in str(cfg["backend"]).split(",") if b.strip())
        device = cfg.get("device") or ("cuda" if "trt" in backend.split(",") else "cpu")
        dtypes = [LOCAL] if local else [devices[d] for d in cfg.get("devices") or ["gpu" if device == "cuda" else "cpu"]]
        for model in s["models"]:
            if models and model not in models:
                continue
            for prec in s["precisions"]:
                problem = None
                prep_id = engine = None
                if kind == "none":
                    bench = ["--model", model, "--backend", backend, "--precision", prec, *_img_args(cfg)]
                else:
                    args = [kind, "--model", model, "--dynamic-batch", str(cfg["dynamic_batch"]), *_model_args(cfg)]
                    if prec == "fp16":
                        args.append("--fp16")
                    elif prec == "int8":
                        data = calib_data or cfg.get("calib_data")
                        if not data:
                            problem = "int8 needs calibration data: set calib_data in the suite or pass --calib-data"
                        args += ["--int8", "--calib-data", str(data or "MISSING")]
                    if kind == "build":
                        # the engine step must fail, not exit 0 with "engine skipped", where TensorRT is missing
                        engine = [*args, "--require-engine"] if "trt" in backend.split(",") else None
                        args.append("--no-engine")
                    key = tuple(args)
                    if key not in by_args and problem is None:
                        lo_opt_hi = str(cfg["dynamic_batch"]).replace(":", "-")
                        from vitdeploy.sources import short_name

                        pid = f"{short_name(model)}_{prec}_b{lo_opt_hi}_{_digest(args)[:8]}"
                        by_args[key] = plan.prepares[pid] = Prepare(pid, kind, model, prec, args, dict(prepare_opts))
                    prep_id = by_args[key].id if key in by_args else None
                    bench = ["--backend", backend]
                bench += (["--device", device] if cfg.get("device") or device == "cuda" else []) + _bench_settings(cfg)
                for dt in dtypes:
                    cell = Cell(s["name"], model, prec, backend, device, dt, prep_id, engine, bench, problem)
                    prep_args = plan.prepares[prep_id].args if prep_id else None
                    cell.spec = _digest([prep_args, engine, bench, dt.to_dict()])
                    plan.cells.append(cell)
    if not plan.cells:
        raise VitdeployError("no cell matches --suite/--model", f"suites: {', '.join(names)}")
    for c in plan.cells:
        if c.problem:
            plan.warnings.append(f"{c.id}: {c.problem}; this cell will not run")
    return plan


def img_size_arg(size) -> str:
    """A matrix img_size (224 or [240, 320]) as the --img-size value every command parses ("240x320")."""
    return "x".join(str(v) for v in size) if isinstance(size, list) else str(size)


def _img_args(cfg: dict) -> list[str]:
    return ["--img-size", img_size_arg(cfg["img_size"])] if "img_size" in cfg else []
