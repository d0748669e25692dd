"""ties / dare / dare_ties / magnitude: bit-equal to peft's reference functions, per tensor and
through the streaming graft; DARE deterministic per seed and independent of shard layout."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch
from peft.utils import merge_utils

from skillgraft.vectors.chunked import Workspace
from skillgraft.vectors.merge_methods import TensorMerge, dare_generators, merge, tensor_seed
from skillgraft.vectors.topk import TopK
from test_blockwise import same_in_blocks
from test_graft import EMBEDDINGS, state

pytestmark = pytest.mark.filterwarnings("ignore:The density .* no pruning")

PEFT = {
    "ties": lambda ts, w, d: merge_utils.ties(ts, w, d),
    "dare": lambda ts, w, d: merge_utils.dare_linear(ts, w, d),
    "dare_ties": lambda ts, w, d: merge_utils.dare_ties(ts, w, d),
    "magnitude": lambda ts, w, d: merge_utils.magnitude_prune(ts, w, d),
    "sum": lambda ts, w, d: merge_utils.task_arithmetic(ts, w),
}


def peft_reference(method, deltas, weights, density, seed=0, name="t"):
    """peft's function on clones, each vector's random pruning drawn from torch's global
    generator seeded as that vector's generator is (`dare_generators`)."""
    vectors = iter(range(len(deltas)))
    original = merge_utils.random_pruning

    def seeded_pruning(*args, **kwargs):
        torch.manual_seed(tensor_seed(seed, name, next(vectors)))
        return original(*args, **kwargs)

    with mock.patch.object(merge_utils, "random_pruning", seeded_pruning):
        return PEFT[method]([d.clone() for d in deltas], torch.tensor(weights), density)


def peft_with_lowest_ties(monkeypatch, *args, **kwargs):
    """peft's function with the top-k tie rule skillgraft documents (lowest index first)."""
    with monkeypatch.context() as patch:
        patch.setattr(merge_utils.torch, "topk", lambda values, k, largest=True, **_: torch.return_types.topk(
            tuple(x[..., :k] for x in torch.sort(values, descending=True, stable=True))))
        return peft_reference(*args, **kwargs)


def threshold_is_shared(delta: torch.Tensor, density: float) -> bool:
    """True when the k-th and (k+1)-th largest magnitudes are equal (a tie straddles the cut)."""
    k = int(density * delta.numel())
    ranked = delta.abs().reshape(-1).sort(descending=True).values
    return 0 < k < ranked.numel() and bool(ranked[k - 1] == ranked[k])


@pytest.mark.parametrize("method", ["ties", "dare", "dare_ties", "magnitude", "sum"])
@pytest.mark.parametrize("count,density,levels", [(1, 0.3, 0), (2, 0.5, 0), (3, 0.2, 0), (2, 1.0, 0), (3, 0.45, 7)])
@pytest.mark.parametrize("block", [None, 1, 7, 40, 333])
def test_equals_peft(monkeypatch, method, count, density, levels, block):
    """Whole tensor or blocks of 1, 7 (shorter than a 40-entry row), 40 and 333 entries: peft's
    bits; where a tie straddles the top-k threshold, peft's with the lowest-index tie rule."""
    gen = torch.Generator().manual_seed(count)
    deltas = [torch.randn(48, 40, generator=gen) * (i + 1) for i in range(count)]
    if levels:  # few distinct values: many ties at the top-k threshold and in the sign election
        deltas = [torch.round(d * levels / 3) for d in deltas]
    deltas[0][0, :5] = 0.0  # zeros: never vote in the sign election
    weights = [0.3, -0.7, 1.1][:count]
    got = merge(method, [d.clone() for d in deltas], weights, density=None if method == "sum" else density,
                generators=dare_generators(0, "t", count), block=block)
    shared = method in ("ties", "magnitude") and any(threshold_is_shared(d, density) for d in deltas)
    assert shared == (levels > 0 and method in ("ties", "magnitude") and density < 1)
    if shared:
        want = peft_with_lowest_ties(monkeypatch, method, deltas, weights, density)
        assert not torch.equal(want, peft_reference(method, deltas, weights, density))  # the rule matters here
    else:
        want = peft_reference(method, deltas, weights, density)
    assert torch.equal(got, want)
    if method != "sum" and density < 1:  # the pruning really happened
        assert (got == 0).float().mean() > 0.5 * (1 - density) ** count


@pytest.mark.parametrize("k_fraction", [0.0, 0.001, 0.5, 0.999, 1.0])
def test_top_k_keeps_exactly_k_with_a_threshold_shared_across_blocks(k_fraction):
    """Two magnitudes only, the cut inside the run of equal ones that spans many blocks: exactly
    k kept, every larger entry, the lowest-numbered equal ones; zeros, NaN and -0.0 ranked as topk does."""
    values = torch.where(torch.arange(10_000) % 3 == 0, 2.0, -1.0)
    values[17], values[4242], values[9000] = float("nan"), -0.0, float("inf")
    k = int(k_fraction * values.numel())
    ranges = [(s, min(s + 97, values.numel())) for s in range(0, values.numel(), 97)]
    work = Workspace()
    top = TopK.find(lambda s, e: (values[s:e], None, 1.0), ranges, k)
    kept = torch.cat([top.mask(values[s:e].clone(), work).bool() for s, e in ranges])
    assert int(kept.sum()) == k
    want = torch.zeros_like(kept)
    want[torch.sort(values.abs(), descending=True, stable=True).indices[:k]] = True
    assert torch.equal(kept, want)


def test_blocks_out_of_order_are_refused():
    merging = TensorMerge("ties", [lambda s, e: (torch.ones(e - s), None, 1.0)], [1.0], [(0, 4), (4, 8)], density=0.5)
    with pytest.raises(ValueError, match="in order"):
        merging.block(4, 8)


def test_ties_semantics_by_hand():
    """Sign elected from the unweighted trimmed deltas; the mean is over agreeing entries only."""
    a = torch.tensor([3.0, -1.0, 2.0, 0.0])
    b = torch.tensor([-1.0, -2.0, 2.0, 5.0])
    got = merge("ties", [a.clone(), b.clone()], [1.0, 0.5], density=1.0)  # merge works in place
    # col0: 3-1>0 -> only a agrees: 3; col1: both negative: (-1 + -1)/2; col2: (2+1)/2; col3: only b: 2.5
    assert torch.equal(got, torch.tensor([3.0, -1.0, 1.5, 2.5]))
    assert torch.equal(merge("magnitude", [a], [2.0], density=0.5), torch.tensor([6.0, 0.0, 4.0, 0.0]))


def test_dare_seed_is_per_tensor_name_and_rescales():
    delta = torch.ones(200, 50)
    first = merge("dare", [delta.clone()], [1.0], density=0.25, generators=dare_generators(7, "a.weight", 1))
    again = merge("dare", [delta.clone()], [1.0], density=0.25, generators=dare_generators(7, "a.weight", 1))
    other_name = merge("dare", [delta.clone()], [1.0], density=0.25, generators=dare_generators(7, "b.weight", 1))
    other_seed = merge("dare", [delta.clone()], [1.0], density=0.25, generators=dare_generators(8, "a.weight", 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other_name) and not torch.equal(first, other_seed)
    assert set(first.unique().tolist()) == {0.0, 4.0}  # kept entries rescaled by 1/density
    assert abs(float((first != 0).float().mean()) - 0.25) < 0.02
    assert abs(float(first.mean()) - 1.0) < 0.08  # expectation preserved


@pytest.fixture
def two_vectors(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "bfloat16")
    for name, skilled, shard in (("v1", trio["skilled"], "30KB"), ("v2", trio["skilled2"], "45KB")):
        status, _, err = run_cli("extract", trio["base"], skilled, "-o", tmp_path / name, "--shard-size", shard,
                                 "--quiet")
        assert status == 0, err
    return trio, tmp_path / "v1", tmp_path / "v2"


@pytest.mark.parametrize("method,density", [("ties", 0.4), ("dare_ties", 0.6), ("dare", 0.5), ("magnitude", 0.3)])
def test_graft_equals_peft_on_every_tensor(two_vectors, run_cli, tmp_path, monkeypatch, method, density):
    """bf16 vectors: many tensors share their top-k threshold, so the reference is peft with
    the lowest-index tie rule (the same as plain peft wherever no tie straddles the cut)."""
    trio, v1, v2 = two_vectors
    status, out, err = run_cli("graft", trio["cp"], f"{v1}:0.75", f"{v2}:-0.5", "-o", tmp_path / "out",
                               "--method", method, "--density", str(density), "--seed", "11", "--json")
    assert status == 0, err
    manifest = json.loads(out)
    assert manifest["options"]["method"] == method and manifest["options"]["density"] == density
    target, a, b, got = state(trio["cp"]), state(v1), state(v2), state(tmp_path / "out")
    changed = 0
    for name, tensor in target.items():
        if name in EMBEDDINGS["llama"]:
            assert torch.equal(got[name], tensor)
            continue
        merged = peft_with_lowest_ties(monkeypatch, method, [a[name], b[name]], [0.75, -0.5], density, seed=11,
                                       name=name)
        expected = (tensor.float() + merged).to(tensor.dtype)
        assert torch.equal(got[name], expected), name
        changed += not torch.equal(expected, tensor)
    assert changed == manifest["tensors"]["grafted"] > 0


def test_dare_independent_of_shard_layout_and_deterministic(two_vectors, run_cli, tmp_path):
    trio, v1, _ = two_vectors
    common = ["--method", "dare", "--density", "0.5", "--quiet"]
    assert run_cli("graft", trio["cp"], v1, "-o", tmp_path / "a", "--seed", "3", *common)[0] == 0
    assert run_cli("graft", trio["cp"], v1, "-o", tmp_path / "b", "--seed", "3", "--shard-size", "20KB",
                   *common)[0] == 0
    # the same vector computed on the fly (no saved shards at all) gives the same bits
    assert run_cli("graft", trio["cp"], "--delta", trio["base"], trio["skilled"], "-o", tmp_path / "c",
                   "--seed", "3", *common)[0] == 0
    assert run_cli("graft", trio["cp"], v1, "-o", tmp_path / "d", "--seed", "4", *common)[0] == 0
    a, b, c, d = (state(tmp_path / x) for x in "abcd")
    assert len(list((tmp_path / "b").glob("model-*.safetensors"))) > 1
    assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) for n in a)
    assert any(not torch.equal(a[n], d[n]) for n in a)


@pytest.mark.parametrize("args,message", [
    (["--method", "ties"], "needs --density"),
    (["--method", "dare", "--density", "0"], "outside (0, 1]"),
    (["--method", "dare", "--density", "1.5"], "outside (0, 1]"),
    (["--density", "0.5"], "not sum"),
    (["--method", "median"], "median"),
])
def test_bad_method_options(two_vectors, run_cli, tmp_path, args, message):
    trio, v1, _ = two_vectors
    status, out, err = run_cli("graft", trio["cp"], v1, "-o", tmp_path / "bad", *args)
    assert status == 2 and err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_merge_in_tiny_blocks_equals_whole_blocks(two_vectors, run_cli, tmp_path, monkeypatch, method):
    """Deltas read block by block into the whole-tensor buffer the merge needs, target added
    and cast block by block: the same bytes as one block per tensor."""
    trio, v1, _ = two_vectors
    same_in_blocks(run_cli, monkeypatch, tmp_path, "graft", trio["cp"], f"{v1}:0.75", "--delta", trio["base"],
                   f"{trio['skilled2']}:-0.5", "--with-embeddings", "--method", method, "--density", "0.4")


def _kept_and_passes(values: torch.Tensor, k: int, block: int = 500, row: int = 1) -> tuple[torch.Tensor, float]:
    """(TopK's kept set over `values`, how many passes over the entries its search read);
    every read must cover whole rows of `row` entries, as a reader of rows matched by token's."""
    ranges = [(s, min(s + block, values.numel())) for s in range(0, values.numel(), block)]
    read_entries = []

    def read(start, stop):
        assert start % row == 0 and stop % row == 0, (start, stop)
        read_entries.append(stop - start)
        return values[start:stop], None, 1.0

    top = TopK.find(read, ranges, k, row)
    work = Workspace()
    kept = torch.cat([top.mask(values[s:e].clone(), work).bool() for s, e in ranges])
    return kept, sum(read_entries) / values.numel()


def _lowest_k(values: torch.Tensor, k: int) -> torch.Tensor:
    want = torch.zeros(values.numel(), dtype=torch.bool)
    want[torch.sort(values.abs(), descending=True, stable=True).indices[:k]] = True
    return want


@pytest.mark.parametrize("case", ["small", "quantised", "continuous", "misleading sample", "rows",
                                  "quantised, cut at a run's end"])
def test_top_k_is_exact_in_each_plan_the_sample_chooses(monkeypatch, case):
    """A tensor within the sample needs no pass; deltas with few distinct values (as bf16
    checkpoints give) one pass that confirms the sample's threshold; continuous values, or a cut
    the sample cannot place on one value, two counting passes; a sample unlike the tensor is
    refuted by its pass and the two counting passes follow. The same exact set every time, the
    lowest-numbered of tied entries kept."""
    from skillgraft.vectors import topk

    generator = torch.Generator().manual_seed(3)
    values = torch.randn(40_000, generator=generator)
    monkeypatch.setattr(TopK, "SAMPLE_READS", 100)
    monkeypatch.setattr(TopK, "SAMPLE_SPAN", 400 if case == "small" else 40)
    if case.startswith("quantised") or case == "misleading sample":
        values = (values * 8).round() / 8  # 60-odd distinct magnitudes: thousands share the threshold
    if case == "misleading sample":
        original = topk._sample
        monkeypatch.setattr(topk, "_sample", lambda *args: original(*args) + (1 << 20))  # ties kept, values moved
    k = 17_000
    if case in ("quantised", "misleading sample"):  # the cut in the middle of the run of equal magnitudes there
        cut = values.abs().sort(descending=True).values[k]
        k = int((values.abs() > cut).sum()) + int((values.abs() == cut).sum()) // 2
    if case.endswith("end"):  # the sample cannot tell which value the k-th is
        cut = values.abs().sort(descending=True).values[k]
        k = int((values.abs() > cut).sum()) + 3
    kept, passes = _kept_and_passes(values, k, row=100 if case == "rows" else 1)
    assert int(kept.sum()) == k and torch.equal(kept, _lowest_k(values, k))
    expected = {"small": 1, "quantised": 1.1, "continuous": 2.1, "misleading sample": 3.1, "rows": 2.25,
                "quantised, cut at a run's end": 2.1}[case]
    assert passes == pytest.approx(expected, abs=0.01)  # the sample: all entries, or a tenth
