"""Scale schedules: how much of a vector each tensor gets, by layer, module kind and depth.

Chat Vector users and mergekit configs scale a vector differently per layer range (keep the
early layers of the target, graft the late ones) or per module (attention vs MLP). A
tensor's factor is the product of three parts, each 1 when not given:

    layer part   --scale-layers 0-7=0.5 (repeatable; the last rule naming a layer wins)
    module part  --scale-modules mlp=0.5 or mlp=[0,1] (attention, mlp, norm, embedding, other)
    depth part   --scale-depth [0.0, 0.5, 1.0]: anchors spread evenly from the first layer
                 to the last, linearly interpolated in between (mergekit's "gradient")

A list value for a module kind is a depth curve for that kind only. Tensors outside the
numbered blocks (embeddings, final norm) take only the module part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from skillgraft.errors import UserError

KINDS = ("attention", "mlp", "norm", "embedding", "other")
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|decoder\.layers)\.(\d+)\.")
_ANY_INDEX = re.compile(r"\.(\d+)\.")
_NORM = re.compile(r"(norm|(^|\.)ln_?\w*\.|layernorm)", re.IGNORECASE)
_ATTENTION = re.compile(r"(attn|attention|q_proj|k_proj|v_proj|o_proj|query|key|value|qkv)")
_MLP = re.compile(r"(mlp|feed_forward|ffn|gate_proj|up_proj|down_proj|c_fc|experts|w1|w2|w3|fc1|fc2)")
_EMBED = re.compile(r"(embed|wte|wpe|lm_head|embed_out|output_layer|word_embeddings)")


def layer_index(name: str) -> int | None:
    """'model.layers.3.mlp.up_proj.weight' -> 3; None outside the numbered blocks."""
    match = _LAYER.search(name) or _ANY_INDEX.search(name)
    return int(match.group(1)) if match else None


def module_kind(name: str) -> str:
    """attention / mlp / norm / embedding / other, from the tensor name (norms first: Llama's
    'post_attention_layernorm' and Qwen's 'self_attn.q_norm' are norms)."""
    if _NORM.search(name):
        return "norm"
    if _EMBED.search(name) and layer_index(name) is None:
        return "embedding"
    if _ATTENTION.search(name):
        return "attention"
    if _MLP.search(name):
        return "mlp"
    return "other"


def interpolate(anchors: list[float], layer: int, num_layers: int) -> float:
    """Value of a depth curve at `layer` (anchors spread evenly over layers 0..num_layers-1)."""
    if len(anchors) == 1 or num_layers <= 1:
        return float(anchors[0])
    position = layer / (num_layers - 1) * (len(anchors) - 1)
    low = min(int(position), len(anchors) - 2)
    fraction = position - low
    return float(anchors[low]) * (1 - fraction) + float(anchors[low + 1]) * fraction


def parse_number_list(text: str, option: str) -> list[float]:
    """'[0, 0.5, 1]' or '0,0.5,1' -> [0.0, 0.5, 1.0]."""
    raw = text.strip()
    if not raw.startswith("["):
        raw = f"[{raw}]"
    try:
        values = json.loads(raw)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f"{option} {text!r}: expected a number or a list of numbers like [0.0, 0.5, 1.0]")
    return [float(v) for v in values]


@dataclass
class Schedule:
    """Per-tensor scale factors; an empty schedule gives exactly 1.0 everywhere."""

    layers: list[tuple[int, int, float]] = field(default_factory=list)  # (first, last inclusive, factor)
    modules: dict[str, list[float]] = field(default_factory=dict)      # kind -> [factor] or depth anchors
    depth: list[float] | None = None
    num_layers: int | None = None

    @property
    def empty(self) -> bool:
        return not self.layers and not self.modules and not self.depth

    def factor(self, name: str) -> float:
        if self.empty:
            return 1.0
        layer = layer_index(name)
        layers = self.num_layers or 1
        value = 1.0
        if layer is not None:
            for first, last, factor in self.layers:
                if first <= layer <= last:
                    value = factor  # the last matching rule wins
            if self.depth:
                value *= interpolate(self.depth, layer, layers)
        kind = module_kind(name)
        if kind in self.modules:
            anchors = self.modules[kind]
            value *= anchors[0] if len(anchors) == 1 or layer is None else interpolate(anchors, layer, layers)
        return value

    def describe(self) -> dict:
        return {"layers": [f"{a}-{b}={f:g}" for a, b, f in self.layers], "modules": self.modules,
                "depth": self.depth, "num_layers": self.num_layers}


def parse_layer_rule(spec: str, option: str = "--scale-layers") -> tuple[int, int, float]:
    """'0-7=0.5' -> (0, 7, 0.5); '3=0' -> (3, 3, 0.0); '8-=2' -> (8, huge, 2.0)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*))?\s*=\s*(\S+)\s*", str(spec))
    if not match:
        raise UserError(f"{option} {spec!r}: expected FIRST-LAST=FACTOR, e.g. 0-7=0.5")
    first = int(match.group(1))
    last = first if not match.group(2) else (int(match.group(3)) if match.group(3) else 1 << 30)
    try:
        factor = float(match.group(4))
    except ValueError:
        raise UserError(f"{option} {spec!r}: factor {match.group(4)!r} is not a number") from None
    if last < first:
        raise UserError(f"{option} {spec!r}: the range ends before it starts")
    return first, last, factor


def parse_module_rule(spec: str, option: str = "--scale-modules") -> tuple[str, list[float]]:
    """'mlp=0.5' -> ('mlp', [0.5]); 'attention=[0,1]' -> ('attention', [0.0, 1.0])."""
    kind, sep, value = str(spec).partition("=")
    kind = kind.strip().lower()
    aliases = {"attn": "attention", "self_attn": "attention", "ffn": "mlp", "norms": "norm",
               "embeddings": "embedding", "embed": "embedding"}
    kind = aliases.get(kind, kind)
    if not sep or kind not in KINDS:
        raise UserError(f"{option} {spec!r}: expected KIND=FACTOR with KIND one of {', '.join(KINDS)}")
    return kind, parse_number_list(value, option)


def build_schedule(layers=(), modules=(), depth=None, num_layers: int | None = None,
                   options: tuple[str, str, str] = ("--scale-layers", "--scale-modules", "--scale-depth")) -> Schedule:
    """A Schedule from CLI strings (or recipe values); `options` name the source in errors."""
    layer_rules = [rule if isinstance(rule, tuple) else parse_layer_rule(rule, options[0]) for rule in layers]
    module_rules: dict[str, list[float]] = {}
    for rule in modules.items() if isinstance(modules, dict) else modules:
        if isinstance(rule, str):
            kind, values = parse_module_rule(rule, options[1])
        else:
            kind, values = parse_module_rule(f"{rule[0]}={json.dumps(rule[1])}", options[1])
        module_rules[kind] = values
    if isinstance(depth, str):
        depth = parse_number_list(depth, options[2])
    elif depth is not None:
        depth = [float(v) for v in depth]
    return Schedule(layer_rules, module_rules, depth or None, num_layers)
