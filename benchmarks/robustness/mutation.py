"""Mutation testing of the modules that carry the papers' definitions (issue 30, item 3).

A mutant is the module with one small change (``<`` for ``<=``, ``+ 1`` on a constant, an
argument dropped, ``True`` for ``False``, ...); the tests *kill* it when at least one of them
fails. The share of mutants killed says how much of the module's behaviour the tests pin down.

The mutants are mutmut's (``mutmut.mutation.file_mutation.create_mutations``, the operators
of mutmut 3; like mutmut, only code inside functions and methods is mutated, and decorated
functions are left alone), but this script runs them itself, because mutmut's runner (``mutmut
run``) first runs the whole test suite to see which tests reach which function and runs the
mutants in a ``mutants/`` copy whose trampolines an editable install of ``src/`` can bypass.
Here, for one module:

1. the source tree (``src/``, ``tests/``, ``configs/``, ``pyproject.toml``) is copied to a
   temporary folder; ``src/`` of the checkout is never written to;
2. the test files that import the module (directly, or names it defines through its package)
   are chosen, and run once on the unchanged copy, recording which functions of the module each
   test calls and how long it takes (tests that fail or skip here are left out);
3. each mutant in turn is written into the copy and the tests that call the mutated function
   are run, fastest first, with ``-x -q -p no:cacheprovider``, in a child process forked from
   this one (torch, numpy and pytest already imported, leanseg not), whose ``sys.path`` and
   ``PYTHONPATH`` start with the copy's ``src/``; a child that passes the tests leaves a
   *survivor*, one that runs past its time limit a *timeout* (counted as killed, as mutmut
   does: the mutant changed behaviour enough to hang), one that fails any test a *killed*
   mutant. A mutant of a function that no chosen test calls survives ("no tests").

String mutants inside ``raise`` statements (the wording of error messages) are not run: they
are counted under ``messages`` and left out of the score. Mutants that cannot change behaviour
are listed in :data:`EQUIVALENT` with the reason, and the score is
``killed / (mutants - equivalent)``.

Before the mutants, a sanity check: a mutant that must be killed (the module's first function
made to raise) is run, and the run stops if it survives (the mutant copy would not be the code
the tests import).

    .venv/bin/python benchmarks/robustness/mutation.py --module union [--module losses ...] \
        [--json benchmarks/results/mutation.json] [--resume]

``--resume`` keeps the killed mutants of an earlier run of the same module source (the cache in
``.mutation/``) and runs the others again, e.g. after adding tests; adding tests cannot make a
killed mutant survive. The result file says which modules were resumed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import ast  # noqa: E402
import contextlib
import difflib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "leanseg"
CACHE = REPO / ".mutation"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "mutation.json"

# Short name -> the module's path under src/leanseg.
MODULES: dict[str, str] = {
    "union": "data/union.py",
    "losses": "nn/losses.py",
    "pyramid": "structures/pyramid.py",
    "instance_metrics": "metrics/instance.py",
    "quadtree": "structures/quadtree.py",
    "sparse": "nn/sparse.py",
    "metrics": "metrics/semantic.py",
}

# Why the matching order of one image's predictions cannot matter (instance_metrics).
_DISJOINT = (
    "predictions are disjoint masks (an id map), so two of them can never both have IoU > 0.5 "
    "with one instance: the order in which an image's predictions are matched changes no match, "
    "and average_precision ranks the records by confidence (ties in index order either way)"
)

# Equivalence reasons shared by several sparse mutants.
_BLOCK_SIZE = (
    "only the number of rows per block changes (step 1 in range: each block recomputes rows "
    "the next one overwrites); every row is computed the same"
)
_CAT_DIM = "torch.cat joins along dim 0 by default"
_ZERO_ROWS = "a second appended zero row is never indexed (absent neighbours point at row N)"

_INT_LIST = "a list or tuple of Python ints becomes int64 without a dtype too"

# zip(..., strict=True) where the lengths are equal by construction (metrics).
_ROW_LENGTHS = "every row has the header's number of cells, so strict only checks what holds"
_CHECKED_LENGTHS = (
    "the lengths were compared just before (ValueError), so strict only checks what holds"
)
_CATEGORY_LENGTHS = (
    "the IoU list has len(categories) entries (it is grouped into that many), so strict only "
    "checks what holds"
)

# Why the NCCL branch cannot be told apart here.
_NCCL = (
    "the NCCL branch (a move to the current CUDA device and back) runs on a GPU only; on the "
    "CPU the backend is gloo and the tensors stay where they are (the mutants run on the CPU)"
)

# Why a device argument cannot matter here.
_CPU_ONLY = (
    "on the CPU every tensor is on the one device; the device argument matters on a GPU only "
    "(the mutants run on the CPU)"
)

# Equivalence reasons shared by several quadtree mutants.
_SAME_LENGTHS = "a pyramid and its leaf masks always have the same length; strict only checks it"
_LARGER_GRID = (
    "decode's grid is made larger than needed; every level's leaves land in its top-left part "
    "at the same places, and the crop returns that part"
)

# Why a prediction never has two instances to choose from (instance_metrics).
_ONE_CANDIDATE = (
    "instances are disjoint too: a prediction with IoU > 0.5 holds more than half its pixels "
    "in that instance, so at most one instance is a candidate; which one, and marking it "
    "taken, cannot matter (no other disjoint prediction can match it)"
)

# Mutants that cannot change what the module computes, by module: ``(function, text of the
# mutated line, why)``; a mutant of that function whose mutated line contains the text is
# equivalent.
EQUIVALENT: dict[str, list[tuple[str, str, str]]] = {
    "union": [
        (
            "UnionLabelSpace.label_set_mask",
            "torch.eye(num_classes, dtype=None)",
            "a float identity written into the bool mask is converted to the same bool identity",
        ),
        (
            "UnionLabelSpace.label_set_mask",
            "torch.eye(num_classes, )",
            "a float identity written into the bool mask is converted to the same bool identity",
        ),
    ],
    "losses": [
        (
            "partial_cross_entropy",
            "[compound], dim=None)",
            "log_softmax of a 2-D tensor without dim takes dim 1, the dim given",
        ),
        (
            "partial_cross_entropy",
            "[compound], )",
            "log_softmax of a 2-D tensor without dim takes dim 1, the dim given",
        ),
        ("partial_cross_entropy", 'float("-INF")', 'float() reads "-INF" as -inf, as "-inf"'),
        (
            "hardest_pixels_mean",
            "topk(count, )",
            "the mean of the chosen losses does not depend on their order",
        ),
        (
            "hardest_pixels_mean",
            "topk(count, sorted=True)",
            "the mean of the chosen losses does not depend on their order",
        ),
        (
            "checked_class_weights",
            "torch.tensor(values, dtype=None)",
            "Python floats become float32 (torch's default dtype) without a dtype too",
        ),
        (
            "checked_class_weights",
            "torch.tensor(values, )",
            "Python floats become float32 (torch's default dtype) without a dtype too",
        ),
        (
            "partial_cross_entropy",
            "label_set_mask.to(None)",
            "on the CPU mask and scores share one device; the move matters on a GPU only "
            "(the mutants run on the CPU)",
        ),
    ],
    "pyramid": [
        (
            "pyramid_targets",
            "torch.where(valid, label, -2)",
            "ignored pixels only need a value below every class id (any_valid = high >= 0); "
            "-2 is one as -1 is",
        ),
        (
            "fuse",
            "torch.ones_like(finest[:, 0], dtype=None)",
            "the finest level's indicator is all ones in any dtype; stack promotes and "
            ".to(torch.uint8) gives the same ones",
        ),
        (
            "fuse",
            "torch.ones_like(finest[:, 0], )",
            "the finest level's indicator is all ones in any dtype; stack promotes and "
            ".to(torch.uint8) gives the same ones",
        ),
    ],
    "quadtree": [
        (
            "merge",
            "first = patches[..., 1]",
            "all four children equal the first iff they all equal the second, and then the value "
            "is the same",
        ),
        (
            "leaf_level_map",
            "range(top - 1, -2, -1)",
            "the extra step compares T_0 with the composite value -1, which a label map never "
            "holds (classes 0..k-1 and the ignore value)",
        ),
        ("encode", "leaf_masks(pyramid), strict=None)", _SAME_LENGTHS),
        ("encode", "leaf_masks(pyramid), )", _SAME_LENGTHS),
        ("encode", "leaf_masks(pyramid), strict=False)", _SAME_LENGTHS),
        ("decode", "(b, h << top, w >> top)", _LARGER_GRID),
        ("decode", "(b, h >> top, w << top)", _LARGER_GRID),
        ("decode", "if level <= top:", _LARGER_GRID),
        (
            "decode",
            "dtype=torch.long, device=None)",
            "on the CPU the values and the grid share the one device; the move matters on a GPU "
            "only (the mutants run on the CPU)",
        ),
        (
            "decode",
            "dtype=torch.long, )",
            "on the CPU the values and the grid share the one device; the move matters on a GPU "
            "only (the mutants run on the CPU)",
        ),
    ],
    "sparse": [
        (
            "SparseTensor.from_dense",
            "torch.ones((b, h, w), dtype=None, device=dense.device)",
            "the all-sites mask is only read by nonzero(): float ones give the same sites",
        ),
        (
            "SparseTensor.from_dense",
            "torch.ones((b, h, w), device=dense.device)",
            "the all-sites mask is only read by nonzero(): float ones give the same sites",
        ),
        ("SparseTensor.from_dense", "dtype=torch.bool, device=None)", _CPU_ONLY),
        ("SparseTensor.from_dense", "dtype=torch.bool, )", _CPU_ONLY),
        ("_rows_per_block", "return max(2, BLOCK_BYTES", _BLOCK_SIZE),
        (
            "_rows_per_block",
            "BLOCK_BYTES // max(2, width * itemsize)",
            "width * itemsize is at least 9 channels x 2 bytes, never 1, so max(1, .) = max(2, .)",
        ),
        ("_gather_matmul", "_rows_per_block(weight.shape[1]", _BLOCK_SIZE),
        ("_SubmConv3x3.backward", "_rows_per_block(weight.shape[1]", _BLOCK_SIZE),
        ("_gather_matmul", "for start in range(0, n, ):", _BLOCK_SIZE),
        ("_gather_matmul", "features.new_zeros((1, features.shape[1]))], )", _CAT_DIM),
        ("_SubmConv3x3.backward", "features.new_zeros((1, cin))], )", _CAT_DIM),
        ("_gather_matmul", "features.new_zeros((2, features.shape[1]))], dim=0)", _ZERO_ROWS),
        ("_SubmConv3x3.backward", "features.new_zeros((2, cin))], dim=0)", _ZERO_ROWS),
        (
            "SubmConv2d.__init__",
            'mode="fan_out", )',
            "kaiming_normal_'s default leaky_relu with slope 0 has relu's gain sqrt(2)",
        ),
        ("SubmConv2d.__init__", 'mode="FAN_OUT"', "kaiming_normal_ reads the mode without case"),
        (
            "SparseBatchNorm.forward",
            "1.0,",
            "the momentum of F.batch_norm is not used with training=False (running statistics "
            "are read, not updated)",
        ),
        ("neighbour_table", "dtype=torch.int32, device=None", _CPU_ONLY),
        ("neighbour_table", "n, dtype=torch.int32, )", _CPU_ONLY),
        (
            "neighbour_table",
            "torch.full((b, h + 3, w + 2)",
            "one more padding row of 'absent' at the bottom of the index grid: no site reads it "
            "differently",
        ),
        (
            "neighbour_table",
            "torch.full((b, h + 2, w + 3)",
            "one more padding column of 'absent' at the right of the index grid: no site reads "
            "it differently",
        ),
    ],
    "metrics": [
        ("boundary_band", 'float("-INF")', 'float() reads "-INF" as -inf'),
        ("boundary_band", 'neg_inf = torch.tensor(float("-inf"), device=None)', _CPU_ONLY),
        ("boundary_band", 'neg_inf = torch.tensor(float("-inf"), )', _CPU_ONLY),
        (
            "boundary_band",
            "if width >= 0:",
            "with width 0 the dilation is a 1x1 max-pool without padding: the identity",
        ),
        (
            "_nanmean",
            "if (finite.numel() > 0) or True else",
            "the mean of an empty tensor is nan in torch too, the value given",
        ),
        (
            "_nanmean",
            "if finite.numel() >= 0 else",
            "the mean of an empty tensor is nan in torch too, the value given",
        ),
        ("SegmentationMetric._to_device", "", _CPU_ONLY),
        *(
            ("scores_to_text", f"widths[1:], {end})]", _ROW_LENGTHS)
            for end in ("strict=None", "", "strict=False")
        ),
        (
            "foreign_fraction",
            "if (len(own_classes)) or True else 0.0",
            "indexing with an empty list selects nothing: the sum is 0.0 as given",
        ),
        *(
            ("percent_scores", f"scores.iou, {end})", _CHECKED_LENGTHS)
            for end in ("strict=None", "", "strict=False")
        ),
        (
            "predicted_class_pixels",
            "pred.reshape(-1).to(None).cpu()",
            "torch.bincount counts every integer dtype alike",
        ),
        (
            "group_fractions",
            "if (len(classes)) or True else 0.0",
            "indexing with an empty list selects nothing: the sum is 0.0 as given",
        ),
        (
            "InstanceIoU.compute",
            "instances = self.instances.to(None)",
            "the int64 instance counts meet float64 tensors in every use (the measured sizes, "
            "hit ratios), which gives float64 as converting them first does",
        ),
        (
            "InstanceIoU.compute",
            "measured = self.instance_pixels.to(None) / instances",
            "instances is float64 already: int64 / float64 gives float64 as converting first does",
        ),
        (
            "InstanceIoU.compute",
            "matrix = self.confusion.to(None)",
            "the int64 false positives are added to float64 weighted counts, which gives "
            "float64 as converting them first does",
        ),
        ("group_confusion", "torch.as_tensor(class_to_group, dtype=None)", _INT_LIST),
        ("group_confusion", "torch.as_tensor(class_to_group, )", _INT_LIST),
        ("InstanceIoU.__init__", "torch.as_tensor(list(class_to_group), dtype=None)", _INT_LIST),
        ("InstanceIoU.__init__", "torch.as_tensor(list(class_to_group), )", _INT_LIST),
        (
            "group_confusion",
            "confusion.shape[1]",
            "a confusion matrix is square: shape[1] is shape[0]",
        ),
        *(
            ("category_iou", f"zip(categories, iou, {end})", _CATEGORY_LENGTHS)
            for end in ("strict=None", "", "strict=False")
        ),
        (
            "InstanceIoU.__init__",
            "torch.full((groups,), math.nan",
            "NaN in float32 or float64 only marks sizes to measure; where() takes the float64 "
            "measured ones",
        ),
        (
            "SegmentationMetric.compute",
            "void = self.void.to(None).cpu()",
            "the int64 void counts are only added to float64 tensors, which gives float64 as "
            "converting them first does",
        ),
        ("SegmentationMetric.merge", ".to(None)", _CPU_ONLY),
        (
            "SegmentationMetric.merge",
            "if self.boundary_confusion is not None or other.boundary_confusion is not None:",
            "merge refuses metrics of different boundary_width first, so both matrices are "
            "None or neither is",
        ),
        ("SegmentationMetric.reduce_across_processes", 'get_backend() == "XXncclXX"', _NCCL),
        ("SegmentationMetric.reduce_across_processes", 'get_backend() == "NCCL"', _NCCL),
        ("SegmentationMetric.reduce_across_processes", "stacked = stacked.to(", _NCCL),
        ("SegmentationMetric.reduce_across_processes", "device = None", _NCCL),
        (
            "SegmentationMetric.reduce_across_processes",
            "torch.cuda.current_device())) -> stacked = None",
            _NCCL,
        ),
        (
            "SegmentationMetric.reduce_across_processes",
            "dist.all_reduce(stacked, )",
            "all_reduce sums by default, the op given",
        ),
        (
            "_iou_from_confusion",
            "union + void.to(None)",
            "float64 + int64 is float64: adding the counts as they are gives the same union",
        ),
    ],
    "instance_metrics": [
        ("average_precision", 'float("NAN")', 'float() reads "NAN" as nan'),
        ("InstanceAP.compute", 'float("NAN")', 'float() reads "NAN" as nan'),
        (
            "InstanceAP.compute",
            "if (valid) or True else",
            "np.mean of no class is nan too (with a RuntimeWarning), the value given",
        ),
        (
            "InstanceAP.compute",
            "if (valid50) or True else",
            "np.mean of no class is nan too (with a RuntimeWarning), the value given",
        ),
        ("average_precision", 'kind="STABLE"', "numpy reads the sort kind without case"),
        (
            "_ids_and_masks",
            "*instance.shape, dtype=None)",
            "the empty mask stack is only read through its length and an empty sum",
        ),
        (
            "_ids_and_masks",
            "*instance.shape, )",
            "the empty mask stack is only read through its length and an empty sum",
        ),
        (
            "InstanceAP.__init__",
            "min_gt_area: int = 1",
            "an instance has at least one pixel, so no area is below 1 or below 0",
        ),
        (
            "InstanceAP.update",
            "everywhere = None",
            "instance[None] adds a dimension; torch.unique finds the same ids",
        ),
        (
            "InstanceAP.update",
            "_ids_and_masks(gt_instance, None)",
            "instance[None] adds a dimension; torch.unique finds the same ids",
        ),
        (
            "InstanceAP.update",
            "_ids_and_masks(pred_instance, None)",
            "instance[None] adds a dimension; torch.unique finds the same ids",
        ),
        (
            "InstanceAP.update",
            "if gt_masks.shape[0] or pred_masks.shape[0]:",
            "with no prediction or no instance the matrix product gives the same empty IoU "
            "matrix as np.zeros",
        ),
        (
            "InstanceAP.update",
            "if gt_masks.shape[1] and pred_masks.shape[0]:",
            "with no prediction or no instance the matrix product gives the same empty IoU "
            "matrix as np.zeros",
        ),
        (
            "InstanceAP.update",
            "if gt_masks.shape[0] and pred_masks.shape[1]:",
            "with no prediction or no instance the matrix product gives the same empty IoU "
            "matrix as np.zeros",
        ),
        (
            "InstanceAP.update",
            "gt_area.view(-1) - inter",
            "(P, 1) + (G,) broadcasts to the same (P, G) as (P, 1) + (1, G)",
        ),
        (
            "InstanceAP.update",
            "np.zeros((len(pred_ids), len(gt_ids))) -> iou = None",
            "this IoU matrix is empty (no prediction or no instance) and never indexed",
        ),
        ("InstanceAP.update", "best = None", _ONE_CANDIDATE),
        ("InstanceAP.update", "best = max(candidates, key=None)", _ONE_CANDIDATE),
        (
            "InstanceAP.compute",
            "np.asarray(record.scores[t], dtype=None)",
            "a list of Python floats (or an empty list) becomes float64 without a dtype too",
        ),
        (
            "InstanceAP.compute",
            "np.asarray(record.scores[t], )",
            "a list of Python floats (or an empty list) becomes float64 without a dtype too",
        ),
        (
            "InstanceAP.compute",
            "np.asarray(record.matched[t], dtype=None)",
            "a list of bools becomes a bool array; an empty one is never read "
            "(average_precision returns 0 without predictions)",
        ),
        (
            "InstanceAP.compute",
            "np.asarray(record.matched[t], )",
            "a list of bools becomes a bool array; an empty one is never read "
            "(average_precision returns 0 without predictions)",
        ),
        ("InstanceAP.update", "best = max(candidates, )", _ONE_CANDIDATE),
        ("InstanceAP.update", "key=lambda j: None)", _ONE_CANDIDATE),
        ("InstanceAP.update", "taken.add(None)", _ONE_CANDIDATE),
        (
            "InstanceAP.update",
            "append(False) -> record.matched[t].append(None)",
            "the flags are read as np.asarray(..., dtype=bool), where None is False",
        ),
        ("InstanceAP.update", "gt_area[j] <= self.min_gt_area]", _DISJOINT),
        ("InstanceAP.update", "p_sel.sort(key=None)", _DISJOINT),
        ("InstanceAP.update", "p_sel.sort(key=lambda i: +pred_scores", _DISJOINT),
        ("InstanceAP.update", "p_sel.sort(key=lambda i: -pred_scores.get(None, 1.0))", _DISJOINT),
        (
            "InstanceAP.update",
            "p_sel.sort(key=lambda i: -pred_scores.get(pred_ids[i], 2.0))",
            _DISJOINT,
        ),
    ],
}


@dataclass(frozen=True)
class Mutant:
    """One mutant of a module.

    Attributes:
        key: ``function: original line -> mutated line`` (``#2``... appended to repeats).
        function: qualified name of the top-level function or method it changes.
        line: the changed line's number in the module.
        code: the whole mutated module.
        message: a string mutant inside a ``raise`` statement (error message wording).
    """

    key: str
    function: str
    line: int
    code: str
    message: bool


# --------------------------------------------------------------------------- mutants


def _qualnames(module) -> dict[int, str]:
    """``id(FunctionDef)`` -> qualified name, for top-level functions and class methods."""
    import libcst as cst

    names: dict[int, str] = {}
    for node in module.body:
        if isinstance(node, cst.FunctionDef):
            names[id(node)] = node.name.value
        elif isinstance(node, cst.ClassDef) and isinstance(node.body, cst.IndentedBlock):
            for item in node.body.body:
                if isinstance(item, cst.FunctionDef):
                    names[id(item)] = f"{node.name.value}.{item.name.value}"
    return names


def _inside_raise(module) -> set[int]:
    """``id`` of every string node inside a ``raise`` statement."""
    import libcst as cst

    found: set[int] = set()

    class Visitor(cst.CSTVisitor):
        depth = 0

        def visit_Raise(self, node: cst.Raise) -> None:
            self.depth += 1

        def leave_Raise(self, node: cst.Raise) -> None:
            self.depth -= 1

        def visit_SimpleString(self, node: cst.SimpleString) -> None:
            if self.depth:
                found.add(id(node))

    module.visit(Visitor())
    return found


def mutants(path: Path) -> list[Mutant]:
    """mutmut's mutants of the module at ``path`` that lie inside functions, in source order."""
    from mutmut.mutation.file_mutation import create_mutations, deep_replace

    source = path.read_text()
    cwd = Path.cwd()
    os.chdir(REPO)  # mutmut reads its configuration ([tool.mutmut]) from the working folder
    try:
        module, mutations, _, _ = create_mutations(str(path), source)
    finally:
        os.chdir(cwd)
    names = _qualnames(module)
    messages = _inside_raise(module)
    original = source.splitlines()
    result: list[Mutant] = []
    seen: dict[str, int] = {}
    for mutation in mutations:
        container = mutation.contained_by_top_level_function
        if container is None or id(container) not in names:
            continue
        code = deep_replace(module, mutation.original_node, mutation.mutated_node).code
        if code == source:
            continue
        try:
            ast.parse(code)
        except SyntaxError:
            continue
        line, before, after = _changed_line(original, code.splitlines())
        function = names[id(container)]
        key = f"{function}: {before} -> {after}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key += f" #{seen[key]}"
        message = id(mutation.original_node) in messages
        result.append(Mutant(key, function, line, code, message))
    return result


def _changed_line(original: list[str], mutated: list[str]) -> tuple[int, str, str]:
    """Line number (from 1) and text before / after of a mutant's change, joined if it spans
    several lines."""
    matcher = difflib.SequenceMatcher(a=original, b=mutated, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag != "equal":
            before = " ".join(text.strip() for text in original[a0:a1]) or "(nothing)"
            after = " ".join(text.strip() for text in mutated[b0:b1]) or "(removed)"
            return a0 + 1, before, after
    return 0, "", ""


# --------------------------------------------------------------------------- the copy and tests


def make_copy(root: Path) -> Path:
    """Copy what the tests need to ``root/repo``; ``root/shared`` links to the checkout's
    sibling ``shared/`` (the tests' real data)."""
    copy = root / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("src", "tests", "configs"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared)
    return copy


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_files(module: str, tests: Path) -> list[Path]:
    """The test files that import the module: ``leanseg.a.b`` itself, or from a package above
    it the module (``from leanseg.a import b``) or a name it defines (``from leanseg.a import
    build_union``)."""
    relative = Path(MODULES[module]).with_suffix("")
    dotted = ".".join(("leanseg", *relative.parts))
    parts = dotted.split(".")
    packages = {".".join(parts[:i]): parts[i] for i in range(1, len(parts))}
    defined = _defined_names(PACKAGE / MODULES[module])
    chosen = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(
                alias.name == dotted or alias.name.startswith(dotted + ".") for alias in node.names
            ):
                break
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == dotted:
                    break
                if node.module in packages and any(
                    alias.name == packages[node.module] or alias.name in defined
                    for alias in node.names
                ):
                    break
        else:
            continue
        chosen.append(path)
    return chosen


# --------------------------------------------------------------------------- children


def _child(copy: Path, args: list[str], log: Path, plugins: list[object]) -> int:
    """In the forked child: run pytest on the copy (never returns to the caller's loop)."""
    import pytest
    from hypothesis import settings

    os.setpgid(0, 0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.dont_write_bytecode = True
    os.chdir(copy)
    src = str(copy / "src")
    sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (src, os.environ.get("PYTHONPATH")) if part
    )
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    # Same examples every run, no time limit per example (loaded, shared cores).
    settings.register_profile("mutation", deadline=None, derandomize=True, database=None)
    settings.load_profile("mutation")
    return int(pytest.main([*args, "-x", "-q", "-p", "no:cacheprovider"], plugins=plugins))


def run_child(
    copy: Path, args: list[str], log: Path, timeout: float, plugins: list[object] = ()
) -> tuple[str, int | None, float]:
    """Fork, run pytest with ``args`` in the child, wait up to ``timeout`` seconds.

    Returns:
        ``("passed" | "failed" | "timeout" | "crashed", exit status or signal, seconds)``.
    """
    start = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 98
        try:
            code = _child(copy, args, log, list(plugins))
        except BaseException:  # noqa: BLE001 - anything the child raises is a failed run
            import traceback

            traceback.print_exc()
            code = 99
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        seconds = time.perf_counter() - start
        if done:
            break
        if seconds > timeout:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", None, seconds
        time.sleep(0.02)
    if os.WIFSIGNALED(status):
        return "crashed", -os.WTERMSIG(status), seconds
    code = os.WEXITSTATUS(status)
    return ("passed" if code == 0 else "failed"), code, seconds


class _Tracer:
    """pytest plugin for the unchanged run: per test, its outcome, its seconds and the
    functions of the target module it calls (``Class.method``; nested functions count as their
    enclosing one)."""

    def __init__(self, target: Path, out: Path) -> None:
        self.target = str(target)
        self.out = out
        self.tests: dict[str, dict] = {}
        self.current: set[str] | None = None

    def _trace(self, frame, event, arg):
        if event == "call" and self.current is not None and frame.f_code.co_filename == self.target:
            self.current.add(frame.f_code.co_qualname.split(".<locals>")[0])
        return None

    def pytest_runtest_protocol(self, item, nextitem):
        import threading

        self.current = set()
        self.tests[item.nodeid] = {"functions": self.current, "outcome": "passed", "seconds": 0.0}
        sys.settrace(self._trace)
        threading.settrace(self._trace)

    def pytest_runtest_logreport(self, report):
        record = self.tests.get(report.nodeid)
        if record is None:
            return
        record["seconds"] += report.duration
        if report.outcome != "passed":
            record["outcome"] = report.outcome
        if report.when == "teardown":
            sys.settrace(None)
            import threading

            threading.settrace(None)

    def pytest_sessionfinish(self, session):
        import leanseg

        payload = {
            "leanseg": leanseg.__file__,
            "tests": {
                nodeid: {**record, "functions": sorted(record["functions"])}
                for nodeid, record in self.tests.items()
            },
        }
        self.out.write_text(json.dumps(payload))


# --------------------------------------------------------------------------- one module


def run_module(module: str, work: Path, resume: bool, max_test_seconds: float) -> dict:
    """Run every mutant of ``module``; the module's entry of the result file."""
    relative = MODULES[module]
    source_path = PACKAGE / relative
    source = source_path.read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    copy = make_copy(work)
    target = copy / "src" / "leanseg" / relative
    pristine_stat = target.stat()
    files = test_files(module, copy / "tests")
    print(f"{module}: tests {', '.join(p.name for p in files)}", file=sys.stderr, flush=True)

    # The unchanged run: which tests pass, how long they take, what they call.
    trace_out = work / "trace.json"
    outcome, code, seconds = run_child(
        copy,
        [str(p.relative_to(copy)) for p in files] + ["--continue-on-collection-errors"],
        work / "baseline.log",
        timeout=3600,
        plugins=[_Tracer(target, trace_out)],
    )
    if not trace_out.exists():
        raise SystemExit(f"{module}: the unchanged run wrote no trace ({work / 'baseline.log'})")
    trace = json.loads(trace_out.read_text())
    if not trace["leanseg"].startswith(str(copy)):
        raise SystemExit(f"{module}: the tests imported {trace['leanseg']}, not the copy")
    tests = trace["tests"]
    passing = {nodeid: t for nodeid, t in tests.items() if t["outcome"] == "passed"}
    left_out = sorted(set(tests) - set(passing))
    # Slow tests (end-to-end training) are left out of the mutant runs: the score can only
    # be lower for it, never higher.
    slow = sorted(n for n, t in passing.items() if t["seconds"] > max_test_seconds)
    for nodeid in slow:
        del passing[nodeid]
    print(
        f"{module}: unchanged run {outcome} in {seconds:.0f} s, {len(passing)} tests pass, "
        f"{len(left_out)} left out, {len(slow)} slower than {max_test_seconds:g} s",
        file=sys.stderr,
        flush=True,
    )
    by_function: dict[str, list[str]] = {}
    for nodeid, record in sorted(passing.items(), key=lambda item: item[1]["seconds"]):
        for function in record["functions"]:
            by_function.setdefault(function, []).append(nodeid)

    def write_mutant(code_text: str) -> None:
        target.write_text(code_text)
        # A modification time the original's bytecode does not carry: Python compiles the mutant.
        os.utime(target, ns=(pristine_stat.st_atime_ns, pristine_stat.st_mtime_ns + 7 * 10**9))

    def restore() -> None:
        shutil.copy2(source_path, target)
        os.utime(target, ns=(pristine_stat.st_atime_ns, pristine_stat.st_mtime_ns))

    def run_tests(function: str, code_text: str, log: Path) -> tuple[str, float, int]:
        nodeids = by_function.get(function, [])
        if not nodeids:
            return "no tests", 0.0, 0
        budget = sum(passing[n]["seconds"] for n in nodeids)
        write_mutant(code_text)
        try:
            status, _, seconds = run_child(copy, nodeids, log, timeout=60 + 5 * budget)
        finally:
            restore()
        verdict = {"passed": "survived", "failed": "killed"}.get(status, status)
        return verdict, seconds, len(nodeids)

    # Sanity check: the first called function made to raise must be killed.
    all_mutants = mutants(source_path)
    called = [m for m in all_mutants if m.function in by_function]
    if not called:
        raise SystemExit(f"{module}: no chosen test calls a mutated function")
    sanity_function = called[0].function
    sanity_code = _raising_version(source, sanity_function)
    verdict, _, _ = run_tests(sanity_function, sanity_code, work / "sanity.log")
    if verdict != "killed":
        raise SystemExit(f"{module}: sanity mutant ({sanity_function} raises) {verdict}")
    print(f"{module}: sanity mutant ({sanity_function} raises) killed", file=sys.stderr)

    cache_file = CACHE / f"{module}.json"
    cached: dict[str, dict] = {}
    if resume and cache_file.exists():
        previous = json.loads(cache_file.read_text())
        if previous.get("source_sha256") == digest:
            cached = previous["mutants"]
    results: dict[str, dict] = {}
    equivalent = EQUIVALENT.get(module, [])
    start = time.perf_counter()
    for index, mutant in enumerate(all_mutants, 1):
        if mutant.message:
            results[mutant.key] = {"line": mutant.line, "verdict": "message"}
            continue
        if cached.get(mutant.key, {}).get("verdict") in ("killed", "timeout", "crashed"):
            results[mutant.key] = {**cached[mutant.key], "reused": True}
            continue
        verdict, seconds, count = run_tests(mutant.function, mutant.code, work / "mutant.log")
        results[mutant.key] = {
            "line": mutant.line,
            "verdict": verdict,
            "tests": count,
            "seconds": round(seconds, 2),
        }
        if verdict in ("survived", "no tests"):
            after = mutant.key.split(" -> ", 1)[-1]
            change = mutant.key.split(": ", 1)[1]
            listed = any(
                mutant.function == f and text in (change if " -> " in text else after)
                for f, text, _ in equivalent
            )
            note = " (equivalent)" if listed else ""
            print(f"  {verdict}{note}: line {mutant.line}: {mutant.key}", file=sys.stderr)
        if index % 25 == 0:
            elapsed = time.perf_counter() - start
            print(f"{module}: {index}/{len(all_mutants)} in {elapsed:.0f} s", file=sys.stderr)
            _save_cache(cache_file, digest, results)
    _save_cache(cache_file, digest, results)
    entry = _summary(module, relative, files, copy, left_out, results, equivalent, bool(cached))
    entry["tests_slower_than_limit"] = {"seconds": max_test_seconds, "tests": slow}
    return entry


def _raising_version(source: str, function: str) -> str:
    """``source`` with ``function`` (``name`` or ``Class.method``) raising on entry."""
    tree = ast.parse(source)
    path = function.split(".")
    body = tree.body
    for name in path:
        node = next(n for n in body if getattr(n, "name", None) == name)
        body = node.body
    first = body[0]
    is_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    at = first.end_lineno if is_doc else first.lineno - 1
    indent = " " * first.col_offset
    lines = source.splitlines()
    lines.insert(at, f"{indent}raise RuntimeError('sanity mutant')")
    return "\n".join(lines) + "\n"


def _save_cache(path: Path, digest: str, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source_sha256": digest, "mutants": results}, indent=1))


def _summary(
    module: str,
    relative: str,
    files: list[Path],
    copy: Path,
    left_out: list[str],
    results: dict[str, dict],
    equivalent: list[tuple[str, str, str]],
    resumed: bool,
) -> dict:
    verdicts = {key: r["verdict"] for key, r in results.items()}
    counted = [key for key, v in verdicts.items() if v != "message"]
    killed = [k for k in counted if verdicts[k] in ("killed", "timeout", "crashed")]
    # Listed as equivalent: survivors only count as such; a listed mutant that the tests kill
    # was not equivalent after all and is named in the result.
    listed: dict[str, str] = {}
    for key in counted:
        function, change = key.split(": ", 1)
        after = change.split(" -> ", 1)[1]
        for where, text, why in equivalent:
            target = change if " -> " in text else after
            if function == where and text in target:
                listed[key] = why
    equivalent_here = {k: why for k, why in listed.items() if k not in killed}
    listed_but_killed = [k for k in listed if k in killed]
    survived = [
        k for k in counted if verdicts[k] in ("survived", "no tests") and k not in equivalent_here
    ]
    denominator = len(counted) - len(equivalent_here)
    return {
        "module": f"src/leanseg/{relative}",
        "tests": [str(p.relative_to(copy)) for p in files],
        "tests_left_out": left_out,
        "mutants": len(counted),
        "killed": len(killed),
        "survived": len(survived),
        "timeouts": sum(verdicts[k] == "timeout" for k in counted),
        "crashed": sum(verdicts[k] == "crashed" for k in counted),
        "no_tests": sum(verdicts[k] == "no tests" for k in counted),
        "messages": sum(v == "message" for v in verdicts.values()),
        "equivalent": [{"mutant": k, "why": why} for k, why in equivalent_here.items()],
        "listed_equivalent_but_killed": listed_but_killed,
        "score": round(len(killed) / denominator, 4) if denominator else None,
        "survivors": [
            {"mutant": k, "line": results[k]["line"], "verdict": verdicts[k]} for k in survived
        ],
        "resumed": resumed,
        "command": shlex.join(["python", "benchmarks/robustness/mutation.py", "--module", module]),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), required=True)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--resume", action="store_true", help="keep killed mutants of the cache")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument(
        "--max-test-seconds",
        type=float,
        default=5.0,
        help="leave out tests slower than this in the unchanged run (default 5)",
    )
    args = parser.parse_args(argv)
    # What the children need, imported once here (leanseg itself is not: each child imports
    # it from its copy).
    import hypothesis  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401

    if any(name == "leanseg" or name.startswith("leanseg.") for name in sys.modules):
        raise SystemExit("leanseg was imported before the children fork")
    with contextlib.suppress(OSError):
        os.nice(10)
    entries = {}
    for module in args.module:
        work = Path(tempfile.mkdtemp(prefix=f"mutation-{module}-"))
        try:
            entries[module] = run_module(module, work, args.resume, args.max_test_seconds)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        entry = entries[module]
        entry["command"] = _command(module, args)
        entry["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        print(
            f"{module}: {entry['killed']}/{entry['mutants']} killed, "
            f"{len(entry['equivalent'])} equivalent, score {entry['score']}",
            file=sys.stderr,
        )
    _write(args.json, entries)


def _command(module: str, args: argparse.Namespace) -> str:
    line = ["python", "benchmarks/robustness/mutation.py", "--module", module]
    if args.resume:
        line.append("--resume")
    if args.max_test_seconds != 5.0:
        line += ["--max-test-seconds", f"{args.max_test_seconds:g}"]
    return shlex.join(line)


def _write(path: Path, entries: dict[str, dict]) -> None:
    """Merge the modules just run into the result file (the others keep their entries)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py
    from common import write_result  # imports leanseg: only after the children are done

    modules: dict[str, dict] = {}
    if path.exists():
        modules = json.loads(path.read_text()).get("modules", {})
    modules.update(entries)
    not_run = [name for name in MODULES if name not in modules]
    write_result(
        path,
        {
            "what": "mutation testing of the modules carrying the papers' definitions (issue 30)",
            "tool": _tool_version(),
            "score": "killed / (mutants - equivalent); timeouts and crashes count as killed",
            "modules": {name: modules[name] for name in MODULES if name in modules},
            "not_yet_run": not_run,
        },
    )


def _tool_version() -> str:
    from importlib.metadata import version

    return f"mutmut {version('mutmut')} operators, benchmarks/robustness/mutation.py runner"


def iter_keys(module: str) -> Iterator[str]:
    """The keys of a module's mutants (to write :data:`EQUIVALENT` entries)."""
    for mutant in mutants(PACKAGE / MODULES[module]):
        yield mutant.key


if __name__ == "__main__":
    main()
