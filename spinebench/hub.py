"""Trained weights on the Hugging Face Hub, both ways.

``push``: :func:`build_hub_folder` writes each trained model of a weights folder as ``<model>.safetensors`` (no
pickle), the manifest of their records and a Hub model card (``README.md``: YAML front matter with ``model-index``
metrics, then per model its data kind, whether ImageNet weights were used, intended use and the not-a-medical-device
warning); :func:`push_weights` uploads that folder with ``huggingface_hub.HfApi.upload_folder``.

``pull``: :func:`resolve_weights` turns ``hf://user/name`` or ``hf://user/name@revision`` into a local folder with
``huggingface_hub.snapshot_download`` (the Hub cache, so ``HF_HUB_OFFLINE=1`` works once it is there) and checks
that it holds a manifest; a plain path must be a folder. Every weights argument of spinebench goes through it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from spinebench.errors import SpinebenchError
from spinebench.weights import MANIFEST, TrainedWeights, read_records, sha256_file, trained_records, write_record

log = logging.getLogger(__name__)

HF_PREFIX = "hf://"
#: What a weights repository holds (the pull side downloads only these).
HUB_FILES = [MANIFEST, "*.safetensors", "*.pt", "leaderboard.csv", "README.md"]
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REVISION = re.compile(r"^[\w./-]+$")


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``hf://user/name[@revision]`` -> (repo id, revision or None); SpinebenchError for anything else."""
    body = str(spec)[len(HF_PREFIX):] if str(spec).startswith(HF_PREFIX) else str(spec)
    repo, _, revision = body.partition("@")
    if not _REPO.match(repo) or (revision and not _REVISION.match(revision)) or body.endswith("@"):
        raise SpinebenchError(f"bad Hub weights {spec!r}: expected hf://user/name or hf://user/name@revision")
    return repo, revision or None


def resolve_weights(weights: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder holding ``manifest.json`` for ``weights``: a folder path, or ``hf://user/name[@revision]``
    fetched into (or found in) the Hugging Face cache. ``revision`` overrides one given in the string."""
    if str(weights).startswith(HF_PREFIX):
        repo, rev = parse_hub_spec(str(weights))
        return download_weights(repo, revision or rev)
    path = Path(weights)
    if not path.is_dir():
        raise SpinebenchError(f"weights folder {path} does not exist")
    return path


def download_weights(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of a Hub weights repository (``snapshot_download``: downloads, or with
    ``HF_HUB_OFFLINE=1`` reads the local cache); refuses one without a manifest."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SpinebenchError("huggingface_hub is not installed: pip install huggingface-hub") from None
    log.info("weights from the Hugging Face Hub repository %s%s", repo_id, f"@{revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo or revision, not cached offline: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SpinebenchError(f"cannot get weights from {repo_id}{'@' + revision if revision else ''}: "
                              f"{type(e).__name__}{': ' + msg if msg else ''}") from None
    if not (folder / MANIFEST).is_file():
        raise SpinebenchError(f"Hugging Face repository {repo_id} holds no {MANIFEST}")
    return folder


# ---------------------------------------------------------------------------------------------------- push
def build_hub_folder(weights_dir: str | os.PathLike, out: str | os.PathLike, repo_id: str | None = None,
                     leaderboard: str | os.PathLike | None = None) -> Path:
    """Write the upload folder of ``weights_dir`` into ``out``: safetensors, manifest, model card, and the
    leaderboard the demo shows (``leaderboard``, default ``weights_dir/leaderboard.csv`` when there)."""
    from safetensors.torch import save_file

    weights_dir, out = Path(weights_dir), Path(out)
    records = trained_records(weights_dir)
    if not records:
        raise SpinebenchError(f"no trained weights in {weights_dir} (nothing to push)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    pushed: list[TrainedWeights] = []
    for name, rec in records.items():
        # contiguous copies: safetensors refuses tensors that share storage
        tensors = {k: v.detach().contiguous().clone() for k, v in rec.state_dict().items()}
        hub = TrainedWeights.from_entry(name, rec.to_entry())
        hub.file = f"{name}.safetensors"
        save_file(tensors, str(out / hub.file), metadata={"model": name, "format": "pt"})
        hub.sha256 = sha256_file(out / hub.file)
        hub.folder = out
        write_record(out, hub)
        pushed.append(hub)
    board = Path(leaderboard) if leaderboard else weights_dir / "leaderboard.csv"
    if leaderboard and not board.is_file():
        raise SpinebenchError(f"leaderboard {board} does not exist")
    if board.is_file():
        shutil.copy(board, out / "leaderboard.csv")
    (out / "README.md").write_text(hub_model_card(pushed, repo_id), encoding="utf-8")
    return out


#: The Hub's task type of each spinebench task (model-index).
_HUB_TASKS = {"classification": "image-classification", "detection": "object-detection",
              "cobb": "keypoint-detection"}


def hub_model_card(records: list[TrainedWeights], repo_id: str | None = None) -> str:
    """The Hub model card: ``model-index`` with every test metric of every model, then one section per model."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from spinebench import DISCLAIMER
    from spinebench.predict.cards import data_label, model_card, pretrained_text

    results = [EvalResult(task_type=_HUB_TASKS.get(r.task, "other"),
                          task_name=f"{r.model} ({r.task})", dataset_type=data_label(r.data),
                          dataset_name=f"{data_label(r.data)} ({r.data_kind})", dataset_split="test",
                          metric_type=k, metric_name=k, metric_value=v)
               for r in records for k, v in r.metrics.items()]
    name = repo_id.split("/")[-1] if repo_id else "spinebench-weights"
    data = ModelCardData(license="apache-2.0", library_name="spinebench", model_name=name,
                         tags=["medical-imaging", "x-ray", "spine", "scoliosis", "lumbar-implant", "research-only"],
                         eval_results=results or None)
    body = [f"# {name}", "", f"**{DISCLAIMER}** Not a medical device; its outputs are not a diagnosis.", "",
            "Trained weights of spinebench models (lumbar implant and scoliosis on spine "
            "X-rays). Load them with:", "", "```python", "import spinebench as sb",
            f"model, weights = sb.load_trained({records[0].model!r}, weights=\"hf://{repo_id or 'user/name'}\")",
            "```", "", "| model | task | data | data kind | ImageNet weights | metrics |",
            "| --- | --- | --- | --- | --- | --- |"]
    body += [f"| {r.model} | {r.task} | {data_label(r.data)} | {r.data_kind} | {pretrained_text(r.pretrained)} | "
             f"{len(r.metrics)} |" for r in records]
    for r in records:
        body += ["", model_card(r.model, r), "", "All test metrics of this model:", "",
                 ", ".join(f"`{k}` = {v:.4g}" for k, v in sorted(r.metrics.items())) or "none recorded"]
    body += ["", "## Intended use", "", "Research and teaching: benchmarking spine X-ray models. Not for diagnosis, "
             "triage or any clinical decision; trained on small, largely synthetic data."]
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(body) + "\n")
    return str(card)


def push_weights(weights_dir: str | os.PathLike, repo_id: str, *, revision: str | None = None,
                 out: str | os.PathLike | None = None, dry_run: bool = False, private: bool = False,
                 token: str | None = None, leaderboard: str | os.PathLike | None = None) -> str:
    """Build the upload folder (into ``out``, else a temporary one) and upload it to ``repo_id``.

    ``dry_run`` builds the folder only (offline). Returns the folder (dry run) or the commit URL.
    """
    parse_hub_spec(repo_id)
    if dry_run and out is None:
        raise SpinebenchError("--dry-run needs --out FOLDER to write the upload folder into")
    tmp = None if out else tempfile.TemporaryDirectory(prefix="spinebench-push-")
    try:
        folder = build_hub_folder(weights_dir, out or tmp.name, repo_id, leaderboard=leaderboard)
        if dry_run:
            return str(folder)
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                                     commit_message=f"spinebench weights: {', '.join(read_records(folder))}")
        except Exception as e:  # noqa: BLE001 - network, auth, permissions: one line
            raise SpinebenchError(f"cannot push to {repo_id}: {type(e).__name__}: "
                                  f"{(str(e).strip().splitlines() or [''])[0]}") from None
        return str(getattr(info, "commit_url", info))
    finally:
        if tmp is not None:
            tmp.cleanup()


# ---------------------------------------------------------------------------------------------------- CLI
def cmd_weights_push(args) -> int:
    result = push_weights(args.dir, args.repo, revision=args.revision, out=args.out, dry_run=args.dry_run,
                          private=args.private, leaderboard=args.leaderboard)
    print(f"upload folder written to {result} (not uploaded: --dry-run)" if args.dry_run else f"pushed: {result}")
    return 0


def add_weights_command(sub) -> None:
    """``spinebench weights push DIR --repo user/name [--revision R] [--dry-run --out FOLDER]``."""
    p = sub.add_parser("weights", help="trained weights on the Hugging Face Hub")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    push = wsub.add_parser("push", help="write each model as safetensors with the manifest and a Hub model card, "
                                        "and upload them (huggingface_hub; log in with `hf auth login`)")
    push.add_argument("dir", metavar="DIR", help="trained weights folder (manifest.json + weights files)")
    push.add_argument("--repo", required=True, help="Hub model repository, user/name (created when missing)")
    push.add_argument("--revision", help="branch to push to (created when missing; default main)")
    push.add_argument("--out", metavar="FOLDER", help="write the upload folder here (kept)")
    push.add_argument("--dry-run", action="store_true", help="only build the upload folder (needs --out)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--leaderboard", metavar="CSV",
                      help="leaderboard the demo shows beside the weights (e.g. results/leaderboard.csv; default "
                           "DIR/leaderboard.csv)")
    push.set_defaults(func=cmd_weights_push)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
