"""The decoder stack's forward and backward as two CUDA graphs: one launch each instead of thousands.

Why: at small micro-steps the fast path is limited by the host's kernel launches, not the GPU: QLoRA's
2,048-token steps ran 1.20-1.57x plain without graphs and 1.94-2.68x replayed (bench/results/train_speed.md).
A graph replays the same kernels with no Python or launch cost. torch.cuda.make_graphed_callables does this per
module, but it keeps a separate output and input-gradient buffer per callable (1.5 GB for 32 Llama-3-8B layers at
2,048 tokens, over QLoRA's 7 GiB), captures in a mode that fails when another thread (a DataLoader's pin-memory
thread) touches CUDA, and hands the graph's own gradient buffers to autograd, which may keep them as .grad and then
see the next replay overwrite them. Here the whole stack is one graph (layer outputs are the graph's own
intermediates), captured thread-local, and the adapter gradients are added into .grad by one fused kernel.

What may be captured: training forwards with gradients on, every layer getting the same keyword arguments (no
per-layer masks: llama, mistral, qwen2, qwen3 with full attention only), no randomness (LoRA and attention dropout
0), no hooks that move tensors to the host (offload.py, longctx.py's offload and MLP tiles), one process. A shape is
captured the second time a micro-step has it, and up to MAX_GRAPHS shapes keep their graphs (tunewise train pads
batches to a few bucket lengths, tunewise.train.tokenize.bucket_lengths, so real data repeats shapes); a shape past
that runs eagerly. A moved weight drops every graph; after MAX_DROPS drops the stack stays eager. With cuda_graphs
auto, only micro-steps of at most AUTO_MAX_TOKENS tokens are captured; true captures any size.

Memory: every graph draws on one private pool, so one shape's intermediates reuse another's (micro-steps run one at
a time); what each graph hands out stays its own (the stack's output and its input's gradient: 2 × tokens × hidden
× 2 B), and the adapter gradients of every graph land in the first graph's fp32 buffers. The pool sits beside the
allocator's cache, so torch's reserved memory (not the allocated peak) is higher than eager's."""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from tunewise.train.fast.casts import uncached
from tunewise.train.fast.lora import accumulates_into, adapter_state, grad_nodes
from tunewise.train.fast.lora_groups import forget_plans

# auto replays micro-steps of at most this many tokens: at 2,048 (QLoRA 8B) the host limits the step and graphs
# doubled its speed; at 4,096 (LoRA 8B, 2 examples of 2,048) the GPU already was (2.09x against 2.06-2.08x
# without) and the graph's own memory pool only raised the reserved memory (bench/results/train_speed.md)
AUTO_MAX_TOKENS = 2048
WARMUP_ITERS = 2  # eager passes on the capture stream before capture (Triton autotuning, cuBLAS workspaces)
MAX_DROPS = 3
MAX_GRAPHS = 12  # shapes kept at once: tokenize.bucket_lengths' ladder up to 2,048 tokens has 11 widths
FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}  # one keyword set serves every layer (no per-layer mask)


class CudaReplay:
    """Captures fn(*static_in) forward and its gradients as two CUDA graphs in the memory pool `pool` (None: a new
    one, then self.pool). grad_inputs: the n_args inputs whose gradients the graph hands out, then the parameters,
    whose gradients it copies into `sinks` (the first graph's own buffers, shared by every later graph of the
    stack, so those keep none of their own; None: this graph's stay its own). The warm-up runs on the capture
    stream: autograd syncs a gradient's producer stream with the stream its AccumulateGrad node was made on, and a
    sync with a stream outside the capture would invalidate it."""

    def __init__(self, fn, static_in: tuple, grad_inputs: list, n_args: int, sinks: list | None, proxies=None,
                 pool=None):
        torch.cuda.synchronize()
        # the blocks the eager micro-steps left cached belong to the training stream: the warm-up on its own stream
        # would take as much again beside them
        torch.cuda.empty_cache()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_ITERS):
                out = fn(*static_in)
                torch.autograd.grad(out, grad_inputs, torch.zeros_like(out))
                del out
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.fwd, self.bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.fwd, pool=pool, stream=stream, capture_error_mode="thread_local"):
            out = fn(*static_in)
        self.pool = self.fwd.pool() if pool is None else pool
        self.grad_out = torch.empty_like(out)
        with torch.cuda.graph(self.bwd, pool=self.pool, stream=stream, capture_error_mode="thread_local"):
            grads = torch.autograd.grad(out, grad_inputs, self.grad_out)
            if sinks:
                torch._foreach_copy_(sinks, list(grads[n_args:]))
        # copied, the parameters' own buffers die here and the pool reuses them (a transient copy at the backward's
        # end, where the activations are gone; the first graph, often the only one, copies nothing)
        self.grads = grads if sinks is None else (*grads[:n_args], *sinks)
        self.out = out.detach()

    def forward(self) -> None:
        self.fwd.replay()

    def backward(self) -> None:
        self.bwd.replay()


class EagerReplay:
    """The same contract run eagerly: what the CPU tests substitute for CudaReplay (graphs need CUDA)."""

    def __init__(self, fn, static_in: tuple, grad_inputs: list, n_args: int, sinks: list | None, proxies=None,
                 pool=None):
        self.fn, self.static_in, self.grad_inputs, self.proxies = fn, static_in, grad_inputs, proxies
        self.pool = pool if pool is not None else object()
        self._live = fn(*static_in)
        self.out = self._live.detach().clone()
        self.grad_out = torch.empty_like(self.out)
        params = [torch.empty_like(t) for t in grad_inputs[n_args:]] if sinks is None else sinks
        self.grads = (*(torch.empty_like(t) for t in grad_inputs[:n_args]), *params)

    def forward(self) -> None:
        with torch.enable_grad(), self.proxies:
            self._live = self.fn(*self.static_in)
        self.out.copy_(self._live.detach())

    def backward(self) -> None:
        with self.proxies:
            grads = torch.autograd.grad(self._live, self.grad_inputs, self.grad_out)
        for slot, g in zip(self.grads, grads):
            slot.copy_(g)


class Proxies:
    """Inside this context the layers hold stand-ins for their trainable parameters: new leaves on the same
    memory, so a capture reads the real weights but makes its own AccumulateGrad nodes (the parameters' own
    nodes, kept alive by the LoRA plans and by any graph still referenced, were made on the training stream)."""

    def __init__(self, layers: list):
        self.slots = []  # (module, name, parameter, stand-in), in layer.parameters() order
        seen = set()
        for layer in layers:
            for module in layer.modules():
                for name, p in module._parameters.items():
                    if p is not None and p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        self.slots.append((module, name, p, nn.Parameter(p.detach(), requires_grad=True)))
        self.params = [proxy for _, _, _, proxy in self.slots]
        self.modules = [m for layer in layers for m in layer.modules()]

    def __enter__(self):
        for module, name, _, proxy in self.slots:
            module._parameters[name] = proxy
        forget_plans(self.modules)
        return self

    def __exit__(self, *exc):
        for module, name, p, _ in self.slots:
            module._parameters[name] = p
        forget_plans(self.modules)


REPLAY = [CudaReplay]  # tests put EagerReplay here


class _Pending:
    """Marks a replayed forward whose backward has not run: lives as long as that forward's autograd node."""

    done = False


class _Graph:
    """One captured shape: its replay, its static inputs (the stack's tensor arguments), the ones among them that
    get gradients, and the trainable parameters at its capture, in the order its gradients come in."""

    def __init__(self, replay, static_in: tuple, grad_args: list, params: list):
        self.replay, self.static_in, self.grad_args, self.params = replay, static_in, grad_args, params

    def first_node(self):
        """The first trainable parameter's AccumulateGrad node (None without one, or with gradient hooks)."""
        nodes = grad_nodes(self.params[:1]) if self.params else None
        return nodes[0] if nodes else None


class _Replay(torch.autograd.Function):
    """A graphed micro-step of the stack as one autograd node: inputs are the stack's tensor arguments, then the
    trainable parameters (so that backward reaches their AccumulateGrad nodes, which tells whether it accumulates)."""

    @staticmethod
    def forward(ctx, stack, graph, *inputs):
        ctx.graph = graph
        for slot, x in zip(graph.static_in, inputs):
            if slot.data_ptr() != x.data_ptr():
                slot.copy_(x)
        graph.replay.forward()
        ctx.node = graph.first_node()
        ctx.pending = _Pending()
        stack.pending = weakref.ref(ctx.pending)
        return graph.replay.out.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        graph = ctx.graph
        replay, n_in = graph.replay, len(graph.grad_args)
        ctx.pending.done = True
        if grad.data_ptr() != replay.grad_out.data_ptr():
            replay.grad_out.copy_(grad)
        replay.backward()
        arg_grads = iter(g.clone() for g in replay.grads[:n_in])
        ins = tuple(next(arg_grads) if t.requires_grad else None for t in graph.static_in)
        params, grads = graph.params, replay.grads[n_in:]
        if params and accumulates_into(params[0], ctx.node):
            # the shared gradient buffers are overwritten by the next replay: .grad gets copies or sums, and the
            # sums are one fused kernel, not an AccumulateGrad call per adapter matrix
            have = [i for i, p in enumerate(params) if p.grad is not None]
            if have:
                torch._foreach_add_([params[i].grad for i in have], [grads[i] for i in have])
            missing = [i for i, p in enumerate(params) if p.grad is None]
            for i, g in zip(missing, _copies([grads[i] for i in missing])):
                params[i].grad = g
            return (None, None, *ins, *(None for _ in params))
        return (None, None, *ins, *(g.clone() for g in grads))


def _copies(tensors: list) -> list:
    """Copies of `tensors` as views of one new buffer: one allocation and one fused copy, where a clone each took
    9.4 ms of profiled host time per micro-step for Llama-3-8B's 448 adapter matrices (H200, 2026-11-30)."""
    if not tensors or len({(t.dtype, t.device) for t in tensors}) != 1:
        return [t.clone() for t in tensors]
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    out = [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
    torch._foreach_copy_(out, tensors)
    return out


def _flatten(kwargs: dict) -> tuple | None:
    """(key part, tensors, rebuild) for the layers' keyword arguments, or None when one cannot be a graph input
    (a cache, a per-layer mapping)."""
    key, tensors, layout = [], [], []
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            layout.append((name, len(tensors), None))
            tensors.append(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            layout.append((name, len(tensors), len(value)))
            tensors.extend(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            if name in ("cache", "past_key_values") and value is not None:
                return None
            key.append((name, value))
            continue
        else:
            return None
    key.extend((n, tuple(t.shape), t.dtype, t.requires_grad) for n, t in zip(
        [name for name, _, count in layout for _ in range(count or 1)], tensors))
    constants = {n: v for n, v in kwargs.items() if not any(n == name for name, _, _ in layout)}

    def rebuild(flat: tuple) -> dict:
        out = dict(constants)
        for name, start, count in layout:
            out[name] = flat[start] if count is None else tuple(flat[start:start + count])
        return out

    return tuple(key), tuple(tensors), rebuild


class GraphedStack:
    """Runs the decoder layers in order with the same keyword arguments, from a captured graph when it can."""

    def __init__(self, layers: list, skip=None, max_tokens: int | None = None):
        self.layers, self.skip = layers, skip  # skip(hidden) → True where a long-context hook would move tensors
        self.max_tokens = max_tokens  # larger micro-steps run eagerly (None: any size)
        self.graphs: dict = {}  # key → _Graph
        self.seen: dict = {}  # key → micro-steps that had it
        self.pool = None  # the private memory pool every graph draws on
        self.sinks: dict = {}  # the trainable parameters' identities → the graphs' shared gradient buffers
        self.captures = self.drops = self.replays = self.eager = 0
        self.failed: str | None = None  # why a capture failed (then the stack stays eager)
        self.pending = None  # weakref to the last replay's _Pending: its backward may still come
        self.addresses: tuple = ()  # every layer weight's address at the captures
        # a LoRA layer whose active adapter the key follows (PEFT's set_adapter / disable_adapter)
        self.lora = next((m for layer in layers for m in layer.modules() if hasattr(m, "lora_A")), None)

    def _addresses(self) -> tuple:
        return tuple(t.data_ptr() for layer in self.layers for t in (*layer.parameters(), *layer.buffers()))

    def _run_eager(self, hidden, kwargs: dict):
        for layer in self.layers:
            hidden = layer(hidden, **kwargs)
        return hidden

    def _eligible(self, hidden) -> bool:
        return (torch.is_grad_enabled() and self.layers[0].training and hidden.dim() == 3
                and (self.max_tokens is None or hidden.shape[0] * hidden.shape[1] <= self.max_tokens)
                and not (self.skip is not None and self.skip(hidden))
                and not any(layer._forward_hooks or layer._forward_pre_hooks for layer in self.layers))

    def drop(self) -> None:
        """Release every graph, their gradient buffers and their memory pool."""
        if self.graphs:
            self.graphs, self.sinks, self.seen, self.pool = {}, {}, {}, None
            self.drops += 1

    def _capture(self, key, hidden, tensors: tuple, rebuild) -> None:
        """Capture the stack for this micro-step's shapes; the stack's state changes only once the capture worked."""
        static_in = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in (hidden, *tensors))
        grad_args = [t for t in static_in if t.requires_grad]
        dev = hidden.device.type
        proxies = Proxies(self.layers)
        params = [p for _, _, p, _ in proxies.slots]  # the layers' current parameters, in the grads' order
        ids = tuple(id(p) for p in params)
        sinks = self.sinks.get(ids)  # None: this graph's own gradient buffers become the shared ones
        # autocast's weight-cast cache would hand the capture casts made outside it (freed later), and keep casts
        # made inside it that were never computed; the adapters' own cast cache likewise (casts.py)
        with torch.autocast(dev, dtype=torch.get_autocast_dtype(dev), enabled=torch.is_autocast_enabled(dev),
                            cache_enabled=False), uncached(), proxies:
            replay = REPLAY[0](lambda h, *flat: self._run_eager(h, rebuild(flat)), static_in,
                               grad_args + proxies.params, len(grad_args), sinks, proxies, self.pool)
        self.graphs[key] = _Graph(replay, static_in, grad_args, params)
        self.sinks[ids] = sinks if sinks is not None else list(replay.grads[len(grad_args):])
        self.pool, self.addresses = replay.pool, self._addresses()
        self.captures += 1

    def _graph_for(self, hidden, kwargs: dict) -> tuple | None:
        """(graph, its tensor arguments) when this micro-step replays one (capturing it first where its shapes
        say), else None: it runs eagerly."""
        flat = _flatten(kwargs) if self._eligible(hidden) else None
        if flat is None:
            return None
        part, tensors, rebuild = flat
        dev = hidden.device.type
        key = (tuple(hidden.shape), hidden.dtype, hidden.requires_grad, torch.is_autocast_enabled(dev),
               torch.get_autocast_dtype(dev), part, adapter_state(self.lora) if self.lora is not None else None)
        # a weight moved or replaced since the captures (.to(), load_state_dict(assign=True)): the graphs would read
        # the old memory
        if self.graphs and self._addresses() != self.addresses:
            self.drop()
        self.seen[key] = self.seen.get(key, 0) + 1
        if (key not in self.graphs and self.seen[key] >= 2 and len(self.graphs) < MAX_GRAPHS
                and self.drops < MAX_DROPS and self.failed is None):
            try:
                self._capture(key, hidden, tensors, rebuild)
            except RuntimeError as err:  # an op the capture cannot take (torch.AcceleratorError), or memory: stay eager
                self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                warnings.warn(f"tunewise: CUDA graph capture failed, training continues eagerly ({self.failed})",
                              stacklevel=3)
        graph = self.graphs.get(key)
        pending = self.pending() if self.pending is not None else None
        # while a replay's backward is still to come, another replay would overwrite what that backward reads (the
        # graphs share their pool)
        if graph is None or (pending is not None and not pending.done):
            return None
        return graph, tensors

    def __call__(self, hidden, **kwargs):
        found = self._graph_for(hidden, kwargs)
        if found is None:
            # a training micro-step that ran eagerly; evaluation's forwards are not counted
            self.eager += torch.is_grad_enabled() and self.layers[0].training
            return self._run_eager(hidden, kwargs)
        graph, tensors = found
        self.replays += 1
        return _Replay.apply(self, graph, hidden, *tensors, *graph.params)

    def counts(self) -> dict:
        return {"captures": self.captures, "graphs": len(self.graphs), "drops": self.drops,
                "replays": self.replays, "eager": self.eager, "failed": self.failed}


class GraphedLayerList(nn.ModuleList):
    """The model's layer list: iterating or indexing it is unchanged (saving, loading, decoder_layers), but the
    slice of every layer that the model's forward loops over is the one GraphedStack instead."""

    def __getitem__(self, idx):
        stack = self.__dict__.get("_tw_stack")
        if stack is not None and isinstance(idx, slice) and range(len(self))[idx] == range(len(self)):
            return [stack]
        return super().__getitem__(idx)


def stack_of(hf_model) -> GraphedStack | None:
    """The model's GraphedStack, where enable_graphs put one."""
    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    return None if layers is None else layers.__dict__.get("_tw_stack")


def family_off(model_type: str) -> str | None:
    """Why this family's decoder stack cannot be one graph, or None when it can."""
    return None if model_type in FAMILIES else f"{model_type} gives layers their own masks"


def graphable(hf_model) -> str | None:
    """Why this model's decoder stack cannot be one graph beyond its family (family_off): what its config and
    modules say; None when nothing does."""
    cfg = hf_model.config
    if set(getattr(cfg, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return "sliding-window layers get their own mask"
    if getattr(cfg, "attention_dropout", 0.0):
        return "attention dropout draws random numbers"
    # the model's own modules, not the config: an adapter may come with its dropout from elsewhere
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in hf_model.modules()):
        return "a dropout module draws random numbers"
    return None


def enable_graphs(hf_model, skip=None, max_tokens: int | None = None) -> GraphedStack:
    """Make the model's layer loop run through a GraphedStack (per instance). Returns it (its counters say how
    many micro-steps replayed, ran eagerly, and how often a shape was captured or dropped)."""
    layers = hf_model.model.layers
    stack = GraphedStack(list(layers), skip, max_tokens)
    layers.__class__ = GraphedLayerList
    layers.__dict__["_tw_stack"] = stack  # not a submodule: the layers stay where state_dict has them
    return stack
