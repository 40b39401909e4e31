"""A DataLoader that a run resumed from a mid-epoch checkpoint continues where it stopped.

Lightning (2.x) saves ``state_dict()`` of every training loader that has one in its checkpoints
(``loops.fit_loop.state_dict["combined_loader"]``) and, when it restarts inside an epoch, hands it
back through ``load_state_dict()`` before the loader is iterated again. Its batch counters resume
at the batch after the checkpoint, but a plain DataLoader starts the epoch over from its first
batch, so the rest of the resumed epoch would train on batches already seen and never on the ones
left. :class:`ResumableDataLoader` counts the batches of the current epoch it has handed to the
training loop and, after ``load_state_dict``, makes the sampler skip them
(:class:`unsup3d.data.datasets.EpochSampler`'s ``skip``), so the resumed epoch draws exactly the
batches an uninterrupted one would (the order and the augmentation are functions of seed, epoch
and index).

Iteration starts lazily, at the first ``next()``: Lightning creates the iterator of a resumed run
before it calls the sampler's ``set_epoch``, and with worker processes the DataLoader pulls indices
from the sampler as soon as it is iterated, so an eager start would serve the resumed epoch in
the order of epoch 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochSampler`` with Lightning's stateful-loader interface.

    ``state_dict()`` is ``{"epoch", "batches"}``: the sampler's epoch and how many batches of it
    were yielded to the consumer (batches prefetched by workers but not yet taken do not count).
    ``load_state_dict()`` makes the next iteration, if it is over the same epoch, skip that many
    batches (``batches * batch_size`` samples); a finished epoch skips nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self.sampler, "skip") or not hasattr(self.sampler, "epoch"):
            raise TypeError(
                f"ResumableDataLoader: the sampler must have `skip` and `epoch` (an EpochSampler), "
                f"got {type(self.sampler).__name__}"
            )
        if self.batch_size is None:
            raise TypeError("ResumableDataLoader: needs batch_size (a custom batch_sampler cannot skip)")
        self._epoch = int(self.sampler.epoch)
        self._handed = 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        epoch, skip = int(self.sampler.epoch), 0
        if self._resume is not None:
            saved_epoch, saved_batches = self._resume
            self._resume = None
            if saved_epoch == epoch and saved_batches < len(self):
                skip = saved_batches
        self.sampler.skip = skip * self.batch_size
        self._epoch, self._handed = epoch, skip
        for batch in super().__iter__():
            # counted before it is handed over: a checkpoint taken after this batch's step skips it
            self._handed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch being iterated and the number of its batches handed out so far."""
        return {"epoch": self._epoch, "batches": self._handed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Skip the ``state["batches"]`` first batches of epoch ``state["epoch"]`` at the next iteration."""
        missing = {"epoch", "batches"} - set(state)
        if missing:
            raise ValueError(f"ResumableDataLoader.load_state_dict: the state lacks {sorted(missing)}")
        self._resume = (int(state["epoch"]), int(state["batches"]))
