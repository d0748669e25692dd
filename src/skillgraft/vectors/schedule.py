"""Scale schedules: how much of a vector each tensor gets, by layer, module kind and depth.

Chat Vector users and mergekit configs scale a vector differently per layer range (keep the
early layers of the target, graft the late ones) or per module (attention vs MLP). A
tensor's factor is the product of three parts, each 1 when not given:

    layer part   --scale-layers 0-7=0.5 (repeatable; the last rule naming a layer wins), or by
                 share of the depth, 0%-20%=0.5 (layer i of L is in [a%, b%) when its middle is:
                 a <= 100·(i+½)/L < b): one recipe means the same blocks at any depth
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
from fractions import Fraction
from typing import NamedTuple

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


class LayerRule(NamedTuple):
    """Layers first..last (inclusive) get `factor`; with `percent`, first and last are shares of
    the depth in percent and the range is half-open, [first %, last %), holding each layer
    whose middle lies in it (so the first and the last layer are treated alike)."""

    first: Fraction
    last: Fraction
    factor: float
    percent: bool = False

    def covers(self, layer: int, num_layers: int) -> bool:
        if not self.percent:
            return self.first <= layer <= self.last
        position = Fraction(100 * (2 * layer + 1), 2 * num_layers)
        return self.first <= position < self.last

    def __str__(self) -> str:
        if self.percent:
            return f"{float(self.first):g}%-{float(self.last):g}%={self.factor:g}"
        return f"{self.first}-{self.last}={self.factor:g}"


@dataclass
class Schedule:
    """Per-tensor scale factors; an empty schedule gives exactly 1.0 everywhere."""

    layers: list[LayerRule] = field(default_factory=list)
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
            for rule in self.layers:
                if rule.covers(layer, layers):
                    value = rule.factor  # the last matching rule wins
            if self.depth:
                value *= interpolate(self.depth, layer, layers)
        kind = module_kind(name)
        if kind in self.modules:
            anchors = self.modules[kind]
            value *= anchors[0] if len(anchors) == 1 or layer is None else interpolate(anchors, layer, layers)
        return value

    def describe(self) -> dict:
        return {"layers": [str(rule) for rule in self.layers], "modules": self.modules,
                "depth": self.depth, "num_layers": self.num_layers}


def parse_layer_rule(spec: str, option: str = "--scale-layers") -> LayerRule:
    """'0-7=0.5' -> layers 0..7 at 0.5; '3=0' -> layer 3 at 0; '8-=2' -> layer 8 onwards at 2;
    '0%-20%=0.5' -> the first fifth of the layers, whatever the depth; '80%-=2' -> the last fifth."""
    text = str(spec)
    percent = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*-\s*(?:(\d+(?:\.\d+)?)\s*%)?\s*=\s*(\S+)\s*", text)
    match = percent or re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*))?\s*=\s*(\S+)\s*", text)
    if not match:
        raise UserError(f"{option} {spec!r}: expected FIRST-LAST=FACTOR (layers, e.g. 0-7=0.5) "
                        f"or A%-B%=FACTOR (shares of the depth, e.g. 0%-20%=0.5)")
    factor_text = match.group(match.lastindex)
    try:
        factor = float(factor_text)
    except ValueError:
        raise UserError(f"{option} {spec!r}: factor {factor_text!r} is not a number") from None
    if percent:
        first, last = Fraction(match.group(1)), Fraction(match.group(2) or 100)
        if last > 100 or last <= first:
            raise UserError(f"{option} {spec!r}: a share of the depth runs from A% to B% with A < B <= 100")
        return LayerRule(first, last, factor, percent=True)
    first = int(match.group(1))
    last = first if not match.group(2) else (int(match.group(3)) if match.group(3) else 1 << 30)
    if last < first:
        raise UserError(f"{option} {spec!r}: the range ends before it starts")
    return LayerRule(Fraction(first), Fraction(last), factor)


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
    layer_rules = [rule if isinstance(rule, LayerRule) else parse_layer_rule(rule, options[0]) for rule in layers]
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
