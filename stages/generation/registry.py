"""The generator registry: a dash-free alias -> how to load a diffusers text-to-image pipeline and call it.

The entries are data, in ``stages/generation/generators.yaml`` (`REGISTRY`); `read_registry` reads and
checks a registry file, `get_generator` looks an alias up in one (entries that tests `register` in this
process first). Every generator is loaded from a local diffusers directory ``<models_root>/<alias>`` when
one is there (this is how DVC tracks the weights as a dependency), else from its model id on the Hugging
Face hub (through the local cache; offline it must already be cached). The offline demo generator
`tiny_random` has no hub id: the `tiny_generator` stage builds it into ``<models_root>/tiny_random``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stages.contracts.errors import InputError
from stages.contracts.hub import Hub

Dtype = Literal["float32", "float16", "bfloat16"]
# A value of call_args: JSON scalars only, so the settings recorded with the children stay plain data.
Scalar = str | int | float | bool
# the registry shipped inside the package
REGISTRY = Path(__file__).with_name("generators.yaml")
# DVC params keys cannot hold dashes (`dvc exp run -S` and `${item}` break on them)
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GeneratorSpec:
    """How one generator is loaded and called. Everything here decides the pixels of its children.

    Checked on construction: a ValueError names the first field that is wrong."""

    alias: str
    model_id: str  # a Hugging Face hub id, or "" for a generator that only exists as a local directory
    height: int
    width: int
    steps: int
    guidance_scale: float
    scheduler: str = ""  # a diffusers scheduler class swapped in with from_config; "" keeps the model's own
    negative_prompt: str = ""
    dtype: Dtype = "float32"
    batch_size: int = 8
    safety_checker: bool = True
    # For a model that ships without a safety checker (SD 2.x): the checker's hub id, loaded from
    # <models_root>/<its last path part> when there, and added to the pipeline.
    safety_checker_id: str = ""
    watermark: bool = False  # no invisible watermark (SD 1.x / 2.x pipelines add none; recorded for clarity)
    base_seed: int = 0
    obtain: str = ""  # how to get the weights when they are missing (shown in the error)
    # The weights are random (the demo's tiny_random): a label for what is trained on its children (the shipped
    # detector says so), not a setting: it decides no pixel, so it is not in settings() and no child changes.
    random_weights: bool = False
    # Fields added after the first entries were recorded: settings() records them only when they differ from
    # these defaults, so the children (and fingerprints) of the older entries stay what they were.
    call_args: dict = dataclasses.field(default_factory=dict)  # more keyword arguments of the pipeline call
    cascade: tuple = ()  # later pipelines of a cascaded generator (CascadeStage), each fed the previous images
    vae_tiling: bool = False  # decode in overlapping tiles (changes pixels a little; for very large sizes)

    def __post_init__(self) -> None:
        if not isinstance(self.alias, str) or not ALIAS.fullmatch(self.alias):
            raise ValueError(f"generator alias {self.alias!r} must be letters, digits and underscores (no dashes), "
                             "starting with a letter, for DVC params")
        for name, hint in typing.get_type_hints(GeneratorSpec).items():
            if name in ("call_args", "cascade"):
                continue
            problem = _type_problem(getattr(self, name), hint)
            if problem:
                raise ValueError(f"{name} {problem}")
        if isinstance(self.guidance_scale, int):  # 7 and 7.0 are one setting: record it as a float
            object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        if self.height < 8 or self.width < 8 or self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be positive multiples of 8 (the VAE downsamples by 8), "
                             f"got {self.height}x{self.width}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps} and {self.batch_size}")
        object.__setattr__(self, "call_args", _check_call_args(self.call_args, "call_args"))
        if not isinstance(self.cascade, list | tuple):
            raise ValueError(f"cascade must be a list of stages, got {type(self.cascade).__name__}")
        stages = []
        for k, stage in enumerate(self.cascade, start=2):
            if isinstance(stage, dict):
                known = {f.name for f in dataclasses.fields(CascadeStage)}
                if set(stage) - known or {"model_id", "steps", "guidance_scale"} - set(stage):
                    raise ValueError(f"cascade stage {k} must have the keys model_id, steps, guidance_scale "
                                     f"(and optionally call_args), got {sorted(stage)}")
                stage = CascadeStage(**stage)
            if not isinstance(stage, CascadeStage):
                raise ValueError(f"cascade stage {k} must be a mapping, got {type(stage).__name__}")
            stages.append(stage)
        object.__setattr__(self, "cascade", tuple(stages))

    def settings(self) -> dict[str, Any]:
        """The settings that decide the pixels, recorded with the children (JSON-ready). The batch size is
        left out: each child's noise comes from its own seed, so batching changes no child (beyond the
        rounding of batched kernels), and a resumed run may use another batch size."""
        recorded = {k: v for k, v in dataclasses.asdict(self).items()
                    if k not in ("obtain", "batch_size", "random_weights")}
        for name, default in LATER_FIELDS.items():
            if recorded[name] == default:
                del recorded[name]
        if "cascade" in recorded:
            recorded["cascade"] = [dict(stage) for stage in recorded["cascade"]]
        return recorded


@dataclass(frozen=True)
class CascadeStage:
    """A later pipeline of a cascaded generator (DeepFloyd IF's stage II): called with the prompts and the
    previous stage's images (`image=`), the children's generators continuing where the last stage left them.

    Its weights are <models_root>/<alias>/stage<k> (k = 2, 3, ...) when there, else its hub id."""

    model_id: str
    steps: int
    guidance_scale: float
    call_args: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, hint in (("model_id", str), ("steps", int), ("guidance_scale", float)):
            problem = _type_problem(getattr(self, name), hint)
            if problem:
                raise ValueError(f"cascade {name} {problem}")
        if not self.model_id or self.steps < 1:
            raise ValueError(f"a cascade stage needs a model_id and at least 1 step, got {self.model_id!r}, "
                             f"{self.steps}")
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        object.__setattr__(self, "call_args", _check_call_args(self.call_args, "cascade call_args"))


# The recorded defaults of the fields added after the first entries (see GeneratorSpec.settings).
LATER_FIELDS: dict[str, Any] = {"call_args": {}, "cascade": (), "vae_tiling": False}
# Arguments the stage itself passes to every pipeline call: call_args must not set them.
RESERVED_ARGS = frozenset({"prompt", "negative_prompt", "height", "width", "num_inference_steps", "guidance_scale",
                           "generator", "output_type", "image", "num_images_per_prompt", "return_dict", "latents",
                           "prompt_embeds", "negative_prompt_embeds", "callback_on_step_end"})


def _check_call_args(value: Any, name: str) -> dict:
    """A mapping of extra pipeline-call keyword arguments to JSON scalars, sorted by name."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping of pipeline call arguments, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, Scalar):
            raise ValueError(f"{name} must map names to numbers, strings or booleans, got {key!r}: {item!r}")
        if key in RESERVED_ARGS:
            raise ValueError(f"{name} cannot set {key!r}: the stage sets it (use the entry's own keys)")
    return dict(sorted(value.items()))


def _type_problem(value: Any, hint: Any) -> str:
    """'' when `value` fits the field type `hint`, else what is wrong (a bool is not a number here)."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return "" if value in choices else f"must be one of {list(choices)}, got {value!r}"
    allowed = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}[hint]
    if isinstance(value, allowed) and (hint is bool or not isinstance(value, bool)):
        return ""
    return f"must be {hint.__name__}, got {type(value).__name__} {value!r}"


_registered: dict[str, GeneratorSpec] = {}


def register(spec: GeneratorSpec) -> GeneratorSpec:
    """Add (or replace) an entry in this process (tests register tiny ones); it wins over the registry file."""
    _registered[spec.alias] = spec
    return spec


def unregister(alias: str) -> None:
    """Remove an entry registered in this process."""
    _registered.pop(alias, None)


def _safe_load_unique(text: str) -> Any:
    """yaml.safe_load, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeys)  # a SafeLoader: plain data only, no Python objects


def read_registry(path: Path | str) -> dict[str, GeneratorSpec]:
    """The entries of a registry YAML file, each checked; an InputError names the file and the entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "generator registry file not found")
    try:
        data = _safe_load_unique(path.read_text()) or {}
    except (yaml.YAMLError, RecursionError) as error:
        raise InputError(str(path), f"is not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a mapping of generator aliases to entries")
    fields = dataclasses.fields(GeneratorSpec)
    known = {f.name for f in fields} - {"alias"}
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - {"alias"}
    specs = {}
    for alias, entry in data.items():
        where = f"{path}: {alias}"
        if not isinstance(entry, dict):
            raise InputError(where, f"expected a mapping with the keys {sorted(required)} (and optional ones)")
        if required - set(entry):
            raise InputError(where, f"missing keys {sorted(required - set(entry))}; required: {sorted(required)}")
        if set(entry) - known:
            raise InputError(where, f"unknown keys {sorted(set(entry) - known)}; known: {sorted(known)}")
        try:
            specs[alias] = GeneratorSpec(alias=alias, **entry)
        except ValueError as error:
            raise InputError(where, str(error)) from error
    return specs


def get_generator(alias: str, registry: Path | str = REGISTRY) -> GeneratorSpec:
    """The entry of `alias`: registered in this process, else read from the registry file. An unknown alias
    is an error naming the registry file and listing the known aliases."""
    if alias in _registered:
        return _registered[alias]
    specs = read_registry(registry)
    if alias not in specs:
        raise InputError(str(registry), f"unknown generator {alias!r}; known: {sorted({*specs, *_registered})}",
                         "add an entry for it to this file, or list a known alias in generate.generators")
    return specs[alias]


def random_weight_generators(aliases: list[str], registry: Path | str = REGISTRY) -> list[str]:
    """Those of `aliases` whose registry entry says its weights are random, in order; an unknown alias is an
    error naming the registry file."""
    return [alias for alias in aliases if get_generator(alias, registry).random_weights]


def model_dir(spec: GeneratorSpec, models_root: Path) -> Path:
    """Where the generator's local diffusers directory is expected."""
    return Path(models_root) / spec.alias


def _missing_message(spec: GeneratorSpec, local: Path) -> str:
    if spec.model_id:
        return (f"download it, e.g. `hf download {spec.model_id} --local-dir {local}`, or set "
                f"generate.models_root to a folder that holds a diffusers copy of it in {spec.alias}/")
    return spec.obtain or f"put a diffusers directory at {local} or set generate.models_root"


def safety_checker_dir(spec: GeneratorSpec, models_root: Path) -> Path:
    """Where a separate safety checker (`safety_checker_id`) is read from: ``safety_checker/`` inside the
    generator's own folder, so the one DVC dependency ``<models_root>/<alias>`` covers it too."""
    return model_dir(spec, models_root) / "safety_checker"


def weights_problems(spec: GeneratorSpec, models_root: Path) -> list[str]:
    """What of the generator's weights is not on disk under `models_root` (its diffusers directory and, for a
    model that ships without one, its safety checker), each with how to get it; empty when all is there."""
    local = model_dir(spec, models_root)
    problems = []
    try:
        check_model_dir(local)
    except InputError as error:
        problems.append(f"generator {spec.alias!r}: {error.where} {error.problem}; {_missing_message(spec, local)}")
    if spec.safety_checker and spec.safety_checker_id:
        checker = safety_checker_dir(spec, models_root)
        if not (checker / "config.json").is_file():
            problems.append(f"generator {spec.alias!r}: its safety checker {checker} is missing; download it, e.g. "
                            f"`hf download {spec.safety_checker_id} --local-dir {checker}`")
    return problems


def check_model_dir(path: Path) -> None:
    """A local diffusers directory must have a readable model_index.json naming its components."""
    index = path / "model_index.json"
    if not index.is_file():
        raise InputError(str(path), "is not a diffusers pipeline directory: model_index.json is missing")
    try:
        components = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(str(index), f"is not valid JSON ({error})") from error
    for name, value in components.items():
        if not name.startswith("_") and isinstance(value, list) and value[0] is not None \
                and not (path / name).is_dir():
            raise InputError(str(path), f"component folder {name}/ named in model_index.json is missing")


def load_pipeline(spec: GeneratorSpec, models_root: Path, device: str = "cpu", hub: Hub = Hub.offline):
    """Load the generator's (first) pipeline with `from_pretrained`: the local directory if present, else (only
    when `hub` allows downloads) the hub id; offline, a missing directory is refused before any library looks at
    the hub. Any diffusers text-to-image pipeline: DiffusionPipeline picks the class model_index.json names.

    Errors name what is missing and how to get it. Returns the pipeline on `device`, progress bar off."""
    local = model_dir(spec, models_root)
    if local.exists():
        check_model_dir(local)
        source, where = str(local), str(local)
    elif spec.model_id and hub is Hub.offline:
        raise InputError(str(local), f"generator {spec.alias!r} is not on disk and nothing is downloaded "
                         "(generate --hub is offline)",
                         _missing_message(spec, local) + ", or allow the hub with generate --hub download")
    elif spec.model_id:
        source, where = spec.model_id, f"{spec.model_id} (hub id, as {local} does not exist)"
    else:
        raise InputError(str(local), f"generator {spec.alias!r} has no model directory here",
                         _missing_message(spec, local))
    pipeline = _from_pretrained(source, where, spec.dtype, local.exists(), _missing_message(spec, local),
                                safety_checker=spec.safety_checker)
    has_checker = "safety_checker" in _init_parameters(type(pipeline))
    if spec.safety_checker and not has_checker:
        raise InputError(where, f"the registry asks for the safety checker but {type(pipeline).__name__} has none "
                         "to run", "set safety_checker: false (its children are then recorded as not checked)")
    if spec.safety_checker and getattr(pipeline, "safety_checker", None) is None:
        if not spec.safety_checker_id:
            raise InputError(where, "the registry asks for the safety checker but this pipeline has none")
        add_safety_checker(pipeline, spec, models_root, hub)
    _set_watermark(pipeline, spec.watermark, where)
    if spec.scheduler:
        pipeline.scheduler = swap_scheduler(pipeline.scheduler, spec.scheduler, where)
    _check_call_args_accepted(pipeline, spec.call_args, where)
    if spec.vae_tiling:
        pipeline.vae.enable_tiling()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def load_generator(spec: GeneratorSpec, models_root: Path, device: str = "cpu", hub: Hub = Hub.offline) -> list:
    """All pipelines of the generator, in calling order: its own (`load_pipeline`), then each cascade stage.

    A cascade stage k loads from <models_root>/<alias>/stage<k> when there, else its hub id; components it
    shares by name and class with the first pipeline (DeepFloyd IF's T5 text encoder and tokenizer) are
    passed in rather than loaded twice. The stage's safety checker and watermark follow the entry's."""
    first = load_pipeline(spec, models_root, device, hub)
    stages = [first]
    for k, stage in enumerate(spec.cascade, start=2):
        local = model_dir(spec, models_root) / f"stage{k}"
        hint = (f"download it, e.g. `hf download {stage.model_id} --local-dir {local}`, or set "
                f"generate.models_root to a folder that holds it as {spec.alias}/stage{k}/")
        if local.exists():
            check_model_dir(local)
            source, where = str(local), str(local)
        elif hub is Hub.offline:
            raise InputError(str(local), f"cascade stage {k} of {spec.alias!r} is not on disk and nothing is "
                             "downloaded (generate --hub is offline)", hint + ", or allow the hub with --hub download")
        else:
            source, where = stage.model_id, f"{stage.model_id} (hub id, as {local} does not exist)"
        shared = {name: component for name, component in first.components.items()
                  if component is not None and name in ("text_encoder", "tokenizer")}
        pipeline = _from_pretrained(source, where, spec.dtype, local.exists(), hint,
                                    safety_checker=spec.safety_checker, components=shared)
        if spec.safety_checker and getattr(pipeline, "safety_checker", None) is None:
            raise InputError(where, "the registry asks for the safety checker but this cascade stage has none")
        _set_watermark(pipeline, spec.watermark, where)
        _check_call_args_accepted(pipeline, stage.call_args, where)
        pipeline.set_progress_bar_config(disable=True)
        stages.append(pipeline.to(device))
    return stages


def _init_parameters(cls) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _from_pretrained(source: str, where: str, dtype: str, local: bool, missing: str, *, safety_checker: bool,
                     components: dict | None = None):
    """DiffusionPipeline.from_pretrained with errors that name the model and what to do. Without the safety
    checker, a pipeline class that has one gets none (others get no unexpected arguments)."""
    import diffusers
    import torch

    try:
        config = diffusers.DiffusionPipeline.load_config(source)
        cls = getattr(diffusers, str(config.get("_class_name")), None)
        extra: dict[str, Any] = {}
        accepted = _init_parameters(cls) if isinstance(cls, type) else set()
        if not safety_checker and "safety_checker" in accepted:
            extra["safety_checker"] = None
            if "requires_safety_checker" in accepted:
                extra["requires_safety_checker"] = False
        extra.update({k: v for k, v in (components or {}).items() if k in config})
        return diffusers.DiffusionPipeline.from_pretrained(source, dtype=getattr(torch, dtype), **extra)
    except OSError as error:  # huggingface_hub's offline and not-found errors are OSErrors
        if local:
            raise InputError(where, f"cannot load this diffusers directory ({error})",
                             "it looks corrupt or incomplete; download or rebuild it") from error
        raise InputError(where, f"not on disk and not reachable ({type(error).__name__})", missing) from error
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise InputError(where, f"cannot load this diffusers pipeline ({type(error).__name__}: {error})",
                         "it looks corrupt or incomplete; download or rebuild it") from error


def _set_watermark(pipeline, watermark: bool, where: str) -> None:
    """Make the pipeline watermark its images exactly when the registry says so. SDXL adds an invisible
    watermark whenever the invisible-watermark package happens to be installed, DeepFloyd IF a visible one:
    left alone, the same entry would give other pixels on another machine."""
    attribute = next((a for a in ("watermark", "watermarker") if hasattr(pipeline, a)), None)
    if watermark:
        if attribute is None or getattr(pipeline, attribute) is None:
            raise InputError(where, f"the registry asks for a watermark but {type(pipeline).__name__} adds none "
                             "here", "set watermark: false, or install what the pipeline needs to watermark")
    elif attribute == "watermarker":
        pipeline.register_modules(watermarker=None)
    elif attribute == "watermark":
        pipeline.watermark = None


def _check_call_args_accepted(pipeline, call_args: dict, where: str) -> None:
    """Every call_args name must be a parameter of the pipeline's __call__, and caption cleaning (PixArt,
    DeepFloyd IF), when on, must be able to run: those pipelines skip it silently without bs4 and ftfy, which
    would change the prompts with the packages installed."""
    import importlib.util
    import inspect

    parameters = inspect.signature(type(pipeline).__call__).parameters
    unknown = sorted(set(call_args) - set(parameters))
    if unknown:
        raise InputError(where, f"call_args {unknown} are not arguments of {type(pipeline).__name__}; it takes "
                         f"{sorted(set(parameters) - {'self', 'kwargs'} - RESERVED_ARGS)}")
    clean = parameters.get("clean_caption")
    if clean is not None and call_args.get("clean_caption", clean.default):
        missing = [m for m in ("bs4", "ftfy") if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(where, f"{type(pipeline).__name__} cleans captions with bs4 and ftfy, and {missing} "
                             "is not installed (without it the pipeline silently skips cleaning)",
                             "install it (pip install beautifulsoup4 ftfy), or set call_args: "
                             "{clean_caption: false} in the entry")


def add_safety_checker(pipeline, spec: GeneratorSpec, models_root: Path, hub: Hub = Hub.offline) -> None:
    """Load Stable Diffusion's safety checker and its image processor into a pipeline that has none, from
    `safety_checker_dir` (else, when `hub` allows, from the hub id)."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    local = safety_checker_dir(spec, models_root)
    if not local.exists() and hub is Hub.offline:
        raise InputError(str(local), f"the safety checker of {spec.alias!r} is not on disk and nothing is "
                         "downloaded (generate --hub is offline)",
                         f"download it: `hf download {spec.safety_checker_id} --local-dir {local}`, or allow the "
                         "hub with generate --hub download")
    source = str(local) if local.exists() else spec.safety_checker_id
    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(source, dtype=getattr(torch, spec.dtype))
        processor = CLIPImageProcessor.from_pretrained(source)
    except OSError as error:
        raise InputError(source, f"the safety checker of {spec.alias!r} is not on disk and not reachable "
                         f"({type(error).__name__})",
                         f"download it, e.g. `hf download {spec.safety_checker_id} --local-dir {local}`") from error
    pipeline.register_modules(safety_checker=checker, feature_extractor=processor)


def swap_scheduler(current, name: str, where: str):
    """Replace the pipeline's scheduler by the diffusers class `name`, built from the current config."""
    import diffusers

    cls = getattr(diffusers, name, None)
    known = sorted(c.__name__ for c in getattr(current, "compatibles", []))
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        raise InputError(where, f"unknown scheduler {name!r}; compatible with this model: {known}")
    return cls.from_config(current.config)


def fingerprint_dir(path: Path) -> str:
    """A content hash of a model directory (names, sizes and bytes of every file but its output marker, which
    names the stage that wrote it, not the model), to tell two models apart.

    Costs one read of the weights (seconds for Stable Diffusion); generating costs far more."""
    from stages.contracts.io import MARKER

    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and p != Path(path) / MARKER):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def generator_fingerprint(pipelines: list, spec: GeneratorSpec, models_root: Path) -> str:
    """The content hash of the generator's weights: its local directory (cascade stages included, they live
    inside it), plus the hub snapshot of each pipeline that was not found there."""
    local = model_dir(spec, models_root)
    parts = [fingerprint_dir(local if local.exists() else Path(pipelines[0].name_or_path))]
    for k, pipeline in enumerate(pipelines[1:], start=2):
        if not (local / f"stage{k}").exists():
            parts.append(fingerprint_dir(Path(pipeline.name_or_path)))
    if len(parts) == 1:
        return parts[0]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()
