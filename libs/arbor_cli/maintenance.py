"""``arbor maintenance``: artifact checks and clean-up, metrics, and demo data."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

import grpc
import typer

from arbor_cli._common import (
    EXIT_OUTCOME,
    JsonOption,
    client,
    console,
    emit,
    err_console,
    fail,
    json_mode,
    print_json,
    table,
)
from arbor_client import ArborClientError

app = typer.Typer(
    help="Storage checks, artifact clean-up, metrics and demo data.", no_args_is_help=True
)

StoreOption = Annotated[
    str | None,
    typer.Option(help="Artifact store URI (default $ARBOR_ARTIFACT_URI or $ARBOR_HOME/artifacts)."),
]
# Top-level key prefixes whose owners can be asked (via List RPCs) whether a key is in use.
KNOWN_ROOTS = ("splits/", "models/", "experiments/")


def open_artifact_store(uri: str | None) -> Any:
    from arbor_core.artifacts import open_store
    from arbor_core.config import load_settings

    return open_store(uri or load_settings("split").artifact_uri)


def store_root_uri(store: Any) -> str:
    """The store root as a "/"-terminated URI (``file:///srv/artifacts/``, ``gs://b/p/``)."""
    return str(store.uri_for("x"))[:-1]


def key_prefix(store: Any, artifact_uri: str) -> str | None:
    """The "/"-terminated key prefix of a directory-like URI inside ``store``, else None."""
    root = store_root_uri(store)
    uri = artifact_uri
    if uri.startswith("/"):
        uri = "file://" + quote(uri)
    if root.startswith("file://"):
        root, uri = unquote(root), unquote(uri)
    uri = uri if uri.endswith("/") else uri + "/"
    if not uri.startswith(root):
        return None
    key = uri[len(root) :]
    return key if key.strip("/") else None


# --- storage-verify ----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    store: str
    checked: int = 0
    ok: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    def add(self, key: str, problem: str, message: str) -> None:
        self.problems.append({"key": key, "problem": problem, "message": message})


def _verify_key(
    store: Any, key: str, expected: str | None, scratch: Path, report: VerifyReport
) -> None:
    from arbor_core.artifacts import ChecksumMismatch
    from arbor_core.errors import NotFound

    report.checked += 1
    try:
        store.download_to(key, scratch / "blob", expected_sha256=expected)
    except ChecksumMismatch as err:
        report.add(key, err.reason, err.message)
    except NotFound:
        report.add(key, "ARTIFACT_NOT_FOUND", f"artifact {key!r} is referenced but missing")
    else:
        report.ok += 1
    finally:
        (scratch / "blob").unlink(missing_ok=True)


@app.command("storage-verify")
def storage_verify(
    ctx: typer.Context,
    artifact_uri: StoreOption = None,
    prefix: Annotated[str, typer.Option(help="Only keys under this prefix.")] = "",
    references: Annotated[
        bool,
        typer.Option(
            help="Also check the checksums splits and model versions recorded (List RPCs)."
        ),
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Re-hash every artifact and compare with its recorded SHA-256 (exit 3 on problems)."""
    store = open_artifact_store(artifact_uri)
    report = VerifyReport(store=store_root_uri(store))
    expected: dict[str, str] = {}
    if references:
        expected = _recorded_checksums(ctx, store)
    keys = store.list(prefix)
    with tempfile.TemporaryDirectory(prefix="arbor-verify-") as tmp:
        scratch = Path(tmp)
        for key in keys:
            _verify_key(store, key, expected.get(key), scratch, report)
        listed = set(keys)
        for key, sha in sorted(expected.items()):
            if key.startswith(prefix) and key not in listed:
                _verify_key(store, key, sha, scratch, report)

    def render() -> None:
        out = console()
        out.print(f"store {report.store}: {report.checked} checked, {report.ok} ok")
        if report.problems:
            t = table("problems", ["key", "problem", "message"])
            for p in report.problems:
                t.add_row(p["key"], p["problem"], p["message"])
            out.print(t)

    emit(
        ctx,
        {
            "store": report.store,
            "checked": report.checked,
            "ok": report.ok,
            "problems": report.problems,
        },
        render,
    )
    if report.problems:
        fail(
            f"{len(report.problems)} of {report.checked} artifacts failed verification",
            code="DATA_LOSS",
            reason="ARTIFACT_VERIFICATION_FAILED",
            exit_code=EXIT_OUTCOME,
        )


def _recorded_checksums(ctx: typer.Context, store: Any) -> dict[str, str]:
    """Key -> sha256 as recorded by the split parts and the model versions' bundles."""
    arbor = client(ctx)
    found: dict[str, str] = {}
    for split in arbor.split.iter_splits(show_deleted=True):
        for part in split.parts:
            if part.artifact.key and part.artifact.sha256:
                found[part.artifact.key] = part.artifact.sha256
    for model in arbor.registry.iter_models(show_deleted=True):
        for version in arbor.registry.iter_model_versions(model.model, show_deleted=True):
            base = key_prefix(store, version.artifact_uri)
            if base is None:
                continue
            for file_name, sha in version.artifact_checksums.items():
                found[base + file_name] = sha
    return found


# --- cleanup-artifacts -------------------------------------------------------------------------


def _referenced_prefixes(
    ctx: typer.Context, store: Any, reclaim_deleted: bool
) -> tuple[list[str], list[str]]:
    """Prefixes in use, and warnings. Splits and models must be listable (or we refuse);
    without the training service everything under ``experiments/`` counts as in use."""
    arbor = client(ctx)
    warnings: list[str] = []
    prefixes: list[str] = []
    for split in arbor.split.iter_splits(show_deleted=True):
        if reclaim_deleted and split.HasField("delete_time"):
            continue
        prefixes.append(f"splits/{split.split_id or split.name.split('/', 1)[-1]}/")
        prefixes.extend(p.artifact.key for p in split.parts if p.artifact.key)
    for model in arbor.registry.iter_models(show_deleted=True):
        for version in arbor.registry.iter_model_versions(model.model, show_deleted=True):
            if reclaim_deleted and version.HasField("delete_time"):
                continue
            base = key_prefix(store, version.artifact_uri)
            if base is None:
                warnings.append(f"{version.name}: artifact_uri outside this store")
            else:
                prefixes.append(base)
    try:
        for experiment in arbor.training.iter_experiments(show_deleted=True):
            if reclaim_deleted and experiment.HasField("delete_time"):
                continue
            prefixes.append(f"experiments/{experiment.experiment_id}/")
    except ArborClientError as err:
        if err.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
            raise
        warnings.append(f"training service unavailable ({err.code_name}): experiments/ kept")
        prefixes.append("experiments/")
    return prefixes, warnings


def _age_seconds(store: Any, key: str) -> float | None:
    root = getattr(store, "root", None)
    if root is None:
        return None
    try:
        return time.time() - (Path(root) / key).stat().st_mtime
    except OSError:
        return None


@app.command("cleanup-artifacts")
def cleanup_artifacts(
    ctx: typer.Context,
    apply: Annotated[bool, typer.Option("--apply", help="Delete (default: dry run).")] = False,
    artifact_uri: StoreOption = None,
    min_age_minutes: Annotated[
        float,
        typer.Option(help="Keep artifacts younger than this (a create may still be running)."),
    ] = 60.0,
    reclaim_deleted: Annotated[
        bool, typer.Option(help="Also count soft-deleted splits/versions as unreferenced.")
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Find artifacts no split, model version or experiment references; delete with --apply."""
    store = open_artifact_store(artifact_uri)
    prefixes, warnings = _referenced_prefixes(ctx, store, reclaim_deleted)
    orphans: list[dict[str, Any]] = []
    young: list[str] = []
    unknown: list[str] = []
    referenced = 0
    for key in store.list(""):
        if not key.startswith(KNOWN_ROOTS):
            unknown.append(key)
            continue
        if any(key == p or (p.endswith("/") and key.startswith(p)) for p in prefixes):
            referenced += 1
            continue
        age = _age_seconds(store, key)
        if min_age_minutes > 0 and (age is None or age < min_age_minutes * 60):
            young.append(key)
            continue
        orphans.append({"key": key, "ageSeconds": None if age is None else round(age)})
    deleted: list[str] = []
    if apply:
        for orphan in orphans:
            store.delete(orphan["key"])
            deleted.append(orphan["key"])
    result = {
        "store": store_root_uri(store),
        "applied": apply,
        "referenced": referenced,
        "orphans": orphans,
        "deleted": deleted,
        "keptYoung": young,
        "skippedUnknown": unknown,
        "warnings": warnings,
    }

    def render() -> None:
        out = console()
        for warning in warnings:
            err_console().print(f"[yellow]warning:[/yellow] {warning}")
        if orphans:
            t = table("unreferenced artifacts", ["key", "age"])
            for o in orphans:
                age = o["ageSeconds"]
                t.add_row(o["key"], "" if age is None else f"{age / 3600:.1f}h")
            out.print(t)
        verb = "deleted" if apply else "would delete (dry run; --apply deletes)"
        out.print(
            f"{result['store']}: {referenced} referenced, {len(orphans)} unreferenced, "
            f"{len(young)} kept as too young, {len(unknown)} outside known prefixes; "
            f"{verb} {len(deleted) if apply else len(orphans)}"
        )

    emit(ctx, result, render)


# --- export-metrics ----------------------------------------------------------------------------


# Processes with a metrics endpoint; the worker is reached on the training service's host.
METRICS_COMPONENTS = {
    "split": "split",
    "training": "training",
    "registry": "registry",
    "inference": "inference",
    "training-worker": "training",
}


def _address_host(address: str) -> str:
    """The host part of a service address (``host:port``, ``[v6]:port``, ``https://host``)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    if rest.startswith("["):
        return rest[: rest.index("]") + 1]
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
    return host or "127.0.0.1"


def metrics_urls(addresses: dict[str, str]) -> dict[str, str]:
    """Where each process serves Prometheus metrics: ``ARBOR_<SVC>_METRICS_URL``, else
    ``ARBOR_METRICS_URL`` (the four services), else its metrics port
    (``ARBOR_<SVC>_METRICS_PORT``, default 9464 + n as the services use; ``0``: none) on the
    host of the service's address."""
    from arbor_core.metrics import metrics_port  # a bad port value: INVALID_ARGUMENT

    urls: dict[str, str] = {}
    shared = os.environ.get("ARBOR_METRICS_URL", "").strip()
    for component, service in METRICS_COMPONENTS.items():
        variable = component.upper().replace("-", "_")
        url = os.environ.get(f"ARBOR_{variable}_METRICS_URL", "").strip()
        if not url and component == service:
            url = shared
        if not url:
            port = metrics_port(component)
            if port:
                host = _address_host(addresses.get(service, "127.0.0.1"))
                url = f"http://{host}:{port}/metrics"
        if url:
            urls[component] = url
    return urls


@app.command("export-metrics")
def export_metrics(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 3.0,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Print the Prometheus metrics each service (and the training worker) serves on its
    metrics port, with each service's health; or say clearly why none are available."""
    arbor = client(ctx)
    health = arbor.health(timeout=timeout)
    urls = metrics_urls(dict(arbor.config.addresses))
    metrics: dict[str, str] = {}
    errors: dict[str, str] = {}
    for service, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                metrics[service] = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as err:
            errors[service] = f"{url}: {err}"
    exporter = os.environ.get("ARBOR_OTEL_EXPORTER", "none") or "none"
    message = ""
    if not metrics:
        message = (
            "no metrics endpoint answered: each service serves Prometheus metrics on "
            "ARBOR_<SVC>_METRICS_PORT (defaults 9464 split, 9465 training, 9466 registry, "
            "9467 inference, 9468 training worker; 0 turns it off), or set ARBOR_METRICS_URL "
            "(or ARBOR_<SVC>_METRICS_URL) to read another endpoint; the services can also push "
            f"them through ARBOR_OTEL_EXPORTER (here {exporter!r}: 'console' or 'otlp')"
        )
    result = {
        "available": bool(metrics),
        "health": health,
        "exporter": exporter,
        "metrics": metrics,
        "errors": errors,
        "message": message,
    }

    def render() -> None:
        out = console()
        t = table("services", ["service", "health", "metrics"])
        for service, status in health.items():
            t.add_row(service, status, urls[service] if service in metrics else "no")
        if "training-worker" in metrics:
            t.add_row("training-worker", "", urls["training-worker"])
        out.print(t)
        for service, text in metrics.items():
            out.print(f"[bold]# {service}[/bold]")
            out.print(text, markup=False, highlight=False)
        for service, error in errors.items():
            err_console().print(f"[yellow]{service}:[/yellow] {error}")
        if message:
            out.print(message)

    emit(ctx, result, render)


# --- seed-demo ---------------------------------------------------------------------------------


def default_dataset() -> Path | None:
    """credit_data.parquet in ``../shared/datasets`` next to the repository, if it is there."""
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"):
        candidate = base / "credit_data.parquet"
        if candidate.is_file():
            return candidate
    return None


def manifest_entry(path: Path) -> dict[str, Any] | None:
    """The dataset's entry in a ``manifest.json`` beside it (target, task), if any."""
    manifest = path.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return None
    entries = data.get("datasets", []) if isinstance(data, dict) else data
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and (
            entry.get("file") == path.name or entry.get("name") == path.stem
        ):
            return entry
    return None


@app.command("seed-demo")
def seed_demo(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(help="A dataset file (default: ../shared/datasets/credit_data.parquet)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column (default: from manifest.json).")
    ] = None,
    rows: Annotated[int, typer.Option(help="Use only the first N rows (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 42,
    train: Annotated[
        bool, typer.Option("--train", help="Also queue a small experiment on the split.")
    ] = False,
    trials: Annotated[int, typer.Option(help="Trials for --train.")] = 5,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Create a demo split (and optionally an experiment) from a dataset file."""
    dataset = path or default_dataset()
    if dataset is None:
        raise ArborClientError.invalid_argument(
            "no dataset given and ../shared/datasets/credit_data.parquet not found", field="path"
        )
    if not dataset.is_file():
        raise ArborClientError.invalid_argument(f"no such file: {dataset}", field="path")
    entry = manifest_entry(dataset) or {}
    target = target or entry.get("target")
    if not target:
        raise ArborClientError.invalid_argument(
            f"no --target given and none in a manifest.json beside {dataset}", field="target"
        )
    classification = entry.get("task") in {"binary", "multiclass"}
    arbor = client(ctx)
    labels = {"demo": "true", "dataset": dataset.stem}
    if rows:
        from arbor_client.rows import read_table

        frame = read_table(dataset).head(rows)
        with tempfile.TemporaryDirectory(prefix="arbor-demo-") as tmp:
            sample = Path(tmp) / f"{dataset.stem}.parquet"
            frame.write_parquet(sample)
            split = arbor.split.create_split_from_file(
                sample,
                target,
                stratify=classification,
                seed=seed,
                labels=labels,
                upload="inline",
            )
    else:
        split = arbor.split.create_split_from_file(
            dataset, target, stratify=classification, seed=seed, labels=labels
        )
    result: dict[str, Any] = {"split": split}
    if train:
        result["experiment"] = arbor.training.create_experiment(
            split.name,
            n_trials=trials,
            seed=seed,
            labels=labels,
            display_name=f"{dataset.stem} demo",
        )
    if json_mode(ctx):
        print_json(result)
        return
    out = console()
    out.print(f"created {split.name} from {dataset} ({split.row_count} rows, target {target})")
    if "experiment" in result:
        out.print(
            f"queued {result['experiment'].name}; follow it with: "
            f"arbor experiments watch {result['experiment'].name}"
        )
