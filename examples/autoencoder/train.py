#!/usr/bin/env python3
"""Train a pulsewatch autoencoder detector and export it to ONNX.

Usage
-----
    python train.py WINDOWS_CSV --model {dense,lstm} --out model.onnx \\
        [--epochs 300] [--quantile 0.995] [--seed 0] \\
        [--hidden 64] [--bottleneck 8] [--lstm-hidden 16] [--lr 1e-3] \\
        [--batch-size 64] [--holdout 0.2] [--calibrate {holdout,all}]

Install the dependencies with ``pip install -r requirements.txt`` in a virtual
environment. PyPI's Linux ``torch`` wheel pulls several GB of CUDA libraries;
where download.pytorch.org is reachable the CPU-only wheel is much smaller:
``pip install torch --index-url https://download.pytorch.org/whl/cpu`` (then
``pip install -r requirements.txt`` for the rest). Training runs on the CPU.

Retraining loop
---------------
1. Export recent, known-good windows from Prometheus::

       pulsewatch export-windows ... --out windows.csv

2. Train::

       python train.py windows.csv --model dense --out models/x.onnx

3. Put the model where the rule's ``model_file`` points. The sidecar reloads
   the file at its next evaluation, so replace it atomically: write a
   temporary file in the *same directory* and ``rename`` it over the old one
   (``mv`` within one filesystem does that). This script already writes
   ``--out`` that way, after checking the export against PyTorch, so
   ``--out`` may point straight at ``model_file``. To see the sidecar's own
   verdict first, write elsewhere and run ``pulsewatch check rules`` on a copy
   of the rule file that points at the new model.

Contract with the Rust side
---------------------------
Windows CSV (input; written by ``pulsewatch export-windows``): UTF-8, a header
row and one row per window. Columns: ``series`` (label set such as
``{instance="a"}``, CSV-quoted when needed), ``end`` (Unix seconds, integer,
timestamp of the newest sample), ``step`` (the rule's step in seconds: the
spacing of the samples within a window), then N*C float columns, time-major, oldest
first: for t in 0..N, for each channel c, a column ``<channel>@<t>``
(``cpu@0,mem@0,cpu@1,mem@1,...``). Channel names, their order and N are read
from the header.

Model I/O: one float32 input ``window`` of shape [batch, N, C] (batch is the
symbolic dimension ``batch``) holding the *normalised* window, and one float32
output ``reconstruction`` of the same shape.

Metadata: ``metadata_props["pulsewatch"]`` is a JSON object::

    {"format": 1,
     "channels": [{"name": "value", "mean": 85.2, "std": 12.1}, ...],
     "threshold": 0.123, "step_seconds": 300,
     "model": "dense", "window": 32, "trained_on": "windows.csv"}

* ``channels`` follows the channel axis order. Normalisation is
  z = (x - mean) / std per channel; mean and std are computed over every value
  of the training windows (std is at least 1e-6).
* The reconstruction error of a window is the mean over its N*C elements of
  (z - reconstruction)^2. score = error / threshold, so 1.0 is the threshold.
* ``threshold`` is ``np.quantile(errors, --quantile)`` (default 0.995) of the
  reconstruction errors of the trained model on the calibration windows.
* ``step_seconds`` is the windows' ``step``: the rule must query at that step.
* ``model``, ``window`` and ``trained_on`` are for humans (ignored by Rust).

Train/calibration split
-----------------------
Windows are split chronologically per series: the last --holdout fraction
(default 20%) of each series' windows is held out. Training windows whose
samples overlap the first held-out window are dropped (otherwise the overlap,
up to N-1 samples, leaks into the held-out set). Normalisation statistics and
the model weights come from the training windows only. The threshold is, by
default (--calibrate holdout), the quantile of the errors on the *held-out*
windows: errors on the training windows are optimistic (the model has fitted
them), so a threshold calibrated on them fires too often on new normal data.
--calibrate all uses every window instead (training + held-out). The summary
always prints both quantiles.

Exported graphs
---------------
dense: Flatten -> Gemm -> Tanh -> Gemm (bottleneck) -> Tanh -> Gemm -> Tanh ->
Gemm -> Reshape. Tanh, not ReLU: a ReLU network extrapolates linearly and
reconstructs a smooth window at any level, so a machine that cools far below
its normal range scores low; a saturating one cannot, so level anomalies score
too. lstm: a batch_first LSTM encoder (exported with the legacy
TorchScript exporter as one standard ONNX ``LSTM`` node; its zero initial
state is built with Shape/ConstantOfShape so the batch stays symbolic), the
final hidden state as bottleneck, then a dense decoder. The LSTM decoder does
not use the "RepeatVector" design (the hidden state repeated as the input of a
decoder LSTM) because tract cannot load it.

The committed models
--------------------
``models/machine_temperature_{dense,lstm}.onnx`` were trained on NAB's
machine_temperature_system_failure from 2013-12-18 to 2014-01-26, the longest
stretch without a labelled anomaly (11,202 windows of 32 steps of 5 minutes)::

    pulsewatch export-windows --rules examples/autoencoder/rules.yaml \
        --rule machine_temperature_dense \
        --csv examples/autoencoder/data/machine_temperature_system_failure.csv \
        --start 2013-12-18T00:00:00Z --end 2014-01-26T00:00:00Z --out windows.csv
    python train.py windows.csv --model dense --epochs 60 --out models/machine_temperature_dense.onnx
    python train.py windows.csv --model lstm --epochs 60 --out models/machine_temperature_lstm.onnx
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import warnings
from collections import defaultdict

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator

OPSET = 17
INPUT_NAME = "window"
OUTPUT_NAME = "reconstruction"
METADATA_KEY = "pulsewatch"
METADATA_FORMAT = 1
MIN_STD = 1e-6


# --------------------------------------------------------------------------
# Windows CSV
# --------------------------------------------------------------------------


class Windows:
    def __init__(self, series, end, values, channels):
        self.series = series  # list[str], one per window
        self.end = end  # int64 [W]
        self.values = values  # float64 [W, N, C]
        self.channels = channels  # list[str]

    @property
    def n(self):
        return self.values.shape[1]

    @property
    def c(self):
        return self.values.shape[2]

    def __len__(self):
        return self.values.shape[0]

    def subset(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        return Windows([self.series[i] for i in idx], self.end[idx], self.values[idx], self.channels)


def parse_header(header):
    """Return (channels, N) from the windows CSV header; validate the layout."""
    if len(header) < 4 or header[:3] != ["series", "end", "step"]:
        raise ValueError("windows CSV header must start with 'series,end,step' followed by '<channel>@<t>' columns")
    cols = []
    for name in header[3:]:
        channel, sep, t = name.rpartition("@")
        if not sep or not channel or not t.isdigit():
            raise ValueError(f"bad column name {name!r} (expected '<channel>@<t>')")
        cols.append((channel, int(t)))
    channels = []
    for channel, t in cols:
        if t != 0:
            break
        channels.append(channel)
    if len(set(channels)) != len(channels):
        raise ValueError(f"duplicate channel names at t=0: {channels}")
    c = len(channels)
    if len(cols) % c:
        raise ValueError(f"{len(cols)} value columns is not a multiple of {c} channels")
    n = len(cols) // c
    expected = [(ch, t) for t in range(n) for ch in channels]
    if cols != expected:
        bad = next(i for i, (a, b) in enumerate(zip(cols, expected)) if a != b)
        raise ValueError(f"column {bad + 4} is {header[bad + 3]!r}, expected '{expected[bad][0]}@{expected[bad][1]}' "
                         "(columns must be time-major, oldest first, channels in the same order at every step)")
    return channels, n


def read_windows(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        channels, n = parse_header(header)
        c = len(channels)
        series, ends, steps, rows = [], [], set(), []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
            series.append(row[0])
            ends.append(int(row[1]))
            steps.add(int(row[2]))
            rows.append([float(v) for v in row[3:]])
    if not rows:
        raise ValueError(f"{path}: no windows")
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), n, c)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: non-finite values in windows")
    if len(steps) != 1:
        raise ValueError(f"{path}: windows of several steps {sorted(steps)}; train one model per step")
    w = Windows(series, np.asarray(ends, dtype=np.int64), values, channels)
    w.step = steps.pop()
    return w


def split_holdout(w, frac, step):
    """Chronological split per series: (train_idx, holdout_idx)."""
    by_series = defaultdict(list)
    for i, s in enumerate(w.series):
        by_series[s].append(i)
    train, hold = [], []
    for idx in by_series.values():
        idx = sorted(idx, key=lambda i: w.end[i])
        k = int(round(len(idx) * frac))
        if frac <= 0 or k == 0 or k >= len(idx):
            train.extend(idx)
            continue
        hold_idx = idx[len(idx) - k:]
        first_start = w.end[hold_idx[0]] - (w.n - 1) * step  # oldest sample of the first held-out window
        kept = [i for i in idx[: len(idx) - k] if w.end[i] < first_start]
        if not kept:  # series too short to purge the overlap; keep the plain split
            kept = idx[: len(idx) - k]
        train.extend(kept)
        hold.extend(hold_idx)
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(hold), dtype=np.int64)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class DenseAE(torch.nn.Module):
    def __init__(self, n, c, hidden, bottleneck):
        super().__init__()
        self.n, self.c = n, c
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(n * c, hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, bottleneck),
            torch.nn.Tanh(),
            torch.nn.Linear(bottleneck, hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, n * c),
        )

    def forward(self, x):
        return self.net(x).reshape(-1, self.n, self.c)


class LstmAE(torch.nn.Module):
    def __init__(self, n, c, lstm_hidden, hidden):
        super().__init__()
        self.n, self.c = n, c
        self.encoder = torch.nn.LSTM(c, lstm_hidden, batch_first=True)
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(lstm_hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, n * c),
        )

    def forward(self, x):
        _, (h, _) = self.encoder(x)  # h: [1, batch, lstm_hidden]
        return self.decoder(h[-1]).reshape(-1, self.n, self.c)


def build_model(args, n, c):
    if args.model == "dense":
        return DenseAE(n, c, args.hidden, args.bottleneck)
    return LstmAE(n, c, args.lstm_hidden, args.hidden)


def window_errors(recon, z):
    return ((z - recon) ** 2).reshape(len(z), -1).mean(axis=1)


def torch_errors(model, z, batch=1024):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(z), batch):
            zb = torch.from_numpy(z[i:i + batch])
            out.append(((model(zb) - zb) ** 2).mean(dim=(1, 2)).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def train(model, z, args):
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = torch.from_numpy(z)
    loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(data), args.batch_size):
            xb = data[perm[i:i + args.batch_size]]
            opt.zero_grad()
            batch_loss = torch.nn.functional.mse_loss(model(xb), xb)
            batch_loss.backward()
            opt.step()
            total += batch_loss.item() * len(xb)
        loss = total / len(data)
        if epoch == 1 or epoch % max(1, args.epochs // 10) == 0 or epoch == args.epochs:
            print(f"  epoch {epoch:4d}  loss {loss:.5f}", flush=True)
    model.eval()
    return loss


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def export_onnx(model, n, c, metadata, out_path):
    """Export to ONNX, fix the output shape, add metadata, check; return (ModelProto, temporary
    file beside out_path holding it)."""
    example = torch.zeros(2, n, c, dtype=torch.float32)
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy exporter deprecation + LSTM batch-size notes
            torch.onnx.export(
                model,
                (example,),
                tmp,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                export_params=True,
            )
        proto = onnx.load(tmp)
    finally:
        os.unlink(tmp)

    # The exporter leaves Reshape's output dims symbolic; state [batch, N, C] exactly.
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 3:
            raise RuntimeError(f"{vi.name}: rank {len(dims)}, expected 3")
        dims[0].Clear()
        dims[0].dim_param = "batch"
        for d, v in ((dims[1], n), (dims[2], c)):
            d.Clear()
            d.dim_value = v
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(metadata)
    proto.doc_string = "pulsewatch autoencoder (examples/autoencoder/train.py)"
    onnx.checker.check_model(proto, full_check=True)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise RuntimeError("model unexpectedly uses external data")

    # A temporary file in the destination directory: main() checks it, then renames it over
    # out_path, so a running sidecar never sees a half-written or unchecked model.
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        os.unlink(tmp)
        raise
    return proto, tmp


def verify_onnx(path, model, z):
    """Compare ONNX (reference evaluator) and torch outputs; return max abs diff."""
    sess = ReferenceEvaluator(path)
    rng = np.random.default_rng(0)
    max_diff = 0.0
    for bs in (1, 7):
        if len(z) >= bs:
            xb = z[rng.choice(len(z), size=bs, replace=False)]
        else:
            xb = z[rng.integers(0, len(z), size=bs)]
        (got,) = sess.run(None, {INPUT_NAME: xb})
        with torch.no_grad():
            want = model(torch.from_numpy(xb)).numpy()
        if got.shape != xb.shape or got.dtype != np.float32:
            raise RuntimeError(f"batch {bs}: ONNX output {got.shape} {got.dtype}, expected {xb.shape} float32")
        diff = float(np.abs(got - want).max())
        print(f"  batch {bs}: output {list(got.shape)}, max |onnx - torch| = {diff:.2e}")
        max_diff = max(max_diff, diff)
    return max_diff


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a pulsewatch ONNX autoencoder from a windows CSV.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("windows_csv", help="windows CSV written by `pulsewatch export-windows`")
    p.add_argument("--model", choices=["dense", "lstm"], required=True)
    p.add_argument("--out", required=True, help="output .onnx path (replaced atomically)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs")
    p.add_argument("--quantile", type=float, default=0.995, help="error quantile used as threshold")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling")
    p.add_argument("--hidden", type=int, default=64, help="dense hidden layer width (both models' decoder)")
    p.add_argument("--bottleneck", type=int, default=8, help="dense bottleneck width")
    p.add_argument("--lstm-hidden", type=int, default=16, help="LSTM hidden size (the lstm bottleneck)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=64, help="training minibatch size")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of each series' newest windows held out")
    p.add_argument("--calibrate", choices=["holdout", "all"], default="holdout",
                   help="windows whose error quantile becomes the threshold")
    args = p.parse_args(argv)
    if not 0 < args.quantile <= 1:
        p.error("--quantile must be in (0, 1]")
    if not 0 <= args.holdout < 1:
        p.error("--holdout must be in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    w = read_windows(args.windows_csv)
    n, c = w.n, w.c
    step = w.step
    print(f"{args.windows_csv}: {len(w)} windows, {len(set(w.series))} series, N={n}, C={c} "
          f"channels={w.channels}, step={step}s")

    train_idx, hold_idx = split_holdout(w, args.holdout, step)
    if len(hold_idx) == 0 and args.calibrate == "holdout":
        print("  (no held-out windows; calibrating on all windows)")
        args.calibrate = "all"
    tr = w.subset(train_idx)
    mean = tr.values.reshape(-1, c).mean(axis=0)
    std = np.maximum(tr.values.reshape(-1, c).std(axis=0), MIN_STD)
    z_all = ((w.values - mean) / std).astype(np.float32)
    z_train, z_hold = z_all[train_idx], z_all[hold_idx]
    print(f"train {len(train_idx)} windows, held out {len(hold_idx)} "
          f"(dropped {len(w) - len(train_idx) - len(hold_idx)} overlapping)")

    model = build_model(args, n, c)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {n_params} parameters; training {args.epochs} epochs")
    loss = train(model, z_train, args)

    err_train = torch_errors(model, z_train)
    err_hold = torch_errors(model, z_hold)
    q_train = float(np.quantile(err_train, args.quantile))
    q_hold = float(np.quantile(err_hold, args.quantile)) if len(err_hold) else float("nan")
    calib = err_hold if args.calibrate == "holdout" else np.concatenate([err_train, err_hold])
    threshold = float(np.quantile(calib, args.quantile))
    if not math.isfinite(threshold) or threshold <= 0:
        sys.exit(f"degenerate threshold {threshold}")

    metadata = {
        "format": METADATA_FORMAT,
        "channels": [{"name": ch, "mean": float(m), "std": float(s)} for ch, m, s in zip(w.channels, mean, std)],
        "threshold": threshold,
        "step_seconds": int(step),
        "model": args.model,
        "window": n,
        "trained_on": os.path.basename(args.windows_csv),
    }
    proto, tmp = export_onnx(model, n, c, metadata, args.out)
    try:
        ops = [node.op_type for node in proto.graph.node]
        print(f"ONNX ops: {' '.join(ops)}")
        if args.model == "lstm" and "LSTM" not in ops:
            sys.exit("export did not produce an ONNX LSTM node")
        diff = verify_onnx(tmp, model, z_all)
        if diff > 1e-4:
            sys.exit(f"ONNX output differs from torch by {diff}")
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

    size = os.path.getsize(args.out)
    print("summary:")
    print(f"  windows        {len(w)} (train {len(train_idx)}, held out {len(hold_idx)}), N={n}, C={c}")
    print(f"  final loss     {loss:.5f} (train MSE, normalised units)")
    print(f"  q{args.quantile} error  train {q_train:.5f}, held out {q_hold:.5f}")
    if len(err_hold):
        print(f"  held-out windows over the threshold: {np.mean(err_hold > threshold):.2%}; "
              f"train windows over it: {np.mean(err_train > threshold):.2%}")
    print(f"  threshold      {threshold:.5f} (calibrated on {args.calibrate})")
    print(f"  step_seconds   {step}")
    print(f"  file           {args.out} ({size} bytes)")


if __name__ == "__main__":
    main()
