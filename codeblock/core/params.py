"""The configuration schema: every group of params.yaml is a dataclass, every key a field with a
default and a help string (`codeblock params` prints them all).

A key marked `volatile=True` does not change any stage's result (parallelism, progress, logging,
cache locations): it is left out of the stage hashes and of the params dvc.yaml declares, so
changing it never reruns a stage (see `codeblock.stages`). Loading and validation live in
`codeblock.core.config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


def f(default: Any, help: str, volatile: bool = False) -> Any:  # noqa: A002 - "help" reads best at call sites
    """A dataclass field with a default and a help string; volatile = never changes a result."""
    meta = {"help": help, "volatile": volatile}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PathsConfig:
    data_dir: str = f("data", "Root of every data artefact (DVC-tracked, not git).")
    raw_dir: str = f("data/raw", "Offline benchmark and training assets fetched by the set-up.")
    pool: str = f("data/pool/pool.parquet", "Canonical training pool written by `codeblock data`.")
    filtered: str = f("data/filtered/pool.parquet", "Pool kept by the filter stage.")
    filter_report: str = f("data/filtered/dropped.parquet", "Why each dropped row was dropped.")
    segments: str = f("data/segments/segments.parquet", "Coding items and prose spans per sample.")
    scores_dir: str = f("data/scores", "Per-token score cache (parquet shards).")
    labels_dir: str = f("data/labels", "Sparse labels per method (input_ids + labels).")
    models_dir: str = f("models", "Offline models and converted HF folders.")
    runs_dir: str = f("runs", "Training outputs and checkpoints.")
    reports_dir: str = f("reports", "Evaluation results, selection reports, comparisons.")


@dataclass
class ModelConfig:
    name_or_path: str = f(
        "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "Hub id, local HF folder, or .gguf file (converted once to an HF folder and cached).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = f(
        "auto", "Weights dtype; auto = bfloat16 on a GPU that supports it, float32 on CPU."
    )
    device: str = f("auto", "auto | cpu | cuda | cuda:N | mps.")
    hf_cache_dir: str = f("models/hf", "Where GGUF files are converted to HF folders (cached).", volatile=True)
    trust_remote_code: bool = f(False, "Passed to from_pretrained; keep off unless you trust the repo.")
    attn_implementation: str = f(
        "", "Attention kernel passed to from_pretrained: '' = transformers' default (sdpa), eager, sdpa, "
        "flash_attention_2 (needs the flash-attn package and a GPU). Same math, another kernel: not hashed.",
        volatile=True,
    )
    torch_threads: int = f(
        0, "CPU threads of torch in every stage that loads a model: 0 = half the CPUs this process may use "
        "(stays fast on a shared machine), n = n threads, -1 = torch's default (all cores).", volatile=True,
    )


@dataclass
class SourceConfig:
    kind: Literal["hub", "local", "offline"] = f("offline", "hub | local | offline.")
    name: str = f(
        "",
        "hub: dataset id (e.g. nvidia/OpenCodeInstruct); offline: builder name "
        "(dataframebench_train | algorithms | stdlib); local: a label for the source column.",
    )
    path: str = f("", "local: a .jsonl/.jsonl.gz/.parquet file or a saved datasets folder.")
    split: str = f("train", "Dataset split to load.")
    limit: int = f(0, "Keep at most this many rows from this source (0 = all).")
    columns: dict[str, str] = f(
        {}, "Column mapping source_column -> canonical field (id, instruction, response, ...)."
    )


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(
        default_factory=lambda: [
            SourceConfig(kind="offline", name="dataframebench_train"),
            SourceConfig(kind="offline", name="algorithms"),
            SourceConfig(kind="offline", name="stdlib", limit=300),
        ],
        metadata={"help": "Training sources, concatenated in order into the canonical pool."},
    )
    on_bad_row: Literal["error", "skip"] = f(
        "error", "error: stop at the first bad row naming file/row/field; skip: skip and count."
    )
    seed: int = f(0, "Seed for any sampling done while building the pool.")


@dataclass
class FilterConfig:
    min_test_score: float = f(1.0, "Gate on OpenCodeInstruct average_test_score (when present).")
    min_judge_score: float = f(0.0, "Gate on the mean llm_judgement score, 1-5 (when present).")
    min_quality: float = f(0.5, "Gate on the heuristic rater's score in [0,1] (rows without judges).")
    knn_k: int = f(10, "k of the long-tail score: mean(1 - cos) to the k nearest instructions.")
    keep: float = f(96, "Pairs kept after ranking: a fraction if <= 1, else a count (CPU default 96; "
                                "profiles/paper.yaml keeps all).")
    embedder: str = f("minilm", "minilm (offline all-MiniLM-L6-v2) | tfidf (sparse, to ~20K rows) | tfidf_rp "
                                  "(hashed TF-IDF, count sketch to 512 dims, for 100K+ rows on CPU) | a "
                                  "sentence-embedding model path/id.")
    embed_batch_size: int = f(64, "Batch size of the instruction embedder.", volatile=True)
    decontam_ngram: int = f(13, "Drop pairs sharing an n-gram of this many words with an eval problem.")
    decontam_benchmarks: list[str] = f(
        ["humaneval", "mbpp", "dataframebench"], "Benchmarks whose problems decontaminate the pool."
    )
    decontam_min_words: int = f(
        8, "A benchmark text shorter than decontam_ngram words is matched whole if it has at least this many."
    )
    decontam_common_problems: int = f(
        3, "An n-gram in this many problems of one benchmark is boilerplate (prompt template, imports): ignored; 0 = off."
    )
    near_dup_threshold: float = f(0.9, "Jaccard similarity (MinHash) above which a pair is a near duplicate.")
    near_dup_shingle: int = f(5, "Near-dup shingles: this many consecutive word/punctuation tokens.")
    minhash_perms: int = f(128, "MinHash permutations (LSH bands are derived from the threshold).")
    min_response_chars: int = f(40, "Heuristic rater: shortest acceptable response.")
    max_response_chars: int = f(12000, "Heuristic rater: longest acceptable response.")


@dataclass
class SegmentConfig:
    max_item_tokens: int = f(64, "A compound statement longer than this is split: header + recursed body.")
    on_error: Literal["skip_region", "drop_sample"] = f(
        "skip_region", "Syntax errors: skip the erroneous region, or drop the whole sample."
    )
    default_language: str = f("python", "Language of fences with no tag and of unfenced code.")
    workers: int = f(2, "Processes used by segmentation and data-flow analysis.", volatile=True)


@dataclass
class ScoreConfig:
    gce_q: float = f(0.7, "q of GCE_q = (1 - p^q) / q; q -> 0 recovers cross-entropy.")
    aggregate: Literal["mean", "sum", "max"] = f("mean", "How token GCE is pooled into item utility U.")
    mode: Literal["base", "excess"] = f("base", "base: GCE of the model; excess: GCE_base - GCE_ref.")
    ref_model: str = f("", "Reference model for mode=excess (empty: warm up a copy of the base model).")
    ref_warmup_samples: int = f(64, "Clean samples used to warm up the reference model.")
    ref_warmup_steps: int = f(8, "Optimizer steps of the reference warm-up (plain SFT, AdamW).")
    ref_warmup_lr: float = f(5e-5, "Learning rate of the reference warm-up.")
    batch_tokens: int = f(4096, "Token budget of a scoring batch (length-bucketed).")
    max_length: int = f(1024, "Prompt + response truncation length for scoring (paper scale: 2048).")
    shard_size: int = f(256, "Samples per cached score shard; finished shards are skipped on re-run.", volatile=True)
    seed: int = f(0, "Seed of the reference warm-up.")


@dataclass
class DataflowConfig:
    enabled: bool = f(True, "Compute Reach and Bridge; off gives Reach = Bridge = 0.")


@dataclass
class SelectConfig:
    budget: float = f(0.019, "Supervised share of all response tokens.")
    nl_share: float = f(0.2, "Share of the budget spent on informative prose tokens.")
    alpha: float = f(0.5, "Weight of Reach in the gated priority.")
    beta: float = f(0.5, "Weight of Bridge in the gated priority.")
    tau: float = f(0.5, "Gate: items whose utility percentile is below tau get priority 0.")
    scope: Literal["global", "per_sample"] = f("global", "Fill the budget globally or per sample.")
    method: str = f("codeblock", "Selection method: codeblock, a baseline name, or a variant "
                    "<method>+<select key>=<value>[+...] (e.g. codeblock+rerank=none); docs/selection.md.")
    seed: int = f(0, "Seed of random baselines.")
    rerank: Literal["both", "reach", "bridge", "none"] = f(
        "both", "Ablation: which data-flow terms rerank items (none: P = U percentile, gated by tau)."
    )
    utility: Literal["gce", "ce"] = f("gce", "Ablation: per-token score behind utility U and prose words (ce: plain CE).")
    granularity: Literal["item", "line", "token"] = f(
        "item", "Ablation: unit of code supervision (whole items, source lines of items, single tokens), same budget."
    )
    ds2_keep: float = f(0.0, "ds2 baseline: rows kept (share <= 1 or count); 0 = as many as fit in the token budget.")
    prose_recurrence_power: float = f(
        1.0, "Boilerplate discount: a prose word's score is divided by (samples holding its sentence) ** this."
    )


@dataclass
class TrainConfig:
    finetune: Literal["lora", "full"] = f("lora", "LoRA adapters or full fine-tuning.")
    lora_r: int = f(64, "LoRA rank.")
    lora_alpha: int = f(16, "LoRA alpha.")
    lora_dropout: float = f(0.1, "LoRA dropout.")
    lora_target_modules: list[str] = f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Modules that get LoRA adapters.",
    )
    lr: float = f(1e-4, "Peak learning rate.")
    lr_scheduler: str = f("linear", "transformers scheduler name (linear, cosine, constant, ...).")
    warmup_ratio: float = f(0.03, "Share of steps spent warming up.")
    epochs: float = f(1.0, "Epochs (ignored when max_steps > 0).")
    max_steps: int = f(16, "Optimizer steps; -1 = use epochs (CPU default 16; paper scale: -1, 1 epoch).")
    batch_tokens: int = f(2048, "Micro-batch size in tokens (padded length x rows).")
    grad_accum: int = f(1, "Micro-batches per optimizer step.")
    max_length: int = f(1024, "Truncation length of a training sample (paper scale: 2048).")
    precision: Literal["auto", "bf16", "fp32"] = f("auto", "auto = bf16 on a GPU that has it, else fp32.")
    gradient_checkpointing: bool = f(False, "Trade compute for activation memory.")
    seed: int = f(0, "Training seed.")
    save_steps: int = f(50, "Checkpoint every this many steps (resume picks the last).", volatile=True)
    logging_steps: int = f(1, "Log loss and throughput every this many steps.", volatile=True)
    merge: bool = f(False, "Merge LoRA weights into the base model when saving.")
    register_name: str = f(
        "codeblock-model", "MLflow registered-model name; the method is appended (codeblock-model-<method>).",
        volatile=True,
    )
    max_batch_rows: int = f(0, "Cap on rows per token-budget micro-batch (0 = only batch_tokens limits it).")
    max_grad_norm: float = f(1.0, "Gradient clipping norm (0 = no clipping).")
    weight_decay: float = f(0.0, "AdamW weight decay.")
    optim: str = f("adamw_torch", "transformers optimizer name (adamw_torch, sgd, adafactor, ...).")
    save_total_limit: int = f(2, "Checkpoints kept in runs/<method>/checkpoints (oldest deleted).", volatile=True)
    log_model: bool = f(True, "Log the saved model to MLflow and register it with the @candidate alias.", volatile=True)
    peak_tflops: float = f(
        0.0, "Peak dense TFLOP/s of one device, for the MFU metric (0 = guess from the GPU name; none on CPU).",
        volatile=True,
    )


@dataclass
class EvalConfig:
    benchmarks: list[str] = f(["humaneval", "mbpp"], "Benchmarks to evaluate (see the registry).")
    limit: int = f(20, "Evaluate only the first N problems of each benchmark (0 = all; CPU default 20).")
    n_samples: int = f(1, "Samples per problem (1 with temperature 0 = greedy pass@1).")
    temperature: float = f(0.0, "Sampling temperature; 0 = greedy.")
    top_p: float = f(0.95, "Nucleus sampling p (temperature > 0).")
    max_new_tokens: int = f(256, "Generation length limit (paper scale: 512).")
    batch_size: int = f(8, "Generation batch size.")
    backend: Literal["transformers", "vllm"] = f("transformers", "Generation backend.")
    workers: int = f(2, "Parallel sandboxed executors.", volatile=True)
    timeout_s: float = f(0.0, "Wall-clock limit per program, s (0 = the registry's per-benchmark limit); CPU limit = same.")
    memory_mb: int = f(2048, "Memory limit per program, MiB: RLIMIT_AS per process, and all its processes together in a memory cgroup where one is writable (docs/evaluation.md, The sandbox).")
    nproc: int = f(64, "Process limit per program (RLIMIT_NPROC, enforced by running it as an unprivileged uid).")
    fsize_mb: int = f(64, "Largest file a program may write (RLIMIT_FSIZE), MiB; also the size of its private /tmp.")
    sandbox_uid: int = f(60100, "As root: programs run as this uid + worker slot (no passwd entry needed).")
    isolation: Literal["auto", "namespaces", "userns", "none"] = f(
        "auto", "auto: namespaces (net, pid, mount, ipc) as root, else in a user namespace; refuses (saying how to "
        "enable them) when neither works. namespaces: the same, root only. userns: force the user-namespace "
        "mode (checkout, venv and home read-only, no capabilities). none: plain processes with rlimits "
        "(trusted code only); results and MLflow say 'unsandboxed'."
    )
    prompt_format: Literal["", "completion", "instruct"] = f(
        "", "Override every benchmark's prompt format (empty: the registry's)."
    )
    use_hub: bool = f(True, "Load a benchmark from the hub when no local file has it and the hub is reachable.")
    generations_cache: bool = f(True, "Reuse cached generations per (model hash, benchmark, decoding config).", volatile=True)
    preload: list[str] = f(
        ["numpy", "pandas"], "Modules the sandbox fork servers import once (forks inherit them): faster "
        "programs for the benchmarks checked by our own harness. Not BigCodeBench's fork servers: they import "
        "only what bigcodebench.evaluate's workers have, so each check pays its imports inside its time "
        "window, as upstream's does. Missing ones are skipped.",
        volatile=True,
    )
    humaneval_plus_path: str = f("", "Official HumanEvalPlus jsonl(.gz) (evalplus schema).")
    mbpp_plus_path: str = f("", "Official MbppPlus jsonl(.gz) (evalplus schema).")
    bigcodebench_path: str = f("", "BigCodeBench full jsonl/parquet, or empty for the hub.")
    bigcodebench_hard_path: str = f("", "BigCodeBench-Hard jsonl/parquet, or empty for the hub.")
    bigcodebench_python: str = f(
        "", "Interpreter whose fork servers run BigCodeBench programs: the evaluation venv built by "
        "`python -m codeblock.evaluate.bcb_env` (e.g. .venv-bcb/bin/python). Empty: the project's own "
        "interpreter (tasks whose libraries it lacks fail with missing_library)."
    )


@dataclass
class TrackingConfig:
    enabled: bool = f(True, "Log to MLflow.")
    tracking_uri: str = f("sqlite:///mlruns.db", "MLflow store; MLFLOW_TRACKING_URI overrides it.")
    artifact_dir: str = f("mlartifacts", "Artifact root for a new experiment in a local store.")
    experiment: str = f("codeblock", "MLflow experiment name.")
    log_system_metrics: bool = f(True, "Log CPU/GPU/memory metrics during long stages.")


@dataclass
class PipelineConfig:
    methods: list[str] = f(["codeblock", "full"], "Methods run and compared by the pipeline.")
    pool_only_methods: list[str] = f(
        ["full"], "Methods whose labels need only the pool: the flow skips filter/segment/score for them."
    )
    launcher: Literal["subprocess", "inprocess"] = f(
        "subprocess", "How a flow runs a stage: its own process (`codeblock <stage>`, memory freed between stages, "
        "multi-GPU launch prefixes) or inside the flow process (tests, debugging).", volatile=True,
    )
    launch: dict[str, str] = f(
        {}, "Per-stage launch prefix for the subprocess launcher, e.g. train: \"accelerate launch --config_file "
        "configs/accelerate/ddp.yaml\" (it must accept `-m module args`); empty = plain python.", volatile=True,
    )
    task_retries: int = f(1, "Prefect retries of a failed stage task.")
    retry_delay_s: float = f(10.0, "Seconds between Prefect retries.")
    task_timeout_s: float = f(7200.0, "Prefect timeout of one stage task, in seconds (0 = none).")
    promote_champion: bool = f(True, "After a compare run, give the best method's model the @champion alias.")
    champion_metric: str = f("pass_at_1/avg", "Metric (as in the compare table) that picks the champion.")
    compare_dir: str = f("results", "Git-tracked folder of the comparison: summary.json, compare.md and plot data.")
    dvc_commit: bool = f(
        True, "After a Prefect run without -S overrides, record its outputs in dvc.lock (`dvc commit`), "
        "so `dvc repro` finds them up to date."
    )


@dataclass
class ExperimentConfig:
    name: str = f("main", "Experiment name: cells under <dir>/<name>/, results under <compare_dir>/experiments/<name>/.")
    methods: list[str] = f(["codeblock", "full"], "Methods of the grid (select.method values); the baseline must be one.")
    seeds: list[int] = f([0, 1, 2], "Seeds of the grid: each cell sets train.seed and select.seed to one of them.")
    budgets: list[float] = f([0.019], "select.budget values of the grid (full / full_filtered ignore the budget: one cell per seed).")
    baseline: str = f("full", "The method every other one is compared with (paired differences, flips).")
    variants: dict[str, list[str]] = f(
        {}, "Named method variants usable in experiment.methods: name -> [base method, key=value, ...] "
        "(ablations, e.g. codeblock_no_rerank: [codeblock, select.alpha=0, select.beta=0]); no shared-stage keys."
    )
    dir: str = f("experiments", "Root of the per-cell labels, runs, reports and done-markers.")
    workers: int = f(1, "Cells run at once (each in its own process when > 1; the Prefect flow's concurrency limit).",
                     volatile=True)
    bootstrap_samples: int = f(10000, "Bootstrap resamples of the intervals.")
    bootstrap_seed: int = f(0, "RNG seed of the bootstrap (same resamples for every method).")
    confidence: float = f(0.95, "Confidence level of the intervals.")
    log_models: bool = f(False, "Log and register every cell's trained model in MLflow (train.log_model).", volatile=True)
    mlflow_experiment: str = f("", "MLflow experiment of the grid's runs (empty: <tracking.experiment>-grid, so "
                                   "`codeblock compare` of the pipeline never picks a cell's run).", volatile=True)


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig, metadata={"help": "Artefact locations."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The model being tuned."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training sources."})
    filter: FilterConfig = field(default_factory=FilterConfig, metadata={"help": "Stage 1."})
    segment: SegmentConfig = field(default_factory=SegmentConfig, metadata={"help": "Stage 2."})
    score: ScoreConfig = field(default_factory=ScoreConfig, metadata={"help": "Stage 3."})
    dataflow: DataflowConfig = field(default_factory=DataflowConfig, metadata={"help": "Stage 4."})
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "Stage 5."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Fine-tuning."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation."})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow."})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig, metadata={"help": "Orchestration."})
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig, metadata={"help": "Methods x seeds x budgets."})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_values(self, *keys: str) -> dict[str, Any]:
        """`group` or `group.key` -> value, for the result-changing keys among them (volatile ones
        dropped), in the order given."""
        d = self.to_dict()
        out: dict[str, Any] = {}
        for key in keys:
            group, _, leaf = key.partition(".")
            names = [leaf] if leaf else list(d[group])
            for name in names:
                if f"{group}.{name}" not in VOLATILE:
                    out[f"{group}.{name}"] = d[group][name]
        return out

    def keys_hash(self, *keys: str) -> str:
        """A short, stable hash of the result-changing values of the named groups/keys."""
        blob = json.dumps(self.result_values(*keys), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Flattened `group.key` -> value, e.g. for MLflow params."""
        out: dict[str, Any] = {}
        for g, sub in self.to_dict().items():
            for k, v in sub.items():
                out[f"{g}.{k}"] = v
        return out


def _leaf_fields():
    for g in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[g.name]
        for fl in dataclasses.fields(cls):
            yield g.name, fl


# `group.key` of every volatile field (see the module docstring).
VOLATILE: frozenset[str] = frozenset(f"{g}.{fl.name}" for g, fl in _leaf_fields() if fl.metadata.get("volatile"))


def result_keys(*keys: str) -> list[str]:
    """The dvc.yaml `params:` list for a stage reading `keys`: a group stays whole when none of
    its keys is volatile, else it is spelled out key by key without the volatile ones."""
    out: list[str] = []
    for key in keys:
        group, _, leaf = key.partition(".")
        if leaf:
            if key not in VOLATILE:
                out.append(key)
            continue
        leaves = [f"{g}.{fl.name}" for g, fl in _leaf_fields() if g == group]
        kept = [k for k in leaves if k not in VOLATILE]
        out.extend([group] if len(kept) == len(leaves) else kept)
    return out
