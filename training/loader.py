"""A DataLoader whose workers hand batches back through reused shared memory.

A plain DataLoader worker allocates, faults in and sends a fresh shared-memory segment per
batch (about 3 ms for 32 windows of 129 x 400 float32, a fifth of the time to decode them). Here
batch ``k`` of an epoch is decoded straight into slot ``k % n_slots`` of a pool created before
the workers start, only slot references travel back, and the main process copies the batch out
before asking for the next one. torch has no API for this, so :class:`WindowLoader` overrides
two DataLoader hooks; ``tests/training/test_training_loader.py`` checks bit-identity with
``num_workers=0`` through out-of-order arrivals, epoch ends, crashes and fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def _batch_layout(batch_size: int, n_channels: int, n_times: int) -> tuple[int, int, int]:
    """(elements of x, offset of positions in int64 elements, bytes) of one batch storage."""
    n_x = batch_size * n_channels * n_times
    pos_offset = -(-(n_x + batch_size) * 4 // 8)  # in int64 elements, 8-byte aligned
    return n_x, pos_offset, (pos_offset + batch_size) * 8


def batch_tensors(
    batch_size: int, n_channels: int, n_times: int, *, ordinal: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised ``x`` float32 (B, C, T), ``y`` float32 (B,), ``positions`` int64 (B,).

    All three are views of one storage. Inside a worker of a :class:`WindowLoader`, batch
    number ``ordinal`` of the epoch is written into its slot of the loader's preallocated
    shared-memory pool (:class:`SlotPool`), so nothing is allocated and only the slot number
    travels back. In any other DataLoader worker the storage is a fresh shared-memory segment:
    a batch filled in place there reaches the main process without a copy (as torch's
    ``default_collate`` does for stacked tensors), and as one segment; creating, faulting in,
    sending and mapping a segment costs about 3 ms per 3.3 MB batch, the time to decode 8
    windows. In the main process (``num_workers=0``) it is ordinary memory.
    """
    n_x, pos_offset, nbytes = _batch_layout(batch_size, n_channels, n_times)
    pool = _WORKER_POOL
    if pool is not None and ordinal is not None and nbytes <= pool.slot_bytes:
        storage, base = pool.storage, pool.slot_base(ordinal)  # base: bytes, 64-byte aligned
    elif torch.utils.data.get_worker_info() is not None:
        storage, base = torch.UntypedStorage._new_shared(nbytes), 0
    else:
        storage, base = torch.UntypedStorage(nbytes), 0
    x = torch.empty(0, dtype=torch.float32).set_(
        storage, base // 4, (batch_size, n_channels, n_times), (n_channels * n_times, n_times, 1)
    )
    y = torch.empty(0, dtype=torch.float32).set_(storage, base // 4 + n_x, (batch_size,), (1,))
    pos = torch.empty(0, dtype=torch.int64).set_(
        storage, base // 8 + pos_offset, (batch_size,), (1,)
    )
    return x, y, pos


def batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker, in shared memory."""
    if torch.utils.data.get_worker_info() is not None:
        elem = torch.empty(0, dtype=torch.float32)
        storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
        return elem.new(storage).resize_(*shape)
    return torch.empty(shape, dtype=torch.float32)


class WindowBatch(list):
    """The samples of one batch (a list of ``(x, y, subject, position)``) read together.

    ``x`` is the (B, C, T) float32 tensor that the samples' windows are views of, ``y`` (B,)
    float32 and ``positions`` (B,) int64 the samples' targets and positions, so a collate
    function can use them as the collated batch (:class:`training.features.BatchCollate` does);
    any other collate function sees an ordinary list of samples.
    """

    x: torch.Tensor
    y: torch.Tensor
    positions: torch.Tensor


# --- a DataLoader whose workers reuse shared memory -------------------------------------------
#: Room in each slot after a batch's x, y and positions for the small tensors a collate function
#: adds (subject features: B x 2d float32, a few kB), so they travel in the slot as well.
SLOT_TAIL_BYTES = 64 * 1024

#: The pool of the WindowLoader this process is a worker of (set by its worker_init_fn); None in
#: the main process and in workers of any other DataLoader.
_WORKER_POOL: SlotPool | None = None


class SlotPool:
    """``n_slots`` equal slots in one shared-memory storage, created before the workers start.

    Batch number ``k`` of an epoch is always written to slot ``k % n_slots``. A
    :class:`WindowLoader` makes ``n_slots = prefetch_factor * num_workers + 1``, which is safe
    because torch's in-order DataLoader never has more than ``prefetch_factor * num_workers``
    batches sent to workers and not yet returned, and hands out batch ``k`` only after batch
    ``k - 1`` was returned: when batch ``k`` is returned the batches a worker may be writing are
    ``k + 1 .. k + n_slots - 1`` (slots other than ``k``'s and each other's), and batch
    ``k + n_slots``, the next user of ``k``'s slot, is sent to a worker only when batch
    ``k + 1`` is returned, i.e. after the main process copied batch ``k`` out of the slot
    (:meth:`unpack`, before ``__next__`` returns). See docs/training.md for the whole argument.
    """

    def __init__(self, n_slots: int, slot_bytes: int) -> None:
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(
                f"a slot pool needs slots of positive size, got {n_slots} x {slot_bytes} B"
            )
        self.n_slots = int(n_slots)
        self.slot_bytes = -(-int(slot_bytes) // 4096) * 4096  # page multiple: slots 64-B aligned
        self.storage = torch.UntypedStorage._new_shared(self.n_slots * self.slot_bytes)

    def slot_base(self, ordinal: int) -> int:
        """Byte offset in :attr:`storage` of the slot of batch ``ordinal``."""
        return (int(ordinal) % self.n_slots) * self.slot_bytes

    def pack(self, out, base: int, used: int):
        """Worker side: ``out`` (a collate result) with its tensors replaced by :class:`SlotRef`.

        Views of the slot at ``base`` become references; other small CPU tensors (up to the
        slot's free room after its first ``used`` bytes) are copied into the slot first. Larger
        ones are left as tensors (torch sends them through a shared-memory segment of their own).
        """
        ptr = self.storage.data_ptr()
        end = base + self.slot_bytes
        free = _align64(base + used)

        def ref(t: torch.Tensor):
            nonlocal free
            if t.device.type != "cpu" or t.layout != torch.strided or t.requires_grad:
                return t
            if t.untyped_storage().data_ptr() == ptr:
                r = SlotRef(
                    t.storage_offset() * t.element_size(),
                    t.dtype,
                    tuple(t.shape),
                    tuple(t.stride()),
                )
                if not (base <= r.offset and r.stop <= end):
                    raise RuntimeError(
                        f"a collated tensor views slot bytes {r.offset}..{r.stop} outside the "
                        f"batch's slot {base}..{end}: a collate function kept a tensor of another "
                        "batch; return copies instead"
                    )
                return r
            nbytes = t.numel() * t.element_size()
            if free + nbytes > end:
                return t
            dest = torch.empty(0, dtype=t.dtype).set_(
                self.storage, free // t.element_size(), t.shape
            )
            dest.copy_(t)
            free = _align64(free + nbytes)
            return SlotRef(
                dest.storage_offset() * t.element_size(),
                t.dtype,
                tuple(t.shape),
                tuple(dest.stride()),
            )

        return _map_leaves(out, torch.Tensor, ref)

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
        source = torch.empty(0, dtype=torch.uint8).set_(self.storage, base, (stop - base,))
        private.copy_(source)
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


class _OrdinalBatch(list):
    """The keys of one batch and its number in the epoch (:attr:`ordinal`): picks its slot."""

    ordinal: int


class _OrdinalBatches(Sampler):
    """A batch sampler whose batches carry their number in the epoch (0, 1, ...)."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for ordinal, keys in enumerate(self.batches):
            batch = _OrdinalBatch(keys)
            batch.ordinal = ordinal
            yield batch


class _SlotWorkerInit:
    """``worker_init_fn`` of a :class:`WindowLoader`: makes the pool this worker's, then the user's."""

    def __init__(self, fn=None) -> None:
        self.fn = fn
        self.pool: SlotPool | None = None  # set only while the loader starts its workers

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
        if pool is None or not isinstance(samples, WindowBatch) or x is None:
            return out
        if x.untyped_storage().data_ptr() != pool.storage.data_ptr():
            return out  # decoded into a segment of its own (a batch larger than a slot)
        base = x.storage_offset() * 4 // pool.slot_bytes * pool.slot_bytes
        used = samples.positions.storage_offset() * 8 + samples.positions.numel() * 8 - base
        return pool.pack(out, base, used)


class _SlotBatches:
    """Iterator of a :class:`WindowLoader` with workers: copies each batch out of its slot."""

    def __init__(self, it, pool: SlotPool, pin_memory: bool) -> None:
        self._it = it
        self._pool = pool
        self._pin = pin_memory

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self):
        # The copy must finish before the next call asks torch for the next batch (which sends
        # a new batch to the workers into this batch's slot): it does, it is synchronous here.
        return self._pool.unpack(next(self._it), pin_memory=self._pin)


class WindowLoader(DataLoader):
    """A ``DataLoader`` for :class:`WindowDataset` whose workers reuse shared memory.

    Same arguments and batches as ``torch.utils.data.DataLoader``. With ``num_workers > 0`` a
    pool of ``prefetch_factor * num_workers + 1`` batch-sized slots (:class:`SlotPool`) is
    created in shared memory before the workers start (a new pool for each new set of workers);
    a worker decodes batch ``k`` straight into slot ``k % n_slots`` and sends back only slot
    references, and the main process copies the batch out of the slot before returning it. A
    plain DataLoader's worker allocates, faults in and sends a fresh 3.3 MB segment per batch of
    32 windows (about 3 ms of a 14 ms batch); here the slot pages are faulted once.

    The pool is used only where it is provably safe and useful: a dataset with ``n_channels``,
    ``n_times`` and ``__getitems__`` (:class:`WindowDataset`), a known batch size, and batches
    returned in order (``in_order=True``, the default); otherwise this is a plain DataLoader.
    Batches larger than a slot fall back to their own segment. Returned batches are ordinary
    (not shared) memory that stays valid for as long as it is referenced.
    """

    def __init__(self, dataset, *, collate_fn=None, worker_init_fn=None, **kwargs) -> None:
        workers = int(kwargs.get("num_workers", 0))
        batch_sampler = kwargs.get("batch_sampler")
        batch_size = kwargs.get("batch_size", 1)
        auto = batch_sampler is not None or batch_size is not None
        capacity = (
            batch_size if batch_sampler is None else getattr(batch_sampler, "batch_size", None)
        )
        usable = (
            workers > 0
            and auto
            and kwargs.get("in_order", True)
            and capacity
            and hasattr(dataset, "__getitems__")
            and all(hasattr(dataset, a) for a in ("n_channels", "n_times"))
        )
        self._slot_bytes = (
            _batch_layout(int(capacity), int(dataset.n_channels), int(dataset.n_times))[2]
            + SLOT_TAIL_BYTES
            if usable
            else None
        )
        self._slot_init = None
        if usable:
            from torch.utils.data import default_collate

            collate_fn = _SlotCollate(collate_fn or default_collate)
            worker_init_fn = self._slot_init = _SlotWorkerInit(worker_init_fn)
        super().__init__(dataset, collate_fn=collate_fn, worker_init_fn=worker_init_fn, **kwargs)

    @property
    def _slots_on(self) -> bool:
        return self._slot_init is not None and self.num_workers > 0

    @property
    def _index_sampler(self):
        sampler = super()._index_sampler
        if self._slots_on and self._auto_collation:
            return _OrdinalBatches(sampler)  # batch k of an epoch carries k to the worker
        return sampler

    def _get_iterator(self):
        """A new iterator; with workers, new workers, and so a new pool they inherit."""
        if not self._slots_on:
            return super()._get_iterator()
        pool = SlotPool(self.prefetch_factor * self.num_workers + 1, self._slot_bytes)
        self._slot_init.pool = pool  # the workers started now get it (fork or pickled to spawn)
        try:
            it = super()._get_iterator()
        finally:
            self._slot_init.pool = None
        it._eegfs_slot_pool = pool
        return it

    def __iter__(self):
        it = super().__iter__()
        pool = getattr(it, "_eegfs_slot_pool", None)
        if pool is None:
            return it
        return _SlotBatches(it, pool, bool(self.pin_memory) and torch.cuda.is_available())
