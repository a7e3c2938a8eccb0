"""check: the pipeline's setting (its params, passed as options) and the two registries -> data/check.txt, or one
message listing everything that would stop the pipeline later: unknown generator or backbone aliases (with the
nearest known ones), a children set the study, the detector or CoDE uses that neither generate nor
import_children makes (or that both make), an import with an unknown layout or a missing root, code_eval's
protocol, subsample size or threshold rule that is not one, missing COCO images, caption files or split file,
and the missing weights of every generator and backbone, each with how to get it.
Every other stage runs after it (clusters and tiny_generator depend on its output), so a typo or a missing
download fails in seconds, before hours of generation.

    python -m stages.check --model-backbone efficientnet_lite0 --model-generators tiny_random \\
        --embed-backbones openclip_vitb32_random --generate-generators tiny_random --children-sets tiny_random \\
        --imports.cocofake_sd14.layout cocofake --imports.cocofake_sd14.root stages/sources/demo \\
        --imports.cocofake_sd14.generator '' --models-root models \\
        --code-train-generators tiny_random --code-eval-generators tiny_random --code-eval-fit tiny_random \\
        --code-eval-protocol toolkit --code-eval-released-fit-images 9600 --code-eval-threshold val \\
        --source demo --input stages/sources/demo --coco-captions 'annotations/captions_*.json' \\
        --karpathy-split '' --backbone-registry stages/embedding/backbones.yaml \\
        --generator-registry stages/generation/generators.yaml --built tiny_random --metrics metrics \\
        --layout stages/reporting/layout.yaml --out data/check.txt --bootstrap-resamples 1000 --bootstrap-seed 0 \\
        --captions-per-parent 5 --benchmarks.demo.layout real_fake --benchmarks.demo.root data/benchmark_demo

import_children.sets (a dict: name -> layout, root, generator) and benchmark.sets arrive as DVC renders a dict,
one `--imports.<name>.<key> <value>` (`--benchmarks...`) pair per entry and key; nothing else may follow the
declared options.

Its output is the same text whenever the check passes: stages after it never rerun because it did. With
clusters.source coco (the paper's setting) it also prints the estimated GPU-hours and disk per stage
(stages.compute.cost; `parentage estimate` for any setting). Warnings go
to stderr and do not fail the check: model.backbone also listed in embed.backbones (embedded twice), and files
under metrics/ that no stage of the current params writes (stages.contracts.instances: left behind by a removed
backbone, set or benchmark; the report never reads them).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from stages.contracts.errors import InputError, user_errors
from stages.contracts.runtime import Command

app = Command()
PASSED = "every alias is known and every input and weight the pipeline reads is on disk\n"


@dataclass(frozen=True)
class Setting:
    """What the pipeline is asked to build: the params the check reads, by their params.yaml names."""

    model_backbone: str
    model_generators: list[str]
    embed_backbones: list[str]
    generate_generators: list[str]
    children_sets: list[str]
    imports: dict[str, dict[str, str]]
    models_root: Path
    code_train_generators: list[str]
    code_eval_generators: list[str]
    code_eval_fit: list[str]
    source: str
    input_path: Path
    coco_captions: str
    karpathy_split: Path | None
    benchmarks: tuple[str, ...] = ()  # benchmark.sets' names
    bootstrap_resamples: int = 1000  # bootstrap.resamples
    bootstrap_seed: int = 0  # bootstrap.seed
    benchmark_duplicates: tuple[tuple[str, str], ...] = ()  # (set, its duplicates rule) where the set gives one
    code_eval_protocol: str = "toolkit"
    code_eval_released_fit_images: str = "9600"
    code_eval_threshold: str = "val"


def _unknown(kind: str, alias: str, param: str, known: set[str], registry: Path) -> str:
    from stages.embedding.backbones import nearest

    close = nearest(alias, known)
    hint = f"nearest: {', '.join(close)}" if close else f"known: {', '.join(sorted(known))}"
    return f"{param}: unknown {kind} {alias!r}, not in {registry} ({hint}); add an entry there or fix the alias"


def problems(setting: Setting, backbone_registry: Path, generator_registry: Path, built: set[str]) -> list[str]:
    """Everything that would stop the pipeline later, in the order a reader fixes them; empty when none."""
    from stages.embedding.backbones import read_registry as read_backbones
    from stages.embedding.backbones import weights_problem
    from stages.generation.registry import read_registry as read_generators
    from stages.generation.registry import weights_problems
    from stages.sources.readers import coco_problems

    found: list[str] = []
    backbones, generators = read_backbones(backbone_registry), read_generators(generator_registry)
    made = setting.generate_generators
    found += [_unknown("generator", a, "generate.generators", set(generators), generator_registry)
              for a in made if a not in generators]
    wanted_backbones = {"model.backbone": [setting.model_backbone], "embed.backbones": setting.embed_backbones}
    for param, aliases in wanted_backbones.items():
        found += [_unknown("backbone", a, param, set(backbones), backbone_registry)
                  for a in aliases if a not in backbones]
    found += import_problems(setting)
    found += bootstrap_problems(setting)
    sets = setting.children_sets
    for param, aliases in {"model.generators": setting.model_generators,
                           "code_train.data.generators": setting.code_train_generators,
                           "code_eval.data.generators": setting.code_eval_generators,
                           "code_eval.data.fit": setting.code_eval_fit}.items():
        found += [f"{param}: children set {a!r} is not in children.sets (now {sets}), the sets the pipeline makes "
                  "and embeds; add it there (and to generate.generators or import_children.sets)"
                  for a in aliases if a not in sets]

    found += code_eval_problems(setting) + benchmark_problems(setting)
    if setting.source == "coco":
        found += coco_problems(setting.input_path, setting.coco_captions, setting.karpathy_split)
    elif not setting.input_path.exists():
        found.append(f"clusters.input: {setting.input_path} does not exist (the {setting.source} source's "
                     f"{'folder' if setting.source == 'demo' else 'manifest file'})")

    for alias in dict.fromkeys(made):
        if alias in generators and alias not in built:
            found += weights_problems(generators[alias], setting.models_root)
    for alias in dict.fromkeys(a for aliases in wanted_backbones.values() for a in aliases):
        if alias in backbones:
            problem = weights_problem(backbones[alias])
            found += [problem] if problem else []
    return found


# fewer resamples than this cannot place the 2.5 % and 97.5 % quantiles of a 95 % interval on a resample each
MIN_RESAMPLES = 40


def bootstrap_problems(setting: Setting) -> list[str]:
    """The bootstrap's params (docs/intervals.md): enough resamples for a 95 % interval, a seed >= 0."""
    found = []
    if setting.bootstrap_resamples < MIN_RESAMPLES:
        found.append(f"bootstrap.resamples: {setting.bootstrap_resamples}; a 95 % interval needs at least "
                     f"{MIN_RESAMPLES} resamples (1000 is the usual choice)")
    if not 0 <= setting.bootstrap_seed < 2**63:
        found.append(f"bootstrap.seed: {setting.bootstrap_seed}; expected a whole number in [0, 2^63)")
    return found


def benchmark_problems(setting: Setting) -> list[str]:
    """Each benchmark set's duplicates rule (stages.external.scoring.Duplicates), where it gives one."""
    return [f"benchmark.sets.{name}.duplicates: {rule!r} is not one of {list(DUPLICATE_RULES)}"
            for name, rule in setting.benchmark_duplicates if rule not in DUPLICATE_RULES]


def code_eval_problems(setting: Setting) -> list[str]:
    """code_eval's protocol, released subsample size and threshold rule (stages.code.heads)."""
    from stages.code.heads import EvalProtocol, ThresholdRule

    found = []
    for param, value, kind in (("code_eval.protocol", setting.code_eval_protocol, EvalProtocol),
                               ("code_eval.threshold", setting.code_eval_threshold, ThresholdRule)):
        if value not in kind.__members__:
            found.append(f"{param}: {value!r} is not one of {list(kind.__members__)}")
    size = setting.code_eval_released_fit_images
    if not size.isdigit() or int(size) < 1:
        found.append(f"code_eval.released_fit_images: {size!r} is not a positive whole number of train images "
                     "(the released evaluation's is 9600)")
    return found


IMPORT_KEYS = ("layout", "root", "generator")
# stages.external.scoring.Duplicates' values, named here so the check does not import the scoring stack (a test
# keeps the two in step)
DUPLICATE_RULES = ("error", "exclude")
NAME = re.compile(r"^[A-Za-z0-9_]+$")
RESERVED = ("parents", "captions")  # data/embeddings/<backbone>/{parents,captions}.h5 (the embed stage refuses them)


def import_problems(setting: Setting) -> list[str]:
    """children.sets against what generate and import_children make, and each import's entry."""
    from stages.importing.layouts import Layout

    found = []
    made, imported = set(setting.generate_generators), setting.imports
    for name in dict.fromkeys(setting.children_sets):
        if name not in made and name not in imported:
            found.append(f"children.sets: {name!r} is made by neither generate.generators (now "
                         f"{setting.generate_generators}) nor import_children.sets (now {sorted(imported)}); add "
                         "it to one of them, or drop it from children.sets")
    for name in sorted(made & set(imported)):
        found.append(f"{name!r} is in both generate.generators and import_children.sets: two stages would write "
                     f"data/children/{name}; keep it in one (or rename the import)")
    for name, entry in imported.items():
        where = f"import_children.sets.{name}"
        if not NAME.match(name):
            found.append(f"{where}: the name may hold only letters, digits and _ (it names a folder and options)")
        if name in RESERVED:
            found.append(f"{where}: {name!r} is the name of the parents' or captions' embedding cache; rename it")
        missing, unknown = [k for k in IMPORT_KEYS if k not in entry], sorted(set(entry) - set(IMPORT_KEYS))
        if missing or unknown:
            found.append(f"{where}: expected the keys {list(IMPORT_KEYS)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
        layout = entry.get("layout")
        if layout is not None and layout not in Layout.__members__:
            found.append(f"{where}.layout: {layout!r} is not a layout; expected one of {list(Layout.__members__)}")
        root = entry.get("root")
        if root is not None and not Path(root).exists():
            found.append(f"{where}.root: {root} does not exist; download the set there or point root at it "
                         "(docs/stages/import_children.md)")
    return found


def parse_dicts(extra: list[str], names: tuple[str, ...] = ("imports", "benchmarks")) -> dict[str, dict]:
    """The dict params DVC renders as `--<dict>.<name>.<key> <value>` pairs (import_children.sets as --imports,
    benchmark.sets as --benchmarks): {dict: {name: {key: value}}}, a key given twice (a list) keeping its last
    value (the check reads names, layouts and roots only). Anything else is an error naming it."""
    found: dict[str, dict] = {name: {} for name in names}
    words = list(extra)
    while words:
        option = words.pop(0)
        parts = option.split(".")
        if len(parts) != 3 or parts[0][2:] not in names or not option.startswith("--") or not words \
                or words[0].startswith(tuple(f"--{name}." for name in names)):
            pairs = " or ".join(f"`--{name}.<name>.<key> <value>`" for name in names)
            raise InputError(option, f"no such option; the check takes {pairs} pairs (import_children.sets, "
                                     "benchmark.sets) after its declared options")
        found[parts[0][2:]].setdefault(parts[1], {})[parts[2]] = words.pop(0)
    return found


def parse_imports(extra: list[str]) -> dict[str, dict[str, str]]:
    """import_children.sets from DVC's rendering of a dict (`--imports.<name>.<key> <value>` pairs)."""
    return parse_dicts(extra, ("imports",))["imports"]


def stale_metrics(setting: Setting, metrics: Path, layout: Path) -> list[str]:
    """Metrics and plot files under `metrics` that no stage of this setting writes: left by a backbone, set or
    benchmark taken out of the params. The report never reads them; git still holds them until removed."""
    from stages.contracts.instances import Instances, unowned
    from stages.reporting.layout import study_stages

    instances = Instances(backbones=tuple(setting.embed_backbones), sets=tuple(setting.children_sets),
                          generated=tuple(setting.generate_generators), imported=tuple(setting.imports),
                          benchmarks=tuple(setting.benchmarks))
    return unowned(metrics.parent, instances, study_stages(layout))


def warnings(setting: Setting) -> list[str]:
    """What is allowed but probably not meant."""
    if setting.model_backbone in setting.embed_backbones:
        return [f"model.backbone {setting.model_backbone!r} is also listed in embed.backbones: it is embedded and "
                "studied twice (data/embeddings/model/ and its own folder; the report shows the model rows); drop "
                "it from embed.backbones to save the time"]
    return []


# import_children.sets and benchmark.sets are dicts DVC renders as `--imports.<name>.<key> value` (see the
# docstring); click collects those words in ctx.args and parse_dicts accepts nothing else.
CONTEXT_SETTINGS = {"ignore_unknown_options": True, "allow_extra_args": True}


@app.command(context_settings=CONTEXT_SETTINGS)
def main(
    ctx: typer.Context,
    model_backbone: str = typer.Option(..., help="model.backbone: a backbone registry alias."),
    model_generators: list[str] = typer.Option(..., help="model.generators (repeat)."),
    embed_backbones: list[str] = typer.Option(
        [], help="embed.backbones (repeat). Empty by default because DVC renders an empty YAML list as no option "
                 "at all: only model.backbone is studied."),
    generate_generators: list[str] = typer.Option(
        [], help="generate.generators (repeat). Empty by default because DVC renders an empty YAML list as no "
                 "option: every set imported."),
    children_sets: list[str] = typer.Option(..., help="children.sets (repeat): every set the stages after "
                                                      "generate and import_children read."),
    models_root: Path = typer.Option(..., help="generate.models_root: <models_root>/<alias> holds each generator."),
    code_train_generators: list[str] = typer.Option(..., help="code_train.data.generators (repeat)."),
    code_eval_generators: list[str] = typer.Option(..., help="code_eval.data.generators (repeat)."),
    code_eval_fit: list[str] = typer.Option(..., help="code_eval.data.fit (repeat)."),
    code_eval_protocol: str = typer.Option(..., help="code_eval.protocol: toolkit | released."),
    code_eval_released_fit_images: str = typer.Option(..., help="code_eval.released_fit_images: a positive integer."),
    code_eval_threshold: str = typer.Option(..., help="code_eval.threshold: val | natural."),
    source: str = typer.Option(..., help="clusters.source: demo | coco | manifest (clusters validates it)."),
    input_path: Path = typer.Option(..., "--input", help="clusters.input: the source's folder or manifest."),
    coco_captions: str = typer.Option(..., help="clusters.coco_captions: glob of caption files under --input."),
    karpathy_split: str = typer.Option(..., help="clusters.karpathy_split: Karpathy's dataset_coco.json; empty: "
                                                 "none (a seeded split)."),
    backbone_registry: Path = typer.Option(..., help="Backbone registry (stages/embedding/backbones.yaml)."),
    generator_registry: Path = typer.Option(..., help="Generator registry (stages/generation/generators.yaml)."),
    built: list[str] = typer.Option(..., help="Generators a stage of the pipeline builds (their weights are "
                                              "not looked for; repeat)."),
    metrics: Path = typer.Option(..., help="The metrics folder: files in it that no stage of this setting writes "
                                           "any more are listed (a warning; the report never reads them)."),
    layout: Path = typer.Option(..., help="The report's layout: its tables name the study stages."),
    out: Path = typer.Option(..., help="Written when everything is there (always the same text)."),
    bootstrap_resamples: int = typer.Option(..., help="bootstrap.resamples: resamples behind each 95 % interval."),
    bootstrap_seed: int = typer.Option(..., help="bootstrap.seed: seed of the resampling draws."),
    captions_per_parent: int = typer.Option(..., min=1, help="clusters.captions_per_parent: children per parent and "
                                                           "generator (the cost estimate of the COCO setting)."),
) -> None:
    """Check aliases, inputs and weights before anything long runs; list every problem in one message."""
    from stages.contracts.io import atomic_path, check_outputs

    with user_errors():
        dicts = parse_dicts(ctx.args)
    imports = dicts["imports"]
    setting = Setting(model_backbone=model_backbone, model_generators=model_generators,
                      embed_backbones=embed_backbones, generate_generators=generate_generators,
                      children_sets=children_sets, imports=imports,
                      models_root=models_root, code_train_generators=code_train_generators,
                      code_eval_generators=code_eval_generators, code_eval_fit=code_eval_fit, source=source,
                      input_path=input_path, coco_captions=coco_captions,
                      karpathy_split=Path(karpathy_split) if karpathy_split else None,
                      benchmarks=tuple(dicts["benchmarks"]), bootstrap_resamples=bootstrap_resamples,
                      bootstrap_seed=bootstrap_seed, code_eval_protocol=code_eval_protocol,
                      benchmark_duplicates=tuple((name, entry["duplicates"]) for name, entry in
                                                 dicts["benchmarks"].items() if "duplicates" in entry),
                      code_eval_released_fit_images=code_eval_released_fit_images,
                      code_eval_threshold=code_eval_threshold)
    with user_errors():
        check_outputs(writes=[out], reads=[input_path, karpathy_split, backbone_registry, generator_registry,
                                           layout])
        found = problems(setting, backbone_registry, generator_registry, set(built))
        if found:
            listing = "\n".join(f"  {i}. {problem}" for i, problem in enumerate(found, 1))
            things = "1 thing the pipeline needs is" if len(found) == 1 else \
                f"{len(found)} things the pipeline needs are"
            raise InputError("params.yaml", f"{things} missing or wrong; nothing has run:\n{listing}\n")
        for warning in warnings(setting):
            print(f"warning: {warning}", file=sys.stderr)
        stale = stale_metrics(setting, metrics, layout)
        if stale:
            listing = "".join(f"\n  {name}" for name in stale)
            print(f"warning: {len(stale)} files under {metrics} are written by no stage of these params (a backbone, "
                  f"children set or benchmark taken out); the report does not read them. Remove them from git: "
                  f"git rm {' '.join(stale)}{listing}", file=sys.stderr)
        with atomic_path(out) as tmp:
            tmp.write_text(PASSED)
        if setting.source == "coco":
            typer.echo(paper_estimate(setting, captions_per_parent, backbone_registry, generator_registry))
    typer.echo(f"{out}: {PASSED.strip()}")


def paper_estimate(setting: Setting, captions_per_parent: int, backbone_registry: Path,
                   generator_registry: Path) -> str:
    """The cost of the COCO setting (stages.compute.cost): its generators, backbones (model.backbone first) and
    children sets at COCO's 123,287 parents, CoDE at the paper's recipe (150 epochs at 224 px: what the check
    is not given; early stopping makes it an upper bound)."""
    from stages.compute import cost

    rows = cost.estimate(cost.Scale(captions_per_parent=captions_per_parent),
                         generators=cost.generators_of(setting.generate_generators, generator_registry),
                         backbones=cost.backbones_of([setting.model_backbone, *setting.embed_backbones],
                                                     backbone_registry),
                         children_sets=len(setting.children_sets), code=cost.Code())
    return ("The paper's setting (COCO) costs about this on A100/H100-class GPUs (assumed rates: "
            "stages/compute/cost.py; measure yours with benchmarks/gpu_check.py; `parentage estimate --help`):\n"
            + cost.table(rows))


if __name__ == "__main__":
    app()
