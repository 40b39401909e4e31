"""Lightning's ``WandbLogger``, offline unless the user turns it on, and never the reason a run fails.

- ``offline=True`` by default: the run is written to ``<save_dir>/wandb/offline-run-*`` and can be
  uploaded later with ``wandb sync``. ``WANDB_MODE`` (``online``, ``offline``, ``disabled``), when set,
  overrides ``offline``, so a recipe goes online with ``WANDB_MODE=online`` and no edit.
- An online start that fails (no API key, no network, the server not answering within
  ``init_timeout`` seconds) warns once, naming the cause, and continues offline; later loggers of the
  same process go straight to offline instead of waiting for the same timeout again.
- Each ``fit`` / ``validate`` / ``test`` ends its run (Lightning's logger leaves it open, so the next
  logger of the process would silently append to it); using the logger again resumes the same run
  online, and starts a new run offline.
- The process-wide ``WANDB_MODE`` is never written (Lightning's logger sets it to ``dryrun`` for good).
- A relative ``save_dir`` is made absolute when the run starts: wandb-core, a separate process that
  outlives the run, resolves it against its own working directory, not the caller's current one.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

__all__ = ["WandbLogger", "resolve_mode"]

#: why the first online start of this process failed; later loggers then start offline directly
_ONLINE_FAILURE: str | None = None

_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline"}


def resolve_mode(offline: bool) -> Literal["online", "offline", "disabled"]:
    """The W&B mode a run starts in: ``WANDB_MODE`` where it is set (``online``/``run``,
    ``offline``/``dryrun``, ``disabled``), else ``offline`` or ``online`` as ``offline`` says."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled" or os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled"
    if env in _ENV_MODES:
        return _ENV_MODES[env]  # type: ignore[return-value]
    return "offline" if offline else "online"


def _network_errors() -> tuple[type[BaseException], ...]:
    import wandb

    return (wandb.errors.Error, OSError, TimeoutError)


def _cause(err: BaseException) -> str:
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else 'no message'}"


class WandbLogger(LightningWandbLogger):
    """W&B logger for every unsup3d recipe (see the module docstring).

    Args: those of :class:`lightning.pytorch.loggers.WandbLogger`, except
        offline: start offline (default); ``WANDB_MODE`` overrides it, ``offline: false`` goes online.
        project: the W&B project (default ``unsup3d``; ``WANDB_PROJECT`` when set).
        init_timeout: seconds an online start may take before falling back to offline (wandb's own
            default is 90 s); ``WANDB_INIT_TIMEOUT`` or a ``settings`` argument take precedence.
        **kwargs: passed to ``wandb.init`` (``entity``, ``tags``, ``group``, ``notes``, ``settings``, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = ".",
        version: str | None = None,
        offline: bool = True,
        dir: str | None = None,
        id: str | None = None,
        anonymous: bool | None = None,
        project: str | None = None,
        log_model: bool | Literal["all"] = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        init_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        project = project or os.environ.get("WANDB_PROJECT", "unsup3d")
        # offline=False here: this class picks the mode itself and never writes WANDB_MODE
        super().__init__(
            name=name, save_dir=save_dir, version=version, offline=False, dir=dir, id=id,
            anonymous=anonymous, project=project, log_model=log_model, experiment=experiment,
            prefix=prefix, checkpoint_name=checkpoint_name, **kwargs,
        )  # fmt: skip
        if anonymous is None:  # wandb >= 0.19 warns about the key even when it is None
            self._wandb_init.pop("anonymous", None)
        self.offline = offline
        self.init_timeout = init_timeout
        self._owns_run = experiment is None
        self._user_settings = "settings" in kwargs

    @property
    def mode(self) -> str:
        """The mode the next run starts in (``online``, ``offline`` or ``disabled``)."""
        mode = resolve_mode(self.offline)
        return "offline" if mode == "online" and _ONLINE_FAILURE is not None else mode

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``wandb`` run, started on first use (online, or offline after a failed online start)."""
        global _ONLINE_FAILURE
        if self._experiment is not None:
            return self._experiment
        mode = self.mode
        init = self._wandb_init
        init["mode"] = mode
        if init.get("dir"):  # wandb-core resolves a relative folder against its own working directory
            init["dir"] = os.path.abspath(init["dir"])
        ours = mode == "online" and not self._user_settings and "WANDB_INIT_TIMEOUT" not in os.environ
        if ours:
            import wandb

            init["settings"] = wandb.Settings(init_timeout=self.init_timeout)
        start = LightningWandbLogger.experiment.fget  # type: ignore[attr-defined]
        try:
            return start(self)
        except _network_errors() as err:
            if mode != "online":
                raise
            _ONLINE_FAILURE = _cause(err)
            where = os.path.join(self.save_dir or ".", "wandb")
            warnings.warn(
                f"W&B: could not start an online run ({_ONLINE_FAILURE}); logging offline to {where} "
                f"instead (upload later with `wandb sync {where}/offline-run-*`)",
                RuntimeWarning,
                stacklevel=2,
            )
            self._experiment = None
            init["mode"] = "offline"
            if ours:
                init.pop("settings", None)
            return start(self)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Log checkpoints as Lightning does, then end the run. Used again (``fit`` then ``test``), the
        logger resumes the same run online, and starts a new one offline (an offline run resumed within
        the same second would write into the first one's folder, which W&B names by second and id)."""
        super().finalize(status)
        run = self._experiment
        if run is None or not self._owns_run or not hasattr(run, "finish"):
            return
        if getattr(getattr(run, "settings", None), "mode", None) == "online":
            self._id = self._wandb_init["id"] = run.id
        self._experiment = None
        run.finish(exit_code=0 if status in ("success", "finished") else 1)
