"""A loader whose DataLoader workers hand batches back through reused shared memory.

A plain DataLoader worker allocates, faults in and sends a fresh shared-memory segment per batch
(about 3 ms for 32 windows of 129 x 400 float32). :class:`WindowLoader` instead creates a pool of
batch-sized slots in shared memory before its workers start; batch ``k`` of an epoch is decoded
straight into slot ``k % n_slots``, only slot references travel back, and the main process
copies the batch out before asking for the next one. torch has no option for this, and it is
built from torch's public DataLoader API only: a batch sampler that numbers the batches, the
dataset's ``__getitems__``, a wrapping ``collate_fn`` and ``worker_init_fn``, and ``__iter__``.

Why a slot is never overwritten while it is read rests on two behaviours of torch's in-order
DataLoader, each pinned by a test in ``tests/training/test_training_loader.py``: at most
``prefetch_factor * num_workers`` batches are in flight, the next one being sent only when one
is returned; and with persistent workers, a new epoch starts only after every batch still in
flight from the previous one was finished. docs/training.md has the whole argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, default_collate


def _batch_layout(batch_size: int, n_channels: int, n_times: int) -> tuple[int, int, int]:
    """(elements of x, offset of positions in int64 elements, bytes) of one batch storage."""
    n_x = batch_size * n_channels * n_times
    pos_offset = -(-(n_x + batch_size) * 4 // 8)  # in int64 elements, 8-byte aligned
    return n_x, pos_offset, (pos_offset + batch_size) * 8


def batch_tensors(
    batch_size: int, n_channels: int, n_times: int, *, ordinal: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised ``x`` float32 (B, C, T), ``y`` float32 (B,), ``positions`` int64 (B,).

    All three are views of one storage. Inside a worker of a :class:`WindowLoader`, batch number
    ``ordinal`` of the epoch is written into its slot of the loader's shared-memory pool
    (:class:`SlotPool`), so nothing is allocated and only the slot number travels back.
    Elsewhere the storage is ordinary memory (one storage, so a DataLoader worker sends the
    batch as one shared-memory segment).
    """
    n_x, pos_offset, nbytes = _batch_layout(batch_size, n_channels, n_times)
    pool = _WORKER_POOL
    if pool is not None and ordinal is not None and nbytes <= pool.slot_bytes:
        storage, base = pool.storage, pool.slot_base(ordinal)  # base: bytes, 64-byte aligned
    else:
        storage, base = torch.empty(nbytes, dtype=torch.uint8).untyped_storage(), 0
    x = torch.empty(0, dtype=torch.float32).set_(
        storage, base // 4, (batch_size, n_channels, n_times), (n_channels * n_times, n_times, 1)
    )
    y = torch.empty(0, dtype=torch.float32).set_(storage, base // 4 + n_x, (batch_size,), (1,))
    pos = torch.empty(0, dtype=torch.int64).set_(
        storage, base // 8 + pos_offset, (batch_size,), (1,)
    )
    return x, y, pos


class StackedSamples(list):
    """The samples of one batch (a list of ``(x, y, subject, position)``), read together.

    ``x`` is the (B, C, T) float32 tensor that the samples' windows are views of, ``y`` (B,)
    float32 and ``positions`` (B,) int64 the samples' targets and positions, so a collate
    function can use them as the collated batch (:class:`training.features.BatchCollate` does);
    any other collate function sees an ordinary list of samples.
    """

    x: torch.Tensor
    y: torch.Tensor
    positions: torch.Tensor


# --- the slot pool ------------------------------------------------------------------------------
#: Room in each slot after a batch's x, y and positions for the small tensors a collate function
#: adds (subject features: B x 2d float32, a few kB), so they travel in the slot as well.
SLOT_TAIL_BYTES = 64 * 1024

#: The pool of the WindowLoader this process is a worker of (set by its worker_init_fn); None in
#: the main process and in workers of any other DataLoader.
_WORKER_POOL: SlotPool | None = None


class SlotPool:
    """``n_slots`` equal slots in one shared-memory storage, created before the workers start.

    Batch number ``k`` of an epoch is always written to slot ``k % n_slots``. A
    :class:`WindowLoader` makes ``n_slots = prefetch_factor * num_workers + 1``: when batch ``k``
    is returned the batches a worker may be writing are ``k + 1 .. k + n_slots - 1`` (slots other
    than ``k``'s and each other's), and batch ``k + n_slots``, the next user of ``k``'s slot, is
    sent to a worker only when batch ``k + 1`` is returned, i.e. after the main process copied
    batch ``k`` out of the slot (:meth:`unpack`).
    """

    def __init__(self, n_slots: int, slot_bytes: int) -> None:
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(
                f"a slot pool needs slots of positive size, got {n_slots} x {slot_bytes} B"
            )
        self.n_slots = int(n_slots)
        self.slot_bytes = -(-int(slot_bytes) // 4096) * 4096  # page multiple: slots 64-B aligned
        memory = torch.empty(self.n_slots * self.slot_bytes, dtype=torch.uint8).share_memory_()
        self.storage = memory.untyped_storage()

    def slot_base(self, ordinal: int) -> int:
        """Byte offset in :attr:`storage` of the slot of batch ``ordinal``."""
        return (int(ordinal) % self.n_slots) * self.slot_bytes

    def owns(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is a view of this pool."""
        return t.untyped_storage().data_ptr() == self.storage.data_ptr()

    def pack(self, out, base: int, used: int):
        """Worker side: ``out`` (a collate result) with its tensors replaced by :class:`SlotRef`.

        Views of the slot at ``base`` become references; other small CPU tensors (up to the
        slot's free room after its first ``used`` bytes) are copied into the slot first. Larger
        ones are left as tensors (torch sends them through a shared-memory segment of their own).
        """
        packer = _SlotPacker(self, base, used)
        return _map_leaves(out, torch.Tensor, packer.ref)

    def unpack(self, out, *, pin_memory: bool = False):
        """Main-process side: ``out`` with its :class:`SlotRef` replaced by tensors of a private copy.

        All references of one batch are in one slot; the used bytes of that slot are copied once
        into new memory (pinned if asked) and the tensors are views of it, so they stay valid
        whatever the workers write next.
        """
        refs: list[SlotRef] = []
        _map_leaves(out, SlotRef, refs.append)
        if not refs:
            return out
        base = refs[0].offset // self.slot_bytes * self.slot_bytes
        stop = max(r.stop for r in refs)
        if min(r.offset for r in refs) < base or stop > base + self.slot_bytes:
            raise RuntimeError("a batch refers to more than one slot of the loader's pool")
        private = torch.empty(stop - base, dtype=torch.uint8, pin_memory=pin_memory)
        private.copy_(torch.empty(0, dtype=torch.uint8).set_(self.storage, base, (stop - base,)))
        storage = private.untyped_storage()

        def tensor(r: SlotRef) -> torch.Tensor:
            offset = (r.offset - base) // r.dtype.itemsize
            return torch.empty(0, dtype=r.dtype).set_(storage, offset, r.shape, r.stride)

        return _map_leaves(out, SlotRef, tensor)


@dataclass(frozen=True)
class SlotRef:
    """A tensor in a :class:`SlotPool`: byte offset in the pool, dtype, shape and strides."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def stop(self) -> int:
        """One past the last byte of the tensor."""
        if any(n == 0 for n in self.shape):
            return self.offset
        span = sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
        return self.offset + span * self.dtype.itemsize


class _SlotPacker:
    """Turns the tensors of one collated batch into references to the slot at ``base``."""

    def __init__(self, pool: SlotPool, base: int, used: int) -> None:
        self.pool = pool
        self.base = base
        self.end = base + pool.slot_bytes
        self.free = _align64(base + used)

    def ref(self, t: torch.Tensor):
        if t.device.type != "cpu" or t.layout != torch.strided or t.requires_grad:
            return t
        if self.pool.owns(t):
            r = SlotRef(t.storage_offset() * t.element_size(), t.dtype, tuple(t.shape), t.stride())
            if not (self.base <= r.offset and r.stop <= self.end):
                raise RuntimeError(
                    f"a collated tensor views slot bytes {r.offset}..{r.stop} outside the "
                    f"batch's slot {self.base}..{self.end}: a collate function kept a tensor of "
                    "another batch; return copies instead"
                )
            return r
        nbytes = t.numel() * t.element_size()
        if self.free + nbytes > self.end:
            return t
        dest = torch.empty(0, dtype=t.dtype).set_(
            self.pool.storage, self.free // t.element_size(), t.shape
        )
        dest.copy_(t)
        self.free = _align64(self.free + nbytes)
        return SlotRef(
            dest.storage_offset() * t.element_size(), t.dtype, tuple(t.shape), dest.stride()
        )


def _align64(n: int) -> int:
    return -(-n // 64) * 64


_SCALARS = (str, bytes, int, float, bool, type(None))


def _map_leaves(obj, kind: type, fn):
    """``obj`` (dicts, lists and tuples of leaves) with every leaf of type ``kind`` mapped by ``fn``."""
    if isinstance(obj, kind):
        return fn(obj)
    if type(obj) is dict:
        return {k: _map_leaves(v, kind, fn) for k, v in obj.items()}
    if isinstance(obj, list | tuple) and all(type(v) in _SCALARS for v in obj):
        return obj  # e.g. a batch's subject ids: nothing to map, and walking them costs
    if type(obj) is list:
        return [_map_leaves(v, kind, fn) for v in obj]
    if isinstance(obj, tuple):
        items = [_map_leaves(v, kind, fn) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


# --- the pieces handed to torch's DataLoader ------------------------------------------------------
class _OrdinalBatch(list):
    """The keys of one batch and its number in the epoch (:attr:`ordinal`): picks its slot."""

    ordinal: int


class _OrdinalBatches(Sampler):
    """A batch sampler whose batches carry their number in the epoch (0, 1, ...)."""

    def __init__(self, batches) -> None:
        self.batches = batches
        self.batch_size = getattr(batches, "batch_size", None)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for ordinal, keys in enumerate(self.batches):
            batch = _OrdinalBatch(keys)
            batch.ordinal = ordinal
            yield batch


class _SlotWorkerInit:
    """``worker_init_fn`` of a :class:`WindowLoader`: makes the pool this worker's, then the user's."""

    def __init__(self, fn: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.pool: SlotPool | None = None  # the pool of the workers started next

    def __call__(self, worker_id: int) -> None:
        global _WORKER_POOL
        _WORKER_POOL = self.pool
        if self.fn is not None:
            self.fn(worker_id)


class _SlotCollate:
    """``collate_fn`` of a :class:`WindowLoader`: the user's, then the result packed into its slot."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, samples):
        out = self.fn(samples)
        pool = _WORKER_POOL
        x = getattr(samples, "x", None)
        if pool is None or not isinstance(samples, StackedSamples) or x is None:
            return out
        if not pool.owns(x):
            return out  # decoded into a storage of its own (a batch larger than a slot)
        base = x.storage_offset() * 4 // pool.slot_bytes * pool.slot_bytes
        used = samples.positions.storage_offset() * 8 + samples.positions.numel() * 8 - base
        return pool.pack(out, base, used)


class _SlotBatches:
    """Iterator of a :class:`WindowLoader` with a pool: copies each batch out of its slot."""

    def __init__(self, it: Iterator, pool: SlotPool, pin_memory: bool) -> None:
        self._it = it
        self._pool = pool
        self._pin = pin_memory

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self):
        # The copy finishes before the next call asks torch for the next batch (which sends a
        # new batch to the workers into this batch's slot): it is synchronous here.
        return self._pool.unpack(next(self._it), pin_memory=self._pin)


# --- the loader -----------------------------------------------------------------------------------
class WindowLoader:
    """Batches of a :class:`training.data.WindowDataset`, like a ``torch.utils.data.DataLoader``.

    Takes the DataLoader arguments listed below and yields the same batches. With
    ``num_workers > 0`` and ``shared_slots`` (the default), a pool of
    ``prefetch_factor * num_workers + 1`` batch-sized slots (:class:`SlotPool`) is created in
    shared memory before the workers start (one pool for the life of persistent workers, a new
    one for each ``iter()`` otherwise); a worker decodes batch ``k`` straight into slot
    ``k % n_slots`` and sends back only slot references, and the main process copies the batch
    out of the slot before returning it. Returned batches are ordinary memory that stays valid
    for as long as it is referenced.

    The pool is used only where it applies: a dataset with ``n_channels``, ``n_times`` and
    ``__getitems__`` and a batch size known in advance; otherwise this is a plain DataLoader.
    A batch larger than a slot falls back to its own segment.

    Attributes
    ----------
    sampler : Sampler or None
        The sampler given (e.g. an :class:`training.data.EpochSampler`, whose ``set_epoch`` the
        training loop calls).
    uses_slots : bool
        Whether batches travel through a slot pool.
    """

    def __init__(
        self,
        dataset,
        *,
        batch_size: int | None = 1,
        sampler: Sampler | None = None,
        batch_sampler: Sampler | None = None,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn=None,
        worker_init_fn: Callable[[int], None] | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        pin_memory: bool = False,
        shared_slots: bool = True,
    ) -> None:
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler or range(len(dataset)), batch_size, drop_last)
        capacity = getattr(batch_sampler, "batch_size", None)
        self.sampler = sampler
        self.dataset = dataset
        self.uses_slots = bool(
            shared_slots
            and num_workers > 0
            and capacity
            and hasattr(dataset, "__getitems__")
            and all(hasattr(dataset, a) for a in ("n_channels", "n_times"))
        )
        self._slot_bytes = 0
        self._worker_init = None
        self._pool: SlotPool | None = None
        self._pin = bool(pin_memory) and torch.cuda.is_available()
        if self.uses_slots:
            *_, nbytes = _batch_layout(int(capacity), dataset.n_channels, dataset.n_times)
            self._slot_bytes = nbytes + SLOT_TAIL_BYTES
            self._n_slots = (prefetch_factor or 2) * num_workers + 1
            batch_sampler = _OrdinalBatches(batch_sampler)
            collate_fn = _SlotCollate(collate_fn or default_collate)
            worker_init_fn = self._worker_init = _SlotWorkerInit(worker_init_fn)
        batching = (
            {"batch_sampler": batch_sampler}
            if batch_sampler is not None
            else {"batch_size": None, "sampler": sampler}
        )
        self.loader = DataLoader(
            dataset,
            num_workers=num_workers,
            collate_fn=collate_fn,
            worker_init_fn=worker_init_fn,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            pin_memory=pin_memory,
            **batching,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if not self.uses_slots:
            return iter(self.loader)
        if self._pool is None or not self.loader.persistent_workers:
            # New workers start in iter() below (persistent ones only the first time): they
            # inherit this pool through the worker_init_fn.
            self._pool = SlotPool(self._n_slots, self._slot_bytes)
            self._worker_init.pool = self._pool
        return _SlotBatches(iter(self.loader), self._pool, self._pin)


__all__ = [
    "SLOT_TAIL_BYTES",
    "SlotPool",
    "SlotRef",
    "StackedSamples",
    "WindowLoader",
    "batch_tensors",
]
