"""nn.SyncBatchNorm: exactly BatchNorm outside a distributed step; in a Lockstep of parts, one
BatchNorm over the whole global batch (forward, input and parameter gradients, running
statistics); convert_sync_batchnorm; save/load, state_dict and torch parity."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cnncore import models, nn, optim
from cnncore.distributed import Lockstep, part_bounds


class OneRank:
    """A communicator of one rank (what Lockstep needs: rank, size, allgather)."""

    rank, size = 0, 1

    def allgather(self, arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr)[None].copy()


def _bn_pair(cls, c, dtype, **kw):
    ref = cls(c, dtype=dtype, **kw)
    sync = nn.SyncBatchNorm(c, dtype=dtype, **kw)
    if ref.affine:
        rng = np.random.default_rng(5)
        ref.weight.data[...] = rng.uniform(0.5, 2.0, c)
        ref.bias.data[...] = rng.standard_normal(c)
        sync.weight.data[...] = ref.weight.data
        sync.bias.data[...] = ref.bias.data
    return ref, sync


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cls, shape",
    [(nn.BatchNorm2d, (6, 3, 4, 5)), (nn.BatchNorm1d, (7, 4)), (nn.BatchNorm1d, (5, 2, 6))],
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_outside_a_distributed_step_it_is_batchnorm_bit_for_bit(dtype, cls, shape, momentum):
    ref, sync = _bn_pair(cls, shape[1], dtype, momentum=momentum)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_array_equal(sync(x), ref(x))
        np.testing.assert_array_equal(sync.backward(g), ref.backward(g))
    for a, b in zip(sync.state_dict().values(), ref.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sync.weight.grad, ref.weight.grad)
    sync.eval(), ref.eval()
    np.testing.assert_array_equal(sync(x), ref(x))


def _lockstep_parts(layer, x, g, parts, input_grad=True):
    """``layer`` on ``x`` cut into ``parts`` parts run in lockstep (replicas of ``layer`` for
    the parts after the first): outputs, input gradients and the replicas."""
    bounds = part_bounds(len(x), parts)
    active = [p for p in range(parts) if bounds[p][1] > bounds[p][0]]
    reps = {p: layer if i == 0 else copy.deepcopy(layer) for i, p in enumerate(active)}
    outs, dxs = {}, {}

    def job(p):
        def run():
            lo, hi = bounds[p]
            outs[p] = reps[p](x[lo:hi])
            dxs[p] = reps[p].backward(g[lo:hi], input_grad=input_grad)

        return run

    lock = Lockstep(OneRank(), parts)
    lock.run([(p, job(p)) for p in active])
    out = np.concatenate([outs[p] for p in active])
    dx = np.concatenate([dxs[p] for p in active]) if input_grad else None
    return out, dx, [reps[p] for p in active], lock


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", [(10, 3, 5, 4), (3, 2, 6), (9, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_global_batch_statistics_over_parts_equal_one_batchnorm(dtype, tol, shape, affine):
    """Four parts (one empty when N = 3) in lockstep: the concatenated outputs and input
    gradients, the summed parameter gradients and the running statistics are those of one
    BatchNorm over the whole batch -- the tree-merged statistics, not the parts' own."""
    cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    ref, sync = _bn_pair(cls, shape[1], dtype, affine=affine)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    expected = ref(x)
    expected_dx = ref.backward(g)
    out, dx, reps, lock = _lockstep_parts(sync, x, g, 4)
    assert lock.exchanges == 2  # one forward, one backward round
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(dx, expected_dx, rtol=tol, atol=tol * np.abs(expected_dx).max())
    if affine:
        dw = sum(r.weight.grad.astype(np.float64) for r in reps)
        db = sum(r.bias.grad.astype(np.float64) for r in reps)
        np.testing.assert_allclose(dw, ref.weight.grad, rtol=tol * 10, atol=tol * 10 * len(x))
        np.testing.assert_allclose(db, ref.bias.grad, rtol=tol * 10, atol=tol * 10 * len(x))
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(
            sync._buffers[key], ref._buffers[key], rtol=tol, atol=tol, err_msg=key
        )
    assert int(sync._buffers["num_batches_tracked"]) == 1
    # differs from per-part statistics (what BatchNorm2d computes in a distributed fit)
    plain = cls(shape[1], dtype=dtype, affine=affine)
    if affine:
        plain.weight.data[...] = ref.weight.data
        plain.bias.data[...] = ref.bias.data
    lo, hi = part_bounds(len(x), 4)[0]
    assert not np.allclose(plain(x[lo:hi]), expected[lo:hi], rtol=1e-3, atol=1e-3)


def test_the_merge_is_the_same_bits_for_any_cut_of_parts_into_ranks():
    """What makes distributed training K-independent: every part computes its own row and
    every rank merges all rows by the same tree; here the same layer in 2 parts per run,
    twice -- the results are bit-identical (and no input-gradient round when it is not
    asked)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    a = _lockstep_parts(nn.SyncBatchNorm(3), x, g, 4)
    b = _lockstep_parts(nn.SyncBatchNorm(3), x, g, 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = _lockstep_parts(nn.SyncBatchNorm(3), x, g, 4, input_grad=False)
    assert c[3].exchanges == 1
    np.testing.assert_array_equal(c[0], a[0])


def test_global_batch_of_one_value_per_channel_is_refused():
    x = np.ones((1, 2), np.float32)
    with pytest.raises(ValueError, match="more than 1 value per channel in the global batch"):
        _lockstep_parts(nn.SyncBatchNorm(2), x, x, 4)


def test_backward_outside_the_step_of_its_forward_is_refused():
    layer = nn.SyncBatchNorm(2)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    lock = Lockstep(OneRank(), 1)
    lock.run([(0, lambda: layer(x))])
    with pytest.raises(RuntimeError, match="same step"):
        layer.backward(x)


def test_lockstep_passes_a_part_error_on_and_stops_the_other_parts():
    done = []

    def fine(part):
        def run():
            layer = nn.SyncBatchNorm(2)
            layer(np.ones((3, 2), np.float32))
            done.append(part)

        return run

    def broken():
        raise ZeroDivisionError("part 1 fails")

    lock = Lockstep(OneRank(), 3)
    with pytest.raises(ZeroDivisionError, match="part 1 fails"):
        lock.run([(0, fine(0)), (1, broken), (2, fine(2))])
    assert done == []  # part 0 waited at its sync point and was abandoned; part 2 never ran
    # a later run works
    lock.run([(0, fine(0)), (1, fine(1))])
    assert done == [0, 1]


def test_lockstep_detects_parts_with_different_sync_points():
    def sync_once():
        nn.SyncBatchNorm(2)(np.ones((3, 2), np.float32))

    lock = Lockstep(OneRank(), 2)
    with pytest.raises(RuntimeError, match="different numbers of sync points"):
        lock.run([(0, sync_once), (1, lambda: None)])


def test_convert_sync_batchnorm_in_place():
    model = models.resnet20(in_channels=1, input_size=8, rng=0)
    bns = [m for m in model.children() if isinstance(m, nn.BatchNorm2d)]
    params = model.parameters()
    keys = list(model.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    before = model.eval()(x)
    out = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model
    assert len(bns) == 21
    assert all(type(m) is nn.SyncBatchNorm for m in bns)  # the same objects, converted
    assert [m.name for m in bns][:2] == ["bn1", "stage1_block1_bn1"]
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert list(model.state_dict()) == keys
    np.testing.assert_array_equal(model.eval()(x), before)
    seq = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    nn.SyncBatchNorm.convert_sync_batchnorm(seq)
    assert type(seq[1]) is nn.SyncBatchNorm
    lone = nn.BatchNorm2d(3)
    assert nn.SyncBatchNorm.convert_sync_batchnorm(lone) is lone
    assert isinstance(lone, nn.SyncBatchNorm)
    with pytest.raises(TypeError, match="Received: module of type str"):
        nn.SyncBatchNorm.convert_sync_batchnorm("model")


def test_save_load_and_fuse(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, rng=0), nn.SyncBatchNorm(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)
    )
    x = np.random.default_rng(0).standard_normal((5, 1, 4, 4)).astype(np.float32)
    model.fit(x, np.arange(5) % 2, optimizer="sgd", loss="cross_entropy", epochs=2, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nn.load(tmp_path / "m.npz")
    assert type(loaded[1]) is nn.SyncBatchNorm
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    fused = nn.fuse(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in fused.children())
    np.testing.assert_allclose(fused.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_sync_batchnorm(dtype):
    """Keys, layouts and results of torch.nn.SyncBatchNorm (which, outside a process group,
    computes BatchNorm): train-mode forward, running statistics, eval forward."""
    torch = pytest.importorskip("torch")
    ours = nn.SyncBatchNorm(3, momentum=0.2, dtype=dtype)
    theirs = torch.nn.SyncBatchNorm(3, momentum=0.2).to(getattr(torch, np.dtype(dtype).name))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(3)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
        with torch.no_grad():
            expected = theirs(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours(x), expected, **tol)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), **tol, err_msg=k)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), **tol)


def _small_bn_model(sync: bool):
    bn = nn.SyncBatchNorm if sync else nn.BatchNorm2d
    kw = dict(dtype=np.float64)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=1, **kw),
        bn(4, **kw),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, rng=2, **kw),
        bn(4, **kw),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3, rng=3, **kw),
    )


def test_distributed_fit_with_sync_batchnorm_is_a_plain_fit_with_batchnorm():
    """fit(distributed=True) in one process (4 parts in lockstep) with SyncBatchNorm trains
    what a plain fit of the whole batches with BatchNorm2d trains (float64, to rounding):
    weights, running statistics, training and validation metrics."""
    pytest.importorskip("mpi4py")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 1, 6, 6))
    y = rng.integers(0, 3, 70)
    runs = []
    for sync in (False, True):
        model = _small_bn_model(sync)
        h = model.fit(
            x,
            y,
            optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            loss=nn.CrossEntropyLoss(),
            epochs=2,
            batch_size=32,
            seed=1,
            verbose=0,
            validation_data=(x[:20], y[:20]),
            distributed=sync,
        )
        runs.append((model.state_dict(), h.history))
    (plain, hp), (dist, hd) = runs
    for k in plain:
        np.testing.assert_allclose(dist[k], plain[k], rtol=1e-10, atol=1e-12, err_msg=k)
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(hd[k], hp[k], rtol=1e-10, err_msg=k)
