"""Solo Connection in plain torch: the connection, the block hooks, and an export's model class.

This file is the one implementation of them, used twice. solo's engine imports it
(``solo_cli/engine/adapter.py`` builds adapters from :class:`SoloConnection` and attaches them with
:class:`SoloHooks`), and ``solo merge --export`` copies it byte for byte into every export folder,
where transformers runs it when the folder is loaded with ``trust_remote_code=True``. So it imports
only torch and transformers, never solo.

A connection ``i -> j`` adds ``t * B A n(h_i)`` to the output of decoder block ``j``: ``h_i`` is the
hidden state leaving block ``i`` (``-1``: the embedding output, which enters block 0), ``n`` the
source normalisation (``rms``: each position divided by its RMS, because residual streams grow
with depth and carry a few "massive" dimensions; ``none``: as it is) and ``t`` the gate.

An export's ``config.json`` names ``modeling_solo.SoloForCausalLM`` in its ``auto_map``: the base
model's class with the connections built in, and ``modeling_solo.SoloConfig``, the base's config
class under the ``model_type`` ``solo``, which no library ships: a loader that goes by
``model_type`` (``AutoModelForCausalLM`` or ``pipeline`` without ``trust_remote_code``) refuses
the folder instead of building the bare base. The base class differs from export to export while
this file does not, so the export also holds a generated ``solo_base.py`` of one import
(``from transformers import LlamaForCausalLM as Base``). Asking this module for ``SoloForCausalLM``
or ``SoloConfig`` imports ``Base`` from it relatively; transformers copies the files a remote-code
module imports that way into its module cache beside the module (in a folder named by the hash of
all of them, so exports with different bases never share a cached module). Inside solo's package
there is no ``solo_base`` and so neither class.
"""

import math

import torch
from torch import nn

RMS_EPS = 1e-6  # the rms source norm is x / sqrt(mean(x^2) + RMS_EPS), per position


class SoloConnection(nn.Module):
    """One low-rank path ``h_src -> t * B A n(h_src)`` added to the output of the destination block.

    ``gate``: ``learned`` (t a parameter, 0 at the start), ``schedule`` (t a buffer that training
    ramps from 0 to 1) or ``zero-init`` (no t; B starts at 0 instead).
    """

    def __init__(self, hidden_size: int, rank: int, gate: str = "learned", source_norm: str = "none") -> None:
        super().__init__()
        self.source_norm = source_norm
        self._rms = source_norm == "rms"
        self.A = nn.Parameter(torch.empty(rank, hidden_size))
        self.B = nn.Parameter(torch.empty(hidden_size, rank))
        self.gate_mode = gate
        if gate == "learned":
            self.gate = nn.Parameter(torch.zeros(()))
        elif gate == "schedule":
            self.register_buffer("gate", torch.zeros(()))
        else:
            self.gate = None
        self._known_gate = None  # (gate tensor, its version, value) as set_gate left it: t without reading the device
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # A as LoRA initialises it. In the gated modes t = 0 makes the start exact, so B can be
        # random (small, so that t = 1 is a mild perturbation); in zero-init mode B = 0 does it.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        if self.gate_mode == "zero-init":
            nn.init.zeros_(self.B)
        else:
            nn.init.normal_(self.B, std=0.02)

    def gate_value(self) -> float:
        return 1.0 if self.gate is None else float(self.gate.detach())

    def set_gate(self, value: float) -> None:
        """Set a ``schedule`` gate to ``value``. Until the gate tensor is changed some other way, the
        forward multiplies by ``value`` inside its last matmul instead of reading the tensor (one
        operation fewer, and no read of the device)."""
        self.gate.fill_(value)
        self._known_gate = (self.gate, self.gate._version, float(value))

    def _gate_now(self):
        """``(gate tensor or None, scalar)``: the gate as a tensor to multiply by, or folded into a scalar."""
        known, gate = self._known_gate, self.gate
        if gate is None or known is None or known[0] is not gate or gate.requires_grad or torch.compiler.is_compiling():
            return gate, 1.0
        return (None, known[2]) if known[1] == gate._version else (gate, 1.0)

    def forward(self, source: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``t * B A n(source)``, or ``base + t * B A n(source)`` when ``base`` is given, in the connection's dtype."""
        x = source if source.dtype == self.A.dtype else source.to(self.A.dtype)
        if base is not None and base.dtype != self.A.dtype:
            return base + self.forward(x).to(base.dtype)
        gate, t = self._gate_now()
        with torch.autocast(x.device.type, enabled=False):  # the connection runs in its own dtype (float32 in solo)
            return _Connection.apply(base, x, self.A, self.B, gate, self._rms, t)

    def delta_weight(self) -> torch.Tensor:
        """The connection's full linear map ``t * B A`` (d x d)."""
        return self.B @ self.A * (1.0 if self.gate is None else self.gate)


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1, tensor.shape[-1])


def _dot(a: torch.Tensor, b: torch.Tensor, plus: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row dot products of two (n, k) matrices as (n, 1), ``+ plus`` if given: one batched matmul,
    where ``(a * b).sum(-1) + plus`` is three operations."""
    if plus is None:
        return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).squeeze(2)
    return torch.baddbmm(plus, a.unsqueeze(1), b.unsqueeze(2)).squeeze(2)


_EPS: dict = {}  # (device, dtype, d) -> the scalar tensor d * RMS_EPS, made once instead of an addition per call


def _eps_for(x2: torch.Tensor) -> torch.Tensor:
    key = (x2.device, x2.dtype, x2.shape[1])
    if key not in _EPS:
        _EPS[key] = torch.full((), x2.shape[1] * RMS_EPS, dtype=x2.dtype, device=x2.device)
    return _EPS[key]


def drop_fake_constants() -> None:
    """Forget the cached constants made on fake tensors (by the memory estimate's trace): a real run given one would break."""
    from torch._subclasses.fake_tensor import FakeTensor

    for key in [k for k, v in _EPS.items() if isinstance(v, FakeTensor)]:
        del _EPS[key]


class _Connection(torch.autograd.Function):
    """``base + t * B A n(x)`` on rows of ``x`` (d wide), with its gradient written out by hand.

    Why by hand: a training step dispatches one kernel per operation, and autograd's own graph of
    the connection (the norm's pieces, the gate's multiply, the add) costs about twice the
    operations of this one. The rms norm enters as a per-row scale of the rank-r product, not of
    ``x``: ``A n(x) = sqrt(d) * rsqrt(|x|^2 + d * eps) * (A x)``, the same map, so the norm costs a
    batched dot product and the scalar sqrt(d) rides in the second matmul. The gate multiplies that
    per-row scale (or the rank-r product when there is no norm), or, given as the number ``t``
    (``gate`` None), rides in the second matmul too. ``base`` None: the delta alone.
    """

    @staticmethod
    def forward(ctx, base, x, A, B, gate, rms, t):
        x2 = _rows(x)
        u = x2 @ A.t()  # (n, r)
        sq = scale = None
        if rms:
            sq = _dot(x2, x2, _eps_for(x2))  # |x|^2 + d * eps, per row
            scale = torch.rsqrt(sq) if gate is None else torch.rsqrt(sq) * gate
        elif gate is not None:
            scale = gate
        w = u if scale is None else u * scale
        alpha = (math.sqrt(x2.shape[1]) if rms else 1.0) * t
        if base is None:
            out = torch.mm(w, B.t()) if alpha == 1.0 else torch.addmm(w.new_zeros(()), w, B.t(), beta=0, alpha=alpha)
        else:
            out = torch.addmm(_rows(base), w, B.t(), alpha=alpha)
        ctx.save_for_backward(x2, A, B, u, w, sq, scale, gate)
        ctx.alpha, ctx.shape = alpha, x.shape
        return out.view(x.shape[:-1] + (B.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x2, A, B, u, w, sq, scale, gate = ctx.saved_tensors
        need_base, need_x, need_a, need_b, need_gate = ctx.needs_input_grad[:5]
        g = _rows(grad)
        alpha = ctx.alpha
        grad_x = grad_a = grad_b = grad_gate = None
        with torch.autocast(g.device.type, enabled=False):
            if need_b:
                grad_b = torch.addmm(B, g.t(), w, beta=0, alpha=alpha)  # alpha * g^T w
            gw = torch.addmm(w, g, B, beta=0, alpha=alpha)  # alpha * g B, the gradient of w
            gu = gw if scale is None else gw * scale
            if need_a:
                grad_a = gu.t() @ x2
            if need_x:
                grad_x = gu @ A
                if sq is not None:  # through the norm: d rsqrt(sq)/dx = -x / sq^1.5
                    grad_x = torch.addcmul(grad_x, x2, _dot(gu, u) / sq, value=-1.0)
                grad_x = grad_x.view(ctx.shape)
            if need_gate:
                per_row = _dot(gw, u)
                grad_gate = (per_row if sq is None else per_row * torch.rsqrt(sq)).sum()
        return (grad if need_base else None), grad_x, grad_a, grad_b, grad_gate, None, None


def _hidden_of(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class SoloHooks:
    """Forward hooks that run connections inside a model. ``remove()`` takes them out again.

    ``plan`` holds ``((src, dst), connection)`` pairs; ``blocks`` is the model's decoder-block list.
    The embedding output (``src == -1``) is captured by a pre-hook on block 0, every other source
    from its block's output, and each destination block's output gets its connections added.
    The hooks only read block outputs and add to them, so KV caching, gradient checkpointing
    (non-reentrant) and any dtype work unchanged: a connection is a per-position linear map.
    Stored sources are dropped when the next forward of the whole model or of its body
    (``model.base_model``, which a loss may call alone) starts, at the last destination when no
    gradient is recorded, and by whoever runs the backward once it is done (``sources.clear()``;
    solo's trainer does, after every micro-batch), never in between: under activation checkpointing
    that wraps a block's ``__call__`` (transformers before 5.2x), the hooks run again during the
    backward pass and must still find the sources of the forward pass being differentiated.
    While ``enabled`` is False every hook does nothing: the model runs as its base. ``scale``
    (>= 0) multiplies every connection's output: 1 as trained, 0 the base exactly (the hooks do
    nothing, as when disabled), anything else adds ``scale`` times each connection's delta.
    """

    def __init__(self, model: nn.Module, blocks: nn.ModuleList, plan: list) -> None:
        self.enabled = True
        self.scale = 1.0
        self.sources: dict[int, torch.Tensor] = {}
        incoming: dict[int, list] = {}
        for (src, dst), conn in plan:
            incoming.setdefault(dst, []).append((src, conn))
        sources = {src for (src, _), _ in plan}
        self._last_dest = max(incoming, default=-1)
        self._handles = [model.register_forward_pre_hook(self._start_forward)]
        body = getattr(model, "base_model", None)
        if isinstance(body, nn.Module) and body is not model:
            self._handles.append(body.register_forward_pre_hook(self._start_forward))
        if -1 in sources:
            self._handles.append(blocks[0].register_forward_pre_hook(self._capture_embedding, with_kwargs=True))
        for k in sorted(sources.union(incoming) - {-1}):
            hook = self._block_hook(k, incoming.get(k, []), k in sources)
            self._handles.append(blocks[k].register_forward_hook(hook))

    def _start_forward(self, module, args):
        self.sources.clear()

    def _capture_embedding(self, module, args, kwargs):
        if self.enabled and self.scale != 0:
            self.sources[-1] = args[0] if args else kwargs["hidden_states"]

    def _block_hook(self, index: int, incoming: list, is_source: bool):
        def hook(module, args, output):
            scale = self.scale
            if not self.enabled or scale == 0:
                return None
            hidden = _hidden_of(output)
            for src, conn in incoming:
                if scale == 1:  # as trained: the fused path, base + delta in one operation
                    hidden = conn(self.sources[src], hidden)
                else:
                    hidden = hidden + (scale * conn(self.sources[src])).to(hidden.dtype)
            if is_source:
                self.sources[index] = hidden
            if index == self._last_dest and not torch.is_grad_enabled():
                self.sources.clear()  # inference: nothing above reads them, and no backward will
            return _replace_hidden(output, hidden) if incoming else None

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.sources.clear()


def _read_base_checkpoint_names(base: type) -> None:
    """transformers converts checkpoint keys as it loads them (GPT-NeoX's embed_out -> lm_head, Mixtral's
    experts fused) by class name, else by ``model_type``; the export's class and ``model_type`` are its
    own, so it takes the conversion its base class would get."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
    except ImportError:
        return
    mapping = get_checkpoint_conversion_mapping(base.__name__)
    if mapping is None:
        mapping = get_checkpoint_conversion_mapping(getattr(base.config_class, "model_type", None))
    if mapping is not None:
        register_checkpoint_conversion_mapping("SoloForCausalLM", mapping, overwrite=True)


MODEL_TYPE = "solo"  # an export's model_type: no library maps it to a class, so only auto_map loads the folder
_BUILT: dict = {}  # base class -> (SoloConfig, SoloForCausalLM), made once each


def solo_config_class(base_config: type) -> type:
    """``base_config`` (the base's config class) under the ``model_type`` of an export."""

    class SoloConfig(base_config):
        model_type = MODEL_TYPE

    return SoloConfig


def solo_model_class(base: type) -> type:
    """``base`` (a transformers causal LM class) with the connections of its config's ``solo_adapter`` built in.

    ``solo_adapter`` lists the ``connections`` (``[src, dst]``) and their module names (``keys``,
    the same order), ``rank``, ``hidden_size``, ``gated``, ``source_norm`` and ``blocks_path``.
    Its ``config_class`` is :func:`solo_config_class` of the base's (made once per base: transformers
    pairs a model class with the config class it loaded); it also runs on a config of the base's class.
    """
    if base in _BUILT:
        return _BUILT[base][1]
    config_class = solo_config_class(base.config_class)

    class SoloForCausalLM(base):
        # The connections load and run in float32 whatever the base dtype, as in solo: _keep_in_fp32_modules
        # keeps them so under float16 only, the _strict list under bfloat16 too.
        _keep_in_fp32_modules = [*(getattr(base, "_keep_in_fp32_modules", None) or ()), "solo"]
        _keep_in_fp32_modules_strict = [*(getattr(base, "_keep_in_fp32_modules_strict", None) or ()), "solo"]
        # vLLM and SGLang run a transformers class under their own attention only where it says it can; they
        # would not run the connections' hooks (and would build the base's bare body), so it says it cannot.
        _supports_attention_backend = False

        def __init__(self, config):
            super().__init__(config)
            _read_base_checkpoint_names(base)
            spec = config.solo_adapter
            gate = "learned" if spec["gated"] else "zero-init"  # an export's gate is a stored number, not trained
            norm = spec.get("source_norm", "none")
            self.solo = nn.ModuleDict(
                {key: SoloConnection(spec["hidden_size"], spec["rank"], gate, norm) for key in spec["keys"]}
            )
            plan = [((int(i), int(j)), self.solo[key]) for (i, j), key in zip(spec["connections"], spec["keys"])]
            self.solo_hooks = SoloHooks(self, self.get_submodule(spec["blocks_path"]), plan)

    SoloForCausalLM.config_class = config_class
    _BUILT[base] = (config_class, SoloForCausalLM)
    return SoloForCausalLM


def __getattr__(name: str):
    # Only an export has its classes: its solo_base.py, written by `solo merge --export`, names the base.
    if name not in ("SoloForCausalLM", "SoloConfig"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from .solo_base import Base
    except ImportError:
        raise AttributeError(
            f"{name} exists only in an export folder, beside the solo_base.py that names its base class"
        ) from None
    model_class = solo_model_class(Base)
    return model_class if name == "SoloForCausalLM" else model_class.config_class
