"""The data check: read a site's images exactly as training will and say what would go wrong, before it does.

Training skips what it cannot use and carries on, which is right for one bad file and wrong for a site whose
labels are split by spelling, whose images are all in a codec nobody installed, or whose "class" is a macOS
metadata folder. The check decodes every listed file with the same decoder as the embedding pass, hashes its
bytes, splits the usable images with the same seeded split, and reports (docs/design.md §8):

- classes and images per class, per split;
- every skipped file with its reason, grouped by reason, each group with one example path;
- empty or near-empty classes, class imbalance;
- labels that differ only in case, spacing or punctuation;
- files with identical content, within a class and across classes (a label conflict);
- image sizes and modes; DICOM photometric interpretations and transfer syntaxes, with the package that
  decodes the ones this installation cannot.

Findings are *blocking* (training would be wrong or impossible: ``agent run`` refuses) or *warnings*. No torch:
the check runs in seconds on a site's CPU and before any model is loaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from fedmedclip.data.decode_errors import ImageDecodeError
from fedmedclip.data.dicom import has_preamble, looks_like_dicom
from fedmedclip.data.dicom_codecs import codec_status
from fedmedclip.data.imagefolder import LabeledImages
from fedmedclip.data.images import decode_image
from fedmedclip.data.splits import DEFAULT_FRACTIONS, split_indices

Severity = Literal["blocking", "warning"]
MIN_CLASS_IMAGES = 10  # fewer usable images than this in a class: its validation/test parts hold one or two
IMBALANCE_RATIO = 10.0  # largest / smallest non-empty class above this is worth a warning
MIN_TRAIN_IMAGES = 2  # what the agent needs to train at all (hospital_agent.session)
MAX_LISTED = 5  # paths named per finding; the JSON report has every skipped file
_LINE_PREFIX = re.compile(r"^line \d+: ")
_EXCEPTION_NAME = re.compile(r"[A-Z]\w*(Error|Exception)")


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable identifier for scripts: no-usable-images, label-variants, label-conflict, ...
    message: str
    paths: list[str] = field(default_factory=list)  # the first MAX_LISTED files concerned


@dataclass(frozen=True)
class SkipGroup:
    reason: str  # the reason without its per-file details (line numbers, sizes)
    count: int
    example_path: str
    example_reason: str  # one full reason, as the file's own report says it


@dataclass(frozen=True)
class TransferSyntaxCount:
    uid: str
    name: str
    files: int
    decodable: bool
    fix: str  # what to install when not decodable ("" otherwise)


@dataclass
class DataReport:
    site: str
    adapter: str
    root: str
    classes: list[str]
    listed: int  # files the adapter listed as images of a class
    usable: int  # of those, files that decode
    images_per_class: dict[str, dict[str, int]]  # class → {"total", "train", "val", "test"}
    skipped: list[tuple[str, str]]  # (path, reason): everything left out, the adapter's and the decoder's
    skipped_groups: list[SkipGroup]
    findings: list[Finding]
    sizes: dict[str, int]  # "WxH" → files (the most common ones)
    modes: dict[str, int]  # Pillow mode or DICOM photometric interpretation → files
    transfer_syntaxes: list[TransferSyntaxCount]

    @property
    def blocking(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "blocking"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        data["ok"] = not self.blocking
        return data


@dataclass(frozen=True)
class _Inspected:
    path: Path
    digest: str | None = None
    size: str | None = None
    mode: str | None = None
    syntax: str | None = None
    error: str | None = None


def check_site(
    images: LabeledImages,
    *,
    site: str,
    adapter: str,
    root: str | os.PathLike[str],
    split_seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
    decoded: Collection[str] = frozenset(),
) -> DataReport:
    """Decode, hash and inspect every listed file of ``images``; report what training would see.

    ``decoded``: content digests already known to decode (the embedding cache holds a vector for them, so the
    embedding pass decoded exactly these bytes before); such files are hashed and their header read, but not
    decoded again, which makes a restart's check cost a read and a hash per file instead of a full decode.
    """
    inspected = _inspect_all(images.paths, workers, progress, decoded)
    usable = [index for index, item in enumerate(inspected) if item.error is None]
    skipped = [(str(path), reason) for path, reason in images.skipped]
    skipped += [(str(item.path), item.error) for item in inspected if item.error is not None]
    records = [images.records[index] for index in usable]

    per_class = {name: {"total": 0, "train": 0, "val": 0, "test": 0} for name in images.classes}
    if records:
        split = split_indices([record.label for record in records], fractions, split_seed)
        for part, indices in split.parts().items():
            for index in indices:
                per_class[records[index].class_name][part] += 1
    for record in records:
        per_class[record.class_name]["total"] += 1

    findings: list[Finding] = []
    findings += _data_findings(records, per_class, skipped)
    findings += _label_variant_findings(images.classes)
    findings += _duplicate_findings([inspected[index] for index in usable], records)
    syntaxes = _syntax_counts(inspected)
    findings += _codec_findings(syntaxes, inspected)
    if skipped:
        findings.append(
            Finding(
                "warning",
                "skipped-files",
                f"{len(skipped)} file(s) left out; the report groups them by reason, --json lists each",
            )
        )
    return DataReport(
        site=site,
        adapter=adapter,
        root=str(root),
        classes=list(images.classes),
        listed=len(images.records),
        usable=len(records),
        images_per_class=per_class,
        skipped=skipped,
        skipped_groups=_group(skipped),
        findings=sorted(findings, key=lambda finding: finding.severity != "blocking"),
        sizes=dict(Counter(item.size for item in inspected if item.size).most_common(8)),
        modes=dict(Counter(item.mode for item in inspected if item.mode).most_common()),
        transfer_syntaxes=syntaxes,
    )


# --- reading every file once ------------------------------------------------------------------------------


def _inspect_all(
    paths: Sequence[Path],
    workers: int,
    progress: Callable[[int, int], None] | None,
    decoded: Collection[str] = frozenset(),
) -> list[_Inspected]:
    # Threads: Pillow and the DICOM codecs release the GIL while decoding, and file reads overlap.
    results: list[_Inspected] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd-but-readable headers; the report is our output
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, item in enumerate(pool.map(lambda path: _inspect(path, decoded), paths), start=1):
                results.append(item)
                if progress is not None:
                    progress(done, len(paths))
    return results


def _inspect(path: Path, decoded: Collection[str] = frozenset()) -> _Inspected:
    try:
        data = path.read_bytes()
    except OSError as error:
        return _Inspected(path, error=f"unreadable: {error.strerror or error.__class__.__name__}")
    digest = hashlib.sha256(data).hexdigest()
    size, mode, syntax = _header(data)
    if digest in decoded:
        return _Inspected(path, digest, size, mode, syntax)
    try:
        decode_image(data, path)  # exactly what the embedding pass does with these bytes
    except ImageDecodeError as error:
        return _Inspected(path, digest, size, mode, syntax, error=error.reason)
    return _Inspected(path, digest, size, mode, syntax)


def _header(data: bytes) -> tuple[str | None, str | None, str | None]:
    """(size, mode or photometric interpretation, DICOM transfer syntax) from the header alone."""
    if looks_like_dicom(data):
        import pydicom

        try:
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not has_preamble(data))
        except Exception:  # the decode step reports why; the header is only for statistics
            return None, None, None
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        rows, columns = getattr(dataset, "Rows", None), getattr(dataset, "Columns", None)
        size = f"{columns}x{rows}" if rows and columns else None
        photometric = getattr(dataset, "PhotometricInterpretation", None)
        return size, f"DICOM {photometric}" if photometric else None, str(syntax) if syntax else None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return f"{opened.width}x{opened.height}", opened.mode, None
    except Exception:  # the decode step reports why
        return None, None, None


# --- findings ---------------------------------------------------------------------------------------------


def _data_findings(
    records: Sequence[Any], per_class: dict[str, dict[str, int]], skipped: Sequence[tuple[str, str]]
) -> list[Finding]:
    findings: list[Finding] = []
    if not records:
        findings.append(
            Finding(
                "blocking",
                "no-usable-images",
                f"no listed file could be used ({len(skipped)} skipped); first ones: "
                + "; ".join(f"{path}: {reason}" for path, reason in skipped[:3]),
                [path for path, _ in skipped[:MAX_LISTED]],
            )
        )
        return findings
    with_images = [name for name, counts in per_class.items() if counts["total"]]
    if len(with_images) < 2:
        findings.append(
            Finding(
                "blocking",
                "too-few-classes",
                f"only {len(with_images)} class(es) have usable images ({', '.join(with_images)}); at least 2 are "
                "needed",
            )
        )
    train = sum(counts["train"] for counts in per_class.values())
    if train < MIN_TRAIN_IMAGES:
        findings.append(
            Finding("blocking", "too-few-training-images", f"{train} image(s) in the training split; need >= 2")
        )
    for name, counts in per_class.items():
        if counts["total"] == 0:
            findings.append(Finding("warning", "empty-class", f"class {name!r} has no usable image at this site"))
        elif counts["total"] < MIN_CLASS_IMAGES:
            findings.append(
                Finding(
                    "warning",
                    "small-class",
                    f"class {name!r} has {counts['total']} usable image(s) (train {counts['train']}, "
                    f"val {counts['val']}, test {counts['test']}); its metrics will be noisy",
                )
            )
    sizes = [counts["total"] for counts in per_class.values() if counts["total"]]
    if len(sizes) >= 2 and max(sizes) / min(sizes) > IMBALANCE_RATIO:
        largest = max(per_class, key=lambda name: per_class[name]["total"])
        smallest = min(with_images, key=lambda name: per_class[name]["total"])
        findings.append(
            Finding(
                "warning",
                "class-imbalance",
                f"class {largest!r} has {max(sizes)} images, {smallest!r} {min(sizes)} "
                f"(ratio {max(sizes) / min(sizes):.0f}:1)",
            )
        )
    return findings


def normalise_label(label: str) -> str:
    """What a person means by a label: case, spacing, punctuation and underscores do not count."""
    return re.sub(r"[\W_]+", "", label.casefold())


def _label_variant_findings(classes: Iterable[str]) -> list[Finding]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name in classes:
        groups[normalise_label(name)].append(name)
    return [
        Finding(
            "blocking",
            "label-variants",
            f"labels {', '.join(repr(name) for name in names)} differ only in case, spacing or punctuation: they "
            "would train as different classes; spell them one way",
        )
        for names in groups.values()
        if len(names) > 1
    ]


def _duplicate_findings(inspected: Sequence[_Inspected], records: Sequence[Any]) -> list[Finding]:
    by_digest: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(inspected):
        assert item.digest is not None
        by_digest[item.digest].append(index)
    conflicts: list[list[int]] = []
    copies: list[list[int]] = []
    for indices in by_digest.values():
        if len(indices) < 2:
            continue
        labels = {records[index].class_name for index in indices}
        (conflicts if len(labels) > 1 else copies).append(indices)
    findings = []
    if conflicts:
        # One finding for all of them: a re-labelled copy of a whole folder must not print a thousand lines.
        # Each group shown by one file per label: that is the decision the operator has to make.
        per_label = [
            list({records[index].class_name: index for index in reversed(group)}.values())[::-1] for group in conflicts
        ]
        shown = "; ".join(
            " = ".join(f"{records[index].path} ({records[index].class_name})" for index in group[:3])
            for group in per_label[:3]
        )
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        findings.append(
            Finding(
                "blocking",
                "label-conflict",
                f"{len(conflicts)} image content(s) appear under more than one label: {shown}{more}",
                [str(records[index].path) for group in per_label[:2] for index in group[:MAX_LISTED]],
            )
        )
    if copies:
        extra = sum(len(indices) - 1 for indices in copies)
        example = copies[0]
        findings.append(
            Finding(
                "warning",
                "duplicate-files",
                f"{extra} file(s) repeat another file's content in the same class (they count twice), e.g. "
                + " = ".join(str(records[index].path) for index in example[:3]),
                [str(records[index].path) for index in example[:MAX_LISTED]],
            )
        )
    return findings


def _syntax_counts(inspected: Sequence[_Inspected]) -> list[TransferSyntaxCount]:
    counts = Counter(item.syntax for item in inspected if item.syntax)
    result = []
    for uid, files in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])):
        status = codec_status(uid)
        missing = not status.decodable or status.plugins_missing
        result.append(TransferSyntaxCount(uid, status.name, files, not missing, status.fix if missing else ""))
    return result


def _codec_findings(syntaxes: Sequence[TransferSyntaxCount], inspected: Sequence[_Inspected]) -> list[Finding]:
    findings = []
    for syntax in syntaxes:
        if syntax.decodable or not syntax.fix:
            continue
        failed = [str(item.path) for item in inspected if item.syntax == syntax.uid and item.error is not None]
        if not failed:
            continue  # Pillow managed these files (e.g. 8-bit baseline JPEG); nothing to fix
        findings.append(
            Finding(
                "warning",
                "missing-codec",
                f"{len(failed)} DICOM file(s) use {syntax.name} ({syntax.uid}), which needs a decoder that is not "
                f"installed: {syntax.fix}",
                failed[:MAX_LISTED],
            )
        )
    return findings


def _group(skipped: Sequence[tuple[str, str]]) -> list[SkipGroup]:
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, reason in skipped:
        groups[reason_kind(reason)].append((path, reason))
    return [
        SkipGroup(kind, len(members), members[0][0], members[0][1])
        for kind, members in sorted(groups.items(), key=lambda pair: -len(pair[1]))
    ]


def reason_kind(reason: str) -> str:
    """A reason without its per-file details: ``line 7: file not found`` → ``file not found``."""
    text = _LINE_PREFIX.sub("", reason)
    cut = min((index for index in (text.find(" ("), text.find(": ")) if index > 0), default=len(text))
    if _EXCEPTION_NAME.fullmatch(text[:cut]):  # "OSError: image file is truncated (5 bytes not processed)"
        bracket = text.find(" (", cut)
        return text if bracket < 0 else text[:bracket]
    return text[:cut]


# --- the text report --------------------------------------------------------------------------------------


def render_text(report: DataReport) -> str:
    """The report as an operator reads it: plain text, one fact per line, blocking problems first."""
    lines = [
        f"data check for site {report.site} (adapter {report.adapter}, root {report.root})",
        f"{report.usable} usable image(s) of {report.listed} listed, {len(report.classes)} class(es), "
        f"{len(report.skipped)} file(s) skipped",
        "",
        f"{'class':<32} {'total':>6} {'train':>6} {'val':>6} {'test':>6}",
    ]
    for name, counts in report.images_per_class.items():
        lines.append(
            f"{name[:32]:<32} {counts['total']:>6} {counts['train']:>6} {counts['val']:>6} {counts['test']:>6}"
        )
    if report.skipped_groups:
        lines += ["", "skipped files, by reason:"]
        for group in report.skipped_groups:
            lines.append(f"  {group.count:>5} × {group.reason}  (e.g. {group.example_path})")
    if report.modes or report.sizes:
        lines += ["", "image modes: " + ", ".join(f"{mode} {count}" for mode, count in report.modes.items())]
        lines.append("image sizes: " + ", ".join(f"{size} {count}" for size, count in report.sizes.items()))
    if report.transfer_syntaxes:
        lines += ["", "DICOM transfer syntaxes:"]
        for syntax in report.transfer_syntaxes:
            state = "decodable" if syntax.decodable else f"NO DECODER: {syntax.fix}"
            lines.append(f"  {syntax.files:>5} × {syntax.name} ({syntax.uid}): {state}")
    lines.append("")
    if not report.findings:
        lines.append("no problems found")
    for finding in report.findings:
        lines.append(f"{finding.severity.upper()} [{finding.code}] {finding.message}")
    verdict = (
        f"BLOCKED: {len(report.blocking)} blocking problem(s); training would refuse this data"
        if report.blocking
        else "OK: training can use this data"
    )
    lines += ["", verdict]
    return "\n".join(lines)
