"""What an attack spends, counted where it is spent: the cost meter.

The runner, not the plugin, measures each cell's attacker cost (issue 29). While a cell's
attacker stages run (condition, extraction, each ranker) a ``Meter`` is current, and:

- the target's UNets (``TargetModel.unet`` and ``base_unet``) carry hooks on their first layer
  (``conv_in``), put there by the runner before any plugin sees the target: every image that
  goes through a UNet is counted there, whichever path called it (the module, a deep copy, a
  tweedie denoiser, ``unet.forward(...)`` directly), and so is every image whose gradient
  comes back through the whole UNet (a backward pass: guidance through x0_hat). A call that
  reached the first layer without the module's own call (``unet.forward``) is counted and
  noted; weights read out of the UNet (``state_dict``) during the attack are noted too, since
  a rebuilt copy would not carry the hooks;
- the core's sampler (``sampling/diffusion.py``) counts the guide's evaluations where it calls
  the guide (per image and step; a kernel's apart) and, per batch, the images it sampled; in
  the extraction stage each batch's work is kept in a ledger with a fingerprint of every image
  it made, so the runner can tell which draw each candidate is (``draw_of``);
- the core's classifier training (``sampling/classifier.py``) counts its steps and images
  (PGD and gradient-penalty passes apart) as preparation, a fixed cost; so does a model
  trained with ``train_denoiser`` during an attacker stage;
- the core's diagnostics (held-out accuracy, gradient alignment) run ``aside``: the benchmark
  measures them, the attacker would not pay them, so they are not counted;
- a cache entry made while a meter is current stores what it cost (``results/cache.py``), and
  a cell that loads it is charged that again, so a cell's cost does not depend on which cell
  happened to fill the cache. An entry made before cost was measured is noted as unmeasured.

The counts are images: one image through a UNet at one timestep is one UNet evaluation.
``EQUIVALENTS`` converts them into UNet-evaluation equivalents, with where each ratio was
measured; ``equivalents(counts)`` is the one number the leaderboard shows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

COST_VERSION = 1
COUNTS = ("unet_forward", "unet_backward", "guide_evals", "kernel_evals", "sampled_images",
          "classifier_train_steps", "classifier_train_images", "classifier_pgd_passes",
          "classifier_penalty_passes", "model_train_steps", "model_train_images")
# UNet-evaluation equivalents per counted unit. Measured on the 2-core CPU (user guide, "Aligned
# classifiers"; the same figures as the extractors' planned_cost): a DDIM step of 64 images
# took 37 ms unguided, 59 ms with x_t guidance (a classifier forward and backward per image:
# 22 / 37 = 0.6) and 128 ms with x0_hat guidance (a second UNet forward, a backward through it
# and the classifier: 2 + b + 0.6 = 3.46, so a backward through the frozen UNet, input
# gradients only, b = 0.9); a classifier training step of 128 images 75 ms (0.59 ms an image
# against the UNet's 0.58: 1.0), each PGD step 0.46 of one and the gradient penalty 0.76; a
# UNet training image (forward and backward with weight gradients) 3 evaluations, as the dry run
# counts it. A kernel evaluation is counted as a guide evaluation (its own work grows with its
# pool; not measured apart). Images sampled are a count of chains, not of work: no equivalent.
EQUIVALENTS = {"unet_forward": 1.0, "unet_backward": 0.9, "guide_evals": 0.6, "classifier_train_images": 1.0,
               "classifier_pgd_passes": 0.46, "classifier_penalty_passes": 0.76, "model_train_images": 3.0}
# UnCond + a ranker whose score needs all of a cell's candidates (the clique) is compared at an
# attack's cost only on a whole UnCond cell that spends at least this share of it (report/budget.py)
SPEND_SHARE = 0.9
EQUIVALENTS_TEXT = ("cost in UNet-evaluation equivalents (one image through the target's UNet at one step = 1): "
                    "UNet forward 1, backward through the UNet 0.9, guide evaluation (classifier forward and "
                    "backward, or kernel) 0.6, classifier training image 1 (PGD pass 0.46, gradient-penalty pass "
                    "0.76), UNet training image 3; measured on the project's CPU (side_bench/cost.py)")


def equivalents(counts: dict | None) -> float:
    """UNet-evaluation equivalents of a dict of counts (``EQUIVALENTS``); 0 for None."""
    return float(sum(EQUIVALENTS.get(kind, 0.0) * float(value) for kind, value in (counts or {}).items()
                     if isinstance(value, (int, float)) and not isinstance(value, bool)))


def _add(into: dict, counts: dict, times: float = 1.0) -> dict:
    for kind, value in counts.items():
        if kind in COUNTS and value:
            into[kind] = into.get(kind, 0) + value * times
    return into


def _number(value: float) -> int | float:
    """A count as an int where it is whole (JSON stays small and exact)."""
    return int(round(value)) if abs(value - round(value)) < 1e-9 else float(value)


def _tidy(counts: dict, zeros: bool = True) -> dict:
    """The counts of ``COUNTS`` in their order; with ``zeros``, every one (0 where none was made)."""
    return {kind: _number(counts.get(kind, 0)) for kind in COUNTS if zeros or counts.get(kind)}


def fingerprint(image) -> bytes:
    """8 bytes naming one image's exact values and dtype (a tensor, on any device)."""
    return hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=8,
                           person=str(image.dtype).encode()[:16]).digest()


@dataclass
class Batch:
    """One batch of the sampler in the extraction stage: its work and the images it made."""

    size: int
    counts: dict = field(default_factory=dict)
    prints: list[bytes] = field(default_factory=list)

    def outputs(self, images) -> None:
        """The batch's images (CPU float32), fingerprinted for ``Meter.draw_of``."""
        self.prints = [fingerprint(image) for image in images]


class Meter:
    """Counts of one cell's attacker stages, by where they were spent (module docstring)."""

    def __init__(self):
        self.where: str | None = None  # the bucket counts go to; None: not counting
        self.buckets: dict[str, dict] = {}
        self.ledger: list[Batch] = []
        self.batch: Batch | None = None
        self.notes: list[str] = []  # how something was counted
        self.unmeasured: list[str] = []  # what was not counted: the record is not complete
        self.top_images = 0  # images the UNets' module calls received
        self.leaf_images = 0  # images their first layers received
        self.exported = False
        # set around a compiled UNet's call (``compiled_call``): the hooks are traced into the
        # compiled graph, where a count they changed would be a guard that recompiles every step,
        # so they stay quiet there and the sampler counts the call itself
        self.compiled = False
        self._marks: dict[str, dict] = {}
        self._handles: list = []

    # -- counting ---------------------------------------------------------------------------

    def add(self, kind: str, n: float) -> None:
        if self.where is None or not n:
            return
        if self.batch is not None and self.where == "extraction":
            self.batch.counts[kind] = self.batch.counts.get(kind, 0) + n
        else:
            bucket = self.buckets.setdefault(self.where, {})
            bucket[kind] = bucket.get(kind, 0) + n

    def total(self) -> dict:
        """Every count so far but the diagnostics' (cache entries diff it: an entry's cost is
        what the attack paid to make it, not what the benchmark measured of it meanwhile)."""
        found: dict = {}
        for name, bucket in self.buckets.items():
            if name != "aside":
                _add(found, bucket)
        for batch in self.ledger:
            _add(found, batch.counts)
        if self.batch is not None:
            _add(found, self.batch.counts)
        return found

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before, self.where = self.where, name
        try:
            yield
        finally:
            self.where = before

    def _scope(self, name: str):
        """Move counting to ``name`` while inside, if counting at all (an attacker stage)."""
        if self.where is None or self.where.startswith("aside"):
            return contextlib.nullcontext()
        return self.stage(name)

    # -- the target's UNets -----------------------------------------------------------------

    def watch(self, unet, role: str) -> None:
        """Hooks on ``unet`` (see the module docstring); removed by ``unwatch``."""
        if unet is None or any(watched is unet for watched, _ in self._handles):
            return
        meter = self  # closures, not bound methods: a deep copy of the UNet keeps counting here
        leaf = getattr(unet, "conv_in", None)

        def top(module, args, kwargs):
            if meter.where is not None and not meter.compiled:
                meter.top_images += _batch(args[0] if args else kwargs.get("sample"))

        def first_layer(module, args, output):
            if meter.where is None or meter.compiled:
                return
            n = int(output.shape[0])
            meter.leaf_images += n
            meter.add("unet_forward", n)
            if output.requires_grad:
                def back(grad, n=n):
                    meter.add("unet_backward", n)
                output.register_hook(back)

        def weights_read(module, state_dict, prefix, local_metadata):
            if meter.where is not None and not meter.where.startswith("aside") and not meter.exported:
                meter.exported = True
                meter.unmeasured.append(f"the {role} UNet's weights were read (state_dict) during the attack: "
                                   "evaluations of a copy rebuilt from them are not counted")

        handles = [unet.register_forward_pre_hook(top, with_kwargs=True), unet._register_state_dict_hook(weights_read)]
        if leaf is not None:
            handles.append(leaf.register_forward_hook(first_layer))
        else:  # no first layer to count at: the module's calls, forward only
            def whole(module, args, kwargs, output):
                if meter.where is not None and not meter.compiled:
                    n = _batch(args[0] if args else kwargs.get("sample"))
                    meter.leaf_images += n
                    meter.add("unet_forward", n)
            handles.append(unet.register_forward_hook(whole, with_kwargs=True))
            self.notes.append(f"the {role} UNet has no conv_in: counted at its module call, forward only")
        self._handles.append((unet, handles))

    def unwatch(self) -> None:
        for _, handles in self._handles:
            for handle in handles:
                handle.remove()
        self._handles = []

    # -- cache entries ----------------------------------------------------------------------

    def mark(self, key: str) -> None:
        self._marks[key] = self.total()

    def made(self, key: str) -> dict | None:
        """What was counted since ``mark(key)``: the cost of making that cache entry."""
        if key not in self._marks:
            return None
        before, now = self._marks.pop(key), self.total()
        return _tidy({kind: now.get(kind, 0) - before.get(kind, 0) for kind in COUNTS})

    def replay(self, counts: dict) -> None:
        """A cache entry's stored cost, charged to this cell as preparation."""
        if self.where is None or self.where.startswith("aside"):
            return
        # a ranker's entry is the ranker's; anything else the attack loads is its preparation
        with contextlib.nullcontext() if self.where.startswith("ranker:") else self._scope("prepare"):
            for name, value in counts.items():
                if name in COUNTS:
                    self.add(name, value)

    # -- the record -------------------------------------------------------------------------

    def draw_of(self, images) -> list[int] | None:
        """For each candidate image, the 1-based draw (sampler output, in the order sampled in
        the extraction stage) that made it; None when one of them was made elsewhere."""
        order: dict[bytes, int] = {}
        for batch in self.ledger:
            for print_ in batch.prints:
                order.setdefault(print_, len(order) + 1)
        if not order:
            return None
        draws = [order.get(fingerprint(image)) for image in images]
        return None if any(d is None for d in draws) else draws

    def record(self, n_candidates: int, draws: list[int] | None) -> dict:
        """The row's ``cost`` object (schema/row.schema.json): counts only, the same on every
        run of a cell whether its classifiers and pools were made or loaded (what was loaded,
        and the diagnostics counted aside, stay out of it: they depend on the cache); the
        attacker's seconds per stage are the row's ``stage_seconds`` (condition, extraction,
        rankers) on its ``device``."""
        fixed = _add(_add({}, self.buckets.get("condition", {})), self.buckets.get("prepare", {}))
        loose = self.buckets.get("extraction", {})  # extraction work outside the sampler's batches
        sampled = [batch for batch in self.ledger if batch.size]
        if draws is not None:
            attribution = "per-sample"
            _add(fixed, loose)
            segments: list[list] = []
            for batch in sampled:
                per = _per(batch.counts, batch.size)
                if segments and segments[-1][1] == per:
                    segments[-1][0] += batch.size
                else:
                    segments.append([batch.size, per])
        else:
            attribution = "even"
            variable = _add({}, loose)
            for batch in sampled:
                _add(variable, batch.counts)
            segments = [[n_candidates, _per(variable, n_candidates)]] if n_candidates else []
        totals = _add({}, fixed)
        for size, per in segments:
            _add(totals, per, size)
        notes = list(self.notes)
        bypassed = self.leaf_images - self.top_images
        if bypassed > 0:
            notes.append(f"{bypassed} image evaluations reached a UNet's first layer without its module call "
                         "(e.g. unet.forward(...)): counted there")
        return {
            "version": COST_VERSION, "measured": True, "complete": not self.unmeasured,
            **_tidy(totals),
            "fixed": _tidy(fixed, zeros=False), "segments": [[size, per] for size, per in segments],
            "attribution": attribution, "draws": sum(batch.size for batch in sampled),
            "rankers": {name[len("ranker:"):]: _tidy(counts, zeros=False) for name, counts in self.buckets.items()
                        if name.startswith("ranker:")},
            "notes": notes, "unmeasured": list(self.unmeasured),
        }


def _batch(x) -> int:
    """Images in a UNet's input (0 for anything without a batch dimension)."""
    try:
        return int(x.shape[0])
    except (AttributeError, IndexError, TypeError):
        return 0


def _per(counts: dict, size: int) -> dict:
    """Counts per draw, only those that are not 0 (whole numbers as ints)."""
    if not size:
        return {}
    return {kind: _number(counts[kind] / size) for kind in COUNTS if counts.get(kind)}


# -- the current meter: module-level, one cell at a time per process ---------------------------

_current: Meter | None = None


def current() -> Meter | None:
    return _current


@contextlib.contextmanager
def metering(*unets: tuple[Any, str]) -> Iterator[Meter]:
    """A fresh meter, current while inside, with hooks on the given (unet, role) pairs."""
    global _current
    meter, before = Meter(), _current
    for unet, role in unets:
        meter.watch(unet, role)
    _current = meter
    try:
        yield meter
    finally:
        meter.unwatch()
        meter.where = None
        _current = before


@contextlib.contextmanager
def compiled_call(n: int) -> Iterator[None]:
    """Around one call of a compiled UNet on ``n`` images (padding included: the work is done):
    the hooks stay out of the compiled graph's guards and the call is counted here, forward."""
    if _current is None:
        yield
        return
    _current.compiled = True
    try:
        yield
    finally:
        _current.compiled = False
    if _current.where is not None:  # as the hooks count: only where the meter is counting
        _current.leaf_images += n
        _current.top_images += n
        _current.add("unet_forward", n)


def add(kind: str, n: float) -> None:
    """Count ``n`` of ``kind`` (one of ``COUNTS``) where the current meter is counting."""
    if _current is not None:
        _current.add(kind, n)


def preparing():
    """Work that prepares the attack (a classifier's training): a fixed cost, not a draw's."""
    return _current._scope("prepare") if _current is not None else contextlib.nullcontext()


def aside():
    """The benchmark's own measurements (diagnostics): counted apart, never the attacker's."""
    if _current is None or _current.where is None:
        return contextlib.nullcontext()
    return _current.stage("aside")


def preparation(function: Callable) -> Callable:
    """Decorator: the function's work is ``preparing`` (e.g. ``train_classifier``)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with preparing():
            return function(*args, **kwargs)
    return wrapper


def benchmark_only(function: Callable) -> Callable:
    """Decorator: the function's work is counted ``aside`` (a diagnostic the attacker would not run)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with aside():
            return function(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def sampling_batch(size: int) -> Iterator[Batch | None]:
    """One batch of ``size`` images of the sampler: in the extraction stage its work goes to the
    ledger (per draw); elsewhere it is counted where the meter is. Yields the batch (or None),
    whose ``outputs(images)`` the sampler calls with what it made."""
    meter = _current
    if meter is None or meter.where != "extraction" or meter.batch is not None:
        yield None
        if meter is not None:
            meter.add("sampled_images", size)
        return
    batch = Batch(size)
    meter.batch = batch
    try:
        yield batch
    finally:
        meter.batch = None
        batch.counts["sampled_images"] = batch.counts.get("sampled_images", 0) + size
        meter.ledger.append(batch)


def cache_missed(key: str) -> None:
    """A cache entry is about to be made (results/cache.py): remember the counts now."""
    if _current is not None and _current.where is not None:
        _current.mark(key)


def cache_made(key: str) -> dict | None:
    """What making the entry cost since ``cache_missed(key)``; None when not measured."""
    return _current.made(key) if _current is not None else None


def cache_loaded(stored: dict | None, kind: str) -> None:
    """A cache entry was loaded: charge its stored cost, or note it was never measured."""
    meter = _current
    if meter is None or meter.where is None or meter.where.startswith("aside"):
        return
    if isinstance(stored, dict):
        meter.replay(stored)
    else:
        note = f"a cached {kind} made before cost was measured was loaded: its cost is not counted"
        if note not in meter.unmeasured:
            meter.unmeasured.append(note)
