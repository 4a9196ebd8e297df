"""One training step (forward, backward, optimizer step, target updates) replayed as a CUDA graph.

The models of this project are small: on a GPU a gradient step is a few hundred tiny kernels and
its time is the host's launch overhead (about 15 ms a step of latent CQL on an H200, whatever the
batch). :class:`CapturedStep` runs a step function eagerly for a few warm-up calls, then records
one call into a ``torch.cuda.CUDAGraph`` and from then on only copies the new inputs into the
graph's static input tensors and replays it: one launch per step.

What a captured step function must do (the algorithms here do): take a dict of tensors with the
same shapes every call, return a flat dict of scalar tensors, never read a tensor's value on the
host (no ``.item()``, ``float(t)``, data-dependent ``if``), draw random numbers only from the
default CUDA generator or from the ``generators`` given here, and use optimizers whose param
groups are ``capturable`` (:func:`make_capturable`). Anything else fails the capture; the step
then falls back to eager execution for good and :attr:`CapturedStep.status` says why, so a run
never stops because of it. On a CPU device it is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def make_capturable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Set ``capturable`` on every param group; a step count already in the state (an optimizer
    restored from a checkpoint written without graphs, e.g. on a CPU) moves to its parameter's
    device, where a capturable step keeps it."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if torch.is_tensor(state.get("step")) and state["step"].device != param.device:
                state["step"] = state["step"].to(param.device)
    return optimizer


def fresh_generator(generator: torch.Generator) -> torch.Generator:
    """A new generator on the same device continuing ``generator``'s stream. A capture that fails
    midway leaves its registered generators marked as capturing (eager draws from them then raise
    "Offset increment outside graph capture"); their owner swaps in these copies."""
    fresh = torch.Generator(device=generator.device)
    try:
        fresh.set_state(generator.get_state())
    except RuntimeError:  # its state cannot be read back: a new stream, still seeded
        fresh.manual_seed(generator.initial_seed() + 1)
    return fresh


class CapturedStep:
    """Calls ``step(inputs)`` eagerly ``warmup`` times, then captures it once and replays the graph."""

    def __init__(
        self,
        step: StepFn,
        device: torch.device,
        *,
        enabled: bool = True,
        warmup: int = 3,
        generators: tuple[torch.Generator, ...] = (),
        params: tuple[torch.nn.Parameter, ...] = (),
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        if warmup < 1:
            raise ValueError(f"warmup: must be >= 1 (the eager calls build optimizer state), got {warmup}")
        self.step = step
        self.device = torch.device(device)
        self.enabled = bool(enabled) and self.device.type == "cuda"
        self.warmup = int(warmup)
        self.generators = tuple(g for g in generators if g.device.type == "cuda")
        self.params = tuple(params)  # their .grad is reset when a capture fails
        self.on_failure = on_failure  # e.g. replace the registered generators (see fresh_generator)
        self.calls = 0
        self.status = "graph pending" if self.enabled else "eager"
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: dict[str, torch.Tensor] = {}
        self._static_out: torch.Tensor | None = None
        self._keys: list[str] = []

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self._graph is not None:
            if any(inputs[key].shape != static.shape for key, static in self._static_in.items()):
                return self.step(inputs)  # another batch shape (a last partial batch): one eager step
            return self._replay(inputs)
        if not self.enabled:
            return self.step(inputs)
        if self.calls <= self.warmup:  # eager warm-up on a side stream, as the CUDA-graph docs ask
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self.step(inputs)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        try:
            self._capture(inputs)
        except Exception as err:  # noqa: BLE001 - any capture failure means: run eagerly from now on
            self._give_up(err)
            return self.step(inputs)
        return self._replay(inputs)

    def _capture(self, inputs: dict[str, torch.Tensor]) -> None:
        self._static_in = {key: value.detach().clone() for key, value in inputs.items()}
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph):
            out = self.step(self._static_in)
            self._keys = list(out)
            self._static_out = torch.stack([value.detach().float().reshape(()) for value in out.values()])
        self._graph = graph
        self.status = "graph"

    def _replay(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for key, static in self._static_in.items():
            static.copy_(inputs[key], non_blocking=True)
        if self._graph is None or self._static_out is None:
            raise RuntimeError("CapturedStep: replay before a successful capture")
        self._graph.replay()
        values = self._static_out.clone()  # the next replay overwrites the static output
        return {key: values[i] for i, key in enumerate(self._keys)}

    def _give_up(self, err: Exception) -> None:
        self.enabled = False
        self._graph, self._static_in, self._static_out = None, {}, None
        for param in self.params:
            param.grad = None
        try:
            torch.cuda.synchronize(self.device)
        except Exception:  # noqa: BLE001 - the error that matters is the capture's
            pass
        if self.on_failure is not None:
            self.on_failure()
        self.status = f"eager (CUDA graph capture failed: {type(err).__name__}: {str(err).splitlines()[0][:160]})"
