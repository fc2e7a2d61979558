"""Declarative configuration: sources, recipe, thresholds and costs, as YAML validated by pydantic (`extra="forbid"`).

The bundled YAML files next to this module are the embedded default. Paths inside a sources file are resolved
relative to that file, so a config directory can be moved as a whole. Nothing here reads the environment: the
caller (`curation_assets.defs`, the `curation` CLI, through `settings.Settings`) says which files to load.
Every problem `load_config` finds is reported at once as a `ConfigError`, one line per problem:
`<file>: <key.path>: <message>` (see errors.py). Nothing here imports dagster, boto3 or `resources`.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation_assets.config.errors import ConfigError, KeyedValueError, did_you_mean, line, short, validation_lines
from curation_assets.config.tokenizer import TokenizerSpec, resolve_tokenizer
from curation_assets.config.url_lists import url_list_digests, url_list_problems
from curation_assets.core.decontam import DecontamParams
from curation_assets.core.dedup import DedupParams
from curation_assets.core.filtering import FilterParams
from curation_assets.core.quality import TrainingParams
from curation_assets.core.readers import ReaderParams
from curation_assets.core.synthesis import SynthParams
from curation_assets.core.tokens import TokenizeParams

CONFIG_DIR = Path(__file__).parent
DEFAULT_SOURCES = CONFIG_DIR / "sources.yaml"
DEFAULT_RECIPE = CONFIG_DIR / "recipe.yaml"
DEFAULT_THRESHOLDS = CONFIG_DIR / "thresholds.yaml"
DEFAULT_COSTS = CONFIG_DIR / "costs.yaml"

# S3 Express One Zone directory buckets carry their AZ ID in the name: `name--use1-az4--x-s3`.
S3_EXPRESS = re.compile(r"^s3://(?P<base>[a-z0-9][a-z0-9-]*?)--(?P<zone_id>[a-z0-9]+-az\d+)--x-s3(/|$)")


def is_url(path: str) -> bool:
    """A URL (`s3://...`), not a local path: config files name both; the stores decide what a URL means."""
    return "://" in path


def zone_of(uri: str) -> str | None:
    """The AZ ID of an S3 Express One Zone directory bucket, read off its name; None for anything else."""
    m = S3_EXPRESS.match(uri)
    return m["zone_id"] if m else None


Format = Literal["auto", "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "warc"]
# A source name is also a partition key and a path component: no separator, no dot segment, no glob character.
SOURCE_NAME = r"[a-z0-9][a-z0-9_-]*"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def version_of(*models: Any) -> str:
    """Short content hash of config objects: the `code_version` of the assets they drive."""
    payload = json.dumps(
        [m.model_dump(mode="json") if isinstance(m, BaseModel) else m for m in models], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


class Location(Strict):
    """Where a source's bytes live, for the cost guard: `region` (None = the compute region), `zone` (AZ ID of zonal
    storage; S3 Express directory buckets carry it in their name, so it can stay None for them) and `via`, the
    network path from the pods (`gateway`: an S3 gateway VPC endpoint, free; `nat`: a NAT gateway, billed per GB)."""

    region: str | None = None
    zone: str | None = Field(default=None, pattern=r"^[a-z0-9]+-az\d+$")
    via: Literal["gateway", "nat"] = "gateway"


class Source(Strict):
    name: str = Field(pattern=f"^{SOURCE_NAME}$")
    uris: list[str] = Field(min_length=1, description="local paths, globs or s3:// URIs; relative = to the YAML file")
    format: Format = "auto"
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    html: bool = False  # every record is HTML; otherwise a record is HTML when meta.content_type says so
    licence: str
    location: Location = Location()

    @field_validator("uris", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def zones(self) -> set[str]:
        """AZ IDs the source's bytes live in: the declared zone, else the zones in its directory buckets' names."""
        return {self.location.zone} if self.location.zone else {z for u in self.uris if (z := zone_of(u))}


class LandingZone(Strict):
    """A directory or `s3://bucket/prefix` where new sources land as subdirectories: `<uri>/<source>/<shard>`.

    The `landing_<name>` sensor registers each new subdirectory as a `source` partition and re-curates a source when
    new shards land in it; the source's other settings come from this template.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    uri: str
    format: Format = "auto"
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    html: bool = False
    licence: str
    location: Location = Location()

    def source(self, name: str, uri: str) -> "Source":
        """The source landed as `<uri>/<name>/`; `name` is untrusted (a partition key), so it is checked first."""
        check_source_name(name)
        fields = self.model_dump(exclude={"name", "uri"})
        return Source(name=name, uris=[f"{uri.rstrip('/')}/{name}/*"], **fields)


def check_source_name(name: str) -> None:
    """Refuse a name that could not be a configured source's (`../etc`, `a/b`, `/abs`, `*`) before it names a path."""
    if not re.fullmatch(SOURCE_NAME, name):
        raise ValueError(f"{name!r} is not a valid source name ({SOURCE_NAME}): refused before any path is built")


class SourcesFile(Strict):
    sources: list[Source] = Field(min_length=1)
    landing_zones: list[LandingZone] = []

    @model_validator(mode="after")
    def _unique(self) -> SourcesFile:
        names = [s.name for s in self.sources]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise KeyedValueError(("sources", i, "name"), f"duplicate source name {name!r}")
        return self


class Recipe(Strict):
    """A mixture: components, how their token weights are chosen, how big it is, and how it is tokenized.

    A component is a source's curated documents (`web`) or the synthetic set generated from it (`web.synthetic`).
    Weights are token shares, never document shares. `sampling`:
    - `manual`: `weights` gives each component's token share (normalised to 1);
    - `temperature`: share ∝ available_tokens ** `alpha` over `components` (mT5 used alpha = 0.3);
    - `unimax`: the `target_tokens` budget spread as uniformly as possible over `components`, each capped at its
      epoch cap, leftovers going to the larger ones (Chung et al. 2023, arXiv 2304.09151).
    No component repeats more than its epoch cap (`epoch_caps`, else `max_epochs`; default 4: up to ~4 epochs are
    worth about as much as fresh data, Muennighoff et al. 2023).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    sampling: Literal["manual", "temperature", "unimax"] = "manual"
    # YAML key `weights`; the attribute `weights` is the per-source view (see the property)
    component_weights: dict[str, float] = Field(default_factory=dict, alias="weights")
    components: list[str] = Field(default_factory=list, description="temperature / unimax: the components to mix")
    alpha: float = Field(default=0.3, gt=0, description="temperature exponent: share ∝ tokens ** alpha")
    target_tokens: int | None = Field(
        default=None,
        gt=0,
        description="None = the largest mixture that honours the weights without repeating a component",
    )
    max_epochs: float = Field(default=4.0, gt=0, description="default cap on how often one component's tokens repeat")
    epoch_caps: dict[str, float] = Field(default_factory=dict, description="per-component epoch caps")
    tolerance: float = Field(default=0.01, gt=0, lt=1, description="allowed |realized - target| token share")
    seed: int = 0
    tokenizer: str = Field(
        default="cl100k_base",
        description="a tiktoken encoding name, or the path of a Hugging Face tokenizer.json (relative = to the recipe)",
    )
    eos_token: str | None = Field(
        default=None, description="tokenizer.json only: the special token that ends each document (default: its own)"
    )
    sequence_length: int = Field(default=2048, gt=0)

    @field_validator("component_weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w <= 0 for w in v.values()):
            raise ValueError("weights must be > 0 (leave a component out instead)")
        return v

    @model_validator(mode="after")
    def _components(self) -> Recipe:
        names = self.component_names()
        if self.sampling == "manual" and (not self.component_weights or self.components):
            raise KeyedValueError(
                ("components" if self.components else "weights",),
                "sampling: manual takes `weights` (token share per component), not `components`",
            )
        if self.sampling != "manual" and (self.component_weights or not self.components):
            raise KeyedValueError(
                ("weights" if self.component_weights else "components",),
                f"sampling: {self.sampling} takes `components` (weights come from the data), not `weights`",
            )
        if self.sampling == "unimax" and self.target_tokens is None:
            raise KeyedValueError(("target_tokens",), "sampling: unimax needs target_tokens (the budget it spreads)")
        key = "weights" if self.sampling == "manual" else "components"
        bad = [c for c in names if not re.fullmatch(rf"{SOURCE_NAME}(\.synthetic)?", c)]
        if bad or len(set(names)) != len(names):
            raise KeyedValueError(
                (key,), f"components are `<source>` or `<source>.synthetic`, once each: {short(bad or names)}"
            )
        if set(self.epoch_caps) - set(names) or any(v <= 0 for v in self.epoch_caps.values()):
            raise KeyedValueError(
                ("epoch_caps",), f"epoch_caps must be > 0 and name components of the recipe: {short(self.epoch_caps)}"
            )
        return self

    def component_names(self) -> list[str]:
        return sorted(self.component_weights) if self.sampling == "manual" else sorted(self.components)

    def sources(self) -> set[str]:
        return {c.split(".", 1)[0] for c in self.component_names()}

    def epoch_cap(self, component: str) -> float:
        return self.epoch_caps.get(component, self.max_epochs)

    def normalised_weights(self) -> dict[str, float]:
        """Manual token share per component, summing to 1 (empty for data-driven sampling)."""
        total = sum(self.component_weights.values())
        return {c: w / total for c, w in sorted(self.component_weights.items())}

    @property
    def weights(self) -> dict[str, float]:
        """Per-source view: each source's manual share (its components summed), NaN where sampling decides the share
        from the data. Its keys are the sources the recipe needs (what the cross-file validation reads)."""
        out = dict.fromkeys(sorted(self.sources()), float("nan") if self.sampling != "manual" else 0.0)
        for c, w in self.normalised_weights().items():
            out[c.split(".", 1)[0]] += w
        return out


class RecipeFile(Strict):
    recipe: Recipe


class PodSize(Strict):
    """Requests of a step's pod under the k8s executor (memory is also the limit: the scheduler must not overcommit
    a step that holds a partition in memory; CPU has no limit, so idle cores are used)."""

    cpu: str = Field(default="1", pattern=r"^\d+(\.\d+)?m?$")
    memory: str = Field(default="4Gi", pattern=r"^\d+(Ki|Mi|Gi|Ti)$")


class Step(Strict):
    """Settings every step has: the `pod` size of its Kubernetes step (not part of its code_version)."""

    pod: PodSize = PodSize()

    @field_validator("pod", "default", "per_source", mode="before", check_fields=False)
    @classmethod
    def _empty_is_default(cls, v: Any) -> Any:
        """`default:` followed only by commented keys (as the bundled file shows them) is YAML null: the defaults."""
        return {} if v is None else v

    def data_params(self) -> dict[str, Any]:
        """What changes the step's output (its code_version input): everything but the pod size."""
        return self.model_dump(mode="json", exclude={"pod"}, exclude_unset=False)


class DropRateStep(Step):
    """`max_drop_rate` is the blocking `drop_rate` check's bound: a step that suddenly drops more than this share of
    its input is far more likely broken (a bad model, a schema change) than right, so the run stops before it spends
    more."""

    max_drop_rate: float = Field(default=1.0, ge=0, le=1)


class PerSourceStep(DropRateStep):
    """A per-source step's params: `default` for every source, `per_source` overrides merged key by key on top (only
    the keys an override sets). Every override is validated when the config loads, merged onto the default, so a
    typo or a bad combination fails at load with its key path, not when that partition runs. Overrides for sources
    absent from the sources file are validated too but unused, so one thresholds file can serve several source
    lists. Subclasses type `default` and `per_source` with the step's params model."""

    default: BaseModel
    per_source: dict[str, BaseModel] = {}

    @field_validator("per_source", mode="before")
    @classmethod
    def _empty_override(cls, v: Any) -> Any:
        """`web:` with every override commented out is YAML null: no override."""
        return {k: ({} if o is None else o) for k, o in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _merged_overrides_valid(self) -> "PerSourceStep":
        for source in self.per_source:
            try:
                self.for_source(source)
            except ValidationError as e:
                err = e.errors()[0]
                raise KeyedValueError(
                    ("per_source", source, *err["loc"]),
                    f"merged onto default: {err['msg'].removeprefix('Value error, ')}",
                ) from None
        return self

    def for_source(self, source: str) -> Any:
        """The step's params for `source`: the default with the source's override on top."""
        own = self.per_source.get(source)
        if own is None:
            return self.default
        merged = {**self.default.model_dump(), **own.model_dump(exclude_unset=True)}
        return type(self.default).model_validate(merged)

    def data_params(self, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """What changes the step's output: the bound of its check, every source's params (but `exclude`d ones)."""
        return {
            "max_drop_rate": self.max_drop_rate,
            "default": self.default.model_dump(mode="json", exclude=set(exclude)),
            "per_source": {
                s: o.model_dump(mode="json", exclude_unset=True, exclude=set(exclude))
                for s, o in sorted(self.per_source.items())
            },
        }


class RawThresholds(PerSourceStep):
    default: ReaderParams = ReaderParams()
    per_source: dict[str, ReaderParams] = {}


class QualityModelThresholds(Step):
    """One model over its reference and background sources: no per-source params."""

    default: TrainingParams = TrainingParams()


class FilteredThresholds(PerSourceStep):
    default: FilterParams = FilterParams()
    per_source: dict[str, FilterParams] = {}


class DedupedThresholds(PerSourceStep):
    default: DedupParams = DedupParams()
    per_source: dict[str, DedupParams] = {}

    @model_validator(mode="after")
    def _one_signature_scheme(self) -> "DedupedThresholds":
        for source in self.per_source:
            if self.for_source(source).signature_version != self.default.signature_version:
                raise KeyedValueError(
                    ("per_source", source),
                    f"the override of {source!r} changes the signature params (num_perm, ngram, seed, normalize): "
                    "dedup_clusters compares signatures across sources, so there is one set",
                )
        return self


class DecontamIndexThresholds(Step):
    """One index over every eval set: no per-source params (`deduped` applies it to every source)."""

    default: DecontamParams = DecontamParams()


class SyntheticThresholds(PerSourceStep):
    default: SynthParams = SynthParams()
    per_source: dict[str, SynthParams] = {}


class TokenizedThresholds(Step):
    default: TokenizeParams = TokenizeParams()


class Freshness(Strict):
    """Freshness of the mixture: the FreshnessPolicy windows of `mixed`/`tokenized`, and how old a source's curated
    output may be when `mixed` reads it (its blocking `sources_fresh` check refuses to mix an older one)."""

    warn_hours: float = Field(default=36, gt=0)
    fail_hours: float = Field(default=48, gt=0)
    max_source_age_hours: float | None = Field(default=48, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Freshness":
        if self.warn_hours >= self.fail_hours:
            raise KeyedValueError(("warn_hours",), f"freshness: warn_hours must be < fail_hours ({self.fail_hours:g})")
        return self


class ThresholdsFile(Strict):
    raw: RawThresholds = RawThresholds()
    quality_model: QualityModelThresholds = QualityModelThresholds()
    filtered: FilteredThresholds = FilteredThresholds()
    deduped: DedupedThresholds = DedupedThresholds()
    decontam_index: DecontamIndexThresholds = DecontamIndexThresholds()
    synthetic: SyntheticThresholds = SyntheticThresholds()
    mixed: Step = Step()
    tokenized: TokenizedThresholds = TokenizedThresholds()
    freshness: Freshness = Freshness()

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, v: Any) -> Any:
        """A step whose keys are all commented out (`mixed:` then comments) is YAML null: its defaults."""
        return {k: ({} if o is None else o) for k, o in v.items()} if isinstance(v, dict) else v


PathClass = Literal["local", "same_zone", "regional_gateway", "regional_nat", "cross_az", "cross_region"]


class Costs(Strict):
    """Price table (USD per GB by path class) and budgets of the cost guard."""

    usd_per_gb: dict[PathClass, float]
    nat_usd_per_gb: float = Field(ge=0)
    budget_usd: float = Field(gt=0)
    step_budgets_usd: dict[str, float] = {}

    @field_validator("usd_per_gb")
    @classmethod
    def _complete(cls, v: dict[str, float]) -> dict[str, float]:
        missing = set(PathClass.__args__) - set(v)
        if missing:
            raise ValueError(f"price missing for path classes {sorted(missing)}")
        return v


class CurationConfig(Strict):
    sources: SourcesFile
    recipe: Recipe
    thresholds: ThresholdsFile
    costs: Costs
    sources_path: Path
    tokenizer: TokenizerSpec  # the recipe's tokenizer, resolved against the recipe file (config/tokenizer.py)
    thresholds_path: Path = DEFAULT_THRESHOLDS  # eval set paths are relative to its directory

    @model_validator(mode="after")
    def _recipe_sources_exist(self) -> CurationConfig:
        unknown = self.recipe.sources() - set(self.source_names)
        if unknown:
            raise ValueError(f"recipe {self.recipe.name!r} weights unknown sources: {sorted(unknown)}")
        self.quality_model_params  # raises on a model without its sources, or a cut without a model
        return self

    @property
    def quality_model_params(self) -> TrainingParams | None:
        """The params of the one (unpartitioned) quality model, or None when the sources config has no source of one
        of its classes (a config without e.g. any reference source has no model: `filtered` then records no
        `quality_score`, and a quality cut in it is a config error). A class whose sources are only partly configured
        is an error too."""
        params = self.thresholds.quality_model.default
        configured = set(self.source_names)
        if not all(set(c) & configured for c in (params.reference, params.background)):
            cuts = [
                s
                for s in self.source_names
                if (own := self.thresholds.filtered.for_source(s)).quality_keep_fraction is not None
                or own.min_quality_score is not None
            ]
            if cuts:
                raise ValueError(
                    f"filtered of {cuts} cuts by quality score, but quality_model has no sources of a class"
                )
            return None
        unknown = set(params.reference + params.background) - configured
        if unknown:
            raise ValueError(f"quality_model names sources that are not configured: {sorted(unknown)}")
        return params

    @property
    def dedup_params(self) -> DedupParams:
        """The one parameter set of cross-source dedup: the `deduped` default, with the sources file order as the
        default priority (per-source overrides may not change signatures: checked when the thresholds load)."""
        params = self.thresholds.deduped.default
        return params if params.priority else params.model_copy(update={"priority": tuple(self.source_names)})

    @functools.cached_property
    def eval_files(self) -> dict[str, list[str]]:
        """The files of each eval set of `decontam_index` (`eval_set_files`), listed once per config."""
        return eval_set_files(self.thresholds, self.thresholds_path.parent)[0]

    @functools.cached_property
    def url_list_digests(self) -> dict[str, str | None]:
        """Content hash of the URL lists of `filtered`'s default and per-source params (`url_lists.url_list_digests`),
        read once per config: every `asset_versions` call (the definitions, `curation run`, each source's
        fingerprint) reads it."""
        return url_list_digests(self)

    @functools.cached_property
    def eval_set_digests(self) -> dict[str, list[str]]:
        """sha256 of each of `eval_files`: with its config, the `decontam_index` version, so editing an eval file
        re-runs exactly the index and what follows it."""
        return {name: [file_sha256(f) for f in found] for name, found in self.eval_files.items()}

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources.sources]

    def source(self, name: str, landed_in: str | None = None) -> Source:
        """A configured source, or one that landed in the landing zone `landed_in` (see LandingZone)."""
        for s in self.sources.sources:
            if s.name == name:
                return s
        zone = next((z for z in self.sources.landing_zones if z.name == landed_in), None)
        if zone is None:
            raise KeyError(f"source {name!r} is neither configured nor in a landing zone")
        return zone.source(name, self.resolve_uri(zone.uri))

    def resolve_uri(self, uri: str) -> str:
        """An absolute path or URL as written; a relative path against the sources file's directory.

        `..` may leave that directory: the sources file is the operator's reviewed configuration (the bundled one
        reaches `../sample`), so what it names is trusted. Untrusted names (partition keys, landed files) are
        contained where they are used: `LandingZone.source` and `raw.landed_outside`.
        """
        if is_url(uri) or Path(uri).is_absolute():
            return uri
        return str((self.sources_path.parent / uri).resolve())


FILES = {  # kind: (bundled default, the model of the file's top level)
    "sources": (DEFAULT_SOURCES, SourcesFile),
    "recipe": (DEFAULT_RECIPE, RecipeFile),
    "thresholds": (DEFAULT_THRESHOLDS, ThresholdsFile),
    "costs": (DEFAULT_COSTS, Costs),
}


# Config files are small: a larger file is refused unread, and so is one whose aliases (`*name`) would expand it past
# MAX_CONFIG_NODES - how a 574-byte "billion laughs" file becomes gigabytes once anything walks it. Aliases as
# `yaml.safe_dump` writes them for shared objects expand to a few nodes and still load.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 1_000_000


def _expanded_nodes(root: yaml.Node, limit: int) -> int | None:
    """How many nodes the document has with every alias expanded (memoized over the node graph, so linear in the
    file), or None past `limit` or on a recursive alias."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = [] if isinstance(node, yaml.ScalarNode) else node.value
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in children for n in pair]
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            open_.discard(id(node))
            if sizes[id(node)] > limit:
                return None
            continue
        if id(node) in open_:  # an alias to an enclosing node
            return None
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    """(the parsed document, []) or (None, one problem line): missing, unreadable, too large (in bytes, or in nodes
    once its aliases are expanded), not YAML, not a mapping."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            return None, [line(path, "", f"larger than {MAX_CONFIG_BYTES:,} bytes: not a config file")]
        loader = yaml.SafeLoader(raw.decode("utf-8"))
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_nodes(node, MAX_CONFIG_NODES) is None:
                message = f"its aliases (*name) expand past {MAX_CONFIG_NODES:,} nodes or refer to themselves"
                return None, [line(path, "", message)]
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except FileNotFoundError:
        return None, [line(path, "", "file not found")]
    except IsADirectoryError:
        return None, [line(path, "", "is a directory, not a YAML file")]
    except OSError as e:
        return None, [line(path, "", f"cannot read: {e.strerror or e}")]
    except UnicodeDecodeError as e:
        return None, [line(path, "", f"not UTF-8 text (byte {e.start})")]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        return None, [line(path, where, f"YAML syntax error: {what}")]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return None, [line(path, "", f"expected a mapping of keys, got a {type(data).__name__}")]
    return data, []


def _recipe_problems(recipe: Recipe, recipe_path: Path, names: list[str], sources_path: Path) -> list[str]:
    """A recipe component whose source the sources file does not define (both files named)."""
    out = []
    for i, component in enumerate(recipe.component_weights if recipe.sampling == "manual" else recipe.components):
        source = component.split(".", 1)[0]
        if source not in names:
            key = f"recipe.weights.{component}" if recipe.sampling == "manual" else f"recipe.components[{i}]"
            hint = did_you_mean(source, names)
            out.append(line(recipe_path, key, f"source {source!r} is not defined in {sources_path}{hint}"))
    return out


def _quality_problems(t: ThresholdsFile, path: Path, names: list[str], sources_path: Path) -> list[str]:
    """What `CurationConfig.quality_model_params` refuses, with key paths: a class only partly configured, or a
    quality cut when a class has no configured source (then there is no model)."""
    params, configured = t.quality_model.default, set(names)
    classes = {"reference": params.reference, "background": params.background}
    absent = [c for c, members in classes.items() if not set(members) & configured]
    if absent:
        cuts = []  # the key that sets each configured source's cut: its override's, else the default's
        for s in names:
            own = t.filtered.per_source.get(s)
            for key in ("quality_keep_fraction", "min_quality_score"):
                if getattr(t.filtered.for_source(s), key) is not None:
                    overridden = own is not None and key in own.model_fields_set
                    cuts.append(f"filtered.per_source.{s}.{key}" if overridden else f"filtered.default.{key}")
        cuts = list(dict.fromkeys(cuts))
        return [
            line(
                path,
                cut,
                f"cuts by quality score, but quality_model has no {' or '.join(absent)} source "
                f"({', '.join(sorted(set(classes[absent[0]])))}) in {sources_path}, so there is no model",
            )
            for cut in cuts
        ]
    return [
        line(path, f"quality_model.default.{cls}[{i}]", f"source {s!r} is not defined in {sources_path}")
        for cls, members in classes.items()
        for i, s in enumerate(members)
        if s not in configured
    ]


EVAL_FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")


def eval_set_files(t: ThresholdsFile, base: Path) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """The files of each eval set of `decontam_index` (each path a file or a glob, a relative one against `base`, the
    thresholds file's directory), sorted; and (key path, problem) for each path that is a URL, matches no file or a
    file of another format. Local files only: they are hashed whenever the definitions load."""
    files: dict[str, list[str]] = {}
    problems = []
    for i, eval_set in enumerate(t.decontam_index.default.eval_sets):
        found: set[str] = set()
        for j, path in enumerate(eval_set.paths):
            key = f"decontam_index.default.eval_sets[{i}].paths[{j}]"
            resolved = str(base / path)  # an absolute path stays as it is
            matched = [f for f in glob.glob(resolved) if os.path.isfile(f)]
            wrong = [f for f in matched if not f.lower().endswith(tuple(f".{x}" for x in EVAL_FORMATS))]
            if is_url(path):
                problems.append((key, f"{short(path)}: eval sets are local files (hashed when the definitions load)"))
            elif not matched:
                problems.append((key, f"{short(path)} matches no file (resolved: {short(resolved, 200)})"))
            elif wrong:
                problems.append((key, f"{short(wrong[0], 200)}: not {', '.join(EVAL_FORMATS)}"))
            found.update(matched)
        files[eval_set.name] = sorted(found)
    return files, problems


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def path_problems(cfg: CurationConfig) -> list[str]:
    """Local source paths and globs that match no file (`s3://` and other URLs are not listed here)."""
    out = []
    for source in cfg.sources.sources:
        for j, uri in enumerate(source.uris):
            if is_url(uri):
                continue
            resolved = cfg.resolve_uri(uri)
            if any(os.path.isfile(p) for p in glob.iglob(resolved)):
                continue
            key = f"sources[{source.name}].uris[{j}]"
            why = "is a directory (name its files, e.g. with /*)" if os.path.isdir(resolved) else "matches no file"
            out.append(line(cfg.sources_path, key, f"{short(uri)} {why} (resolved: {short(resolved, 200)})"))
    return out


def load_config(
    sources: str | Path | None = None,
    recipe: str | Path | None = None,
    thresholds: str | Path | None = None,
    costs: str | Path | None = None,
    *,
    check_paths: bool = False,
) -> CurationConfig:
    """Load and cross-validate the YAML files (bundled defaults where a path is None).

    Every problem of every file is collected and raised at once as a `ConfigError` (one line each, naming the file
    and key path); `check_paths` also reports local source paths and globs that match no file (`curation validate`
    does; loading the definitions does not, since files may land later).
    """
    given = {"sources": sources, "recipe": recipe, "thresholds": thresholds, "costs": costs}
    paths = {kind: Path(given[kind] or default) for kind, (default, _) in FILES.items()}
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for kind, (_, model) in FILES.items():
        data, errors = _read_yaml(paths[kind])
        problems += errors
        if errors:
            continue
        try:
            parsed[kind] = model.model_validate(data)
        except ValidationError as e:
            problems += validation_lines(paths[kind], e, model, data)
    sources_path = paths["sources"].resolve()
    names = [s.name for s in parsed["sources"].sources] if "sources" in parsed else None
    if names is not None and "recipe" in parsed:
        problems += _recipe_problems(parsed["recipe"].recipe, paths["recipe"], names, paths["sources"])
    if "recipe" in parsed:
        r = parsed["recipe"].recipe
        tokenizer, errors = resolve_tokenizer(r.tokenizer, r.eos_token, paths["recipe"])
        problems += errors
    if names is not None and "thresholds" in parsed:
        problems += _quality_problems(parsed["thresholds"], paths["thresholds"], names, paths["sources"])
    if "thresholds" in parsed:
        base = paths["thresholds"].resolve().parent
        problems += [line(paths["thresholds"], k, m) for k, m in eval_set_files(parsed["thresholds"], base)[1]]
        problems += [line(paths["thresholds"], k, m) for k, m in url_list_problems(parsed["thresholds"], base)]
    if problems:
        raise ConfigError(problems)
    try:
        cfg = CurationConfig(
            sources=parsed["sources"],
            recipe=parsed["recipe"].recipe,
            thresholds=parsed["thresholds"],
            costs=parsed["costs"],
            sources_path=sources_path,
            tokenizer=tokenizer,
            thresholds_path=paths["thresholds"].resolve(),
        )
    except ValidationError as e:  # a cross-file rule the checks above do not name yet: still one line each
        raise ConfigError(
            line(
                f"{paths['sources']} + {paths['recipe']} + {paths['thresholds']}",
                "",
                err["msg"].removeprefix("Value error, "),
            )
            for err in e.errors()
        ) from None
    if check_paths and (problems := path_problems(cfg)):
        raise ConfigError(problems)
    return cfg
